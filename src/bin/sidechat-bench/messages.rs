//! `messages`: a site's shape of traffic. Every user has one socket, joined to their lobby
//! and one one-to-one chat; the pairs take turns at the total rate (each pair a message
//! every few seconds at a thousand users and a thousand messages a second), alternating
//! who writes, and every recipient sends `read` for each message. Reports send-to-deliver
//! latency, read-to-reply latency, what each message costs the server and Postgres (with
//! Postgres's split between planning and execution), and afterwards checks that every
//! acknowledged message was delivered and is in Postgres exactly once, and that every
//! read was answered. `--ramp` finds the highest rate held. Over several replicas (`--replicas`), the two users of a chat connect to
//! different ones, so every message and receipt crosses the broker; the report adds the
//! broker's publishes per message and its CPU.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client;
use crate::server::{Server, token};
use crate::stats::summarize;

/// Sockets set up at once.
const CONNECT_CONCURRENCY: usize = 100;
/// A ramp step holds with a p99 at most this.
const HOLD_P99_MS: f64 = 100.0;
/// Bisection stops when the bracket is this close (a fraction of the rate held).
const RAMP_PRECISION: f64 = 0.1;
/// How long the acks, deliveries and read replies of a step may trail its last send.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long a ramp waits, before its next run, for the reads of a failed one to be
/// answered: a run measured while the last one's backlog drains measures the backlog.
const SETTLE: Duration = Duration::from_secs(300);

pub struct Options {
    pub users: usize,
    pub rate: u64,
    pub seconds: u64,
    pub send_reads: bool,
    pub warmup: u64,
    pub ramp: bool,
    /// Seconds of each run of a ramp step.
    pub step_seconds: u64,
    /// Runs of each ramp step: it holds when the median run's p99 does and every run
    /// delivered and stored everything.
    pub tries: usize,
    /// Old messages stored before the run, for retention to delete during it.
    pub backlog: i64,
}

/// Stores `rows` messages sent 400 days ago over a thousand conversations, with their
/// list entries, in one transaction: retention finds the whole backlog at once.
fn store_backlog(url: &str, rows: i64) -> anyhow::Result<()> {
    let mut conn = PgConnection::establish(url)?;
    conn.transaction(|conn| {
        diesel::sql_query(format!(
            "INSERT INTO messages (topic, sender_id, recipient_id, body, sent_at) \
             SELECT 'chat:old' || (g % 1000) || ':gone' || (g % 1000), 'old' || (g % 1000), \
                    'gone' || (g % 1000), 'old message ' || g, \
                    now() - interval '400 days' + interval '1 millisecond' * g \
             FROM generate_series(1, {rows}) AS g"
        ))
        .execute(conn)?;
        diesel::sql_query(
            "INSERT INTO conversations (topic, last_message_id, last_message_at) \
             SELECT topic, max(id), max(sent_at) FROM messages \
             WHERE topic LIKE 'chat:old%' GROUP BY topic",
        )
        .execute(conn)?;
        diesel::QueryResult::Ok(())
    })?;
    diesel::sql_query("VACUUM ANALYZE messages, conversations").execute(&mut conn)?;
    Ok(())
}

/// Messages retention has deleted so far.
async fn retention_deleted(server: &Server) -> anyhow::Result<f64> {
    let text = crate::server_metrics::scrape(&server.address).await?;
    Ok(crate::server_metrics::gauge(&text, "sidechat_retention_deleted_total").unwrap_or(0.0))
}

/// Counters every socket task adds to.
#[derive(Default)]
struct Counters {
    /// Messages sent, over all steps.
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    reads_sent: AtomicU64,
    reads_answered: AtomicU64,
    reads_failed: AtomicU64,
}

impl Counters {
    /// Reads sent and not yet answered, over all steps.
    fn reads_outstanding(&self) -> u64 {
        let answered =
            self.reads_answered.load(Ordering::Relaxed) + self.reads_failed.load(Ordering::Relaxed);
        self.reads_sent
            .load(Ordering::Relaxed)
            .saturating_sub(answered)
    }
}

