//! Row structs, each apart from its insert form.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::messages;

/// A stored message, as read back.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = messages)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct MessageRow {
    pub id: i64,
    pub topic: String,
    pub sender_id: String,
    pub recipient_id: Option<String>,
    pub body: String,
    pub kind: String,
    pub status: String,
    pub meta: serde_json::Value,
    pub client_ref: Option<String>,
    pub sent_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub is_delivered: bool,
    /// The sender's display name when it was sent.
    pub user_name: Option<String>,
    /// The message this one replies to, and a quote of it (author, first bytes of its
    /// body); the quote is None once the original is deleted or erased.
    pub reply_to: Option<i64>,
    pub reply_to_user: Option<String>,
    pub reply_to_body: Option<String>,
    /// A summary of its reactions (PROTOCOL.md §11's `reactions`), kept in step with the
    /// `reactions` table by `store::reactions`; None without any.
    pub reactions: Option<serde_json::Value>,
}

#[cfg(test)]
impl MessageRow {
    /// A live, unread, complete user message sent now: for unit tests.
    pub fn sample(id: i64, topic: &str, sender: &str, body: &str) -> MessageRow {
        MessageRow {
            id,
            topic: topic.into(),
            sender_id: sender.into(),
            recipient_id: None,
            body: body.into(),
            kind: "user".into(),
            status: "complete".into(),
            meta: serde_json::json!({}),
            client_ref: None,
            sent_at: Utc::now(),
            edited_at: None,
            deleted_at: None,
            is_delivered: false,
            user_name: None,
            reply_to: None,
            reply_to_user: None,
            reply_to_body: None,
            reactions: None,
        }
    }
}

/// A message to insert; the writer inserts a slice of these in one statement
/// (`messages::insert_all`, as column arrays).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub topic: String,
    pub sender_id: String,
    pub recipient_id: Option<String>,
    pub body: String,
    pub kind: String,
    pub status: String,
    pub meta: serde_json::Value,
    pub client_ref: Option<String>,
    pub user_name: Option<String>,
    /// The message replied to, with its author and quote (checked by the caller).
    pub reply: Option<(i64, String, String)>,
}
