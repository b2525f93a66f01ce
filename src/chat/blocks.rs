//! Blocks (PROTOCOL.md §10): who refuses to hear from whom.
//!
//! Every send and every notification asks, so each replica keeps the whole relation in
//! memory (`BlockList`) and never asks Postgres on that path. Postgres is the truth: the
//! copy is loaded from it at start-up and again every `RELOAD`, and each change is
//! published on `BLOCKS_TOPIC`, which every replica listens to, so a block made on one
//! holds on the others as soon as the broker carries it. The reload mends what the
//! broker's at-most-once delivery may have lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Chat, Reason, UserId, event, storage};
use crate::hub::{ConnId, HubEvent, Subscriber};
use crate::store;

/// The hub topic block changes travel on. Not a topic a client can name.
pub const BLOCKS_TOPIC: &str = "sidechat:blocks";
/// The hub connection id of this replica's listener on `BLOCKS_TOPIC` (sockets count up
/// from 1).
const LISTENER: ConnId = ConnId(u64::MAX);
/// How often the copy is read again from Postgres.
const RELOAD: Duration = Duration::from_secs(30);

/// One change, as it travels between replicas.
#[derive(Debug, Serialize, Deserialize)]
struct BlockChange {
    blocker: String,
    blocked: String,
    on: bool,
}

/// Both directions of the relation, so each question is one lookup.
#[derive(Default)]
struct Relation {
    /// blocker -> whom they block.
    by_blocker: HashMap<String, HashSet<String>>,
    /// blocked -> who blocks them.
    by_blocked: HashMap<String, HashSet<String>>,
}

impl Relation {
    fn insert(&mut self, blocker: &str, blocked: &str) {
        link(&mut self.by_blocker, blocker, blocked);
        link(&mut self.by_blocked, blocked, blocker);
    }

    fn remove(&mut self, blocker: &str, blocked: &str) {
        unlink(&mut self.by_blocker, blocker, blocked);
        unlink(&mut self.by_blocked, blocked, blocker);
    }

    fn blocks(&self, blocker: &str, blocked: &str) -> bool {
        self.by_blocker
            .get(blocker)
            .is_some_and(|blocked_ones| blocked_ones.contains(blocked))
    }
}

fn link(map: &mut HashMap<String, HashSet<String>>, from: &str, to: &str) {
    map.entry(from.to_owned())
        .or_default()
        .insert(to.to_owned());
}

fn unlink(map: &mut HashMap<String, HashSet<String>>, from: &str, to: &str) {
    if let Some(set) = map.get_mut(from) {
        set.remove(to);
        if set.is_empty() {
            map.remove(from);
        }
    }
}

/// This replica's copy of every block.
#[derive(Default)]
pub(super) struct BlockList {
    relation: RwLock<Relation>,
    /// Counts changes applied, so a reload that raced one does not undo it.
    changes: AtomicU64,
}

