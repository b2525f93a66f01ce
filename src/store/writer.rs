//! The batching writer: one thread, one connection, group commit.
//!
//! Everything waiting in the queue goes into one multi-row INSERT in one transaction, so
//! one fsync covers many messages. Only after COMMIT does the writer hand the new rows to
//! `on_commit` (which broadcasts them, in id order) and answer each sender. On a database
//! error it answers its batch `Unavailable`, drops the connection and reconnects with
//! backoff on the next batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::thread;
use std::time::{Duration, Instant};

use diesel::Connection;
use diesel::pg::PgConnection;
use tokio::sync::{mpsc, oneshot};

use super::models::{MessageRow, NewMessage};
use super::{Error, connect, messages};

/// Most messages in one INSERT: well inside Postgres's 65535 bind parameters.
const MAX_BATCH: usize = 512;
/// Requests that may wait for the writer; senders wait for room beyond this.
const QUEUE_CAPACITY: usize = 4096;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A committed message, and whether this request created it (false: a resend with a
/// `client_ref` already used, answered with the stored row).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub row: MessageRow,
    pub created: bool,
}

/// Called on the writer thread after each COMMIT with the rows it created, in id order.
pub type OnCommit = Box<dyn Fn(&[MessageRow]) + Send>;

// Nearly every command is a Write, so boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Command {
    Write {
        message: NewMessage,
        reply: oneshot::Sender<Result<Stored, Error>>,
    },
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
    /// Starts the writer thread. `connect_url` is opened on the thread, lazily.
    pub fn start(
        connect_url: String,
        connect_timeout: Duration,
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
                    url: connect_url,
                    timeout: connect_timeout,
                    conn: None,
                    retry_at: Instant::now(),
                    backoff: MIN_BACKOFF,
                    on_commit,
                }
                .run();
            })?;
        Ok((Writer { queue }, exit_rx, handle))
    }

    /// Stores one message; resolves after COMMIT. `Unavailable` means nothing was stored.
    pub async fn write(&self, message: NewMessage) -> Result<Stored, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::Write { message, reply })
            .await
            .map_err(|_| Error::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the writer dropped the request".into()))?
    }

    /// Asks the thread to finish what is queued and stop. Join its handle to wait.
    pub async fn stop(&self) {
        let _ = self.queue.send(Command::Stop).await;
    }
}

struct WriterLoop {
    rx: mpsc::Receiver<Command>,
    url: String,
    timeout: Duration,
    conn: Option<PgConnection>,
    retry_at: Instant,
    backoff: Duration,
    on_commit: OnCommit,
}

type Pending = (NewMessage, oneshot::Sender<Result<Stored, Error>>);

