//! The Message object of PROTOCOL.md §3, as clients see it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::store::MessageRow;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub id: i64,
    /// Canonical spelling.
    pub topic: String,
    pub user_id: String,
    pub body: String,
    pub meta: serde_json::Value,
    pub kind: String,
    pub status: String,
    pub client_ref: Option<String>,
    pub sent_at: String,
    pub edited_at: Option<String>,
    pub is_delivered: bool,
}

/// `2026-11-22T10:00:00.123Z`: milliseconds, UTC, as JavaScript's `Date` prints.
fn timestamp(at: DateTime<Utc>) -> String {
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
        };
        let json = serde_json::to_value(Message::from(row)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 123, "topic": "chat:1:2", "user_id": "1", "body": "hi", "meta": {},
                "kind": "user", "status": "complete", "client_ref": "c1",
                "sent_at": "2026-11-22T10:00:00.123Z", "edited_at": null, "is_delivered": false
            })
        );
    }
}
