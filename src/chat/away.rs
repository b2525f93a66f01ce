//! Telling those who are not in a conversation of a new message there: the recipient's
//! lobby, absent room members' lobbies (one round per room at a time), and the staff
//! inbox. Runs after the sender's ack, off its path.

use std::collections::HashSet;

use serde_json::json;

use super::{Chat, Message, Topic, UserId, event};
use crate::hub::is_present;
use crate::store::{self, MessageRow, messages, rooms};

/// A lobby's or the inbox's `notification` of a new message in `topic`.
fn notification(to: &Topic, topic: &str, message: &Message, count: i64) -> crate::hub::HubEvent {
    event(
        &to.to_string(),
        "notification",
        &json!({"topic": topic, "message": message, "count": count}),
    )
}

/// The sender and the message a round of room notifications tells of.
type Newest = (String, Message);

/// Rooms with a round of lobby notifications in flight, each with the newest message
/// that arrived meanwhile, waiting for the next round (`Chat::notify_room`).
#[derive(Default)]
pub(super) struct RoomRounds(std::sync::Mutex<std::collections::HashMap<String, Option<Newest>>>);

impl RoomRounds {
    fn rooms(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Option<Newest>>> {
        // Each update is one insert, replacement or removal: still consistent if poisoned.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `newest` back when `topic` has no round in flight (the caller runs one now); None
    /// when one is, and `newest` waits for the next.
    fn start(&self, topic: &str, newest: Newest) -> Option<Newest> {
        match self.rooms().entry(topic.to_owned()) {
            std::collections::hash_map::Entry::Occupied(mut waiting) => {
                *waiting.get_mut() = Some(newest);
                None
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(None);
                Some(newest)
            }
        }
    }

    /// After a round of `topic`: what waits for the next, or None, and the room is done.
    fn next(&self, topic: &str) -> Option<Newest> {
        let mut rooms = self.rooms();
        let waiting = rooms.get_mut(topic).and_then(Option::take);
        if waiting.is_none() {
            rooms.remove(topic);
        }
        waiting
    }
}

impl Chat {
    /// Tells whoever should hear of a new message outside the conversation: the
    /// recipient's lobby when none of their sockets is in it, every absent room member's
    /// lobby, or the staff inbox when a visitor writes; never someone who blocks the
    /// sender. Runs after the sender's ack.
    pub(super) fn notify_away(
        &self,
        topic: &Topic,
        sender: &UserId,
        recipient: Option<UserId>,
        row: &MessageRow,
    ) {
        match (topic, recipient) {
            (_, Some(recipient)) => self.notify_recipient(topic, recipient, row),
            (Topic::Support(visitor), None) if visitor == sender => self.notify_inbox(topic, row),
            (Topic::Room(room), None) => self.notify_room(topic, room.to_string(), sender, row),
            _ => {}
        }
    }

    fn notify_recipient(&self, topic: &Topic, recipient: UserId, row: &MessageRow) {
        if self.blocks.blocks(recipient.as_str(), &row.sender_id) {
            return;
        }
        let topic_name = topic.to_string();
        // Joined on this replica: the message reaches them in the conversation, and most
        // messages end here, with no clone, task or lookup. (A socket still joining is
        // not counted: its join may fail, and its buffered events with it.)
        if self.presence.here(&topic_name, recipient.as_str()) {
            return;
        }
        let (pool, hub, presence) = (self.pool.clone(), self.hub.clone(), self.presence.clone());
        let message = Message::from(row.clone());
        tokio::spawn(async move {
            // Present on any replica: the message reaches them in the conversation.
            if is_present(presence.as_ref(), &topic_name, recipient.as_str()).await {
                return;
            }
            let (t, r) = (topic_name.clone(), recipient.to_string());
            match store::blocking(&pool, move |c| messages::unread_count(c, &t, &r)).await {
                Ok(count) => hub.publish(notification(
                    &Topic::Lobby(recipient),
                    &topic_name,
                    &message,
                    count,
                )),
                Err(e) => log::warn!("notification for {topic_name} dropped: {e}"),
            }
        });
    }

    fn notify_inbox(&self, topic: &Topic, row: &MessageRow) {
        let topic_name = topic.to_string();
        let (pool, hub) = (self.pool.clone(), self.hub.clone());
        let message = Message::from(row.clone());
        tokio::spawn(async move {
            let t = topic_name.clone();
            match store::blocking(&pool, move |c| messages::staff_unread_count(c, &t)).await {
                Ok(count) => hub.publish(notification(&Topic::Inbox, &topic_name, &message, count)),
                Err(e) => log::warn!("inbox notification for {topic_name} dropped: {e}"),
            }
        });
    }

    /// Tells the room's absent members, in their lobbies. Counting each member's unread
    /// costs a query over the room, so a room has at most one such round in flight:
    /// messages that arrive meanwhile are told together, in one more round for the
    /// newest of them (its counts include the others).
    fn notify_room(&self, topic: &Topic, room: String, sender: &UserId, row: &MessageRow) {
        let topic_name = topic.to_string();
        let newest = (sender.to_string(), Message::from(row.clone()));
        let Some(first) = self.room_rounds.start(&topic_name, newest) else {
            return;
        };
        let teller = RoomTeller {
            pool: self.pool.clone(),
            hub: self.hub.clone(),
            presence: self.presence.clone(),
            blocks: self.blocks.clone(),
            topic_name,
            room,
        };
        let rounds = self.room_rounds.clone();
        tokio::spawn(async move {
            let mut next = Some(first);
            while let Some((sender, message)) = next {
                teller.round(sender, message).await;
                next = rounds.next(&teller.topic_name);
            }
        });
    }
}

/// What a room's rounds of lobby notifications read.
struct RoomTeller {
    pool: store::PgPool,
    hub: std::sync::Arc<crate::hub::Hub>,
    presence: std::sync::Arc<dyn crate::hub::Presence>,
    blocks: std::sync::Arc<super::blocks::BlockList>,
    topic_name: String,
    room: String,
}

impl RoomTeller {
    /// One round: every member who is in the room on no replica, and does not block the
    /// sender, hears of `message` with their unread count.
    async fn round(&self, sender: String, message: Message) {
        let topic_name = &self.topic_name;
        // Those present saw it; those who block the sender are not told.
        let mut skipped: HashSet<String> = self
            .presence
            .list(topic_name)
            .await
            .into_iter()
            .map(|(user, _)| user)
            .collect();
        skipped.extend(self.blocks.blockers_of(&sender));
        let room = self.room.clone();
        let counts = store::blocking(&self.pool, move |c| {
            let away: Vec<String> = rooms::members(c, &room)?
                .into_iter()
                .filter(|m| *m != sender && !skipped.contains(m))
                .collect();
            rooms::unread_for_members(c, &room, &away)
        })
        .await;
        match counts {
            Ok(counts) => {
                for (member, count) in counts {
                    if let Ok(lobby) = UserId::parse(&member).map(Topic::Lobby) {
                        self.hub
                            .publish(notification(&lobby, topic_name, &message, count));
                    }
                }
            }
            Err(e) => log::warn!("room notifications for {topic_name} dropped: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(id: i64) -> Newest {
        let row = MessageRow::sample(id, "room:r", "a", "hi");
        ("a".into(), Message::from(row))
    }

    #[test]
    fn a_room_has_one_round_in_flight_and_the_newest_waits_for_the_next() {
        let rounds = RoomRounds::default();
        assert!(
            rounds.start("room:r", newest(1)).is_some(),
            "a round starts"
        );
        assert!(
            rounds.start("room:r", newest(2)).is_none(),
            "one is in flight"
        );
        assert!(rounds.start("room:r", newest(3)).is_none());
        assert!(
            rounds.start("room:s", newest(4)).is_some(),
            "rooms are apart"
        );
        let next = rounds.next("room:r").expect("the newest waits");
        assert_eq!(next.1.id, 3);
        assert!(
            rounds.next("room:r").is_none(),
            "nothing more: the room is done"
        );
        assert!(
            rounds.start("room:r", newest(5)).is_some(),
            "so the next starts at once"
        );
    }
}
