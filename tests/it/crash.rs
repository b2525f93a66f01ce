//! `kill -9` under load: every message that got an ok reply is in Postgres exactly once
//! after a restart, and clients resending with their `client_ref` create no duplicates.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::*;

/// The real binary, serving `db_url` with the test configuration.
fn serve(db_url: &str) -> (Child, u16) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/test.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidechat"))
        .args(["serve", "--config", config])
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = announced_port(child.stderr.take().unwrap(), "listening on port ", WAIT);
    (child, port)
}

fn url(port: u16, user: &str) -> String {
    format!(
        "ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0&token={}",
        hmac_token(user, 3600)
    )
}

/// What one sender saw: client_ref -> the id its ok reply carried, and the refs sent
/// without an answer (in doubt: stored or not).
#[derive(Default)]
struct Seen {
    acked: HashMap<String, i64>,
    in_doubt: Vec<String>,
}

/// Sends `new_msg` after `new_msg`, each after the last one's reply, until the socket
/// dies.
async fn send_until_the_server_dies(
    port: u16,
    sender: String,
    seen: Arc<Mutex<Seen>>,
    acks: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(port, &sender))
        .await
        .unwrap();
    let topic = format!("chat:{sender}:peer");
    let join = json!(["1", "1", topic, "phx_join", {"limit": 1}]);
    ws.send(WsMessage::Text(join.to_string().into()))
        .await
        .unwrap();
    let mut n = 0u64;
    let mut waiting: Option<String> = None;
    loop {
        if waiting.is_none() {
            n += 1;
            let client_ref = format!("{sender}-{n}");
            let frame =
                json!(["1", client_ref, topic, "new_msg", {"body": "x", "client_ref": client_ref}]);
            if ws
                .send(WsMessage::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                seen.lock().unwrap().in_doubt.push(client_ref);
                return;
            }
            waiting = Some(client_ref);
        }
        let frame: Value = match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                seen.lock().unwrap().in_doubt.extend(waiting);
                return;
            }
        };
        if frame[3] == "phx_reply" && waiting.as_deref() == frame[1].as_str() {
            let client_ref = waiting.take().unwrap();
            let status = &frame[4]["status"];
            assert_eq!(status, "ok", "{frame}");
            let id = frame[4]["response"]["message"]["id"].as_i64().unwrap();
            seen.lock().unwrap().acked.insert(client_ref, id);
            let _ = acks.send(());
        }
    }
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_message_and_resends_make_no_duplicates() {
    let db_url = fresh_database();
    let (mut server, port) = serve(&db_url);
    let senders: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    let seen: Vec<Arc<Mutex<Seen>>> = senders.iter().map(|_| Arc::default()).collect();
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = senders
        .iter()
        .zip(&seen)
        .map(|(sender, seen)| {
            tokio::spawn(send_until_the_server_dies(
                port,
                sender.clone(),
                seen.clone(),
                acks_tx.clone(),
            ))
        })
        .collect();
    // Under load: wait until a few hundred messages were acknowledged, then kill.
    for _ in 0..400 {
        tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("400 acknowledged within the wait");
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    for task in tasks {
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }

    let (mut server, port) = serve(&db_url);
    let stored = |db_url: String| async move {
        tokio::task::spawn_blocking(move || {
            use diesel::prelude::*;
            use sidechat::store::schema::messages::dsl::*;
            let mut conn = PgConnection::establish(&db_url).unwrap();
            messages
                .select((client_ref.assume_not_null(), id))
                .load::<(String, i64)>(&mut conn)
                .unwrap()
        })
        .await
        .unwrap()
    };
    let after_crash = stored(db_url.clone()).await;
    let mut rows_by_ref: HashMap<String, Vec<i64>> = HashMap::new();
    for (client_ref, id) in &after_crash {
        rows_by_ref.entry(client_ref.clone()).or_default().push(*id);
    }
    for seen in &seen {
        for (client_ref, id) in &seen.lock().unwrap().acked {
            assert_eq!(
                rows_by_ref.get(client_ref),
                Some(&vec![*id]),
                "{client_ref} was acknowledged as {id}"
            );
        }
    }

    // Every client resends what it sent, acknowledged or in doubt, with its client_ref.
    for (sender, seen) in senders.iter().zip(&seen) {
        let (refs, acked): (Vec<String>, HashMap<String, i64>) = {
            let seen = seen.lock().unwrap();
            let mut refs: Vec<String> = seen.acked.keys().cloned().collect();
            refs.extend(seen.in_doubt.iter().cloned());
            (refs, seen.acked.clone())
        };
        let mut client = {
            let (ws, _) = tokio_tungstenite::connect_async(url(port, sender))
                .await
                .unwrap();
            Client::from_socket(ws)
        };
        let topic = format!("chat:{sender}:peer");
        client.join_ok(&topic, json!({"limit": 1})).await;
        for client_ref in refs {
            let reply = client
                .push(
                    &topic,
                    "new_msg",
                    json!({"body": "x", "client_ref": client_ref}),
                )
                .await;
            assert_eq!(reply["status"], "ok", "{reply}");
            if let Some(id) = acked.get(&client_ref) {
                assert_eq!(reply["response"]["message"]["id"], *id, "{client_ref}");
            }
        }
    }
    let after_resend = stored(db_url.clone()).await;
    let distinct: std::collections::HashSet<&String> =
        after_resend.iter().map(|(r, _)| r).collect();
    assert_eq!(
        distinct.len(),
        after_resend.len(),
        "a client_ref was stored twice"
    );
    let sent: usize = seen
        .iter()
        .map(|s| {
            let s = s.lock().unwrap();
            s.acked.len() + s.in_doubt.len()
        })
        .sum();
    assert_eq!(
        after_resend.len(),
        sent,
        "every message sent is stored once"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
