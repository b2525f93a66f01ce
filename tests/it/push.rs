//! Browsers register for Web Push with their user's own token.

use serde_json::{Value, json};
use sidechat::store::push;

use crate::helpers::*;

/// Keys of the sizes RFC 8291 gives them (65-byte point, 16-byte secret), base64url.
fn subscription(endpoint: &str) -> Value {
    json!({
        "endpoint": endpoint,
        "keys": {
            "p256dh": format!("B{}", "A".repeat(86)),
            "auth": "AAAAAAAAAAAAAAAAAAAAAA",
        }
    })
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = http_client()
        .request(method, app.http("/v1/me/push-subscriptions"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        },
    )
}

async fn endpoints_of(app: &TestApp, user: &str) -> Vec<String> {
    let user = user.to_owned();
    app.db(move |conn| push::for_user(conn, &user).unwrap())
        .await
        .into_iter()
        .map(|row| row.endpoint)
        .collect()
}

#[tokio::test]
async fn a_browser_subscribes_moves_to_whoever_signs_in_and_unsubscribes() {
    let app = spawn_app_with(|s| s.push.allow_local_endpoints = true).await;
    let alice = hmac_token("alice", 600);
    let bob = hmac_token("bob", 600);
    let endpoint = "http://127.0.0.1:9/push/browser-1";
    let post = reqwest::Method::POST;
    let delete = reqwest::Method::DELETE;

    assert_eq!(
        call(&app, post.clone(), Some(&alice), subscription(endpoint))
            .await
            .0,
        201
    );
    assert_eq!(
        call(&app, post.clone(), Some(&alice), subscription(endpoint))
            .await
            .0,
        200
    );
    assert_eq!(endpoints_of(&app, "alice").await, [endpoint]);

    // Bob signs in on the same browser: its pushes are his now.
    assert_eq!(
        call(&app, post.clone(), Some(&bob), subscription(endpoint))
            .await
            .0,
        200
    );
    assert!(endpoints_of(&app, "alice").await.is_empty());
    assert_eq!(endpoints_of(&app, "bob").await, [endpoint]);

    // Alice cannot remove it any more; bob can, once.
    let gone = json!({"endpoint": endpoint});
    assert_eq!(
        call(&app, delete.clone(), Some(&alice), gone.clone())
            .await
            .0,
        404
    );
    assert_eq!(
        call(&app, delete.clone(), Some(&bob), gone.clone()).await.0,
        204
    );
    assert_eq!(call(&app, delete.clone(), Some(&bob), gone).await.0, 404);
    assert!(endpoints_of(&app, "bob").await.is_empty());
}

#[tokio::test]
async fn bad_subscriptions_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let alice = hmac_token("alice", 600);
    let post = reqwest::Method::POST;
    let mut short_key = subscription("https://push.example/1");
    short_key["keys"]["p256dh"] = json!("AAAA");
    let mut bad_auth = subscription("https://push.example/1");
    bad_auth["keys"]["auth"] = json!("not base64!");
    let cases = [
        subscription("http://push.example/1"), // plain HTTP to another host
        subscription("ftp://push.example/1"),
        subscription(""),
        short_key,
        bad_auth,
        json!({"endpoint": "https://push.example/1"}), // no keys
    ];
    for body in cases {
        let (status, error) = call(&app, post.clone(), Some(&alice), body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["reason"], "invalid_payload", "{body}: {error}");
    }
    let (status, _) = call(&app, post, None, subscription("https://push.example/1")).await;
    assert_eq!(status, 401);
    assert!(endpoints_of(&app, "alice").await.is_empty());
}

/// A browser's side of a subscription: its own key pair and auth secret (RFC 8291).
pub(crate) struct Browser {
    secret: web_push_native::p256::SecretKey,
    auth: [u8; 16],
    endpoint: String,
}

