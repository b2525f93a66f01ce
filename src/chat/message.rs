//! The Message object of PROTOCOL.md §3, as clients see it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::MessageRow;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reaction {
    pub emoji: String,
    pub count: i64,
    /// The first ten who reacted with it.
    pub users: Vec<String>,
}

/// The reactions of a stored message, from its summary.
fn reactions(row_id: i64, summary: Option<serde_json::Value>) -> Vec<Reaction> {
    let Some(summary) = summary else {
        return Vec::new();
    };
    serde_json::from_value(summary).unwrap_or_else(|e| {
        // Postgres wrote it: a failure is a bug here, not bad input.
        log::error!("reactions summary of message {row_id}: {e}");
        Vec::new()
    })
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
            reactions: reactions(row.id, row.reactions),
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
            // As `sidechat_reactions_of` writes it: jsonb orders an object's keys.
            reactions: Some(serde_json::json!([
                {"count": 2, "emoji": "👍", "users": ["2", "3"]}
            ])),
        };
        let json = serde_json::to_value(Message::from(row)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 123, "topic": "chat:1:2", "user_id": "1", "body": "hi", "meta": {},
                "kind": "user", "status": "complete", "client_ref": "c1",
                "sent_at": "2026-11-22T10:00:00.123Z", "edited_at": null, "is_delivered": false,
                "user_name": "Ann", "reply_to": {"id": 7, "user_id": "2", "body": "earlier"},
                "reactions": [{"emoji": "👍", "count": 2, "users": ["2", "3"]}]
            })
        );
    }
}
