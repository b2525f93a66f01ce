//! `chat.retention_days`: messages older than that are deleted, oldest first, in small
//! transactions on the read pool, by one replica at a time.
//!
//! Oldest first means by id: the ids come from one sequence as messages are stored, so
//! the oldest ids are the oldest messages, and a batch is read from the primary key
//! without an index on `sent_at` (which every insert would pay for). A run stops at the
//! first batch that is not wholly past the cutoff.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Text};
use tokio_util::sync::CancellationToken;

use super::{Error, PgPool};
use crate::metrics::Metrics;

/// The advisory lock a run holds: whoever has it deletes, the other replicas skip.
pub const RETENTION_LOCK: i64 = 0x5c4a_7e7e_0001;

/// A retention run's wait for a row lock before it gives up the batch. Far below
/// `deadlock_timeout` (1 s): if a batch and a writer's transaction ever wait on each
/// other, the batch is the one that yields, and the writer never sees the conflict.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '100ms'";

/// How the job runs, from `[chat]`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Messages sent more than this many days ago go; 0 keeps everything.
    pub days: u32,
    /// Messages per transaction.
    pub batch: u32,
    /// Pause between batches, leaving Postgres to the writer.
    pub pause: Duration,
    /// From the end of one run to the start of the next.
    pub every: Duration,
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub deleted: u64,
    pub batches: u32,
    /// Another replica held the lock: this one did nothing.
    pub skipped: bool,
}

#[derive(QueryableByName)]
struct Gone {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    topic: String,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Deletes up to `batch` of the oldest messages sent more than `days` days ago, with
/// their reactions, reports and outbox rows (the last by cascade), and takes the
/// conversations whose newest message went off the lists. Returns the ids deleted.
pub fn delete_batch(conn: &mut PgConnection, days: u32, batch: u32) -> Result<Vec<i64>, Error> {
    conn.transaction(|conn| {
        diesel::sql_query(LOCK_TIMEOUT).execute(conn)?;
        let gone: Vec<Gone> = diesel::sql_query(
            "DELETE FROM messages WHERE id IN ( \
                 SELECT id FROM messages ORDER BY id LIMIT $2) \
               AND sent_at < now() - make_interval(days => $1) \
             RETURNING id, topic",
        )
        .bind::<Integer, _>(i32::try_from(days).unwrap_or(i32::MAX))
        .bind::<BigInt, _>(i64::from(batch))
        .load(conn)?;
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = gone.iter().map(|g| g.id).collect();
        let mut topics: Vec<&str> = gone.iter().map(|g| g.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        diesel::sql_query("DELETE FROM reactions WHERE message_id = ANY($1)")
            .bind::<Array<BigInt>, _>(&ids)
            .execute(conn)?;
        diesel::sql_query("DELETE FROM reports WHERE message_id = ANY($1)")
            .bind::<Array<BigInt>, _>(&ids)
            .execute(conn)?;
        // Newer replies no longer carry a copy of what the policy deleted.
        super::messages::unquote(conn, &ids)?;
        forget_emptied(conn, &topics, &ids)?;
        Ok(ids)
    })
}

/// A list entry pointing at a deleted message had nothing newer (deletion goes oldest
/// first), so its conversation has no message left: the entry goes (its members stay,
/// and the next message lists it again), a room's activity goes back to none. The
/// conditions are checked again on rows a writer moved meanwhile, so a message stored
/// concurrently keeps its entry. Rows are taken in key order, as the writer takes them.
fn forget_emptied(conn: &mut PgConnection, topics: &[&str], ids: &[i64]) -> Result<(), Error> {
    let (rooms, others): (Vec<&str>, Vec<&str>) =
        topics.iter().partition(|t| t.starts_with("room:"));
    let room_ids: Vec<&str> = rooms
        .iter()
        .filter_map(|t| t.strip_prefix("room:"))
        .collect();
    diesel::sql_query(
        "DELETE FROM conversations WHERE topic IN ( \
             SELECT topic FROM conversations \
             WHERE topic = ANY($1) AND last_message_id = ANY($2) \
             ORDER BY topic FOR UPDATE) \
           AND last_message_id = ANY($2)",
    )
    .bind::<Array<Text>, _>(&others)
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)?;
    diesel::sql_query(
        "UPDATE rooms SET last_message_id = NULL, last_message_at = NULL WHERE id IN ( \
             SELECT id FROM rooms \
             WHERE id = ANY($1) AND last_message_id = ANY($2) \
             ORDER BY id FOR UPDATE) \
           AND last_message_id = ANY($2)",
    )
    .bind::<Array<Text>, _>(&room_ids)
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)?;
    Ok(())
}

/// One run: takes the lock or skips, then deletes batch after batch until one comes back
/// short, `stop` is cancelled, or a batch fails (the next run goes on from there).
/// Blocking: call it on a blocking thread.
pub fn run(
    conn: &mut PgConnection,
    policy: Policy,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<Run, Error> {
    let locked: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<BigInt, _>(RETENTION_LOCK)
        .get_result(conn)?;
    if !locked.locked {
        return Ok(Run {
            skipped: true,
            ..Run::default()
        });
    }
    let mut run = Run::default();
    let outcome = loop {
        if stop.is_cancelled() {
            break Ok(());
        }
        match delete_batch(conn, policy.days, policy.batch) {
            Ok(ids) => {
                let deleted = ids.len() as u64;
                run.deleted += deleted;
                run.batches += 1;
                metrics.retention_deleted.inc_by(deleted);
                if deleted < u64::from(policy.batch) {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
        std::thread::sleep(policy.pause);
    };
    // A pooled connection goes back to others: the lock must not go with it.
    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(RETENTION_LOCK)
        .execute(conn)?;
    outcome.map(|()| run)
}

/// Runs at once, then `policy.every` after each run ends, until `stop`.
pub async fn keep_pruned(
    pool: PgPool,
    policy: Policy,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let started = Instant::now();
        let (pool, metrics_for_run, stop_for_run) = (pool.clone(), metrics.clone(), stop.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            run(&mut conn, policy, &metrics_for_run, &stop_for_run)
        })
        .await
        .unwrap_or_else(|e| Err(Error::Unavailable(format!("retention run failed: {e}"))));
        match result {
            Ok(run) if run.skipped => {
                metrics.retention_run("skipped");
                log::debug!("retention: another replica is deleting; skipped");
            }
            Ok(run) => {
                metrics.retention_run("done");
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                metrics
                    .retention_last_run
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
                if run.deleted > 0 {
                    log::info!(
                        "retention: deleted {} message(s) older than {} days in {} batch(es), {:?}",
                        run.deleted,
                        policy.days,
                        run.batches,
                        started.elapsed()
                    );
                }
            }
            Err(e) => {
                metrics.retention_run("failed");
                log::warn!("retention: run stopped: {e}");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(policy.every) => {}
        }
    }
}
