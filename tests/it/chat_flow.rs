//! The one-to-one flow of PROTOCOL.md §3, end to end.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_message_is_acked_stored_and_delivered_under_each_spelling() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect_with_token(&jwt_token("bob", None, 3600)).await;
    let history = alice.join_ok("chat:alice:bob", json!({})).await;
    assert_eq!(history, json!({"messages": [], "more": false}));
    bob.join_ok("chat:bob:alice", json!({})).await;

    let reply = alice
        .push(
            "chat:alice:bob",
            "new_msg",
            json!({"body": "  hello bob  ", "client_ref": "c-1", "meta": {"k": 1}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let message = &reply["response"]["message"];
    assert_eq!(message["body"], "hello bob");
    assert_eq!(message["topic"], "chat:alice:bob");
    assert_eq!(message["user_id"], "alice");
    assert_eq!(message["client_ref"], "c-1");
    assert_eq!(message["meta"], json!({"k": 1}));
    assert_eq!(message["kind"], "user");
    assert_eq!(message["status"], "complete");
    assert_eq!(message["is_delivered"], false);
    assert!(message["id"].as_i64().unwrap() > 0);

    // Bob joined with the other spelling and hears it under that spelling.
    let delivered = bob.expect_event("chat:bob:alice", "new_msg").await;
    assert_eq!(delivered, *message);
    // The sender's own connection gets the broadcast too.
    let echoed = alice.expect_event("chat:alice:bob", "new_msg").await;
    assert_eq!(echoed["id"], message["id"]);
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test]
async fn a_resend_with_the_same_client_ref_stores_nothing_new() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let payload = json!({"body": "once", "client_ref": "retry-1"});
    let first = alice
        .push("chat:alice:bob", "new_msg", payload.clone())
        .await;
    let again = alice.push("chat:alice:bob", "new_msg", payload).await;
    assert_eq!(first["status"], "ok");
    assert_eq!(first["response"]["message"], again["response"]["message"]);
    assert_eq!(app.message_count().await, 1);

    // The same ref from a new connection (a reconnect) is the same message.
    let mut reconnected = app.connect("alice").await;
    reconnected.join_ok("chat:bob:alice", json!({})).await;
    let third = reconnected
        .push(
            "chat:bob:alice",
            "new_msg",
            json!({"body": "once", "client_ref": "retry-1"}),
        )
        .await;
    assert_eq!(
        third["response"]["message"]["id"],
        first["response"]["message"]["id"]
    );
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test]
async fn concurrent_resends_in_one_batch_make_one_row() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    // Pipelined without waiting: they reach the writer together.
    for i in 0..5 {
        let frame = json!(["1", format!("p{i}"), "chat:alice:bob", "new_msg", {"body": "dup", "client_ref": "same"}]);
        alice.send_text(frame.to_string()).await;
    }
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = format!("p{i}");
        let reply = alice
            .expect(|f| f[1] == json!(r) && f[3] == "phx_reply")
            .await;
        ids.push(reply[4]["response"]["message"]["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test]
async fn a_recipient_who_is_not_in_the_chat_gets_a_lobby_notification() {
    let app = spawn_app().await;
    let mut bob = app.connect("bob").await;
    let lobby = bob.join_ok("user:bob", json!({})).await;
    assert_eq!(lobby, json!({"unread": [], "total": 0}));
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let sent = alice.send_msg("chat:alice:bob", "ping").await;

    let notification = bob.expect_notification("user:bob", &sent).await;
    assert_eq!(notification["topic"], "chat:alice:bob");
    assert_eq!(notification["message"], sent);
    assert_eq!(notification["count"], 1);

    // Once bob is in the chat, messages come there, not to the lobby.
    bob.join_ok("chat:bob:alice", json!({})).await;
    alice.send_msg("chat:alice:bob", "pong?").await;
    bob.expect_event("chat:bob:alice", "new_msg").await;
    bob.sync().await;
    assert!(!bob.has_buffered(|f| f[3] == "notification"));
}

#[tokio::test]
async fn read_marks_is_delivered_tells_the_sender_and_updates_the_lobby() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let first = alice.send_msg("chat:alice:bob", "one").await;
    let second = alice.send_msg("chat:alice:bob", "two").await;
    let third = alice.send_msg("chat:alice:bob", "three").await;

    let mut bob = app.connect("bob").await;
    bob.join_ok("user:bob", json!({})).await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let reply = bob
        .push(
            "chat:alice:bob",
            "read",
            json!({"message_id": second["id"]}),
        )
        .await;
    assert_eq!(reply["response"], json!({"marked": 2}), "{reply}");

    let receipt = alice.expect_event("chat:alice:bob", "read").await;
    assert_eq!(
        receipt,
        json!({"user_id": "bob", "message_id": second["id"]})
    );
    let unread = bob.expect_event("user:bob", "unread").await;
    assert_eq!(unread, json!({"topic": "chat:alice:bob", "count": 1}));

    let delivered: Vec<(i64, bool)> = app
        .db(|conn| {
            use diesel::prelude::*;
            use sidechat::store::schema::messages::dsl::*;
            messages
                .select((id, is_delivered))
                .order(id)
                .load(conn)
                .unwrap()
        })
        .await;
    assert_eq!(
        delivered,
        vec![
            (first["id"].as_i64().unwrap(), true),
            (second["id"].as_i64().unwrap(), true),
            (third["id"].as_i64().unwrap(), false)
        ]
    );
    // Reading again marks nothing; the sender reading marks nothing of theirs.
    let again = bob
        .push(
            "chat:alice:bob",
            "read",
            json!({"message_id": second["id"]}),
        )
        .await;
    assert_eq!(again["response"], json!({"marked": 0}));
    let own = alice
        .push("chat:alice:bob", "read", json!({"message_id": third["id"]}))
        .await;
    assert_eq!(own["response"], json!({"marked": 0}));
}

#[tokio::test]
async fn the_lobby_summary_at_the_next_login_shows_what_is_still_unread() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.send_msg("chat:alice:bob", "are you there?").await;
    let last_from_alice = alice.send_msg("chat:alice:bob", "hello?").await;
    let mut carol = app.connect("carol").await;
    carol.join_ok("chat:bob:carol", json!({})).await;
    let from_carol = carol.send_msg("chat:bob:carol", "hi bob").await;

    // Bob logs in later, on a new connection.
    let mut bob = app.connect("bob").await;
    let summary = bob.join_ok("user:bob", json!({})).await;
    assert_eq!(summary["total"], 3);
    let unread = summary["unread"].as_array().unwrap();
    assert_eq!(unread.len(), 2);
    // Newest first.
    assert_eq!(unread[0]["topic"], "chat:bob:carol");
    assert_eq!(unread[0]["count"], 1);
    assert_eq!(unread[0]["last_message"], from_carol);
    assert_eq!(unread[1]["topic"], "chat:alice:bob");
    assert_eq!(unread[1]["count"], 2);
    assert_eq!(unread[1]["last_message"], last_from_alice);

    // After reading one chat and reconnecting, only the other remains.
    bob.join_ok("chat:bob:carol", json!({})).await;
    bob.push(
        "chat:bob:carol",
        "read",
        json!({"message_id": from_carol["id"]}),
    )
    .await;
    drop(bob);
    let mut bob_again = app.connect("bob").await;
    let summary = bob_again.join_ok("user:bob", json!({})).await;
    assert_eq!(summary["total"], 2);
    assert_eq!(summary["unread"].as_array().unwrap().len(), 1);
    assert_eq!(summary["unread"][0]["topic"], "chat:alice:bob");
}

#[tokio::test]
async fn typing_reaches_the_others_but_not_the_typist() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let reply = alice
        .push("chat:alice:bob", "typing", json!({"typing": true}))
        .await;
    assert_eq!(reply, json!({"status": "ok", "response": {}}));
    let typing = bob.expect_event("chat:alice:bob", "typing").await;
    assert_eq!(typing, json!({"user_id": "alice", "typing": true}));
    alice.sync().await;
    assert!(!alice.has_buffered(|f| f[3] == "typing"));
}

