//! JWTs: one algorithm per deployment, fixed by `auth.jwt_algorithm`, never by the token.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthConfigError, AuthError, Identity};
use crate::chat::{Role, UserId};
use crate::settings::{AuthSettings, Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwtClaims {
    // Defaults let a token without them reach the required-claims check, which names
    // the missing claim, instead of failing as malformed JSON.
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

fn algorithm(name: &str) -> Result<Algorithm, AuthConfigError> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(AuthConfigError(format!(
            "auth.jwt_algorithm: unsupported algorithm {other:?}"
        ))),
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl JwtVerifier {
    /// `None` when no JWT key is configured for the chosen algorithm.
    pub fn new(settings: &AuthSettings) -> Result<Option<JwtVerifier>, AuthConfigError> {
        let alg = algorithm(&settings.jwt_algorithm)?;
        let key = if is_hmac(alg) {
            if settings.jwt_secret.is_empty() {
                if !settings.jwt_public_key_file.is_empty() {
                    return Err(AuthConfigError(format!(
                        "auth.jwt_public_key_file is set but auth.jwt_algorithm is {}: name the key's algorithm (RS256, ES256 or EdDSA)",
                        settings.jwt_algorithm
                    )));
                }
                return Ok(None);
            }
            DecodingKey::from_secret(settings.jwt_secret.expose().as_bytes())
        } else {
            let path = &settings.jwt_public_key_file;
            if path.is_empty() {
                return Err(AuthConfigError(format!(
                    "auth.jwt_public_key_file: required for auth.jwt_algorithm = {}",
                    settings.jwt_algorithm
                )));
            }
            let pem = std::fs::read(path).map_err(|e| {
                AuthConfigError(format!("auth.jwt_public_key_file: cannot read {path}: {e}"))
            })?;
            let parsed = match alg {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_ed_pem(&pem),
            };
            parsed.map_err(|e| {
                AuthConfigError(format!(
                    "auth.jwt_public_key_file: {path} is not a {} public key in PEM: {e}",
                    settings.jwt_algorithm
                ))
            })?
        };

        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = settings.leeway_s;
        // A configured iss/aud must be present, not merely right when present.
        let mut required = vec!["exp", "sub"];
        if settings.jwt_issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&settings.jwt_issuer]);
            required.push("iss");
        }
        if settings.jwt_audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&settings.jwt_audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(JwtVerifier { key, validation }))
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data =
            jsonwebtoken::decode::<JwtClaims>(token, &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                        AuthError::BadSignature
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        AuthError::InvalidClaims(format!("missing {claim}"))
                    }
                    ErrorKind::InvalidIssuer => AuthError::InvalidClaims("wrong iss".into()),
                    ErrorKind::InvalidAudience => AuthError::InvalidClaims("wrong aud".into()),
                    ErrorKind::ImmatureSignature => {
                        AuthError::InvalidClaims("not valid yet".into())
                    }
                    ErrorKind::InvalidClaimFormat(claim) => {
                        AuthError::InvalidClaims(format!("malformed {claim}"))
                    }
                    _ => AuthError::Malformed,
                }
            })?;
        let claims = data.claims;
        let user_id = UserId::parse(&claims.sub).map_err(|_| AuthError::InvalidUserId)?;
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(0);
        Ok(Identity {
            user_id,
            name: claims.name.filter(|n| !n.is_empty()),
            role: Role::from_claim(claims.role.as_deref()),
            expires_at: claims.exp.saturating_add(leeway),
        })
    }
}

/// Mints an HMAC-signed JWT (HS256/384/512) with the configured secret.
pub fn mint_hs(
    secret: &Secret,
    algorithm_name: &str,
    claims: &JwtClaims,
) -> Result<String, AuthConfigError> {
    let alg = algorithm(algorithm_name)?;
    if !is_hmac(alg) {
        return Err(AuthConfigError(format!(
            "cannot mint {algorithm_name} tokens: the server holds only the public key"
        )));
    }
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| AuthConfigError(format!("cannot mint a JWT: {e}")))
}
