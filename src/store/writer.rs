//! The writer: one thread, one connection, every change to `messages`.
//!
//! Inserts, edits, deletions and erasures all pass through here, so whatever happens to
//! messages happens, and is broadcast, in one order. Everything waiting in the queue runs
//! in one transaction (runs of inserts as one multi-row INSERT): one fsync covers many
//! messages. On a busy site a message that finds the queue empty waits a moment for
//! others, so that batches form even where each conversation is quiet. Only after COMMIT does the writer hand the changes to `on_commit` (which
//! broadcasts them, in order) and answer each caller. On a database error it answers the
//! batch `Unavailable`, drops the connection and reconnects with backoff on the next batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use diesel::Connection;
use diesel::pg::PgConnection;
use tokio::sync::{mpsc, oneshot};

use super::lazy::LazyConnection;
use super::linger::Linger;
use super::models::{MessageRow, NewMessage};
use super::{Error, messages};
use crate::metrics::Metrics;

/// Most requests in one transaction: well inside Postgres's 65535 bind parameters.
const MAX_BATCH: usize = 512;
/// The lot a lone message waits for on a busy site: most of what sharing a statement
/// saves is in the first few, and each further one adds more to the ack than it saves.
const LINGER_AIM: usize = 4;
/// Requests that may wait for the writer; senders wait for room beyond this.
const QUEUE_CAPACITY: usize = 4096;

/// A committed message, and whether this request created it (false: a resend with a
/// `client_ref` already used, answered with the stored row).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub row: MessageRow,
    pub created: bool,
}

/// An edit of a stored message. `body` replaces, `append` extends (an assistant
/// streaming its answer); both may not be given at once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageEdit {
    pub id: i64,
    pub body: Option<String>,
    pub append: Option<String>,
    pub status: Option<String>,
    pub meta: Option<serde_json::Value>,
    /// The body after the edit may not be longer.
    pub max_body_bytes: usize,
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Erasure {
    pub user_id: String,
    /// (id, topic) of every message removed.
    pub messages: Vec<(i64, String)>,
    /// Rooms the user was a member of.
    pub rooms: Vec<String>,
    /// Blocks the user gave or got, as (blocker, blocked): every replica forgets them.
    pub blocks: Vec<(String, String)>,
}

/// One change to make.
#[derive(Debug, Clone)]
pub enum Mutation {
    Insert(NewMessage),
    Edit(MessageEdit),
    /// Moderation: the row stays as a tombstone with its body cleared.
    Delete {
        id: i64,
    },
    /// Every message the user sent, and their memberships.
    EraseUser {
        user_id: String,
    },
}

/// What one mutation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Inserted(Stored),
    Edited(MessageRow),
    Deleted(MessageRow),
    Erased(Erasure),
}

/// A committed change, as `on_commit` sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Created(MessageRow),
    Updated(MessageRow),
    Deleted(MessageRow),
    Erased(Erasure),
}

/// Called on the writer thread after each COMMIT with its changes, in order.
pub type OnCommit = Box<dyn Fn(&[Change]) + Send>;

type Reply = oneshot::Sender<Result<Outcome, Error>>;

