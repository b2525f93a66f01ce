//! The host's webhook: one signed POST per event (PROTOCOL.md §8).

use std::sync::Arc;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use super::{Attempt, signature};
use crate::egress::{Egress, TIMEOUT};
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
        let mut request = reqwest::Request::new(reqwest::Method::POST, self.url.clone());
        *request.timeout_mut() = Some(TIMEOUT);
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in [
            ("x-sidechat-event-id", event_id),
            (signature::HEADER, signed.as_str()),
        ] {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                // Never unsigned: ids and signatures are ASCII we made, so this is a bug.
                _ => return Attempt::Refused(format!("cannot set the {name} header")),
            }
        }
        *request.body_mut() = Some(body.into());
        // The operator's own URL: exempt from the public-destination rule.
        match self.egress.to_operator(request).await {
            Ok(answer) if answer.status().is_success() => Attempt::Delivered,
            Ok(answer) => Attempt::Failed(format!("the host answered {}", answer.status())),
            Err(why) => Attempt::Failed(why),
        }
    }
}
