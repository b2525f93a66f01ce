//! Web Push to a browser's subscription: the payload encrypted for it (RFC 8291,
//! aes128gcm) and our server identified by a VAPID signature (RFC 8292).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256KeyPair};
use web_push_native::{Auth, WebPushBuilder, p256};

use std::sync::Arc;

use super::Attempt;
use crate::egress::{Egress, Failure};
use crate::settings::PushSettings;
use crate::store::push::PushSubscriptionRow;

pub struct WebPush {
    key_pair: ES256KeyPair,
    /// base64url of the uncompressed public key: browsers' `applicationServerKey`.
    public_key: String,
    subject: String,
    egress: Arc<Egress>,
}

impl WebPush {
    /// Reads the VAPID key named by `settings`; every error is one line naming the key.
    pub fn new(settings: &PushSettings, egress: Arc<Egress>) -> Result<WebPush, String> {
        let (key_pair, public_key) = read_vapid_key(settings)?;
        Ok(WebPush {
            key_pair,
            public_key,
            subject: settings.subject.clone(),
            egress,
        })
    }

    /// The key browsers subscribe with (`applicationServerKey`).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Sends `payload` to one subscription.
    pub async fn send(&self, subscription: &PushSubscriptionRow, payload: Vec<u8>) -> Attempt {
        let request = match self.request(subscription, payload) {
            Ok(request) => request,
            // Keys we accepted at registration no longer decode: nothing to retry.
            Err(e) => return Attempt::Refused(e),
        };
        // A user chose this URL: only a public destination is called.
        match self.egress.to_public(request).await {
            Ok(answer) => match answer.status().as_u16() {
                200..=299 => Attempt::Delivered,
                404 | 410 => Attempt::Gone,
                // Too many requests, or the push service is unwell: later.
                429 | 500..=599 => {
                    Attempt::Failed(format!("the push service answered {}", answer.status()))
                }
                _ => Attempt::Refused(format!("the push service answered {}", answer.status())),
            },
            Err(Failure::Refused(refusal)) => Attempt::Blocked(refusal.to_string()),
            Err(Failure::Failed(why)) => Attempt::Failed(why),
        }
    }

    fn request(
        &self,
        subscription: &PushSubscriptionRow,
        payload: Vec<u8>,
    ) -> Result<reqwest::Request, String> {
        let endpoint = subscription
            .endpoint
            .parse()
            .map_err(|_| "the endpoint is not a URL".to_owned())?;
        let public = URL_SAFE_NO_PAD
            .decode(&subscription.p256dh)
            .ok()
            .and_then(|bytes| p256::PublicKey::from_sec1_bytes(&bytes).ok())
            .ok_or("the subscription's p256dh is not a P-256 key")?;
        let auth = URL_SAFE_NO_PAD
            .decode(&subscription.auth)
            .ok()
            .and_then(|bytes| <[u8; 16]>::try_from(bytes.as_slice()).ok())
            .map(Auth::from)
            .ok_or("the subscription's auth is not 16 bytes")?;
        let request = WebPushBuilder::new(endpoint, public, auth)
            .with_vapid(&self.key_pair, &self.subject)
            .build(payload)
            .map_err(|e| format!("cannot build the push request: {e}"))?;
        reqwest::Request::try_from(request).map_err(|e| format!("bad push request: {e}"))
    }
}

/// The VAPID key pair `settings` names and its public key (base64url), checked against
/// `push.vapid_public_key` when that is set. Each error is one line naming the key.
pub fn read_vapid_key(settings: &PushSettings) -> Result<(ES256KeyPair, String), String> {
    let path = &settings.vapid_private_key_file;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("push.vapid_private_key_file: cannot read {path}: {e}"))?;
    let key_pair = parse_private_key(text.trim()).ok_or_else(|| {
        format!(
            "push.vapid_private_key_file: {path} holds no P-256 private key (a PKCS#8 PEM or a base64url key)"
        )
    })?;
    let public_key =
        URL_SAFE_NO_PAD.encode(key_pair.public_key().public_key().to_bytes_uncompressed());
    if !settings.vapid_public_key.is_empty() && settings.vapid_public_key != public_key {
        return Err(
            "push.vapid_public_key: does not belong to the private key in push.vapid_private_key_file".into(),
        );
    }
    Ok((key_pair, public_key))
}

fn parse_private_key(text: &str) -> Option<ES256KeyPair> {
    if text.starts_with("-----BEGIN") {
        return ES256KeyPair::from_pem(text).ok();
    }
    let raw = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
    ES256KeyPair::from_bytes(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_key_and_its_raw_form_are_the_same_key() {
        let generated = ES256KeyPair::generate();
        let pem = generated.to_pem().unwrap();
        let raw = URL_SAFE_NO_PAD.encode(generated.to_bytes());
        let from_pem = parse_private_key(&pem).unwrap();
        let from_raw = parse_private_key(&raw).unwrap();
        assert_eq!(from_pem.to_bytes(), generated.to_bytes());
        assert_eq!(from_raw.to_bytes(), generated.to_bytes());
        assert!(parse_private_key("not a key").is_none());
        assert!(
            parse_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_none()
        );
    }
}
