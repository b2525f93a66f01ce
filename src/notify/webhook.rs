//! The host's webhook: one signed POST per event (PROTOCOL.md §8).

use std::sync::Arc;

use super::{Attempt, signature};
use crate::egress::Egress;
use crate::settings::Secret;

pub struct Webhook {
    url: reqwest::Url,
    secret: Secret,
    egress: Arc<Egress>,
}

impl Webhook {
    pub fn new(url: reqwest::Url, secret: Secret, egress: Arc<Egress>) -> Webhook {
        Webhook {
            url,
            secret,
            egress,
        }
    }

    /// POSTs `body` as event `event_id`, signed now.
    pub async fn send(&self, event_id: &str, body: Vec<u8>) -> Attempt {
        let signed = signature::sign(&self.secret, chrono::Utc::now().timestamp(), &body);
        let sent = self
            .egress
            .post_to_operator(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Sidechat-Event-Id", event_id)
            .header(signature::HEADER, signed)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => Attempt::Delivered,
            Ok(answer) => Attempt::Failed(format!("the host answered {}", answer.status())),
            // Never sent unsigned: ids and signatures are ASCII we made, so this is a bug.
            Err(e) if e.is_builder() => Attempt::Refused(format!("cannot build the call: {e}")),
            Err(e) => Attempt::Failed(crate::egress::describe(&e)),
        }
    }
}