// Nearly every command is an Apply, so boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Command {
    Apply(Mutation, Reply),
    /// Finish everything queued before it, then stop.
    Stop,
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
    /// outbox in its own transaction, due after that delay (`store::outbox`). A message
    /// that finds the queue empty on a busy site waits `window` for others (`linger`).
    pub fn start(
        connect_url: String,
        connect_timeout: Duration,
        window: Duration,
        outbox: Option<Duration>,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> std::io::Result<(Writer, WriterExit, thread::JoinHandle<()>)> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (exit_tx, exit_rx) = oneshot::channel();
        let handle = thread::Builder::new()
            .name("sidechat-writer".into())
            .spawn(move || {
                let _exit = ExitSignal(Some(exit_tx));
                WriterLoop {
                    rx,
                    linger: Linger::new(window, LINGER_AIM),
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
                    Command::Stop => {
                        stopping = true;
                        break;
                    }
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
            }
            self.linger.took(batch.len(), Instant::now());
            if !batch.is_empty() {
                self.process(batch);
            }
        }
        log::info!("writer stopped");
    }

    fn process(&mut self, batch: Vec<(Mutation, Reply)>) {
        let started = Instant::now();
        let (mutations, replies): (Vec<Mutation>, Vec<Reply>) = batch.into_iter().unzip();
        let outbox = self.outbox;
        let result = match self.conn.get() {
            Ok(conn) => apply_batch(conn, &mutations, outbox),
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

/// Per-request results of a committed batch; `Err` for the whole batch means nothing
/// was committed.
type BatchResult = Result<Vec<Result<Outcome, Error>>, Error>;

/// Applies one batch in one transaction, in order. Another replica's writer inserting
/// the same client_ref at the same moment is no error: the insert waits for it, skips
/// the row, and the lookup then finds theirs.
///
/// A batch of new messages and nothing else, with no outbox to fill, is one INSERT:
/// atomic on its own, so it runs without BEGIN and COMMIT around it. At a low rate,
/// where every message is its own batch, that is two round trips of three saved.
fn apply_batch(
    conn: &mut PgConnection,
    batch: &[Mutation],
    outbox: Option<Duration>,
) -> BatchResult {
    let only_inserts: Option<Vec<&NewMessage>> = batch
        .iter()
        .map(|m| match m {
            Mutation::Insert(message) => Some(message),
            _ => None,
        })
        .collect();
    if let (None, Some(inserts)) = (outbox, only_inserts) {
        return insert_run(conn, &inserts);
    }
    conn.transaction(|conn| {
        let outcomes = apply_batch_once(conn, batch)?;
        if let Some(delay) = outbox {
            let created: Vec<&MessageRow> = outcomes
                .iter()
                .filter_map(|outcome| match outcome {
                    Ok(Outcome::Inserted(stored)) if stored.created => Some(&stored.row),
                    _ => None,
                })
                .collect();
            super::outbox::enqueue(conn, &created, delay)?;
        }
        Ok(outcomes)
    })
}

fn apply_batch_once(conn: &mut PgConnection, batch: &[Mutation]) -> BatchResult {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut inserts: Vec<&NewMessage> = Vec::new();
    for mutation in batch {
        match mutation {
            Mutation::Insert(message) => inserts.push(message),
            other => {
                // Keep the order: the inserts queued before this change go first.
                outcomes.extend(insert_run(conn, &std::mem::take(&mut inserts))?);
                outcomes.push(apply_one(conn, other)?);
            }
        }
    }
    outcomes.extend(insert_run(conn, &inserts)?);
    Ok(outcomes)
}

/// One mutation on its own. The outer `Err` fails the transaction; the inner one is
/// this request's answer (unknown message, body too long) and changes nothing.
fn apply_one(
    conn: &mut PgConnection,
    mutation: &Mutation,
) -> Result<Result<Outcome, Error>, Error> {
    Ok(match mutation {
        Mutation::Insert(message) => insert_run(conn, &[message])?
            .pop()
            .unwrap_or_else(|| Err(Error::Unavailable("the insert returned nothing".into()))),
        Mutation::Edit(edit) => {
            messages::plan_for_now(conn)?;
            messages::edit(conn, edit)?.map(Outcome::Edited)
        }
        Mutation::Delete { id } => messages::tombstone(conn, *id)?.map(Outcome::Deleted),
        Mutation::EraseUser { user_id } => {
            Ok(Outcome::Erased(messages::erase_user(conn, user_id)?))
        }
    })
}

/// Inserts a run of messages in one statement. A resend with a `client_ref` already
/// stored (skipped by the unique key) or earlier in the run is answered with that row.
///
/// Once the INSERT has returned, nothing fails the run as a whole: outside a
/// transaction its rows are already committed, and a run answered `Unavailable` would be
/// retried and stored twice. A row that cannot be accounted for fails only its request.
fn insert_run(
    conn: &mut PgConnection,
    run: &[&NewMessage],
) -> Result<Vec<Result<Outcome, Error>>, Error> {
    if run.is_empty() {
        return Ok(Vec::new());
    }
    // Within the run, a repeated (sender, client_ref) is the first one again.
    enum Source {
        Row(usize),
        SameAs(usize),
    }
    let mut to_insert: Vec<&NewMessage> = Vec::with_capacity(run.len());
    let mut first_in_run: HashMap<(&str, &str), usize> = HashMap::new();
    let mut sources = Vec::with_capacity(run.len());
    for &message in run {
        let key = message
            .client_ref
            .as_deref()
            .map(|r| (message.sender_id.as_str(), r));
        let source = match key.map(|key| first_in_run.entry(key)) {
            Some(Entry::Occupied(seen)) => Source::SameAs(*seen.get()),
            Some(Entry::Vacant(first)) => {
                first.insert(to_insert.len());
                to_insert.push(message);
                Source::Row(to_insert.len() - 1)
            }
            None => {
                to_insert.push(message);
                Source::Row(to_insert.len() - 1)
            }
        };
        sources.push(source);
    }

    // Rows come back in the order given, less the ones the unique key skipped.
    let mut returned = messages::insert_all(conn, &to_insert)?
        .into_iter()
        .peekable();
    let mut rows: Vec<Option<(MessageRow, bool)>> = vec![None; to_insert.len()];
    let mut resent: Vec<usize> = Vec::new();
    for (index, message) in to_insert.iter().enumerate() {
        let this_one = |row: &MessageRow| {
            row.sender_id == message.sender_id
                && row.client_ref == message.client_ref
                && row.topic == message.topic
        };
        match (returned.next_if(this_one), rows.get_mut(index)) {
            (Some(row), Some(slot)) => *slot = Some((row, true)),
            (None, _) if message.client_ref.is_some() => resent.push(index),
            _ => log::error!("writer: an insert of the batch was skipped"),
        }
    }
    if !resent.is_empty() {
        let pairs: Vec<(&str, &str)> = resent
            .iter()
            .filter_map(|&i| {
                let m = to_insert.get(i)?;
                Some((m.sender_id.as_str(), m.client_ref.as_deref()?))
            })
            .collect();
        // A transaction of its own when the insert ran alone (a savepoint otherwise):
        // the lookup plans for the table as it is now.
        let stored = conn
            .transaction(|conn| {
                messages::plan_for_now(conn)?;
                messages::by_client_refs(conn, &pairs)
            })
            .unwrap_or_else(|e| {
                log::warn!(
                    "writer: looking up {} resent messages failed: {e}",
                    pairs.len()
                );
                Vec::new()
            });
        for row in stored {
            let index = resent.iter().copied().find(|&i| {
                to_insert
                    .get(i)
                    .is_some_and(|m| row.sender_id == m.sender_id && row.client_ref == m.client_ref)
            });
            if let Some(slot) = index.and_then(|i| rows.get_mut(i)) {
                *slot = Some((row, false));
            }
        }
    }
    let answer = |index: usize, repeated: bool| {
        rows.get(index)
            .cloned()
            .flatten()
            .map(|(row, created)| {
                Ok(Outcome::Inserted(Stored {
                    row,
                    created: created && !repeated,
                }))
            })
            .unwrap_or_else(|| Err(Error::Unavailable("the message could not be stored".into())))
    };
    Ok(sources
        .into_iter()
        .map(|source| match source {
            Source::Row(index) => answer(index, false),
            Source::SameAs(index) => answer(index, true),
        })
        .collect())
}
