//! Blocks (PROTOCOL.md §10): who refuses to hear from whom.
//!
//! Every send and every notification asks, so each replica keeps the whole relation in
//! memory (`BlockList`) and never asks Postgres on that path. Postgres is the truth: the
//! copy is loaded from it at start-up and again every `RELOAD`, and each change is
//! published on `BLOCKS_TOPIC`, which every replica listens to. An event names only the
//! pair: each replica reads the pair's state from Postgres when it hears of it, so two
//! changes heard in either order leave every copy as the last commit left the table.
//! The reload mends what the broker's at-most-once delivery may have lost; changes made
//! while it reads are laid over what it read.

use std::collections::{HashMap, HashSet};
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

/// A pair whose block changed, as it travels between replicas.
#[derive(Debug, Serialize, Deserialize)]
struct BlockChange {
    blocker: String,
    blocked: String,
}

/// Both directions of the relation, so each question is one lookup.
#[derive(Default)]
struct Relation {
    /// blocker -> whom they block.
    by_blocker: HashMap<String, HashSet<String>>,
    /// blocked -> who blocks them.
    by_blocked: HashMap<String, HashSet<String>>,
    /// How many pairs: kept, not counted, as the gauge reads it at every change.
    pairs: usize,
}

impl Relation {
    fn insert(&mut self, blocker: &str, blocked: &str) {
        if link(&mut self.by_blocker, blocker, blocked) {
            link(&mut self.by_blocked, blocked, blocker);
            self.pairs += 1;
        }
    }

    fn remove(&mut self, blocker: &str, blocked: &str) {
        if unlink(&mut self.by_blocker, blocker, blocked) {
            unlink(&mut self.by_blocked, blocked, blocker);
            self.pairs -= 1;
        }
    }

    fn blocks(&self, blocker: &str, blocked: &str) -> bool {
        self.by_blocker
            .get(blocker)
            .is_some_and(|blocked_ones| blocked_ones.contains(blocked))
    }
}

/// Adds `from -> to`; false when it was there already.
fn link(map: &mut HashMap<String, HashSet<String>>, from: &str, to: &str) -> bool {
    map.entry(from.to_owned())
        .or_default()
        .insert(to.to_owned())
}

/// Removes `from -> to`; false when it was not there.
fn unlink(map: &mut HashMap<String, HashSet<String>>, from: &str, to: &str) -> bool {
    let Some(set) = map.get_mut(from) else {
        return false;
    };
    let removed = set.remove(to);
    if set.is_empty() {
        map.remove(from);
    }
    removed
}

/// The copy, and while a reload reads: the pairs set meanwhile, to lay over what it read.
#[derive(Default)]
struct State {
    relation: Relation,
    set_during_reload: Option<Vec<(String, String, bool)>>,
}

/// This replica's copy of every block.
#[derive(Default)]
pub(super) struct BlockList {
    state: RwLock<State>,
}

impl BlockList {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Each write is one insert or removal, or a whole replacement: consistent if poisoned.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `blocker` blocks `blocked`.
    pub fn blocks(&self, blocker: &str, blocked: &str) -> bool {
        self.read().relation.blocks(blocker, blocked)
    }

    /// Whether either of two users blocks the other.
    pub fn between(&self, a: &str, b: &str) -> bool {
        let state = self.read();
        state.relation.blocks(a, b) || state.relation.blocks(b, a)
    }

