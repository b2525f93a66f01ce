//! Signed webhooks from the outbox (PROTOCOL.md §8), against a local host endpoint.

use diesel::prelude::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sidechat::settings::{Secret, Settings};
use sidechat::store::schema::{deliveries, outbox};

use crate::helpers::*;
use crate::receiver::{Received, Receiver};

pub(crate) const SECRET: &str = "webhook-secret-0123456789abcdef0123";

/// Webhooks to `receiver`, told after `delay_s`, retried after 100 ms.
pub(crate) fn hooked(receiver: &Receiver, delay_s: u64) -> impl Fn(&mut Settings) + use<> {
    let url = receiver.url("/hooks/sidechat");
    move |settings: &mut Settings| {
        settings.webhooks.url = url.clone();
        settings.webhooks.secret = Secret::new(SECRET);
        settings.webhooks.delay_s = delay_s;
        settings.webhooks.retry_initial_ms = 100;
    }
}

/// Checks the signature as a host would, with nothing of sidechat's: HMAC-SHA256 over
/// "<t>.<raw body>", hex; then with sidechat's own verifier.
pub(crate) fn verify_signature(request: &Received) {
    let header = request.header("x-sidechat-signature");
    let mut parts = header.split(',');
    let t = parts.next().unwrap().strip_prefix("t=").unwrap();
    let v1 = parts.next().unwrap().strip_prefix("v1=").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&request.body);
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        v1,
        "the signature verifies"
    );
    let t: i64 = t.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - t).abs() < 60, "t is now");
    // sidechat's own verifier agrees.
    sidechat::notify::signature::verify(
        &Secret::new(SECRET),
        header,
        &request.body,
        chrono::Utc::now().timestamp(),
        300,
    )
    .unwrap();
}

/// How many `sink` deliveries came to `outcome`.
async fn deliveries_metric(app: &TestApp, sink: &str, outcome: &str) -> u64 {
    let series = format!("sidechat_deliveries_total{{sink=\"{sink}\",outcome=\"{outcome}\"}}");
    app.metric(&series).await.unwrap_or(0.0) as u64
}

#[tokio::test]
async fn an_offline_recipient_gets_a_signed_event_once() {
    let mut host = Receiver::start().await;
    let app = spawn_app_with(hooked(&host, 0)).await;

    let first = app
        .post_message("chat:alice:bob", "alice", "are you there?")
        .await;
    let call = host.next().await;
    assert_eq!(call.path, "/hooks/sidechat");
    assert_eq!(call.header("content-type"), "application/json");
    verify_signature(&call);
    let event = call.json();
    assert_eq!(call.header("x-sidechat-event-id"), event["id"]);
    assert_eq!(event["type"], "message.unread");
    assert_eq!(event["recipient"], "bob");
    assert_eq!(event["messages"], json!([first]));
    assert_eq!(
        event["unread"],
        json!({"topic": "chat:alice:bob", "count": 1})
    );

    // Delivered is done: nothing is left to send again.
    app.outbox_drained().await;
    let second = app.post_message("chat:alice:bob", "alice", "hello?").await;
    let next = host.next().await.json();
    assert_ne!(next["id"], event["id"], "each event has its own id");
    assert_eq!(next["messages"], json!([second]));
    assert_eq!(next["unread"]["count"], 2);
    app.outbox_drained().await;
    assert!(host.pending().is_empty(), "no event came twice");
    assert_eq!(deliveries_metric(&app, "webhook", "delivered").await, 2);
}

#[tokio::test]
async fn a_recipient_in_the_conversation_or_the_sender_gets_no_event() {
    let mut host = Receiver::start().await;
    let app = spawn_app_with(hooked(&host, 0)).await;
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;

    let seen = app
        .post_message("chat:alice:bob", "alice", "you are here")
        .await;
    bob.expect_event("chat:alice:bob", "new_msg").await;
    // Carol is away: her event shows the worker has gone past bob's.
    app.post_message("chat:alice:carol", "alice", "you are not")
        .await;
    let call = host.next().await.json();
    assert_eq!(call["recipient"], "carol");
    app.outbox_drained().await;
    assert!(host.pending().is_empty(), "bob was in the chat: {seen}");
    assert_eq!(
        deliveries_metric(&app, "webhook", "skipped_present").await,
        1
    );
}

#[tokio::test]
async fn a_failing_host_is_retried_with_the_same_event() {
    let mut host = Receiver::start().await;
    let mut failures = 2;
    host.answer_with(move |_| {
        if failures > 0 {
            failures -= 1;
            500
        } else {
            200
        }
    });
    let app = spawn_app_with(hooked(&host, 0)).await;
    app.post_message("chat:alice:bob", "alice", "knock knock")
        .await;

    let calls = [host.next().await, host.next().await, host.next().await];
    for call in &calls {
        verify_signature(call);
    }
    let ids: Vec<&str> = calls
        .iter()
        .map(|c| c.header("x-sidechat-event-id"))
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one event id: {ids:?}");
    let [first, .., last] = &calls;
    assert_eq!(first.json(), last.json(), "the same event each time");
    app.outbox_drained().await;
    assert!(host.pending().is_empty(), "no call after the 2xx");
    assert_eq!(deliveries_metric(&app, "webhook", "failed").await, 2);
    assert_eq!(deliveries_metric(&app, "webhook", "delivered").await, 1);
}

