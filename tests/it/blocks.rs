//! Blocks (PROTOCOL.md §10): a blocked pair cannot chat, and the blocker hears nothing
//! of the blocked anywhere, on every replica, across restarts, until unblocked.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::push::{Browser, with_push};
use crate::receiver::Receiver;
use crate::webhooks::hooked;

/// A user's own call to `/v1/me/blocks...`.
async fn as_user(app: &TestApp, user: &str, method: &str, path: &str) -> (u16, Value) {
    let token = hmac_token(user, 600);
    app.api_with_key(method, path, None, Some(&token)).await
}

fn ids(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .map(|all| all.iter().map(|m| m["id"].as_i64().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_blocked_pair_cannot_chat_either_way_until_unblocked() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    alice.send_msg("chat:alice:bob", "hi").await;

    assert_eq!(
        as_user(&app, "alice", "PUT", "/v1/me/blocks/bob").await.0,
        204
    );
    assert_eq!(
        as_user(&app, "alice", "PUT", "/v1/me/blocks/bob").await.0,
        204,
        "a repeat is fine"
    );
    let (status, list) = as_user(&app, "alice", "GET", "/v1/me/blocks").await;
    assert_eq!((status, list), (200, json!({"blocks": ["bob"]})));
    let (_, bobs) = as_user(&app, "bob", "GET", "/v1/me/blocks").await;
    assert_eq!(bobs, json!({"blocks": []}), "a block is one user's");

    let stored = app.message_count().await;
    for (client, who) in [(&mut bob, "the blocked"), (&mut alice, "the blocker")] {
        let reply = client
            .push("chat:alice:bob", "new_msg", json!({"body": "still there?"}))
            .await;
        assert_eq!(reply["status"], "error", "{who}: {reply}");
        assert_eq!(reply["response"]["reason"], "blocked", "{who}");
    }
    assert_eq!(app.message_count().await, stored, "nothing was stored");
    let (status, history) = app
        .api_with_key(
            "GET",
            "/v1/conversations/chat:alice:bob/messages",
            None,
            Some(&hmac_token("bob", 600)),
        )
        .await;
    assert_eq!(status, 200, "history stays readable");
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    // Nor does typing reach the other side.
    let reply = bob
        .push("chat:alice:bob", "typing", json!({"typing": true}))
        .await;
    assert_eq!(reply["status"], "ok", "typing is answered as ever: {reply}");
    alice.sync().await;
    assert!(
        !alice.has_buffered(|f| f[3] == "typing"),
        "the blocker saw the blocked typing"
    );

    assert_eq!(
        as_user(&app, "alice", "DELETE", "/v1/me/blocks/bob")
            .await
            .0,
        204
    );
    bob.push("chat:alice:bob", "typing", json!({"typing": true}))
        .await;
    alice.expect_event("chat:alice:bob", "typing").await;
    bob.send_msg("chat:alice:bob", "sorry").await;
    alice.send_msg("chat:alice:bob", "fine").await;
    assert_eq!(
        as_user(&app, "alice", "GET", "/v1/me/blocks").await.1,
        json!({"blocks": []})
    );
}

#[tokio::test]
async fn the_blocker_gets_no_notification_webhook_or_push_from_the_blocked() {
    let mut host = Receiver::start().await;
    let mut push_service = Receiver::start().await;
    let (_vapid, push_on) = with_push(true);
    let hooks_on = hooked(&host, 0);
    let app = spawn_app_with(move |s| {
        push_on(s);
        hooks_on(s);
    })
    .await;
    let browser = Browser::new(push_service.url("/push/alice"));
    browser.subscribe(&app, &hmac_token("alice", 600)).await;
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/rooms/r",
            Some(json!({"name": "r", "members": ["alice", "bob", "carol"]})),
        )
        .await;
    assert_eq!(status, 201);
    let mut alice = app.connect("alice").await;
    alice.join_ok("user:alice", json!({})).await;
    let mut carol = app.connect("carol").await;
    carol.join_ok("user:carol", json!({})).await;
    // The host blocks for alice: the same as her own call.
    let (status, _) = app.api("PUT", "/api/v1/users/alice/blocks/bob", None).await;
    assert_eq!(status, 204);

    let in_room = app.post_message("room:r", "bob", "buy now").await;
    carol.expect_notification("user:carol", &in_room).await;
    // The host may still post for bob in their chat; alice is not told of it.
    let direct = app
        .post_message("chat:alice:bob", "bob", "buy now, alice")
        .await;
    let from_dave = app.post_message("chat:alice:dave", "dave", "lunch?").await;
    alice.expect_notification("user:alice", &from_dave).await;
    app.outbox_drained().await;
    alice.sync().await;
    for blocked in [&in_room, &direct] {
        assert!(
            !alice
                .has_buffered(|f| f[3] == "notification" && f[4]["message"]["id"] == blocked["id"]),
            "alice was notified of {blocked}"
        );
    }
    let mut webhooks: Vec<(String, Vec<i64>)> = host
        .pending()
        .iter()
        .map(|call| {
            let event = call.json();
            (
                event["recipient"].as_str().unwrap().to_owned(),
                ids(&event["messages"]),
            )
        })
        .collect();
    webhooks.sort();
    let id = |m: &Value| m["id"].as_i64().unwrap();
    assert_eq!(
        webhooks,
        vec![
            ("alice".to_owned(), vec![id(&from_dave)]),
            ("carol".to_owned(), vec![id(&in_room)]),
        ]
    );
    let pushes = push_service.pending();
    assert_eq!(pushes.len(), 1, "one push, of dave's message");
    assert_eq!(
        browser.open(&pushes[0].body)["message"]["id"],
        from_dave["id"]
    );

    // Unblocked: all of it again.
    let (status, _) = app
        .api("DELETE", "/api/v1/users/alice/blocks/bob", None)
        .await;
    assert_eq!(status, 204);
    let again = app.post_message("chat:alice:bob", "bob", "hello?").await;
    alice.expect_notification("user:alice", &again).await;
    let call = host.next().await.json();
    assert_eq!(call["recipient"], "alice");
    assert_eq!(ids(&call["messages"]), vec![id(&again)]);
    let push = push_service.next().await;
    assert_eq!(browser.open(&push.body)["message"]["id"], again["id"]);
    let in_room_again = app.post_message("room:r", "bob", "back").await;
    alice
        .expect_notification("user:alice", &in_room_again)
        .await;
}

/// Sends in `chat:alice:bob` until the reply is `wanted`, failing after the test wait.
async fn send_until(client: &mut Client, what: &str, wanted: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = client
            .push("chat:alice:bob", "new_msg", json!({"body": "anyone?"}))
            .await;
        if wanted(&reply) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {reply}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_block_on_one_replica_holds_on_the_other() {
    let replicas = spawn_replicas(2, |_| {}).await;
    let mut bob_on_b = replicas[1].connect("bob").await;
    bob_on_b.join_ok("chat:alice:bob", json!({})).await;
    bob_on_b.send_msg("chat:alice:bob", "hi").await;

    assert_eq!(
        as_user(&replicas[0], "alice", "PUT", "/v1/me/blocks/bob")
            .await
            .0,
        204
    );
    // The broker carries the change; it lands within milliseconds, far inside the
    // reload that would otherwise mend a lost one.
    send_until(
        &mut bob_on_b,
        "bob's replica holds alice's block",
        |reply| reply["response"]["reason"] == "blocked",
    )
    .await;
    // Unblocked on B, for a sender on A.
    let mut alice_on_a = replicas[0].connect("alice").await;
    alice_on_a.join_ok("chat:alice:bob", json!({})).await;
    assert_eq!(
        as_user(&replicas[1], "alice", "DELETE", "/v1/me/blocks/bob")
            .await
            .0,
        204
    );
    send_until(
        &mut alice_on_a,
        "alice's replica holds the unblock",
        |reply| reply["status"] == "ok",
    )
    .await;
}

#[tokio::test]
async fn blocks_survive_a_restart() {
    let mut first = spawn_app().await;
    assert_eq!(
        as_user(&first, "alice", "PUT", "/v1/me/blocks/bob").await.0,
        204
    );
    first.shutdown.cancel();
    first.stopped().await.unwrap();

    let second = spawn_app_on(first.db_url.clone(), |_| {}).await;
    let mut bob = second.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let reply = bob
        .push("chat:alice:bob", "new_msg", json!({"body": "remember me?"}))
        .await;
    assert_eq!(reply["response"]["reason"], "blocked", "{reply}");
    assert_eq!(second.metric("sidechat_blocks").await, Some(1.0));
}

#[tokio::test]
async fn bad_block_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let cases = [
        ("PUT", "/v1/me/blocks/alice", "themselves"),
        ("PUT", "/v1/me/blocks/not%20an%20id", "user id"),
        ("DELETE", "/v1/me/blocks/x%21", "user id"),
    ];
    for (method, path, says) in cases {
        let (status, error) = as_user(&app, "alice", method, path).await;
        assert_eq!(status, 400, "{method} {path}: {error}");
        assert_eq!(error["reason"], "invalid_payload");
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{path}: {error}"
        );
    }
    let host_cases = [
        ("PUT", "/api/v1/users/bob/blocks/bob"),
        ("PUT", "/api/v1/users/b%20b/blocks/alice"),
        ("GET", "/api/v1/users/b%20b/blocks"),
    ];
    for (method, path) in host_cases {
        let (status, error) = app.api(method, path, None).await;
        assert_eq!(status, 400, "{method} {path}: {error}");
    }
    let (status, _) = app
        .api_with_key("PUT", "/v1/me/blocks/bob", None, None)
        .await;
    assert_eq!(status, 401, "a token is needed");
    let (status, _) = app
        .api_with_key("PUT", "/api/v1/users/alice/blocks/bob", None, Some("nope"))
        .await;
    assert_eq!(status, 401, "an API key is needed");
    let (_, list) = app.api("GET", "/api/v1/users/alice/blocks", None).await;
    assert_eq!(list, json!({"blocks": []}));
    let (_, list) = app.api("GET", "/api/v1/users/bob/blocks", None).await;
    assert_eq!(list, json!({"blocks": []}));
}

