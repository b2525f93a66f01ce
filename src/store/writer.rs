//! The writer: one thread, one connection, every change to `messages`.
//!
//! Inserts, edits, deletions and erasures all pass through here, so whatever happens to
//! messages happens, and is broadcast, in one order. Everything waiting in the queue runs
//! in one transaction (runs of inserts as one multi-row INSERT): one fsync covers many
//! messages. On a busy site a message that finds the queue empty waits a moment for
//! others, so that batches form even where each conversation is quiet. Only after COMMIT does the writer hand the changes to `on_commit` (which
//! broadcasts them, in order) and answer each caller. On a database error it answers the
//! batch `Unavailable`, drops the connection and reconnects with backoff on the next batch.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::Error;
use super::batch::apply_batch;
use super::lazy::LazyConnection;
use super::linger::Linger;
use super::list_moves::DeferredMoves;
use super::messages::Lists;
use super::models::NewMessage;
use super::mutation::{Change, Mutation, Outcome, Stored};
use crate::metrics::Metrics;

/// Most requests in one transaction: well inside Postgres's 65535 bind parameters.
const MAX_BATCH: usize = 512;
/// The lot a lone message waits for on a busy site: most of what sharing a statement
/// saves is in the first few, and each further one adds more to the ack than it saves.
const LINGER_AIM: usize = 4;
/// Requests that may wait for the writer; senders wait for room beyond this.
const QUEUE_CAPACITY: usize = 4096;

/// Called on the writer thread after each COMMIT with its changes, in order.
pub type OnCommit = Box<dyn Fn(&[Change]) + Send>;

type Reply = oneshot::Sender<Result<Outcome, Error>>;

// Nearly every command is an Apply, so boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Command {
    Apply(Mutation, Reply),
    /// From the ticker: deferred list moves may be due.
    Tick,
    /// Finish everything queued before it, then stop.
    Stop,
}

/// How the writer batches on a busy site.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// How long a message that finds the queue empty waits for company (`linger`).
    pub window: Duration,
    /// How long conversation-list moves may be deferred (`list_moves`); zero never.
    pub list_window: Duration,
    /// Messages a second from which they are deferred.
    pub list_defer_rate: f64,
}

