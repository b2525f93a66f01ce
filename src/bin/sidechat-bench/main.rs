//! sidechat-bench: measures the service over real sockets. Prints one JSON object per
//! run on stdout, and a readable line on stderr. See BENCHMARKS.md for method and figures.

// Server frames are read as serde_json::Value, whose indexing yields Null for anything
// missing and never panics; clippy cannot tell it from slice indexing.
#![allow(clippy::indexing_slicing)]

mod client;
mod connections;
mod fanout;
mod flood;
mod history;
mod messages;
mod procfs;
mod server;
mod server_metrics;
mod soak;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::server::Server;

// As the server: the load generator shares its two cores, and glibc's malloc cost it more.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "sidechat-bench", about = "Measure sidechat over real sockets")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// A running server (host:port) instead of starting one. Its tokens must use the
    /// bench's HMAC secret and its API the bench's key (see server.rs).
    #[arg(long, global = true)]
    address: Option<String>,
    /// With --address: the server's pid, for memory and CPU figures.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// With --address: its database, for the checks after a run.
    #[arg(long, global = true, default_value = "")]
    database_url: String,
    /// A setting for the server this program starts, as its environment variable:
    /// `--server-env SIDECHAT__SERVER__WORKERS=1`. Repeatable.
    #[arg(long, global = true, value_parser = parse_pair)]
    server_env: Vec<(String, String)>,
    /// A setting of the Postgres cluster this program starts, as in postgresql.conf:
    /// `--postgres-setting shared_buffers=1GB`. Repeatable. The defaults are Debian's.
    #[arg(long, global = true, value_parser = parse_pair)]
    postgres_setting: Vec<(String, String)>,
    /// Replicas of the server to start, sharing one Postgres and the broker. Only
    /// `messages` spreads its users over them; the others use the first.
    #[arg(long, global = true, default_value_t = 1)]
    replicas: usize,
    /// The broker between the started replicas, started here on loopback.
    #[arg(long, global = true, value_enum, default_value = "memory")]
    broker: server::BrokerKind,
}

/// `NAME=VALUE`, for a server variable or a Postgres setting.
fn parse_pair(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?}: expected KEY=VALUE"))
}

#[derive(Subcommand)]
enum Scenario {
    /// N users, each joined to its lobby and one chat: server memory per socket.
    Connections {
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
    },
    /// Users in one-to-one chats, each with one socket on its lobby and its chat, taking
    /// turns at a total rate, every message read: throughput, latency, cost, integrity.
    Messages {
        /// Users (pairs = users / 2).
        #[arg(long, default_value_t = 2_000)]
        users: usize,
        /// Messages per second, over all pairs (with --ramp: the first step).
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Recipients do not send `read` (isolates the cost of receipts).
        #[arg(long)]
        no_read: bool,
        /// Seconds of sending before anything is measured.
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// Find the highest rate held: doubling steps from --rate, then bisection.
        #[arg(long)]
        ramp: bool,
        /// Seconds of each run of a ramp step.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        step_seconds: u64,
        /// Runs of each ramp step; it holds when the median run's p99 does (and no run
        /// lost or duplicated a message). Odd numbers give a true median.
        #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        tries: usize,
        /// Messages sent 400 days ago stored first (one transaction, before the users
        /// connect): with `--server-env SIDECHAT__CHAT__RETENTION_DAYS=365`, what the
        /// traffic feels while retention deletes them.
        #[arg(long, default_value_t = 0)]
        backlog: i64,
    },
    /// One sender, a room of M members: push to last receipt.
    Fanout {
        #[arg(long, default_value_t = 1_000)]
        members: usize,
        #[arg(long, default_value_t = 50)]
        messages: usize,
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
    },
    /// Users come and go for a while: fails if connections, descriptors or memory leak.
    Soak {
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        #[arg(long, default_value_t = 50)]
        users: usize,
    },
    /// One room member pushes as fast as it can while the others chat: what a flood
    /// costs, and whether the others notice. Runs with the default budgets.
    Flood {
        #[arg(long, default_value_t = 60)]
        members: usize,
        /// Chat messages per second in the room, over all members.
        #[arg(long, default_value_t = 20)]
        rate: u64,
        /// Seconds of each phase: calm, then flooded.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// What the flooder pushes: typing, history or phx_join.
        #[arg(long, default_value = "typing")]
        event: String,
    },
    /// Joins with history and lobby summaries over a pre-filled table.
    History {
        #[arg(long, default_value_t = 10_000_000)]
        rows: i64,
        #[arg(long, default_value_t = 100_000)]
        conversations: i64,
        #[arg(long, default_value_t = 1_000)]
        samples: usize,
        /// One message in this many carries reactions; 0 for none (a baseline).
        #[arg(long, default_value_t = 10)]
        reacted_every: i64,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("sidechat-bench: cannot raise the open-file limit: {e}");
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidechat-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // The server inherits the raised open-file limit from this process.
    let server = match cli.address {
        Some(address) => Server::external(address, cli.server_pid, cli.database_url),
        None => {
            let mut env = match cli.scenario {
                Scenario::Flood { .. } => server::default_budgets()?,
                _ => Vec::new(),
            };
            env.extend(cli.server_env.iter().map(|(k, v)| (k.as_str(), v.clone())));
            if cli.replicas > 1 && !matches!(cli.scenario, Scenario::Messages { .. }) {
                anyhow::bail!("--replicas applies to the messages scenario only");
            }
            Server::start(cli.replicas, cli.broker, &env, &cli.postgres_setting)?
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match cli.scenario {
            Scenario::Connections { users, concurrency } => {
                connections::run(&server, users, concurrency).await
            }
            Scenario::Messages {
                users,
                rate,
                seconds,
                no_read,
                warmup,
                ramp,
                step_seconds,
                tries,
                backlog,
            } => {
                let options = messages::Options {
                    users,
                    rate,
                    seconds,
                    send_reads: !no_read,
                    warmup,
                    ramp,
                    step_seconds,
                    tries,
                    backlog,
                };
                messages::run(&server, options).await
            }
            Scenario::Fanout {
                members,
                messages,
                concurrency,
            } => fanout::run(&server, members, messages, concurrency).await,
            Scenario::Soak { seconds, users } => soak::run(&server, seconds, users).await,
            Scenario::Flood {
                members,
                rate,
                seconds,
                event,
            } => flood::run(&server, members, rate, seconds, &event).await,
            Scenario::History {
                rows,
                conversations,
                samples,
                reacted_every,
            } => history::run(&server, rows, conversations, samples, reacted_every).await,
        }
    })?;
    println!("{result}");
    eprintln!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
