//! Hostile clients holding a valid token: every push draws on its user's budget, one
//! member's typing flood never reaches the others, and a socket that keeps pushing over
//! budget is closed with 4004.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::*;

/// What a flooding socket saw of its flood.
#[derive(Debug, Default)]
struct Flood {
    ok: u64,
    rate_limited: u64,
    /// The close code, when the server closed the socket.
    closed: Option<u16>,
    /// From the first frame sent to the last reply or the close.
    elapsed: Duration,
}

/// Sends `count` frames made by `frame(ref)` as fast as the socket takes them while
/// reading the replies; ends when every frame was answered or the server closed. Refs
/// are "f0", "f1", ...
async fn flood(
    client: Client,
    count: usize,
    frame: impl Fn(String) -> Value + Send + 'static,
) -> Flood {
    let (mut sink, mut stream) = client.into_socket().split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..count {
            let text = frame(format!("f{i}")).to_string();
            if sink.feed(WsMessage::Text(text.into())).await.is_err() {
                return;
            }
            if i % 64 == 63 && sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.flush().await;
    });
    let mut seen = Flood::default();
    while seen.ok + seen.rate_limited < count as u64 {
        let next = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a frame within the wait");
        match next {
            Some(Ok(WsMessage::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                let ours = frame[1].as_str().is_some_and(|r| r.starts_with('f'));
                if frame[3] != "phx_reply" || !ours {
                    continue;
                }
                match (&frame[4]["status"], &frame[4]["response"]["reason"]) {
                    (status, _) if status == "ok" => seen.ok += 1,
                    (_, reason) if reason == "rate_limited" => seen.rate_limited += 1,
                    _ => panic!("unexpected reply {frame}"),
                }
            }
            Some(Ok(WsMessage::Close(close))) => {
                seen.closed = close.map(|c| u16::from(c.code));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    seen.elapsed = started.elapsed();
    writer.abort();
    seen
}

/// The most pushes a budget of `per_second` and `burst` allows in `elapsed`, with one
/// second of slack for when the clocks of test and server tick.
fn most_allowed(per_second: u32, burst: u32, elapsed: Duration) -> u64 {
    u64::from(burst) + u64::from(per_second) * (elapsed.as_secs() + 1)
}

#[tokio::test]
async fn a_typing_flood_in_a_room_of_60_reaches_the_others_about_once_a_second() {
    // Default budgets; the flooder is cut off after 3 s instead of 10, to keep it short.
    let app = spawn_app_with(|s| s.limits.abuse_close_s = 3).await;
    let defaults = test_settings().limits;
    let members: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    let (status, body) = app
        .api(
            "PUT",
            "/api/v1/rooms/lounge",
            Some(json!({"members": members})),
        )
        .await;
    assert!(status < 300, "{body}");
    let mut others = Vec::new();
    for member in members.iter().skip(1) {
        let mut client = app.connect(member).await;
        client.join_ok("room:lounge", json!({})).await;
        others.push(client);
    }
    let mut flooder = app.connect("m0").await;
    flooder.join_ok("room:lounge", json!({})).await;

    let flood = flood(
        flooder,
        30_000,
        |r| json!(["1", r, "room:lounge", "typing", {"typing": true}]),
    )
    .await;
    assert!(flood.rate_limited > 0, "{flood:?}");
    assert_eq!(flood.closed, Some(4004), "{flood:?}");
    assert!(
        flood.ok
            <= most_allowed(
                defaults.events_per_second,
                defaults.events_burst,
                flood.elapsed
            ),
        "{flood:?}"
    );
    assert!(
        flood.rate_limited <= most_allowed(defaults.events_per_second, 0, flood.elapsed),
        "read at the budget's pace: {flood:?}"
    );

    // Nobody else was cut off, and each saw the flooder type about once a second.
    let at_most = flood.elapsed.as_secs() + 2;
    for mut member in others {
        member.sync().await;
        let seen = member
            .take_buffered()
            .iter()
            .filter(|f| f[3] == "typing" && f[4]["user_id"] == "m0")
            .count() as u64;
        assert!(seen >= 1, "the first typing is relayed");
        assert!(
            seen <= at_most,
            "{seen} typing events in {:?}",
            flood.elapsed
        );
    }
    let dropped = app.metric("sidechat_typing_dropped_total").await.unwrap();
    assert!(dropped >= 1.0, "the throttle dropped {dropped}");
    let refused = app
        .metric(r#"sidechat_rate_limited_total{budget="events"}"#)
        .await
        .unwrap();
    assert!(refused >= flood.rate_limited as f64, "{refused} counted");
}

#[tokio::test]
async fn a_socket_that_keeps_pushing_over_budget_is_closed_with_4004() {
    let app = spawn_app_with(|s| {
        s.limits.events_per_second = 10;
        s.limits.events_burst = 10;
        s.limits.abuse_close_s = 1;
    })
    .await;
    let mut client = app.connect("mallory").await;
    client.join_ok("chat:bob:mallory", json!({})).await;
    // Far faster than 10 a second, until the server has had enough.
    let flood = flood(
        client,
        1_000_000,
        |r| json!(["1", r, "chat:bob:mallory", "history", {"limit": 500}]),
    )
    .await;
    assert_eq!(flood.closed, Some(4004), "{flood:?}");
    assert!(flood.elapsed >= Duration::from_secs(1), "{flood:?}");
    assert!(flood.ok <= most_allowed(10, 10, flood.elapsed), "{flood:?}");
    // After each refusal the socket waits a refill before it is read again: the server
    // answered a few refusals a second, not the flood.
    assert!(
        flood.rate_limited <= most_allowed(10, 10, flood.elapsed),
        "{flood:?}"
    );
    assert_eq!(
        app.metric(r#"sidechat_disconnects_total{code="4004"}"#)
            .await,
        Some(1.0)
    );
    // The user is not shut out: a new socket joins (joins have a budget of their own).
    let mut again = app.connect("mallory").await;
    again.join_ok("chat:bob:mallory", json!({})).await;
}

#[tokio::test]
async fn a_join_leave_loop_is_refused_past_its_budget_and_queries_no_more_history() {
    let app = spawn_app_with(|s| {
        s.limits.joins_per_second = 5;
        s.limits.joins_burst = 10;
        s.limits.abuse_close_s = 0;
    })
    .await;
    for i in 0..50 {
        app.post_message("chat:bob:mallory", "bob", &format!("m{i}"))
            .await;
    }
    let mut client = app.connect("mallory").await;
    let started = Instant::now();
    let (mut joined, mut refused) = (0u64, 0u64);
    // Past the burst, each refusal stops the socket being read for a fifth of a second.
    let attempts = 40;
    for _ in 0..attempts {
        let reply = client.join("chat:bob:mallory", json!({"limit": 500})).await;
        if reply["status"] == "ok" {
            joined += 1;
            assert_eq!(reply["response"]["messages"].as_array().unwrap().len(), 50);
            client.leave("chat:bob:mallory").await;
        } else {
            assert_eq!(reply["response"]["reason"], "rate_limited", "{reply}");
            refused += 1;
        }
    }
    let bound = most_allowed(5, 10, started.elapsed());
    assert!(joined <= bound, "{joined} joins allowed, at most {bound}");
    assert!(joined >= 10, "the burst is allowed: {joined}");
    assert!(refused > 0);
    // Only the allowed joins reached Postgres: each is one successful join.
    assert_eq!(
        app.metric("sidechat_joins_total").await,
        Some(joined as f64)
    );
    assert_eq!(
        app.metric(r#"sidechat_rate_limited_total{budget="joins"}"#)
            .await,
        Some(refused as f64)
    );
}

#[tokio::test]
async fn history_read_and_lobby_floods_are_each_bounded_by_their_budget() {
    let (per_second, burst) = (10, 20);
    let app = spawn_app_with(move |s| {
        s.limits.events_per_second = per_second;
        s.limits.events_burst = burst;
        s.limits.joins_per_second = 5;
        s.limits.joins_burst = 10;
        s.limits.abuse_close_s = 0;
    })
    .await;
    let message = app.post_message("chat:bob:reader", "bob", "hello").await;
    // (user, topic, event, payload, (per second, burst) of the budget it draws on)
    let cases = [
        (
            "historian",
            "chat:bob:historian",
            "history",
            json!({"limit": 500}),
            (per_second, burst),
        ),
        (
            "reader",
            "chat:bob:reader",
            "read",
            json!({"message_id": message["id"]}),
            (per_second, burst),
        ),
        // Each lobby join runs the unread summary.
        ("lobbyist", "user:lobbyist", "phx_join", json!({}), (5, 10)),
    ];
    for (user, topic, event, payload, (rate, budget)) in cases {
        let mut client = app.connect(user).await;
        if event != "phx_join" {
            client.join_ok(topic, json!({})).await;
        }
        let started = Instant::now();
        let mut allowed = 0u64;
        for _ in 0..60 {
            let reply = client.push(topic, event, payload.clone()).await;
            if reply["status"] == "ok" {
                allowed += 1;
            } else {
                assert_eq!(
                    reply["response"]["reason"], "rate_limited",
                    "{event}: {reply}"
                );
            }
        }
        let bound = most_allowed(rate, budget, started.elapsed());
        assert!(
            allowed >= u64::from(budget),
            "{event}: the burst is allowed ({allowed})"
        );
        assert!(allowed < 60, "{event}: some were refused");
        assert!(
            allowed <= bound,
            "{event}: {allowed} allowed, at most {bound}"
        );
    }
}

#[tokio::test]
async fn a_users_http_calls_draw_on_the_same_budget() {
    // One a second: nothing earned back between the last call and the socket's push.
    let app = spawn_app_with(|s| {
        s.limits.events_per_second = 1;
        s.limits.events_burst = 20;
    })
    .await;
    let token = hmac_token("poller", 600);
    let mut client = app.connect("poller").await;
    let started = Instant::now();
    let (mut allowed, mut refused) = (0u64, 0u64);
    for _ in 0..60 {
        let response = http_client()
            .get(app.http("/v1/me/unread"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => allowed += 1,
            429 => {
                let retry_after = response.headers().get("retry-after").cloned();
                assert_eq!(retry_after.unwrap().to_str().unwrap(), "1");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["reason"], "rate_limited");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(allowed >= 20, "the burst is allowed");
    assert!(allowed <= most_allowed(1, 20, started.elapsed()));
    assert!(refused > 0);
    // The socket shares the budget: spent over HTTP, spent for its pushes too.
    let reply = client
        .push_with_join_ref(None, "phoenix", "heartbeat", json!({}))
        .await;
    assert_eq!(reply["response"]["reason"], "rate_limited", "{reply}");
}

#[tokio::test]
async fn a_reader_over_budget_is_paced_but_never_closed() {
    // A client that reads every message of a busy room is over its events budget for
    // as long as the room is busy: its reads are refused and paced, never met with 4004.
    let app = spawn_app_with(|s| {
        s.limits.events_per_second = 10;
        s.limits.events_burst = 10;
        s.limits.abuse_close_s = 1;
    })
    .await;
    let message = app.post_message("chat:bob:reader", "bob", "hello").await;
    let mut client = app.connect("reader").await;
    client.join_ok("chat:bob:reader", json!({})).await;
    let id = message["id"].clone();
    let flood = flood(
        client,
        40,
        move |r| json!(["1", r, "chat:bob:reader", "read", {"message_id": id}]),
    )
    .await;
    assert_eq!(flood.closed, None, "{flood:?}");
    assert!(
        flood.elapsed > Duration::from_secs(1),
        "paced past abuse_close_s: {flood:?}"
    );
    assert!(flood.rate_limited > 0, "{flood:?}");
    assert_eq!(flood.ok + flood.rate_limited, 40, "{flood:?}");
}