fn ids(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn history_pages_backwards_and_after_recovers_what_was_missed() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        sent.push(
            alice.send_msg("chat:alice:bob", &format!("m{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }

    let mut bob = app.connect("bob").await;
    let newest = bob.join_ok("chat:bob:alice", json!({"limit": 3})).await;
    assert_eq!(ids(&newest["messages"]), sent[4..7]);
    assert_eq!(newest["more"], true);

    let older = bob
        .push(
            "chat:bob:alice",
            "history",
            json!({"before": sent[4], "limit": 3}),
        )
        .await;
    assert_eq!(ids(&older["response"]["messages"]), sent[1..4]);
    assert_eq!(older["response"]["more"], true);
    let oldest = bob
        .push(
            "chat:bob:alice",
            "history",
            json!({"before": sent[1], "limit": 3}),
        )
        .await;
    assert_eq!(ids(&oldest["response"]["messages"]), sent[0..1]);
    assert_eq!(oldest["response"]["more"], false);

    // Exactly a page left: no `more`.
    let exact = bob
        .push(
            "chat:bob:alice",
            "history",
            json!({"before": sent[3], "limit": 3}),
        )
        .await;
    assert_eq!(ids(&exact["response"]["messages"]), sent[0..3]);
    assert_eq!(exact["response"]["more"], false);

    // Rejoin after a gap: the oldest n after the last seen, then continue with history.
    let mut bob_again = app.connect("bob").await;
    let recovered = bob_again
        .join_ok("chat:bob:alice", json!({"after": sent[2], "limit": 2}))
        .await;
    assert_eq!(ids(&recovered["messages"]), sent[3..5]);
    assert_eq!(recovered["more"], true);
    let rest = bob_again
        .push(
            "chat:bob:alice",
            "history",
            json!({"after": sent[4], "limit": 10}),
        )
        .await;
    assert_eq!(ids(&rest["response"]["messages"]), sent[5..7]);
    assert_eq!(rest["response"]["more"], false);
}

#[tokio::test]
async fn presence_state_on_join_and_diffs_as_people_come_and_go() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let state = alice.expect_event("chat:alice:bob", "presence_state").await;
    assert_eq!(
        state.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["alice"]
    );
    let meta = &state["alice"]["metas"][0];
    assert!(meta["phx_ref"].is_string());
    assert!(meta["online_at"].as_i64().unwrap() > 1_700_000_000_000);

    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:bob:alice", json!({})).await;
    let bob_state = bob.expect_event("chat:bob:alice", "presence_state").await;
    let mut present: Vec<&String> = bob_state.as_object().unwrap().keys().collect();
    present.sort();
    assert_eq!(present, ["alice", "bob"]);

    let joined = alice
        .expect(|f| f[3] == "presence_diff" && f[4]["joins"].get("bob").is_some())
        .await;
    assert_eq!(joined[4]["leaves"], json!({}));

    let left = bob.push("chat:bob:alice", "phx_leave", json!({})).await;
    assert_eq!(left["status"], "ok");
    let diff = alice
        .expect(|f| f[3] == "presence_diff" && f[4]["leaves"].get("bob").is_some())
        .await;
    assert_eq!(
        diff[4]["leaves"]["bob"]["metas"][0]["phx_ref"],
        bob_state["bob"]["metas"][0]["phx_ref"]
    );
}

#[tokio::test]
async fn a_disconnect_counts_as_leaving() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    drop(bob);
    alice
        .expect(|f| f[3] == "presence_diff" && f[4]["leaves"].get("bob").is_some())
        .await;
    // Bob is away now, so a new message notifies his lobby instead.
    let mut bob_lobby = app.connect("bob").await;
    bob_lobby.join_ok("user:bob", json!({})).await;
    let sent = alice.send_msg("chat:alice:bob", "still there?").await;
    let n = bob_lobby.expect_notification("user:bob", &sent).await;
    assert_eq!(n["count"], 1);
}

#[tokio::test]
async fn the_user_api_serves_unread_and_history_to_the_users_own_token() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let sent = alice.send_msg("chat:alice:bob", "over http").await;
    let client = http_client();

    let unread: Value = client
        .get(app.http("/v1/me/unread"))
        .bearer_auth(hmac_token("bob", 60))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unread["total"], 1);
    assert_eq!(unread["unread"][0]["last_message"], sent);

    let page = client
        .get(app.http("/v1/conversations/chat:bob:alice/messages?limit=10"))
        .bearer_auth(jwt_token("bob", None, 60))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["messages"][0], sent);
    assert_eq!(page["more"], false);

    let cases = [
        ("/v1/me/unread", None, 401, "missing_token"),
        (
            "/v1/conversations/chat:alice:bob/messages",
            Some("carol"),
            403,
            "unauthorized",
        ),
        (
            "/v1/conversations/chat:alice/messages",
            Some("bob"),
            400,
            "invalid_topic",
        ),
        (
            "/v1/conversations/chat:alice:bob/messages?limit=0",
            Some("bob"),
            400,
            "invalid_payload",
        ),
        (
            "/v1/conversations/chat:alice:bob/messages?before=x",
            Some("bob"),
            400,
            "invalid_payload",
        ),
    ];
    for (path, user, status, reason) in cases {
        let mut request = client.get(app.http(path));
        if let Some(user) = user {
            request = request.bearer_auth(hmac_token(user, 60));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["reason"], reason, "{path}: {body}");
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn receipts_sent_faster_than_stored_all_get_their_answer() {
    let app = spawn_app_with(|s| s.limits.messages_per_second = 0).await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(alice.send_msg("chat:alice:bob", &format!("m{i}")).await["id"].clone());
    }
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    // Pipelined, as a client reading each message as it arrives would send them, with
    // one id that is no message of this chat among them.
    let mut refs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let r = format!("read{i}");
        bob.send_text(json!(["1", r, "chat:alice:bob", "read", {"message_id": id}]).to_string())
            .await;
        refs.push(r);
        if i == 10 {
            bob.send_text(
                json!(["1", "bad", "chat:alice:bob", "read", {"message_id": 999999}]).to_string(),
            )
            .await;
        }
    }
    let mut marked = 0;
    for r in &refs {
        let reply = bob
            .expect(|f| f[1] == json!(r) && f[3] == "phx_reply")
            .await;
        assert_eq!(reply[4]["status"], "ok", "{reply}");
        marked += reply[4]["response"]["marked"].as_i64().unwrap();
    }
    let bad = bob.expect(|f| f[1] == "bad" && f[3] == "phx_reply").await;
    assert_eq!(bad[4]["response"]["reason"], "not_found");
    assert_eq!(marked, 20, "every message counted once");
    let unread: i64 = app
        .db(|conn| {
            use diesel::prelude::*;
            use sidechat::store::schema::messages::dsl::*;
            messages
                .filter(is_delivered.eq(false))
                .count()
                .get_result(conn)
                .unwrap()
        })
        .await;
    assert_eq!(unread, 0);
    // The sender's last receipt names the newest message.
    let last = alice
        .expect(|f| f[3] == "read" && f[4]["message_id"] == ids[19])
        .await;
    assert_eq!(last[4]["user_id"], "bob");
}
