//! Every error reason of PROTOCOL.md §2, and the close codes, over a real socket.

use serde_json::json;

use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::*;

#[tokio::test]
async fn each_bad_request_gets_its_reason_and_stores_nothing() {
    let app = spawn_app_with(|s| s.chat.max_body_bytes = 10).await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.join_ok("user:alice", json!({})).await;

    let cases = [
        ("chat:bob:carol", "phx_join", json!({}), "unauthorized"),
        ("user:bob", "phx_join", json!({}), "unauthorized"),
        ("inbox", "phx_join", json!({}), "unauthorized"),
        ("chat:alice:alice", "phx_join", json!({}), "invalid_topic"),
        ("lobby:alice", "phx_join", json!({}), "invalid_topic"),
        (
            "chat:alice:bob",
            "phx_join",
            json!({"limit": "ten"}),
            "invalid_payload",
        ),
        (
            "chat:alice:bob",
            "new_msg",
            json!({"body": "   "}),
            "invalid_payload",
        ),
        (
            "chat:alice:bob",
            "new_msg",
            json!({"text": "hi"}),
            "invalid_payload",
        ),
        (
            "chat:alice:bob",
            "new_msg",
            json!({"body": "01234567890"}),
            "too_large",
        ),
        (
            "chat:alice:bob",
            "read",
            json!({"message_id": 999999}),
            "not_found",
        ),
        ("chat:alice:bob", "shout", json!({}), "unknown_event"),
        (
            "user:alice",
            "new_msg",
            json!({"body": "hi"}),
            "unknown_event",
        ),
        (
            "chat:alice:carol",
            "new_msg",
            json!({"body": "hi"}),
            "not_joined",
        ),
        ("chat:alice:carol", "history", json!({}), "not_joined"),
    ];
    for (topic, event, payload, reason) in cases {
        let reply = alice.push(topic, event, payload.clone()).await;
        assert_eq!(
            reply,
            json!({"status": "error", "response": {"reason": reason}}),
            "{topic} {event} {payload}"
        );
    }
    assert_eq!(app.message_count().await, 0);
    // The socket is still healthy after all of that.
    alice.send_msg("chat:alice:bob", "fine").await;
}

#[tokio::test]
async fn sending_too_fast_is_rate_limited() {
    let app = spawn_app_with(|s| {
        s.limits.messages_per_second = 1;
        s.limits.burst = 2;
    })
    .await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.send_msg("chat:alice:bob", "1").await;
    alice.send_msg("chat:alice:bob", "2").await;
    let third = alice
        .push("chat:alice:bob", "new_msg", json!({"body": "3"}))
        .await;
    assert_eq!(third["response"]["reason"], "rate_limited");
    assert_eq!(app.message_count().await, 2);
}

#[tokio::test]
async fn joining_past_the_per_connection_limit_is_rate_limited() {
    let app = spawn_app_with(|s| s.limits.joins_per_connection = 2).await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.join_ok("chat:alice:carol", json!({})).await;
    let third = alice.join("chat:alice:dave", json!({})).await;
    assert_eq!(third["response"]["reason"], "rate_limited");
    // Rejoining a topic already joined replaces it and is not a new join.
    alice.join_ok("chat:bob:alice", json!({})).await;
}

