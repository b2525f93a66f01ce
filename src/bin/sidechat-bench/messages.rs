//! `messages`: pairs exchanging messages at a total rate for a while, recipients sending
//! `read`; send-to-deliver latency, cost per message, and afterwards a check that every
//! acknowledged message is in Postgres exactly once.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client;
use crate::server::{Server, token};
use crate::stats::summarize;

pub async fn run(
    server: &Server,
    pairs: usize,
    rate: u64,
    seconds: u64,
    send_reads: bool,
    warmup: u64,
) -> anyhow::Result<Value> {
    // Latency counts only after the warm-up: prepared statements, caches and buffers
    // are cold at first and would measure the start, not the steady state.
    let warm_from = Duration::from_secs(warmup).as_nanos() as u64;
    let epoch = Instant::now();
    // Users unique to this run, so a server that already ran the bench sees new ones.
    let run = format!("{:x}", chrono::Utc::now().timestamp_millis() % 0xffff_ffff);
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (latency_tx, mut latency_rx) = mpsc::unbounded_channel::<Duration>();
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for pair in 0..pairs {
        let (from, to) = (format!("s{run}-{pair}"), format!("r{run}-{pair}"));
        let topic = format!("chat:{from}:{to}");
        let mut sender = client::connect(
            &server.address,
            &server.socket_url(&token(&from)?),
            Ipv4Addr::LOCALHOST,
        )
        .await?;
        let mut receiver = client::connect(
            &server.address,
            &server.socket_url(&token(&to)?),
            Ipv4Addr::LOCALHOST,
        )
        .await?;
        client::ok(client::join(&mut sender, &topic, json!({"limit": 1}), "1").await?)?;
        client::ok(client::join(&mut receiver, &topic, json!({"limit": 1}), "1").await?)?;

        // The recipient: measures each delivery and reports it read.
        let (mut r_tx, mut r_rx) = receiver.split();
        let latencies = latency_tx.clone();
        let read_topic = topic.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while let Some(Ok(message)) = r_rx.next().await {
                let Some(frame) = client::parse(&message) else {
                    continue;
                };
                if frame[3] != "new_msg" || frame[4]["user_id"] == json!(to) {
                    continue;
                }
                if let Some(sent_at) = frame[4]["meta"]["t"].as_u64()
                    && sent_at >= warm_from
                {
                    let now = epoch.elapsed().as_nanos() as u64;
                    let _ = latencies.send(Duration::from_nanos(now.saturating_sub(sent_at)));
                }
                if !send_reads {
                    continue;
                }
                reads += 1;
                let read = client::frame(
                    "1",
                    &format!("r{reads}"),
                    &read_topic,
                    "read",
                    json!({"message_id": frame[4]["id"]}),
                );
                if r_tx.send(read).await.is_err() {
                    break;
                }
            }
        }));

        // The sender: a steady share of the total rate; acks counted on its reader.
        let (mut s_tx, mut s_rx) = sender.split();
        let acks = acked.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = s_rx.next().await {
                if let Some(frame) = client::parse(&message)
                    && frame[3] == "phx_reply"
                    && frame[4]["status"] == "ok"
                    && frame[1].as_str().is_some_and(|r| r.starts_with('m'))
                {
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        let per_pair = (rate as f64 / pairs as f64).max(0.001);
        let count = sent.clone();
        senders.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_pair));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let stop = Instant::now() + Duration::from_secs(warmup + seconds);
            let mut seq = 0u64;
            while Instant::now() < stop {
                ticks.tick().await;
                seq += 1;
                let t = epoch.elapsed().as_nanos() as u64;
                let push = client::frame("1", &format!("m{seq}"), &topic, "new_msg",
                    json!({"body": format!("bench message {seq}"), "client_ref": format!("{pair}-{seq}"), "meta": {"t": t}}));
                if s_tx.send(push).await.is_err() {
                    break;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            s_tx
        }));
    }
    drop(latency_tx);

    let (cpu_server_0, cpu_pg_0) = server.cpu_ms();
    let started = Instant::now();
    let mut writers = Vec::new();
    for sender in senders {
        writers.push(sender.await?);
    }
    let sending = started.elapsed();
    // Wait for the acks to catch up with what was sent (bounded).
    let total_sent = sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < total_sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Sustained means acknowledged: the rate counts until the last ack, not the last send.
    let until_acked = started.elapsed();
    let (cpu_server_1, cpu_pg_1) = server.cpu_ms();
    drop(writers);
    for reader in readers {
        reader.abort();
    }
    let mut latencies = Vec::new();
    while let Ok(l) = latency_rx.try_recv() {
        latencies.push(l);
    }
    let acked = acked.load(Ordering::Relaxed);

    // Every acknowledged message is stored, once.
    let url = server.database_url.clone();
    let senders_like = format!("s{run}-%");
    let (rows, distinct): (i64, i64) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(i64, i64)> {
            let mut conn = PgConnection::establish(&url)?;
            #[derive(QueryableByName)]
            struct Counts {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                rows: i64,
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                distinct_refs: i64,
            }
            let c: Counts = diesel::sql_query(
                "SELECT count(*) AS rows, count(DISTINCT (sender_id, client_ref)) AS distinct_refs \
             FROM messages WHERE sender_id LIKE $1",
            )
            .bind::<diesel::sql_types::Text, _>(senders_like)
            .get_result(&mut conn)?;
            Ok((c.rows, c.distinct_refs))
        })
        .await??;

    let per_thousand = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if acked > 0 => {
            Some((b.saturating_sub(a)) as f64 * 1000.0 / acked as f64)
        }
        _ => None,
    };
    Ok(json!({
        "scenario": "messages",
        "pairs": pairs,
        "target_rate": rate,
        "warmup_seconds": warmup,
        "recipients_send_read": send_reads,
        "sent": total_sent,
        "acked": acked,
        "send_seconds": sending.as_secs_f64(),
        "achieved_rate": acked as f64 / until_acked.as_secs_f64(),
        "latency": summarize(&mut latencies),
        "server_cpu_ms_per_1000": per_thousand(cpu_server_0, cpu_server_1),
        "postgres_cpu_ms_per_1000": per_thousand(cpu_pg_0, cpu_pg_1),
        "stored_rows": rows,
        "stored_exactly_once": rows == distinct && rows as u64 >= acked,
    }))
}
