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
}
