//! Presence diffs, throttled per conversation.
//!
//! Everyone who joins is announced to everyone already there, so a room of N whose members
//! all reconnect at once (a deploy, a network blip) would cost N² frames and fill the
//! sockets' queues. The first change in a conversation goes out at once; changes in the
//! following `window` are merged into one `presence_diff` sent when it ends. A quiet
//! conversation sees no delay; a busy one at most one diff per window.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::hub::{Hub, PresenceMeta};

/// One merged diff, in the shape `Presence` from the `phoenix` package reads:
/// `{"joins": {user: {"metas": [...]}}, "leaves": {...}}`.
#[derive(Default)]
struct Pending {
    joins: Map<String, Value>,
    leaves: Map<String, Value>,
}

impl Pending {
    fn add(&mut self, change: Change, user: &str, meta: &PresenceMeta) {
        let side = match change {
            Change::Join => &mut self.joins,
            Change::Leave => &mut self.leaves,
        };
        let entry = side
            .entry(user.to_owned())
            .or_insert_with(|| json!({"metas": []}));
        if let Some(metas) = entry.get_mut("metas").and_then(Value::as_array_mut) {
            metas.push(json!(meta));
        }
    }

    fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    fn payload(self) -> Value {
        json!({"joins": self.joins, "leaves": self.leaves})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Join,
    Leave,
}

pub struct PresenceDiffs {
    hub: Arc<Hub>,
    window: Duration,
    /// Conversations inside a window, with what waits for its end.
    open: Mutex<HashMap<String, Pending>>,
}

impl PresenceDiffs {
    pub fn new(hub: Arc<Hub>, window: Duration) -> Arc<PresenceDiffs> {
        Arc::new(PresenceDiffs {
            hub,
            window,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        // Each update is one insert, merge or removal: a poisoned map is still consistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces that `user`'s connection `meta` joined or left `topic`.
    pub fn announce(
        self: &Arc<Self>,
        topic: &str,
        change: Change,
        user: &str,
        meta: &PresenceMeta,
    ) {
        {
            let mut open = self.open();
            match open.entry(topic.to_owned()) {
                Entry::Occupied(mut waiting) => {
                    waiting.get_mut().add(change, user, meta);
                    return;
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(Pending::default());
                }
            }
        }
        // Outside a window: send now, and open one.
        let mut single = Pending::default();
        single.add(change, user, meta);
        self.publish(topic, single);
        self.close_window_later(topic.to_owned());
    }

    fn close_window_later(self: &Arc<Self>, topic: String) {
        let diffs = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(diffs.window).await;
                let waiting = {
                    let mut open = diffs.open();
                    match open.get_mut(&topic) {
                        Some(pending) if !pending.is_empty() => std::mem::take(pending),
                        _ => {
                            // Nothing came during the window: the next change goes at once.
                            open.remove(&topic);
                            return;
                        }
                    }
                };
                // What came during the window goes now, and opens another one.
                diffs.publish(&topic, waiting);
            }
        });
    }

    fn publish(&self, topic: &str, diff: Pending) {
        let payload = diff.payload().to_string();
        self.hub.publish(crate::hub::HubEvent::new(
            topic,
            "presence_diff",
            Arc::from(payload),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ConnId, HubEvent, MemoryBroker, Subscriber};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn meta(n: u32) -> PresenceMeta {
        PresenceMeta {
            name: None,
            phx_ref: format!("F{n}"),
            online_at: 1,
        }
    }

    fn listening(hub: &Hub, topic: &str) -> mpsc::Receiver<Arc<HubEvent>> {
        let (queue, rx) = mpsc::channel(64);
        hub.subscribe(
            topic,
            Subscriber {
                conn: ConnId(1),
                user_id: "watcher".into(),
                queue,
                overflowed: CancellationToken::new(),
            },
        );
        rx
    }

    fn diff(event: &HubEvent) -> Value {
        assert_eq!(event.event, "presence_diff");
        serde_json::from_str(&event.payload).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_change_goes_at_once_and_a_burst_becomes_one_diff() {
        let hub = Arc::new(Hub::new(Arc::new(MemoryBroker)));
        let mut rx = listening(&hub, "room:r");
        let diffs = PresenceDiffs::new(hub, Duration::from_millis(50));
        diffs.announce("room:r", Change::Join, "a", &meta(1));
        let first = diff(&rx.try_recv().unwrap());
        assert_eq!(first["joins"]["a"]["metas"][0]["phx_ref"], "F1");

        for n in 2..=100 {
            diffs.announce("room:r", Change::Join, &format!("u{n}"), &meta(n));
        }
        diffs.announce("room:r", Change::Leave, "a", &meta(1));
        assert!(rx.try_recv().is_err(), "held until the window ends");

        let merged = diff(&rx.recv().await.unwrap());
        assert_eq!(merged["joins"].as_object().unwrap().len(), 99);
        assert_eq!(merged["leaves"]["a"]["metas"][0]["phx_ref"], "F1");
        assert!(rx.try_recv().is_err(), "one diff for the whole burst");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_window_closes_so_the_next_change_goes_at_once() {
        let hub = Arc::new(Hub::new(Arc::new(MemoryBroker)));
        let mut rx = listening(&hub, "room:r");
        let diffs = PresenceDiffs::new(hub, Duration::from_millis(50));
        diffs.announce("room:r", Change::Join, "a", &meta(1));
        rx.try_recv().unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(diffs.open().is_empty(), "no window left open");
        diffs.announce("room:r", Change::Leave, "a", &meta(1));
        let leave = diff(&rx.try_recv().unwrap());
        assert_eq!(leave["leaves"]["a"]["metas"][0]["phx_ref"], "F1");
    }

    #[tokio::test(start_paused = true)]
    async fn conversations_have_their_own_windows() {
        let hub = Arc::new(Hub::new(Arc::new(MemoryBroker)));
        let mut one = listening(&hub, "room:one");
        let mut two = listening(&hub, "room:two");
        let diffs = PresenceDiffs::new(hub, Duration::from_millis(50));
        diffs.announce("room:one", Change::Join, "a", &meta(1));
        diffs.announce("room:two", Change::Join, "b", &meta(2));
        assert!(one.try_recv().is_ok());
        assert!(two.try_recv().is_ok());
    }
}
