//! The host backend API: posting as anyone, streaming edits, moderation, erasure.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_post_from_the_host_is_stored_and_broadcast_like_a_sockets() {
    let app = spawn_app().await;
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    bob.join_ok("user:bob", json!({})).await;
    let (status, message) = app
        .api(
            "POST",
            "/api/v1/messages",
            Some(
                json!({"topic": "chat:bob:alice", "user_id": "alice", "body": "from the backend",
                        "meta": {"order": 7}, "client_ref": "host-1"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{message}");
    assert_eq!(message["topic"], "chat:alice:bob");
    assert_eq!(message["user_id"], "alice");
    assert_eq!(message["kind"], "user");
    assert_eq!(message["meta"], json!({"order": 7}));
    assert_eq!(bob.expect_event("chat:alice:bob", "new_msg").await, message);

    // A retry with the same client_ref is the same message, answered 200.
    let (status, again) = app
        .api(
            "POST",
            "/api/v1/messages",
            Some(json!({"topic": "chat:alice:bob", "user_id": "alice", "body": "from the backend", "client_ref": "host-1"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], message["id"]);
    assert_eq!(app.message_count().await, 1);

    // A bot and the system can post too; the recipient away gets a lobby notification.
    let mut visitor = app.connect("v9").await;
    visitor.join_ok("user:v9", json!({})).await;
    let (status, bot) = app
        .api(
            "POST",
            "/api/v1/messages",
            Some(json!({"topic": "support:v9", "user_id": "helper-bot", "body": "Hi! How can I help?", "kind": "bot"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(bot["kind"], "bot");
    let n = visitor.expect_notification("user:v9", &bot).await;
    assert_eq!(n["message"], bot);

    app.api(
        "PUT",
        "/api/v1/rooms/ops",
        Some(json!({"members": ["bob"]})),
    )
    .await;
    let (status, system) = app
        .api(
            "POST",
            "/api/v1/messages",
            Some(json!({"topic": "room:ops", "user_id": "system", "body": "Deploy at 5pm", "kind": "system"})),
        )
        .await;
    assert_eq!(status, 201);
    let n = bob.expect_notification("user:bob", &system).await;
    assert_eq!(n["message"], system);
}

#[tokio::test]
async fn a_bot_streams_its_answer_and_every_joined_client_sees_it_grow() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut alice_tab = app.connect("alice").await;
    alice.join_ok("chat:alice:assistant", json!({})).await;
    alice_tab.join_ok("chat:assistant:alice", json!({})).await;

    let (status, opened) = app
        .api(
            "POST",
            "/api/v1/messages",
            Some(
                json!({"topic": "chat:alice:assistant", "user_id": "assistant", "body": "",
                        "kind": "bot", "status": "streaming"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{opened}");
    assert_eq!(opened["status"], "streaming");
    assert_eq!(opened["body"], "");
    let id = opened["id"].as_i64().unwrap();
    for client in [&mut alice, &mut alice_tab] {
        client.expect(|f| f[3] == "new_msg").await;
    }

    let mut expected = String::new();
    for token in ["Hel", "lo", ",", " world"] {
        expected.push_str(token);
        let (status, edited) = app
            .api(
                "PATCH",
                &format!("/api/v1/messages/{id}"),
                Some(json!({"append": token})),
            )
            .await;
        assert_eq!(status, 200, "{edited}");
        assert_eq!(edited["body"], expected);
        assert!(edited["edited_at"].is_string());
        for (client, topic) in [
            (&mut alice, "chat:alice:assistant"),
            (&mut alice_tab, "chat:assistant:alice"),
        ] {
            let update = client.expect_event(topic, "msg_updated").await;
            assert_eq!(update["id"], id);
            assert_eq!(update["body"], expected);
            assert_eq!(update["status"], "streaming");
        }
    }
    let (status, done) = app
        .api(
            "PATCH",
            &format!("/api/v1/messages/{id}"),
            Some(json!({"status": "complete"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(done["status"], "complete");
    assert_eq!(done["body"], "Hello, world");
    let update = alice
        .expect_event("chat:alice:assistant", "msg_updated")
        .await;
    assert_eq!(update["status"], "complete");

    let history = alice
        .push("chat:alice:assistant", "history", json!({}))
        .await;
    assert_eq!(history["response"]["messages"][0]["body"], "Hello, world");
}

#[tokio::test]
async fn a_deleted_message_leaves_history_and_every_joined_client_is_told() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let keep = alice.send_msg("chat:alice:bob", "keep me").await;
    let spam = alice.send_msg("chat:alice:bob", "buy now!!!").await;

    let (status, _) = app
        .api("DELETE", &format!("/api/v1/messages/{}", spam["id"]), None)
        .await;
    assert_eq!(status, 204);
    let deleted = bob.expect_event("chat:alice:bob", "msg_deleted").await;
    assert_eq!(
        deleted,
        json!({"id": spam["id"], "topic": "chat:alice:bob"})
    );
    let (_, page) = app
        .api("GET", "/api/v1/conversations/chat:alice:bob/messages", None)
        .await;
    assert_eq!(page["messages"], json!([keep]));
    // It no longer counts as unread either.
    let (_, unread) = app.api("GET", "/api/v1/users/bob/unread", None).await;
    assert_eq!(unread["total"], 1);
    let (status, _) = app
        .api("DELETE", &format!("/api/v1/messages/{}", spam["id"]), None)
        .await;
    assert_eq!(status, 404, "deleting twice");
}

#[tokio::test]
async fn erasing_a_user_removes_their_messages_and_memberships_only() {
    let app = spawn_app().await;
    app.api(
        "PUT",
        "/api/v1/rooms/r1",
        Some(json!({"members": ["alice", "bob"]})),
    )
    .await;
    app.api(
        "PUT",
        "/api/v1/rooms/r2",
        Some(json!({"members": ["alice"]})),
    )
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.join_ok("room:r1", json!({})).await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let from_alice = alice.send_msg("chat:alice:bob", "alice was here").await;
    alice.send_msg("room:r1", "and here").await;
    let from_bob = bob.send_msg("chat:alice:bob", "bob stays").await;

    let (status, report) = app.api("DELETE", "/api/v1/users/alice", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        report,
        json!({"user_id": "alice", "messages_deleted": 2, "memberships_removed": 2})
    );
    let deleted = bob.expect_event("chat:alice:bob", "msg_deleted").await;
    assert_eq!(deleted["id"], from_alice["id"]);
    alice
        .expect(|f| f[2] == "room:r1" && f[3] == "phx_close")
        .await;

    let (_, page) = app
        .api("GET", "/api/v1/conversations/chat:alice:bob/messages", None)
        .await;
    assert_eq!(page["messages"], json!([from_bob]));
    let (_, r1) = app.api("GET", "/api/v1/rooms/r1", None).await;
    assert_eq!(r1["members"], json!(["bob"]));
    let senders: Vec<String> = app
        .db(|conn| {
            use diesel::prelude::*;
            use sidechat::store::schema::messages::dsl::*;
            messages.select(sender_id).load(conn).unwrap()
        })
        .await;
    assert_eq!(senders, ["bob"]);
}

#[tokio::test]
async fn the_host_reads_unread_summaries_and_history_pages() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(alice.send_msg("chat:alice:bob", &format!("m{i}")).await["id"].clone());
    }
    let (status, unread) = app.api("GET", "/api/v1/users/bob/unread", None).await;
    assert_eq!(status, 200);
    assert_eq!(unread["total"], 5);
    assert_eq!(unread["unread"][0]["topic"], "chat:alice:bob");

    let (_, page) = app
        .api(
            "GET",
            &format!(
                "/api/v1/conversations/chat:bob:alice/messages?before={}&limit=2",
                ids[4]
            ),
            None,
        )
        .await;
    let got: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, [ids[2].clone(), ids[3].clone()]);
    assert_eq!(page["more"], true);
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_and_change_nothing() {
    let app = spawn_app_with(|s| s.chat.max_body_bytes = 50).await;
    app.api(
        "PUT",
        "/api/v1/rooms/r1",
        Some(json!({"members": ["alice"]})),
    )
    .await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let existing = alice.send_msg("chat:alice:bob", "original").await;
    let id = existing["id"].as_i64().unwrap();
    let post = |v: Value| ("POST", "/api/v1/messages".to_string(), Some(v));
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        {
            let (m, p, b) = post(json!({"topic": "user:alice", "user_id": "alice", "body": "x"}));
            (m, p, b, 400, "invalid_topic")
        },
        {
            let (m, p, b) = post(json!({"topic": "inbox", "user_id": "alice", "body": "x"}));
            (m, p, b, 400, "invalid_topic")
        },
        {
            let (m, p, b) = post(json!({"topic": "chat:a", "user_id": "alice", "body": "x"}));
            (m, p, b, 400, "invalid_topic")
        },
        {
            let (m, p, b) =
                post(json!({"topic": "chat:alice:bob", "user_id": "mallory", "body": "x"}));
            (m, p, b, 403, "unauthorized")
        },
        {
            let (m, p, b) = post(json!({"topic": "room:nope", "user_id": "alice", "body": "x"}));
            (m, p, b, 404, "not_found")
        },
        {
            let (m, p, b) = post(
                json!({"topic": "chat:alice:bob", "user_id": "alice", "body": "x".repeat(51)}),
            );
            (m, p, b, 413, "too_large")
        },
        {
            let (m, p, b) =
                post(json!({"topic": "chat:alice:bob", "user_id": "alice", "body": "  "}));
            (m, p, b, 400, "invalid_payload")
        },
        {
            let (m, p, b) = post(json!({"topic": "chat:alice:bob", "user_id": "a b", "body": "x"}));
            (m, p, b, 400, "invalid_payload")
        },
        {
            let (m, p, b) = post(
                json!({"topic": "chat:alice:bob", "user_id": "alice", "body": "x", "kind": "robot"}),
            );
            (m, p, b, 400, "invalid_payload")
        },
        {
            let (m, p, b) = post(
                json!({"topic": "chat:alice:bob", "user_id": "alice", "body": "x", "colour": "red"}),
            );
            (m, p, b, 400, "invalid_payload")
        },
        {
            let (m, p, b) = post(json!({"topic": "chat:alice:bob", "body": "x"}));
            (m, p, b, 400, "invalid_payload")
        },
        (
            "PATCH",
            format!("/api/v1/messages/{id}"),
            Some(json!({"body": "a", "append": "b"})),
            400,
            "invalid_payload",
        ),
        (
            "PATCH",
            format!("/api/v1/messages/{id}"),
            Some(json!({})),
            400,
            "invalid_payload",
        ),
        (
            "PATCH",
            format!("/api/v1/messages/{id}"),
            Some(json!({"append": "y".repeat(43)})),
            413,
            "too_large",
        ),
        (
            "PATCH",
            format!("/api/v1/messages/{id}"),
            Some(json!({"status": "done"})),
            400,
            "invalid_payload",
        ),
        (
            "PATCH",
            "/api/v1/messages/999999".into(),
            Some(json!({"append": "x"})),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/api/v1/messages/abc".into(),
            Some(json!({"append": "x"})),
            400,
            "invalid_payload",
        ),
        (
            "PATCH",
            "/api/v1/messages/0".into(),
            Some(json!({"append": "x"})),
            400,
            "invalid_payload",
        ),
        (
            "DELETE",
            "/api/v1/messages/999999".into(),
            None,
            404,
            "not_found",
        ),
        (
            "PUT",
            "/api/v1/rooms/r1".into(),
            Some(json!({"members": ["ok", "not ok"]})),
            400,
            "invalid_payload",
        ),
        (
            "PUT",
            "/api/v1/rooms/bad:id".into(),
            Some(json!({"members": []})),
            400,
            "invalid_payload",
        ),
        (
            "PUT",
            "/api/v1/rooms/r1".into(),
            Some(json!({"name": "x"})),
            400,
            "invalid_payload",
        ),
        (
            "PUT",
            "/api/v1/rooms/nope/members/bob".into(),
            None,
            404,
            "not_found",
        ),
        (
            "DELETE",
            "/api/v1/rooms/r1/members/bob".into(),
            None,
            404,
            "not_found",
        ),
        ("GET", "/api/v1/rooms/nope".into(), None, 404, "not_found"),
        (
            "GET",
            "/api/v1/users/a%20b/unread".into(),
            None,
            400,
            "invalid_payload",
        ),
        (
            "GET",
            "/api/v1/conversations/user:bob/messages".into(),
            None,
            400,
            "invalid_topic",
        ),
        (
            "GET",
            "/api/v1/conversations/chat:alice:bob/messages?limit=0".into(),
            None,
            400,
            "invalid_payload",
        ),
        (
            "DELETE",
            "/api/v1/users/a%20b".into(),
            None,
            400,
            "invalid_payload",
        ),
    ];
    for (method, path, body, status, reason) in cases {
        let (got, response) = app.api(method, &path, body.clone()).await;
        assert_eq!(got, status, "{method} {path} {body:?}: {response}");
        assert_eq!(
            response["reason"], reason,
            "{method} {path} {body:?}: {response}"
        );
        assert!(response["error"].is_string(), "{response}");
    }

    // Malformed JSON, the wrong content type, an oversized body, no key, a wrong key.
    let client = http_client();
    let raw = |body: &'static str, content_type: &'static str| {
        client
            .post(app.http("/api/v1/messages"))
            .bearer_auth(API_KEY)
            .header("content-type", content_type)
            .body(body)
    };
    for (request, status, reason) in [
        (
            raw("{\"topic\": ", "application/json"),
            400,
            "invalid_payload",
        ),
        (
            raw("topic=chat", "application/x-www-form-urlencoded"),
            415,
            "invalid_payload",
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["reason"], reason);
    }
    let huge = json!({"topic": "chat:alice:bob", "user_id": "alice", "body": "x".repeat(300_000)});
    let (status, body) = app.api("POST", "/api/v1/messages", Some(huge)).await;
    assert_eq!((status, body["reason"].as_str()), (413, Some("too_large")));
    for key in [None, Some("wrong-key")] {
        let (status, body) = app
            .api_with_key("POST", "/api/v1/messages", Some(json!({})), key)
            .await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(body["reason"], "unauthorized");
    }

    // Nothing of that changed anything.
    assert_eq!(app.message_count().await, 1);
    let (_, page) = app
        .api("GET", "/api/v1/conversations/chat:alice:bob/messages", None)
        .await;
    assert_eq!(page["messages"], json!([existing]));
    let (_, r1) = app.api("GET", "/api/v1/rooms/r1", None).await;
    assert_eq!(r1["members"], json!(["alice"]));
}

#[tokio::test]
async fn every_configured_key_works_and_an_empty_list_turns_the_api_off() {
    let app = spawn_app().await;
    let (status, _) = app
        .api_with_key(
            "GET",
            "/api/v1/users/bob/unread",
            None,
            Some("test-api-key-rotated-0123456789"),
        )
        .await;
    assert_eq!(status, 200);
    let off = spawn_app_with(|s| s.api.keys.clear()).await;
    let (status, body) = off.api("GET", "/api/v1/users/bob/unread", None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("api.keys"),
        "{body}"
    );
}
