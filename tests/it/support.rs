//! The support inbox: visitors talk to a site's staff.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_visitor_joins_only_their_own_support_conversation() {
    let app = spawn_app().await;
    let mut visitor = app.connect("v1").await;
    visitor.join_ok("support:v1", json!({})).await;
    for topic in ["support:v2", "inbox"] {
        let reply = visitor.join(topic, json!({})).await;
        assert_eq!(reply["response"]["reason"], "unauthorized", "{topic}");
    }
}

#[tokio::test]
async fn staff_see_every_conversation_in_the_inbox_and_hear_each_visitor() {
    let app = spawn_app().await;
    let mut v1 = app.connect("v1").await;
    let mut v2 = app.connect("v2").await;
    v1.join_ok("support:v1", json!({})).await;
    v2.join_ok("support:v2", json!({})).await;
    v1.send_msg("support:v1", "my order is late").await;
    let from_v2 = v2
        .send_msg("support:v2", "how do I reset my password?")
        .await;

    let mut staff = app.connect_staff("agent1").await;
    let inbox = staff.join_ok("inbox", json!({})).await;
    assert_eq!(inbox["total"], 2);
    assert_eq!(inbox["conversations"][0]["topic"], "support:v2");
    assert_eq!(inbox["conversations"][0]["count"], 1);
    assert_eq!(inbox["conversations"][0]["last_message"], from_v2);
    assert_eq!(inbox["conversations"][1]["topic"], "support:v1");

    let again = v1.send_msg("support:v1", "hello?").await;
    let notification = staff.expect_notification("inbox", &again).await;
    assert_eq!(notification["topic"], "support:v1");
    assert_eq!(notification["message"], again);
    assert_eq!(notification["count"], 2);

    // Staff answer in the visitor's conversation and read it.
    staff.join_ok("support:v1", json!({})).await;
    let answer = staff.send_msg("support:v1", "looking into it").await;
    let delivered = v1
        .expect(|f| f[3] == "new_msg" && f[4]["id"] == answer["id"])
        .await;
    assert_eq!(delivered[4], answer);
    let read = staff
        .push("support:v1", "read", json!({"message_id": again["id"]}))
        .await;
    assert_eq!(read["response"], json!({"marked": 2}));
    let unread = staff.expect_event("inbox", "unread").await;
    assert_eq!(unread, json!({"topic": "support:v1", "count": 0}));
    v1.expect_event("support:v1", "read").await;

    let mut other_staff = app.connect_staff("agent2").await;
    let inbox = other_staff.join_ok("inbox", json!({})).await;
    assert_eq!(
        inbox["total"], 1,
        "what one agent read, the team has read: {inbox}"
    );
    assert_eq!(inbox["conversations"][0]["topic"], "support:v1");
    assert_eq!(inbox["conversations"][0]["count"], 0);
}

#[tokio::test]
async fn a_staff_reply_reaches_an_away_visitors_lobby() {
    let app = spawn_app().await;
    let mut visitor = app.connect("v1").await;
    visitor.join_ok("support:v1", json!({})).await;
    visitor.send_msg("support:v1", "anyone?").await;
    visitor.leave("support:v1").await;
    visitor.join_ok("user:v1", json!({})).await;

    let mut staff = app.connect_staff("agent1").await;
    staff.join_ok("support:v1", json!({})).await;
    let answer = staff.send_msg("support:v1", "yes, here").await;
    let notification = visitor.expect_notification("user:v1", &answer).await;
    assert_eq!(notification["topic"], "support:v1");
    assert_eq!(notification["message"], answer);
    assert_eq!(notification["count"], 1);

    // The visitor reads the answer: it is delivered, and the staff side sees the receipt.
    visitor.join_ok("support:v1", json!({})).await;
    let reply = visitor
        .push("support:v1", "read", json!({"message_id": answer["id"]}))
        .await;
    assert_eq!(reply["response"], json!({"marked": 1}));
    let receipt = staff.expect_event("support:v1", "read").await;
    assert_eq!(receipt["user_id"], "v1");
}
