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
//! made good by `heal`: the newest messages' moves are made again when the writer
//! starts and every `HEAL_EVERY` after. A late move cannot undo a deletion or an
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
/// How many of the newest messages `heal` moves again: far more than any window holds.
pub const HEAL_NEWEST: i64 = 100_000;

/// The list moves of the live messages whose ids are `$1`.
pub static MOVE_BY_IDS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    [
        "WITH ins AS (SELECT topic, id, sent_at FROM messages \
         WHERE id = ANY($1) AND deleted_at IS NULL), ",
        super::conversations::LIST_MOVE,
        "SELECT count(*) AS moved FROM ins",
    ]
    .concat()
});

/// The list moves of the newest `$1` live messages.
pub static MOVE_NEWEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    [
        "WITH ins AS (SELECT topic, id, sent_at FROM messages \
         WHERE id > (SELECT coalesce(max(id), 0) FROM messages) - $1 AND deleted_at IS NULL), ",
        super::conversations::LIST_MOVE,
        "SELECT count(*) AS moved FROM ins",
    ]
    .concat()
});

#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = BigInt)]
    moved: i64,
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

    /// Whether deferring is on at all (then the writer heals at start).
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
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
    /// bound: past it, `heal` at the next start makes them good).
    pub fn flush(&mut self, conn: &mut PgConnection) -> Result<usize, Error> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let moved: Result<Moved, _> = super::prepared::prepared(MOVE_BY_IDS.as_str())
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
                        "lists: dropping {} pending moves; the next start heals them",
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

/// Makes the list moves of the newest `HEAL_NEWEST` messages again: what a replica that
/// died with moves pending left undone. Cheap when nothing is missing (a row that is
/// already there does not move).
pub fn heal(conn: &mut PgConnection) -> Result<usize, Error> {
    let moved: Moved = diesel::sql_query(MOVE_NEWEST.as_str())
        .bind::<BigInt, _>(HEAL_NEWEST)
        .get_result(conn)?;
    Ok(usize::try_from(moved.moved).unwrap_or(0))
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
        assert!(!moves.enabled() && !moves.defers_at(1e9));
    }
}
