//! What a client asks of a topic, parsed from an event name and its JSON payload.
//! Both socket protocols (Phoenix, ActionCable) decode into these.

use serde::Deserialize;
use serde_json::Value;

use super::Reason;
use super::ids::{ClientRef, MessageId};
use super::list::ListParams;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Join(JoinParams),
    Leave,
    NewMsg(NewMsg),
    Read(MessageId),
    Typing(bool),
    History(HistoryParams),
    /// The lobby's page of the user's conversation list.
    Conversations(ListParams),
    /// A report of a message of the conversation.
    Report(ReportParams),
    /// The author replaces a message's body.
    EditMsg {
        id: MessageId,
        body: String,
    },
    /// The author (or staff in support) deletes a message.
    DeleteMsg(MessageId),
    /// A reaction to a message, or (`on` false) taking one back.
    React {
        id: MessageId,
        emoji: String,
        on: bool,
    },
}

/// The longest reason a report may give, in bytes.
pub const MAX_REPORT_REASON_BYTES: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct ReportParams {
    pub message_id: MessageId,
    /// Trimmed; an empty one is none.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct JoinParams {
    pub limit: Option<u32>,
    pub after: Option<MessageId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewMsg {
    /// Checked against `chat.max_body_bytes` by the service.
    pub body: String,
    pub client_ref: Option<ClientRef>,
    pub meta: serde_json::Map<String, Value>,
    /// A message of the same conversation this one answers.
    pub reply_to: Option<MessageId>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryParams {
    pub before: Option<MessageId>,
    pub after: Option<MessageId>,
    pub limit: Option<u32>,
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    before: Option<i64>,
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize)]
struct RawNewMsg {
    body: String,
    #[serde(default)]
    client_ref: Option<String>,
    #[serde(default)]
    meta: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    reply_to: Option<i64>,
}

#[derive(Deserialize)]
struct RawRead {
    message_id: i64,
}

#[derive(Deserialize)]
struct RawEdit {
    id: i64,
    body: String,
}

#[derive(Deserialize)]
struct RawReaction {
    id: i64,
    emoji: String,
}

#[derive(Deserialize)]
struct RawId {
    id: i64,
}

#[derive(Deserialize)]
struct RawReport {
    message_id: i64,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct RawTyping {
    typing: bool,
}

fn fields<T: serde::de::DeserializeOwned>(payload: &Value) -> Result<T, Reason> {
    // A missing payload (null) reads as {} so optional fields stay optional. Only
    // objects are accepted: serde would otherwise read [1, 2] as fields by position.
    let payload = match payload {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => payload.clone(),
        _ => return Err(Reason::InvalidPayload),
    };
    serde_json::from_value(payload).map_err(|_| Reason::InvalidPayload)
}

fn message_id(raw: Option<i64>) -> Result<Option<MessageId>, Reason> {
    raw.map(|id| MessageId::parse(id).map_err(|_| Reason::InvalidPayload))
        .transpose()
}

fn limit(raw: Option<i64>) -> Result<Option<u32>, Reason> {
    match raw {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        Some(_) => Err(Reason::InvalidPayload),
    }
}

impl Request {
    /// `event` and `payload` as a client sent them. Lifecycle events of the socket
    /// protocol itself (heartbeats) never reach here.
    pub fn parse(event: &str, payload: &Value) -> Result<Request, Reason> {
        match event {
            "phx_join" => {
                let raw: RawPage = fields(payload)?;
                Ok(Request::Join(JoinParams {
                    limit: limit(raw.limit)?,
                    after: message_id(raw.after)?,
                }))
            }
            "phx_leave" => Ok(Request::Leave),
            "new_msg" => {
                let raw: RawNewMsg = fields(payload)?;
                let client_ref = raw
                    .client_ref
                    .map(|r| ClientRef::parse(&r).map_err(|_| Reason::InvalidPayload))
                    .transpose()?;
                Ok(Request::NewMsg(NewMsg {
                    body: raw.body,
                    client_ref,
                    meta: raw.meta.unwrap_or_default(),
                    reply_to: message_id(raw.reply_to)?,
                }))
            }
            "read" => {
                let raw: RawRead = fields(payload)?;
                let id = MessageId::parse(raw.message_id).map_err(|_| Reason::InvalidPayload)?;
                Ok(Request::Read(id))
            }
            "typing" => {
                let raw: RawTyping = fields(payload)?;
                Ok(Request::Typing(raw.typing))
            }
            "history" => {
                let raw: RawPage = fields(payload)?;
                Ok(Request::History(HistoryParams {
                    before: message_id(raw.before)?,
                    after: message_id(raw.after)?,
                    limit: limit(raw.limit)?,
                }))
            }
            "conversations" => {
                let raw: RawList = fields(payload)?;
                ListParams::parse(raw.before.as_deref(), raw.limit)
                    .map(Request::Conversations)
                    .map_err(|_| Reason::InvalidPayload)
            }
            "edit_msg" => {
                let raw: RawEdit = fields(payload)?;
                let id = MessageId::parse(raw.id).map_err(|_| Reason::InvalidPayload)?;
                Ok(Request::EditMsg { id, body: raw.body })
            }
            "delete_msg" => {
                let raw: RawId = fields(payload)?;
                MessageId::parse(raw.id)
                    .map(Request::DeleteMsg)
                    .map_err(|_| Reason::InvalidPayload)
            }
            "react" | "unreact" => {
                let raw: RawReaction = fields(payload)?;
                let id = MessageId::parse(raw.id).map_err(|_| Reason::InvalidPayload)?;
                Ok(Request::React {
                    id,
                    emoji: raw.emoji,
                    on: event == "react",
                })
            }
            "report" => {
                let raw: RawReport = fields(payload)?;
                let message_id =
                    MessageId::parse(raw.message_id).map_err(|_| Reason::InvalidPayload)?;
                let reason = raw
                    .reason
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty());
                if let Some(reason) = &reason
                    && (reason.len() > MAX_REPORT_REASON_BYTES || !super::ids::storable(reason))
                {
                    return Err(Reason::InvalidPayload);
                }
                Ok(Request::Report(ReportParams { message_id, reason }))
            }
            _ => Err(Reason::UnknownEvent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn well_formed_requests_parse() {
        assert_eq!(
            Request::parse("phx_join", &json!({})).unwrap(),
            Request::Join(JoinParams::default())
        );
        assert_eq!(
            Request::parse("phx_join", &json!({"after": 5, "limit": 10})).unwrap(),
            Request::Join(JoinParams {
                limit: Some(10),
                after: Some(MessageId::parse(5).unwrap())
            })
        );
        assert_eq!(
            Request::parse("typing", &json!({"typing": true})).unwrap(),
            Request::Typing(true)
        );
        assert_eq!(
            Request::parse("report", &json!({"message_id": 3, "reason": "  "})).unwrap(),
            Request::Report(ReportParams {
                message_id: MessageId::parse(3).unwrap(),
                reason: None
            })
        );
        assert!(matches!(
            Request::parse("new_msg", &json!({"body": "hi", "client_ref": "c", "meta": {"a": 1}})),
            Ok(Request::NewMsg(m)) if m.body == "hi" && m.meta.len() == 1
        ));
    }

    #[test]
    fn bad_payloads_are_invalid_payload_and_unknown_events_unknown_event() {
        let cases = [
            ("new_msg", json!({})),
            ("new_msg", json!({"body": 5})),
            ("new_msg", json!({"body": "x", "meta": [1]})),
            ("new_msg", json!({"body": "x", "client_ref": ""})),
            ("new_msg", json!("text")),
            ("read", json!({"message_id": "7"})),
            ("read", json!({"message_id": 0})),
            ("typing", json!({"typing": "yes"})),
            ("history", json!({"limit": 0})),
            ("history", json!({"before": -1})),
            ("phx_join", json!({"after": "x"})),
            ("phx_join", json!([1, 2])),
            ("conversations", json!({"limit": 0})),
            ("conversations", json!({"before": "nope"})),
            ("conversations", json!({"before": 5})),
            ("report", json!({})),
            ("edit_msg", json!({"id": 1})),
            ("edit_msg", json!({"body": "x"})),
            ("edit_msg", json!({"id": 0, "body": "x"})),
            ("delete_msg", json!({"id": "1"})),
            ("report", json!({"message_id": 0})),
            ("report", json!({"message_id": 1, "reason": 5})),
            (
                "report",
                json!({"message_id": 1, "reason": "x".repeat(1001)}),
            ),
            ("report", json!({"message_id": 1, "reason": "a\u{0}b"})),
        ];
        for (event, payload) in cases {
            assert_eq!(
                Request::parse(event, &payload),
                Err(Reason::InvalidPayload),
                "{event} {payload}"
            );
        }
        assert_eq!(
            Request::parse("shout", &json!({})),
            Err(Reason::UnknownEvent)
        );
    }
}
