//! Any string in `?token=`: HMAC and JWT verification never panic, and nothing but a
//! token signed with the secret is accepted (the fuzzer cannot forge the signature).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sidechat::auth::Verifier;
use sidechat::settings::{Settings, Sources};

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let settings = Settings::load(&Sources {
            overlays: vec![sidechat::settings::DEVELOPMENT_TOML],
            ..Default::default()
        })
        .expect("development settings");
        Verifier::new(&settings.auth).expect("a verifier")
    })
}

fuzz_target!(|token: &str| {
    let verified = verifier().verify(token, 1_800_000_000);
    assert!(verified.is_err(), "a forged token was accepted: {token:?}");
});