/// The users' sockets, connected and joined.
struct Site {
    run: String,
    pairs: Vec<Pair>,
    counters: Arc<Counters>,
    /// (step, latency) of each delivery.
    latencies: mpsc::UnboundedReceiver<(u64, Duration)>,
    /// (step, latency) of each read's reply, the step being its message's.
    read_latencies: mpsc::UnboundedReceiver<(u64, Duration)>,
    epoch: Instant,
}

struct Pair {
    topic: String,
    /// What each of the two users' sockets sends.
    outboxes: [mpsc::UnboundedSender<Message>; 2],
}

pub async fn run(server: &Server, options: Options) -> anyhow::Result<Value> {
    let pairs = (options.users / 2).max(1);
    if options.backlog > 0 {
        let (url, rows) = (server.database_url.clone(), options.backlog);
        let started = Instant::now();
        tokio::task::spawn_blocking(move || store_backlog(&url, rows)).await??;
        eprintln!(
            "backlog: {rows} old messages stored in {:?}",
            started.elapsed()
        );
    }
    let mut site = Site::connect(server, pairs, options.send_reads).await?;
    if options.ramp {
        return ramp(server, &mut site, &options).await;
    }
    let warmup = site
        .step(server, 0, options.rate, options.warmup, false)
        .await?;
    let deleted_before = retention_deleted(server).await?;
    let step = site
        .step(server, 1, options.rate, options.seconds, true)
        .await?;
    let deleted_during = retention_deleted(server).await? - deleted_before;
    let mut report = json!({
        "scenario": "messages",
        "users": pairs * 2,
        "pairs": pairs,
        "replicas": server.addresses.len(),
        "target_rate": options.rate,
        "warmup_seconds": options.warmup,
        "recipients_send_read": options.send_reads,
    });
    merge(&mut report, step);
    report["warmup_acked"] = warmup["acked"].clone();
    if options.backlog > 0 {
        report["backlog"] = json!(options.backlog);
        report["retention_deleted_while_measured"] = json!(deleted_during);
    }
    Ok(report)
}

/// Doubling steps from `options.rate` until one fails, then bisection between the last
/// that held and the first that failed.
async fn ramp(server: &Server, site: &mut Site, options: &Options) -> anyhow::Result<Value> {
    site.step(server, 0, options.rate, options.warmup, false)
        .await?;
    let tries = options.tries;
    let mut steps = Vec::new();
    let (mut held, mut failed) = (0u64, None::<u64>);
    let mut rate = options.rate.max(1);
    let mut n = 0;
    loop {
        let mut runs = Vec::with_capacity(tries);
        for _ in 0..tries {
            let settled = site.settle().await;
            n += 1;
            let mut run = site
                .step(server, n, rate, options.step_seconds, true)
                .await?;
            run["settled_seconds"] = json!(settled.as_secs_f64());
            runs.push(run);
        }
        let (holds, p99s) = step_holds(&runs);
        eprintln!(
            "ramp: {rate} msg/s {} (p99 {p99s:?} ms)",
            if holds { "held" } else { "failed" },
        );
        steps.push(json!({"rate": rate, "holds": holds, "p99_ms": p99s, "runs": runs}));
        if holds {
            held = held.max(rate);
        } else {
            failed = Some(failed.map_or(rate, |f| f.min(rate)));
        }
        rate = match failed {
            None => rate * 2,
            Some(failed) if (failed - held) as f64 > RAMP_PRECISION * held.max(1) as f64 => {
                held + (failed - held) / 2
            }
            Some(_) => break,
        };
        if rate == held {
            break; // a bracket of one message a second
        }
    }
    Ok(json!({
        "scenario": "messages-ramp",
        "users": site.pairs.len() * 2,
        "replicas": server.addresses.len(),
        "step_seconds": options.step_seconds,
        "runs_per_step": tries,
        "holds_when": format!(
            "the median run's p99 of delivery and of read replies <= {HOLD_P99_MS} ms, and in \
             every run every ack delivered and stored once and every read answered"
        ),
        "highest_held": held,
        "first_failed": failed,
        "steps": steps,
    }))
}

