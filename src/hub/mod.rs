//! Who listens where, on this replica: topic -> local subscribers, sharded so that a
//! busy topic does not lock the others. Events for other replicas go through a `Broker`;
//! who is online where lives in a `Presence`.

mod broker;
mod presence;
pub mod redis;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use broker::{Broker, MemoryBroker};
pub use presence::{MemoryPresence, Presence, PresenceMeta, is_present};

/// Identifies one socket on this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One event for every subscriber of a topic. The payload is encoded once, as JSON
/// text, and shared by every socket it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct HubEvent {
    /// The canonical topic.
    pub topic: String,
    pub event: String,
    pub payload: Arc<str>,
    /// For `new_msg`: lets a joining socket drop what its history already holds.
    pub message_id: Option<i64>,
    /// Not delivered to this user's sockets (typing goes to the others only).
    pub skip_user: Option<String>,
    /// Delivered to this user's sockets only (a `DROP_EVENT` for a removed member).
    pub only_user: Option<String>,
}

/// An event no client ever sees: the sockets it reaches leave the topic and tell their
/// client with `phx_close`. A removed room member's joins end this way, on every replica.
pub const DROP_EVENT: &str = "sidechat:drop";

/// An event no client ever sees: the broker may have lost events of this topic (a Redis
/// failover, a publish that failed), so the sockets it reaches close with 1001 and their
/// clients rejoin with `after`, which reads what they missed from Postgres.
pub const RESYNC_EVENT: &str = "sidechat:resync";

impl HubEvent {
    /// An event for every subscriber of `topic`, its payload already encoded as JSON.
    pub fn new(topic: &str, event: &str, payload: Arc<str>) -> HubEvent {
        HubEvent {
            topic: topic.to_owned(),
            event: event.to_owned(),
            payload,
            message_id: None,
            skip_user: None,
            only_user: None,
        }
    }

    /// Makes every socket leave `topic` (a chat the host closed).
    pub fn drop_all(topic: &str) -> HubEvent {
        HubEvent::new(topic, DROP_EVENT, Arc::from("{}"))
    }

    /// Makes every socket of `topic` on the replicas it reaches rejoin with `after`.
    pub fn resync(topic: &str) -> HubEvent {
        HubEvent::new(topic, RESYNC_EVENT, Arc::from("{}"))
    }

    /// Makes `user_id`'s sockets leave `topic`.
    pub fn drop_user(topic: &str, user_id: &str) -> HubEvent {
        HubEvent {
            only_user: Some(user_id.to_owned()),
            ..HubEvent::new(topic, DROP_EVENT, Arc::from("{}"))
        }
    }
}

/// A socket's end of the hub: a bounded queue, and a token the hub cancels when the
/// queue overflows (the socket then closes with 4002 and its client recovers with `after`).
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub user_id: String,
    pub queue: mpsc::Sender<Arc<HubEvent>>,
    pub overflowed: CancellationToken,
}

/// Shards: enough that unrelated topics rarely share a lock on a 2-64 core machine.
const SHARDS: usize = 64;

type Shard = HashMap<String, Vec<Subscriber>>;

pub struct Hub {
    shards: Vec<Mutex<Shard>>,
    broker: Arc<dyn Broker>,
}

