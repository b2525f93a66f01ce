//! `chat.direct = "host"` (PROTOCOL.md §10): only chats the host opened may be joined,
//! and closing one drops its sockets on every replica.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn only_chats_the_host_opened_may_be_joined_and_closing_drops_them_everywhere() {
    let replicas = spawn_replicas(2, |s| s.chat.direct = "host".into()).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;

    let refused = alice.join("chat:alice:bob", json!({})).await;
    assert_eq!(refused["status"], "error", "{refused}");
    assert_eq!(refused["response"]["reason"], "unauthorized");

    // Either order, and idempotent.
    assert_eq!(a.api("PUT", "/api/v1/chats/bob/alice", None).await.0, 204);
    assert_eq!(b.api("PUT", "/api/v1/chats/alice/bob", None).await.0, 204);
    alice.join_ok("chat:alice:bob", json!({})).await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let sent = alice.send_msg("chat:alice:bob", "hello").await;
    assert_eq!(bob.expect_event("chat:alice:bob", "new_msg").await, sent);
    // A socket that never heard of a close (its replica missed the broker's drop) is
    // refused all the same: closed here in the table alone, no drop sent.
    a.db(|conn| {
        use diesel::RunQueryDsl;
        diesel::sql_query("DELETE FROM open_chats")
            .execute(conn)
            .unwrap();
    })
    .await;
    let refused = alice
        .push("chat:alice:bob", "new_msg", json!({"body": "still open?"}))
        .await;
    assert_eq!(refused["response"]["reason"], "unauthorized", "{refused}");
    assert_eq!(b.api("PUT", "/api/v1/chats/alice/bob", None).await.0, 204);
    // Other chats stay closed.
    let other = alice.join("chat:alice:carol", json!({})).await;
    assert_eq!(other["response"]["reason"], "unauthorized");

    assert_eq!(
        a.api("DELETE", "/api/v1/chats/alice/bob", None).await.0,
        204
    );
    for client in [&mut alice, &mut bob] {
        client
            .expect(|f| f[2] == "chat:alice:bob" && f[3] == "phx_close")
            .await;
    }
    let again = bob.join("chat:alice:bob", json!({})).await;
    assert_eq!(again["response"]["reason"], "unauthorized", "{again}");
    let (status, history) = b
        .api("GET", "/api/v1/conversations/chat:alice:bob/messages", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"], json!([sent]), "history is kept");
    assert_eq!(
        a.api("DELETE", "/api/v1/chats/alice/bob", None).await.0,
        204,
        "closing a closed chat is fine"
    );
}

#[tokio::test]
async fn open_sites_need_no_opening_and_bad_pairs_are_refused() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    // Closing on an open site changes nothing for who may join.
    assert_eq!(
        app.api("DELETE", "/api/v1/chats/alice/bob", None).await.0,
        204
    );
    alice.send_msg("chat:alice:bob", "still here").await;
    for path in ["/api/v1/chats/alice/alice", "/api/v1/chats/alice/b%20b"] {
        let (status, error) = app.api("PUT", path, None).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert_eq!(error["reason"], "invalid_payload");
    }
    let (status, _) = app
        .api_with_key("PUT", "/api/v1/chats/alice/bob", None, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_unknown_direct_setting_is_one_clear_line() {
    let mut settings = test_settings();
    settings.chat.direct = "closed".into();
    let error = settings.validate().unwrap_err().to_string();
    assert!(error.contains("chat.direct"), "{error}");
}
