//! A connection a dedicated thread owns: opened when first needed, dropped after an
//! error, and opened again no sooner than a doubling backoff allows.

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;

use super::{Error, connect};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct LazyConnection {
    url: String,
    timeout: Duration,
    /// Run on each new connection (session settings).
    setup: fn(&mut PgConnection) -> Result<(), Error>,
    conn: Option<PgConnection>,
    retry_at: Instant,
    backoff: Duration,
}

impl LazyConnection {
    pub fn new(
        url: String,
        timeout: Duration,
        setup: fn(&mut PgConnection) -> Result<(), Error>,
    ) -> LazyConnection {
        LazyConnection {
            url,
            timeout,
            setup,
            conn: None,
            retry_at: Instant::now(),
            backoff: MIN_BACKOFF,
        }
    }

    /// The open connection, or a new one unless the last attempt failed too recently.
    pub fn get(&mut self) -> Result<&mut PgConnection, Error> {
        if self.conn.is_none() {
            if Instant::now() < self.retry_at {
                return Err(Error::Unavailable("database unreachable; retrying".into()));
            }
            let opened = connect(&self.url, self.timeout).and_then(|mut conn| {
                (self.setup)(&mut conn)?;
                Ok(conn)
            });
            match opened {
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

    /// The open connection, if any, without opening one.
    pub fn current(&mut self) -> Option<&mut PgConnection> {
        self.conn.as_mut()
    }

    /// Forgets the connection after an error: the next `get` opens a fresh one.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}