#[tokio::test]
async fn a_restart_between_failures_resumes_the_same_event() {
    let mut host = Receiver::start().await;
    host.answer_with(|_| 503);
    let mut before = spawn_app_with(hooked(&host, 0)).await;
    before
        .post_message("chat:alice:bob", "alice", "still there?")
        .await;
    let failed = host.next().await;
    // The failure is on record before the restart.
    eventually("the failed attempt is recorded", || async {
        let attempts: Vec<i32> = before
            .db(|conn| {
                deliveries::table
                    .select(deliveries::attempts)
                    .load(conn)
                    .unwrap()
            })
            .await;
        attempts.first().is_some_and(|a| *a >= 1)
    })
    .await;
    before.shutdown.cancel();
    before.stopped().await.unwrap();
    host.pending();

    host.answer_with(|_| 200);
    let after = spawn_app_on(before.db_url.clone(), hooked(&host, 0)).await;
    let resumed = host.next().await;
    assert_eq!(
        resumed.header("x-sidechat-event-id"),
        failed.header("x-sidechat-event-id")
    );
    assert_eq!(resumed.json(), failed.json());
    after.outbox_drained().await;
    assert!(host.pending().is_empty());
}

#[tokio::test]
async fn a_burst_within_the_delay_travels_in_one_call() {
    let mut host = Receiver::start().await;
    let app = spawn_app_with(hooked(&host, 1)).await;
    let mut burst = Vec::new();
    for body in ["one", "two", "three"] {
        burst.push(app.post_message("chat:alice:bob", "alice", body).await);
    }
    let event = host.next().await.json();
    assert_eq!(event["messages"], json!(burst));
    assert_eq!(event["unread"]["count"], 3);
    app.outbox_drained().await;
    assert!(host.pending().is_empty(), "one call for the burst");
}

#[tokio::test]
async fn messages_read_within_the_delay_are_not_told() {
    let mut host = Receiver::start().await;
    let app = spawn_app_with(hooked(&host, 2)).await;
    let message = app.post_message("chat:alice:bob", "alice", "read me").await;
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let reply = bob
        .push(
            "chat:alice:bob",
            "read",
            json!({"message_id": message["id"]}),
        )
        .await;
    assert_eq!(reply["response"], json!({"marked": 1}));
    bob.leave("chat:alice:bob").await;
    // Sent after the read: its call comes after bob's group fell due.
    app.post_message("chat:alice:carol", "alice", "probe").await;
    assert_eq!(host.next().await.json()["recipient"], "carol");
    app.outbox_drained().await;
    assert!(host.pending().is_empty(), "bob read it: no call");
}

#[tokio::test]
async fn each_absent_room_member_is_told_but_not_the_sender() {
    let mut host = Receiver::start().await;
    let app = spawn_app_with(hooked(&host, 0)).await;
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/rooms/club",
            Some(json!({"name": "Club", "members": ["alice", "bob", "carol"]})),
        )
        .await;
    assert_eq!(status, 201);
    let message = app.post_message("room:club", "alice", "meeting at 5").await;
    let mut told: Vec<Value> = vec![host.next().await.json(), host.next().await.json()];
    told.sort_by_key(|e| e["recipient"].as_str().unwrap().to_owned());
    assert_eq!(told[0]["recipient"], "bob");
    assert_eq!(told[1]["recipient"], "carol");
    for event in &told {
        assert_eq!(event["messages"], json!([message]));
        assert_eq!(event["unread"], json!({"topic": "room:club", "count": 1}));
    }
    app.outbox_drained().await;
    assert!(host.pending().is_empty(), "the sender is not told");
}

#[tokio::test]
async fn erasing_a_user_drops_what_waits_for_them() {
    let host = Receiver::start().await;
    let app = spawn_app_with(hooked(&host, 3600)).await;
    app.post_message("chat:alice:bob", "alice", "for bob").await;
    app.post_message("chat:bob:carol", "bob", "from bob").await;
    app.post_message("chat:alice:carol", "alice", "for carol")
        .await;
    assert_eq!(app.outbox_rows().await, (3, 0));
    // The backlog shows in /metrics (recounted every few seconds).
    eventually("the outbox depth in /metrics", || async {
        app.metric("sidechat_outbox_waiting").await == Some(3.0)
    })
    .await;
    let (status, _) = app.api("DELETE", "/api/v1/users/bob", None).await;
    assert_eq!(status, 200);
    // Bob's own message went with its row; the one waiting to tell him went too.
    let left: Vec<Option<String>> = app
        .db(|conn| {
            outbox::table
                .select(outbox::recipient_id)
                .load(conn)
                .unwrap()
        })
        .await;
    assert_eq!(left, vec![Some("carol".to_owned())]);
}

#[tokio::test]
async fn two_replicas_on_one_outbox_send_each_event_once() {
    let mut host = Receiver::start().await;
    let replicas = spawn_replicas(2, hooked(&host, 0)).await;
    let recipients: Vec<String> = (0..30).map(|n| format!("reader{n}")).collect();
    for (n, recipient) in recipients.iter().enumerate() {
        let replica = &replicas[n % 2];
        replica
            .post_message(&format!("chat:alice:{recipient}"), "alice", "news")
            .await;
    }
    let mut told = Vec::new();
    for _ in &recipients {
        told.push(
            host.next().await.json()["recipient"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    replicas[0].outbox_drained().await;
    told.extend(
        host.pending()
            .iter()
            .map(|r| r.json()["recipient"].as_str().unwrap().to_owned()),
    );
    told.sort();
    let mut expected = recipients.clone();
    expected.sort();
    assert_eq!(told, expected, "every recipient told exactly once");
}
