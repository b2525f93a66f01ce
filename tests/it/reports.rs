//! Reports (PROTOCOL.md §10): a user flags a message of a conversation they joined; the
//! host gets a signed, retried `message.reported` webhook and lists reports.

use serde_json::json;

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::webhooks::{hooked, verify_signature};

#[tokio::test]
async fn a_report_reaches_the_host_signed_retried_and_once() {
    let mut host = Receiver::start().await;
    let app = spawn_app_with(hooked(&host, 3600)).await;
    // The host is down for the first call.
    let mut calls = 0;
    host.answer_with(move |_| {
        calls += 1;
        if calls == 1 { 503 } else { 200 }
    });
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let spam = app
        .post_message("chat:alice:bob", "bob", "cheap pills")
        .await;

    let reply = alice
        .push(
            "chat:alice:bob",
            "report",
            json!({"message_id": spam["id"], "reason": "spam"}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["response"], json!({}));

    let first = host.next().await;
    let retry = host.next().await;
    assert_eq!(
        first.header("x-sidechat-event-id"),
        retry.header("x-sidechat-event-id"),
        "a retry is the same event"
    );
    verify_signature(&retry);
    let event = retry.json();
    assert_eq!(event["id"], retry.header("x-sidechat-event-id"));
    assert_eq!(event["type"], "message.reported");
    assert_eq!(event["message"], spam);
    assert_eq!(event["reporter"], "alice");
    assert_eq!(event["reason"], "spam");

    // A repeat changes nothing: no second report, no second event.
    let again = alice
        .push(
            "chat:alice:bob",
            "report",
            json!({"message_id": spam["id"], "reason": "still spam"}),
        )
        .await;
    assert_eq!(again["status"], "ok");
    // (The message itself waits an hour in the outbox: alice gets no message.unread.)
    eventually("no delivery waits", || async {
        app.outbox_rows().await.1 == 0
    })
    .await;
    assert!(host.pending().is_empty(), "the repeat made no event");
    let (status, listed) = app.api("GET", "/api/v1/reports", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["more"], false);
    let reports = listed["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["message"], spam);
    assert_eq!(reports[0]["reporter"], "alice");
    assert_eq!(reports[0]["reason"], "spam");
    assert!(reports[0]["created_at"].is_string());
    assert_eq!(app.metric("sidechat_reports_total").await, Some(1.0));
}

#[tokio::test]
async fn reports_outside_the_reporters_conversations_are_refused() {
    let app = spawn_app().await;
    let elsewhere = app.post_message("chat:bob:carol", "bob", "private").await;
    let own = app.post_message("chat:alice:bob", "bob", "hi").await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;

    let cases = [
        (
            "chat:alice:bob",
            json!({"message_id": elsewhere["id"]}),
            "not_found",
        ),
        (
            "chat:alice:bob",
            json!({"message_id": 999_999}),
            "not_found",
        ),
        (
            "chat:alice:bob",
            json!({"message_id": 0}),
            "invalid_payload",
        ),
        (
            "chat:alice:bob",
            json!({"reason": "no id"}),
            "invalid_payload",
        ),
        (
            "chat:alice:bob",
            json!({"message_id": own["id"], "reason": "x".repeat(1001)}),
            "invalid_payload",
        ),
        (
            "chat:bob:carol",
            json!({"message_id": elsewhere["id"]}),
            "not_joined",
        ),
    ];
    for (topic, payload, reason) in cases {
        let reply = alice.push(topic, "report", payload.clone()).await;
        assert_eq!(reply["status"], "error", "{payload}: {reply}");
        assert_eq!(reply["response"]["reason"], reason, "{payload}");
    }
    let (_, listed) = app.api("GET", "/api/v1/reports", None).await;
    assert_eq!(listed["reports"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn the_host_pages_through_reports_and_erasure_removes_them() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let mut carol = app.connect("carol").await;
    carol.join_ok("chat:bob:carol", json!({})).await;
    for n in 0..3 {
        let m = app
            .post_message("chat:alice:bob", "bob", &format!("spam {n}"))
            .await;
        let reply = alice
            .push("chat:alice:bob", "report", json!({"message_id": m["id"]}))
            .await;
        assert_eq!(reply["status"], "ok");
    }
    let hers = app.post_message("chat:bob:carol", "carol", "hi bob").await;
    let reply = carol
        .push(
            "chat:bob:carol",
            "report",
            json!({"message_id": hers["id"]}),
        )
        .await;
    assert_eq!(
        reply["status"], "ok",
        "one may report even their own message"
    );

    let (_, first) = app.api("GET", "/api/v1/reports?limit=2", None).await;
    assert_eq!(first["more"], true);
    let page: Vec<_> = first["reports"].as_array().unwrap().clone();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["reason"], serde_json::Value::Null);
    let after = page[1]["id"].as_i64().unwrap();
    let (_, second) = app
        .api(
            "GET",
            &format!("/api/v1/reports?limit=2&after={after}"),
            None,
        )
        .await;
    assert_eq!(second["more"], false);
    let rest = second["reports"].as_array().unwrap();
    assert_eq!(rest.len(), 2);
    assert!(
        rest[0]["id"].as_i64().unwrap() > after,
        "oldest first, none repeated"
    );

    for query in ["limit=0", "limit=201", "after=-1", "limit=x"] {
        let (status, error) = app
            .api("GET", &format!("/api/v1/reports?{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {error}");
        assert_eq!(error["reason"], "invalid_payload");
    }

    // Erasing alice removes her reports; erasing carol, the report of her message.
    assert_eq!(app.api("DELETE", "/api/v1/users/alice", None).await.0, 200);
    let (_, left) = app.api("GET", "/api/v1/reports", None).await;
    assert_eq!(left["reports"].as_array().unwrap().len(), 1);
    assert_eq!(app.api("DELETE", "/api/v1/users/carol", None).await.0, 200);
    let (_, none) = app.api("GET", "/api/v1/reports", None).await;
    assert_eq!(none["reports"], json!([]));
}
