//! The Message object of PROTOCOL.md §3, as clients see it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::MessageRow;
use crate::store::reactions::ReactionCount;

/// A stored message as every client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Message {
    pub id: i64,
    /// The canonical spelling of the conversation.
    pub topic: String,
    /// Who sent it.
    pub user_id: String,
    pub body: String,
    #[schema(value_type = Object)]
    pub meta: serde_json::Value,
    /// `user`, `bot` or `system`.
    pub kind: String,
    /// `complete`, or `streaming` while a bot is still appending.
    pub status: String,
    pub client_ref: Option<String>,
    /// RFC 3339 with milliseconds, UTC.
    pub sent_at: String,
    pub edited_at: Option<String>,
    /// The recipient's client reported it seen (`read`).
    pub is_delivered: bool,
    /// The sender's display name when they sent it (their token's `name`), if any.
    pub user_name: Option<String>,
    /// The message this one replies to, quoted; null once that one is deleted or erased.
    pub reply_to: Option<Quote>,
    /// Each emoji reacted with, in the order first used.
    pub reactions: Vec<Reaction>,
}

/// One emoji on a message.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Reaction {
    pub emoji: String,
    pub count: i64,
    /// The first ten who reacted with it.
    pub users: Vec<String>,
}

impl Message {
    /// A stored message with its reactions (`counts` may hold other messages' too).
    pub fn with_reactions(row: MessageRow, counts: Vec<ReactionCount>) -> Message {
        let mut message = Message::from(row);
        message.reactions = counts
            .into_iter()
            .filter(|c| c.message_id == message.id)
            .map(Reaction::from)
            .collect();
        message
    }
}

impl From<ReactionCount> for Reaction {
    fn from(c: ReactionCount) -> Self {
        Reaction {
            emoji: c.emoji,
            count: c.count,
            users: c.users,
        }
    }
}

/// One query's reaction counts for several messages, grouped by message.
#[derive(Default)]
pub struct ReactionsByMessage(std::collections::HashMap<i64, Vec<Reaction>>);

impl ReactionsByMessage {
    pub fn new(counts: Vec<ReactionCount>) -> ReactionsByMessage {
        let mut by_message = ReactionsByMessage::default();
        for count in counts {
            by_message
                .0
                .entry(count.message_id)
                .or_default()
                .push(Reaction::from(count));
        }
        by_message
    }

    /// A stored message with its reactions (each message's are handed out once).
    pub fn message(&mut self, row: MessageRow) -> Message {
        let mut message = Message::from(row);
        message.reactions = self.0.remove(&message.id).unwrap_or_default();
        message
    }
}

/// Messages with their reactions, from one query's `counts` for all of them.
pub fn messages_with_reactions(rows: Vec<MessageRow>, counts: Vec<ReactionCount>) -> Vec<Message> {
    let mut by_message = ReactionsByMessage::new(counts);
    rows.into_iter()
        .map(|row| by_message.message(row))
        .collect()
}

/// What a reply shows of the message it answers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Quote {
    pub id: i64,
    pub user_id: String,
    /// The first 200 bytes of its body, as it is now.
    pub body: String,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    User,
    Bot,
    System,
}

/// Whether a message is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    #[default]
    Complete,
    /// A bot is still appending to it.
    Streaming,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::User => "user",
            MessageKind::Bot => "bot",
            MessageKind::System => "system",
        }
    }
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Streaming => "streaming",
        }
    }
}

/// `2026-11-22T10:00:00.123Z`: milliseconds, UTC, as JavaScript's `Date` prints.
pub(super) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Message {
            id: row.id,
            topic: row.topic,
            user_id: row.sender_id,
            body: row.body,
            meta: row.meta,
            kind: row.kind,
            status: row.status,
            client_ref: row.client_ref,
            sent_at: timestamp(row.sent_at),
            edited_at: row.edited_at.map(timestamp),
            is_delivered: row.is_delivered,
            user_name: row.user_name,
            reply_to: match (row.reply_to, row.reply_to_user, row.reply_to_body) {
                (Some(id), Some(user_id), Some(body)) => Some(Quote { id, user_id, body }),
                _ => None,
            },
            reactions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_message_serialises_with_the_protocol_field_names() {
        let row = MessageRow {
            id: 123,
            topic: "chat:1:2".into(),
            sender_id: "1".into(),
            recipient_id: Some("2".into()),
            body: "hi".into(),
            kind: "user".into(),
            status: "complete".into(),
            meta: serde_json::json!({}),
            client_ref: Some("c1".into()),
            sent_at: Utc.timestamp_millis_opt(1_795_341_600_123).unwrap(),
            edited_at: None,
            deleted_at: None,
            is_delivered: false,
            user_name: Some("Ann".into()),
            reply_to: Some(7),
            reply_to_user: Some("2".into()),
            reply_to_body: Some("earlier".into()),
        };
        let json = serde_json::to_value(Message::from(row)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 123, "topic": "chat:1:2", "user_id": "1", "body": "hi", "meta": {},
                "kind": "user", "status": "complete", "client_ref": "c1",
                "sent_at": "2026-11-22T10:00:00.123Z", "edited_at": null, "is_delivered": false,
                "user_name": "Ann", "reply_to": {"id": 7, "user_id": "2", "body": "earlier"},
                "reactions": []
            })
        );
    }
}
