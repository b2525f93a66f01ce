//! Topics (PROTOCOL.md §3): what a client joins, and who may join it.

use std::cmp::Ordering;
use std::fmt;

use super::ids::{Actor, Role, RoomId, UserId};

/// A parsed topic in canonical form: `chat:` holds its two ids in canonical order, so
/// `chat:a:b` and `chat:b:a` are one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `user:<uid>`: the user's lobby.
    Lobby(UserId),
    /// `chat:<a>:<b>` with `a` before `b` in canonical order.
    Direct(UserId, UserId),
    /// `room:<rid>`.
    Room(RoomId),
    /// `support:<uid>`: a visitor's conversation with the site's staff.
    Support(UserId),
    /// `inbox`: every support conversation, for staff.
    Inbox,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TopicError(&'static str);

/// The longest topic string we parse: `chat:` and two 64-character ids.
const MAX_TOPIC_LEN: usize = 5 + 64 + 1 + 64;

impl Topic {
    pub fn parse(raw: &str) -> Result<Topic, TopicError> {
        if raw.len() > MAX_TOPIC_LEN {
            return Err(TopicError("topic too long"));
        }
        if raw == "inbox" {
            return Ok(Topic::Inbox);
        }
        let (kind, rest) = raw.split_once(':').ok_or(TopicError(
            "a topic is user:, chat:, room:, support: or inbox",
        ))?;
        let id = |s: &str| UserId::parse(s).map_err(|_| TopicError("invalid id in topic"));
        match kind {
            "user" => Ok(Topic::Lobby(id(rest)?)),
            "support" => Ok(Topic::Support(id(rest)?)),
            "room" => RoomId::parse(rest)
                .map(Topic::Room)
                .map_err(|_| TopicError("invalid room id in topic")),
            "chat" => {
                let (a, b) = rest
                    .split_once(':')
                    .ok_or(TopicError("chat topics are chat:<a>:<b>"))?;
                let (a, b) = (id(a)?, id(b)?);
                if a == b {
                    return Err(TopicError("a chat needs two different users"));
                }
                Ok(Topic::direct(a, b))
            }
            _ => Err(TopicError(
                "a topic is user:, chat:, room:, support: or inbox",
            )),
        }
    }

    /// The one-to-one conversation of two users, in canonical order.
    pub fn direct(a: UserId, b: UserId) -> Topic {
        if canonical_order(a.as_str(), b.as_str()) == Ordering::Greater {
            Topic::Direct(b, a)
        } else {
            Topic::Direct(a, b)
        }
    }

    /// Conversations hold messages; the lobby and the inbox only summarise them.
    pub fn is_conversation(&self) -> bool {
        matches!(self, Topic::Direct(..) | Topic::Room(_) | Topic::Support(_))
    }

    /// Whether `actor` may join, as far as the topic alone decides. Rooms also need a
    /// membership row, which the caller checks in the store.
    pub fn admits(&self, actor: &Actor) -> bool {
        match self {
            Topic::Lobby(owner) => *owner == actor.user_id,
            Topic::Direct(a, b) => *a == actor.user_id || *b == actor.user_id,
            Topic::Room(_) => true,
            Topic::Support(visitor) => *visitor == actor.user_id || actor.role == Role::Staff,
            Topic::Inbox => actor.role == Role::Staff,
        }
    }

    /// Who a message from `sender` is addressed to, for the unread state kept in
    /// `is_delivered`: the other side of a one-to-one chat, the visitor when staff answer
    /// in support. `None` in rooms and for a visitor writing to staff.
    pub fn recipient_of(&self, sender: &UserId) -> Option<UserId> {
        match self {
            Topic::Direct(a, b) if a == sender => Some(b.clone()),
            Topic::Direct(a, b) if b == sender => Some(a.clone()),
            Topic::Support(visitor) if visitor != sender => Some(visitor.clone()),
            _ => None,
        }
    }
}

/// Numeric order when both ids are integers (so `chat:2:10`), byte order otherwise.
fn canonical_order(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if numeric(a) && numeric(b) {
        let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        ta.len()
            .cmp(&tb.len())
            .then_with(|| ta.cmp(tb))
            .then_with(|| a.cmp(b))
    } else {
        a.cmp(b)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Lobby(u) => write!(f, "user:{u}"),
            Topic::Direct(a, b) => write!(f, "chat:{a}:{b}"),
            Topic::Room(r) => write!(f, "room:{r}"),
            Topic::Support(u) => write!(f, "support:{u}"),
            Topic::Inbox => f.write_str("inbox"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: &str, role: Role) -> Actor {
        Actor {
            user_id: UserId::parse(id).unwrap(),
            role,
            name: None,
        }
    }

    #[test]
    fn both_spellings_of_a_chat_are_one_canonical_topic() {
        let cases = [
            ("chat:2:10", "chat:2:10"),
            ("chat:10:2", "chat:2:10"),
            ("chat:bob:alice", "chat:alice:bob"),
            ("chat:b:10", "chat:10:b"),
            ("chat:007:7", "chat:007:7"),
            ("chat:7:007", "chat:007:7"),
        ];
        for (raw, canonical) in cases {
            assert_eq!(Topic::parse(raw).unwrap().to_string(), canonical, "{raw}");
        }
    }

    #[test]
    fn parsing_a_canonical_topic_gives_it_back() {
        for raw in [
            "user:1",
            "chat:1:2",
            "chat:a@x.io:b@x.io",
            "room:general",
            "support:42",
            "inbox",
        ] {
            let topic = Topic::parse(raw).unwrap();
            assert_eq!(topic.to_string(), raw);
            assert_eq!(Topic::parse(&topic.to_string()).unwrap(), topic);
        }
    }

    #[test]
    fn malformed_topics_are_refused() {
        for raw in [
            "",
            "chat",
            "chat:1",
            "chat:1:1",
            "chat:1:2:3",
            "user:",
            "user:a b",
            "lobby:1",
            "room:",
            "inboxx",
            "support:a:b",
        ] {
            assert!(Topic::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn only_participants_are_admitted() {
        let chat = Topic::parse("chat:1:2").unwrap();
        assert!(chat.admits(&actor("1", Role::User)));
        assert!(chat.admits(&actor("2", Role::User)));
        assert!(!chat.admits(&actor("3", Role::Staff)));
        let lobby = Topic::parse("user:1").unwrap();
        assert!(lobby.admits(&actor("1", Role::User)));
        assert!(!lobby.admits(&actor("2", Role::Staff)));
        let support = Topic::parse("support:9").unwrap();
        assert!(support.admits(&actor("9", Role::User)));
        assert!(support.admits(&actor("3", Role::Staff)));
        assert!(!support.admits(&actor("3", Role::User)));
        assert!(Topic::Inbox.admits(&actor("3", Role::Staff)));
        assert!(!Topic::Inbox.admits(&actor("3", Role::User)));
    }

    #[test]
    fn the_recipient_is_the_other_side() {
        let chat = Topic::parse("chat:1:2").unwrap();
        let one = UserId::parse("1").unwrap();
        let two = UserId::parse("2").unwrap();
        assert_eq!(chat.recipient_of(&one), Some(two.clone()));
        assert_eq!(chat.recipient_of(&two), Some(one.clone()));
        let support = Topic::Support(one.clone());
        assert_eq!(support.recipient_of(&one), None);
        assert_eq!(support.recipient_of(&two), Some(one));
    }
}
