//! sidechat: a chat service beside an existing web app.
//!
//! Dependencies point one way: `transport`/`http` -> `chat` -> `store`, `hub`.
//! `Application::build` is the one way to start the service; `main.rs` and the tests
//! both call it.

pub mod auth;
pub mod chat;
pub mod dev;
pub mod egress;
pub mod http;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod settings;
pub mod store;
pub mod transport;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::middleware::Logger;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::chat::{Chat, ChatConfig};
use crate::http::{AppState, Connections};
use crate::hub::redis::{RedisBackend, RedisConfig, RedisTarget};
use crate::hub::{Hub, MemoryBroker, MemoryPresence, Presence};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::settings::Settings;
use crate::store::writer::OnCommit;
use crate::store::{Change, Writer, WriterExit};

/// A built, bound service, not yet running.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    /// With `server.internal_port`: its port and its server.
    internal: Option<(u16, actix_web::dev::Server)>,
    state: web::Data<AppState>,
    writer: Writer,
    writer_exit: WriterExit,
    writer_thread: JoinHandle<()>,
    /// Webhooks and Web Push, when configured.
    notifier: Option<Arc<Notifier>>,
    /// Kept for the life of the service when the broker is Redis.
    redis: Option<RedisBackend>,
}

/// The part of a database URL that is safe to print: no password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}://…{}",
                url.get(..scheme).unwrap_or(""),
                url.get(at..).unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}

impl Application {
    /// Checks the settings against the world (keys, database), migrates, and binds.
    /// Every error is one line that names what is wrong.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let settings = Arc::new(settings);
        let verifier = Verifier::new(&settings.auth)?;
        let offline_sinks =
            notify::Sinks::from_settings(&settings).map_err(|e| anyhow::anyhow!(e))?;
        let url = settings.database.url.expose().to_owned();
        if url.is_empty() {
            anyhow::bail!("database.url: not set (set DATABASE_URL or database.url)");
        }
        let timeout = settings.connect_timeout();
        let mut conn = store::connect(&url, timeout).map_err(|e| {
            anyhow::anyhow!(
                "database.url: cannot connect to {}: {}",
                redact_url(&url),
                first_line(&e.to_string())
            )
        })?;
        if settings.database.run_migrations {
            let applied = store::run_migrations(&mut conn)
                .map_err(|e| anyhow::anyhow!("database: {}", first_line(&e.to_string())))?;
            if applied > 0 {
                log::info!("applied {applied} migration(s)");
            }
        }
        // Sends and notifications read blocks from memory: hold them before serving.
        let blocks = store::blocks::all(&mut conn)
            .map_err(|e| anyhow::anyhow!("database: cannot read blocks: {e}"))?;
        drop(conn);
        let pool = store::read_pool(&url, settings.database.pool_size, timeout)
            .map_err(|e| anyhow::anyhow!("database.url: {}", first_line(&e.to_string())))?;

