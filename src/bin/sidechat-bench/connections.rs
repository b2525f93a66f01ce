//! `connections`: many users, each joined to its lobby and one chat; what each socket
//! costs the server.

use std::net::Ipv4Addr;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::client;
use crate::server::{Server, token};

/// Sockets per loopback source address: under the ~28k ephemeral ports one has.
const PER_SOURCE: usize = 20_000;

pub async fn run(server: &Server, users: usize, concurrency: usize) -> anyhow::Result<Value> {
    let baseline = server.rss_kib();
    let started = Instant::now();
    let opened = futures_util::stream::iter(0..users)
        .map(|i| async move {
            let source = Ipv4Addr::new(127, 0, 0, 1 + u8::try_from(i / PER_SOURCE).unwrap_or(200));
            let user = format!("c{i}");
            let peer = format!("c{}", i ^ 1);
            let url = server.socket_url(&token(&user)?);
            let mut ws = client::connect(&server.address, &url, source).await?;
            client::ok(client::join(&mut ws, &format!("user:{user}"), json!({}), "1").await?)?;
            client::ok(
                client::join(
                    &mut ws,
                    &format!("chat:{user}:{peer}"),
                    json!({"limit": 1}),
                    "2",
                )
                .await?,
            )?;
            anyhow::Ok(ws)
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    let failures: Vec<String> = opened
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    let held: Vec<client::Ws> = opened.into_iter().filter_map(Result::ok).collect();
    // Let the server settle (presence diffs, buffers) before reading its memory.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = server.rss_kib();
    let per_connection = match (baseline, after) {
        (Some(b), Some(a)) if !held.is_empty() => {
            Some((a.saturating_sub(b)) as f64 / held.len() as f64)
        }
        _ => None,
    };
    let result = json!({
        "scenario": "connections",
        "users": users,
        "connected": held.len(),
        "failures": failures.len(),
        "first_failure": failures.first(),
        "seconds": elapsed.as_secs_f64(),
        "connects_per_second": held.len() as f64 / elapsed.as_secs_f64(),
        "server_rss_baseline_kib": baseline,
        "server_rss_kib": after,
        "server_kib_per_connection": per_connection,
    });
    drop(held);
    Ok(result)
}