impl Browser {
    pub(crate) fn new(endpoint: String) -> Browser {
        let random: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| *u.as_bytes())
            .collect();
        Browser {
            secret: web_push_native::p256::SecretKey::from_slice(&random).unwrap(),
            auth: *uuid::Uuid::new_v4().as_bytes(),
            endpoint,
        }
    }

    /// What `PushSubscription.toJSON()` gives.
    fn subscription(&self) -> Value {
        use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
        let public = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public.as_bytes()), "auth": b64url(&self.auth)},
        })
    }

    /// Registers this browser for `token`'s user.
    pub(crate) async fn subscribe(&self, app: &TestApp, token: &str) {
        let (status, error) =
            call(app, reqwest::Method::POST, Some(token), self.subscription()).await;
        assert_eq!(status, 201, "{error}");
    }

    /// Decrypts a push message as the browser would.
    pub(crate) fn open(&self, body: &[u8]) -> Value {
        let plain = web_push_native::decrypt(
            body.to_vec(),
            &self.secret,
            &web_push_native::Auth::from(self.auth),
        )
        .expect("the payload decrypts with the subscription's keys");
        serde_json::from_slice(&plain).unwrap()
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Web Push on, with a fresh VAPID key; returns the key pair. `allow_local` lets
/// browsers register this machine's stand-in push service.
pub(crate) fn with_push(
    allow_local: bool,
) -> (
    web_push_native::jwt_simple::algorithms::ES256KeyPair,
    impl Fn(&mut sidechat::settings::Settings),
) {
    let key = web_push_native::jwt_simple::algorithms::ES256KeyPair::generate();
    let path = std::env::temp_dir().join(format!("vapid-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, key.to_pem().unwrap()).unwrap();
    let path = path.display().to_string();
    (key, move |settings: &mut sidechat::settings::Settings| {
        settings.push.vapid_private_key_file = path.clone();
        settings.push.subject = "mailto:ops@example.com".into();
        settings.push.allow_local_endpoints = allow_local;
    })
}

#[tokio::test]
async fn an_offline_user_gets_an_encrypted_push_signed_with_the_vapid_key() {
    use web_push_native::jwt_simple::algorithms::ECDSAP256PublicKeyLike;
    let mut service = crate::receiver::Receiver::start().await;
    let (vapid, configure) = with_push(true);
    let app = spawn_app_with(configure).await;
    let public_key = b64url(&vapid.public_key().public_key().to_bytes_uncompressed());
    let (status, key) = app
        .api_with_key("GET", "/v1/push/public-key", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(key["vapid_public_key"], public_key.as_str());

    let browser = Browser::new(service.url("/push/bob-laptop"));
    browser.subscribe(&app, &hmac_token("bob", 600)).await;
    let message = app.post_message("chat:alice:bob", "alice", "lunch?").await;

    let push = service.next().await;
    assert_eq!(push.path, "/push/bob-laptop");
    assert_eq!(push.header("content-encoding"), "aes128gcm");
    assert!(push.header("ttl").parse::<u64>().unwrap() > 0);
    // RFC 8292: "vapid t=<JWT signed with our key>, k=<our public key>".
    let authorization = push.header("authorization");
    let (token, k) = authorization
        .strip_prefix("vapid t=")
        .and_then(|rest| rest.split_once(", k="))
        .expect("a VAPID authorization");
    assert_eq!(k, public_key);
    vapid
        .public_key()
        .verify_token::<web_push_native::jwt_simple::claims::NoCustomClaims>(token, None)
        .expect("the VAPID JWT verifies with our key");

    let payload = browser.open(&push.body);
    assert_eq!(payload["type"], "message.unread");
    assert_eq!(payload["recipient"], "bob");
    assert_eq!(payload["message"], message);
    assert_eq!(
        payload["unread"],
        json!({"topic": "chat:alice:bob", "count": 1})
    );
}

#[tokio::test]
async fn a_subscription_the_push_service_calls_gone_is_removed() {
    let mut service = crate::receiver::Receiver::start().await;
    service.answer_with(|request| {
        if request.path == "/push/old" {
            410
        } else {
            201
        }
    });
    let (_, configure) = with_push(true);
    let app = spawn_app_with(configure).await;
    let bob = hmac_token("bob", 600);
    let (old, current) = (
        Browser::new(service.url("/push/old")),
        Browser::new(service.url("/push/current")),
    );
    for browser in [&old, &current] {
        browser.subscribe(&app, &bob).await;
    }
    app.post_message("chat:alice:bob", "alice", "ping").await;
    let mut paths = vec![service.next().await.path, service.next().await.path];
    paths.sort();
    assert_eq!(paths, ["/push/current", "/push/old"]);

    eventually("the gone subscription is removed", || async {
        endpoints_of(&app, "bob").await == [current.endpoint.clone()]
    })
    .await;
    // Its owner can no longer remove it, and nothing is retried to it.
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        Some(&bob),
        json!({"endpoint": old.endpoint}),
    )
    .await;
    assert_eq!(status, 404);
    app.outbox_drained().await;
    assert!(service.pending().is_empty(), "no call after 201 or 410");
}

#[tokio::test]
async fn without_web_push_there_is_no_public_key() {
    let app = spawn_app().await;
    let (status, error) = app
        .api_with_key("GET", "/v1/push/public-key", None, None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(error["reason"], "not_found");
}

#[tokio::test]
async fn push_endpoints_inside_the_network_are_refused_with_the_rule_they_break() {
    let app = spawn_app().await;
    let alice = hmac_token("alice", 600);
    let cases = [
        ("http://127.0.0.1:8080/push", "https://"),
        ("http://localhost/push", "https://"),
        ("https://10.0.0.1/push", "not an IP address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "not an IP address",
        ),
        ("https://[::1]/push", "not an IP address"),
        ("https://2130706433/push", "not an IP address"),
        // Names are looked up: these resolve to loopback (/etc/hosts).
        ("https://localhost/push", "resolves to a loopback, private"),
        (
            "https://localhost:15000/admin",
            "resolves to a loopback, private",
        ),
    ];
    for (endpoint, rule) in cases {
        let (status, error) = call(
            &app,
            reqwest::Method::POST,
            Some(&alice),
            subscription(endpoint),
        )
        .await;
        assert_eq!(status, 400, "{endpoint}: {error}");
        assert_eq!(error["reason"], "invalid_payload", "{endpoint}");
        let said = error["error"].as_str().unwrap();
        assert!(said.contains(rule), "{endpoint}: {said}");
    }
    assert!(endpoints_of(&app, "alice").await.is_empty());

    // A push service's public name is accepted (where DNS answers here, its addresses
    // are public; where it does not, the call is checked again when made).
    let public = "https://fcm.googleapis.com/fcm/send/abc123";
    let (status, error) = call(
        &app,
        reqwest::Method::POST,
        Some(&alice),
        subscription(public),
    )
    .await;
    assert_eq!(status, 201, "{error}");
    assert_eq!(endpoints_of(&app, "alice").await, [public]);
}

#[tokio::test]
async fn a_local_endpoint_is_accepted_only_with_allow_local_endpoints() {
    let local = "http://127.0.0.1:9/push/dev-browser";
    let strict = spawn_app().await;
    let (status, _) = call(
        &strict,
        reqwest::Method::POST,
        Some(&hmac_token("alice", 600)),
        subscription(local),
    )
    .await;
    assert_eq!(status, 400);
    let relaxed = spawn_app_with(|s| s.push.allow_local_endpoints = true).await;
    let (status, error) = call(
        &relaxed,
        reqwest::Method::POST,
        Some(&hmac_token("alice", 600)),
        subscription(local),
    )
    .await;
    assert_eq!(status, 201, "{error}");
}

#[tokio::test]
async fn a_push_endpoint_that_turned_private_is_never_called_while_the_webhook_is() {
    // A stand-in for a sidecar inside the pod: it must never see a connection.
    let sidecar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar_port = sidecar.local_addr().unwrap().port();
    let mut host = crate::receiver::Receiver::start().await;
    let (_, with_web_push) = with_push(false);
    let hook = host.url("/hooks/sidechat");
    let app = spawn_app_with(move |s| {
        with_web_push(s);
        // The operator's own webhook URL may point anywhere, loopback included.
        s.webhooks.url = hook.clone();
        s.webhooks.secret = sidechat::settings::Secret::new("webhook-secret-0123456789abcdef");
    })
    .await;
    // Registered while its name still resolved to a public address (as a rebinding
    // attacker's would); now it resolves to loopback.
    let endpoint = format!("https://localhost:{sidecar_port}/admin/shutdown");
    let browser = Browser::new(endpoint.clone());
    let keys = browser.subscription()["keys"].clone();
    let row = push::PushSubscriptionRow {
        endpoint: endpoint.clone(),
        user_id: "bob".into(),
        p256dh: keys["p256dh"].as_str().unwrap().into(),
        auth: keys["auth"].as_str().unwrap().into(),
    };
    app.db(move |conn| push::subscribe(conn, &row).unwrap())
        .await;

    let message = app.post_message("chat:alice:bob", "alice", "hi").await;
    let event = host.next().await;
    assert_eq!(event.json()["messages"][0]["id"], message["id"]);
    eventually("the push is blocked", || async {
        app.metric(r#"sidechat_deliveries_total{sink="push",outcome="blocked"}"#)
            .await
            == Some(1.0)
    })
    .await;
    assert!(
        endpoints_of(&app, "bob").await.is_empty(),
        "the blocked subscription is removed"
    );
    app.outbox_drained().await;
    use futures_util::FutureExt;
    assert!(
        sidecar.accept().now_or_never().is_none(),
        "nothing connected to the private address"
    );
}
