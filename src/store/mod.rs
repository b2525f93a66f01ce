//! Postgres: the pool for reads, the batching writer, and every query.
//!
//! Query functions take `&mut PgConnection`, never the pool, so the writer thread, the
//! blocking readers and the tests all call the same functions.

mod batch;
pub mod blocks;
pub mod conversations;
mod erasure;
mod lazy;
mod linger;
pub mod list_moves;
pub mod messages;
pub mod models;
pub mod mutation;
pub mod open_chats;
pub mod outbox;
pub mod prepared;
pub mod push;
pub mod reactions;
pub mod receipts;
pub mod reports;
pub mod retention;
pub mod rooms;
pub mod schema;
pub mod writer;

use std::time::Duration;

use diesel::Connection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use models::{MessageRow, NewMessage};
pub use mutation::{Author, Change, Erasure, MessageEdit, Mutation, Outcome, Stored};
pub use writer::{Batching, Writer, WriterExit};

/// `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PooledPg = PooledConnection<ConnectionManager<PgConnection>>;

/// What callers branch on. Anything the database says that is not one of these is
/// `Unavailable`: the caller tells the client that nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found")]
    NotFound,
    /// An edit would make a body longer than allowed.
    #[error("too large")]
    TooLarge,
    /// The one asking may not change this message (not its author, past the edit
    /// window, not a user's message).
    #[error("forbidden")]
    Forbidden,
    /// A unique key refused the row (e.g. a `client_ref` stored by another writer).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::NotFound => Error::NotFound,
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                info,
            ) => Error::Conflict(info.message().to_owned()),
            other => Error::Unavailable(other.to_string()),
        }
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// How a connection notices a Postgres that stopped answering without closing it (its
/// host died, the network split): TCP keepalives from 5 s of silence, and
/// `tcp_user_timeout` for data sent and never acknowledged. Either gives the connection
/// up after about 10 s; without them a statement in flight waits for the kernel's
/// retransmissions, about 15 minutes. A URL that names one of these keeps its own.
const DEAD_PEER: [(&str, &str); 5] = [
    ("keepalives", "1"),
    ("keepalives_idle", "5"),
    ("keepalives_interval", "1"),
    ("keepalives_count", "5"),
    ("tcp_user_timeout", "10000"),
];

/// Adds libpq's `connect_timeout` (so an unreachable database fails in seconds rather
/// than hanging on the kernel's TCP timeout) and the dead-peer settings above to a
/// connection string, a URL or `key=value` words, each unless it names it. One that
/// names a `service` gets no dead-peer settings: its service file may set them, and
/// what the string names would override the file.
pub fn with_timeouts(conninfo: &str, timeout: Duration) -> String {
    let is_url = conninfo.contains("://");
    let between: &[char] = if is_url {
        &['?', '&']
    } else {
        &[' ', '\t', '\n']
    };
    let names = |conninfo: &str, key: &str| {
        let prefix = format!("{key}=");
        conninfo
            .split(between)
            .any(|part| part.starts_with(&prefix))
    };
    let connect = timeout.as_secs().max(1).to_string();
    let dead_peer = if names(conninfo, "service") {
        &[][..]
    } else {
        &DEAD_PEER[..]
    };
    let mut conninfo = conninfo.to_owned();
    for &(key, value) in [("connect_timeout", connect.as_str())]
        .iter()
        .chain(dead_peer)
    {
        if names(&conninfo, key) {
            continue;
        }
        let separator = match (is_url, conninfo.contains('?')) {
            (false, _) => " ",
            (true, true) => "&",
            (true, false) => "?",
        };
        conninfo = format!("{conninfo}{separator}{key}={value}");
    }
    conninfo
}

/// Every service connection runs short queries only. No parallel workers and no JIT:
/// starting workers or compiling a plan takes milliseconds, longer than any query here
/// runs, and on a large table the planner expects a user's unread summary to be big
/// enough for both (in the benchmark the login summary went from 4 to 12 ms with
/// workers, and to 37 ms whenever JIT kicked in).
const SHORT_QUERIES: &str = "SET max_parallel_workers_per_gather = 0; SET jit = off";