impl Hub {
    pub fn new(broker: Arc<dyn Broker>) -> Hub {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            broker,
        }
    }

    fn shard(&self, topic: &str) -> MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        let index = (hasher.finish() % SHARDS as u64) as usize;
        // `index < SHARDS == shards.len()`. A poisoned shard only means another thread
        // panicked mid-update of a plain map; its data is still usable.
        let shard = self.shards.get(index).unwrap_or_else(|| unreachable!());
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a subscriber, replacing an earlier one of the same socket.
    pub fn subscribe(&self, topic: &str, subscriber: Subscriber) {
        let mut shard = self.shard(topic);
        let subs = shard.entry(topic.to_owned()).or_default();
        subs.retain(|s| s.conn != subscriber.conn);
        subs.push(subscriber);
        if subs.len() == 1 {
            // Under the shard's lock: a leave and a join racing on one topic must reach
            // the broker in the order they changed the listeners.
            self.broker.subscribe(topic);
        }
    }

    /// Resolves once events from other replicas on `topic` reach this one (see
    /// `Broker::subscribed`).
    pub fn subscribed(&self, topic: &str) -> futures_util::future::BoxFuture<'static, ()> {
        self.broker.subscribed(topic)
    }

    pub fn unsubscribe(&self, topic: &str, conn: ConnId) {
        let mut shard = self.shard(topic);
        let Some(subs) = shard.get_mut(topic) else {
            return;
        };
        subs.retain(|s| s.conn != conn);
        if subs.is_empty() {
            shard.remove(topic);
            self.broker.unsubscribe(topic); // under the lock, as in `subscribe`
        }
    }

    /// Sends an event to this replica's subscribers and, through the broker, the others'.
    pub fn publish(&self, event: HubEvent) {
        let event = Arc::new(event);
        self.broker.publish(&event);
        self.deliver_local(&event);
    }

    /// Delivers to this replica's subscribers only (the broker calls this for events
    /// from other replicas).
    pub fn deliver_local(&self, event: &Arc<HubEvent>) {
        let shard = self.shard(&event.topic);
        let Some(subs) = shard.get(&event.topic) else {
            return;
        };
        for sub in subs {
            if event.skip_user.as_deref() == Some(sub.user_id.as_str()) {
                continue;
            }
            if event
                .only_user
                .as_deref()
                .is_some_and(|only| only != sub.user_id)
            {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = sub.queue.try_send(event.clone()) {
                // Never block the publisher for one slow client: cut it loose instead.
                sub.overflowed.cancel();
            }
        }
    }

    /// Whether the broker reaches the other replicas.
    pub fn broker_connected(&self) -> bool {
        self.broker.is_connected()
    }

    /// Topics with a listener on this replica (each holds a broker subscription).
    pub fn topic_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// How many sockets on this replica listen on `topic`.
    pub fn local_subscribers(&self, topic: &str) -> usize {
        self.shard(topic).get(topic).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(
        conn: u64,
        user: &str,
        capacity: usize,
    ) -> (Subscriber, mpsc::Receiver<Arc<HubEvent>>) {
        let (queue, rx) = mpsc::channel(capacity);
        (
            Subscriber {
                conn: ConnId(conn),
                user_id: user.into(),
                queue,
                overflowed: CancellationToken::new(),
            },
            rx,
        )
    }

    fn event(topic: &str, skip: Option<&str>) -> HubEvent {
        HubEvent {
            skip_user: skip.map(String::from),
            ..HubEvent::new(topic, "new_msg", Arc::from("{}"))
        }
    }

    #[test]
    fn events_reach_only_the_topics_subscribers() {
        let hub = Hub::new(Arc::new(MemoryBroker));
        let (a, mut rx_a) = subscriber(1, "1", 4);
        let (b, mut rx_b) = subscriber(2, "2", 4);
        hub.subscribe("chat:1:2", a);
        hub.subscribe("chat:2:3", b);
        hub.publish(event("chat:1:2", None));
        assert_eq!(rx_a.try_recv().unwrap().topic, "chat:1:2");
        assert!(rx_b.try_recv().is_err());
    }

    #[test]
    fn skip_user_leaves_out_that_users_sockets() {
        let hub = Hub::new(Arc::new(MemoryBroker));
        let (a, mut rx_a) = subscriber(1, "1", 4);
        let (b, mut rx_b) = subscriber(2, "2", 4);
        hub.subscribe("chat:1:2", a);
        hub.subscribe("chat:1:2", b);
        hub.publish(event("chat:1:2", Some("1")));
        assert!(rx_a.try_recv().is_err());
        assert!(rx_b.try_recv().is_ok());
    }

    #[test]
    fn a_drop_reaches_only_its_user() {
        let hub = Hub::new(Arc::new(MemoryBroker));
        let (a, mut rx_a) = subscriber(1, "1", 4);
        let (b, mut rx_b) = subscriber(2, "2", 4);
        hub.subscribe("room:r", a);
        hub.subscribe("room:r", b);
        hub.publish(HubEvent::drop_user("room:r", "2"));
        assert!(rx_a.try_recv().is_err());
        assert_eq!(rx_b.try_recv().unwrap().event, DROP_EVENT);
    }

    #[test]
    fn a_full_queue_cancels_the_subscriber_instead_of_blocking() {
        let hub = Hub::new(Arc::new(MemoryBroker));
        let (a, _rx) = subscriber(1, "1", 1);
        let overflowed = a.overflowed.clone();
        hub.subscribe("t", a);
        hub.publish(event("t", None));
        assert!(!overflowed.is_cancelled());
        hub.publish(event("t", None));
        assert!(overflowed.is_cancelled());
    }

    #[test]
    fn unsubscribing_the_last_socket_forgets_the_topic() {
        let hub = Hub::new(Arc::new(MemoryBroker));
        let (a, _rx) = subscriber(1, "1", 1);
        hub.subscribe("t", a.clone());
        hub.subscribe("t", a);
        assert_eq!(hub.local_subscribers("t"), 1);
        assert_eq!(hub.topic_count(), 1);
        hub.unsubscribe("t", ConnId(1));
        assert_eq!(hub.local_subscribers("t"), 0);
        assert_eq!(hub.topic_count(), 0);
    }
}
