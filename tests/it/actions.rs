//! Message actions from a member's socket (PROTOCOL.md §11): edit and delete one's own,
//! the names people see, and attachments.

use serde_json::{Value, json};

use crate::helpers::*;

const CHAT: &str = "chat:alice:bob";

async fn pair(app: &TestApp) -> (Client, Client) {
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join_ok(CHAT, json!({})).await;
    bob.join_ok(CHAT, json!({})).await;
    (alice, bob)
}

fn reason(reply: &Value) -> &Value {
    &reply["response"]["reason"]
}

/// The conversation's history as the host API shows it.
async fn host_messages(app: &TestApp) -> Value {
    let path = format!("/api/v1/conversations/{CHAT}/messages");
    let (status, page) = app.api("GET", &path, None).await;
    assert_eq!(status, 200, "{page}");
    page
}

#[tokio::test]
async fn an_author_edits_their_message_and_everyone_sees_it() {
    let app = spawn_app().await;
    let (mut alice, mut bob) = pair(&app).await;
    let first = alice.send_msg(CHAT, "first").await;
    let sent = alice.send_msg(CHAT, "helo").await;
    bob.expect(|f| f[3] == "new_msg" && f[4]["id"] == sent["id"])
        .await;

    let reply = alice
        .push(
            CHAT,
            "edit_msg",
            json!({"id": sent["id"], "body": "  hello  "}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let edited = &reply["response"]["message"];
    assert_eq!(edited["body"], "hello", "trimmed as a new message is");
    assert!(edited["edited_at"].is_string());
    assert_eq!(edited["id"], sent["id"]);
    assert_eq!(&bob.expect_event(CHAT, "msg_updated").await, edited);
    assert_eq!(&alice.expect_event(CHAT, "msg_updated").await, edited);

    // History, a rejoin with `after` and the host API show the edit.
    let history = alice.push(CHAT, "history", json!({})).await;
    assert_eq!(history["response"]["messages"], json!([first, edited]));
    let host = host_messages(&app).await;
    assert_eq!(host["messages"], json!([first, edited]));
    let mut again = app.connect("bob").await;
    let rejoined = again.join_ok(CHAT, json!({"after": first["id"]})).await;
    assert_eq!(rejoined["messages"], json!([edited]));
}

#[tokio::test]
async fn only_the_author_edits_a_live_user_message_of_this_conversation() {
    let app = spawn_app().await;
    let (mut alice, mut bob) = pair(&app).await;
    let hers = alice.send_msg(CHAT, "mine").await;
    let elsewhere = app
        .post_message("chat:alice:carol", "alice", "other chat")
        .await;
    let bot = app
        .api(
            "POST",
            "/api/v1/messages",
            Some(json!({"topic": CHAT, "user_id": "alice", "body": "from a bot", "kind": "bot"})),
        )
        .await
        .1;
    let gone = alice.send_msg(CHAT, "to delete").await;
    assert_eq!(
        alice
            .push(CHAT, "delete_msg", json!({"id": gone["id"]}))
            .await["status"],
        "ok"
    );

    let cases = [
        (false, hers["id"].clone(), "unauthorized", "someone else's"),
        (true, bot["id"].clone(), "unauthorized", "a bot's"),
        (
            true,
            elsewhere["id"].clone(),
            "not_found",
            "another conversation's",
        ),
        (true, gone["id"].clone(), "not_found", "a deleted one"),
        (true, json!(999_999), "not_found", "an unknown id"),
    ];
    for (by_alice, id, expected, what) in cases {
        let client = if by_alice { &mut alice } else { &mut bob };
        let reply = client
            .push(CHAT, "edit_msg", json!({"id": id, "body": "x"}))
            .await;
        assert_eq!(reason(&reply), expected, "{what}: {reply}");
    }
    let too_long = alice
        .push(
            CHAT,
            "edit_msg",
            json!({"id": hers["id"], "body": "x".repeat(5000)}),
        )
        .await;
    assert_eq!(reason(&too_long), "too_large");
    let empty = alice
        .push(CHAT, "edit_msg", json!({"id": hers["id"], "body": " "}))
        .await;
    assert_eq!(reason(&empty), "invalid_payload");
    let bodies = alice.history_bodies(CHAT).await;
    assert_eq!(bodies, ["mine", "from a bot"], "nothing changed");
}

#[tokio::test]
async fn an_edit_past_the_window_is_refused() {
    let app = spawn_app_with(|s| s.chat.edit_window_s = 60).await;
    let (mut alice, _bob) = pair(&app).await;
    let fresh = alice.send_msg(CHAT, "fresh").await;
    let old = alice.send_msg(CHAT, "old").await;
    let old_id = old["id"].as_i64().unwrap();
    // As if sent two minutes ago.
    app.db(move |conn| {
        use diesel::RunQueryDsl;
        diesel::sql_query(format!(
            "UPDATE messages SET sent_at = now() - interval '2 minutes' WHERE id = {old_id}"
        ))
        .execute(conn)
        .unwrap();
    })
    .await;
    let refused = alice
        .push(CHAT, "edit_msg", json!({"id": old_id, "body": "late"}))
        .await;
    assert_eq!(reason(&refused), "unauthorized", "{refused}");
    let ok = alice
        .push(
            CHAT,
            "edit_msg",
            json!({"id": fresh["id"], "body": "in time"}),
        )
        .await;
    assert_eq!(ok["status"], "ok", "{ok}");
    // Deleting has no window.
    let deleted = alice.push(CHAT, "delete_msg", json!({"id": old_id})).await;
    assert_eq!(deleted["status"], "ok", "{deleted}");
}

#[tokio::test]
async fn an_author_deletes_and_staff_delete_in_support() {
    let app = spawn_app().await;
    let (mut alice, mut bob) = pair(&app).await;
    let hers = alice.send_msg(CHAT, "oops").await;
    let kept = alice.send_msg(CHAT, "kept").await;
    let refused = bob
        .push(CHAT, "delete_msg", json!({"id": hers["id"]}))
        .await;
    assert_eq!(reason(&refused), "unauthorized", "{refused}");
    let reply = alice
        .push(CHAT, "delete_msg", json!({"id": hers["id"]}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["response"], json!({}));
    let told = bob.expect(|f| f[2] == CHAT && f[3] == "msg_deleted").await;
    assert_eq!(told[4], json!({"id": hers["id"], "topic": CHAT}));
    let again = alice
        .push(CHAT, "delete_msg", json!({"id": hers["id"]}))
        .await;
    assert_eq!(reason(&again), "not_found");
    let history = bob.push(CHAT, "history", json!({})).await;
    assert_eq!(history["response"]["messages"], json!([kept]));

    // Staff delete a visitor's message in support; the visitor cannot delete staff's.
    let mut visitor = app.connect("vic").await;
    visitor.join_ok("support:vic", json!({})).await;
    let mut agent = app.connect_staff("agent").await;
    agent.join_ok("support:vic", json!({})).await;
    let spam = visitor.send_msg("support:vic", "spam").await;
    let answer = agent.send_msg("support:vic", "hello").await;
    let by_staff = agent
        .push("support:vic", "delete_msg", json!({"id": spam["id"]}))
        .await;
    assert_eq!(by_staff["status"], "ok", "{by_staff}");
    let by_visitor = visitor
        .push("support:vic", "delete_msg", json!({"id": answer["id"]}))
        .await;
    assert_eq!(reason(&by_visitor), "unauthorized");
    // Staff outside support are anyone else.
    let mut carol_chat = app.connect_staff("carol").await;
    carol_chat.join_ok("chat:alice:carol", json!({})).await;
    let theirs = app.post_message("chat:alice:carol", "alice", "hi").await;
    let refused = carol_chat
        .push(
            "chat:alice:carol",
            "delete_msg",
            json!({"id": theirs["id"]}),
        )
        .await;
    assert_eq!(reason(&refused), "unauthorized");
}

#[tokio::test]
async fn a_tokens_name_shows_on_its_messages_and_in_presence() {
    let app = spawn_app().await;
    let token = named_jwt_token("alice", Some("  Alice Liddell "), None, 600);
    let mut alice = app.connect_with_token(&token).await;
    let mut bob = app.connect("bob").await;
    bob.join_ok(CHAT, json!({})).await;
    alice.join_ok(CHAT, json!({})).await;
    let diff = bob
        .expect(|f| f[3] == "presence_diff" && f[4]["joins"]["alice"].is_object())
        .await;
    let metas = &diff[4]["joins"]["alice"]["metas"];
    assert_eq!(metas[0]["name"], "Alice Liddell", "{diff}");
    let sent = alice.send_msg(CHAT, "hi").await;
    assert_eq!(sent["user_name"], "Alice Liddell");
    assert_eq!(
        bob.expect_event(CHAT, "new_msg").await["user_name"],
        "Alice Liddell"
    );
    let reply = bob.send_msg(CHAT, "hello").await;
    assert_eq!(
        reply["user_name"],
        Value::Null,
        "an HMAC token names nobody"
    );
    let history = bob.push(CHAT, "history", json!({})).await;
    assert_eq!(
        history["response"]["messages"][0]["user_name"],
        "Alice Liddell"
    );
    // A bot's name, from the host.
    let (status, bot) = app
        .api(
            "POST",
            "/api/v1/messages",
            Some(json!({"topic": "chat:alice:helper", "user_id": "helper", "body": "hi", "user_name": "Helper"})),
        )
        .await;
    assert_eq!(status, 201, "{bot}");
    assert_eq!(bot["user_name"], "Helper");
}

#[tokio::test]
async fn attachments_are_checked_on_every_message() {
    let app = spawn_app().await;
    let (mut alice, _bob) = pair(&app).await;
    let file = json!({"url": "https://files.example/cat.png", "name": "cat.png", "type": "image/png", "size": 2048});
    let reply = alice
        .push(
            CHAT,
            "new_msg",
            json!({"body": "look", "meta": {"attachments": [file]}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["response"]["message"]["meta"]["attachments"][0], file);
    let stored = app.message_count().await;
    for attachments in [
        json!([{"url": "http://files.example/cat.png", "name": "cat.png", "type": "image/png", "size": 1}]),
        json!([{"url": "https://files.example/cat.png", "name": "cat.png", "type": "image/png"}]),
        json!(vec![file.clone(); 11]),
        json!("cat.png"),
    ] {
        let reply = alice
            .push(
                CHAT,
                "new_msg",
                json!({"body": "look", "meta": {"attachments": attachments}}),
            )
            .await;
        assert_eq!(reason(&reply), "invalid_payload", "{attachments}: {reply}");
    }
    assert_eq!(app.message_count().await, stored, "nothing stored");
}

/// The `reply_to` of message `id` as history shows it now.
async fn quote_in_history(client: &mut Client, topic: &str, id: &Value) -> Value {
    let history = client.push(topic, "history", json!({})).await;
    history["response"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == *id)
        .unwrap_or_else(|| panic!("{id} in {history}"))["reply_to"]
        .clone()
}

#[tokio::test]
async fn a_reply_quotes_its_original_as_it_is_now() {
    let app = spawn_app().await;
    let (mut alice, mut bob) = pair(&app).await;
    let original = alice.send_msg(CHAT, &format!("é{}", "x".repeat(300))).await;
    let reply = bob
        .push(
            CHAT,
            "new_msg",
            json!({"body": "agreed", "reply_to": original["id"]}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let answer = reply["response"]["message"].clone();
    let quote = &answer["reply_to"];
    assert_eq!(quote["id"], original["id"]);
    assert_eq!(quote["user_id"], "alice");
    let quoted = quote["body"].as_str().unwrap();
    assert_eq!(quoted.len(), 200, "the first 200 bytes");
    assert!(original["body"].as_str().unwrap().starts_with(quoted));
    let heard = alice
        .expect(|f| f[3] == "new_msg" && f[4]["id"] == answer["id"])
        .await;
    assert_eq!(
        heard[4]["reply_to"], *quote,
        "the broadcast carries the quote"
    );
    assert_eq!(answer["user_id"], "bob");
    assert_eq!(
        original["reply_to"],
        Value::Null,
        "a message that answers nothing"
    );

    // Edited, the quote follows; the host API shows it too.
    alice
        .push(
            CHAT,
            "edit_msg",
            json!({"id": original["id"], "body": "shorter"}),
        )
        .await;
    assert_eq!(
        quote_in_history(&mut bob, CHAT, &answer["id"]).await["body"],
        "shorter"
    );
    let host = host_messages(&app).await;
    assert_eq!(host["messages"][1]["reply_to"]["body"], "shorter");
    // Deleted, the quote is null and no new reply may point at it.
    alice
        .push(CHAT, "delete_msg", json!({"id": original["id"]}))
        .await;
    assert_eq!(
        quote_in_history(&mut bob, CHAT, &answer["id"]).await,
        Value::Null
    );
    let refused = bob
        .push(
            CHAT,
            "new_msg",
            json!({"body": "too late", "reply_to": original["id"]}),
        )
        .await;
    assert_eq!(reason(&refused), "not_found");
}

#[tokio::test]
async fn a_reply_must_answer_a_message_of_its_conversation_and_erasure_clears_quotes() {
    let app = spawn_app().await;
    let (mut alice, mut bob) = pair(&app).await;
    let elsewhere = app
        .post_message("chat:bob:carol", "carol", "elsewhere")
        .await;
    let stored = app.message_count().await;
    for id in [elsewhere["id"].clone(), json!(999_999)] {
        let reply = bob
            .push(CHAT, "new_msg", json!({"body": "re", "reply_to": id}))
            .await;
        assert_eq!(reason(&reply), "not_found", "{id}: {reply}");
    }
    let bad = bob
        .push(CHAT, "new_msg", json!({"body": "re", "reply_to": "7"}))
        .await;
    assert_eq!(reason(&bad), "invalid_payload");
    assert_eq!(app.message_count().await, stored, "nothing stored");

    // Erasing alice clears the quotes of her messages in bob's replies.
    let hers = alice.send_msg(CHAT, "mine").await;
    let answer = bob
        .push(
            CHAT,
            "new_msg",
            json!({"body": "yours", "reply_to": hers["id"]}),
        )
        .await["response"]["message"]
        .clone();
    assert_eq!(answer["reply_to"]["body"], "mine");
    assert_eq!(app.api("DELETE", "/api/v1/users/alice", None).await.0, 200);
    assert_eq!(
        quote_in_history(&mut bob, CHAT, &answer["id"]).await,
        Value::Null
    );
}

#[tokio::test]
async fn reactions_are_told_counted_and_carried_by_every_message() {
    let app = spawn_app_with(|s| s.chat.max_reactions = 2).await;
    let (mut alice, mut bob) = pair(&app).await;
    let first = bob.send_msg(CHAT, "first").await;
    let msg = bob.send_msg(CHAT, "great news").await;
    let react = |emoji: &str| json!({"id": msg["id"], "emoji": emoji});

    let reply = alice.push(CHAT, "react", react("👍")).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["response"], json!({}));
    let told = bob.expect_event(CHAT, "reaction").await;
    assert_eq!(
        told,
        json!({"message_id": msg["id"], "emoji": "👍", "user_id": "alice", "on": true})
    );
    assert_eq!(
        alice.push(CHAT, "react", react("👍")).await["status"],
        "ok",
        "a repeat"
    );
    assert_eq!(bob.push(CHAT, "react", react("👍")).await["status"], "ok");
    assert_eq!(alice.push(CHAT, "react", react("🎉")).await["status"], "ok");
    let over = bob.push(CHAT, "react", react("❤️")).await;
    assert_eq!(reason(&over), "too_large", "a third distinct emoji: {over}");
    // At the cap, an emoji the message already carries is still taken.
    assert_eq!(bob.push(CHAT, "react", react("🎉")).await["status"], "ok");
    assert_eq!(bob.push(CHAT, "unreact", react("🎉")).await["status"], "ok");

    let expected = json!([
        {"emoji": "👍", "count": 2, "users": ["alice", "bob"]},
        {"emoji": "🎉", "count": 1, "users": ["alice"]},
    ]);
    let history = bob.push(CHAT, "history", json!({})).await;
    assert_eq!(history["response"]["messages"][1]["reactions"], expected);
    assert_eq!(history["response"]["messages"][0]["reactions"], json!([]));
    let mut again = app.connect("alice").await;
    let recovered = again.join_ok(CHAT, json!({"after": first["id"]})).await;
    assert_eq!(recovered["messages"][0]["reactions"], expected);
    let host = host_messages(&app).await;
    assert_eq!(host["messages"][1]["reactions"], expected);
    // So do the lists' last messages and the lobby's summary.
    let (_, list) = app
        .api("GET", "/api/v1/users/alice/conversations", None)
        .await;
    assert_eq!(
        list["conversations"][0]["last_message"]["reactions"],
        expected
    );
    let (_, unread) = app.api("GET", "/api/v1/users/alice/unread", None).await;
    assert_eq!(unread["unread"][0]["last_message"]["reactions"], expected);
    // An edit's msg_updated carries them too.
    bob.push(
        CHAT,
        "edit_msg",
        json!({"id": msg["id"], "body": "great news!"}),
    )
    .await;
    let updated = alice.expect_event(CHAT, "msg_updated").await;
    assert_eq!(updated["reactions"], expected);

    // Taking one back.
    let reply = alice.push(CHAT, "unreact", react("🎉")).await;
    assert_eq!(reply["status"], "ok");
    let told = bob
        .expect(|f| f[3] == "reaction" && f[4]["on"] == false && f[4]["user_id"] == "alice")
        .await;
    assert_eq!(told[4]["emoji"], "🎉");
    let history = bob.push(CHAT, "history", json!({})).await;
    assert_eq!(
        history["response"]["messages"][1]["reactions"],
        json!([{"emoji": "👍", "count": 2, "users": ["alice", "bob"]}])
    );

    // Erasing alice takes hers away.
    assert_eq!(app.api("DELETE", "/api/v1/users/alice", None).await.0, 200);
    let history = bob.push(CHAT, "history", json!({})).await;
    assert_eq!(
        history["response"]["messages"][1]["reactions"],
        json!([{"emoji": "👍", "count": 1, "users": ["bob"]}])
    );
}

#[tokio::test]
async fn bad_reactions_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (mut alice, mut bob) = pair(&app).await;
    let msg = bob.send_msg(CHAT, "hi").await;
    let elsewhere = app.post_message("chat:bob:carol", "bob", "not yours").await;
    let gone = bob.send_msg(CHAT, "gone").await;
    bob.push(CHAT, "delete_msg", json!({"id": gone["id"]}))
        .await;
    let cases = [
        (json!({"id": msg["id"], "emoji": ""}), "invalid_payload"),
        (json!({"id": msg["id"], "emoji": "a b"}), "invalid_payload"),
        (
            json!({"id": msg["id"], "emoji": "x".repeat(33)}),
            "invalid_payload",
        ),
        (json!({"id": msg["id"]}), "invalid_payload"),
        (json!({"id": elsewhere["id"], "emoji": "👍"}), "not_found"),
        (json!({"id": gone["id"], "emoji": "👍"}), "not_found"),
        (json!({"id": 999_999, "emoji": "👍"}), "not_found"),
    ];
    for (payload, expected) in cases {
        let reply = alice.push(CHAT, "react", payload.clone()).await;
        assert_eq!(reason(&reply), expected, "{payload}: {reply}");
    }
    let history = alice.push(CHAT, "history", json!({})).await;
    assert_eq!(history["response"]["messages"][0]["reactions"], json!([]));
}
