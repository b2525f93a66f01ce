//! Group rooms: membership from the host API, chat among members, the read cursor.

use serde_json::json;

use crate::helpers::*;

async fn room(app: &TestApp, rid: &str, members: &[&str]) {
    let (status, body) = app
        .api(
            "PUT",
            &format!("/api/v1/rooms/{rid}"),
            Some(json!({"name": rid, "members": members})),
        )
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

#[tokio::test]
async fn members_chat_in_a_room_with_history_presence_typing_and_receipts() {
    let app = spawn_app().await;
    let (status, info) = app
        .api(
            "PUT",
            "/api/v1/rooms/general",
            Some(json!({"name": "General", "members": ["alice", "bob"]})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(info["id"], "general");
    assert_eq!(info["name"], "General");
    assert_eq!(info["members"], json!(["alice", "bob"]));
    let (again, _) = app
        .api(
            "PUT",
            "/api/v1/rooms/general",
            Some(json!({"members": ["alice", "bob"]})),
        )
        .await;
    assert_eq!(again, 200);
    let (_, kept) = app.api("GET", "/api/v1/rooms/general", None).await;
    assert_eq!(kept["name"], "General", "a PUT without a name keeps it");

    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join_ok("room:general", json!({})).await;
    bob.join_ok("room:general", json!({})).await;
    let state = bob.expect_event("room:general", "presence_state").await;
    assert!(
        state.get("alice").is_some() && state.get("bob").is_some(),
        "{state}"
    );

    let sent = alice.send_msg("room:general", "hello room").await;
    assert_eq!(sent["topic"], "room:general");
    assert_eq!(bob.expect_event("room:general", "new_msg").await, sent);

    alice
        .push("room:general", "typing", json!({"typing": true}))
        .await;
    bob.expect_event("room:general", "typing").await;

    let reply = bob
        .push("room:general", "read", json!({"message_id": sent["id"]}))
        .await;
    assert_eq!(reply["response"], json!({"marked": 1}));
    let receipt = alice.expect_event("room:general", "read").await;
    assert_eq!(receipt, json!({"user_id": "bob", "message_id": sent["id"]}));

    let mut late = app.connect("bob").await;
    let history = late.join_ok("room:general", json!({})).await;
    assert_eq!(history["messages"], json!([sent]));
}

#[tokio::test]
async fn non_members_are_refused() {
    let app = spawn_app().await;
    room(&app, "private", &["alice"]).await;
    let mut carol = app.connect("carol").await;
    let reply = carol.join("room:private", json!({})).await;
    assert_eq!(reply["response"]["reason"], "unauthorized");
    let reply = carol.join("room:nowhere", json!({})).await;
    assert_eq!(reply["response"]["reason"], "unauthorized");
    let response = http_client()
        .get(app.http("/v1/conversations/room:private/messages"))
        .bearer_auth(hmac_token("carol", 60))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_removed_member_is_dropped_at_once() {
    let app = spawn_app().await;
    room(&app, "team", &["alice", "bob", "carol"]).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        client.join_ok("room:team", json!({})).await;
    }

    let (status, _) = app
        .api("DELETE", "/api/v1/rooms/team/members/bob", None)
        .await;
    assert_eq!(status, 204);
    bob.expect(|f| f[2] == "room:team" && f[3] == "phx_close")
        .await;
    let reply = bob
        .push("room:team", "new_msg", json!({"body": "still here?"}))
        .await;
    assert_eq!(reply["response"]["reason"], "not_joined");
    let rejoin = bob.join("room:team", json!({})).await;
    assert_eq!(rejoin["response"]["reason"], "unauthorized");

    // Replacing the member list drops whoever is left out.
    room(&app, "team", &["alice"]).await;
    carol
        .expect(|f| f[2] == "room:team" && f[3] == "phx_close")
        .await;

    // The member who stays is untouched.
    alice.sync().await;
    assert!(!alice.has_buffered(|f| f[3] == "phx_close"));
    alice.send_msg("room:team", "just me now").await;
    let (status, _) = app
        .api("DELETE", "/api/v1/rooms/team/members/bob", None)
        .await;
    assert_eq!(status, 404, "removing a non-member");
}

#[tokio::test]
async fn room_unread_is_the_read_cursor_in_the_lobby_and_in_notifications() {
    let app = spawn_app().await;
    room(&app, "club", &["alice", "bob", "carol"]).await;
    let mut bob = app.connect("bob").await;
    bob.join_ok("user:bob", json!({})).await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("room:club", json!({})).await;

    let first = alice.send_msg("room:club", "one").await;
    let n1 = bob.expect_notification("user:bob", &first).await;
    assert_eq!(n1["topic"], "room:club");
    assert_eq!(n1["message"], first);
    assert_eq!(n1["count"], 1);
    let second = alice.send_msg("room:club", "two").await;
    let n2 = bob.expect_notification("user:bob", &second).await;
    assert_eq!(n2["count"], 2);
    // The sender is never notified of their own message.
    let mut alice_lobby = app.connect("alice").await;
    let own = alice_lobby.join_ok("user:alice", json!({})).await;
    assert_eq!(own["total"], 0);

    // Carol logs in later: the room is in her summary beside one-to-one chats.
    let mut dave = app.connect("dave").await;
    dave.join_ok("chat:carol:dave", json!({})).await;
    dave.send_msg("chat:carol:dave", "psst").await;
    let mut carol = app.connect("carol").await;
    let summary = carol.join_ok("user:carol", json!({})).await;
    assert_eq!(summary["total"], 3);
    assert_eq!(summary["unread"][0]["topic"], "chat:carol:dave");
    assert_eq!(summary["unread"][1]["topic"], "room:club");
    assert_eq!(summary["unread"][1]["count"], 2);
    assert_eq!(summary["unread"][1]["last_message"], second);

    carol.join_ok("room:club", json!({})).await;
    let reply = carol
        .push("room:club", "read", json!({"message_id": first["id"]}))
        .await;
    assert_eq!(reply["response"], json!({"marked": 1}));
    let unread = carol.expect_event("user:carol", "unread").await;
    assert_eq!(unread, json!({"topic": "room:club", "count": 1}));

    // A member added later starts at the newest message, not the whole past.
    let (status, _) = app
        .api("PUT", "/api/v1/rooms/club/members/erin", None)
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .api("PUT", "/api/v1/rooms/club/members/erin", None)
        .await;
    assert_eq!(status, 200, "already a member");
    let (_, erin) = app.api("GET", "/api/v1/users/erin/unread", None).await;
    assert_eq!(erin["total"], 0);
}

/// Rooms above `chat.presence_room_limit` members broadcast no presence (a big room that
/// reconnects at once would otherwise cost N² frames), yet still know who is there: the
/// present get no lobby notification for what they see in the room.
#[tokio::test]
async fn a_large_room_keeps_presence_to_itself() {
    let app = spawn_app_with(|s| s.chat.presence_room_limit = 2).await;
    room(&app, "big", &["alice", "bob", "carol"]).await;
    room(&app, "small", &["alice", "bob"]).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    alice.join_ok("user:alice", json!({})).await;
    carol.join_ok("user:carol", json!({})).await;

    alice.join_ok("room:big", json!({})).await;
    assert_eq!(
        alice.expect_event("room:big", "presence_state").await,
        json!({})
    );
    bob.join_ok("room:big", json!({})).await;
    assert_eq!(
        bob.expect_event("room:big", "presence_state").await,
        json!({}),
        "alice is there, but the room is too large to list"
    );
    let sent = bob.send_msg("room:big", "hello everyone").await;
    assert_eq!(alice.expect_event("room:big", "new_msg").await, sent);
    let notified = carol.expect_notification("user:carol", &sent).await;
    assert_eq!(notified["count"], 1);
    alice.sync().await;
    assert!(!alice.has_buffered(|f| f[3] == "presence_diff"), "no diff");
    assert!(
        !alice.has_buffered(|f| f[3] == "notification"),
        "alice is present in the room: no lobby notification"
    );

    // At the limit, presence is as usual.
    alice.join_ok("room:small", json!({})).await;
    let state = alice.expect_event("room:small", "presence_state").await;
    assert!(state.get("alice").is_some(), "{state}");
    bob.join_ok("room:small", json!({})).await;
    alice
        .expect(|f| {
            f[2] == "room:small" && f[3] == "presence_diff" && f[4]["joins"].get("bob").is_some()
        })
        .await;
}

/// A burst in a busy room: an absent member's lobby hears of the newest message with
/// the count of everything unread (rounds for one room never pile up behind each other).
#[tokio::test]
async fn a_burst_in_a_room_ends_with_the_newest_message_and_the_full_count() {
    let app = spawn_app().await;
    room(&app, "busy", &["alice", "bob"]).await;
    let mut bob = app.connect("bob").await;
    bob.join_ok("user:bob", json!({})).await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("room:busy", json!({})).await;
    let mut newest = json!(null);
    for n in 0..30 {
        newest = alice.send_msg("room:busy", &format!("m{n}")).await;
    }
    let told = bob.expect_notification("user:bob", &newest).await;
    assert_eq!(told["count"], 30);
    assert_eq!(told["message"], newest);
}
