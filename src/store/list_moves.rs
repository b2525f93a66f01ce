//! Conversation-list moves taken out of the batch INSERT on a busy replica.
//!
//! Moving the lists in the statement that inserts a batch costs Postgres about 30 µs
//! per statement whatever the batch holds (BENCHMARKS.md): at 1,000 msg/s, where a batch
//! holds one or two messages, that is a quarter more Postgres CPU per message. So when
//! the writer sees a rate at which many batches come within `window`, it inserts
//! without the lists and keeps the new messages' ids here; every `window` one statement
//! moves the lists for all of them. The list then trails a message by at most the
//! window.
//!
//! The moves are idempotent (each row only moves forward), so what a crash loses is
//! made good by `keep_healed`, beside the writer: the newest messages' moves are made
//! again at start and every `HEAL_EVERY` after, by every replica that defers. A late move cannot undo a deletion or an
//! erasure: it moves only messages still there and live, and an erased user's past
//! messages do not put them back on a list (`conversations::LIST_MOVE`). The writer
//! also makes the pending moves before a batch that deletes or erases, so that on one
//! replica the list follows the order of the changes.

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt};

use super::Error;

/// Past this many pending ids, they are moved at once.
const MAX_PENDING: usize = 10_000;
/// How many of the newest messages the first `heal` moves again: far more than any
/// window holds.
pub const HEAL_NEWEST: i64 = 100_000;
/// How often a writer that defers heals what dead replicas left: what it heals is every
/// message since the last time, less `HEAL_MARGIN` ids (ids drawn by another replica
/// before ours and committed after our last heal).
pub const HEAL_EVERY: Duration = Duration::from_secs(60);
const HEAL_MARGIN: i64 = 10_000;

/// The list moves of the live messages whose ids are `$1`.
pub static MOVE_BY_IDS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    [
        "WITH ins AS (SELECT topic, id, sent_at FROM messages \
         WHERE id = ANY($1) AND deleted_at IS NULL), ",
        super::conversations::LIST_MOVE,
        "SELECT count(*) AS moved, 0::bigint AS up_to FROM ins",
    ]
    .concat()
});

/// The list moves of every live message after id `$1`.
pub static MOVE_AFTER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    [
        // Not what retention is about to delete (within an hour of its cutoff): a move
        // read before a deletion and written after it would list a message that is gone.
        "WITH ins AS (SELECT topic, id, sent_at FROM messages \
         WHERE id > $1 AND deleted_at IS NULL \
           AND ($3 = 0 OR sent_at > now() - make_interval(days => $3) + interval '1 hour')), ",
        super::conversations::LIST_MOVE,
        "SELECT count(*) AS moved, coalesce(max(id), $2) AS up_to FROM ins",
    ]
    .concat()
});

#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = BigInt)]
    moved: i64,
    /// The newest id moved (`MOVE_AFTER`).
    #[diesel(sql_type = BigInt)]
    up_to: i64,
}

/// When the writer defers list moves, and what it has deferred.
pub struct DeferredMoves {
    window: Duration,
    /// Deferred at or above this arrival rate (messages a second); 0 = always.
    from_rate: f64,
    pending: Vec<i64>,
    since: Option<Instant>,
}

impl DeferredMoves {
    /// A zero `window` never defers.
    pub fn new(window: Duration, from_rate: f64) -> DeferredMoves {
        DeferredMoves {
            window,
            from_rate,
            pending: Vec::new(),
            since: None,
        }
    }

    /// Whether a batch arriving at `rate` defers its moves.
    pub fn defers_at(&self, rate: f64) -> bool {
        !self.window.is_zero() && rate >= self.from_rate
    }

