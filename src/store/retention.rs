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

use super::Error;
use super::prepared::{Statement, prepared, statement};
use crate::metrics::Metrics;

/// The advisory lock a run holds: whoever has it deletes, the other replicas skip.
pub const RETENTION_LOCK: i64 = 0x5c4a_7e7e_0001;

/// A retention run's wait for a row lock before it gives up the batch. Far below
/// `deadlock_timeout` (1 s): if a batch and a writer's transaction ever wait on each
/// other, the batch is the one that yields, and the writer never sees the conflict.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '100ms'";

/// A run rests at least this many times as long as its last batch took: on a busy
/// Postgres batches slow down, and the run gives way in proportion, keeping to a tenth
/// of one connection's time. Deleting at full speed doubled Postgres's CPU per message
/// and the writer's commits queued behind the deletions' WAL (BENCHMARKS.md, Retention).
const IDLE_PER_BUSY: u32 = 9;

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
    /// Not deleted by its author before: a list entry may point at it.
    #[diesel(sql_type = Bool)]
    live: bool,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

// Kept prepared with a generic plan (the read pool's): planned afresh, the batch's
// statement cost more than it ran, the planner probing the id index's low end, which is
// where the batches before it left their dead entries.
const DELETE_OLDEST: &str = "\
DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT $1) \
  AND sent_at < now() - make_interval(days => $2) \
RETURNING id, topic, deleted_at IS NULL AS live";
const DELETE_REACTIONS: &str = "DELETE FROM reactions WHERE message_id = ANY($1)";
const DELETE_REPORTS: &str = "DELETE FROM reports WHERE message_id = ANY($1)";
// An entry still pointing at the newest live message the batch deleted in its
// conversation: the conversation has none left (deletion goes oldest first). The rows
// are locked in key order, as the writer takes them, and a row a writer moved meanwhile
// no longer matches when the lock is granted, so a message stored concurrently keeps its
// entry. The members stay: the next message lists the conversation again.
const FORGET_CONVERSATIONS: &str = "\
DELETE FROM conversations WHERE topic IN ( \
    SELECT c.topic FROM conversations c \
    JOIN unnest($1::text[], $2::bigint[]) AS gone(topic, id) \
      ON c.topic = gone.topic AND c.last_message_id = gone.id \
    ORDER BY c.topic FOR UPDATE OF c)";
// A room with nothing left goes back to no activity, as a new room has.
const FORGET_ROOM_ACTIVITY: &str = "\
UPDATE rooms SET last_message_id = NULL, last_message_at = NULL WHERE id IN ( \
    SELECT r.id FROM rooms r \
    JOIN unnest($1::text[], $2::bigint[]) AS gone(room, id) \
      ON r.id = gone.room AND r.last_message_id = gone.id \
    ORDER BY r.id FOR UPDATE OF r)";

statement! { DeleteOldest = DELETE_OLDEST; }
statement! { DeleteReactions = DELETE_REACTIONS; }
statement! { DeleteReports = DELETE_REPORTS; }
statement! { ForgetConversations = FORGET_CONVERSATIONS; }
statement! { ForgetRoomActivity = FORGET_ROOM_ACTIVITY; }

/// Deletes up to `batch` of the oldest messages sent more than `days` days ago, with
/// their reactions, reports and outbox rows (the last by cascade) and the quotes of them
/// in newer replies, and takes the conversations left empty off the lists. Returns how
/// many it deleted.
pub fn delete_batch(conn: &mut PgConnection, days: u32, batch: u32) -> Result<usize, Error> {
    conn.transaction(|conn| {
        diesel::sql_query(LOCK_TIMEOUT).execute(conn)?;
        let gone: Vec<Gone> = prepared::<DeleteOldest>()
            .bind::<BigInt, _>(i64::from(batch))
            .bind::<Integer, _>(i32::try_from(days).unwrap_or(i32::MAX))
            .load(conn)?;
        if gone.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = gone.iter().map(|g| g.id).collect();
        prepared::<DeleteReactions>()
            .bind::<Array<BigInt>, _>(&ids)
            .execute(conn)?;
        prepared::<DeleteReports>()
            .bind::<Array<BigInt>, _>(&ids)
            .execute(conn)?;
        // Newer replies no longer carry a copy of what the policy deleted.
        super::messages::unquote(conn, &ids)?;
        let (rooms, conversations) = newest_live_by_topic(&gone);
        forget_newest::<ForgetConversations>(conn, &conversations)?;
        forget_newest::<ForgetRoomActivity>(conn, &rooms)?;
        Ok(gone.len())
    })
}

