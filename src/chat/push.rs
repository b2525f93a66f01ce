//! Browsers registering for Web Push, for when their user is away.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Chat, Reason, UserId, storage};
use crate::store::{self, push};

/// Longest endpoint accepted; push services' URLs are a few hundred bytes.
const MAX_ENDPOINT_LEN: usize = 2048;

/// A subscription as `PushSubscription.toJSON()` gives it: the push service's URL, and
/// the browser's P-256 public key and auth secret, base64url.
#[derive(Debug, Clone)]
pub struct NewPushSubscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// Push services are HTTPS; plain HTTP only to this machine (tests, local development).
fn valid_endpoint(endpoint: &str) -> bool {
    if endpoint.len() > MAX_ENDPOINT_LEN
        || endpoint
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return false;
    }
    if let Some(rest) = endpoint.strip_prefix("https://") {
        return !rest.is_empty();
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    [
        "127.0.0.1:",
        "127.0.0.1/",
        "localhost:",
        "localhost/",
        "[::1]:",
        "[::1]/",
    ]
    .iter()
    .any(|host| rest.starts_with(host))
}

/// Whether `text` is base64url (padded or not) of exactly `len` bytes.
fn decodes_to(text: &str, len: usize) -> bool {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .is_ok_and(|bytes| bytes.len() == len)
}

impl Chat {
    /// Registers a browser of `user` for Web Push; true when it is new.
    pub async fn subscribe_push(
        &self,
        user: &UserId,
        sub: NewPushSubscription,
    ) -> Result<bool, Reason> {
        // An uncompressed P-256 point is 65 bytes; the auth secret 16 (RFC 8291).
        if !valid_endpoint(&sub.endpoint)
            || !decodes_to(&sub.p256dh, 65)
            || !decodes_to(&sub.auth, 16)
        {
            return Err(Reason::InvalidPayload);
        }
        let row = push::PushSubscriptionRow {
            endpoint: sub.endpoint,
            user_id: user.to_string(),
            p256dh: sub.p256dh,
            auth: sub.auth,
        };
        store::blocking(&self.pool, move |conn| push::subscribe(conn, &row))
            .await
            .map_err(storage)
    }

    /// Removes `user`'s browser at `endpoint`; `NotFound` when it is not theirs.
    pub async fn unsubscribe_push(&self, user: &UserId, endpoint: String) -> Result<(), Reason> {
        let user = user.to_string();
        let removed = store::blocking(&self.pool, move |conn| {
            push::unsubscribe(conn, &user, &endpoint)
        })
        .await
        .map_err(storage)?;
        if removed {
            Ok(())
        } else {
            Err(Reason::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_or_local_http() {
        assert!(valid_endpoint("https://fcm.googleapis.com/fcm/send/abc"));
        assert!(valid_endpoint("http://127.0.0.1:8080/push/1"));
        assert!(valid_endpoint("http://localhost/push"));
        assert!(!valid_endpoint("http://push.example.com/x"));
        assert!(!valid_endpoint("https://"));
        assert!(!valid_endpoint("ftp://x"));
        assert!(!valid_endpoint("https://a b"));
        assert!(!valid_endpoint(&format!("https://x/{}", "a".repeat(3000))));
    }

    #[test]
    fn keys_must_decode_to_their_sizes() {
        let p256dh = URL_SAFE_NO_PAD.encode([4u8; 65]);
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        assert!(decodes_to(&p256dh, 65));
        assert!(decodes_to(&auth, 16));
        assert!(decodes_to(&format!("{auth}=="), 16), "padding is tolerated");
        assert!(!decodes_to(&auth, 65));
        assert!(!decodes_to("not base64!", 16));
    }
}