    /// Everyone who blocks `blocked`.
    pub fn blockers_of(&self, blocked: &str) -> Vec<String> {
        self.read()
            .relation
            .by_blocked
            .get(blocked)
            .map(|blockers| blockers.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sets one pair as Postgres has it.
    fn set(&self, blocker: &str, blocked: &str, on: bool) {
        let mut state = self.write();
        if on {
            state.relation.insert(blocker, blocked);
        } else {
            state.relation.remove(blocker, blocked);
        }
        if let Some(meanwhile) = &mut state.set_during_reload {
            meanwhile.push((blocker.to_owned(), blocked.to_owned(), on));
        }
    }

    /// A reload's query starts: pairs set from now on are laid over its rows.
    fn reload_starts(&self) {
        self.write().set_during_reload = Some(Vec::new());
    }

    /// A reload's rows, or None when its query failed (the copy stays as it is).
    fn reload_ends(&self, rows: Option<Vec<(String, String)>>) {
        let Some(rows) = rows else {
            self.write().set_during_reload = None;
            return;
        };
        let mut fresh = Relation::default();
        for (blocker, blocked) in &rows {
            fresh.insert(blocker, blocked);
        }
        let mut state = self.write();
        for (blocker, blocked, on) in state.set_during_reload.take().unwrap_or_default() {
            if on {
                fresh.insert(&blocker, &blocked);
            } else {
                fresh.remove(&blocker, &blocked);
            }
        }
        state.relation = fresh;
    }

    pub fn len(&self) -> usize {
        self.read().relation.pairs
    }
}

/// The hub event that tells every replica (this one included) of a change.
fn change_event(blocker: &str, blocked: &str) -> HubEvent {
    let change = BlockChange {
        blocker: blocker.to_owned(),
        blocked: blocked.to_owned(),
    };
    event(BLOCKS_TOPIC, "block", &change)
}

/// Tells every replica that the blocks of an erased user are gone.
pub(super) fn publish_forgotten(hub: &crate::hub::Hub, blocks: &[(String, String)]) {
    for (blocker, blocked) in blocks {
        hub.publish(change_event(blocker, blocked));
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
        let most = i64::from(self.config.max_blocks_per_user);
        let now_on = store::blocking(&self.pool, move |c| {
            if on {
                if store::blocks::add(c, &a, &b, most)? == store::blocks::Added::TooMany {
                    return Ok(None);
                }
            } else {
                store::blocks::remove(c, &a, &b)?;
            }
            // As the table has it now, whatever raced this.
            store::blocks::is_blocked(c, &a, &b).map(Some)
        })
        .await
        .map_err(storage)?
        .ok_or(Reason::TooLarge)?;
        self.blocks.set(blocker.as_str(), blocked.as_str(), now_on);
        self.count_blocks();
        // Told even when nothing changed here: a replica that missed the first telling
        // catches up on the repeat.
        self.hub
            .publish(change_event(blocker.as_str(), blocked.as_str()));
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
        self.blocks.reload_starts();
        self.blocks.reload_ends(Some(rows));
        self.count_blocks();
    }

    fn count_blocks(&self) {
        self.metrics.blocks.set(self.blocks.len() as i64);
    }

    /// Keeps this replica's copy of the blocks current until `stop`: reads each pair any
    /// replica tells of, and the whole relation at once (what changed between the load
    /// at start-up and the listening) and every `RELOAD`.
    pub async fn keep_blocks(self: Arc<Self>, stop: CancellationToken) {
        let mut listener = self.listen_for_blocks();
        let mut reload = tokio::time::interval(RELOAD);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                received = listener.1.recv() => match received {
                    Some(hub_event) => self.reread_pair(&hub_event).await,
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

    /// Sets the pair an event names as Postgres has it now.
    async fn reread_pair(&self, hub_event: &HubEvent) {
        let change: BlockChange = match serde_json::from_str(&hub_event.payload) {
            Ok(change) => change,
            Err(e) => return log::warn!("blocks: unreadable change: {e}"),
        };
        let (a, b) = (change.blocker.clone(), change.blocked.clone());
        match store::blocking(&self.pool, move |c| store::blocks::is_blocked(c, &a, &b)).await {
            Ok(on) => {
                self.blocks.set(&change.blocker, &change.blocked, on);
                self.count_blocks();
            }
            // The next reload reads it.
            Err(e) => log::warn!("blocks: cannot read a changed pair: {e}"),
        }
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
        self.blocks.reload_starts();
        let rows = match store::blocking(&self.pool, store::blocks::all).await {
            Ok(rows) => Some(rows),
            Err(e) => {
                log::warn!("blocks: cannot reload: {e}");
                None
            }
        };
        self.blocks.reload_ends(rows);
        self.count_blocks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_one_way_and_between_sees_both() {
        let list = BlockList::default();
        list.set("a", "b", true);
        list.set("a", "b", true);
        assert_eq!(list.len(), 1, "a pair set twice counts once");
        assert!(list.blocks("a", "b"));
        assert!(!list.blocks("b", "a"));
        assert!(list.between("b", "a"));
        assert_eq!(list.blockers_of("b"), vec!["a".to_string()]);
        list.set("a", "b", false);
        list.set("a", "b", false);
        assert!(!list.between("a", "b"));
        assert_eq!(list.len(), 0, "a pair removed twice counts once");
        assert!(list.blockers_of("b").is_empty());
    }

    #[test]
    fn pairs_set_while_a_reload_reads_are_laid_over_its_rows() {
        let list = BlockList::default();
        list.set("old", "gone", true);
        list.reload_starts();
        list.set("a", "b", true);
        list.set("c", "d", false);
        // The rows were read before both changes.
        list.reload_ends(Some(vec![
            ("c".into(), "d".into()),
            ("e".into(), "f".into()),
        ]));
        assert!(list.blocks("a", "b"), "set meanwhile: kept");
        assert!(!list.blocks("c", "d"), "unset meanwhile: kept");
        assert!(list.blocks("e", "f"), "read");
        assert!(!list.blocks("old", "gone"), "no longer in the table");
        // A failed reload leaves the copy as it was.
        list.reload_starts();
        list.reload_ends(None);
        assert_eq!(list.len(), 2);
    }
}
