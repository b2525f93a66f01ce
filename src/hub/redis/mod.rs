//! Several replicas through one Redis or a Redis Cluster: the broker carries hub events
//! between them over pub/sub (sharded pub/sub on a cluster), one channel per topic,
//! subscribed only while this replica has listeners; the presence keeps each replica's
//! entries in a sorted set per topic, scored by when they expire, so a crashed
//! replica's users drop out by themselves (`presence`).
//!
//! Redis work runs on a small runtime of its own ("sidechat-redis"), so it neither
//! depends on nor stalls the HTTP workers; the hub and the writer thread talk to it
//! through channels and never wait for it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::{Broker, Hub, HubEvent, MemoryPresence, PresenceMeta};

mod presence;
mod subscribe;

pub use presence::RedisPresence;
use presence::{presence_refresher, presence_writer};
use subscribe::{cluster_subscriber, subscriber};

/// Events waiting to be published; past this (Redis down or slow) they are dropped,
/// which pub/sub's at-most-once promise allows: clients recover with `after`.
const PUBLISH_QUEUE: usize = 10_000;
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Which Redis: one server, or a Redis Cluster reached through its seed nodes.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    Single(String),
    /// Events go over sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7), each topic's
    /// channel and presence key on the shard its hash tag picks.
    Cluster(Vec<String>),
}

/// What is needed to start the Redis side.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub target: RedisTarget,
    /// Every key and channel starts with this, so deployments (and tests) can share a Redis.
    pub prefix: String,
    /// How long a replica's presence entries live without a refresh.
    pub presence_ttl: Duration,
}

/// An event as it travels between replicas.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    /// The replica that published it, which already delivered it locally.
    origin: &'a str,
    topic: &'a str,
    event: &'a str,
    payload: &'a serde_json::value::RawValue,
    message_id: Option<i64>,
    skip_user: Option<&'a str>,
    only_user: Option<&'a str>,
}

/// One presence entry in a topic's sorted set.
#[derive(Serialize, Deserialize)]
struct Entry {
    replica: String,
    conn: u64,
    user: String,
    meta: PresenceMeta,
}

/// Called for an entry that expired (its replica died), once across all replicas.
pub type OnExpired = Box<dyn Fn(&str, &str, &PresenceMeta) + Send + Sync>;

struct Shared {
    replica: String,
    config: RedisConfig,
    connected: AtomicBool,
    hub: OnceLock<Weak<Hub>>,
    /// Topics with local listeners; the subscriber task makes Redis match it.
    wanted: Mutex<HashSet<String>>,
    wanted_changed: Notify,
    local_presence: MemoryPresence,
    on_expired: OnceLock<OnExpired>,
}

impl Shared {
    fn sharded(&self) -> bool {
        matches!(self.config.target, RedisTarget::Cluster(_))
    }

    /// On a cluster the topic is the hash tag: its channel and its presence key share a
    /// slot, so one shard carries everything about the topic.
    fn channel(&self, topic: &str) -> String {
        if self.sharded() {
            format!("{{{}:topic:{topic}}}", self.config.prefix)
        } else {
            format!("{}:topic:{topic}", self.config.prefix)
        }
    }

