//! Presence on Redis: each replica's entries in a sorted set per topic, scored by when
//! they expire, refreshed every third of the TTL; a crashed replica's entries expire and
//! are announced once, by whichever replica removes them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use tokio::sync::mpsc;

use super::{Conn, Entry, OnExpired, PUBLISH_QUEUE, RECONNECT_AFTER, Shared};
use crate::hub::{ConnId, Presence, PresenceMeta};

pub(super) enum PresenceWrite {
    Track { topic: String, member: String },
    Untrack { topic: String, member: String },
}

pub struct RedisPresence {
    pub(super) shared: Arc<Shared>,
    pub(super) writes: mpsc::UnboundedSender<PresenceWrite>,
    pub(super) reads: Conn,
    pub(super) runtime: tokio::runtime::Handle,
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

    fn here(&self, topic: &str, user_id: &str) -> bool {
        self.shared.local_presence.here(topic, user_id)
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

pub(super) async fn presence_writer(
    shared: Arc<Shared>,
    mut redis: Conn,
    mut writes: mpsc::UnboundedReceiver<PresenceWrite>,
) {
    let ttl_ms = i64::try_from(shared.config.presence_ttl.as_millis()).unwrap_or(30_000);
    // Departures Redis did not take (it, or the key's shard, was away): retried, so a
    // user who left is not listed until the TTL. A failed arrival needs no retry: the
    // refresher writes every local entry again within a third of the TTL.
    let mut owed: VecDeque<(String, String)> = VecDeque::new();
    let mut retry = tokio::time::interval(RECONNECT_AFTER);
    let mut refresh = tokio::time::interval(shared.config.presence_ttl / 3);
    loop {
        tokio::select! {
            // In this task, not beside it: a refresh that read the entries before a
            // departure must not write the departed one back after its removal.
            _ = refresh.tick() => refresh_and_sweep(&shared, &mut redis, ttl_ms).await,
            write = writes.recv() => {
                let Some(write) = write else { return };
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
                        let key = shared.presence_key(&topic);
                        let removed = redis.zrem(&key, &member).await;
                        if removed.is_err() && owed.len() < PUBLISH_QUEUE {
                            owed.push_back((key, member));
                        }
                        removed
                    }
                };
                if let Err(e) = result {
                    log::warn!("redis: presence write failed: {e}");
                }
            }
            _ = retry.tick(), if !owed.is_empty() => {
                // Oldest first; the first failure ends the pass (Redis is still away),
                // so a long backlog cannot hold up the refresh.
                while let Some((key, member)) = owed.front() {
                    let removed: redis::RedisResult<()> = redis.zrem(key, member).await;
                    if removed.is_err() {
                        break;
                    }
                    owed.pop_front();
                }
            }
        }
    }
}

/// Every third of the TTL: pushes this replica's entries' expiry forward, and removes
/// (and announces, through `on_expired`) entries whose replica stopped refreshing them.
async fn refresh_and_sweep(shared: &Shared, redis: &mut Conn, ttl_ms: i64) {
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
    // One pipeline for a single Redis; on a cluster one per topic, each on its shard.
    let mut pipelines: Vec<redis::Pipeline> = Vec::new();
    for (topic, members) in &by_topic {
        if shared.sharded() || pipelines.is_empty() {
            pipelines.push(redis::pipe());
        }
        let Some(refresh) = pipelines.last_mut() else {
            continue;
        };
        let key = shared.presence_key(topic);
        for member in members {
            refresh.zadd(&key, member, expires).ignore();
        }
        refresh.pexpire(&key, ttl_ms * 2).ignore();
    }
    let mut failed = false;
    for refresh in &pipelines {
        // On a cluster, a shard that is away fails its own topics only.
        let refreshed: redis::RedisResult<()> = refresh.query_async(redis).await;
        if let Err(e) = refreshed {
            log::warn!("redis: presence refresh failed: {e}");
            failed = true;
            if !shared.sharded() {
                break;
            }
        }
    }
    // Sweeping needs this replica's own entries fresh, or it would announce them.
    if failed {
        return;
    }
    for topic in by_topic.keys() {
        sweep_expired(shared, redis, topic).await;
    }
}

async fn sweep_expired(shared: &Shared, redis: &mut Conn, topic: &str) {
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
