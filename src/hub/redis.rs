//! Several replicas through one Redis: the broker carries hub events between them over
//! pub/sub, one channel per topic, subscribed only while this replica has listeners; the
//! presence keeps each replica's entries in a sorted set per topic, scored by when they
//! expire, so a crashed replica's users drop out by themselves.
//!
//! Redis work runs on a small runtime of its own ("sidechat-redis"), so it neither
//! depends on nor stalls the HTTP workers; the hub and the writer thread talk to it
//! through channels and never wait for it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::{Broker, ConnId, Hub, HubEvent, MemoryPresence, Presence, PresenceMeta};

/// Events waiting to be published; past this (Redis down or slow) they are dropped,
/// which pub/sub's at-most-once promise allows: clients recover with `after`.
const PUBLISH_QUEUE: usize = 10_000;
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// What is needed to start the Redis side.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
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
    fn channel(&self, topic: &str) -> String {
        format!("{}:topic:{topic}", self.config.prefix)
    }

    fn presence_key(&self, topic: &str) -> String {
        format!("{}:presence:{topic}", self.config.prefix)
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum PresenceWrite {
    Track { topic: String, member: String },
    Untrack { topic: String, member: String },
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

pub struct RedisPresence {
    shared: Arc<Shared>,
    writes: mpsc::UnboundedSender<PresenceWrite>,
    reads: ConnectionManager,
    runtime: tokio::runtime::Handle,
}

impl RedisBackend {
    /// Connects (failing fast with the reason) and starts the Redis runtime.
    pub fn start(config: RedisConfig) -> Result<RedisBackend, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| e.to_string())?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let connecting = client.clone();
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
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        connecting.get_connection_manager(),
                    )
                    .await
                    .map_err(|_| "no answer within 5 s".to_string())?
                    .map_err(|e| e.to_string())
                });
                match connected {
                    Ok(manager) => {
                        let _ = ready_tx.send(Ok((manager, runtime.handle().clone())));
                        // Runs the spawned tasks until the backend is dropped.
                        let _ = runtime.block_on(stop_rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let (manager, runtime) = ready_rx
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
        runtime.spawn(publisher(manager.clone(), publish_rx));
        runtime.spawn(subscriber(shared.clone(), client));
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

async fn publisher(mut redis: ConnectionManager, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(framed) = queue.recv().await {
        let Some(split) = framed.iter().position(|b| *b == b'\n') else {
            continue;
        };
        let (channel, payload) = framed.split_at(split);
        let payload = payload.get(1..).unwrap_or_default();
        let sent: redis::RedisResult<i64> = redis.publish(channel, payload).await;
        if let Err(e) = sent {
            log::warn!("redis: publish failed: {e}");
        }
    }
}

/// Keeps one pub/sub connection subscribed to exactly the wanted topics, delivering
/// what arrives; reconnects and resubscribes after any failure.
async fn subscriber(shared: Arc<Shared>, client: redis::Client) {
    loop {
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                let mut subscribed: HashSet<String> = HashSet::new();
                loop {
                    let wanted: HashSet<String> = shared.wanted().clone();
                    let add: Vec<String> = wanted
                        .difference(&subscribed)
                        .map(|t| shared.channel(t))
                        .collect();
                    let drop: Vec<String> = subscribed
                        .difference(&wanted)
                        .map(|t| shared.channel(t))
                        .collect();
                    if (!add.is_empty() && sink.subscribe(&add).await.is_err())
                        || (!drop.is_empty() && sink.unsubscribe(&drop).await.is_err())
                    {
                        break;
                    }
                    subscribed = wanted;
                    // Connected means events flow again: only once resubscribed.
                    shared.connected.store(true, Ordering::Relaxed);
                    tokio::select! {
                        _ = shared.wanted_changed.notified() => {}
                        message = stream.next() => match message {
                            Some(message) => deliver(&shared, message.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                log::warn!("redis: subscription connection lost; reconnecting");
            }
            Err(e) => log::warn!("redis: cannot subscribe: {e}"),
        }
        shared.connected.store(false, Ordering::Relaxed);
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

fn deliver(shared: &Shared, payload: &[u8]) {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(payload) else {
        log::warn!("redis: an event that does not parse was ignored");
        return;
    };
    if envelope.origin == shared.replica {
        return; // delivered locally when published
    }
    let Some(hub) = shared.hub.get().and_then(Weak::upgrade) else {
        return;
    };
    let event = HubEvent {
        message_id: envelope.message_id,
        skip_user: envelope.skip_user.map(String::from),
        only_user: envelope.only_user.map(String::from),
        ..HubEvent::new(
            envelope.topic,
            envelope.event,
            Arc::from(envelope.payload.get()),
        )
    };
    hub.deliver_local(&Arc::new(event));
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RedisPresence {
    /// Receives every entry that expires (a crashed replica's), once across replicas.
    pub fn on_expired(&self, callback: OnExpired) {
        let _ = self.shared.on_expired.set(callback);
    }

    fn member(&self, conn: ConnId, user: &str, meta: &PresenceMeta) -> String {
        serde_json::to_string(&Entry {
            replica: self.shared.replica.clone(),
            conn: conn.0,
            user: user.to_owned(),
            meta: meta.clone(),
        })
        .unwrap_or_default()
    }
}

impl Presence for RedisPresence {
    fn track(&self, topic: &str, conn: ConnId, user_id: &str, meta: PresenceMeta) {
        let member = self.member(conn, user_id, &meta);
        self.shared.local_presence.track(topic, conn, user_id, meta);
        let _ = self.writes.send(PresenceWrite::Track {
            topic: topic.to_owned(),
            member,
        });
    }

    fn untrack(&self, topic: &str, conn: ConnId) -> Option<(String, PresenceMeta)> {
        let (user, meta) = self.shared.local_presence.untrack(topic, conn)?;
        let member = self.member(conn, &user, &meta);
        let _ = self.writes.send(PresenceWrite::Untrack {
            topic: topic.to_owned(),
            member,
        });
        Some((user, meta))
    }

    fn list(&self, topic: &str) -> BoxFuture<'static, Vec<(String, PresenceMeta)>> {
        let mut entries = self.shared.local_presence.local(topic);
        let (key, replica) = (self.shared.presence_key(topic), self.shared.replica.clone());
        let mut redis = self.reads.clone();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            // Read on the Redis runtime: the caller's may be any (an HTTP worker).
            let remote = runtime
                .spawn(async move {
                    let members: redis::RedisResult<Vec<String>> =
                        redis.zrangebyscore(&key, now_ms(), "+inf").await;
                    members
                })
                .await;
            match remote {
                Ok(Ok(members)) => entries.extend(
                    members
                        .iter()
                        .filter_map(|m| serde_json::from_str::<Entry>(m).ok())
                        .filter(|e| e.replica != replica)
                        .map(|e| (e.user, e.meta)),
                ),
                Ok(Err(e)) => log::warn!("redis: presence read failed: {e}"),
                Err(e) => log::warn!("redis: presence read task failed: {e}"),
            }
            entries
        })
    }
}

async fn presence_writer(
    shared: Arc<Shared>,
    mut redis: ConnectionManager,
    mut writes: mpsc::UnboundedReceiver<PresenceWrite>,
) {
    let ttl_ms = i64::try_from(shared.config.presence_ttl.as_millis()).unwrap_or(30_000);
    while let Some(write) = writes.recv().await {
        let result: redis::RedisResult<()> = match write {
            PresenceWrite::Track { topic, member } => {
                let key = shared.presence_key(&topic);
                redis::pipe()
                    .zadd(&key, member, now_ms() + ttl_ms)
                    .ignore()
                    .pexpire(&key, ttl_ms * 2)
                    .ignore()
                    .query_async(&mut redis)
                    .await
            }
            PresenceWrite::Untrack { topic, member } => {
                redis.zrem(shared.presence_key(&topic), member).await
            }
        };
        if let Err(e) = result {
            log::warn!("redis: presence write failed: {e}");
        }
    }
}

/// Every third of the TTL: pushes this replica's entries' expiry forward, and removes
/// (and announces, through `on_expired`) entries whose replica stopped refreshing them.
async fn presence_refresher(shared: Arc<Shared>, mut redis: ConnectionManager) {
    let ttl_ms = i64::try_from(shared.config.presence_ttl.as_millis()).unwrap_or(30_000);
    let mut ticks = tokio::time::interval(shared.config.presence_ttl / 3);
    loop {
        ticks.tick().await;
        let mine = shared.local_presence.all();
        let mut by_topic: HashMap<String, Vec<String>> = HashMap::new();
        for (topic, conn, user, meta) in mine {
            let member = serde_json::to_string(&Entry {
                replica: shared.replica.clone(),
                conn: conn.0,
                user,
                meta,
            })
            .unwrap_or_default();
            by_topic.entry(topic).or_default().push(member);
        }
        let expires = now_ms() + ttl_ms;
        let mut refresh = redis::pipe();
        for (topic, members) in &by_topic {
            let key = shared.presence_key(topic);
            for member in members {
                refresh.zadd(&key, member, expires).ignore();
            }
            refresh.pexpire(&key, ttl_ms * 2).ignore();
        }
        if !by_topic.is_empty() {
            let refreshed: redis::RedisResult<()> = refresh.query_async(&mut redis).await;
            if let Err(e) = refreshed {
                log::warn!("redis: presence refresh failed: {e}");
                continue;
            }
        }
        for topic in by_topic.keys() {
            sweep_expired(&shared, &mut redis, topic).await;
        }
    }
}

async fn sweep_expired(shared: &Shared, redis: &mut ConnectionManager, topic: &str) {
    let key = shared.presence_key(topic);
    let expired: Vec<String> = match redis.zrangebyscore(&key, "-inf", now_ms()).await {
        Ok(expired) => expired,
        Err(_) => return,
    };
    for member in expired {
        // ZREM answers 1 to one replica only: that one announces the departure.
        let removed: i64 = redis.zrem(&key, &member).await.unwrap_or(0);
        if removed == 1
            && let Ok(entry) = serde_json::from_str::<Entry>(&member)
            && let Some(announce) = shared.on_expired.get()
        {
            announce(topic, &entry.user, &entry.meta);
        }
    }
}
