//! `flood`: one member of a room pushes frames as fast as its socket takes them
//! (`typing`, `history` or `phx_join`), while the other members chat at a modest rate.
//! Two phases of equal length, without and with the flood: what the flood costs the
//! server and Postgres, and whether the others notice (their send-to-deliver latency,
//! the typing events of the flooder they receive, disconnects). The server runs with
//! the default budgets; only the 4004 close is off, so the flood lasts the whole phase.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client::{self, Ws};
use crate::fanout::api;
use crate::server::{Server, token};
use crate::stats::summarize;

/// What the flooder's socket saw.
#[derive(Default)]
struct FlooderCounts {
    sent: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    closed: AtomicBool,
}

/// `FlooderCounts` read at one moment.
struct FloodCounts {
    sent: u64,
    ok: u64,
    rate_limited: u64,
    closed: bool,
}

impl From<&FlooderCounts> for FloodCounts {
    fn from(counts: &FlooderCounts) -> FloodCounts {
        FloodCounts {
            sent: counts.sent.load(Ordering::Relaxed),
            ok: counts.ok.load(Ordering::Relaxed),
            rate_limited: counts.rate_limited.load(Ordering::Relaxed),
            closed: counts.closed.load(Ordering::Relaxed),
        }
    }
}

/// The flooder's two tasks.
struct FloodTasks {
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl FloodTasks {
    fn abort(self) {
        self.writer.abort();
        self.reader.abort();
    }
}

/// What the other members saw, across both phases.
#[derive(Default)]
struct MemberCounts {
    typing_from_flooder: AtomicU64,
    disconnected: AtomicU64,
}

pub async fn run(
    server: &Server,
    members: usize,
    rate: u64,
    seconds: u64,
    event: &str,
) -> anyhow::Result<Value> {
    if !["typing", "history", "phx_join"].contains(&event) {
        bail!("--event: typing, history or phx_join");
    }
    let run = format!("{:x}", chrono::Utc::now().timestamp_millis() % 0xffff_ffff);
    let room = format!("flood{run}");
    let topic = format!("room:{room}");
    let flooder = format!("x{run}");
    let ids: Vec<String> = (0..members).map(|i| format!("m{run}-{i}")).collect();
    let mut everyone = ids.clone();
    everyone.push(flooder.clone());
    let status = api(
        server,
        "PUT",
        &format!("/api/v1/rooms/{room}"),
        &json!({"members": everyone}),
    )
    .await?;
    if status != 200 && status != 201 {
        bail!("creating the room answered {status}");
    }

    let epoch = Instant::now();
    let seen = Arc::new(MemberCounts::default());
    // (phase, latency) of every delivery to every member but the sender.
    let (latency_tx, mut latency_rx) = mpsc::unbounded_channel::<(u64, Duration)>();
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for user in &ids {
        let mut ws = client::connect(
            &server.address,
            &server.socket_url(&token(user)?),
            Ipv4Addr::LOCALHOST,
        )
        .await?;
        client::ok(client::join(&mut ws, &topic, json!({"limit": 1}), "1").await?)?;
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let (latencies, seen, me, flooder) = (
            latency_tx.clone(),
            seen.clone(),
            user.clone(),
            flooder.clone(),
        );
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Some(frame) = client::parse(&message) else {
                    continue;
                };
                match frame[3].as_str() {
                    Some("new_msg") if frame[4]["user_id"] != json!(me) => {
                        let meta = &frame[4]["meta"];
                        if let (Some(t), Some(phase)) = (meta["t"].as_u64(), meta["phase"].as_u64())
                        {
                            let now = epoch.elapsed().as_nanos() as u64;
                            let _ = latencies
                                .send((phase, Duration::from_nanos(now.saturating_sub(t))));
                        }
                    }
                    Some("typing") if frame[4]["user_id"] == json!(flooder) => {
                        seen.typing_from_flooder.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            seen.disconnected.fetch_add(1, Ordering::Relaxed);
        }));
    }
    drop(latency_tx);

