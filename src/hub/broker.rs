//! Pub/sub between replicas: at-most-once, keyed by topic. Nothing relies on it for
//! durability; a client that misses an event recovers from Postgres with `after`.

use super::HubEvent;

pub trait Broker: Send + Sync {
    /// Sends an event to the other replicas.
    fn publish(&self, event: &HubEvent);
    /// This replica has its first local subscriber on `topic`.
    fn subscribe(&self, topic: &str);
    /// This replica's last local subscriber on `topic` left.
    fn unsubscribe(&self, topic: &str);
    /// Whether events reach the other replicas now (for `/readyz`).
    fn is_connected(&self) -> bool {
        true
    }
}

/// One replica: there is nobody else to tell.
pub struct MemoryBroker;

impl Broker for MemoryBroker {
    fn publish(&self, _event: &HubEvent) {}
    fn subscribe(&self, _topic: &str) {}
    fn unsubscribe(&self, _topic: &str) {}
}
