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
    let app = spawn_app().await;
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
