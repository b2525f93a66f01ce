//! Read receipts of one-to-one and support readers, stored in batches.
//!
//! A receipt is a one-row UPDATE whose cost is mostly the statement around it (executor
//! start-up, commit): five rows in one statement cost Postgres 2.5× less each than five
//! statements. Receipts queue here; one thread of their own, with a connection of its
//! own, takes everything waiting, stores it as one statement, answers each, and takes
//! the next lot. When a receipt finds the queue empty on a busy site it waits a short
//! window for others (`linger`): at 1,000 reads a second, a 10 ms window turns a
//! thousand statements into about a hundred, and nobody sees a tick mark 10 ms later. A
//! thread rather than a task on the blocking pool: a receipt then crosses threads once
//! each way, with no pool checkout between.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Text};
use tokio::sync::{mpsc, oneshot};

use super::Error;
use super::lazy::LazyConnection;
use super::linger::Linger;
use crate::metrics::Metrics;

/// Most receipts in one statement.
const MAX_BATCH: usize = 256;
/// The lot a lone receipt waits for on a busy site. Nobody waits on a receipt the
/// way a sender waits on an ack, so it waits for many (up to its window).
const LINGER_AIM: usize = 32;
/// Receipts that may wait; senders wait for room beyond this.
const QUEUE_CAPACITY: usize = 4096;

/// One reader's receipt: everything sent to `reader` in `topic` up to `up_to` is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub topic: String,
    pub reader: String,
    pub up_to: i64,
}

/// What storing a receipt did: how many messages it marked, and how many stay unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    pub marked: usize,
    pub still_unread: i64,
}

type Answer = Result<Option<Marked>, Error>;
type Request = (Receipt, oneshot::Sender<Answer>);

/// The handle receipts are sent through. Cheap to clone; the task ends with the last.
#[derive(Clone)]
pub struct Receipts {
    queue: mpsc::Sender<Request>,
    /// Receipts the thread has taken from the queue but not yet stored.
    held: Arc<AtomicUsize>,
}

impl Receipts {
    /// Starts the receipts thread; it opens its connection to `url` when first needed,
    /// and ends when the last handle is dropped.
    /// A receipt that finds nothing waiting on a busy site waits `window` for others.
    pub fn start(
        url: String,
        timeout: Duration,
        window: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Receipts> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let conn = LazyConnection::new(url, timeout, super::set_up_for_reads);
        let held = Arc::new(AtomicUsize::new(0));
        let thread = Thread {
            conn,
            rx,
            linger: Linger::new(window, LINGER_AIM),
            held: held.clone(),
            metrics,
        };
        std::thread::Builder::new()
            .name("sidechat-receipts".into())
            .spawn(move || thread.run())?;
        Ok(Receipts { queue, held })
    }

    /// Reads waiting to be stored: queued, or taken by the thread and not yet stored.
    pub fn queue_depth(&self) -> usize {
        let queued = self.queue.max_capacity() - self.queue.capacity();
        queued + self.held.load(Ordering::Relaxed)
    }

    /// Stores one receipt; None when `up_to` is no live message of the topic.
    pub async fn mark(&self, receipt: Receipt) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((receipt, reply))
            .await
            .map_err(|_| Error::Unavailable("receipts have stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the receipt was dropped".into()))?
    }
}

/// The receipts thread's state.
struct Thread {
    conn: LazyConnection,
    rx: mpsc::Receiver<Request>,
    linger: Linger,
    /// Receipts taken from the queue and not yet stored (held back, or in the lot being
    /// stored), for `Receipts::queue_depth`.
    held: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Thread {
    fn run(mut self) {
        // Receipts held back from the last lot: a lot has one per reader and topic, so
        // each gets its own count of what it marked.
        let mut held: Vec<Request> = Vec::new();
        loop {
            if held.is_empty() {
                match self.linger.next(&mut self.rx) {
                    Some(request) => held.push(request),
                    None => return,
                }
            }
            while held.len() < QUEUE_CAPACITY {
                match self.rx.try_recv() {
                    Ok(request) => held.push(request),
                    Err(_) => break,
                }
            }
            let (receipts, replies): (Vec<Receipt>, Vec<_>) =
                take_lot(&mut held).into_iter().unzip();
            self.held
                .store(held.len() + receipts.len(), Ordering::Relaxed);
            self.linger.took(receipts.len(), Instant::now());
            // Timed from a connection in hand, and only when stored: the histogram says
            // how long storing reads takes, not how long Postgres was unreachable.
            let stored = self.conn.get().and_then(|c| {
                let started = Instant::now();
                let answers = mark_all(c, &receipts)?;
                self.metrics
                    .receipts_batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok(answers)
            });
            self.held.store(held.len(), Ordering::Relaxed);
            match stored {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    // The connection may be broken; the next lot opens a fresh one.
                    self.conn.reset();
                    let cause = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(Error::Unavailable(cause.clone())));
                    }
                }
            }
        }
    }
}

/// The next lot from what is `held`, in order: at most `MAX_BATCH`, one per reader and
/// topic. The rest stays held for the next lot.
fn take_lot<T>(held: &mut Vec<(Receipt, T)>) -> Vec<(Receipt, T)> {
    let mut keys = HashSet::new();
    let mut lot = Vec::new();
    let mut later = Vec::new();
    for request in held.drain(..) {
        if lot.len() < MAX_BATCH && keys.insert((request.0.topic.clone(), request.0.reader.clone()))
        {
            lot.push(request);
        } else {
            later.push(request);
        }
    }
    *held = later;
    lot
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Bool)]
    found: bool,
    #[diesel(sql_type = BigInt)]
    marked: i64,
    #[diesel(sql_type = BigInt)]
    still_unread: i64,
}

