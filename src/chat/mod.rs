//! The domain: topics, who may join them, and what sending, reading and history mean.
//! Knows nothing of sockets or HTTP; both transports and the HTTP API call into here.

pub mod ids;
mod limiter;
mod message;
mod reason;
mod request;
mod topic;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::hub::{ConnId, Hub, HubEvent, Presence, PresenceMeta};
use crate::store::messages::{self, Page};
use crate::store::writer::OnCommit;
use crate::store::{self, MessageRow, NewMessage, PgPool, Writer, rooms};

pub use ids::{Actor, Body, BodyError, ClientRef, MessageId, Role, RoomId, UserId};
pub use limiter::RateLimiter;
pub use message::Message;
pub use reason::Reason;
pub use request::{HistoryParams, JoinParams, NewMsg, Request};
pub use topic::{Topic, TopicError};

use crate::settings::MAX_HISTORY_LIMIT;

/// What a join answers: the lobby's unread summary, or a conversation's history.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum JoinReply {
    Lobby(UnreadSummary),
    Conversation(HistoryPage),
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub more: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnreadSummary {
    pub unread: Vec<UnreadEntry>,
    pub total: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnreadEntry {
    pub topic: String,
    pub count: i64,
    pub last_message: Message,
}

/// The settings the domain reads.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub history_limit: u32,
    pub max_body_bytes: usize,
    pub messages_per_second: u32,
    pub burst: u32,
}

pub struct Chat {
    pool: PgPool,
    writer: Writer,
    hub: Arc<Hub>,
    presence: Arc<dyn Presence>,
    config: ChatConfig,
    limiter: RateLimiter,
    presence_refs: AtomicU64,
}

fn storage(e: store::Error) -> Reason {
    match e {
        store::Error::NotFound => Reason::NotFound,
        store::Error::Conflict(_) | store::Error::Unavailable(_) => {
            log::warn!("storage: {e}");
            Reason::Unavailable
        }
    }
}

