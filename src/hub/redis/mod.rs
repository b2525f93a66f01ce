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

use futures_util::future::BoxFuture;
use redis::IntoConnectionInfo;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::{Broker, Hub, HubEvent, MemoryPresence, PresenceMeta};

mod presence;
mod publish;
mod shards;
mod subscribe;

pub use presence::RedisPresence;
use presence::presence_writer;
use publish::{Outgoing, publisher};
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
    /// Counts the topics resynced (`sidechat_broker_resyncs_total`).
    pub resyncs: prometheus_client::metrics::counter::Counter,
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

/// The topics this replica has listeners on, and those whose state changed since the
/// subscriber last looked: it works through the changes, never the whole set, since a
/// replica may want tens of thousands of topics.
#[derive(Default)]
struct Wanted {
    topics: HashSet<String>,
    changed: HashSet<String>,
}

struct Shared {
    replica: String,
    config: RedisConfig,
    connected: AtomicBool,
    hub: OnceLock<Weak<Hub>>,
    /// Topics with local listeners; the subscriber task makes Redis match it.
    wanted: Mutex<Wanted>,
    wanted_changed: Notify,
    /// Topics whose subscription is active now, and a wake-up when one becomes so.
    active: Mutex<HashSet<String>>,
    activated: Notify,
    /// Topics a join stopped waiting for before they were subscribed: its history may
    /// miss what came in between, so they are resynced once subscribed.
    unwaited: Mutex<HashSet<String>>,
    local_presence: MemoryPresence,
    on_expired: OnceLock<OnExpired>,
    /// Topics with an event the other replicas may not have had (its publish failed or
    /// was dropped): the publisher tells them to resync once Redis takes publishes again.
    unpublished: Mutex<HashSet<String>>,
}

impl Shared {
    fn sharded(&self) -> bool {
        matches!(self.config.target, RedisTarget::Cluster(_))
    }

    /// On a cluster the topic is the hash tag: its channel and its presence key share a
    /// slot, so one shard carries everything about the topic.
    fn channel(&self, topic: &str) -> String {
        channel(&self.config.prefix, self.sharded(), topic)
    }

    fn presence_key(&self, topic: &str) -> String {
        if self.sharded() {
            format!("{{{}:topic:{topic}}}:presence", self.config.prefix)
        } else {
            format!("{}:presence:{topic}", self.config.prefix)
        }
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, Wanted> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `topic` wanted or not, and wakes the subscriber.
    fn want(&self, topic: &str, wanted: bool) {
        {
            let mut set = self.wanted();
            if wanted {
                set.topics.insert(topic.to_owned());
            } else {
                set.topics.remove(topic);
            }
            set.changed.insert(topic.to_owned());
        }
        self.wanted_changed.notify_one();
    }

    /// The topics whose wanted state changed since the last call, each with whether it
    /// is wanted now. A topic that is no longer wanted has nothing left to heal.
    fn take_changes(&self) -> Vec<(String, bool)> {
        let changes: Vec<(String, bool)> = {
            let mut set = self.wanted();
            let changed = std::mem::take(&mut set.changed);
            (changed.into_iter())
                .map(|topic| {
                    let wanted = set.topics.contains(&topic);
                    (topic, wanted)
                })
                .collect()
        };
        let mut unwaited = self.unwaited();
        for (topic, _) in changes.iter().filter(|(_, wanted)| !wanted) {
            unwaited.remove(topic);
        }
        changes
    }

    /// Every wanted topic, for a connection that starts with nothing subscribed: the
    /// changes so far are part of it.
    fn take_all_wanted(&self) -> Vec<String> {
        let topics: Vec<String> = {
            let mut set = self.wanted();
            set.changed.clear();
            set.topics.iter().cloned().collect()
        };
        let wanted: HashSet<&String> = topics.iter().collect();
        self.unwaited().retain(|topic| wanted.contains(topic));
        topics
    }

    /// The topic a channel carries (the inverse of `channel`).
    fn topic_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        topic_of(&self.config.prefix, self.sharded(), channel)
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `topics` subscribed (or not), waking joins that wait for them.
    fn set_active<'t>(&self, topics: impl IntoIterator<Item = &'t String>, active: bool) {
        {
            let mut set = self.active();
            for topic in topics {
                if active {
                    set.insert(topic.clone());
                } else {
                    set.remove(topic);
                }
            }
        }
        if active {
            self.activated.notify_waiters();
        }
    }

