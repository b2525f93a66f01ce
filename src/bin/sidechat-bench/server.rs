//! The server under test: started here (one replica or several) against a private
//! Postgres (durable: fsync and synchronous_commit on) and, for several, a Redis or Redis
//! Cluster of its own; or one already running, given by address.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sidechat::chat::UserId;
use sidechat::dev::redis::{self, ClusterShape, RedisCluster, RedisServer};
use sidechat::dev::{ClusterOptions, PgCluster};
use sidechat::settings::Secret;

use crate::procfs;

pub const HMAC_SECRET: &str = "bench-hmac-secret-0123456789abcdef0123";
pub const API_KEY: &str = "bench-api-key-0123456789abcdef";

/// The broker the started replicas share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    /// In-process: one replica only.
    Memory,
    /// One redis-server, started here.
    Redis,
    /// Three masters with a replica each, started here.
    RedisCluster,
}

/// A Redis of the bench's own.
enum OwnBroker {
    Redis(RedisServer),
    Cluster(RedisCluster),
}

pub struct Server {
    /// The first replica (`127.0.0.1:4000`): the one every scenario but `messages` uses.
    pub address: String,
    /// Every replica's address.
    pub addresses: Vec<String>,
    pids: Vec<u32>,
    pub database_url: String,
    postgres_dir: Option<String>,
    _pg: Option<PgCluster>,
    children: Vec<Child>,
    broker: Option<OwnBroker>,
}

