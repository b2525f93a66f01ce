//! Simple HMAC tokens: `<user_id>:<expires_unix>:<hex(hmac_sha256(secret, "<user_id>:<expires_unix>"))>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{AuthError, Identity};
use crate::chat::{Role, UserId};
use crate::settings::Secret;

type HmacSha256 = Hmac<Sha256>;

pub struct HmacVerifier {
    secrets: Vec<Secret>,
}

fn signature(secret: &[u8], signed: &str) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(signed.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Mints a token for `user_id` valid until `expires_at` (unix seconds).
pub fn mint(secret: &Secret, user_id: &UserId, expires_at: i64) -> String {
    let signed = format!("{user_id}:{expires_at}");
    let sig = hex::encode(signature(secret.expose().as_bytes(), &signed));
    format!("{signed}:{sig}")
}

impl HmacVerifier {
    pub fn new(secrets: &[Secret]) -> Self {
        HmacVerifier {
            secrets: secrets.to_vec(),
        }
    }

    pub fn verify(&self, token: &str, now: i64, leeway_s: i64) -> Result<Identity, AuthError> {
        if self.secrets.is_empty() {
            return Err(AuthError::NotConfigured);
        }
        let mut parts = token.split(':');
        let (Some(user), Some(expires), Some(sig_hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Malformed);
        }
        let expires_at: i64 = expires.parse().map_err(|_| AuthError::Malformed)?;
        let mut claimed = [0u8; 32];
        hex::decode_to_slice(sig_hex, &mut claimed).map_err(|_| AuthError::Malformed)?;

        let signed_len = user.len() + 1 + expires.len();
        let signed = token.get(..signed_len).ok_or(AuthError::Malformed)?;
        // Every secret is tried, whatever matched, so timing says nothing of which one.
        let mut matched = subtle::Choice::from(0);
        for secret in &self.secrets {
            matched |= signature(secret.expose().as_bytes(), signed).ct_eq(&claimed);
        }
        if !bool::from(matched) {
            return Err(AuthError::BadSignature);
        }
        let user_id = UserId::parse(user).map_err(|_| AuthError::InvalidUserId)?;
        if expires_at.saturating_add(leeway_s) < now {
            return Err(AuthError::Expired);
        }
        Ok(Identity {
            user_id,
            name: None,
            role: Role::User,
            expires_at: expires_at.saturating_add(leeway_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn verifier() -> HmacVerifier {
        HmacVerifier::new(&[Secret::new("old-secret"), Secret::new("new-secret")])
    }

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn a_token_from_any_configured_secret_verifies() {
        for secret in ["old-secret", "new-secret"] {
            let token = mint(&Secret::new(secret), &uid("42"), NOW + 60);
            let identity = verifier().verify(&token, NOW, 0).unwrap();
            assert_eq!(identity.user_id.as_str(), "42");
            assert_eq!(identity.role, Role::User);
        }
    }

    #[test]
    fn the_documented_one_liner_matches() {
        // What the Python line in PROTOCOL.md computes for secret "s", id 7, exp 2000000000.
        let token = mint(&Secret::new("s"), &uid("7"), 2_000_000_000);
        let expected_sig = hex::encode(signature(b"s", "7:2000000000"));
        assert_eq!(token, format!("7:2000000000:{expected_sig}"));
    }

    #[test]
    fn refusals_name_their_cause() {
        let good = mint(&Secret::new("new-secret"), &uid("42"), NOW + 60);
        let forged = mint(&Secret::new("other"), &uid("42"), NOW + 60);
        let expired = mint(&Secret::new("new-secret"), &uid("42"), NOW - 31);
        let bad_user = {
            let signed = format!("a b:{}", NOW + 60);
            format!(
                "{signed}:{}",
                hex::encode(signature(b"new-secret", &signed))
            )
        };
        let cases = [
            (forged, AuthError::BadSignature),
            (expired, AuthError::Expired),
            (bad_user, AuthError::InvalidUserId),
            (good.replacen("42", "43", 1), AuthError::BadSignature),
            ("42:soon:abcd".to_string(), AuthError::Malformed),
            ("42:1:zz".to_string(), AuthError::Malformed),
            (format!("{good}:extra"), AuthError::Malformed),
            ("no-colons".to_string(), AuthError::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(verifier().verify(&token, NOW, 30), Err(expected), "{token}");
        }
    }

    #[test]
    fn leeway_keeps_a_just_expired_token_valid() {
        let token = mint(&Secret::new("new-secret"), &uid("42"), NOW - 10);
        assert!(verifier().verify(&token, NOW, 30).is_ok());
        assert_eq!(verifier().verify(&token, NOW, 0), Err(AuthError::Expired));
    }
}
