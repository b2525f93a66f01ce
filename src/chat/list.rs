//! A user's conversation list (PROTOCOL.md §10): what a chat UI's sidebar draws.
//!
//! Pages run newest activity first and continue from an opaque cursor: the position of
//! the last item given, so a page never repeats what an earlier one gave. A
//! conversation that gets a message while a client pages moves to the top; the client
//! hears of it live (the conversation's `new_msg`, or the lobby's `notification`), not
//! on a later page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::message::timestamp;
use super::{Chat, Message, Reason, Topic, UserId, storage};
use crate::store::{self, conversations};

/// Items in a page when the client names no limit, and the most it may name.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
const LIMIT_RULE: &str = "limit must be 1 to 200";

/// Marks the cursors this server issues, so that anything else is told apart.
const CURSOR_VERSION: &str = "c1";

/// A page the client asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    after: Option<conversations::Position>,
    limit: u32,
}

/// Why list parameters were refused: `invalid_payload`, with the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ListError(pub &'static str);

impl ListParams {
    /// `before` is a `next` this server gave; `limit` 1 to `MAX_LIMIT`.
    pub fn parse(before: Option<&str>, limit: Option<i64>) -> Result<ListParams, ListError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=i64::from(MAX_LIMIT)).contains(&n) => n as u32,
            Some(_) => return Err(ListError(LIMIT_RULE)),
        };
        let after = before.map(decode_cursor).transpose()?;
        Ok(ListParams { after, limit })
    }
}

fn encode_cursor(position: &conversations::Position) -> String {
    let micros = position.at.timestamp_micros();
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}|{micros}|{}", position.topic))
}

fn decode_cursor(raw: &str) -> Result<conversations::Position, ListError> {
    const NOT_OURS: ListError = ListError("before is not a cursor this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| NOT_OURS)?;
    let text = String::from_utf8(bytes).map_err(|_| NOT_OURS)?;
    let mut parts = text.splitn(3, '|');
    let (Some(CURSOR_VERSION), Some(micros), Some(topic)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(NOT_OURS);
    };
    // Within what a page can start from: any time past it would fail the query rather
    // than the cursor.
    let at = micros
        .parse::<i64>()
        .ok()
        .filter(|m| (0..=conversations::LATEST_SECOND * 1_000_000).contains(m))
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or(NOT_OURS)?;
    match Topic::parse(topic) {
        Ok(parsed) if parsed.is_conversation() && parsed.to_string() == topic => {
            Ok(conversations::Position {
                at,
                topic: topic.to_owned(),
            })
        }
        _ => Err(NOT_OURS),
    }
}

/// `chat`, `room` or `support`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Chat,
    Room,
    Support,
}

/// One conversation of a user's list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Conversation {
    /// The canonical topic.
    pub topic: String,
    pub kind: ConversationKind,
    /// The other user of a one-to-one chat.
    pub peer: Option<String>,
    /// A room's name.
    pub name: Option<String>,
    /// The newest live message; null for a room that has none.
    pub last_message: Option<Message>,
    /// As the lobby's unread summary counts.
    pub unread: i64,
    /// The last message's time (a room's creation while it has none), RFC 3339 UTC.
    pub updated_at: String,
}

/// A page of the list, most recent activity first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ConversationPage {
    pub conversations: Vec<Conversation>,
    /// More conversations lie past this page.
    pub more: bool,
    /// Pass as `before` for the next page; null on the last.
    pub next: Option<String>,
}

impl Chat {
    /// A page of `user`'s conversations.
    pub async fn conversations(
        &self,
        user: &UserId,
        params: ListParams,
    ) -> Result<ConversationPage, Reason> {
        let started = std::time::Instant::now();
        let user_id = user.to_string();
        let limit = i64::from(params.limit);
        // One more than asked: whether there is a next page.
        let mut listed = store::blocking(&self.pool, move |conn| {
            conversations::page(conn, &user_id, params.after.as_ref(), limit + 1)
        })
        .await
        .map_err(storage)?;
        let more = listed.len() as i64 > limit;
        listed.truncate(params.limit as usize);
        let next = more.then(|| listed.last()).flatten().map(|l| {
            encode_cursor(&conversations::Position {
                at: l.at,
                topic: l.topic.clone(),
            })
        });
        let conversations = listed
            .into_iter()
            .filter_map(|l| {
                let topic = Topic::parse(&l.topic).ok()?;
                let (kind, peer) = match topic {
                    Topic::Direct(..) => (
                        ConversationKind::Chat,
                        topic.recipient_of(user).map(|peer| peer.to_string()),
                    ),
                    Topic::Room(_) => (ConversationKind::Room, None),
                    Topic::Support(_) => (ConversationKind::Support, None),
                    _ => return None,
                };
                Some(Conversation {
                    kind,
                    peer,
                    name: l.room_name,
                    last_message: l.last_message.map(Message::from),
                    unread: l.unread,
                    updated_at: timestamp(l.at),
                    topic: l.topic,
                })
            })
            .collect();
        self.metrics
            .read_seconds
            .get_or_create(&crate::metrics::KindLabel {
                kind: "conversations",
            })
            .observe(started.elapsed().as_secs_f64());
        Ok(ConversationPage {
            conversations,
            more,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_comes_back_as_the_position_it_was_made_from() {
        let position = conversations::Position {
            at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            topic: "chat:1:2".into(),
        };
        let params = ListParams::parse(Some(&encode_cursor(&position)), Some(10)).unwrap();
        assert_eq!(params.after, Some(position));
        assert_eq!(params.limit, 10);
    }

    #[test]
    fn what_the_server_did_not_issue_is_refused() {
        let forged = |text: &str| URL_SAFE_NO_PAD.encode(text);
        for raw in [
            "".to_owned(),
            "not base64!".to_owned(),
            forged("c1|12|"),
            forged("c2|12|chat:1:2"),
            forged("c1|x|chat:1:2"),
            forged("c1|12|chat:2:1"),
            forged("c1|12|user:1"),
            forged("c1|99999999999999999999|chat:1:2"),
            forged("c1|-9000000000000000000|chat:1:2"),
            forged("c1|9000000000000000000|chat:1:2"),
        ] {
            assert!(ListParams::parse(Some(&raw), None).is_err(), "{raw}");
        }
    }

    #[test]
    fn limits_outside_1_to_200_are_refused() {
        assert_eq!(ListParams::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
        assert!(ListParams::parse(None, Some(200)).is_ok());
        for bad in [0, -1, 201] {
            assert!(ListParams::parse(None, Some(bad)).is_err());
        }
    }
}