/// A hub event with its payload encoded once.
fn event(topic: &str, name: &str, payload: &impl Serialize) -> HubEvent {
    HubEvent {
        topic: topic.to_owned(),
        event: name.to_owned(),
        payload: Arc::from(serde_json::to_string(payload).unwrap_or_else(|_| "{}".into())),
        message_id: None,
        skip_user: None,
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Chat {
    pub fn new(
        pool: PgPool,
        writer: Writer,
        hub: Arc<Hub>,
        presence: Arc<dyn Presence>,
        config: ChatConfig,
    ) -> Chat {
        let limiter = RateLimiter::new(config.messages_per_second, config.burst);
        Chat {
            pool,
            writer,
            hub,
            presence,
            config,
            limiter,
            presence_refs: AtomicU64::new(1),
        }
    }

    /// What the writer does after each COMMIT: broadcast every new message, in id order.
    pub fn broadcast_on_commit(hub: Arc<Hub>) -> OnCommit {
        Box::new(move |rows: &[MessageRow]| {
            for row in rows {
                let mut new_msg = event(&row.topic, "new_msg", &Message::from(row.clone()));
                new_msg.message_id = Some(row.id);
                hub.publish(new_msg);
            }
        })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks that `actor` may join `topic` and loads what the join answers.
    pub async fn join(
        &self,
        actor: &Actor,
        topic: &Topic,
        params: JoinParams,
    ) -> Result<JoinReply, Reason> {
        match topic {
            Topic::Lobby(owner) if *owner == actor.user_id => {
                Ok(JoinReply::Lobby(self.unread_summary(owner).await?))
            }
            // The support inbox comes with the staff features; until then it is unknown.
            Topic::Inbox if actor.role == Role::Staff => Err(Reason::NotFound),
            _ => {
                let page = self
                    .history(
                        actor,
                        topic,
                        HistoryParams {
                            before: None,
                            after: params.after,
                            limit: params.limit,
                        },
                    )
                    .await?;
                Ok(JoinReply::Conversation(page))
            }
        }
    }

    /// A page of a conversation `actor` may read.
    pub async fn history(
        &self,
        actor: &Actor,
        topic: &Topic,
        params: HistoryParams,
    ) -> Result<HistoryPage, Reason> {
        if !topic.is_conversation() || !topic.admits(actor) {
            return Err(Reason::Unauthorized);
        }
        let limit = params
            .limit
            .unwrap_or(self.config.history_limit)
            .min(MAX_HISTORY_LIMIT);
        let page = Page {
            before: params.before.map(MessageId::get),
            after: params.after.map(MessageId::get),
            limit: i64::from(limit),
        };
        let room = match topic {
            Topic::Room(room) => Some(room.as_str().to_owned()),
            _ => None,
        };
        let (topic_name, user) = (topic.to_string(), actor.user_id.as_str().to_owned());
        let (rows, more) = store::blocking(&self.pool, move |conn| {
            if let Some(room) = room
                && !rooms::is_member(conn, &room, &user)?
            {
                return Ok(None);
            }
            messages::history(conn, &topic_name, page).map(Some)
        })
        .await
        .map_err(storage)?
        .ok_or(Reason::Unauthorized)?;
        Ok(HistoryPage {
            messages: rows.into_iter().map(Message::from).collect(),
            more,
        })
    }

    /// Every conversation where `user` has unread messages, newest first.
    pub async fn unread_summary(&self, user: &UserId) -> Result<UnreadSummary, Reason> {
        let user = user.as_str().to_owned();
        let topics = store::blocking(&self.pool, move |conn| {
            messages::unread_summary(conn, &user)
        })
        .await
        .map_err(storage)?;
        let total = topics.iter().map(|t| t.count).sum();
        Ok(UnreadSummary {
            unread: topics
                .into_iter()
                .map(|t| UnreadEntry {
                    topic: t.topic,
                    count: t.count,
                    last_message: Message::from(t.last_message),
                })
                .collect(),
            total,
        })
    }

    /// Stores a message from `actor`; resolves once it is committed (and broadcast).
    pub async fn send(&self, actor: &Actor, topic: &Topic, msg: NewMsg) -> Result<Message, Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        let body = Body::parse(&msg.body, self.config.max_body_bytes).map_err(|e| match e {
            BodyError::Empty => Reason::InvalidPayload,
            BodyError::TooLarge => Reason::TooLarge,
        })?;
        let meta = Value::Object(msg.meta);
        if meta.to_string().len() > self.config.max_body_bytes {
            return Err(Reason::TooLarge);
        }
        if !self.limiter.allow(actor.user_id.as_str(), Instant::now()) {
            return Err(Reason::RateLimited);
        }
        let recipient = topic.recipient_of(&actor.user_id);
        let stored = self
            .writer
            .write(NewMessage {
                topic: topic.to_string(),
                sender_id: actor.user_id.as_str().to_owned(),
                recipient_id: recipient.as_ref().map(|r| r.as_str().to_owned()),
                body: body.into_inner(),
                kind: "user".into(),
                status: "complete".into(),
                meta,
                client_ref: msg.client_ref.map(|r| r.as_str().to_owned()),
            })
            .await
            .map_err(storage)?;
        if stored.created
            && let Some(recipient) = recipient
        {
            self.notify_if_away(topic, &recipient, &stored.row);
        }
        Ok(Message::from(stored.row))
    }

    /// Sends the recipient's lobby a `notification` when none of their connections is in
    /// the conversation. Runs after the sender's ack, off its path.
    fn notify_if_away(&self, topic: &Topic, recipient: &UserId, row: &MessageRow) {
        let topic_name = topic.to_string();
        if self.presence.is_present(&topic_name, recipient.as_str()) {
            return;
        }
        let (pool, hub) = (self.pool.clone(), self.hub.clone());
        let recipient = recipient.as_str().to_owned();
        let message = Message::from(row.clone());
        tokio::spawn(async move {
            let (t, r) = (topic_name.clone(), recipient.clone());
            match store::blocking(&pool, move |conn| messages::unread_count(conn, &t, &r)).await {
                Ok(count) => hub.publish(event(
                    &format!("user:{recipient}"),
                    "notification",
                    &json!({"topic": topic_name, "message": message, "count": count}),
                )),
                Err(e) => log::warn!("notification for user={recipient} dropped: {e}"),
            }
        });
    }

    /// Marks what `actor` was sent in `topic` up to `up_to` as read; returns how many
    /// messages changed. Tells the conversation (`read`) and the reader's lobbies (`unread`).
    pub async fn read(
        &self,
        actor: &Actor,
        topic: &Topic,
        up_to: MessageId,
    ) -> Result<usize, Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        let topic_name = topic.to_string();
        let room = match topic {
            Topic::Room(room) => Some(room.as_str().to_owned()),
            _ => None,
        };
        let (t, reader, id) = (
            topic_name.clone(),
            actor.user_id.as_str().to_owned(),
            up_to.get(),
        );
        let (marked, count) = store::blocking(&self.pool, move |conn| {
            use diesel::Connection;
            conn.transaction(|conn| {
                if messages::find_in_topic(conn, &t, id)?.is_none() {
                    return Err(store::Error::NotFound);
                }
                let marked = match &room {
                    Some(room) => rooms::advance_read_cursor(conn, room, &reader, id)?,
                    None => messages::mark_read(conn, &t, &reader, id)?,
                };
                Ok((marked, messages::unread_count(conn, &t, &reader)?))
            })
        })
        .await
        .map_err(storage)?;
        self.hub.publish(event(
            &topic_name,
            "read",
            &json!({"user_id": actor.user_id, "message_id": up_to}),
        ));
        self.hub.publish(event(
            &Topic::Lobby(actor.user_id.clone()).to_string(),
            "unread",
            &json!({"topic": topic_name, "count": count}),
        ));
        Ok(marked)
    }

    /// Tells the others in the conversation that `actor` is (or stopped) typing.
    pub fn typing(&self, actor: &Actor, topic: &Topic, typing: bool) -> Result<(), Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        let mut typing_event = event(
            &topic.to_string(),
            "typing",
            &json!({"user_id": actor.user_id, "typing": typing}),
        );
        typing_event.skip_user = Some(actor.user_id.as_str().to_owned());
        self.hub.publish(typing_event);
        Ok(())
    }

    /// Marks `conn` present in a conversation; returns the `presence_state` payload and
    /// tells the others (`presence_diff`).
    pub fn enter(&self, topic: &Topic, conn: ConnId, user: &UserId) -> Value {
        let topic_name = topic.to_string();
        let meta = PresenceMeta {
            phx_ref: format!("F{:x}", self.presence_refs.fetch_add(1, Ordering::Relaxed)),
            online_at: now_millis(),
        };
        self.presence
            .track(&topic_name, conn, user.as_str(), meta.clone());
        self.hub.publish(event(
            &topic_name,
            "presence_diff",
            &json!({"joins": {user.as_str(): {"metas": [meta]}}, "leaves": {}}),
        ));
        let mut state = serde_json::Map::new();
        for (user_id, meta) in self.presence.list(&topic_name) {
            let entry = state.entry(user_id).or_insert_with(|| json!({"metas": []}));
            if let Some(metas) = entry.get_mut("metas").and_then(Value::as_array_mut) {
                metas.push(json!(meta));
            }
        }
        Value::Object(state)
    }

    /// Removes `conn` from a conversation's presence and tells the others.
    pub fn exit(&self, topic: &Topic, conn: ConnId) {
        let topic_name = topic.to_string();
        if let Some((user, meta)) = self.presence.untrack(&topic_name, conn) {
            self.hub.publish(event(
                &topic_name,
                "presence_diff",
                &json!({"joins": {}, "leaves": {user: {"metas": [meta]}}}),
            ));
        }
    }
}