impl BlockList {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Relation> {
        // Each write is one insert or removal, or a whole replacement: consistent if poisoned.
        self.relation.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Relation> {
        self.relation.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `blocker` blocks `blocked`.
    pub fn blocks(&self, blocker: &str, blocked: &str) -> bool {
        self.read().blocks(blocker, blocked)
    }

    /// Whether either of two users blocks the other.
    pub fn between(&self, a: &str, b: &str) -> bool {
        let relation = self.read();
        relation.blocks(a, b) || relation.blocks(b, a)
    }

    /// Everyone who blocks `blocked`.
    pub fn blockers_of(&self, blocked: &str) -> Vec<String> {
        self.read()
            .by_blocked
            .get(blocked)
            .map(|blockers| blockers.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn apply(&self, change: &BlockChange) {
        let mut relation = self.write();
        if change.on {
            relation.insert(&change.blocker, &change.blocked);
        } else {
            relation.remove(&change.blocker, &change.blocked);
        }
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the copy with `rows` read from Postgres, unless a change was applied
    /// since `seen` (the rows may predate it; the next reload tries again).
    fn replace(&self, rows: Vec<(String, String)>, seen: u64) -> bool {
        let mut fresh = Relation::default();
        for (blocker, blocked) in &rows {
            fresh.insert(blocker, blocked);
        }
        let mut relation = self.write();
        if self.changes.load(Ordering::Relaxed) != seen {
            return false;
        }
        *relation = fresh;
        true
    }

    pub fn len(&self) -> usize {
        self.read().by_blocker.values().map(HashSet::len).sum()
    }
}

/// The hub event that tells every replica (this one included) of a change.
fn change_event(blocker: &str, blocked: &str, on: bool) -> HubEvent {
    let change = BlockChange {
        blocker: blocker.to_owned(),
        blocked: blocked.to_owned(),
        on,
    };
    event(BLOCKS_TOPIC, "block", &change)
}

/// Tells every replica that the blocks of an erased user are gone.
pub(super) fn publish_forgotten(hub: &crate::hub::Hub, blocks: &[(String, String)]) {
    for (blocker, blocked) in blocks {
        hub.publish(change_event(blocker, blocked, false));
    }
}

impl Chat {
    /// `blocker` blocks `blocked`, on every replica. Blocking yourself is refused.
    pub async fn block(&self, blocker: &UserId, blocked: &UserId) -> Result<(), Reason> {
        self.set_block(blocker, blocked, true).await
    }

    /// `blocker` no longer blocks `blocked`, on every replica.
    pub async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<(), Reason> {
        self.set_block(blocker, blocked, false).await
    }

    async fn set_block(&self, blocker: &UserId, blocked: &UserId, on: bool) -> Result<(), Reason> {
        if blocker == blocked {
            return Err(Reason::InvalidPayload);
        }
        let (a, b) = (blocker.to_string(), blocked.to_string());
        store::blocking(&self.pool, move |c| {
            if on {
                store::blocks::add(c, &a, &b)
            } else {
                store::blocks::remove(c, &a, &b)
            }
        })
        .await
        .map_err(storage)?;
        // Told even when nothing changed here: a replica that missed the first telling
        // catches up on the repeat.
        self.blocks.apply(&BlockChange {
            blocker: blocker.to_string(),
            blocked: blocked.to_string(),
            on,
        });
        self.count_blocks();
        self.hub
            .publish(change_event(blocker.as_str(), blocked.as_str(), on));
        Ok(())
    }

    /// Whom `blocker` blocks, oldest block first.
    pub async fn blocks_of(&self, blocker: &UserId) -> Result<Vec<String>, Reason> {
        let blocker = blocker.to_string();
        store::blocking(&self.pool, move |c| store::blocks::of(c, &blocker))
            .await
            .map_err(storage)
    }

    /// Whether either of two users blocks the other (this replica's copy).
    pub fn blocked_between(&self, a: &UserId, b: &UserId) -> bool {
        self.blocks.between(a.as_str(), b.as_str())
    }

    /// Loads every block from Postgres into this replica's copy (start-up).
    pub fn load_blocks(&self, rows: Vec<(String, String)>) {
        let seen = self.blocks.changes.load(Ordering::Relaxed);
        self.blocks.replace(rows, seen);
        self.count_blocks();
    }

    fn count_blocks(&self) {
        self.metrics.blocks.set(self.blocks.len() as i64);
    }

    /// Keeps this replica's copy of the blocks current until `stop`: applies every change
    /// any replica publishes, and reads the whole relation again every `RELOAD`.
    pub async fn keep_blocks(self: Arc<Self>, stop: CancellationToken) {
        let mut listener = self.listen_for_blocks();
        let mut reload = tokio::time::interval(RELOAD);
        reload.tick().await; // the first tick is now: `build` has just loaded
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                received = listener.1.recv() => match received {
                    Some(hub_event) => match serde_json::from_str::<BlockChange>(&hub_event.payload) {
                        Ok(change) => {
                            self.blocks.apply(&change);
                            self.count_blocks();
                        }
                        Err(e) => log::warn!("blocks: unreadable change: {e}"),
                    },
                    None => break,
                },
                _ = listener.0.overflowed.cancelled() => {
                    // Changes were lost: listen afresh and read the truth again.
                    log::warn!("blocks: the change queue overflowed; reloading");
                    listener = self.listen_for_blocks();
                    self.reload_blocks().await;
                }
                _ = reload.tick() => self.reload_blocks().await,
            }
        }
        self.hub.unsubscribe(BLOCKS_TOPIC, LISTENER);
    }

    fn listen_for_blocks(&self) -> (Subscriber, mpsc::Receiver<Arc<HubEvent>>) {
        let (queue, received) = mpsc::channel(4096);
        let subscriber = Subscriber {
            conn: LISTENER,
            user_id: String::new(),
            queue,
            overflowed: CancellationToken::new(),
        };
        self.hub.subscribe(BLOCKS_TOPIC, subscriber.clone());
        (subscriber, received)
    }

    async fn reload_blocks(&self) {
        let seen = self.blocks.changes.load(Ordering::Relaxed);
        match store::blocking(&self.pool, store::blocks::all).await {
            Ok(rows) => {
                if !self.blocks.replace(rows, seen) {
                    log::debug!("blocks: a change arrived while reloading; next time");
                }
                self.count_blocks();
            }
            Err(e) => log::warn!("blocks: cannot reload: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(blocker: &str, blocked: &str, on: bool) -> BlockChange {
        BlockChange {
            blocker: blocker.into(),
            blocked: blocked.into(),
            on,
        }
    }

    #[test]
    fn a_block_is_one_way_and_between_sees_both() {
        let list = BlockList::default();
        list.apply(&change("a", "b", true));
        assert!(list.blocks("a", "b"));
        assert!(!list.blocks("b", "a"));
        assert!(list.between("b", "a"));
        assert_eq!(list.blockers_of("b"), vec!["a".to_string()]);
        list.apply(&change("a", "b", false));
        assert!(!list.between("a", "b"));
        assert_eq!(list.len(), 0);
        assert!(list.blockers_of("b").is_empty());
    }

    #[test]
    fn a_reload_that_raced_a_change_does_not_undo_it() {
        let list = BlockList::default();
        let seen = list.changes.load(Ordering::Relaxed);
        list.apply(&change("a", "b", true));
        assert!(!list.replace(vec![], seen), "the rows predate the block");
        assert!(list.blocks("a", "b"));
        let seen = list.changes.load(Ordering::Relaxed);
        assert!(list.replace(vec![("c".into(), "d".into())], seen));
        assert!(list.blocks("c", "d") && !list.blocks("a", "b"));
    }
}
