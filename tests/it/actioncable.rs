//! `/cable`: the ActionCable protocol over a real socket.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn cable(app: &TestApp, user: &str) -> Socket {
    let url = format!(
        "ws://127.0.0.1:{}/cable?token={}",
        app.port,
        hmac_token(user, 600)
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "actioncable-v1-json, actioncable-unsupported"
            .parse()
            .unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "actioncable-v1-json"
    );
    socket
}

async fn next_json(socket: &mut Socket, matches: impl Fn(&Value) -> bool) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if matches(&value) {
                return value;
            }
        }
    }
}

async fn command(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

fn identifier(topic: &str) -> String {
    json!({"channel": "ChatChannel", "topic": topic}).to_string()
}

#[tokio::test]
async fn a_rails_client_subscribes_performs_and_hears_events() {
    let app = spawn_app().await;
    let mut alice = cable(&app, "alice").await;
    assert_eq!(
        next_json(&mut alice, |_| true).await,
        json!({"type": "welcome"})
    );

    let id = identifier("chat:alice:bob");
    command(
        &mut alice,
        json!({"command": "subscribe", "identifier": id}),
    )
    .await;
    let confirm = next_json(&mut alice, |v| v.get("type").is_some_and(|t| t != "ping")).await;
    assert_eq!(
        confirm,
        json!({"identifier": id, "type": "confirm_subscription"})
    );
    let joined = next_json(&mut alice, |v| v["message"]["event"] == "joined").await;
    assert_eq!(joined["identifier"], id);
    assert_eq!(
        joined["message"]["payload"],
        json!({"messages": [], "more": false})
    );

    // A Phoenix client on the other side of the same conversation.
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:bob:alice", json!({})).await;
    let data = json!({"action": "new_msg", "body": "from rails", "ref": "r1"}).to_string();
    command(
        &mut alice,
        json!({"command": "message", "identifier": id, "data": data}),
    )
    .await;
    let reply = next_json(&mut alice, |v| v["message"]["event"] == "reply").await;
    assert_eq!(reply["message"]["payload"]["ref"], "r1");
    assert_eq!(reply["message"]["payload"]["status"], "ok");
    let sent = reply["message"]["payload"]["response"]["message"].clone();
    assert_eq!(sent["body"], "from rails");
    assert_eq!(bob.expect_event("chat:bob:alice", "new_msg").await, sent);

    let answer = bob.send_msg("chat:bob:alice", "hi rails").await;
    let heard = next_json(&mut alice, |v| {
        v["message"]["event"] == "new_msg" && v["message"]["payload"]["id"] == answer["id"]
    })
    .await;
    assert_eq!(heard["identifier"], id);
    assert_eq!(heard["message"]["payload"], answer);

    // An error answers the ref with its reason.
    let data = json!({"action": "new_msg", "body": " ", "ref": 2}).to_string();
    command(
        &mut alice,
        json!({"command": "message", "identifier": id, "data": data}),
    )
    .await;
    let refused = next_json(&mut alice, |v| v["message"]["event"] == "reply").await;
    assert_eq!(
        refused["message"]["payload"],
        json!({"ref": "2", "status": "error", "response": {"reason": "invalid_payload"}})
    );
}

#[tokio::test]
async fn a_subscription_the_user_may_not_have_is_rejected() {
    let app = spawn_app().await;
    let mut carol = cable(&app, "carol").await;
    for topic in ["chat:alice:bob", "nonsense"] {
        let id = identifier(topic);
        command(
            &mut carol,
            json!({"command": "subscribe", "identifier": id}),
        )
        .await;
        let answer = next_json(&mut carol, |v| v.get("identifier").is_some()).await;
        assert_eq!(
            answer,
            json!({"identifier": id, "type": "reject_subscription"}),
            "{topic}"
        );
    }
    let other_channel =
        json!({"channel": "NotificationsChannel", "topic": "user:carol"}).to_string();
    command(
        &mut carol,
        json!({"command": "subscribe", "identifier": other_channel}),
    )
    .await;
    let answer = next_json(&mut carol, |v| v.get("identifier").is_some()).await;
    assert_eq!(answer["type"], "reject_subscription");
}

#[tokio::test]
async fn the_server_pings_every_few_seconds_and_says_why_it_closes() {
    let mut app = spawn_app().await;
    let mut alice = cable(&app, "alice").await;
    let ping = next_json(&mut alice, |v| v["type"] == "ping").await;
    assert!(ping["message"].as_i64().unwrap() > 1_700_000_000);
    app.shutdown.cancel();
    let bye = next_json(&mut alice, |v| v["type"] == "disconnect").await;
    assert_eq!(
        bye,
        json!({"type": "disconnect", "reason": "server_restart", "reconnect": true})
    );
    app.stopped().await.unwrap();
}
