//! SIGTERM's drain, driven through the same token the signal handler cancels.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn shutdown_answers_what_is_owed_then_closes_with_1001_so_clients_rejoin() {
    let mut app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.join_ok("user:alice", json!({})).await;

    // A send in flight: the heartbeat's reply proves the server has read it.
    let send = json!(["1", "inflight", "chat:alice:bob", "new_msg", {"body": "last words"}]);
    alice.send_text(send.to_string()).await;
    alice.sync().await;
    app.shutdown.cancel();

    let reply = alice
        .expect(|f| f[1] == "inflight" && f[3] == "phx_reply")
        .await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    assert_eq!(alice.expect_close().await, Closed::Code(1001));
    // phx_close would tell the official client never to rejoin these channels.
    assert!(!alice.has_buffered(|f| f[3] == "phx_close"));
    app.stopped().await.expect("a clean stop");
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test]
async fn new_sockets_are_refused_with_503_once_shutdown_began() {
    let app = spawn_app().await;
    // An open socket keeps the drain (and so the HTTP server) going long enough to ask.
    let mut alice = app.connect("alice").await;
    alice.join_ok("user:alice", json!({})).await;
    app.shutdown.cancel();
    let url = app.socket_url(&hmac_token("bob", 60));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        // The server may already have stopped listening: also a refusal.
        Err(_) => {}
        Ok(_) => panic!("a socket was accepted during shutdown"),
    }
}