/// Read-pool connections keep their statements prepared, and Postgres plans each one
/// once, a generic plan, rather than at every call: planning the receipt statement cost
/// more than running it (and left to choose, Postgres kept planning it, since a plan for
/// a one-element array looks cheaper than one for any array). A statement that wants a
/// plan for its values runs as `sql_query`, which is never kept. The trap of a kept plan
/// is a plan made while `messages` was empty: connections live for days while the table
/// grows, and a plan that scans the empty table whole would go on scanning it (the
/// writer's idempotency lookup once slowed to seconds per batch that way). Here
/// sequential scans are priced out instead, so a plan made on an empty table uses the
/// same index as one made on a full one (`query_plans` tests both). Every read this
/// pool runs on the hot path is served by an index; one that is not still scans.
///
/// And they commit without waiting for the WAL flush. What they write on the hot path
/// is read state, which may lag a crash by a moment (a message shows unread again);
/// writes that must survive a crash go through `durably`. Messages are never stored
/// here: the writer commits them synchronously. (Retention deletes them with these
/// settings: a deletion lost in a crash is made again by the next run.)
#[derive(Debug)]
struct ReadPoolConnection;

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for ReadPoolConnection {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(&format!("{SHORT_QUERIES}; {READ_SETTINGS}"))
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// What `ReadPoolConnection` sets beyond `SHORT_QUERIES`.
const READ_SETTINGS: &str = "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan; \
     SET synchronous_commit = off";

/// Sets up a connection opened with `connect` (which sets `SHORT_QUERIES`) as the read
/// pool's are: the receipts thread's own connection.
pub(crate) fn set_up_for_reads(conn: &mut PgConnection) -> Result<(), Error> {
    use diesel::connection::SimpleConnection;
    conn.batch_execute(READ_SETTINGS)?;
    Ok(())
}

/// Sets up the writer's connection. It keeps its batch INSERT prepared, and after a few
/// runs Postgres may keep a generic plan for it: sequential scans are priced out so that
/// the lists' parts (rooms, conversations) keep their indexes in a plan made while those
/// tables were small, as the read pool's plans do.
pub fn set_up_for_writes(conn: &mut PgConnection) -> Result<(), Error> {
    use diesel::connection::SimpleConnection;
    conn.batch_execute("SET enable_seqscan = off")?;
    Ok(())
}

/// Runs `work` in a transaction that waits for the WAL flush on commit, for writes on
/// a read-pool connection that must survive a crash (room membership).
pub fn durably<T>(
    conn: &mut PgConnection,
    work: impl FnOnce(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    use diesel::RunQueryDsl;
    conn.transaction(|conn| {
        diesel::sql_query("SET LOCAL synchronous_commit = on").execute(conn)?;
        work(conn)
    })
}

/// The read pool. r2d2 waits `timeout` for a connection (its default of 30 s would
/// leave a client hanging far longer than `unavailable` should take).
pub fn read_pool(url: &str, size: u32, timeout: Duration) -> Result<PgPool, Error> {
    let manager = ConnectionManager::<PgConnection>::new(with_timeouts(url, timeout));
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(timeout)
        .test_on_check_out(false)
        .connection_customizer(Box::new(ReadPoolConnection))
        .build(manager)
        .map_err(Error::from)
}

/// One connection, for start-up checks, migrations and the writer. The writer's hot
/// statement (the insert) has one plan whatever the table's size, so it keeps cached
/// plans; its rare lookups plan afresh (`messages::plan_for_now`).
pub fn connect(url: &str, timeout: Duration) -> Result<PgConnection, Error> {
    use diesel::connection::SimpleConnection;
    let mut conn = PgConnection::establish(&with_timeouts(url, timeout))
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    conn.batch_execute(SHORT_QUERIES)?;
    Ok(conn)
}

/// Held while migrating: replicas starting together take turns, and the later ones find
/// nothing left to do (a migration outside a transaction is not otherwise serialised).
const MIGRATION_LOCK: i64 = 0x5349_4445_4348_4154; // "SIDECHAT"

/// Takes `MIGRATION_LOCK`. Tries rather than waits in Postgres: a waiting statement
/// holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the holder's migration waits for
/// every snapshot to end, which would deadlock the two.
fn lock_migrations(conn: &mut PgConnection) -> Result<(), Error> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let mut told = false;
    loop {
        let attempt: Locked = diesel::sql_query(format!(
            "SELECT pg_try_advisory_lock({MIGRATION_LOCK}) AS locked"
        ))
        .get_result(conn)?;
        if attempt.locked {
            return Ok(());
        }
        if !told {
            log::info!("waiting for another replica to finish migrating");
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Applies pending migrations; returns how many ran.
pub fn run_migrations(conn: &mut PgConnection) -> Result<usize, Error> {
    use diesel::RunQueryDsl;
    lock_migrations(conn)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|applied| applied.len())
        .map_err(|e| Error::Unavailable(format!("migrations failed: {e}")));
    // Closing the connection would release it too; callers may keep theirs.
    let unlocked =
        diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(conn);
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

/// Whether every embedded migration has been applied.
/// Whether the database has ever been migrated (diesel's bookkeeping table is there),
/// asked without creating anything.
pub fn has_schema(conn: &mut PgConnection) -> Result<bool, Error> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Exists =
        diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS exists")
            .get_result(conn)?;
    Ok(found.exists)
}

pub fn migrations_applied(conn: &mut PgConnection) -> Result<bool, Error> {
    conn.has_pending_migration(MIGRATIONS)
        .map(|pending| !pending)
        .map_err(|e| Error::Unavailable(e.to_string()))
}

/// Runs `query` with a pooled connection on the blocking pool, never on an async
/// worker thread. Pool exhaustion and a dead database both come back as `Unavailable`.
///
/// After a database restart every idle pooled connection is dead, and each would fail
/// one request before the pool drops it: a query that fails on a connection found
/// broken runs again on another, until one is alive (a dead one fails at once). Every
/// query here is a read or an idempotent write, and a broken connection's open
/// transaction was rolled back.
pub async fn blocking<T, F>(pool: &PgPool, mut query: F) -> Result<T, Error>
where
    F: FnMut(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    use diesel::r2d2::R2D2Connection;
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        // Each dead connection is dropped from the pool as it fails, so the pool's size
        // bounds the retries.
        for _ in 0..pool.max_size() {
            let mut conn = pool.get()?;
            match query(&mut conn) {
                Err(Error::Unavailable(_)) if conn.is_broken() => continue,
                answer => return answer,
            }
        }
        let mut conn = pool.get()?;
        query(&mut conn)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_the_timeouts_it_does_not_name() {
        let url = with_timeouts("postgres://db/app", Duration::from_secs(5));
        assert_eq!(
            url,
            "postgres://db/app?connect_timeout=5&keepalives=1&keepalives_idle=5\
             &keepalives_interval=1&keepalives_count=5&tcp_user_timeout=10000"
        );
        let own = "postgres://a,b/app?target_session_attrs=read-write&keepalives_idle=30\
                   &tcp_user_timeout=0";
        let url = with_timeouts(own, Duration::from_secs(2));
        assert!(url.starts_with(own), "{url}");
        assert!(url.contains("&connect_timeout=2&keepalives=1&"), "{url}");
        assert!(!url.contains("keepalives_idle=5"), "{url}");
        assert!(!url.contains("tcp_user_timeout=10000"), "{url}");
    }

    #[test]
    fn key_value_words_get_them_as_words() {
        let words = with_timeouts("host=db dbname=app connect_timeout=3", Duration::ZERO);
        assert_eq!(
            words,
            "host=db dbname=app connect_timeout=3 keepalives=1 keepalives_idle=5 \
             keepalives_interval=1 keepalives_count=5 tcp_user_timeout=10000"
        );
        // A service file's settings are its own.
        let service = with_timeouts("service=chat", Duration::from_secs(5));
        assert_eq!(service, "service=chat connect_timeout=5");
    }
}
