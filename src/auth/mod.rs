//! Who the user is: verifies the host app's tokens (PROTOCOL.md §1).
//!
//! Two formats are accepted at once and told apart by shape: a JWT has two dots and no
//! `:`; anything else is tried as a simple HMAC token.

mod hmac;
mod jwt;

use crate::chat::{Actor, Role, UserId};
use crate::settings::AuthSettings;

pub use self::hmac::mint as mint_hmac;
pub use self::jwt::{JwtClaims, mint_hs as mint_jwt};

/// A verified user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub name: Option<String>,
    pub role: Role,
    /// Unix seconds after which the token is no longer valid (leeway included).
    pub expires_at: i64,
}

impl Identity {
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.user_id.clone(),
            role: self.role,
            name: self
                .name
                .as_deref()
                .and_then(crate::chat::ids::display_name),
        }
    }
}

/// Why a token was refused; `reason()` is the string in the 401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: pass ?token= or Authorization: Bearer")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token's exp is further ahead than this server accepts (auth.max_token_ttl_s)")]
    LifetimeTooLong,
    #[error("the token's user id is not 1-64 of A-Z a-z 0-9 _ . @ -")]
    InvalidUserId,
    #[error("the token's claims are not accepted: {0}")]
    InvalidClaims(String),
    #[error("this token format is not configured on the server")]
    NotConfigured,
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "invalid_signature",
            AuthError::Expired => "expired",
            AuthError::LifetimeTooLong => "lifetime_too_long",
            AuthError::InvalidUserId => "invalid_user_id",
            AuthError::InvalidClaims(_) => "invalid_claims",
            AuthError::NotConfigured => "not_configured",
        }
    }
}

/// Start-up problems with the auth settings: one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(pub String);

/// Verifies both token formats with the configured keys. Built once at start-up.
pub struct Verifier {
    hmac: hmac::HmacVerifier,
    jwt: Option<jwt::JwtVerifier>,
    leeway_s: i64,
    /// `auth.max_token_ttl_s`; None = no limit.
    max_ttl_s: Option<i64>,
}

impl Verifier {
    pub fn new(settings: &AuthSettings) -> Result<Verifier, AuthConfigError> {
        Ok(Verifier {
            hmac: hmac::HmacVerifier::new(&settings.hmac_secrets),
            jwt: jwt::JwtVerifier::new(settings)?,
            leeway_s: i64::try_from(settings.leeway_s).unwrap_or(0),
            max_ttl_s: (settings.max_token_ttl_s > 0)
                .then(|| i64::try_from(settings.max_token_ttl_s).unwrap_or(i64::MAX)),
        })
    }

    /// The one entry point: any token, at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let looks_like_jwt = token.matches('.').count() == 2 && !token.contains(':');
        let identity = if looks_like_jwt {
            match &self.jwt {
                Some(jwt) => jwt.verify(token)?,
                None => return Err(AuthError::NotConfigured),
            }
        } else {
            self.hmac.verify(token, now, self.leeway_s)?
        };
        // `expires_at` carries one leeway already; the host's clock may run one ahead.
        if let Some(max_ttl_s) = self.max_ttl_s {
            let latest = now
                .saturating_add(max_ttl_s)
                .saturating_add(self.leeway_s.saturating_mul(2));
            if identity.expires_at > latest {
                return Err(AuthError::LifetimeTooLong);
            }
        }
        Ok(identity)
    }
}