    fn unwaited(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unwaited.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unpublished(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unpublished.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells this replica's sockets on `topics` that events may have been lost: they
    /// close with 1001 and their clients rejoin with `after`.
    fn resync<'t>(&self, topics: impl IntoIterator<Item = &'t String>) {
        let Some(hub) = self.hub.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut count = 0;
        for topic in topics {
            hub.deliver_local(&Arc::new(HubEvent::resync(topic)));
            count += 1;
        }
        if count > 0 {
            self.config.resyncs.inc_by(count);
            log::warn!("redis: events may have been lost on {count} topics; their sockets rejoin");
        }
    }
}

fn channel(prefix: &str, sharded: bool, topic: &str) -> String {
    if sharded {
        format!("{{{prefix}:topic:{topic}}}")
    } else {
        format!("{prefix}:topic:{topic}")
    }
}

fn topic_of<'c>(prefix: &str, sharded: bool, channel: &'c str) -> Option<&'c str> {
    let inner = if sharded {
        channel.strip_prefix('{')?.strip_suffix('}')?
    } else {
        channel
    };
    (inner.strip_prefix(prefix)?).strip_prefix(":topic:")
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
    publish: mpsc::Sender<Outgoing>,
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
            wanted: Mutex::new(Wanted::default()),
            wanted_changed: Notify::new(),
            active: Mutex::new(HashSet::new()),
            activated: Notify::new(),
            unwaited: Mutex::new(HashSet::new()),
            local_presence: MemoryPresence::default(),
            on_expired: OnceLock::new(),
            unpublished: Mutex::new(HashSet::new()),
        });
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (writes, writes_rx) = mpsc::unbounded_channel();
        let manager = match connected {
            Connected::Single(manager, client) => {
                runtime.spawn(subscriber(shared.clone(), client));
                Conn::Single(manager)
            }
            Connected::Cluster(connection, seed) => {
                runtime.spawn(cluster_subscriber(shared.clone(), connection.clone(), seed));
                Conn::Cluster(connection)
            }
        };
        runtime.spawn(publisher(shared.clone(), manager.clone(), publish_rx));
        runtime.spawn(presence_writer(shared.clone(), manager.clone(), writes_rx));
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
    /// Commands ride the cluster connection; subscriptions, connections to each master
    /// made like the first seed's.
    Cluster(ClusterConnection, redis::ConnectionInfo),
}

/// Marks its topic `unwaited` when dropped before the topic's subscription is active.
struct Waiting {
    shared: Arc<Shared>,
    topic: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // Under the `active` lock, so a subscription activated meanwhile either is seen
        // here or finds the mark when it checks after activating.
        let active = self.shared.active();
        // A topic nobody wants any more has nothing to heal; marked, it would cost the
        // next join on it a needless rejoin.
        let wanted = || self.shared.wanted().topics.contains(&self.topic);
        if !active.contains(&self.topic) && wanted() {
            self.shared.unwaited().insert(self.topic.clone());
        }
    }
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
            let seed = seeds
                .first()
                .ok_or("no seed node")?
                .as_str()
                .into_connection_info()
                .map_err(|e| e.to_string())?;
            let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| e.to_string())?;
            let connection = client
                .get_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Connected::Cluster(connection, seed))
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
        let Some(outgoing) = publish::outgoing(&self.shared, event) else {
            return;
        };
        if self.publish.try_send(outgoing).is_err() {
            log::warn!(
                "redis: publish queue full; an event for {} was dropped",
                event.topic
            );
            self.shared.unpublished().insert(event.topic.clone());
        }
    }

    fn subscribe(&self, topic: &str) {
        self.shared.want(topic, true);
    }

    fn unsubscribe(&self, topic: &str) {
        self.shared.want(topic, false);
    }

    fn subscribed(&self, topic: &str) -> BoxFuture<'static, ()> {
        let (shared, topic) = (self.shared.clone(), topic.to_owned());
        Box::pin(async move {
            // Dropped by the join's timeout, or returning without the subscription:
            // the topic is marked for a resync once subscribed.
            let _waiting = Waiting {
                shared: shared.clone(),
                topic: topic.clone(),
            };
            loop {
                // Registered before the check, so an activation in between is not missed.
                let activated = shared.activated.notified();
                tokio::pin!(activated);
                activated.as_mut().enable();
                if !shared.connected.load(Ordering::Relaxed) || shared.active().contains(&topic) {
                    return;
                }
                activated.await;
            }
        })
    }

    fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::{channel, topic_of};

    #[test]
    fn a_channel_names_its_topic_back() {
        for sharded in [false, true] {
            let name = channel("sidechat", sharded, "chat:a:b");
            assert_eq!(topic_of("sidechat", sharded, &name), Some("chat:a:b"));
            assert_eq!(topic_of("other", sharded, &name), None);
        }
        assert_eq!(channel("p", true, "room:x"), "{p:topic:room:x}");
        assert_eq!(topic_of("p", true, "p:topic:room:x"), None);
    }
}