/// The statement of `mark_all`: (topics, readers, up_tos) as three arrays.
pub const MARK_ALL: &str = concat!(
    "WITH req AS ( ",
    "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ",
    "WITH ORDINALITY AS r(topic, reader, up_to, n)), ",
    "found AS ( ",
    "SELECT r.n FROM req r ",
    "JOIN messages t ON t.id = r.up_to AND t.topic = r.topic AND t.deleted_at IS NULL), ",
    "marked AS ( ",
    "UPDATE messages m SET is_delivered = true FROM req r ",
    "WHERE r.n IN (SELECT n FROM found) ",
    "AND m.recipient_id = r.reader AND m.topic = r.topic AND m.id <= r.up_to ",
    "AND NOT m.is_delivered AND m.deleted_at IS NULL ",
    "RETURNING r.n) ",
    "SELECT EXISTS (SELECT 1 FROM found f WHERE f.n = r.n) AS found, ",
    // Counted once per receipt by one aggregate: a count per receipt over all that
    // was marked grows with the square of the lot.
    "COALESCE(k.marked, 0) AS marked, ",
    // What stays unread is what is past the receipt: the index range after `up_to`,
    // not the reader's whole range, whose marked entries stay in the index until vacuum.
    "(SELECT count(*) FROM messages u WHERE u.recipient_id = r.reader ",
    "AND u.topic = r.topic AND u.id > r.up_to AND NOT u.is_delivered AND u.deleted_at IS NULL) ",
    "AS still_unread ",
    "FROM req r LEFT JOIN (SELECT n, count(*) AS marked FROM marked GROUP BY n) k ON k.n = r.n ",
    "ORDER BY r.n ",
);

/// Stores receipts of distinct (topic, reader) pairs in one statement; answers in
/// their order. What stays unread is read from the table as it was before the UPDATE
/// (one snapshot): the unread past the receipt, which the UPDATE does not touch.
pub fn mark_all(
    conn: &mut PgConnection,
    receipts: &[Receipt],
) -> Result<Vec<Option<Marked>>, Error> {
    let topics: Vec<&str> = receipts.iter().map(|r| r.topic.as_str()).collect();
    let readers: Vec<&str> = receipts.iter().map(|r| r.reader.as_str()).collect();
    let up_tos: Vec<i64> = receipts.iter().map(|r| r.up_to).collect();
    super::prepared::statement! { MarkAll = MARK_ALL; }
    let rows: Vec<Row> = super::prepared::prepared::<MarkAll>()
        .bind::<Array<Text>, _>(&topics)
        .bind::<Array<Text>, _>(&readers)
        .bind::<Array<BigInt>, _>(&up_tos)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.found.then(|| Marked {
                marked: usize::try_from(row.marked).unwrap_or(0),
                still_unread: row.still_unread,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(topic: &str, reader: &str, up_to: i64) -> (Receipt, i64) {
        let receipt = Receipt {
            topic: topic.into(),
            reader: reader.into(),
            up_to,
        };
        (receipt, up_to)
    }

    #[test]
    fn a_lot_has_one_receipt_per_reader_and_topic_and_the_rest_waits_in_order() {
        let mut held = vec![
            receipt("chat:a:b", "b", 1),
            receipt("chat:a:b", "a", 2),
            receipt("chat:a:b", "b", 3),
            receipt("chat:b:c", "b", 4),
            receipt("chat:a:b", "b", 5),
        ];
        let lot: Vec<i64> = take_lot(&mut held).into_iter().map(|r| r.1).collect();
        assert_eq!(lot, [1, 2, 4]);
        let lot: Vec<i64> = take_lot(&mut held).into_iter().map(|r| r.1).collect();
        assert_eq!(lot, [3]);
        let lot: Vec<i64> = take_lot(&mut held).into_iter().map(|r| r.1).collect();
        assert_eq!(lot, [5]);
        assert!(held.is_empty());
    }

    #[test]
    fn the_queue_depth_counts_what_is_queued_and_what_the_thread_holds() {
        let (queue, _rx) = mpsc::channel(QUEUE_CAPACITY);
        let receipts = Receipts {
            queue,
            held: Arc::new(AtomicUsize::new(0)),
        };
        assert_eq!(receipts.queue_depth(), 0);
        for up_to in 1..=3 {
            let (reply, _answer) = oneshot::channel();
            let (receipt, _) = receipt("chat:a:b", "b", up_to);
            receipts.queue.try_send((receipt, reply)).unwrap();
        }
        assert_eq!(receipts.queue_depth(), 3);
        receipts.held.store(2, Ordering::Relaxed);
        assert_eq!(receipts.queue_depth(), 5);
    }

    #[test]
    fn a_lot_is_capped() {
        let mut held: Vec<_> = (0..MAX_BATCH as i64 + 3)
            .map(|n| receipt(&format!("chat:a:u{n}"), "a", n))
            .collect();
        assert_eq!(take_lot(&mut held).len(), MAX_BATCH);
        assert_eq!(held.len(), 3);
    }
}