    pub fn defer(&mut self, ids: impl IntoIterator<Item = i64>, now: Instant) {
        let before = self.pending.len();
        self.pending.extend(ids);
        if before == 0 && !self.pending.is_empty() {
            self.since = Some(now);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether the pending moves should be made now.
    pub fn due(&self, now: Instant) -> bool {
        self.pending.len() >= MAX_PENDING
            || self
                .since
                .is_some_and(|since| now.saturating_duration_since(since) >= self.window)
    }

    /// Makes the pending moves in one statement. On failure they stay pending (up to a
    /// bound: past it, the next `heal` makes them good).
    pub fn flush(&mut self, conn: &mut PgConnection) -> Result<usize, Error> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        super::prepared::statement! { MoveByIds = MOVE_BY_IDS.as_str(); }
        let moved: Result<Moved, _> = super::prepared::prepared::<MoveByIds>()
            .bind::<Array<BigInt>, _>(&self.pending)
            .get_result(conn);
        match moved {
            Ok(moved) => {
                self.pending.clear();
                self.since = None;
                Ok(usize::try_from(moved.moved).unwrap_or(0))
            }
            Err(e) => {
                if self.pending.len() > MAX_PENDING * 10 {
                    log::warn!(
                        "lists: dropping {} pending moves; the next heal makes them",
                        self.pending.len()
                    );
                    self.pending.clear();
                    self.since = None;
                }
                Err(e.into())
            }
        }
    }
}

/// Makes the list moves of every message after `healed_up_to` (less a margin) again,
/// or of the newest `HEAL_NEWEST` the first time: what a replica that died with moves
/// pending left undone. Cheap when nothing is missing (a row already there does not
/// move). Returns how many messages it went over and the id to go on from.
/// `retention_days`: `chat.retention_days` (0: none).
pub fn heal(
    conn: &mut PgConnection,
    healed_up_to: Option<i64>,
    retention_days: u32,
) -> Result<(usize, i64), Error> {
    let after = match healed_up_to {
        Some(id) => id - HEAL_MARGIN,
        None => {
            let newest: Option<i64> = super::schema::messages::table
                .select(diesel::dsl::max(super::schema::messages::id))
                .first(conn)?;
            newest.unwrap_or(0) - HEAL_NEWEST
        }
    };
    let moved: Moved = diesel::sql_query(MOVE_AFTER.as_str())
        .bind::<BigInt, _>(after)
        .bind::<BigInt, _>(after.max(healed_up_to.unwrap_or(0)))
        .bind::<diesel::sql_types::Integer, _>(i32::try_from(retention_days).unwrap_or(i32::MAX))
        .get_result(conn)?;
    Ok((usize::try_from(moved.moved).unwrap_or(0), moved.up_to))
}

/// Heals at once, then every `HEAL_EVERY`, until `stop`. On the pool, off the writer's
/// thread: a heal goes over a minute of messages, which would hold up the sends queued
/// behind it.
pub async fn keep_healed(
    pool: super::PgPool,
    retention_days: u32,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut healed_up_to = None;
    loop {
        let started = Instant::now();
        match super::blocking(&pool, move |conn| heal(conn, healed_up_to, retention_days)).await {
            Ok((moved, up_to)) => {
                healed_up_to = Some(up_to);
                metrics.list_heals.inc();
                log::debug!(
                    "lists: moves of {moved} messages checked in {:?}",
                    started.elapsed()
                );
            }
            Err(e) => log::warn!("lists: cannot check the newest moves: {e}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEAL_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_fall_due_a_window_after_the_first_was_deferred() {
        let start = Instant::now();
        let mut moves = DeferredMoves::new(Duration::from_millis(50), 100.0);
        assert!(!moves.defers_at(99.0) && moves.defers_at(100.0));
        assert!(!moves.due(start), "nothing pending");
        moves.defer([1, 2], start);
        moves.defer([3], start + Duration::from_millis(40));
        assert!(!moves.due(start + Duration::from_millis(49)));
        assert!(moves.due(start + Duration::from_millis(50)));
    }

    #[test]
    fn a_zero_window_never_defers() {
        let moves = DeferredMoves::new(Duration::ZERO, 0.0);
        assert!(!moves.defers_at(1e9));
    }
}
