//! Hostile input: each malformed frame ends only the socket that sent it (or gets a
//! clear error), changes nothing, and never stops or stalls the server for others.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::helpers::*;

/// What the server must do with one hostile input.
enum Expect {
    /// Close the socket with this code.
    Close(u16),
    /// Answer the push with this error reason, and keep the socket.
    Reason(&'static str),
}

/// Cheap, repeatable noise (xorshift), so a failure can be replayed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed & 0xff) as u8
        })
        .collect()
}

fn text(frame: Value) -> WsMessage {
    WsMessage::Text(frame.to_string().into())
}

fn raw_text(bytes: Vec<u8>) -> WsMessage {
    WsMessage::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true))
}

fn push(event: &str, payload: Value) -> WsMessage {
    text(json!(["1", "9", "chat:alice:bob", event, payload]))
}

#[tokio::test]
async fn a_battery_of_malformed_frames_harms_only_its_sender() {
    let app = spawn_app().await;
    let mut bystander = app.connect("bob").await;
    bystander.join_ok("chat:bob:carol", json!({})).await;
    let mut friend = app.connect("carol").await;
    friend.join_ok("chat:bob:carol", json!({})).await;

    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = "9".repeat(400);
    let cases: Vec<(&str, WsMessage, Expect)> = vec![
        (
            "random bytes, binary",
            WsMessage::Binary(noise(4096, 7).into()),
            Expect::Close(1007),
        ),
        (
            "random bytes as text",
            raw_text(noise(4096, 11)),
            Expect::Close(1007),
        ),
        (
            "invalid UTF-8",
            raw_text(vec![b'[', 0xff, 0xfe, b']']),
            Expect::Close(1007),
        ),
        (
            "10,000-deep JSON",
            WsMessage::Text(deep.into()),
            Expect::Close(1007),
        ),
        (
            "1 MiB frame",
            WsMessage::Text("x".repeat(1 << 20).into()),
            Expect::Close(1009),
        ),
        (
            "an empty frame",
            WsMessage::Text("".into()),
            Expect::Close(1007),
        ),
        (
            "an object, not an array",
            text(json!({"topic": "x"})),
            Expect::Close(1007),
        ),
        (
            "a number for the topic",
            text(json!(["1", "1", 5, "phx_join", {}])),
            Expect::Close(1007),
        ),
        (
            "null for the event",
            text(json!(["1", "1", "chat:alice:bob", null, {}])),
            Expect::Close(1007),
        ),
        (
            "an object for the ref",
            text(json!([{}, "1", "chat:alice:bob", "phx_join", {}])),
            Expect::Close(1007),
        ),
        (
            "six elements",
            text(json!(["1", "1", "t", "e", {}, 6])),
            Expect::Close(1007),
        ),
        // Numbers beyond what a JSON parser holds end the frame, like any bad JSON.
        (
            "a 400-digit id",
            WsMessage::Text(
                format!(r#"["1","9","chat:alice:bob","read",{{"message_id":{huge}}}]"#).into(),
            ),
            Expect::Close(1007),
        ),
        (
            "an id beyond f64",
            WsMessage::Text(r#"["1","9","chat:alice:bob","read",{"message_id":1e400}]"#.into()),
            Expect::Close(1007),
        ),
        (
            "an id beyond i64",
            WsMessage::Text(
                r#"["1","9","chat:alice:bob","read",{"message_id":99999999999999999999999}]"#
                    .into(),
            ),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a fractional id",
            push("read", json!({"message_id": 1.5})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a negative id",
            push("read", json!({"message_id": -1})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a string id",
            push("read", json!({"message_id": "1"})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a string payload",
            push("new_msg", json!("hello")),
            Expect::Reason("invalid_payload"),
        ),
        (
            "an array body",
            push("new_msg", json!({"body": ["a"]})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a null body",
            push("new_msg", json!({"body": null})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a NUL in the body",
            push("new_msg", json!({"body": "a\u{0}b"})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a NUL in meta",
            push("new_msg", json!({"body": "hi", "meta": {"k": ["a\u{0}"]}})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "meta that is not an object",
            push("new_msg", json!({"body": "hi", "meta": [1, 2]})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a negative history limit",
            push("history", json!({"limit": -5})),
            Expect::Reason("invalid_payload"),
        ),
        (
            "a 60 KB topic",
            text(json!([
                "1",
                "9",
                format!("chat:alice:{}", "b".repeat(60_000)),
                "phx_join",
                {}
            ])),
            Expect::Reason("invalid_topic"),
        ),
        (
            "control characters in a topic",
            text(json!(["1", "9", "chat:alice:b\u{7}b", "phx_join", {}])),
            Expect::Reason("invalid_topic"),
        ),
    ];
    let stored_expected = cases
        .iter()
        .map(|(_, _, expect)| match expect {
            Expect::Close(_) => 1,
            Expect::Reason(_) => 2,
        })
        .sum::<i64>();
    for (what, message, expect) in cases {
        let mut alice = app.connect("alice").await;
        alice.join_ok("chat:alice:bob", json!({})).await;
        alice.send_message(message).await;
        match expect {
            Expect::Close(code) => {
                assert_eq!(alice.expect_close().await, Closed::Code(code), "{what}");
            }
            Expect::Reason(reason) => {
                let reply = alice.expect(|f| f[1] == "9" && f[3] == "phx_reply").await;
                assert_eq!(reply[4]["status"], "error", "{what}: {reply}");
                assert_eq!(reply[4]["response"]["reason"], reason, "{what}: {reply}");
                // The socket stays usable.
                alice.send_msg("chat:alice:bob", "after").await;
            }
        }
        // Everyone else is served as before, after each one.
        let sent = friend.send_msg("chat:bob:carol", what).await;
        let received = bystander.expect_event("chat:bob:carol", "new_msg").await;
        assert_eq!(received, sent, "{what}");
    }
    // Stored: one message from the friend per case, one "after" per answered case;
    // nothing from any malformed frame.
    assert_eq!(app.message_count().await, stored_expected);
    let health = http_get(app.http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// The writer on its own, over a fresh migrated database: (its URL, what `start` gives).
async fn writer_alone(
    on_commit: sidechat::store::writer::OnCommit,
) -> (
    String,
    (
        sidechat::store::Writer,
        sidechat::store::WriterExit,
        std::thread::JoinHandle<()>,
    ),
) {
    let url = fresh_database();
    let migrate_url = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = sidechat::store::connect(&migrate_url, WAIT).unwrap();
        sidechat::store::run_migrations(&mut conn).unwrap();
    })
    .await
    .unwrap();
    let started = sidechat::store::Writer::start(
        url.clone(),
        WAIT,
        sidechat::store::Batching {
            window: std::time::Duration::ZERO,
            list_window: std::time::Duration::ZERO,
            list_defer_rate: 0.0,
        },
        None,
        std::sync::Arc::new(sidechat::metrics::Metrics::new()),
        on_commit,
    )
    .unwrap();
    (url, started)
}

fn new_message(n: usize, body: &str) -> sidechat::store::NewMessage {
    sidechat::store::NewMessage {
        topic: "chat:alice:bob".into(),
        sender_id: "alice".into(),
        recipient_id: Some("bob".into()),
        body: body.into(),
        kind: "user".into(),
        status: "complete".into(),
        meta: json!({}),
        client_ref: Some(format!("ref-{n}")),
        user_name: None,
        reply: None,
    }
}

/// Whatever slips past validation and makes Postgres refuse a row fails that request
/// alone: the others in its batch are stored and acknowledged.
#[tokio::test]
async fn a_request_postgres_refuses_fails_alone_in_its_batch() {
    let (url, (writer, _exit, _thread)) = writer_alone(Box::new(|_| {})).await;
    // Queued together, so most land in one batch with the bad one in the middle.
    let writes = (0..50).map(|n| {
        let body = if n == 25 { "nul \0 inside" } else { "fine" };
        writer.write(new_message(n, body))
    });
    let results = futures_util::future::join_all(writes).await;
    for (n, result) in results.iter().enumerate() {
        assert_eq!(result.is_ok(), n != 25, "request {n}: {result:?}");
    }
    let app_rows: i64 = tokio::task::spawn_blocking(move || {
        use diesel::prelude::*;
        let mut conn = PgConnection::establish(&url).unwrap();
        sidechat::store::schema::messages::table
            .count()
            .get_result(&mut conn)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(app_rows, 49);
}

/// The host API refuses what Postgres cannot store, with a clear error.
#[tokio::test]
async fn the_host_api_refuses_nul_in_bodies_appends_and_meta() {
    let app = spawn_app().await;
    let post = |body: Value| {
        let app = &app;
        async move { app.api("POST", "/api/v1/messages", Some(body)).await }
    };
    let base = json!({"topic": "chat:alice:bot", "user_id": "bot", "kind": "bot"});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let (status, error) = post(with(json!({"body": "a\u{0}b"}))).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (400, Some("invalid_payload")),
        "{error}"
    );
    let (status, error) = post(with(json!({"body": "ok", "meta": {"a\u{0}": 1}}))).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (400, Some("invalid_payload")),
        "{error}"
    );
    let (status, opened) = post(with(json!({"body": "", "status": "streaming"}))).await;
    assert_eq!(status, 201, "{opened}");
    let id = opened["id"].as_i64().unwrap();
    let (status, error) = app
        .api(
            "PATCH",
            &format!("/api/v1/messages/{id}"),
            Some(json!({"append": "x\u{0}"})),
        )
        .await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (400, Some("invalid_payload")),
        "{error}"
    );
    assert_eq!(app.message_count().await, 1);
}

/// Should the writer thread ever die (a bug), its callers are answered, not left
/// waiting, and the exit is signalled: `Application` then stops the process so the
/// orchestrator restarts it, rather than accepting sends it cannot store.
#[tokio::test]
async fn a_dying_writer_answers_its_callers_and_signals_its_exit() {
    let (_, (writer, exit, thread)) =
        writer_alone(Box::new(|_| panic!("a bug in what runs after COMMIT"))).await;
    let answer = tokio::time::timeout(WAIT, writer.write(new_message(1, "hello")))
        .await
        .expect("answered, not left waiting");
    assert!(
        matches!(answer, Err(sidechat::store::Error::Unavailable(_))),
        "{answer:?}"
    );
    tokio::time::timeout(WAIT, exit)
        .await
        .expect("the exit is signalled")
        .expect("by the thread's end");
    assert!(thread.join().is_err(), "the thread panicked");
    let after = writer.write(new_message(2, "again")).await;
    assert!(
        matches!(after, Err(sidechat::store::Error::Unavailable(_))),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_message_in_fragments_past_the_frame_limit_closes_with_1009() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    // Two 40 KB fragments: each under limits.max_frame_bytes (64 KiB), together over it.
    let fragment = vec![b' '; 40_000];
    alice
        .send_message(WsMessage::Frame(Frame::message(
            fragment.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    alice
        .send_message(WsMessage::Frame(Frame::message(
            fragment,
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    assert_eq!(alice.expect_close().await, Closed::Code(1009));
}
