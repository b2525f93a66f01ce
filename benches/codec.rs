//! Micro-benchmarks of the per-frame and per-connection pure work: decoding a client
//! frame, encoding a broadcast, verifying both token formats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sidechat::auth::{JwtClaims, Verifier, mint_hmac, mint_jwt};
use sidechat::chat::UserId;
use sidechat::settings::{Secret, Settings, Sources};
use sidechat::transport::phoenix::PhoenixV2;
use sidechat::transport::{Codec, Outbound};

fn codec(c: &mut Criterion) {
    let frame = r#"["3","17","chat:alice:bob","new_msg",{"body":"hello there, how are you today?","client_ref":"5f0c2a8e-1b7d-4c1e-9d7a-3b2f4e6a8c10"}]"#;
    c.bench_function("phoenix decode new_msg", |b| {
        b.iter(|| PhoenixV2.decode(black_box(frame)).unwrap())
    });
    let payload = r#"{"id":123456,"topic":"chat:alice:bob","user_id":"alice","body":"hello there, how are you today?","meta":{},"kind":"user","status":"complete","client_ref":"5f0c2a8e","sent_at":"2026-11-22T10:00:00.123Z","edited_at":null,"is_delivered":false}"#;
    let mut frames = Vec::with_capacity(1);
    c.bench_function("phoenix encode broadcast", |b| {
        b.iter(|| {
            frames.clear();
            PhoenixV2.encode(
                &Outbound::Push {
                    join_ref: Some("3"),
                    topic: black_box("chat:alice:bob"),
                    event: "new_msg",
                    payload: black_box(payload),
                },
                &mut frames,
            );
        })
    });
}

fn tokens(c: &mut Criterion) {
    let settings = Settings::load(&Sources {
        overlays: vec![sidechat::settings::DEVELOPMENT_TOML],
        ..Default::default()
    })
    .unwrap();
    let verifier = Verifier::new(&settings.auth).unwrap();
    let now = 1_800_000_000;
    let user = UserId::parse("alice").unwrap();
    let hmac = mint_hmac(&settings.auth.hmac_secrets[0], &user, now + 3600);
    c.bench_function("verify hmac token", |b| {
        b.iter(|| verifier.verify(black_box(&hmac), now).unwrap())
    });
    // jsonwebtoken checks exp against the real clock: mint one valid now.
    let jwt_now = mint_jwt(
        &Secret::new(settings.auth.jwt_secret.expose()),
        "HS256",
        &JwtClaims {
            sub: "alice".into(),
            exp: chrono::Utc::now().timestamp() + 3600,
            name: None,
            role: None,
        },
    )
    .unwrap();
    c.bench_function("verify HS256 jwt", |b| {
        b.iter(|| verifier.verify(black_box(&jwt_now), now).unwrap())
    });
}

criterion_group!(benches, codec, tokens);
criterion_main!(benches);
