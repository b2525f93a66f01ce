//! Every user's conversation list (PROTOCOL.md §10): order, paging, unread counts,
//! rooms, deletions, erasure, and the errors of bad parameters.

use serde_json::{Value, json};

use crate::helpers::*;

fn topics(page: &Value) -> Vec<String> {
    page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["topic"].as_str().unwrap().to_owned())
        .collect()
}

fn item<'a>(page: &'a Value, topic: &str) -> &'a Value {
    page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["topic"] == topic)
        .unwrap_or_else(|| panic!("{topic} not in {page}"))
}

#[tokio::test]
async fn the_list_holds_chats_rooms_and_support_newest_first_and_keeps_read_ones() {
    let app = spawn_app().await;
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/rooms/quiet",
            Some(json!({"name": "Quiet room", "members": ["ann", "bo"]})),
        )
        .await;
    assert_eq!(status, 201);
    app.post_message("chat:ann:bo", "bo", "first").await;
    app.post_message("chat:ann:cy", "ann", "to cy").await;
    app.post_message("support:ann", "ann", "help").await;
    let last = app.post_message("chat:ann:bo", "bo", "second").await;

    let (status, page) = app.my_list("ann", "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        topics(&page),
        ["chat:ann:bo", "support:ann", "chat:ann:cy", "room:quiet"],
        "most recent activity first; an empty room at its creation time"
    );
    assert_eq!(page["more"], false);
    assert_eq!(page["next"], Value::Null);
    let bo = item(&page, "chat:ann:bo");
    assert_eq!(bo["kind"], "chat");
    assert_eq!(bo["peer"], "bo");
    assert_eq!(bo["unread"], 2);
    assert_eq!(bo["last_message"]["id"], last["id"]);
    assert_eq!(bo["updated_at"], last["sent_at"]);
    let cy = item(&page, "chat:ann:cy");
    assert_eq!(cy["unread"], 0, "ann sent it");
    let room = item(&page, "room:quiet");
    assert_eq!(room["kind"], "room");
    assert_eq!(room["name"], "Quiet room");
    assert_eq!(room["last_message"], Value::Null);
    assert_eq!(room["peer"], Value::Null);
    assert_eq!(item(&page, "support:ann")["kind"], "support");

    // Read: the conversation stays, with nothing unread.
    let mut ann = app.connect("ann").await;
    ann.join_ok("chat:ann:bo", json!({})).await;
    let reply = ann
        .push("chat:ann:bo", "read", json!({"message_id": last["id"]}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (_, page) = app.my_list("ann", "").await;
    assert_eq!(item(&page, "chat:ann:bo")["unread"], 0);

    // The other side sees it from their side; cy's list and the host's view agree.
    let (_, page) = app.my_list("cy", "").await;
    assert_eq!(topics(&page), ["chat:ann:cy"]);
    assert_eq!(item(&page, "chat:ann:cy")["peer"], "ann");
    assert_eq!(item(&page, "chat:ann:cy")["unread"], 1);
    let (status, hosted) = app.api("GET", "/api/v1/users/cy/conversations", None).await;
    assert_eq!(status, 200);
    assert_eq!(hosted, page);

    // A room message moves the room to the top, unread for the other member.
    app.post_message("room:quiet", "bo", "hello room").await;
    let (_, page) = app.my_list("ann", "").await;
    assert_eq!(topics(&page)[0], "room:quiet");
    assert_eq!(item(&page, "room:quiet")["unread"], 1);
    assert_eq!(
        item(&page, "room:quiet")["last_message"]["body"],
        "hello room"
    );
}

#[tokio::test]
async fn the_lobby_answers_conversations_with_the_same_page() {
    let app = spawn_app().await;
    app.post_message("chat:dee:eve", "eve", "hi dee").await;
    let mut dee = app.connect("dee").await;
    dee.join_ok("user:dee", json!({})).await;
    let reply = dee
        .push("user:dee", "conversations", json!({"limit": 10}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (_, page) = app.my_list("dee", "?limit=10").await;
    assert_eq!(reply["response"], page);
    assert_eq!(topics(&page), ["chat:dee:eve"]);

    let refused = dee
        .push("user:dee", "conversations", json!({"before": "made-up"}))
        .await;
    assert_eq!(refused["status"], "error");
    assert_eq!(refused["response"]["reason"], "invalid_payload");
    dee.join_ok("chat:dee:eve", json!({})).await;
    let elsewhere = dee.push("chat:dee:eve", "conversations", json!({})).await;
    assert_eq!(elsewhere["response"]["reason"], "unknown_event");
}

#[tokio::test]
async fn paging_gives_each_conversation_once_while_new_messages_arrive() {
    let app = spawn_app().await;
    let peer = |n: usize| format!("chat:fay:p{n:02}");
    for n in 0..25 {
        app.post_message(&peer(n), &format!("p{n:02}"), "hello")
            .await;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..=10 {
        let query = match &cursor {
            Some(next) => format!("?limit=7&before={next}"),
            None => "?limit=7".to_owned(),
        };
        let (status, page) = app.my_list("fay", &query).await;
        assert_eq!(status, 200, "{page}");
        if pages == 1 {
            // New messages while paging: in conversations already listed (p24..p18),
            // and in one further down (p05). All move to the top, where the client
            // hears of them live; none is given again, and p05 not at its old place.
            for topic in topics(&page) {
                let from = topic.rsplit(':').next().unwrap().to_owned();
                app.post_message(&topic, &from, "again").await;
            }
            app.post_message(&peer(5), "p05", "again").await;
        }
        seen.extend(topics(&page));
        assert_eq!(page["more"], page["next"].is_string(), "{page}");
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end: {seen:?}");
    }
    // Offset paging would repeat p24..p18 after the moves; the cursor goes on from p18.
    let expected: Vec<String> = (0..25).rev().filter(|&n| n != 5).map(peer).collect();
    assert_eq!(seen, expected);

    // Afresh, newest first: p05, then the seven moved in the order they moved, then the
    // rest as they were.
    let (_, fresh) = app.my_list("fay", "?limit=200").await;
    let mut expected = vec![peer(5)];
    expected.extend((18..25).map(peer));
    expected.extend((0..18).rev().filter(|&n| n != 5).map(peer));
    assert_eq!(topics(&fresh), expected);
    assert_eq!(fresh["more"], false);
}

#[tokio::test]
async fn deleted_and_erased_messages_leave_the_list_as_it_was_before_them() {
    let app = spawn_app().await;
    let first = app.post_message("chat:gus:hal", "hal", "kept").await;
    let spam = app.post_message("chat:gus:hal", "hal", "spam").await;
    app.post_message("chat:gus:ivy", "ivy", "only one").await;
    let (status, _) = app
        .api("DELETE", &format!("/api/v1/messages/{}", spam["id"]), None)
        .await;
    assert_eq!(status, 204);
    let (_, page) = app.my_list("gus", "").await;
    let hal = item(&page, "chat:gus:hal");
    assert_eq!(hal["last_message"]["id"], first["id"], "{hal}");
    assert_eq!(hal["updated_at"], first["sent_at"]);
    assert_eq!(hal["unread"], 1, "a deleted message does not count");
    assert_eq!(topics(&page), ["chat:gus:ivy", "chat:gus:hal"]);

    // Erasing ivy empties her chat with gus: it leaves his list, and hers is gone.
    let (status, _) = app.api("DELETE", "/api/v1/users/ivy", None).await;
    assert_eq!(status, 200);
    let (_, page) = app.my_list("gus", "").await;
    assert_eq!(topics(&page), ["chat:gus:hal"]);
    let (_, page) = app.my_list("ivy", "").await;
    assert_eq!(topics(&page), Vec::<String>::new());
    let rows = app
        .db(|conn| {
            use diesel::prelude::*;
            use sidechat::store::schema::conversation_members as uc;
            uc::table
                .filter(uc::user_id.eq("ivy"))
                .count()
                .get_result::<i64>(conn)
                .unwrap()
        })
        .await;
    assert_eq!(rows, 0, "erasure removes the user's list rows");
    // An erased user who comes back is listed again with the chat's next message,
    // though the chat kept hal's messages (and its row) meanwhile.
    app.post_message("chat:gus:hal", "gus", "for the record")
        .await;
    let (status, _) = app.api("DELETE", "/api/v1/users/gus", None).await;
    assert_eq!(status, 200);
    let (_, page) = app.my_list("gus", "").await;
    assert_eq!(topics(&page), Vec::<String>::new());
    let (_, page) = app.my_list("hal", "").await;
    assert_eq!(topics(&page), ["chat:gus:hal"], "hal keeps the chat");
    app.post_message("chat:gus:hal", "gus", "I am back").await;
    let (_, page) = app.my_list("gus", "").await;
    assert_eq!(topics(&page), ["chat:gus:hal"], "gus is listed again");

    // A conversation emptied by moderation leaves both lists; its next message brings
    // it back to both.
    let only = app.post_message("chat:gus:kim", "kim", "oops").await;
    let (status, _) = app
        .api("DELETE", &format!("/api/v1/messages/{}", only["id"]), None)
        .await;
    assert_eq!(status, 204);
    let (_, page) = app.my_list("kim", "").await;
    assert_eq!(topics(&page), Vec::<String>::new());
    app.post_message("chat:gus:kim", "gus", "back").await;
    let (_, page) = app.my_list("kim", "").await;
    assert_eq!(topics(&page), ["chat:gus:kim"]);
    let (_, page) = app.my_list("gus", "").await;
    assert_eq!(topics(&page), ["chat:gus:kim", "chat:gus:hal"]);

    // A room goes back to its previous message, then to its creation time.
    let (status, room) = app
        .api(
            "PUT",
            "/api/v1/rooms/den",
            Some(json!({"name": "Den", "members": ["gus", "kim"]})),
        )
        .await;
    assert_eq!(status, 201, "{room}");
    let older = app.post_message("room:den", "kim", "older").await;
    let newer = app.post_message("room:den", "kim", "newer").await;
    let den = |page: &Value| item(page, "room:den").clone();
    for (deleted, left) in [(&newer, Some(&older)), (&older, None)] {
        let path = format!("/api/v1/messages/{}", deleted["id"]);
        assert_eq!(app.api("DELETE", &path, None).await.0, 204);
        let (_, page) = app.my_list("gus", "").await;
        match left {
            Some(message) => {
                assert_eq!(den(&page)["last_message"]["id"], message["id"]);
                assert_eq!(den(&page)["updated_at"], message["sent_at"]);
            }
            None => {
                assert_eq!(den(&page)["last_message"], Value::Null);
                assert_eq!(den(&page)["unread"], 0);
                // Its creation time: before either message (same format, so the
                // strings order as the times do).
                let created = den(&page)["updated_at"].as_str().unwrap().to_owned();
                let older_at = older["sent_at"].as_str().unwrap();
                assert!(created.as_str() < older_at, "{page}");
            }
        }
    }
}

#[tokio::test]
async fn bad_parameters_are_refused_with_the_rule_they_break() {
    let app = spawn_app().await;
    for (query, words) in [
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=x", "invalid digit"),
        ("?before=bm90IG91cnM", "cursor"),
        ("?before=%21%21", "cursor"),
    ] {
        let (status, body) = app.my_list("jo", query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["reason"], "invalid_payload", "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(words),
            "{query}: {body}"
        );
    }
    let (status, body) = app
        .api("GET", "/api/v1/users/not%20an%20id/conversations", None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reason"], "invalid_payload");
}
