//! Who is online in which topic: state with an owner per connection, apart from pub/sub.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::ConnId;

/// One connection's entry, in the shape `Presence` from the `phoenix` package reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceMeta {
    pub phx_ref: String,
    /// Unix milliseconds.
    pub online_at: i64,
}

pub trait Presence: Send + Sync {
    fn track(&self, topic: &str, conn: ConnId, user_id: &str, meta: PresenceMeta);
    /// Removes the connection's entry and returns it, if it had one.
    fn untrack(&self, topic: &str, conn: ConnId) -> Option<(String, PresenceMeta)>;
    /// Every entry in `topic`: (user id, meta), one per connection.
    fn list(&self, topic: &str) -> Vec<(String, PresenceMeta)>;
    /// Whether any connection of `user_id` is in `topic`.
    fn is_present(&self, topic: &str, user_id: &str) -> bool;
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

    fn list(&self, topic: &str) -> Vec<(String, PresenceMeta)> {
        self.topics()
            .get(topic)
            .map(|entries| entries.values().cloned().collect())
            .unwrap_or_default()
    }

    fn is_present(&self, topic: &str, user_id: &str) -> bool {
        self.topics()
            .get(topic)
            .is_some_and(|entries| entries.values().any(|(u, _)| u == user_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(r: &str) -> PresenceMeta {
        PresenceMeta {
            phx_ref: r.into(),
            online_at: 1,
        }
    }

    #[test]
    fn a_user_is_present_while_any_of_their_connections_is() {
        let p = MemoryPresence::default();
        p.track("chat:1:2", ConnId(1), "1", meta("a"));
        p.track("chat:1:2", ConnId(2), "1", meta("b"));
        assert!(p.is_present("chat:1:2", "1"));
        assert!(!p.is_present("chat:1:2", "2"));
        assert_eq!(p.untrack("chat:1:2", ConnId(1)).unwrap().0, "1");
        assert!(p.is_present("chat:1:2", "1"));
        p.untrack("chat:1:2", ConnId(2));
        assert!(!p.is_present("chat:1:2", "1"));
        assert!(p.list("chat:1:2").is_empty());
        assert!(p.untrack("chat:1:2", ConnId(2)).is_none());
    }
}