        let metrics = Arc::new(Metrics::new());
        metrics.broker_kind(&settings.broker.kind);
        let (hub, presence, redis) = match settings.broker.kind.as_str() {
            kind @ ("redis" | "redis-cluster") => {
                let (target, setting, shown) = if kind == "redis" {
                    let url = settings.broker.redis_url.expose();
                    (
                        RedisTarget::Single(url.to_owned()),
                        "broker.redis_url",
                        redact_url(url),
                    )
                } else {
                    let seeds = &settings.broker.redis_urls;
                    (
                        RedisTarget::Cluster(seeds.iter().map(|s| s.expose().to_owned()).collect()),
                        "broker.redis_urls",
                        seeds
                            .iter()
                            .map(|s| redact_url(s.expose()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                };
                let backend = RedisBackend::start(RedisConfig {
                    target,
                    prefix: settings.broker.redis_prefix.clone(),
                    presence_ttl: Duration::from_secs(settings.broker.presence_ttl_s),
                    resyncs: metrics.broker_resyncs.clone(),
                })
                .map_err(|e| {
                    anyhow::anyhow!("{setting}: cannot connect to {shown}: {}", first_line(&e))
                })?;
                let hub = Arc::new(Hub::new(backend.broker.clone()));
                backend.broker.attach(&hub);
                let announce_to = hub.clone();
                backend
                    .presence
                    .on_expired(Box::new(move |topic, user, meta| {
                        announce_to.publish(chat::presence_leave(topic, user, meta));
                    }));
                let presence: Arc<dyn Presence> = backend.presence.clone();
                (hub, presence, Some(backend))
            }
            _ => {
                let presence: Arc<dyn Presence> = Arc::new(MemoryPresence::default());
                (Arc::new(Hub::new(Arc::new(MemoryBroker))), presence, None)
            }
        };
        let notifier = offline_sinks.map(|sinks| {
            Arc::new(Notifier::new(
                sinks,
                &settings,
                pool.clone(),
                presence.clone(),
                metrics.clone(),
            ))
        });
        let broadcast = Chat::broadcast_on_commit(hub.clone());
        let on_commit: OnCommit = match notifier.as_ref().map(|n| n.waker()) {
            Some(wake) => Box::new(move |changes: &[Change]| {
                broadcast(changes);
                if changes.iter().any(|c| matches!(c, Change::Created(_))) {
                    wake.notify_one();
                }
            }),
            None => broadcast,
        };
        let outbox_delay = notifier
            .is_some()
            .then(|| Duration::from_secs(settings.webhooks.delay_s));
        let (writer, writer_exit, writer_thread) = Writer::start(
            url.clone(),
            timeout,
            store::Batching {
                window: Duration::from_millis(settings.database.write_window_ms),
                list_window: Duration::from_millis(settings.database.list_window_ms),
                list_defer_rate: f64::from(settings.database.list_defer_rate),
            },
            outbox_delay,
            metrics.clone(),
            on_commit,
        )
        .context("starting the writer thread")?;
        if let Some(notifier) = &notifier {
            log::info!("telling offline users by {}", notifier.describe());
        }
        let receipts = store::receipts::Receipts::start(
            url,
            timeout,
            Duration::from_millis(settings.database.receipts_window_ms),
            metrics.clone(),
        )
        .context("starting the receipts thread")?;
        let chat = Arc::new(Chat::new(
            pool,
            writer.clone(),
            hub,
            presence,
            metrics,
            receipts,
            ChatConfig {
                history_limit: settings.chat.history_limit,
                max_body_bytes: settings.chat.max_body_bytes,
                presence_room_limit: settings.chat.presence_room_limit,
                budgets: budgets(&settings.limits),
                typing_interval: Duration::from_millis(settings.chat.typing_interval_ms),
                push_endpoints: egress::Policy {
                    allow_local: settings.push.allow_local_endpoints,
                },
                direct_by_host: settings.chat.direct == "host",
                report_webhook: !settings.webhooks.url.is_empty(),
                max_blocks_per_user: settings.chat.max_blocks_per_user,
                edit_window: Duration::from_secs(settings.chat.edit_window_s),
                max_reactions: settings.chat.max_reactions,
            },
        ));
        chat.load_blocks(blocks);
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            verifier,
            chat,
            shutdown: CancellationToken::new(),
            sockets: TaskTracker::new(),
            connections: Arc::new(Connections::default()),
            next_conn: AtomicU64::new(1),
            writer_alive: Arc::new(AtomicBool::new(true)),
            vapid_public_key: notifier
                .as_ref()
                .and_then(|n| n.vapid_public_key().map(str::to_owned)),
        });

        let internal = match settings.server.internal_port {
            0 => None,
            port => Some(serve(
                &state,
                "server.internal_port",
                port,
                http::Listener::Internal,
            )?),
        };
        let public_routes = match internal {
            Some(_) => http::Listener::Public,
            None => http::Listener::All,
        };
        let (port, server) = serve(&state, "server.port", settings.server.port, public_routes)?;
        Ok(Application {
            port,
            server,
            internal,
            state,
            writer,
            writer_exit,
            writer_thread,
            notifier,
            redis,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The internal listener's port, when `server.internal_port` is set.
    pub fn internal_port(&self) -> Option<u16> {
        self.internal.as_ref().map(|(port, _)| *port)
    }

    /// Cancel it to start the graceful shutdown, as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains in order: sockets get
    /// the replies owed them and close with 1001, the writer flushes and stops, HTTP
    /// stops. An error means the service could not go on (the writer died).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            server,
            internal,
            state,
            writer,
            mut writer_exit,
            writer_thread,
            notifier,
            redis,
            ..
        } = self;
        let handle = server.handle();
        let mut server_task = actix_web::rt::spawn(server);
        let (internal_handle, mut internal_task) = match internal {
            Some((_, server)) => (Some(server.handle()), Some(actix_web::rt::spawn(server))),
            None => (None, None),
        };
        let notifier_stop = CancellationToken::new();
        let notifier_task = notifier.map(|n| actix_web::rt::spawn(n.run(notifier_stop.clone())));
        let blocks_task =
            actix_web::rt::spawn(state.chat.clone().keep_blocks(notifier_stop.clone()));
        // Where replicas defer list moves, what one that died left undone is made good.
        let heal_task = (state.settings.database.list_window_ms > 0).then(|| {
            actix_web::rt::spawn(store::list_moves::keep_healed(
                state.chat.pool().clone(),
                state.settings.chat.retention_days,
                state.chat.metrics().clone(),
                notifier_stop.clone(),
            ))
        });
        // Old messages go, one replica at a time (chat.retention_days).
        let retention_task = (state.settings.chat.retention_days > 0).then(|| {
            let chat = &state.settings.chat;
            actix_web::rt::spawn(store::retention::keep_pruned(
                store::retention::Database {
                    url: state.settings.database.url.expose().to_owned(),
                    connect_timeout: state.settings.connect_timeout(),
                },
                store::retention::Policy {
                    days: chat.retention_days,
                    batch: chat.retention_batch,
                    pause: Duration::from_millis(chat.retention_pause_ms),
                    every: Duration::from_secs(chat.retention_every_s),
                },
                state.chat.metrics().clone(),
                // Stops when shutdown starts: the drain has better things to wait for.
                state.shutdown.clone(),
            ))
        });
        let shutdown = state.shutdown.clone();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = &mut writer_exit => {
                state.writer_alive.store(false, Ordering::Relaxed);
                shutdown.cancel();
                handle.stop(false).await;
                anyhow::bail!("the writer thread stopped unexpectedly; refusing sends it cannot store");
            }
            result = &mut server_task => {
                shutdown.cancel();
                if let Some(internal) = &internal_handle {
                    internal.stop(false).await;
                }
                return server_ended(result);
            }
            result = async {
                match internal_task.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                shutdown.cancel();
                handle.stop(false).await;
                return server_ended(result);
            }
        }
        let deadline = state.settings.shutdown_timeout();
        log::info!(
            "shutting down: draining {} socket(s) within {}s",
            state.sockets.len(),
            deadline.as_secs()
        );
        let drain = async {
            state.sockets.close();
            state.sockets.wait().await;
            writer.stop().await;
            let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
            // After the writer: what it committed last is in the outbox for the next start.
            notifier_stop.cancel();
            if let Some(task) = notifier_task {
                let _ = task.await;
            }
            let _ = blocks_task.await;
            if let Some(task) = heal_task {
                let _ = task.await;
            }
            if let Some(task) = retention_task {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(deadline, drain).await.is_err() {
            log::warn!("shutdown deadline passed; stopping with work in flight");
        }
        state.writer_alive.store(false, Ordering::Relaxed);
        handle.stop(true).await;
        let _ = server_task.await;
        if let (Some(handle), Some(task)) = (internal_handle, internal_task) {
            handle.stop(true).await;
            let _ = task.await;
        }
        drop(redis);
        log::info!("stopped");
        Ok(())
    }
}

/// An HTTP server with `routes` on `port` of `server.host` (the setting `key`, for
/// errors); returns the port bound and the server, not yet running.
fn serve(
    state: &web::Data<AppState>,
    key: &str,
    port: u16,
    routes: http::Listener,
) -> anyhow::Result<(u16, actix_web::dev::Server)> {
    let settings = state.settings.clone();
    let address = format!("{}:{port}", settings.server.host);
    let listener = TcpListener::bind(&address)
        .map_err(|e| anyhow::anyhow!("{key}: cannot listen on {address}: {e}"))?;
    let port = listener.local_addr()?.port();
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            // The path only (%U): tokens travel in the query string.
            .wrap(
                Logger::new("%{r}a \"%{method}xi %U\" %s %b %Dms")
                    .custom_request_replace("method", |req| req.method().to_string()),
            )
            .configure(|cfg| routes.routes(cfg))
    })
    // Signals are ours: actix's graceful stop does not wind down WebSockets.
    .disable_signals()
    // Chat frames are small and must go out at once, not wait for Nagle.
    .tcp_nodelay(true)
    .shutdown_timeout(settings.server.shutdown_timeout_s)
    // A worker's blocking threads run database reads, each holding one pooled
    // connection: more than the pool's size only wait for one, and tokio's default of
    // 512 let a busy replica keep ~150 threads, whose stacks and malloc caches made its
    // memory creep up (the soak's growth after warm-up).
    .worker_max_blocking_threads(settings.database.pool_size.max(2) as usize);
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    let server = server
        .listen(listener)
        .with_context(|| format!("{key}: cannot serve on {address}"))?
        .run();
    Ok((port, server))
}

/// How the service ends when an HTTP server stops on its own.
fn server_ended(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("HTTP server failed: {e}")),
        Err(e) => Err(anyhow::anyhow!("HTTP server task failed: {e}")),
    }
}

/// What each kind of push costs a user, from `[limits]`.
fn budgets(limits: &settings::LimitSettings) -> chat::Rates {
    let rate = |per_second, burst| chat::Rate { per_second, burst };
    chat::Rates {
        messages: rate(limits.messages_per_second, limits.burst),
        joins: rate(limits.joins_per_second, limits.joins_burst),
        events: rate(limits.events_per_second, limits.events_burst),
    }
}

/// Database errors can span lines; start-up errors are one line.
pub(crate) fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_owned()
}