impl WriterLoop {
    fn run(mut self) {
        let mut stopping = false;
        while !stopping {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut batch: Vec<Pending> = Vec::new();
            for command in
                std::iter::once(first).chain(std::iter::from_fn(|| self.rx.try_recv().ok()))
            {
                match command {
                    Command::Write { message, reply } => batch.push((message, reply)),
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
                self.process(batch);
            }
        }
        log::info!("writer stopped");
    }

    fn process(&mut self, batch: Vec<Pending>) {
        let result = match self.connection() {
            Ok(conn) => write_batch(conn, &batch),
            Err(e) => Err(e),
        };
        match result {
            Ok(stored) => {
                self.backoff = MIN_BACKOFF;
                let created: Vec<MessageRow> = stored
                    .iter()
                    .filter(|s| s.created)
                    .map(|s| s.row.clone())
                    .collect();
                if !created.is_empty() {
                    (self.on_commit)(&created);
                }
                for ((_, reply), stored) in batch.into_iter().zip(stored) {
                    let _ = reply.send(Ok(stored));
                }
            }
            Err(e) => {
                log::error!("writer: batch of {} failed: {e}", batch.len());
                // The connection may be broken; open a fresh one for the next batch.
                self.conn = None;
                for (_, reply) in batch {
                    let _ = reply.send(Err(Error::Unavailable(e.to_string())));
                }
            }
        }
    }

    /// The open connection, or a new one unless the last attempt failed too recently.
    fn connection(&mut self) -> Result<&mut PgConnection, Error> {
        if self.conn.is_none() {
            if Instant::now() < self.retry_at {
                return Err(Error::Unavailable("database unreachable; retrying".into()));
            }
            match connect(&self.url, self.timeout) {
                Ok(conn) => {
                    self.backoff = MIN_BACKOFF;
                    self.conn = Some(conn);
                }
                Err(e) => {
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(e);
                }
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Error::Unavailable("no connection".into()))
    }
}

/// Writes one batch in one transaction. Returns one `Stored` per request, in order.
fn write_batch(conn: &mut PgConnection, batch: &[Pending]) -> Result<Vec<Stored>, Error> {
    // A concurrent writer (another replica) may insert the same client_ref between our
    // lookup and our insert; the unique key then fails the transaction and one more try
    // finds the row.
    match conn.transaction(|conn| write_batch_once(conn, batch)) {
        Err(Error::Conflict(_)) => conn.transaction(|conn| write_batch_once(conn, batch)),
        other => other,
    }
}

fn write_batch_once(conn: &mut PgConnection, batch: &[Pending]) -> Result<Vec<Stored>, Error> {
    let pairs: Vec<(&str, &str)> = batch
        .iter()
        .filter_map(|(m, _)| Some((m.sender_id.as_str(), m.client_ref.as_deref()?)))
        .collect();
    let mut known: HashMap<(String, String), MessageRow> = messages::by_client_refs(conn, &pairs)?
        .into_iter()
        .filter_map(|row| Some(((row.sender_id.clone(), row.client_ref.clone()?), row)))
        .collect();

    // Which requests insert a row, and which repeat one already stored or earlier in
    // this batch.
    enum Source {
        Existing(MessageRow),
        Inserted(usize),
        SameAs((String, String)),
    }
    let mut to_insert: Vec<NewMessage> = Vec::new();
    let mut first_in_batch: HashMap<(String, String), usize> = HashMap::new();
    let mut sources = Vec::with_capacity(batch.len());
    for (message, _) in batch {
        let key = message
            .client_ref
            .as_ref()
            .map(|r| (message.sender_id.clone(), r.clone()));
        let source = match key {
            Some(key) => {
                if let Some(row) = known.get(&key) {
                    Source::Existing(row.clone())
                } else {
                    match first_in_batch.entry(key) {
                        Entry::Occupied(seen) => Source::SameAs(seen.key().clone()),
                        Entry::Vacant(first) => {
                            first.insert(to_insert.len());
                            to_insert.push(message.clone());
                            Source::Inserted(to_insert.len() - 1)
                        }
                    }
                }
            }
            None => {
                to_insert.push(message.clone());
                Source::Inserted(to_insert.len() - 1)
            }
        };
        sources.push(source);
    }

    let inserted = messages::insert_all(conn, &to_insert)?;
    if inserted.len() != to_insert.len() {
        return Err(Error::Unavailable(format!(
            "inserted {} rows for {} messages",
            inserted.len(),
            to_insert.len()
        )));
    }
    for (index, row) in inserted.iter().enumerate() {
        if let Some(r) = &row.client_ref
            && first_in_batch.get(&(row.sender_id.clone(), r.clone())) == Some(&index)
        {
            known.insert((row.sender_id.clone(), r.clone()), row.clone());
        }
    }
    sources
        .into_iter()
        .map(|source| match source {
            Source::Existing(row) => Ok(Stored {
                row,
                created: false,
            }),
            Source::Inserted(i) => inserted
                .get(i)
                .cloned()
                .map(|row| Stored { row, created: true })
                .ok_or_else(|| Error::Unavailable("missing inserted row".into())),
            Source::SameAs(key) => known
                .get(&key)
                .cloned()
                .map(|row| Stored {
                    row,
                    created: false,
                })
                .ok_or_else(|| Error::Unavailable("missing repeated row".into())),
        })
        .collect()
}
