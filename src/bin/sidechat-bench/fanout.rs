//! `fanout`: one sender, a room of M members on their own sockets; the time from the
//! push to the last member's receipt.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client;
use crate::server::{API_KEY, Server, token};
use crate::stats::summarize;

const PER_SOURCE: usize = 20_000;

/// A host API call, as the host's backend would make it; returns the status.
pub async fn api(server: &Server, method: &str, path: &str, body: &Value) -> anyhow::Result<u16> {
    let headers = format!("Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n");
    let (status, _) =
        client::http(&server.address, method, path, &headers, &body.to_string()).await?;
    Ok(status)
}

/// The payload fields a member looks at; the rest is skipped unparsed.
#[derive(serde::Deserialize)]
struct Payload {
    id: Option<i64>,
}

/// The message id of a `new_msg` frame. Ten thousand members parse every frame on the
/// same two cores as the server, so they read no more of it than they need.
fn new_msg_id(message: &tokio_tungstenite::tungstenite::Message) -> Option<i64> {
    let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
        return None;
    };
    type Frame<'a> = (Option<&'a str>, Option<&'a str>, &'a str, &'a str, Payload);
    let (_, _, _, event, payload) = serde_json::from_str::<Frame<'_>>(text).ok()?;
    if event == "new_msg" { payload.id } else { None }
}

pub async fn run(
    server: &Server,
    members: usize,
    messages: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let ids: Vec<String> = (0..members).map(|i| format!("f{i}")).collect();
    let mut everyone = ids.clone();
    everyone.push("fsender".into());
    let status = api(
        server,
        "PUT",
        "/api/v1/rooms/fanout",
        &json!({"name": "fanout", "members": everyone}),
    )
    .await?;
    if status != 200 && status != 201 {
        bail!("creating the room answered {status}");
    }
    let topic = "room:fanout";
    let (receipt_tx, mut receipt_rx) = mpsc::unbounded_channel::<(i64, Instant)>();
    let joined = futures_util::stream::iter(ids.iter().enumerate())
        .map(|(i, user)| {
            let receipts = receipt_tx.clone();
            async move {
                let source =
                    Ipv4Addr::new(127, 0, 0, 1 + u8::try_from(i / PER_SOURCE).unwrap_or(200));
                let mut ws =
                    client::connect(&server.address, &server.socket_url(&token(user)?), source)
                        .await?;
                client::ok(client::join(&mut ws, topic, json!({"limit": 1}), "1").await?)?;
                Ok::<_, anyhow::Error>(tokio::spawn(async move {
                    while let Some(Ok(message)) = ws.next().await {
                        if let Some(id) = new_msg_id(&message) {
                            let _ = receipts.send((id, Instant::now()));
                        }
                    }
                }))
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    drop(receipt_tx);
    let tasks: Vec<_> = joined.into_iter().collect::<Result<_, _>>()?;

    let mut sender = client::connect(
        &server.address,
        &server.socket_url(&token("fsender")?),
        Ipv4Addr::LOCALHOST,
    )
    .await?;
    client::ok(client::join(&mut sender, topic, json!({"limit": 1}), "1").await?)?;
    let mut samples = Vec::new();
    for n in 0..messages {
        let started = Instant::now();
        let msg_ref = format!("m{n}");
        sender
            .send(client::frame(
                "1",
                &msg_ref,
                topic,
                "new_msg",
                json!({"body": format!("fanout {n}")}),
            ))
            .await?;
        let reply = client::ok(client::reply_to(&mut sender, &msg_ref).await?)?;
        let id = reply["message"]["id"].as_i64().context("a message id")?;
        let mut received = 0;
        let mut last = started;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while received < members {
            let (got, at) = tokio::time::timeout_at(deadline, receipt_rx.recv())
                .await
                .context("members still waiting after 60 s")?
                .context("member sockets closed")?;
            if got == id {
                received += 1;
                last = last.max(at);
            }
        }
        samples.push(last - started);
    }
    for task in tasks {
        task.abort();
    }
    Ok(json!({
        "scenario": "fanout",
        "members": members,
        "messages": messages,
        "push_to_last_receipt": summarize(&mut samples),
    }))
}
