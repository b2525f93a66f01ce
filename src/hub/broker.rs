//! Pub/sub between replicas: at-most-once, keyed by topic. Nothing relies on it for
//! durability; a client that misses an event recovers from Postgres with `after`.

use futures_util::future::BoxFuture;

use super::HubEvent;

pub trait Broker: Send + Sync {
    /// Sends an event to the other replicas.
    fn publish(&self, event: &HubEvent);
    /// This replica has its first local subscriber on `topic`.
    fn subscribe(&self, topic: &str);
    /// This replica's last local subscriber on `topic` left.
    fn unsubscribe(&self, topic: &str);
    /// Resolves once events other replicas publish on `topic` reach this one (its
    /// subscription is active), or at once while the broker is disconnected. A join
    /// reads history after this, so that nothing falls between the two.
    fn subscribed(&self, _topic: &str) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
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
