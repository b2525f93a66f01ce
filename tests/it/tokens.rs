//! Both token formats at the upgrade, and every way a token is refused.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn signed(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn exp(from_now: i64) -> i64 {
    chrono::Utc::now().timestamp() + from_now
}

#[tokio::test]
async fn hmac_and_hs256_tokens_both_open_a_socket() {
    let app = spawn_app().await;
    for token in [hmac_token("u1", 60), jwt_token("u1", None, 60)] {
        let mut client = app.connect_with_token(&token).await;
        client.join_ok("user:u1", json!({})).await;
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_the_configured_public_key() {
    for (alg, name, private) in [
        (Algorithm::RS256, "RS256", "rs256"),
        (Algorithm::ES256, "ES256", "es256"),
    ] {
        let app = spawn_app_with(|s| {
            s.auth.jwt_algorithm = name.into();
            s.auth.jwt_public_key_file = fixture(&format!("{private}_public.pem"));
        })
        .await;
        let pem = std::fs::read(fixture(&format!("{private}_private.pem"))).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let token = signed(
            alg,
            &key,
            json!({"sub": "staff1", "exp": exp(60), "role": "staff"}),
        );
        let mut client = app.connect_with_token(&token).await;
        client.join_ok("user:staff1", json!({})).await;
        // Staff may join a visitor's support conversation.
        client.join_ok("support:visitor9", json!({})).await;

        // A token signed with HS256 using the public key as the secret (the classic
        // algorithm confusion) is refused: the algorithm is the server's choice.
        let public = std::fs::read(fixture(&format!("{private}_public.pem"))).unwrap();
        let confused = signed(
            Algorithm::HS256,
            &EncodingKey::from_secret(&public),
            json!({"sub": "mallory", "exp": exp(60)}),
        );
        let (status, body) = app.refused_upgrade(&app.socket_url(&confused)).await;
        assert_eq!(status, 401, "{name}");
        assert_eq!(body["reason"], "invalid_signature", "{name}: {body}");
    }
}

#[tokio::test]
async fn refused_tokens_get_401_with_a_reason_before_the_upgrade() {
    let app = spawn_app_with(|s| s.auth.leeway_s = 0).await;
    let secret = test_settings().auth.jwt_secret.expose().to_owned();
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let unsigned_none = {
        use base64_like::encode;
        format!(
            "{}.{}.",
            encode(r#"{"alg":"none","typ":"JWT"}"#),
            encode(&json!({"sub": "mallory", "exp": exp(60)}).to_string())
        )
    };
    let cases = [
        (String::new(), "missing_token"),
        ("garbage".to_string(), "malformed"),
        ("a.b.c".to_string(), "malformed"),
        (hmac_token("alice", -5), "expired"),
        (
            hmac_token("alice", 60).replace("alice", "mallory"),
            "invalid_signature",
        ),
        (
            signed(
                Algorithm::HS256,
                &hs,
                json!({"sub": "alice", "exp": exp(-5)}),
            ),
            "expired",
        ),
        (
            signed(Algorithm::HS256, &hs, json!({"sub": "alice"})),
            "invalid_claims",
        ),
        (
            signed(Algorithm::HS256, &hs, json!({"exp": exp(60)})),
            "invalid_claims",
        ),
        (
            signed(Algorithm::HS256, &hs, json!({"sub": "a:b", "exp": exp(60)})),
            "invalid_user_id",
        ),
        (
            signed(
                Algorithm::HS384,
                &EncodingKey::from_secret(secret.as_bytes()),
                json!({"sub": "alice", "exp": exp(60)}),
            ),
            "invalid_signature",
        ),
        (
            signed(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"wrong-secret"),
                json!({"sub": "alice", "exp": exp(60)}),
            ),
            "invalid_signature",
        ),
        (unsigned_none, "malformed"),
    ];
    for (token, reason) in cases {
        let url = app.socket_url(&token);
        let (status, body) = app.refused_upgrade(&url).await;
        assert_eq!(status, 401, "{token}");
        assert_eq!(body["reason"], reason, "{token}: {body}");
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn a_token_that_lives_longer_than_the_deployment_allows_is_refused() {
    let week: i64 = 7 * 86_400;
    let app = spawn_app_with(move |s| s.auth.max_token_ttl_s = week as u64).await;
    let secret = test_settings().auth.jwt_secret.expose().to_owned();
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let in_ten_years = chrono::Utc::now().timestamp() + 10 * 365 * 86_400;
    let too_long = [
        hmac_token("alice", 8 * 86_400),
        signed(
            Algorithm::HS256,
            &hs,
            json!({"sub": "alice", "exp": in_ten_years}),
        ),
    ];
    for token in &too_long {
        let (status, body) = app.refused_upgrade(&app.socket_url(token)).await;
        assert_eq!(status, 401, "{token}");
        assert_eq!(body["reason"], "lifetime_too_long", "{body}");
        assert!(body["error"].as_str().unwrap().contains("max_token_ttl_s"));
        // The user's HTTP calls go through the same verifier.
        let (status, body) = app
            .api_with_key("GET", "/v1/me/unread", None, Some(token))
            .await;
        assert_eq!(status, 401);
        assert_eq!(body["reason"], "lifetime_too_long", "{body}");
    }
    // Just inside the limit, in both formats.
    for token in [
        hmac_token("alice", week - 60),
        signed(
            Algorithm::HS256,
            &hs,
            json!({"sub": "alice", "exp": exp(week - 60)}),
        ),
    ] {
        let mut client = app.connect_with_token(&token).await;
        client.join_ok("user:alice", json!({})).await;
    }
    // 0 lifts the limit.
    let unlimited = spawn_app_with(|s| s.auth.max_token_ttl_s = 0).await;
    let mut client = unlimited.connect_with_token(&too_long[1]).await;
    client.join_ok("user:alice", json!({})).await;
}

#[tokio::test]
async fn a_jwt_with_a_wrong_issuer_or_audience_is_refused() {
    let app = spawn_app_with(|s| {
        s.auth.jwt_issuer = "https://host.example".into();
        s.auth.jwt_audience = "sidechat".into();
    })
    .await;
    let secret = test_settings().auth.jwt_secret.expose().to_owned();
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let good = signed(
        Algorithm::HS256,
        &hs,
        json!({"sub": "alice", "exp": exp(60), "iss": "https://host.example", "aud": "sidechat"}),
    );
    app.connect_with_token(&good)
        .await
        .join_ok("user:alice", json!({}))
        .await;
    for claims in [
        json!({"sub": "alice", "exp": exp(60), "iss": "https://evil.example", "aud": "sidechat"}),
        json!({"sub": "alice", "exp": exp(60), "iss": "https://host.example", "aud": "other"}),
        json!({"sub": "alice", "exp": exp(60)}),
    ] {
        let token = signed(Algorithm::HS256, &hs, claims.clone());
        let (status, body) = app.refused_upgrade(&app.socket_url(&token)).await;
        assert_eq!(status, 401, "{claims}");
        assert_eq!(body["reason"], "invalid_claims", "{claims}: {body}");
    }
}

#[tokio::test]
async fn a_second_secret_verifies_during_rotation() {
    let app = spawn_app_with(|s| {
        s.auth.hmac_secrets.push(sidechat::settings::Secret::new(
            "the-next-secret-0123456789abcdef",
        ));
    })
    .await;
    let next = sidechat::auth::mint_hmac(
        &sidechat::settings::Secret::new("the-next-secret-0123456789abcdef"),
        &sidechat::chat::UserId::parse("alice").unwrap(),
        exp(60),
    );
    app.connect_with_token(&next)
        .await
        .join_ok("user:alice", json!({}))
        .await;
    app.connect("alice")
        .await
        .join_ok("user:alice", json!({}))
        .await;
}

#[tokio::test]
async fn an_origin_outside_the_allowed_list_is_refused() {
    let app =
        spawn_app_with(|s| s.server.allowed_origins = vec!["https://app.example".into()]).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request_from = |origin: &str| {
        let mut request = app
            .socket_url(&hmac_token("alice", 60))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    assert!(
        tokio_tungstenite::connect_async(request_from("https://app.example"))
            .await
            .is_ok()
    );
    match tokio_tungstenite::connect_async(request_from("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn one_connection_over_the_per_user_limit_gets_429() {
    let app = spawn_app_with(|s| s.limits.connections_per_user = 2).await;
    let _a = app.connect("alice").await;
    let _b = app.connect("alice").await;
    let (status, body) = app
        .refused_upgrade(&app.socket_url(&hmac_token("alice", 60)))
        .await;
    assert_eq!(status, 429);
    assert_eq!(body["reason"], "too_many_connections");
    // Another user is not affected.
    let _c = app.connect("bob").await;
}

/// Base64url without padding, for hand-built tokens.
mod base64_like {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(input: &str) -> String {
        let bytes = input.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
