//! Read receipts stored in batches: each receipt in a batch gets its own answer.

use serde_json::json;
use sidechat::store::receipts::{Marked, Receipt, mark_all};

use crate::helpers::*;

fn receipt(topic: &str, reader: &str, up_to: &serde_json::Value) -> Receipt {
    Receipt {
        topic: topic.into(),
        reader: reader.into(),
        up_to: up_to.as_i64().unwrap(),
    }
}

#[tokio::test]
async fn one_statement_marks_each_readers_messages_and_answers_each() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.join_ok("chat:alice:carol", json!({})).await;
    let mut sent_to_bob = Vec::new();
    for n in 0..3 {
        sent_to_bob.push(alice.send_msg("chat:alice:bob", &format!("b{n}")).await);
    }
    let to_carol = alice.send_msg("chat:alice:carol", "c0").await;
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let from_bob = bob.send_msg("chat:alice:bob", "hi alice").await;

    let receipts = vec![
        // Bob reads two of three: one stays unread.
        receipt("chat:alice:bob", "bob", &sent_to_bob[1]["id"]),
        // Carol reads hers.
        receipt("chat:alice:carol", "carol", &to_carol["id"]),
        // Not a message of that conversation: refused, and nothing else changes.
        receipt("chat:alice:carol", "alice", &sent_to_bob[2]["id"]),
        // Alice reads bob's.
        receipt("chat:alice:bob", "alice", &from_bob["id"]),
    ];
    let answers = app.db(move |conn| mark_all(conn, &receipts).unwrap()).await;
    assert_eq!(
        answers,
        vec![
            Some(Marked {
                marked: 2,
                still_unread: 1
            }),
            Some(Marked {
                marked: 1,
                still_unread: 0
            }),
            None,
            Some(Marked {
                marked: 1,
                still_unread: 0
            }),
        ]
    );

    // What the table says agrees: bob's third message is the only one unread.
    let (_, bob_unread) = app.api("GET", "/api/v1/users/bob/unread", None).await;
    assert_eq!(bob_unread["total"], 1);
    assert_eq!(bob_unread["unread"][0]["last_message"], sent_to_bob[2]);
    let (_, alice_unread) = app.api("GET", "/api/v1/users/alice/unread", None).await;
    assert_eq!(alice_unread["total"], 0);
}

/// Two sockets of one reader send receipts for one conversation at once: each gets an
/// answer, and between them every message is marked once.
#[tokio::test]
async fn concurrent_receipts_of_one_reader_are_each_answered() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let mut sent = Vec::new();
    for n in 0..6 {
        sent.push(alice.send_msg("chat:alice:bob", &format!("m{n}")).await);
    }
    let mut phone = app.connect("bob").await;
    let mut laptop = app.connect("bob").await;
    phone.join_ok("chat:alice:bob", json!({})).await;
    laptop.join_ok("chat:alice:bob", json!({})).await;
    let (a, b) = tokio::join!(
        phone.push(
            "chat:alice:bob",
            "read",
            json!({"message_id": sent[2]["id"]})
        ),
        laptop.push(
            "chat:alice:bob",
            "read",
            json!({"message_id": sent[5]["id"]})
        ),
    );
    assert_eq!(a["status"], "ok", "{a}");
    assert_eq!(b["status"], "ok", "{b}");
    let total =
        a["response"]["marked"].as_u64().unwrap() + b["response"]["marked"].as_u64().unwrap();
    assert_eq!(total, 6, "{a} {b}");
}
