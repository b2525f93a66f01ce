//! `X-Sidechat-Signature: t=<unix seconds>,v1=<hex hmac_sha256(secret, "<t>.<raw body>")>`
//!
//! The timestamp is signed with the body, so a host that refuses old timestamps cannot be
//! replayed a captured call later; the event id (`X-Sidechat-Event-Id`) lets it drop a
//! retry it has already handled.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::settings::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The header's name.
pub const HEADER: &str = "X-Sidechat-Signature";

/// Why a signature header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the header is not t=<seconds>,v1=<hex>")]
    Malformed,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

fn mac(secret: &Secret, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Checks a header as a host would: the timestamp within `tolerance_s` of `now`, and a
/// `v1` that matches (compared in constant time). Several `v1` entries are accepted, so
/// a signer may sign with an old and a new secret during a rotation.
pub fn verify(
    secret: &Secret,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", hex_sig)) => {
                candidates.push(hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?)
            }
            Some(_) => {} // other schemes, for the future
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > tolerance_s {
        return Err(SignatureError::Stale);
    }
    let matches = candidates
        .iter()
        .any(|candidate| mac(secret, timestamp, body).verify_slice(candidate).is_ok());
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("whsec-test-0123456789abcdef")
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"whsec-test-0123456789abcdef", b"1800000000.{\"id\":\"e1\"}",
        // hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(&secret(), 1_800_000_000, br#"{"id":"e1"}"#),
            "t=1800000000,v1=b218fa8e5b04bfe028f0ca5d79bbd0e7fc8896669bdc41e966d7893de437d4f3"
        );
    }

    #[test]
    fn a_signed_body_verifies_and_anything_changed_does_not() {
        let body = br#"{"id":"e1","type":"message.unread"}"#;
        let header = sign(&secret(), 1_800_000_000, body);
        assert_eq!(verify(&secret(), &header, body, 1_800_000_010, 300), Ok(()));
        assert_eq!(
            verify(&secret(), &header, b"{}", 1_800_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &Secret::new("another-secret-0123456789ab"),
                &header,
                body,
                1_800_000_010,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        // A replay an hour later is refused, however valid the signature.
        assert_eq!(
            verify(&secret(), &header, body, 1_800_003_600, 300),
            Err(SignatureError::Stale)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replace("t=1800000000", "t=1800003600");
        assert_eq!(
            verify(&secret(), &moved, body, 1_800_003_600, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_headers_with_several_signatures_verify_with_either_secret() {
        let body = b"{}";
        let old = sign(
            &Secret::new("old-secret-0123456789abcdef"),
            1_800_000_000,
            body,
        );
        let new = sign(&secret(), 1_800_000_000, body);
        let both = format!("{new},{}", old.split_once(',').unwrap().1);
        assert_eq!(verify(&secret(), &both, body, 1_800_000_000, 300), Ok(()));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for header in [
            "",
            "t=abc,v1=00",
            "v1=00",
            "t=1800000000",
            "t=1800000000,v1=zz",
            "garbage",
        ] {
            assert_eq!(
                verify(&secret(), header, b"{}", 1_800_000_000, 300),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
    }
}