/// Runs `S` for the topics whose newest live message the batch deleted, if any.
fn forget_newest<S: Statement>(
    conn: &mut PgConnection,
    (topics, newest): &Newest<'_>,
) -> QueryResult<()> {
    if !topics.is_empty() {
        prepared::<S>()
            .bind::<Array<Text>, _>(topics)
            .bind::<Array<BigInt>, _>(newest)
            .execute(conn)?;
    }
    Ok(())
}

type Newest<'a> = (Vec<&'a str>, Vec<i64>);

/// The newest live message deleted in each topic: (room ids, ids) for rooms, (topics,
/// ids) for the others.
fn newest_live_by_topic(gone: &[Gone]) -> (Newest<'_>, Newest<'_>) {
    let mut newest: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for g in gone.iter().filter(|g| g.live) {
        let id = newest.entry(g.topic.as_str()).or_insert(g.id);
        *id = (*id).max(g.id);
    }
    let (mut rooms, mut others): (Newest, Newest) = Default::default();
    for (topic, id) in newest {
        match topic.strip_prefix("room:") {
            Some(room) => {
                rooms.0.push(room);
                rooms.1.push(id);
            }
            None => {
                others.0.push(topic);
                others.1.push(id);
            }
        }
    }
    (rooms, others)
}

/// Where runs connect. Each run has a connection of its own (set up as the read pool's),
/// closed when the run ends: a run of hours takes nothing from the pool, and the
/// session's advisory lock goes with the session, whatever ends the run.
#[derive(Debug, Clone)]
pub struct Database {
    pub url: String,
    pub connect_timeout: Duration,
}

/// Runs `work` on `conn` on a blocking thread and hands the connection back; `None` if
/// the thread died, and the connection (with its session lock) with it.
async fn on_blocking_thread<T: Send + 'static>(
    mut conn: PgConnection,
    work: impl FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
) -> Option<(PgConnection, Result<T, Error>)> {
    tokio::task::spawn_blocking(move || {
        let result = work(&mut conn);
        (conn, result)
    })
    .await
    .ok()
}

/// One run: takes the lock or skips, then deletes batch after batch until one comes back
/// short, `stop` is cancelled, or a batch fails (the next run goes on from there).
async fn run(
    database: &Database,
    policy: Policy,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<Run, Error> {
    let Database {
        url,
        connect_timeout,
    } = database.clone();
    let (mut conn, locked) = tokio::task::spawn_blocking(move || {
        let mut conn = super::connect(&url, connect_timeout)?;
        super::set_up_for_reads(&mut conn)?;
        let locked: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<BigInt, _>(RETENTION_LOCK)
            .get_result(&mut conn)?;
        Ok::<_, Error>((conn, locked.locked))
    })
    .await
    .map_err(|e| Error::Unavailable(format!("retention: {e}")))??;
    if !locked {
        return Ok(Run {
            skipped: true,
            ..Run::default()
        });
    }
    let mut run = Run::default();
    while !stop.is_cancelled() {
        let started = Instant::now();
        let (days, batch) = (policy.days, policy.batch);
        let (back, deleted) = on_blocking_thread(conn, move |conn| delete_batch(conn, days, batch))
            .await
            .ok_or_else(|| Error::Unavailable("retention: a batch's thread died".into()))?;
        conn = back;
        let deleted = deleted? as u64;
        run.deleted += deleted;
        run.batches += 1;
        metrics.retention_deleted.inc_by(deleted);
        mark_progress(metrics);
        if deleted < u64::from(policy.batch) {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(policy.pause.max(started.elapsed() * IDLE_PER_BUSY)) => {}
        }
    }
    // Dropping the connection ends the session, and its lock.
    drop(conn);
    Ok(run)
}

/// Retention is alive: a batch went through, or a run found nothing to do.
fn mark_progress(metrics: &Metrics) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    metrics
        .retention_last_run
        .set(i64::try_from(now).unwrap_or(i64::MAX));
}

/// Runs at once, then `policy.every` after each run ends, until `stop` (the start of
/// shutdown: a run stops after the batch in flight).
pub async fn keep_pruned(
    database: Database,
    policy: Policy,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    metrics.retention_days.set(i64::from(policy.days));
    loop {
        let started = Instant::now();
        match run(&database, policy, &metrics, &stop).await {
            Ok(run) if run.skipped => {
                metrics.retention_run("skipped");
                log::debug!("retention: another replica is deleting; skipped");
            }
            Ok(run) => {
                metrics.retention_run("done");
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