/// Wakes the writer every `every` so that deferred list moves fall due on a quiet
/// queue too. Ends with the writer (its queue closes).
fn start_ticker(queue: mpsc::Sender<Command>, every: Duration) -> std::io::Result<()> {
    thread::Builder::new()
        .name("sidechat-writer-tick".into())
        .spawn(move || {
            loop {
                thread::sleep(every);
                match queue.try_send(Command::Tick) {
                    // A full queue wakes the writer anyway.
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        })?;
    Ok(())
}

/// The handle the rest of the service sends through. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Command>,
}

/// Resolves when the writer thread ends, for whatever reason (a panic included).
pub type WriterExit = oneshot::Receiver<()>;

/// Sends on drop, so the supervisor hears of the thread's end even when it panics.
struct ExitSignal(Option<oneshot::Sender<()>>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Writer {
    /// Starts the writer thread. `connect_url` is opened on the thread, lazily. With
    /// `outbox` set, each new message someone may have to be told of offline enters the
    /// outbox in its own transaction, due after that delay (`store::outbox`). How it
    /// batches on a busy site: `Batching`.
    pub fn start(
        connect_url: String,
        connect_timeout: Duration,
        batching: Batching,
        outbox: Option<Duration>,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> std::io::Result<(Writer, WriterExit, thread::JoinHandle<()>)> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (exit_tx, exit_rx) = oneshot::channel();
        if !batching.list_window.is_zero() {
            start_ticker(queue.clone(), batching.list_window / 2)?;
        }
        let handle = thread::Builder::new()
            .name("sidechat-writer".into())
            .spawn(move || {
                let _exit = ExitSignal(Some(exit_tx));
                WriterLoop {
                    rx,
                    linger: Linger::new(batching.window, LINGER_AIM),
                    moves: DeferredMoves::new(batching.list_window, batching.list_defer_rate),
                    conn: LazyConnection::new(
                        connect_url,
                        connect_timeout,
                        super::set_up_for_writes,
                    ),
                    outbox,
                    metrics,
                    on_commit,
                }
                .run();
            })?;
        Ok((Writer { queue }, exit_rx, handle))
    }

    /// Applies one change; resolves after COMMIT. `Unavailable` means nothing changed.
    pub async fn apply(&self, mutation: Mutation) -> Result<Outcome, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::Apply(mutation, reply))
            .await
            .map_err(|_| Error::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the writer dropped the request".into()))?
    }

    /// Stores one message; resolves after COMMIT.
    pub async fn write(&self, message: NewMessage) -> Result<Stored, Error> {
        match self.apply(Mutation::Insert(message)).await? {
            Outcome::Inserted(stored) => Ok(stored),
            _ => Err(Error::Unavailable("unexpected writer outcome".into())),
        }
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Asks the thread to finish what is queued and stop. Join its handle to wait.
    pub async fn stop(&self) {
        let _ = self.queue.send(Command::Stop).await;
    }
}

struct WriterLoop {
    rx: mpsc::Receiver<Command>,
    linger: Linger,
    moves: DeferredMoves,
    conn: LazyConnection,
    outbox: Option<Duration>,
    metrics: Arc<Metrics>,
    on_commit: OnCommit,
}

impl WriterLoop {
    fn run(mut self) {
        let mut stopping = false;
        while !stopping {
            let Some(first) = self.linger.next(&mut self.rx) else {
                break;
            };
            let mut batch: Vec<(Mutation, Reply)> = Vec::new();
            let rest = std::iter::from_fn(|| self.rx.try_recv().ok());
            for command in std::iter::once(first).chain(rest) {
                match command {
                    Command::Apply(mutation, reply) => batch.push((mutation, reply)),
                    Command::Tick => {}
                    Command::Stop => {
                        stopping = true;
                        break;
                    }
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
            }
            if !batch.is_empty() {
                self.linger.took(batch.len(), Instant::now());
                // A deletion or erasure must come after the moves deferred before it,
                // or a move would bring back what it took away.
                if batch.iter().any(|(m, _)| !matches!(m, Mutation::Insert(_))) {
                    self.move_lists();
                }
                self.process(batch);
            }
            if stopping || self.moves.due(Instant::now()) {
                self.move_lists();
            }
        }
        log::info!("writer stopped");
    }

    /// Makes the deferred list moves now.
    fn move_lists(&mut self) {
        if self.moves.is_empty() {
            return;
        }
        let result = match self.conn.get() {
            Ok(conn) => self.moves.flush(conn),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            log::warn!("writer: deferred list moves failed ({e}); retrying");
        }
    }

    fn process(&mut self, batch: Vec<(Mutation, Reply)>) {
        let started = Instant::now();
        let (mutations, replies): (Vec<Mutation>, Vec<Reply>) = batch.into_iter().unzip();
        let outbox = self.outbox;
        // A batch that also deletes or erases moves its own lists, in order with them.
        let only_inserts = mutations.iter().all(|m| matches!(m, Mutation::Insert(_)));
        let lists = if only_inserts && self.moves.defers_at(self.linger.rate()) {
            Lists::Deferred
        } else {
            Lists::Moved
        };
        let result = match self.conn.get() {
            Ok(conn) => apply_batch(conn, &mutations, outbox, lists),
            Err(e) => Err(e),
        };
        match result {
            Ok(outcomes) => {
                self.metrics
                    .writer_batch_size
                    .observe(mutations.len() as f64);
                self.metrics
                    .writer_batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                let changes: Vec<Change> = outcomes
                    .iter()
                    .filter_map(|outcome| match outcome {
                        Ok(Outcome::Inserted(s)) if s.created => {
                            Some(Change::Created(s.row.clone()))
                        }
                        Ok(Outcome::Edited(row)) => Some(Change::Updated(row.clone())),
                        Ok(Outcome::Deleted(row)) => Some(Change::Deleted(row.clone())),
                        Ok(Outcome::Erased(e)) => Some(Change::Erased(e.clone())),
                        _ => None,
                    })
                    .collect();
                let created = changes
                    .iter()
                    .filter(|c| matches!(c, Change::Created(_)))
                    .count();
                if lists == Lists::Deferred {
                    let ids = changes.iter().filter_map(|c| match c {
                        Change::Created(row) => Some(row.id),
                        _ => None,
                    });
                    self.moves.defer(ids, Instant::now());
                }
                self.metrics.messages_in.inc_by(created as u64);
                if !changes.is_empty() {
                    (self.on_commit)(&changes);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) if replies.len() > 1 && self.connection_alive() => {
                // The database is there, so one request may have failed the batch with
                // what it carries: apply each on its own, and only that one fails.
                log::warn!(
                    "writer: batch of {} failed ({e}); applying one by one",
                    replies.len()
                );
                for request in mutations.into_iter().zip(replies) {
                    self.process(vec![request]);
                }
            }
            Err(e) => {
                log::error!("writer: batch of {} failed: {e}", replies.len());
                // The connection may be broken; open a fresh one for the next batch.
                self.conn.reset();
                for reply in replies {
                    let _ = reply.send(Err(Error::Unavailable(e.to_string())));
                }
            }
        }
    }

    /// Whether the open connection still answers (after a failed transaction).
    fn connection_alive(&mut self) -> bool {
        use diesel::RunQueryDsl;
        self.conn
            .current()
            .is_some_and(|conn| diesel::sql_query("SELECT 1").execute(conn).is_ok())
    }
}
