//! The server under test: started here against a private Postgres (durable: fsync and
//! synchronous_commit on), or one already running, given by address.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sidechat::chat::UserId;
use sidechat::dev::{ClusterOptions, PgCluster};
use sidechat::settings::Secret;

use crate::procfs;

pub const HMAC_SECRET: &str = "bench-hmac-secret-0123456789abcdef0123";
pub const API_KEY: &str = "bench-api-key-0123456789abcdef";

pub struct Server {
    /// `127.0.0.1:4000`
    pub address: String,
    pub pid: Option<u32>,
    pub database_url: String,
    postgres_dir: Option<String>,
    _pg: Option<PgCluster>,
    child: Option<Child>,
}

impl Server {
    /// Starts `sidechat serve` (the binary beside this one) on a free port, against a new
    /// private Postgres cluster under the temp directory.
    pub fn start(extra_env: &[(&str, String)]) -> anyhow::Result<Server> {
        let data_dir = std::env::temp_dir().join(format!("sidechat-bench-{}", std::process::id()));
        let pg = PgCluster::start(ClusterOptions {
            data_dir,
            fast_unsafe: false,
            remove_on_stop: true,
            track_statements: true,
        })?;
        pg.create_database("bench")?;
        let database_url = pg.url("bench");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let binary: PathBuf = std::env::current_exe()?
            .parent()
            .context("the bench binary has a directory")?
            .join("sidechat");
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .env("DATABASE_URL", &database_url)
            .env("SIDECHAT__SERVER__HOST", "127.0.0.1")
            .env("SIDECHAT__SERVER__PORT", port.to_string())
            .env("SIDECHAT__SERVER__IDLE_TIMEOUT_S", "3600")
            .env("SIDECHAT__AUTH__HMAC_SECRETS", HMAC_SECRET)
            .env("SIDECHAT__API__KEYS", API_KEY)
            // Budgets so large nothing is refused, yet every push is charged: the
            // figures include what the limiter costs.
            .env("SIDECHAT__LIMITS__MESSAGES_PER_SECOND", "1000000")
            .env("SIDECHAT__LIMITS__BURST", "1000000")
            .env("SIDECHAT__LIMITS__JOINS_PER_SECOND", "1000000")
            .env("SIDECHAT__LIMITS__JOINS_BURST", "1000000")
            .env("SIDECHAT__LIMITS__EVENTS_PER_SECOND", "1000000")
            .env("SIDECHAT__LIMITS__EVENTS_BURST", "1000000")
            .env("SIDECHAT__LIMITS__CONNECTIONS_PER_USER", "0")
            .env("SIDECHAT__DATABASE__POOL_SIZE", "8")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let child = command.spawn().with_context(|| {
            format!(
                "starting {} (cargo build --release first)",
                binary.display()
            )
        })?;
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&address).is_err() {
            if Instant::now() > deadline {
                bail!("the server did not listen on {address} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Server {
            address,
            pid: Some(child.id()),
            database_url,
            postgres_dir: Some(pg.data_dir().display().to_string()),
            _pg: Some(pg),
            child: Some(child),
        })
    }

    /// A server someone else runs.
    pub fn external(address: String, pid: Option<u32>, database_url: String) -> Server {
        Server {
            address,
            pid,
            database_url,
            postgres_dir: None,
            _pg: None,
            child: None,
        }
    }

    pub fn socket_url(&self, token: &str) -> String {
        crate::client::socket_url(&self.address, token)
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.pid.map(procfs::rss_kib)
    }

    /// CPU milliseconds of the server and of the private Postgres (the postmaster with
    /// the backends that ended, and the live ones), when known.
    pub fn cpu_ms(&self) -> (Option<u64>, Option<u64>) {
        let server = self.pid.map(procfs::cpu_ms);
        let postgres = self.postgres_dir.as_ref().map(|dir| {
            procfs::pids_matching(dir)
                .into_iter()
                .map(|postmaster| {
                    procfs::cpu_ms_with_ended_children(postmaster)
                        + procfs::children(postmaster)
                            .into_iter()
                            .map(procfs::cpu_ms)
                            .sum::<u64>()
                })
                .sum()
        });
        (server, postgres)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// The service's own default budgets (`[limits]` of its embedded defaults), to put
/// back what `start` lifts, with the 4004 close off so a flood lasts as long as asked.
pub fn default_budgets() -> anyhow::Result<Vec<(&'static str, String)>> {
    let settings = sidechat::settings::Settings::load(&sidechat::settings::Sources {
        overlays: vec![&format!("[auth]\nhmac_secrets = [\"{HMAC_SECRET}\"]")],
        ..Default::default()
    })?;
    let limits = settings.limits;
    Ok(vec![
        (
            "SIDECHAT__LIMITS__MESSAGES_PER_SECOND",
            limits.messages_per_second.to_string(),
        ),
        ("SIDECHAT__LIMITS__BURST", limits.burst.to_string()),
        (
            "SIDECHAT__LIMITS__JOINS_PER_SECOND",
            limits.joins_per_second.to_string(),
        ),
        (
            "SIDECHAT__LIMITS__JOINS_BURST",
            limits.joins_burst.to_string(),
        ),
        (
            "SIDECHAT__LIMITS__EVENTS_PER_SECOND",
            limits.events_per_second.to_string(),
        ),
        (
            "SIDECHAT__LIMITS__EVENTS_BURST",
            limits.events_burst.to_string(),
        ),
        ("SIDECHAT__LIMITS__ABUSE_CLOSE_S", "0".into()),
    ])
}

/// An HMAC token for `user`, valid for a day.
pub fn token(user: &str) -> anyhow::Result<String> {
    let user = UserId::parse(user).map_err(|e| anyhow::anyhow!("user id {user:?}: {e}"))?;
    Ok(sidechat::auth::mint_hmac(
        &Secret::new(HMAC_SECRET),
        &user,
        chrono::Utc::now().timestamp() + 86_400,
    ))
}