impl Server {
    /// Starts `replicas` processes of `sidechat serve` (the binary beside this one) on
    /// free ports, sharing a new private Postgres cluster under the temp directory and a
    /// broker of `broker`'s kind.
    pub fn start(
        replicas: usize,
        broker: BrokerKind,
        extra_env: &[(&str, String)],
        postgres_settings: &[(String, String)],
    ) -> anyhow::Result<Server> {
        if replicas == 0 {
            bail!("--replicas must be at least 1");
        }
        if replicas > 1 && broker == BrokerKind::Memory {
            bail!(
                "--replicas {replicas} needs a broker between them: --broker redis or redis-cluster"
            );
        }
        let data_dir = std::env::temp_dir().join(format!("sidechat-bench-{}", std::process::id()));
        let pg = PgCluster::start(ClusterOptions {
            data_dir,
            fast_unsafe: false,
            remove_on_stop: true,
            settings: [
                // Where Postgres spends its time, planning included.
                ("shared_preload_libraries", "pg_stat_statements"),
                ("pg_stat_statements.track_planning", "on"),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .into_iter()
            // Later lines win in postgresql.conf: the caller's settings come last.
            .chain(postgres_settings.iter().cloned())
            .collect(),
        })?;
        pg.create_database("bench")?;
        let database_url = pg.url("bench");
        let (broker, broker_env) = start_broker(broker)?;
        let binary: PathBuf = std::env::current_exe()?
            .parent()
            .context("the bench binary has a directory")?
            .join("sidechat");
        let mut server = Server {
            address: String::new(),
            addresses: Vec::new(),
            pids: Vec::new(),
            database_url,
            postgres_dir: Some(pg.data_dir().display().to_string()),
            _pg: Some(pg),
            children: Vec::new(),
            broker,
        };
        for _ in 0..replicas {
            let port = sidechat::dev::free_port()?;
            let mut command = Command::new(&binary);
            command
                .arg("serve")
                .env("DATABASE_URL", &server.database_url)
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
            for (key, value) in broker_env.iter().chain(extra_env) {
                command.env(key, value);
            }
            let child = command.spawn().with_context(|| {
                format!(
                    "starting {} (cargo build --release first)",
                    binary.display()
                )
            })?;
            server.pids.push(child.id());
            server.children.push(child);
            let address = format!("127.0.0.1:{port}");
            // One at a time: the first runs the migrations the others then find done.
            wait_listening(&address)?;
            server.addresses.push(address);
        }
        server.address = server.addresses[0].clone();
        Ok(server)
    }

    /// A server someone else runs.
    pub fn external(address: String, pid: Option<u32>, database_url: String) -> Server {
        Server {
            addresses: vec![address.clone()],
            address,
            pids: pid.into_iter().collect(),
            database_url,
            postgres_dir: None,
            _pg: None,
            children: Vec::new(),
            broker: None,
        }
    }

    /// The first replica's process id, when known.
    pub fn pid(&self) -> Option<u32> {
        self.pids.first().copied()
    }

    /// A socket URL on the first replica.
    pub fn socket_url(&self, token: &str) -> String {
        crate::client::socket_url(&self.address, token)
    }

    /// Resident memory of every replica, when known.
    pub fn rss_kib(&self) -> Option<u64> {
        (!self.pids.is_empty()).then(|| self.pids.iter().copied().map(procfs::rss_kib).sum())
    }

    /// CPU milliseconds of the replicas and of the private Postgres (the postmaster with
    /// the backends that ended, and the live ones), when known.
    pub fn cpu_ms(&self) -> (Option<u64>, Option<u64>) {
        let server =
            (!self.pids.is_empty()).then(|| self.pids.iter().copied().map(procfs::cpu_ms).sum());
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

    /// CPU milliseconds of the Redis processes this bench started.
    pub fn broker_cpu_ms(&self) -> Option<u64> {
        let pids = match self.broker.as_ref()? {
            OwnBroker::Redis(redis) => vec![redis.pid()],
            OwnBroker::Cluster(cluster) => cluster.pids(),
        };
        Some(pids.into_iter().map(procfs::cpu_ms).sum())
    }

    /// PUBLISH and SPUBLISH commands the bench's Redis has run (on a cluster, its
    /// masters: a replica also counts what it replays from its master).
    pub fn broker_publishes(&self) -> anyhow::Result<Option<u64>> {
        let masters = match self.broker.as_ref() {
            None => return Ok(None),
            Some(OwnBroker::Redis(redis)) => vec![redis.port()],
            Some(OwnBroker::Cluster(cluster)) => cluster.masters()?,
        };
        let mut publishes = 0;
        for port in masters {
            let stats = redis::cli(port, &["info", "commandstats"])?;
            publishes += command_calls(&stats, "publish") + command_calls(&stats, "spublish");
        }
        Ok(Some(publishes))
    }
}

/// Settings for the replicas, as their environment variables.
type Env = Vec<(&'static str, String)>;

/// Starts the broker, and says how to reach it.
fn start_broker(kind: BrokerKind) -> anyhow::Result<(Option<OwnBroker>, Env)> {
    Ok(match kind {
        BrokerKind::Memory => (None, Vec::new()),
        BrokerKind::Redis => {
            let redis = RedisServer::start(None)?;
            let env = vec![
                ("SIDECHAT__BROKER__KIND", "redis".to_owned()),
                ("SIDECHAT__BROKER__REDIS_URL", redis.url()),
            ];
            (Some(OwnBroker::Redis(redis)), env)
        }
        BrokerKind::RedisCluster => {
            let cluster = RedisCluster::start(ClusterShape {
                masters: 3,
                replicas_per_master: 1,
                // Long enough that a ping slowed by a busy machine is no failover.
                node_timeout: Duration::from_secs(15),
            })?;
            let env = vec![
                ("SIDECHAT__BROKER__KIND", "redis-cluster".to_owned()),
                ("SIDECHAT__BROKER__REDIS_URLS", cluster.seeds().join(",")),
            ];
            (Some(OwnBroker::Cluster(cluster)), env)
        }
    })
}

/// `calls` of `command` in the text of `INFO commandstats`.
fn command_calls(stats: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    (stats.lines())
        .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

fn wait_listening(address: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(address).is_err() {
        if Instant::now() > deadline {
            bail!("the server did not listen on {address} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.children {
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
