//! `soak`: users come and go for a while (connect, join their lobby, a chat and a room,
//! send, read, type, leave, disconnect) while the server's memory, descriptors and
//! gauges are sampled. Afterwards everything per-connection must be gone, descriptors
//! back near the baseline, and memory flat after warm-up; otherwise the run fails.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::server::{Server, token};
use crate::server_metrics::{gauge, scrape};
use crate::{client, fanout, procfs};

/// One user's visit: everything a browser tab does, then the tab closes.
async fn visit(address: &str, user: &str, peer: &str, messages: &AtomicU64) -> anyhow::Result<()> {
    let url = client::socket_url(address, &token(user)?);
    let mut ws = client::connect(address, &url, Ipv4Addr::LOCALHOST).await?;
    client::ok(client::join(&mut ws, &format!("user:{user}"), json!({}), "1").await?)?;
    let chat = format!("chat:{user}:{peer}");
    client::ok(client::join(&mut ws, &chat, json!({"limit": 20}), "2").await?)?;
    client::ok(client::join(&mut ws, "room:soak", json!({"limit": 5}), "3").await?)?;
    let mut last = 0;
    for n in 0..3 {
        let body = json!({"body": format!("soak {n}")});
        let reply = client::ok(
            client::request(&mut ws, "2", &format!("m{n}"), &chat, "new_msg", body).await?,
        )?;
        last = reply["message"]["id"].as_i64().context("a message id")?;
        messages.fetch_add(1, Ordering::Relaxed);
    }
    let hello = json!({"body": "hello room"});
    client::ok(client::request(&mut ws, "3", "r", "room:soak", "new_msg", hello).await?)?;
    client::ok(
        client::request(&mut ws, "2", "t", &chat, "typing", json!({"typing": true})).await?,
    )?;
    // The peer's receipt is theirs to send; reading our own last message is refused
    // politely or marks nothing, either way a round trip through the receipt path.
    client::request(
        &mut ws,
        "2",
        "rd",
        &chat,
        "read",
        json!({"message_id": last}),
    )
    .await?;
    client::request(&mut ws, "2", "l", &chat, "phx_leave", json!({})).await?;
    ws.close(None).await?;
    Ok(())
}

struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: u64,
    connections: f64,
}

pub async fn run(server: &Server, seconds: u64, users: usize) -> anyhow::Result<Value> {
    let pid = server
        .pid()
        .context("soak needs the server's pid (--server-pid)")?;
    let members: Vec<String> = (0..users).map(|i| format!("k{i}")).collect();
    let status = fanout::api(
        server,
        "PUT",
        "/api/v1/rooms/soak",
        &json!({"members": members}),
    )
    .await?;
    if status != 200 && status != 201 {
        bail!("creating the room answered {status}");
    }
    let baseline_fds = procfs::open_fds(pid);
    let baseline_rss = procfs::rss_kib(pid);
    // The service's own listeners (block changes) hold hub topics with nobody connected.
    let own_topics = gauge(&scrape(&server.address).await?, "sidechat_hub_topics").unwrap_or(0.0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let messages = Arc::new(AtomicU64::new(0));
    let visits = Arc::new(AtomicU64::new(0));
    let address = Arc::new(server.address.clone());
    let mut workers = Vec::new();
    for i in 0..users {
        let (address, messages, visits) = (address.clone(), messages.clone(), visits.clone());
        workers.push(tokio::spawn(async move {
            let (user, peer) = (format!("k{i}"), format!("k{}", (i + 1) % users.max(2)));
            while Instant::now() < deadline {
                visit(&address, &user, &peer, &messages).await?;
                visits.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs((seconds / 24).clamp(1, 60)));
    while Instant::now() < deadline {
        tick.tick().await;
        let metrics = scrape(&server.address).await?;
        samples.push(Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_kib: procfs::rss_kib(pid),
            fds: procfs::open_fds(pid),
            connections: gauge(&metrics, "sidechat_connections").unwrap_or(-1.0),
        });
    }
    for worker in workers {
        worker.await??;
    }

    // Everyone has left: what each connection held must be released, promptly.
    let settled_by = Instant::now() + Duration::from_secs(10);
    let (connections, channels, topics) = loop {
        let metrics = scrape(&server.address).await?;
        let read = |name| gauge(&metrics, name).unwrap_or(-1.0);
        let now = (
            read("sidechat_connections"),
            read("sidechat_channels"),
            read("sidechat_hub_topics"),
        );
        if now == (0.0, 0.0, own_topics) || Instant::now() > settled_by {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let final_fds = procfs::open_fds(pid);
    let final_rss = procfs::rss_kib(pid);

    // Memory after warm-up (the second quarter of the run) against the last quarter.
    let quarter = samples.len() / 4;
    let mean =
        |s: &[Sample]| s.iter().map(|x| x.rss_kib as f64).sum::<f64>() / s.len().max(1) as f64;
    let warm = mean(samples.get(quarter..2 * quarter).unwrap_or(&[]));
    let late = mean(samples.get(samples.len() - quarter..).unwrap_or(&[]));
    let growth = if warm > 0.0 { late / warm - 1.0 } else { 0.0 };

    let mut problems = Vec::new();
    if (connections, channels, topics) != (0.0, 0.0, own_topics) {
        problems.push(format!(
            "left behind: {connections} connections, {channels} channels, {} hub topics",
            topics - own_topics
        ));
    }
    // Database connections (the read pool grows to its size) may stay open.
    if final_fds > baseline_fds + 10 {
        problems.push(format!("descriptors {baseline_fds} -> {final_fds}"));
    }
    if quarter > 0 && growth > 0.10 {
        problems.push(format!("memory grew {:.0}% after warm-up", growth * 100.0));
    }
    let result = json!({
        "scenario": "soak",
        "seconds": seconds,
        "users": users,
        "visits": visits.load(Ordering::Relaxed),
        "messages": messages.load(Ordering::Relaxed),
        "rss_kib": {"baseline": baseline_rss, "after_warmup_mean": warm, "last_quarter_mean": late, "final": final_rss},
        "rss_growth_after_warmup": growth,
        "fds": {"baseline": baseline_fds, "final": final_fds},
        "after": {"connections": connections, "channels": channels, "hub_topics": topics},
        "samples": samples.iter().map(|s| json!([s.at_s.round(), s.rss_kib, s.fds, s.connections])).collect::<Vec<_>>(),
        "problems": problems,
    });
    if !problems.is_empty() {
        bail!("soak found leaks: {}", result);
    }
    Ok(result)
}
