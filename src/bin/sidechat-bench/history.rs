//! `history`: joins with history, lobby summaries and conversation-list pages, against a
//! table filled with many messages over many conversations.
//!
//! Conversation c is `chat:h<c/100>:p<c>`: user h<k> has 100 conversations, each of
//! rows/conversations messages from its peer, all unread; a tenth of all messages carry
//! reactions. Beside them, `LISTERS` users
//! `l<j>` have `LISTED` conversations each (two messages, the peer's unread), for the
//! list's pages.

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
/// Users with a long conversation list, and how long.
const LISTERS: i64 = 10;
const LISTED: i64 = 1_000;

fn prefill(url: &str, rows: i64, conversations: i64, reacted_every: i64) -> anyhow::Result<()> {
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
    // The listers: conversation i of l<j> is chat:l<j>:q<j>x<i>, one message each way,
    // newest last, so every page of the list has fresh and older conversations.
    diesel::sql_query(format!(
        "INSERT INTO messages (topic, sender_id, recipient_id, body, sent_at, is_delivered) \
         SELECT 'chat:l' || j || ':q' || j || 'x' || i, who.sender, who.recipient, \
                'list message ' || i, now() - interval '1 millisecond' * ({LISTED} - i) * 2 \
                    + interval '1 millisecond' * who.n, who.n = 0 \
         FROM generate_series(0, {LISTERS} - 1) AS j, generate_series(0, {LISTED} - 1) AS i, \
              LATERAL (VALUES (0, 'l' || j, 'q' || j || 'x' || i), \
                              (1, 'q' || j || 'x' || i, 'l' || j)) AS who(n, sender, recipient)"
    ))
    .execute(&mut conn)?;
    // One message in `reacted_every` (a tenth by default) carries reactions (two emoji,
    // one with three users), as a lively site's would, with their summaries as
    // `store::reactions` keeps them.
    if reacted_every > 0 {
        diesel::sql_query(format!(
            "INSERT INTO reactions (message_id, emoji, user_id) \
             SELECT id, e.emoji, e.user_id FROM messages \
             CROSS JOIN (VALUES ('👍', 'r1'), ('👍', 'r2'), ('👍', 'r3'), ('🎉', 'r1')) \
                 AS e(emoji, user_id) \
             WHERE id % {reacted_every} = 0"
        ))
        .execute(&mut conn)?;
        diesel::sql_query(
            "UPDATE messages SET reactions = sidechat_reactions_of(id) \
             WHERE id IN (SELECT DISTINCT message_id FROM reactions)",
        )
        .execute(&mut conn)?;
    }
    // The lists, as the migration backfills them (messages went in by SQL, not the writer;
    // the server's minutely heal may have listed the newest meanwhile).
    diesel::sql_query(
        "INSERT INTO conversations (topic, last_message_id, last_message_at) \
         SELECT topic, max(id), max(sent_at) FROM messages GROUP BY topic \
         ON CONFLICT (topic) DO UPDATE SET \
             last_message_id = GREATEST(conversations.last_message_id, EXCLUDED.last_message_id), \
             last_message_at = GREATEST(conversations.last_message_at, EXCLUDED.last_message_at)",
    )
    .execute(&mut conn)?;
    diesel::sql_query(
        "INSERT INTO conversation_members (user_id, topic) \
         SELECT split_part(topic, ':', 2), topic FROM conversations \
         UNION SELECT split_part(topic, ':', 3), topic FROM conversations \
         ON CONFLICT DO NOTHING",
    )
    .execute(&mut conn)?;
    // What autovacuum leaves behind in steady state: statistics and a visibility map.
    diesel::sql_query("VACUUM ANALYZE messages, conversations, conversation_members, reactions")
        .execute(&mut conn)?;
    // Write out what the bulk load dirtied now, not while joins are being timed.
    diesel::sql_query("CHECKPOINT").execute(&mut conn)?;
    Ok(())
}