#[tokio::test]
async fn erasing_a_user_removes_their_blocks_both_ways() {
    let app = spawn_app().await;
    for (blocker, blocked) in [("alice", "bob"), ("carol", "alice")] {
        let path = format!("/api/v1/users/{blocker}/blocks/{blocked}");
        assert_eq!(app.api("PUT", &path, None).await.0, 204);
    }
    let (status, _) = app.api("DELETE", "/api/v1/users/alice", None).await;
    assert_eq!(status, 200);
    for user in ["alice", "carol"] {
        let (_, list) = app
            .api("GET", &format!("/api/v1/users/{user}/blocks"), None)
            .await;
        assert_eq!(list, json!({"blocks": []}), "{user}");
    }
    // This replica's copy forgot them too: an erased user who comes back can chat.
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    bob.send_msg("chat:alice:bob", "welcome back").await;
    eventually("the copy is empty", || async {
        app.metric("sidechat_blocks").await == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn a_user_may_block_only_so_many() {
    let app = spawn_app_with(|s| s.chat.max_blocks_per_user = 2).await;
    for other in ["b", "c"] {
        let (status, _) = as_user(&app, "a", "PUT", &format!("/v1/me/blocks/{other}")).await;
        assert_eq!(status, 204);
    }
    let (status, error) = as_user(&app, "a", "PUT", "/v1/me/blocks/d").await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["reason"], "too_many_blocks");
    assert_eq!(
        as_user(&app, "a", "PUT", "/v1/me/blocks/b").await.0,
        204,
        "a block already held is no new one"
    );
    assert_eq!(
        as_user(&app, "a", "GET", "/v1/me/blocks").await.1,
        json!({"blocks": ["b", "c"]})
    );
}

#[tokio::test]
async fn blocks_and_unblocks_racing_on_two_replicas_leave_both_copies_as_the_table() {
    let replicas = spawn_replicas(2, |_| {}).await;
    // Ten changes at once, alternating replicas and directions.
    let changes = (0..10).map(|n| {
        let (replica, method) = (&replicas[n % 2], if n % 3 == 0 { "DELETE" } else { "PUT" });
        async move {
            as_user(replica, "alice", method, "/v1/me/blocks/bob")
                .await
                .0
        }
    });
    for status in futures_util::future::join_all(changes).await {
        assert_eq!(status, 204);
    }
    let (_, list) = replicas[0]
        .api("GET", "/api/v1/users/alice/blocks", None)
        .await;
    let blocked = list["blocks"] == json!(["bob"]);
    for replica in &replicas {
        let mut bob = replica.connect("bob").await;
        bob.join_ok("chat:alice:bob", json!({})).await;
        send_until(&mut bob, "the copy agrees with the table", |reply| {
            (reply["response"]["reason"] == "blocked") == blocked
        })
        .await;
    }
}
