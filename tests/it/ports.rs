//! `server.internal_port`: the host API, its OpenAPI document and /metrics answer only
//! there; browsers' routes only on the public port; the probes on both.

use serde_json::json;

use crate::helpers::*;

async fn status(url: String) -> u16 {
    http_get(url).await.expect("a response").status().as_u16()
}

#[tokio::test]
async fn internal_routes_answer_only_on_the_internal_port() {
    let internal = free_port();
    let app = spawn_app_with(|s| s.server.internal_port = internal).await;
    assert_eq!(app.internal_port, Some(internal));

    // The public port: sockets and the user API work; what is internal does not exist,
    // however it is spelled.
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let token = hmac_token("alice", 300);
    let unread = http_client()
        .get(app.http("/v1/me/unread"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(unread.status().as_u16(), 200);
    for path in [
        "/metrics",
        "/%6Detrics",
        "/api/openapi.json",
        "/api/v1/users/alice/unread",
        "/api//v1/users/alice/unread",
        "/api%2Fv1/users/alice/unread",
    ] {
        assert_eq!(status(app.http(path)).await, 404, "public {path}");
    }
    let posted = http_client()
        .post(app.http("/api/v1/messages"))
        .bearer_auth(API_KEY)
        .json(&json!({"topic": "chat:alice:bob", "user_id": "bob", "body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        posted.status().as_u16(),
        404,
        "the host API on the public port"
    );

    // The internal port: the host API, the document and the metrics; no sockets, no
    // user API, no demo.
    let message = app.post_message("chat:alice:bob", "bob", "hi").await;
    let heard = alice.expect_event("chat:alice:bob", "new_msg").await;
    assert_eq!(heard["id"], message["id"]);
    for path in ["/metrics", "/api/openapi.json"] {
        assert_eq!(
            status(app.internal_http(path)).await,
            200,
            "internal {path}"
        );
    }
    for path in ["/socket/websocket", "/cable", "/v1/me/unread", "/demo"] {
        assert_eq!(
            status(app.internal_http(path)).await,
            404,
            "internal {path}"
        );
    }
    // The probes on both.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(status(app.http(path)).await, 200, "public {path}");
        assert_eq!(
            status(app.internal_http(path)).await,
            200,
            "internal {path}"
        );
    }
}

#[tokio::test]
async fn without_an_internal_port_one_port_serves_everything() {
    let app = spawn_app().await;
    assert_eq!(app.internal_port, None);
    for path in ["/metrics", "/api/openapi.json", "/healthz", "/readyz"] {
        assert_eq!(status(app.http(path)).await, 200, "{path}");
    }
    let (code, _) = app
        .api_with_key(
            "POST",
            "/api/v1/messages",
            Some(json!({"topic": "chat:alice:bob", "user_id": "bob", "body": "hi"})),
            Some(API_KEY),
        )
        .await;
    assert_eq!(code, 201);
}
