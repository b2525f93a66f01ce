//! The command line: serve | migrate | dev | token | check-config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sidechat::auth::{self, JwtClaims};
use sidechat::chat::UserId;
use sidechat::dev::{ClusterOptions, PgCluster};
use sidechat::settings::{DEVELOPMENT_TOML, Settings, Sources};
use sidechat::{Application, redact_url, store};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "sidechat", version, about = "Chat beside your web app")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (production).
    Serve {
        /// TOML layered over the built-in defaults.
        #[arg(long, short, env = "SIDECHAT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, short, env = "SIDECHAT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run on a laptop: a private Postgres under .sidechat/, tokens printed, demo page on.
    Dev {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Port to listen on (default: server.port, 4000).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Mint a token with the configured secret, for trying things by hand.
    Token {
        user_id: String,
        /// How long it is valid: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// "staff" grants the support inbox (mints a JWT).
        #[arg(long)]
        role: Option<String>,
        /// Display name (mints a JWT).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, short, env = "SIDECHAT_CONFIG")]
        config: Option<PathBuf>,
        /// Use the development secrets of `sidechat dev`.
        #[arg(long)]
        dev: bool,
    },
    /// Validate a configuration file (with the environment) and exit.
    CheckConfig {
        /// The file to check (as --config; either spelling).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// (The positional FILE wins over this and over SIDECHAT_CONFIG.)
        #[arg(long, short, env = "SIDECHAT_CONFIG")]
        config: Option<PathBuf>,
        /// Also print the effective settings (secrets redacted).
        #[arg(long)]
        show: bool,
        /// Also connect to Postgres and Redis and read the key files, as `serve` would;
        /// one line for each that fails.
        #[arg(long)]
        probe: bool,
    },
}

fn main() -> ExitCode {
    sidechat::logging::init("info");
    // Every socket is a file descriptor: take all the kernel allows this process.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, naming the problem: no backtrace for a start-up mistake.
            eprintln!("sidechat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(overlays: Vec<&str>, file: Option<&Path>) -> anyhow::Result<Settings> {
    let settings = Settings::load(&Sources {
        overlays,
        file,
        environment: true,
    })?;
    sidechat::logging::set_format(&settings.log.format);
    for warning in settings.insecure_warnings() {
        log::warn!("INSECURE: {warning}");
    }
    Ok(settings)
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let settings = load(vec![], config.as_deref())?;
            serve(settings, None)
        }
        Command::Migrate { config } => {
            let settings = load(vec![], config.as_deref())?;
            let url = settings.database.url.expose();
            if url.is_empty() {
                anyhow::bail!("database.url: not set (set DATABASE_URL or database.url)");
            }
            let mut conn = store::connect(url, settings.connect_timeout()).map_err(|e| {
                anyhow::anyhow!("database.url: cannot connect to {}: {e}", redact_url(url))
            })?;
            let applied = store::run_migrations(&mut conn)?;
            println!("applied {applied} migration(s); the schema is up to date");
            Ok(())
        }
        Command::Dev { config, port } => dev(config.as_deref(), port),
        Command::Token {
            user_id,
            ttl,
            role,
            name,
            config,
            dev,
        } => {
            let overlays = if dev { vec![DEVELOPMENT_TOML] } else { vec![] };
            let settings = load(overlays, config.as_deref())?;
            let ttl = parse_ttl(&ttl)?;
            let max = settings.auth.max_token_ttl_s;
            if max > 0 && ttl.as_secs() > max {
                anyhow::bail!(
                    "--ttl: {}s is longer than auth.max_token_ttl_s ({max}s); the server would refuse the token",
                    ttl.as_secs()
                );
            }
            println!("{}", mint(&settings, &user_id, ttl, role, name)?);
            Ok(())
        }
        Command::CheckConfig {
            file,
            config,
            show,
            probe,
        } => {
            let file = file.or(config);
            let settings = load(vec![], file.as_deref())?;
            let named = file.as_ref().map_or_else(
                || "the built-in defaults and the environment".to_owned(),
                |f| f.display().to_string(),
            );
            if show {
                println!("{settings:#?}");
            }
            if !probe {
                auth::Verifier::new(&settings.auth)?;
                println!("{named}: ok");
                return Ok(());
            }
            let checks = sidechat::probe::probe(&settings);
            let failed = checks.iter().filter(|c| !c.ok).count();
            for check in &checks {
                if check.ok {
                    println!("ok: {}", check.line);
                } else {
                    eprintln!("sidechat: error: {}", check.line);
                }
            }
            if failed > 0 {
                // Each failure has had its line; the exit code says the rest.
                std::process::exit(1);
            }
            println!("{named}: ok, and everything it names answers");
            Ok(())
        }
    }
}

