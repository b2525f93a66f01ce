//! The host's webhook: one signed POST per event (PROTOCOL.md §8).

use super::{Attempt, TIMEOUT, describe, signature};
use crate::settings::Secret;

pub struct Webhook {
    url: reqwest::Url,
    secret: Secret,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: reqwest::Url, secret: Secret, client: reqwest::Client) -> Webhook {
        Webhook {
            url,
            secret,
            client,
        }
    }

    /// POSTs `body` as event `event_id`, signed now.
    pub async fn send(&self, event_id: &str, body: Vec<u8>) -> Attempt {
        let signed = signature::sign(&self.secret, chrono::Utc::now().timestamp(), &body);
        let sent = self
            .client
            .post(self.url.clone())
            .timeout(TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Sidechat-Event-Id", event_id)
            .header(signature::HEADER, signed)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => Attempt::Delivered,
            Ok(answer) => Attempt::Failed(format!("the host answered {}", answer.status())),
            Err(e) => Attempt::Failed(describe(&e)),
        }
    }
}