    // Phase 0: the room chats. Phase 1: the room chats while the flooder floods.
    let mut phases = Vec::new();
    let mut flood_counts = None;
    for phase in 0..2u64 {
        let counts = Arc::new(FlooderCounts::default());
        let flood = if phase == 1 {
            let ws = client::connect(
                &server.address,
                &server.socket_url(&token(&flooder)?),
                Ipv4Addr::LOCALHOST,
            )
            .await?;
            Some(start_flood(ws, topic.clone(), event, counts.clone()).await?)
        } else {
            None
        };
        let typing_before = seen.typing_from_flooder.load(Ordering::Relaxed);
        let (server_0, pg_0) = server.cpu_ms();
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut n = 0usize;
        while started.elapsed() < Duration::from_secs(seconds) {
            ticks.tick().await;
            let t = epoch.elapsed().as_nanos() as u64;
            let Some(sink) = sinks.get_mut(n % members.max(1)) else {
                break;
            };
            let push = client::frame(
                "1",
                &format!("c{phase}-{n}"),
                &topic,
                "new_msg",
                json!({"body": format!("chat {n}"), "meta": {"t": t, "phase": phase}}),
            );
            if sink.send(push).await.is_err() {
                break;
            }
            n += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (server_1, pg_1) = server.cpu_ms();
        // The flooder's counts as the phase ends: its socket holds a backlog still.
        let counted = FloodCounts::from(counts.as_ref());
        if let Some(tasks) = flood {
            tasks.abort();
        }
        let per_second = |a: Option<u64>, b: Option<u64>| {
            a.zip(b).map(|(a, b)| b.saturating_sub(a) as f64 / elapsed)
        };
        let typing = seen.typing_from_flooder.load(Ordering::Relaxed) - typing_before;
        phases.push(json!({
            "chat_messages": n,
            "server_cpu_ms_per_s": per_second(server_0, server_1),
            "postgres_cpu_ms_per_s": per_second(pg_0, pg_1),
            "typing_from_flooder_per_member_per_s": typing as f64 / members.max(1) as f64 / elapsed,
        }));
        if phase == 1 {
            flood_counts = Some((counted, elapsed));
        }
    }
    // Let the last deliveries arrive, then read the latencies per phase.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for reader in readers {
        reader.abort();
    }
    drop(sinks);
    let mut latencies = [Vec::new(), Vec::new()];
    while let Ok((phase, latency)) = latency_rx.try_recv() {
        if let Some(samples) = latencies.get_mut(phase as usize) {
            samples.push(latency);
        }
    }
    for (phase, samples) in phases.iter_mut().zip(latencies.iter_mut()) {
        phase["latency"] = json!(summarize(samples));
    }
    let mut report = json!({
        "scenario": "flood",
        "members": members,
        "event": event,
        "chat_rate": rate,
        "seconds_per_phase": seconds,
        "members_disconnected": seen.disconnected.load(Ordering::Relaxed),
    });
    if let (Some((counts, elapsed)), [calm, flooded]) = (flood_counts, phases.as_slice()) {
        let frames = counts.sent;
        let extra_cpu_ms = flooded["server_cpu_ms_per_s"]
            .as_f64()
            .zip(calm["server_cpu_ms_per_s"].as_f64())
            .map(|(f, c)| (f - c) * elapsed);
        report["calm"] = calm.clone();
        report["flooded"] = flooded.clone();
        report["flooder"] = json!({
            "frames_sent": frames,
            "frames_per_s": frames as f64 / elapsed,
            "answered_ok": counts.ok,
            "rate_limited": counts.rate_limited,
            "closed": counts.closed,
            // Per frame the server answered: the socket may still hold frames sent.
            "server_cpu_us_per_frame": extra_cpu_ms
                .map(|ms| ms * 1000.0 / (counts.ok + counts.rate_limited).max(1) as f64),
        });
    }
    Ok(report)
}

/// Joins the room as the flooder and pushes `event` frames as fast as the socket takes
/// them, counting the replies, until aborted.
async fn start_flood(
    mut ws: Ws,
    topic: String,
    event: &str,
    counts: Arc<FlooderCounts>,
) -> anyhow::Result<FloodTasks> {
    client::ok(client::join(&mut ws, &topic, json!({"limit": 1}), "1").await?)?;
    let (payload, event) = match event {
        "typing" => (json!({"typing": true}), "typing"),
        "history" => (json!({"limit": 500}), "history"),
        _ => (json!({"limit": 500}), "phx_join"),
    };
    let (mut sink, mut stream) = ws.split();
    let replies = counts.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let Some(frame) = client::parse(&message) else {
                continue;
            };
            if frame[3] != "phx_reply" || !frame[1].as_str().is_some_and(|r| r.starts_with('f')) {
                continue;
            }
            if frame[4]["status"] == "ok" {
                replies.ok.fetch_add(1, Ordering::Relaxed);
            } else if frame[4]["response"]["reason"] == "rate_limited" {
                replies.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
        }
        replies.closed.store(true, Ordering::Relaxed);
    });
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            n += 1;
            let push = client::frame("1", &format!("f{n}"), &topic, event, payload.clone());
            if sink.feed(push).await.is_err() {
                break;
            }
            if n.is_multiple_of(64) && sink.flush().await.is_err() {
                break;
            }
            counts.sent.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(FloodTasks { writer, reader })
}