/// Whether a step's runs hold it, and their p99s in order. One run's p99 at the edge
/// swings by a factor of several (a checkpoint, a scheduling hiccup), so the step is
/// judged by the median run; losing or duplicating a message in any run fails it.
fn step_holds(runs: &[Value]) -> (bool, Vec<f64>) {
    let p99 = |latency: &Value| latency["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
    // A run's p99 is the worse of its deliveries' and its reads' replies'.
    let p99s: Vec<f64> = runs
        .iter()
        .map(|run| p99(&run["latency"]).max(p99(&run["reads"]["latency"])))
        .collect();
    let intact = runs.iter().all(|run| run["intact"] == true);
    let mut sorted = p99s.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted
        .get(sorted.len() / 2)
        .copied()
        .unwrap_or(f64::INFINITY);
    (intact && median <= HOLD_P99_MS, p99s)
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

impl Site {
    async fn connect(server: &Server, pairs: usize, send_reads: bool) -> anyhow::Result<Site> {
        // Users unique to this run, so a server that already ran the bench sees new ones.
        let run = format!("{:x}", chrono::Utc::now().timestamp_millis() % 0xffff_ffff);
        let counters = Arc::new(Counters::default());
        let (latency_tx, latencies) = mpsc::unbounded_channel();
        let (read_latency_tx, read_latencies) = mpsc::unbounded_channel();
        let epoch = Instant::now();
        let users: Vec<(usize, usize)> = (0..pairs).flat_map(|p| [(p, 0), (p, 1)]).collect();
        let connected = futures_util::stream::iter(users)
            .map(|(pair, side)| {
                let (counters, run) = (counters.clone(), &run);
                let latency_tx = [latency_tx.clone(), read_latency_tx.clone()];
                async move {
                    let (me, peer) = (user(run, pair, side), user(run, pair, 1 - side));
                    let topic = chat_topic(run, pair);
                    let source =
                        Ipv4Addr::new(127, 0, 0, 1 + u8::try_from(pair / 10_000).unwrap_or(0));
                    // With several replicas the two sides of a chat sit on different ones.
                    let address = &server.addresses[(pair + side) % server.addresses.len()];
                    let url = client::socket_url(address, &token(&me)?);
                    let mut ws = client::connect(address, &url, source).await?;
                    client::ok(
                        client::join(&mut ws, &format!("user:{me}"), json!({}), "1").await?,
                    )?;
                    client::ok(client::join(&mut ws, &topic, json!({"limit": 1}), "2").await?)?;
                    let outbox =
                        spawn_socket(ws, topic, peer, send_reads, counters, latency_tx, epoch);
                    Ok::<_, anyhow::Error>((pair, side, outbox))
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut sides: Vec<[Option<mpsc::UnboundedSender<Message>>; 2]> =
            (0..pairs).map(|_| [None, None]).collect();
        for result in connected {
            let (pair, side, outbox) = result?;
            if let Some(slot) = sides.get_mut(pair).and_then(|s| s.get_mut(side)) {
                *slot = Some(outbox);
            }
        }
        let pairs = sides
            .into_iter()
            .enumerate()
            .map(|(n, [a, b])| {
                Ok(Pair {
                    topic: chat_topic(&run, n),
                    outboxes: [a.context("a socket")?, b.context("a socket")?],
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Site {
            run,
            pairs,
            counters,
            latencies,
            read_latencies,
            epoch,
        })
    }

    /// Waits (at most `SETTLE`) until every message sent so far is delivered and every
    /// read has its reply, so that a step counts only its own; returns how long.
    async fn settle(&self) -> Duration {
        let started = Instant::now();
        let delivering = || {
            self.counters.delivered.load(Ordering::Relaxed)
                < self.counters.sent.load(Ordering::Relaxed)
        };
        while (delivering() || self.counters.reads_outstanding() > 0) && started.elapsed() < SETTLE
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }

    /// Sends at `rate` for `seconds` as step `n`; with `measure`, reports what it cost
    /// and whether it held.
    async fn step(
        &mut self,
        server: &Server,
        n: u64,
        rate: u64,
        seconds: u64,
        measure: bool,
    ) -> anyhow::Result<Value> {
        let acked_0 = self.counters.acked.load(Ordering::Relaxed);
        let delivered_0 = self.counters.delivered.load(Ordering::Relaxed);
        let reads_0 = (
            self.counters.reads_sent.load(Ordering::Relaxed),
            self.counters.reads_answered.load(Ordering::Relaxed),
            self.counters.reads_failed.load(Ordering::Relaxed),
        );
        if measure {
            reset_statements(&server.database_url).await;
        }
        let publishes_0 = server.broker_publishes()?;
        let broker_0 = server.broker_cpu_ms();
        let (server_0, pg_0) = server.cpu_ms();
        let generator_0 = crate::procfs::cpu_ms(std::process::id());
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let pairs = self.pairs.len() as u64;
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            ticks.tick().await;
            // Round robin over the pairs; each visit to a pair the other one writes.
            let pair = self.pairs.get((sent % pairs) as usize).context("a pair")?;
            let side = ((sent / pairs) % 2) as usize;
            let t = self.epoch.elapsed().as_nanos() as u64;
            let push = client::frame(
                "2",
                &format!("m{n}.{sent}"),
                &pair.topic,
                "new_msg",
                json!({"body": format!("bench message {sent}"), "client_ref": format!("{n}.{sent}"), "meta": {"t": t, "s": n}}),
            );
            if let Some(outbox) = pair.outboxes.get(side) {
                let _ = outbox.send(push);
            }
            sent += 1;
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        let sending = started.elapsed();
        // Sustained means acknowledged, delivered and read: wait for all three to catch
        // up (bounded).
        let deadline = Instant::now() + CATCH_UP;
        let caught_up =
            |counter: &AtomicU64, from: u64| counter.load(Ordering::Relaxed) - from >= sent;
        while !(caught_up(&self.counters.acked, acked_0)
            && caught_up(&self.counters.delivered, delivered_0)
            && self.counters.reads_outstanding() == 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let until_done = started.elapsed();
        let (server_1, pg_1) = server.cpu_ms();
        let generator_1 = crate::procfs::cpu_ms(std::process::id());
        let broker_1 = server.broker_cpu_ms();
        let publishes_1 = server.broker_publishes()?;
        let acked = self.counters.acked.load(Ordering::Relaxed) - acked_0;
        let delivered = self.counters.delivered.load(Ordering::Relaxed) - delivered_0;
        let of_this_step = |rx: &mut mpsc::UnboundedReceiver<(u64, Duration)>| {
            let mut latencies = Vec::new();
            while let Ok((step, latency)) = rx.try_recv() {
                if step == n {
                    latencies.push(latency);
                }
            }
            latencies
        };
        let mut latencies = of_this_step(&mut self.latencies);
        let mut read_latencies = of_this_step(&mut self.read_latencies);
        let reads_sent = self.counters.reads_sent.load(Ordering::Relaxed) - reads_0.0;
        let reads_answered = self.counters.reads_answered.load(Ordering::Relaxed) - reads_0.1;
        let reads_failed = self.counters.reads_failed.load(Ordering::Relaxed) - reads_0.2;
        let reads_outstanding = self.counters.reads_outstanding();
        if !measure {
            return Ok(json!({"acked": acked}));
        }
        let statements = statements(&server.database_url).await;
        let (rows, distinct) = stored(&server.database_url, &self.run).await?;
        let latency = summarize(&mut latencies);
        let read_latency = summarize(&mut read_latencies);
        let per_thousand = |a: Option<u64>, b: Option<u64>| {
            a.zip(b)
                .filter(|_| acked > 0)
                .map(|(a, b)| b.saturating_sub(a) as f64 * 1000.0 / acked as f64)
        };
        // Every message of this run so far, acknowledged or not, is at most one row.
        let stored_exactly_once = rows == distinct;
        let all_delivered = delivered >= acked && acked == sent;
        let all_read = reads_failed == 0 && reads_outstanding == 0;
        let intact = all_delivered && all_read && stored_exactly_once;
        Ok(json!({
            "rate": rate,
            "sent": sent,
            "acked": acked,
            "delivered": delivered,
            "send_seconds": sending.as_secs_f64(),
            "achieved_rate": acked as f64 / until_done.as_secs_f64(),
            "latency": latency,
            "server_cpu_ms_per_1000": per_thousand(server_0, server_1),
            "postgres_cpu_ms_per_1000": per_thousand(pg_0, pg_1),
            // This program, on the same cores: what the server could not have.
            "generator_cpu_ms_per_1000": per_thousand(Some(generator_0), Some(generator_1)),
            "broker_cpu_ms_per_1000": per_thousand(broker_0, broker_1),
            "broker_publishes_per_message": publishes_0.zip(publishes_1)
                .filter(|_| acked > 0)
                .map(|(a, b)| b.saturating_sub(a) as f64 / acked as f64),
            "postgres_statements": statements,
            "stored_rows": rows,
            "stored_exactly_once": stored_exactly_once,
            "reads": {
                "sent": reads_sent,
                "answered": reads_answered,
                "failed": reads_failed,
                "outstanding": reads_outstanding,
                "latency": read_latency,
            },
            "intact": intact,
            "holds": intact && latency.p99_ms <= HOLD_P99_MS && read_latency.p99_ms <= HOLD_P99_MS,
        }))
    }
}

fn user(run: &str, pair: usize, side: usize) -> String {
    format!("u{run}-{}", pair * 2 + side)
}

fn chat_topic(run: &str, pair: usize) -> String {
    format!("chat:{}:{}", user(run, pair, 0), user(run, pair, 1))
}

/// The socket's two halves: a task that writes what the outbox holds, and one that reads
/// (counting acks, measuring deliveries and answering each with `read`).
fn spawn_socket(
    ws: client::Ws,
    topic: String,
    peer: String,
    send_reads: bool,
    counters: Arc<Counters>,
    [latencies, read_latencies]: [mpsc::UnboundedSender<(u64, Duration)>; 2],
    epoch: Instant,
) -> mpsc::UnboundedSender<Message> {
    let (mut sink, mut stream) = ws.split();
    let (outbox, mut queued) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let reads = outbox.clone();
    tokio::spawn(async move {
        let mut read_ref = 0u64;
        // Each read's message's step and when it was sent, until its reply comes.
        let mut reads_pending: HashMap<u64, (u64, Instant)> = HashMap::new();
        while let Some(Ok(message)) = stream.next().await {
            let Some(frame) = client::Frame::read(&message) else {
                continue;
            };
            let reply_ref = frame.msg_ref();
            match frame.event() {
                "phx_reply"
                    if reply_ref.starts_with('m')
                        && frame.payload::<Reply>().is_some_and(|r| r.status == "ok") =>
                {
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                }
                "phx_reply" if reply_ref.starts_with('r') => {
                    let pending = reply_ref
                        .get(1..)
                        .and_then(|n| n.parse::<u64>().ok())
                        .and_then(|n| reads_pending.remove(&n));
                    let Some((step, sent_at)) = pending else {
                        continue;
                    };
                    if frame.payload::<Reply>().is_some_and(|r| r.status == "ok") {
                        counters.reads_answered.fetch_add(1, Ordering::Relaxed);
                        let _ = read_latencies.send((step, sent_at.elapsed()));
                    } else {
                        counters.reads_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                "new_msg" => {
                    let Some(delivery) = frame.payload::<Delivery>() else {
                        continue;
                    };
                    if delivery.user_id != peer {
                        continue;
                    }
                    let step = delivery.meta.s;
                    if send_reads {
                        // Counted before the delivery, so a step never looks caught up
                        // between the two.
                        read_ref += 1;
                        counters.reads_sent.fetch_add(1, Ordering::Relaxed);
                        let read = client::frame(
                            "2",
                            &format!("r{read_ref}"),
                            &topic,
                            "read",
                            json!({"message_id": delivery.id}),
                        );
                        if reads.send(read).is_ok() {
                            reads_pending.insert(read_ref, (step.unwrap_or(0), Instant::now()));
                        } else {
                            counters.reads_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    if let (Some(t), Some(step)) = (delivery.meta.t, step) {
                        let now = epoch.elapsed().as_nanos() as u64;
                        let _ = latencies.send((step, Duration::from_nanos(now.saturating_sub(t))));
                    }
                }
                _ => {}
            }
        }
        // The socket is gone: its reads will never be answered.
        counters
            .reads_failed
            .fetch_add(reads_pending.len() as u64, Ordering::Relaxed);
    });
    outbox
}

/// A reply's payload, as far as the generator reads it.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
}

/// A `new_msg` payload, as far as the generator reads it.
#[derive(Deserialize)]
struct Delivery<'a> {
    id: i64,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(default)]
    meta: Stamp,
}

/// What the sender put in a message's meta: when it was sent and in which step.
#[derive(Deserialize, Default)]
struct Stamp {
    t: Option<u64>,
    s: Option<u64>,
}

/// (rows, distinct (sender, client_ref)) of this run's messages.
async fn stored(url: &str, run: &str) -> anyhow::Result<(i64, i64)> {
    let (url, senders_like) = (url.to_owned(), format!("u{run}-%"));
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
    .await?
}

/// Starts a fresh count in `pg_stat_statements`, where the cluster loads it.
async fn reset_statements(url: &str) {
    let url = url.to_owned();
    let _ = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = PgConnection::establish(&url)?;
        diesel::sql_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut conn)?;
        diesel::sql_query("SELECT pg_stat_statements_reset()").execute(&mut conn)?;
        Ok(())
    })
    .await;
}

/// Postgres's time since the last reset: planning against execution, and the statements
/// that took most. Null where `pg_stat_statements` is not loaded.
async fn statements(url: &str) -> Value {
    let url = url.to_owned();
    let read = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let mut conn = PgConnection::establish(&url)?;
        #[derive(QueryableByName)]
        struct Statement {
            #[diesel(sql_type = diesel::sql_types::Text)]
            query: String,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            calls: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            plans: i64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            plan_ms: f64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            exec_ms: f64,
        }
        let all: Vec<Statement> = diesel::sql_query(
            "SELECT query, calls, plans, total_plan_time AS plan_ms, total_exec_time AS exec_ms \
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_plan_time + total_exec_time DESC",
        )
        .load(&mut conn)?;
        let plan: f64 = all.iter().map(|s| s.plan_ms).sum();
        let exec: f64 = all.iter().map(|s| s.exec_ms).sum();
        let top: Vec<Value> = all
            .iter()
            .take(8)
            .map(|s| {
                let text: String = s.query.split_whitespace().collect::<Vec<_>>().join(" ");
                json!({
                    "query": text.chars().take(120).collect::<String>(),
                    "calls": s.calls,
                    "plans": s.plans,
                    "plan_ms": s.plan_ms,
                    "exec_ms": s.exec_ms,
                })
            })
            .collect();
        Ok(json!({
            "plan_ms": plan,
            "exec_ms": exec,
            "planning_share": if plan + exec > 0.0 { plan / (plan + exec) } else { 0.0 },
            "top": top,
        }))
    })
    .await;
    match read {
        Ok(Ok(value)) => value,
        _ => Value::Null,
    }
}