/// Runs the service until SIGTERM or Ctrl-C, then drains it.
fn serve(settings: Settings, banner: Option<Box<dyn FnOnce(u16)>>) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)?;
        let shutdown = app.shutdown_token();
        // Handlers first: whoever reads the banner may signal at once, and a SIGTERM
        // before they exist would kill the process instead of draining it.
        let signals = listen_for_signals();
        if let Some(banner) = banner {
            banner(app.port());
        } else {
            // Scripts read the port from this line's end: no fields after it.
            log::info!("listening on port {}", app.port());
        }
        actix_web::rt::spawn(async move {
            wait_for_signal(signals).await;
            log::info!("signal received: shutting down");
            shutdown.cancel();
        });
        app.run_until_stopped().await
    })
}

type Signals = Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;

/// SIGTERM and SIGINT, handled from now on.
fn listen_for_signals() -> Signals {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        _ => None,
    }
}

async fn wait_for_signal(signals: Signals) {
    match signals {
        Some((mut term, mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn dev(config: Option<&Path>, port: Option<u16>) -> anyhow::Result<()> {
    let mut settings = load(vec![DEVELOPMENT_TOML], config)?;
    if let Some(port) = port {
        settings.server.port = port;
    }
    // Without DATABASE_URL, a private cluster that lives as long as this process.
    let mut cluster = None;
    if settings.database.url.is_empty() {
        let data_dir = sidechat::dev::default_data_dir(&std::env::current_dir()?);
        eprintln!("starting a private Postgres in {} ...", data_dir.display());
        let started = PgCluster::start(ClusterOptions {
            data_dir,
            fast_unsafe: false,
            remove_on_stop: false,
            settings: Vec::new(),
        })?;
        started.create_database("sidechat")?;
        settings.database.url = sidechat::settings::Secret::new(started.url("sidechat"));
        cluster = Some(started);
    }
    let tokens = ["alice", "bob"]
        .iter()
        .map(|user| {
            Ok((
                *user,
                mint(&settings, user, Duration::from_secs(86_400), None, None)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let staff = mint(
        &settings,
        "staff1",
        Duration::from_secs(86_400),
        Some("staff".into()),
        Some("Support".into()),
    )?;
    let db = redact_url(settings.database.url.expose());
    let host = settings.server.host.clone();
    let banner = Box::new(move |port: u16| {
        let base = format!("{host}:{port}");
        println!();
        println!("sidechat is running (Ctrl-C stops it)");
        println!("  database  {db}");
        println!("  socket    ws://{base}/socket/websocket?vsn=2.0.0&token=<token>");
        println!("  demo      http://{base}/demo?token=<token>");
        println!("  health    http://{base}/healthz");
        println!("  tokens, valid 24h:");
        for (user, token) in &tokens {
            println!("    {user:<7} {token}");
        }
        println!("    {:<7} {staff}", "staff1");
        println!("  try       http://{base}/v1/me/unread?token=<token>");
        println!();
    });
    let result = serve(settings, Some(banner));
    if let Some(mut cluster) = cluster {
        cluster.stop();
    }
    result
}

fn parse_ttl(raw: &str) -> anyhow::Result<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("--ttl {raw:?}: expected e.g. 90s, 30m, 1h, 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("--ttl {raw:?}: the unit is s, m, h or d"),
    };
    Ok(Duration::from_secs(seconds))
}

/// A JWT when a role or name must travel (HMAC tokens carry neither), else an HMAC
/// token when a secret is configured.
fn mint(
    settings: &Settings,
    user_id: &str,
    ttl: Duration,
    role: Option<String>,
    name: Option<String>,
) -> anyhow::Result<String> {
    let user = UserId::parse(user_id).map_err(|e| anyhow::anyhow!("user id {user_id:?}: {e}"))?;
    let expires_at = chrono::Utc::now().timestamp() + i64::try_from(ttl.as_secs())?;
    let auth = &settings.auth;
    let wants_jwt = role.is_some() || name.is_some() || auth.hmac_secrets.is_empty();
    if !wants_jwt && let Some(secret) = auth.hmac_secrets.first() {
        return Ok(auth::mint_hmac(secret, &user, expires_at));
    }
    if auth.jwt_secret.is_empty() {
        anyhow::bail!(
            "auth.jwt_secret: needed to mint a token with a role or name (HMAC tokens carry neither)"
        );
    }
    Ok(auth::mint_jwt(
        &auth.jwt_secret,
        &auth.jwt_algorithm,
        &JwtClaims {
            sub: user.as_str().to_owned(),
            exp: expires_at,
            name,
            role,
        },
    )?)
}