pub async fn run(
    server: &Server,
    rows: i64,
    conversations: i64,
    samples: usize,
    reacted_every: i64,
) -> anyhow::Result<Value> {
    let url = server.database_url.clone();
    let fill_started = Instant::now();
    tokio::task::spawn_blocking(move || prefill(&url, rows, conversations, reacted_every))
        .await??;
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
    // Before the listers join their lobbies, which would count in the lobby figure.
    let metrics = server_metrics::scrape(&server.address).await?;
    let (mut first_pages, mut later_pages) = list_pages(server, samples).await?;
    let list_metrics = server_metrics::scrape(&server.address).await?;
    let histogram = "sidechat_join_seconds";
    // Which joins were slowest, by their place in the run: a tail made of the first few
    // (connections and plans made on first use) reads differently from one spread out.
    let slowest = |samples: &[std::time::Duration]| {
        let mut ranked: Vec<(usize, f64)> = samples
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .enumerate()
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(12);
        ranked
            .into_iter()
            .map(|(n, ms)| json!({"sample": n, "ms": (ms * 100.0).round() / 100.0}))
            .collect::<Vec<_>>()
    };
    let (slowest_joins, slowest_lobbies) = (slowest(&joins), slowest(&lobbies));
    Ok(json!({
        "scenario": "history",
        "rows": rows,
        "reacted_every": reacted_every,
        "conversations": conversations,
        "prefill_seconds": fill_seconds,
        "note": "round trips are the client's; server figures come from the server's join histogram (arrival to reply written), interpolated within buckets",
        "join_with_50_messages": summarize(&mut joins),
        "lobby_summary_100_conversations": summarize(&mut lobbies),
        "slowest_joins": slowest_joins,
        "slowest_lobbies": slowest_lobbies,
        "server_join_with_50_messages": server_metrics::summary(&metrics, histogram, "kind=\"conversation\""),
        "server_lobby_summary_100_conversations": server_metrics::summary(&metrics, histogram, "kind=\"lobby\""),
        "conversations_first_page_of_1000": summarize(&mut first_pages),
        "conversations_later_page_of_1000": summarize(&mut later_pages),
        "server_conversations_page": server_metrics::summary(&list_metrics, "sidechat_read_seconds", "kind=\"conversations\""),
    }))
}

/// Pages of 50 of a list of `LISTED` conversations on the lobby: the first, and one
/// further in (from the first page's cursor, then on), for sampled listers. Returns the
/// round trips of each.
async fn list_pages(
    server: &Server,
    samples: usize,
) -> anyhow::Result<(Vec<std::time::Duration>, Vec<std::time::Duration>)> {
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for n in 0..samples {
        let user = format!("l{}", n as i64 % LISTERS);
        let mut ws = client::connect(
            &server.address,
            &server.socket_url(&token(&user)?),
            Ipv4Addr::LOCALHOST,
        )
        .await?;
        let lobby = format!("user:{user}");
        client::ok(client::join(&mut ws, &lobby, json!({}), "1").await?)?;
        let started = Instant::now();
        let page = client::ok(
            client::request(
                &mut ws,
                "1",
                "2",
                &lobby,
                "conversations",
                json!({"limit": 50}),
            )
            .await?,
        )?;
        first.push(started.elapsed());
        anyhow::ensure!(
            page["conversations"].as_array().map_or(0, Vec::len) == 50,
            "a short first page for {user}: {page}"
        );
        // Some pages further in: how deep varies with the sample.
        let mut cursor = page["next"].clone();
        for _ in 0..(n % 5) {
            let page = client::ok(
                client::request(
                    &mut ws,
                    "1",
                    "3",
                    &lobby,
                    "conversations",
                    json!({"before": cursor, "limit": 50}),
                )
                .await?,
            )?;
            cursor = page["next"].clone();
        }
        let started = Instant::now();
        let page = client::ok(
            client::request(
                &mut ws,
                "1",
                "4",
                &lobby,
                "conversations",
                json!({"before": cursor, "limit": 50}),
            )
            .await?,
        )?;
        later.push(started.elapsed());
        anyhow::ensure!(
            page["conversations"].as_array().map_or(0, Vec::len) == 50,
            "a short later page for {user}"
        );
    }
    Ok((first, later))
}
