//! Who is online in which topic: state with an owner per connection, apart from pub/sub.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::ConnId;

/// One connection's entry, in the shape `Presence` from the `phoenix` package reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMeta {
    pub phx_ref: String,
    /// Unix milliseconds.
    pub online_at: i64,
    /// The user's display name, when their token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Presence across every replica. Changes are this replica's own connections and take
/// effect at once for it; reads ask the shared state (Redis) for the other replicas'.
pub trait Presence: Send + Sync {
    fn track(&self, topic: &str, conn: ConnId, user_id: &str, meta: PresenceMeta);
    /// Removes the connection's entry and returns it, if it had one.
    fn untrack(&self, topic: &str, conn: ConnId) -> Option<(String, PresenceMeta)>;
    /// Every entry in `topic`, on any replica: (user id, meta), one per connection.
    fn list(&self, topic: &str) -> BoxFuture<'static, Vec<(String, PresenceMeta)>>;
    /// Whether a connection of `user_id` on this replica is in `topic`: no round trip.
    fn here(&self, topic: &str, user_id: &str) -> bool;
}

/// Whether any connection of `user_id` is in `topic`, on any replica.
pub async fn is_present(presence: &dyn Presence, topic: &str, user_id: &str) -> bool {
    presence
        .list(topic)
        .await
        .iter()
        .any(|(user, _)| user == user_id)
}

type Entries = HashMap<ConnId, (String, PresenceMeta)>;

/// One replica's presence, in memory.
#[derive(Default)]
pub struct MemoryPresence {
    topics: Mutex<HashMap<String, Entries>>,
}

impl MemoryPresence {
    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entries>> {
        // A poisoned map is still a consistent map: each update is one insert or remove.
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Presence for MemoryPresence {
    fn track(&self, topic: &str, conn: ConnId, user_id: &str, meta: PresenceMeta) {
        self.topics()
            .entry(topic.to_owned())
            .or_default()
            .insert(conn, (user_id.to_owned(), meta));
    }

    fn untrack(&self, topic: &str, conn: ConnId) -> Option<(String, PresenceMeta)> {
        let mut topics = self.topics();
        let entries = topics.get_mut(topic)?;
        let removed = entries.remove(&conn);
        if entries.is_empty() {
            topics.remove(topic);
        }
        removed
    }

    fn list(&self, topic: &str) -> BoxFuture<'static, Vec<(String, PresenceMeta)>> {
        let entries = self.local(topic);
        Box::pin(async move { entries })
    }

    fn here(&self, topic: &str, user_id: &str) -> bool {
        self.topics()
            .get(topic)
            .is_some_and(|entries| entries.values().any(|(user, _)| user == user_id))
    }
}

impl MemoryPresence {
    /// This replica's entries in `topic`.
    pub fn local(&self, topic: &str) -> Vec<(String, PresenceMeta)> {
        self.topics()
            .get(topic)
            .map(|entries| entries.values().cloned().collect())
            .unwrap_or_default()
    }

    /// This replica's entries everywhere: (topic, conn, user id, meta).
    pub fn all(&self) -> Vec<(String, ConnId, String, PresenceMeta)> {
        self.topics()
            .iter()
            .flat_map(|(topic, entries)| {
                entries
                    .iter()
                    .map(|(conn, (user, meta))| (topic.clone(), *conn, user.clone(), meta.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(r: &str) -> PresenceMeta {
        PresenceMeta {
            name: None,
            phx_ref: r.into(),
            online_at: 1,
        }
    }

    #[tokio::test]
    async fn a_user_is_present_while_any_of_their_connections_is() {
        let p = MemoryPresence::default();
        p.track("chat:1:2", ConnId(1), "1", meta("a"));
        p.track("chat:1:2", ConnId(2), "1", meta("b"));
        assert!(is_present(&p, "chat:1:2", "1").await);
        assert!(p.here("chat:1:2", "1"));
        assert!(!is_present(&p, "chat:1:2", "2").await);
        assert!(!p.here("chat:1:2", "2"));
        assert_eq!(p.untrack("chat:1:2", ConnId(1)).unwrap().0, "1");
        assert!(is_present(&p, "chat:1:2", "1").await);
        p.untrack("chat:1:2", ConnId(2));
        assert!(!is_present(&p, "chat:1:2", "1").await);
        assert!(!p.here("chat:1:2", "1"));
        assert!(p.list("chat:1:2").await.is_empty());
        assert!(p.untrack("chat:1:2", ConnId(2)).is_none());
    }
}
