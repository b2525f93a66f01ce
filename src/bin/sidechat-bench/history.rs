//! `history`: joins with history, and lobby summaries, against a table filled with many
//! messages over many conversations.
//!
//! Conversation c is `chat:h<c/100>:p<c>`: user h<k> has 100 conversations, each of
//! rows/conversations messages from its peer, all unread.

use std::net::Ipv4Addr;
use std::time::Instant;

use diesel::prelude::*;
use serde_json::{Value, json};

use crate::client;
use crate::server::{Server, token};
use crate::server_metrics;
use crate::stats::summarize;

/// Rows per INSERT ... SELECT: keeps each transaction (and its WAL) moderate.
const CHUNK: i64 = 1_000_000;

fn prefill(url: &str, rows: i64, conversations: i64) -> anyhow::Result<()> {
    let mut conn = PgConnection::establish(url)?;
    let mut start = 0;
    while start < rows {
        let end = (start + CHUNK).min(rows);
        diesel::sql_query(format!(
            "INSERT INTO messages (topic, sender_id, recipient_id, body, sent_at) \
             SELECT 'chat:h' || ((g % {conversations}) / 100) || ':p' || (g % {conversations}), \
                    'p' || (g % {conversations}), 'h' || ((g % {conversations}) / 100), \
                    'history message ' || g, now() - interval '1 second' * ({rows} - g) \
             FROM generate_series({start}, {end} - 1) AS g"
        ))
        .execute(&mut conn)?;
        eprintln!("prefilled {end} of {rows} rows");
        start = end;
    }
    // What autovacuum leaves behind in steady state: statistics and a visibility map.
    diesel::sql_query("VACUUM ANALYZE messages").execute(&mut conn)?;
    // Write out what the bulk load dirtied now, not while joins are being timed.
    diesel::sql_query("CHECKPOINT").execute(&mut conn)?;
    Ok(())
}

pub async fn run(
    server: &Server,
    rows: i64,
    conversations: i64,
    samples: usize,
) -> anyhow::Result<Value> {
    let url = server.database_url.clone();
    let fill_started = Instant::now();
    tokio::task::spawn_blocking(move || prefill(&url, rows, conversations)).await??;
    let fill_seconds = fill_started.elapsed().as_secs_f64();

    let users = (conversations / 100).max(1);
    let mut joins = Vec::new();
    let mut lobbies = Vec::new();
    for n in 0..samples {
        // Spread over users and conversations: a cold-ish cache, as in production.
        let k = (n as i64 * 7919) % users;
        let c = k * 100 + (n as i64 % 100);
        let user = format!("h{k}");
        let mut ws = client::connect(
            &server.address,
            &server.socket_url(&token(&user)?),
            Ipv4Addr::LOCALHOST,
        )
        .await?;
        let started = Instant::now();
        let history = client::ok(
            client::join(
                &mut ws,
                &format!("chat:{user}:p{c}"),
                json!({"limit": 50}),
                "1",
            )
            .await?,
        )?;
        joins.push(started.elapsed());
        anyhow::ensure!(
            history["messages"].as_array().map_or(0, Vec::len) > 0,
            "empty history for {user}/p{c}"
        );
        let started = Instant::now();
        let lobby =
            client::ok(client::join(&mut ws, &format!("user:{user}"), json!({}), "2").await?)?;
        lobbies.push(started.elapsed());
        anyhow::ensure!(
            lobby["unread"].as_array().map_or(0, Vec::len) > 0,
            "empty lobby for {user}"
        );
    }
    let metrics = server_metrics::scrape(&server.address).await?;
    let histogram = "sidechat_join_seconds";
    Ok(json!({
        "scenario": "history",
        "rows": rows,
        "conversations": conversations,
        "prefill_seconds": fill_seconds,
        "note": "round trips are the client's; server figures come from the server's join histogram (arrival to reply written), interpolated within buckets",
        "join_with_50_messages": summarize(&mut joins),
        "lobby_summary_100_conversations": summarize(&mut lobbies),
        "server_join_with_50_messages": server_metrics::summary(&metrics, histogram, "kind=\"conversation\""),
        "server_lobby_summary_100_conversations": server_metrics::summary(&metrics, histogram, "kind=\"lobby\""),
    }))
}