    fn presence_key(&self, topic: &str) -> String {
        if self.sharded() {
            format!("{{{}:topic:{topic}}}:presence", self.config.prefix)
        } else {
            format!("{}:presence:{topic}", self.config.prefix)
        }
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection for commands: to one Redis (reconnecting by itself), or to a cluster
/// (routing each command to its key's shard, following MOVED/ASK and failovers).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis side of one replica. Keep it alive as long as the service runs; dropping
/// it stops the Redis runtime.
pub struct RedisBackend {
    pub broker: Arc<RedisBroker>,
    pub presence: Arc<RedisPresence>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct RedisBroker {
    shared: Arc<Shared>,
    publish: mpsc::Sender<Vec<u8>>,
}

impl RedisBackend {
    /// Connects (failing fast with the reason) and starts the Redis runtime.
    pub fn start(config: RedisConfig) -> Result<RedisBackend, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let target = config.target.clone();
        std::thread::Builder::new()
            .name("sidechat-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let connected = runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(5), connect(&target))
                        .await
                        .map_err(|_| "no answer within 5 s".to_string())?
                });
                match connected {
                    Ok(connection) => {
                        let _ = ready_tx.send(Ok((connection, runtime.handle().clone())));
                        // Runs the spawned tasks until the backend is dropped.
                        let _ = runtime.block_on(stop_rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let (connected, runtime) = ready_rx
            .recv()
            .map_err(|_| "the Redis thread ended".to_string())??;

        let replica = format!(
            "{:x}{:x}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let shared = Arc::new(Shared {
            replica,
            config,
            connected: AtomicBool::new(true),
            hub: OnceLock::new(),
            wanted: Mutex::new(HashSet::new()),
            wanted_changed: Notify::new(),
            local_presence: MemoryPresence::default(),
            on_expired: OnceLock::new(),
        });
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (writes, writes_rx) = mpsc::unbounded_channel();
        let manager = match connected {
            Connected::Single(manager, client) => {
                runtime.spawn(subscriber(shared.clone(), client));
                Conn::Single(manager)
            }
            Connected::Cluster(connection, pushes) => {
                runtime.spawn(cluster_subscriber(
                    shared.clone(),
                    connection.clone(),
                    pushes,
                ));
                Conn::Cluster(connection)
            }
        };
        runtime.spawn(publisher(shared.clone(), manager.clone(), publish_rx));
        runtime.spawn(presence_writer(shared.clone(), manager.clone(), writes_rx));
        runtime.spawn(presence_refresher(shared.clone(), manager.clone()));
        Ok(RedisBackend {
            broker: Arc::new(RedisBroker {
                shared: shared.clone(),
                publish,
            }),
            presence: Arc::new(RedisPresence {
                shared,
                writes,
                reads: manager,
                runtime,
            }),
            stop: Some(stop_tx),
        })
    }
}

/// What `connect` made: the command connection, and how subscriptions are made.
enum Connected {
    /// A subscriber opens pub/sub connections from the client.
    Single(ConnectionManager, redis::Client),
    /// Subscriptions ride the cluster connection; what arrives comes as RESP3 pushes.
    Cluster(ClusterConnection, mpsc::UnboundedReceiver<redis::PushInfo>),
}

async fn connect(target: &RedisTarget) -> Result<Connected, String> {
    match target {
        RedisTarget::Single(url) => {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let manager = client
                .get_connection_manager()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Connected::Single(manager, client))
        }
        RedisTarget::Cluster(seeds) => {
            let (pushes_tx, pushes) = mpsc::unbounded_channel();
            let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes_tx)
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| e.to_string())?;
            let connection = client
                .get_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Connected::Cluster(connection, pushes))
        }
    }
}

impl RedisBroker {
    /// Where events from other replicas are delivered. Set once, after the hub exists.
    pub fn attach(&self, hub: &Arc<Hub>) {
        let _ = self.shared.hub.set(Arc::downgrade(hub));
    }
}

impl Broker for RedisBroker {
    fn publish(&self, event: &HubEvent) {
        let Ok(payload) = serde_json::value::RawValue::from_string(event.payload.to_string())
        else {
            return;
        };
        let envelope = Envelope {
            origin: &self.shared.replica,
            topic: &event.topic,
            event: &event.event,
            payload: &payload,
            message_id: event.message_id,
            skip_user: event.skip_user.as_deref(),
            only_user: event.only_user.as_deref(),
        };
        let Ok(mut bytes) = serde_json::to_vec(&envelope) else {
            return;
        };
        // The channel name travels in front, so the publisher needs no parsing.
        let mut framed = self.shared.channel(&event.topic).into_bytes();
        framed.push(b'\n');
        framed.append(&mut bytes);
        if self.publish.try_send(framed).is_err() {
            log::warn!(
                "redis: publish queue full; an event for {} was dropped",
                event.topic
            );
        }
    }

    fn subscribe(&self, topic: &str) {
        self.shared.wanted().insert(topic.to_owned());
        self.shared.wanted_changed.notify_one();
    }

    fn unsubscribe(&self, topic: &str) {
        self.shared.wanted().remove(topic);
        self.shared.wanted_changed.notify_one();
    }

    fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }
}

async fn publisher(shared: Arc<Shared>, mut redis: Conn, mut queue: mpsc::Receiver<Vec<u8>>) {
    let command = if shared.sharded() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    while let Some(framed) = queue.recv().await {
        let Some(split) = framed.iter().position(|b| *b == b'\n') else {
            continue;
        };
        let (channel, payload) = framed.split_at(split);
        let payload = payload.get(1..).unwrap_or_default();
        let sent: redis::RedisResult<i64> = redis::cmd(command)
            .arg(channel)
            .arg(payload)
            .query_async(&mut redis)
            .await;
        if let Err(e) = sent {
            log::warn!("redis: publish failed: {e}");
        }
    }
}
