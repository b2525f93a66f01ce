//! Browsers registering for Web Push, for when their user is away.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Chat, Reason, UserId, storage};
use crate::egress;
use crate::store::{self, push};

/// Longest endpoint accepted; push services' URLs are a few hundred bytes.
const MAX_ENDPOINT_LEN: usize = 2048;

/// Why a registration was refused: the reason clients branch on, and the rule broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRefused {
    pub reason: Reason,
    /// The rule broken, for the client; None where the reason says it all.
    pub detail: Option<String>,
}

impl PushRefused {
    fn invalid(detail: impl Into<String>) -> PushRefused {
        PushRefused {
            reason: Reason::InvalidPayload,
            detail: Some(detail.into()),
        }
    }
}

impl From<Reason> for PushRefused {
    fn from(reason: Reason) -> PushRefused {
        PushRefused {
            reason,
            detail: None,
        }
    }
}

/// A subscription as `PushSubscription.toJSON()` gives it: the push service's URL, and
/// the browser's P-256 public key and auth secret, base64url.
#[derive(Debug, Clone)]
pub struct NewPushSubscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// Whether `text` is base64url (padded or not) of exactly `len` bytes.
fn decodes_to(text: &str, len: usize) -> bool {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .is_ok_and(|bytes| bytes.len() == len)
}

impl Chat {
    /// Registers a browser of `user` for Web Push; true when it is new. The endpoint must
    /// be a public push service (`egress`): the server will POST to it.
    pub async fn subscribe_push(
        &self,
        user: &UserId,
        sub: NewPushSubscription,
    ) -> Result<bool, PushRefused> {
        if sub.endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(PushRefused::invalid(format!(
                "the endpoint is longer than {MAX_ENDPOINT_LEN} bytes"
            )));
        }
        // An uncompressed P-256 point is 65 bytes; the auth secret 16 (RFC 8291).
        if !decodes_to(&sub.p256dh, 65) {
            return Err(PushRefused::invalid(
                "keys.p256dh must be base64url of a 65-byte P-256 public key",
            ));
        }
        if !decodes_to(&sub.auth, 16) {
            return Err(PushRefused::invalid(
                "keys.auth must be base64url of a 16-byte secret",
            ));
        }
        egress::check_destination(&sub.endpoint, self.config.push_endpoints)
            .await
            .map_err(|refusal| PushRefused::invalid(refusal.to_string()))?;
        let row = push::PushSubscriptionRow {
            endpoint: sub.endpoint,
            user_id: user.to_string(),
            p256dh: sub.p256dh,
            auth: sub.auth,
        };
        store::blocking(&self.pool, move |conn| push::subscribe(conn, &row))
            .await
            .map_err(|e| storage(e).into())
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