#[tokio::test]
async fn storage_down_answers_unavailable_and_stores_nothing() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.send_msg("chat:alice:bob", "before").await;

    // Take this test's database away from the service: refuse new connections and
    // end the open ones (the writer's and the pool's).
    let db_name = app.db_url.rsplit('/').next().unwrap().to_owned();
    let admin_url = with_database(&app.db_url, "postgres");
    let name = db_name.clone();
    tokio::task::spawn_blocking(move || {
        use diesel::prelude::*;
        let mut conn = PgConnection::establish(&admin_url).unwrap();
        diesel::sql_query(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            .execute(&mut conn)
            .unwrap();
        diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .execute(&mut conn)
        .unwrap();
    })
    .await
    .unwrap();

    for body in ["during-1", "during-2"] {
        let reply = alice
            .push("chat:alice:bob", "new_msg", json!({"body": body}))
            .await;
        assert_eq!(reply["response"]["reason"], "unavailable", "{reply}");
    }
    let history = alice.push("chat:alice:bob", "history", json!({})).await;
    assert_eq!(history["response"]["reason"], "unavailable");
    let ready = http_get(app.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);

    // Storage comes back: the writer reconnects and nothing from the outage was kept.
    let admin_url = with_database(&app.db_url, "postgres");
    tokio::task::spawn_blocking(move || {
        use diesel::prelude::*;
        let mut conn = PgConnection::establish(&admin_url).unwrap();
        diesel::sql_query(format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"))
            .execute(&mut conn)
            .unwrap();
    })
    .await
    .unwrap();
    let after = loop {
        let reply = alice
            .push(
                "chat:alice:bob",
                "new_msg",
                json!({"body": "after", "client_ref": "after-1"}),
            )
            .await;
        if reply["status"] == "ok" {
            break reply;
        }
        // The writer retries with backoff; each push is one attempt, not a sleep.
        assert_eq!(reply["response"]["reason"], "unavailable");
    };
    assert_eq!(after["response"]["message"]["body"], "after");
    let bodies: Vec<String> = app
        .db(|conn| {
            use diesel::prelude::*;
            use sidechat::store::schema::messages::dsl::*;
            messages.select(body).order(id).load(conn).unwrap()
        })
        .await;
    assert_eq!(bodies, ["before", "after"]);
}

#[tokio::test]
async fn a_malformed_frame_closes_only_that_socket_with_1007() {
    let app = spawn_app().await;
    let mut bystander = app.connect("bob").await;
    bystander.join_ok("chat:alice:bob", json!({})).await;
    let frames = [
        "not json",
        "{\"topic\": \"x\"}",
        "[1, 2, 3]",
        "[null, null, 5, \"e\", {}]",
    ];
    for frame in frames {
        let mut alice = app.connect("alice").await;
        alice.send_text(frame).await;
        assert_eq!(alice.expect_close().await, Closed::Code(1007), "{frame}");
    }
    bystander.sync().await;
    bystander.send_msg("chat:alice:bob", "still here").await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let app = spawn_app_with(|s| s.limits.max_frame_bytes = 2048).await;
    let mut alice = app.connect("alice").await;
    let big = json!(["1", "1", "chat:alice:bob", "new_msg", {"body": "x".repeat(4096)}]);
    alice.send_text(big.to_string()).await;
    assert_eq!(alice.expect_close().await, Closed::Code(1009));
}

#[tokio::test]
async fn a_silent_socket_is_closed_with_4003() {
    let app = spawn_app_with(|s| s.server.idle_timeout_s = 1).await;
    let mut alice = app.connect("alice").await;
    assert_eq!(alice.expect_close().await, Closed::Code(4003));
}

#[tokio::test]
async fn an_expired_token_closes_the_socket_with_4001() {
    let app = spawn_app_with(|s| s.auth.leeway_s = 0).await;
    let mut alice = app.connect_with_token(&hmac_token("alice", 1)).await;
    alice.join_ok("user:alice", json!({})).await;
    assert_eq!(alice.expect_close().await, Closed::Code(4001));
}

#[tokio::test]
async fn disconnect_on_expiry_can_be_turned_off() {
    let app = spawn_app_with(|s| {
        s.auth.leeway_s = 0;
        s.auth.disconnect_on_expiry = false;
        s.server.idle_timeout_s = 3;
    })
    .await;
    let mut alice = app.connect_with_token(&hmac_token("alice", 1)).await;
    // The idle timeout ends it, not the expiry.
    assert_eq!(alice.expect_close().await, Closed::Code(4003));
}

/// The open sockets the service reports in /metrics.
async fn open_sockets(app: &TestApp) -> u64 {
    app.metric("sidechat_connections")
        .await
        .expect("sidechat_connections in /metrics") as u64
}

/// A socket of `user` that joins `topic`, reads the join reply, and then reads nothing,
/// through as small a TCP window as the kernel allows.
async fn stalled_reader(
    app: &TestApp,
    user: &str,
    topic: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::{SinkExt, StreamExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{}", app.port).parse().unwrap())
        .await
        .unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(app.socket_url(&hmac_token(user, 600)), stream)
            .await
            .unwrap();
    let join = json!(["1", "join", topic, "phx_join", {}]).to_string();
    ws.send(WsMessage::Text(join.into())).await.unwrap();
    while !ws
        .next()
        .await
        .unwrap()
        .unwrap()
        .to_text()
        .unwrap()
        .contains("phx_reply")
    {}
    ws
}

/// Pipelines large `new_msg` frames into `topic` until only `open` sockets remain (the
/// service has cut a stalled reader off); returns how many were sent.
async fn flood_until_open(
    app: &TestApp,
    sink: &mut (
             impl futures_util::Sink<WsMessage, Error = tokio_tungstenite::tungstenite::Error> + Unpin
         ),
    topic: &str,
    open: u64,
) -> usize {
    use futures_util::SinkExt;
    let body = "x".repeat(3500);
    let mut sent = 0;
    while open_sockets(app).await > open {
        assert!(sent < 20_000, "the stalled reader was never disconnected");
        for _ in 0..100 {
            sent += 1;
            let frame = json!(["1", sent.to_string(), topic, "new_msg", {"body": body}]);
            sink.send(WsMessage::Text(frame.to_string().into()))
                .await
                .unwrap();
        }
    }
    sent
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_instead_of_growing_memory() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app_with(|s| {
        s.limits.outbound_queue = 4;
        s.limits.messages_per_second = 0;
    })
    .await;
    let mut bob = stalled_reader(&app, "bob", "chat:alice:bob").await;

    // Alice sends until the service has cut bob off; her own frames are drained.
    let (alice, _) = tokio_tungstenite::connect_async(app.socket_url(&hmac_token("alice", 600)))
        .await
        .unwrap();
    let (mut alice_tx, mut alice_rx) = alice.split();
    tokio::spawn(async move { while let Some(Ok(_)) = alice_rx.next().await {} });
    alice_tx
        .send(Message::Text(
            json!(["1", "1", "chat:alice:bob", "phx_join", {}])
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    flood_until_open(&app, &mut alice_tx, "chat:alice:bob", 1).await;

    // Bob now reads what made it out: a close with 4002, or the end of the stream if
    // even the close frame could not get past his backlog. That backlog is megabytes,
    // read through a tiny window, so this wait is longer than most (and, with the whole
    // suite running on two cores, once took more than 30 s).
    let ended = tokio::time::timeout(6 * WAIT, async {
        while let Some(frame) = bob.next().await {
            match frame {
                Ok(Message::Close(close)) => return close.map(|c| u16::from(c.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("bob's stream ends");
    assert!(matches!(ended, None | Some(4002)), "closed with {ended:?}");
    // Whether or not the close frame got through, the service closed it as full.
    let full_closes = app
        .metric("sidechat_disconnects_total{code=\"4002\"}")
        .await
        .unwrap_or(0.0);
    assert!(full_closes >= 1.0, "a 4002 close is counted");
}

#[tokio::test]
async fn a_client_pipelining_many_requests_gets_every_reply_in_time() {
    // Budgets off: this is about pipelining, not what a user may cost.
    let app = spawn_app_with(|s| {
        s.limits.messages_per_second = 0;
        s.limits.events_per_second = 0;
    })
    .await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    // Far more than a session keeps in flight: the rest waits in the socket.
    for i in 0..300 {
        let event = if i % 2 == 0 { "history" } else { "new_msg" };
        let payload = if i % 2 == 0 {
            json!({"limit": 5})
        } else {
            json!({"body": format!("m{i}")})
        };
        alice
            .send_text(json!(["1", format!("r{i}"), "chat:alice:bob", event, payload]).to_string())
            .await;
    }
    let mut stored_ids = Vec::new();
    for i in 0..300 {
        let r = format!("r{i}");
        let reply = alice
            .expect(|f| f[1] == json!(r) && f[3] == "phx_reply")
            .await;
        assert_eq!(reply[4]["status"], "ok", "{reply}");
        if let Some(id) = reply[4]["response"]["message"]["id"].as_i64() {
            stored_ids.push(id);
        }
    }
    assert_eq!(app.message_count().await, 150);
    // Stored in the order sent: a pipelining client's messages keep their order.
    assert!(stored_ids.windows(2).all(|w| w[0] < w[1]), "{stored_ids:?}");
}

/// One member of a room stops reading: the service cuts that member off, and the others
/// receive every message, in order, without being held back or disconnected.
#[tokio::test]
async fn a_stalled_member_is_cut_off_while_the_rest_of_the_room_keeps_up() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    // The default queue: one writer batch can bring hundreds of events of a busy room
    // at once, which a queue of a few would take for a stalled reader.
    let app = spawn_app_with(|s| s.limits.messages_per_second = 0).await;
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/rooms/r",
            Some(json!({"members": ["alice", "bob", "carol"]})),
        )
        .await;
    assert_eq!(status, 201);
    let join = |topic: &str| {
        Message::Text(
            json!(["1", "join", topic, "phx_join", {}])
                .to_string()
                .into(),
        )
    };
    let _bob = stalled_reader(&app, "bob", "room:r").await;

    // Carol reads everything, as it comes, and keeps the message ids in order.
    let (carol, _) = tokio_tungstenite::connect_async(app.socket_url(&hmac_token("carol", 600)))
        .await
        .unwrap();
    let (mut carol_tx, mut carol_rx) = carol.split();
    carol_tx.send(join("room:r")).await.unwrap();
    let (carol_ids_tx, mut carol_ids) = tokio::sync::mpsc::unbounded_channel::<Option<i64>>();
    let (carol_joined_tx, carol_joined) = tokio::sync::oneshot::channel();
    let mut carol_joined_tx = Some(carol_joined_tx);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = carol_rx.next().await {
            match frame {
                Message::Text(text) => {
                    let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if frame[1] == "join" {
                        let _ = carol_joined_tx.take().map(|tx| tx.send(()));
                    }
                    if frame[3] == "new_msg" {
                        let _ = carol_ids_tx.send(frame[4]["id"].as_i64());
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = carol_ids_tx.send(None); // carol's socket ended
    });

    // Alice pipelines large messages until the service has cut bob off.
    let (alice, _) = tokio_tungstenite::connect_async(app.socket_url(&hmac_token("alice", 600)))
        .await
        .unwrap();
    let (mut alice_tx, mut alice_rx) = alice.split();
    alice_tx.send(join("room:r")).await.unwrap();
    let (acked_tx, mut acked) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let (alice_joined_tx, alice_joined) = tokio::sync::oneshot::channel();
    let mut alice_joined_tx = Some(alice_joined_tx);
    tokio::spawn(async move {
        while let Some(Ok(message)) = alice_rx.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
            if frame[1] == "join" {
                let _ = alice_joined_tx.take().map(|tx| tx.send(()));
            }
            if frame[3] == "phx_reply" && frame[4]["response"]["message"]["id"].is_i64() {
                let _ = acked_tx.send(frame[4]["response"]["message"]["id"].as_i64().unwrap());
            }
        }
    });
    tokio::time::timeout(WAIT, carol_joined)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, alice_joined)
        .await
        .unwrap()
        .unwrap();
    let sent = flood_until_open(&app, &mut alice_tx, "room:r", 2).await;
    // Every message alice sent is acknowledged, and carol has each, in order.
    let mut ids = Vec::new();
    for _ in 0..sent {
        let Ok(Some(id)) = tokio::time::timeout(WAIT, acked.recv()).await else {
            panic!("{} of {sent} acked", ids.len());
        };
        ids.push(id);
    }
    // Carol gets each acknowledged message once, in id (commit) order.
    ids.sort_unstable();
    let mut got = Vec::with_capacity(ids.len());
    while got.len() < ids.len() {
        let id = tokio::time::timeout(WAIT, carol_ids.recv())
            .await
            .expect("carol keeps receiving")
            .expect("carol's reader runs");
        got.push(id.expect("carol's socket stays open"));
    }
    assert_eq!(got, ids, "carol has every message, in order");
    assert_eq!(
        open_sockets(&app).await,
        2,
        "alice and carol are still connected"
    );
}
