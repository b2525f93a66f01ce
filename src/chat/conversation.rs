//! What a member does in a conversation: join, read history, send, read, type, and be
//! seen as present.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use super::host::Post;
use super::presence_diffs::Change;
use super::{
    Actor, BodyError, Chat, HistoryPage, HistoryParams, InboxSummary, JoinParams, JoinReply,
    Message, MessageId, MessageKind, MessageStatus, NewMsg, Reason, Role, Topic, UnreadEntry,
    UnreadSummary, UserId, event, storage,
};
use crate::hub::{ConnId, PresenceMeta};
use crate::settings::MAX_HISTORY_LIMIT;
use crate::store::messages::{self, Page, UnreadTopic};
use crate::store::receipts::Receipt;
use crate::store::{self, NewMessage, rooms};

/// The `presence_diff` that tells a conversation one connection left: on leave, on
/// disconnect, and when a crashed replica's entries expire.
pub fn presence_leave(topic: &str, user: &str, meta: &PresenceMeta) -> crate::hub::HubEvent {
    event(
        topic,
        "presence_diff",
        &json!({"joins": {}, "leaves": {user: {"metas": [meta]}}}),
    )
}

/// A connection's entry into a conversation's presence.
pub struct Entered {
    /// The `presence_state` payload for the one who entered.
    pub state: Value,
    /// Whether the others were told (`exit` then tells them of the leave).
    pub announced: bool,
}

/// Conversations the inbox lists on join.
const INBOX_LIMIT: i64 = 200;

/// Summary entries, and the total unread.
fn entries(topics: Vec<UnreadTopic>) -> (Vec<UnreadEntry>, i64) {
    let total = topics.iter().map(|t| t.count).sum();
    let entries = topics
        .into_iter()
        .map(|t| UnreadEntry {
            topic: t.topic,
            count: t.count,
            last_message: Message::from(t.last_message),
        })
        .collect();
    (entries, total)
}

impl Chat {
    /// Checks that `actor` may join `topic` and loads what the join answers.
    pub async fn join(
        &self,
        actor: &Actor,
        topic: &Topic,
        params: JoinParams,
    ) -> Result<JoinReply, Reason> {
        if !topic.admits(actor) {
            return Err(Reason::Unauthorized);
        }
        if self.config.direct_by_host
            && let Topic::Direct(..) = topic
            && !self.is_open_chat(topic).await?
        {
            return Err(Reason::Unauthorized);
        }
        let reply = match topic {
            Topic::Lobby(owner) => JoinReply::Lobby(self.unread_summary(owner).await?),
            Topic::Inbox => JoinReply::Inbox(self.inbox_summary().await?),
            _ => JoinReply::Conversation(
                self.history(
                    actor,
                    topic,
                    HistoryParams {
                        before: None,
                        after: params.after,
                        limit: params.limit,
                    },
                )
                .await?,
            ),
        };
        self.metrics.joins.inc();
        Ok(reply)
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
        let member_of = match topic {
            Topic::Room(room) => Some((room.as_str().to_owned(), actor.user_id.to_string())),
            _ => None,
        };
        self.page(topic, params, member_of).await
    }

    /// A page of any conversation; with `member_of`, only for that room member.
    pub(super) async fn page(
        &self,
        topic: &Topic,
        params: HistoryParams,
        member_of: Option<(String, String)>,
    ) -> Result<HistoryPage, Reason> {
        let limit = params
            .limit
            .unwrap_or(self.config.history_limit)
            .min(MAX_HISTORY_LIMIT);
        let page = Page {
            before: params.before.map(MessageId::get),
            after: params.after.map(MessageId::get),
            limit: i64::from(limit),
        };
        let topic_name = topic.to_string();
        let (rows, more) = store::blocking(&self.pool, move |conn| {
            if let Some((room, user)) = &member_of
                && !rooms::is_member(conn, room, user)?
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

    /// Every conversation (one-to-one, support, rooms) where `user` has unread
    /// messages, newest first.
    pub async fn unread_summary(&self, user: &UserId) -> Result<UnreadSummary, Reason> {
        let user = user.to_string();
        let topics = store::blocking(&self.pool, move |conn| {
            messages::unread_summary(conn, &user)
        })
        .await
        .map_err(storage)?;
        let (unread, total) = entries(topics);
        Ok(UnreadSummary { unread, total })
    }

    /// The support conversations for staff.
    pub async fn inbox_summary(&self) -> Result<InboxSummary, Reason> {
        let topics = store::blocking(&self.pool, |conn| {
            messages::inbox_summary(conn, INBOX_LIMIT)
        })
        .await
        .map_err(storage)?;
        let (conversations, total) = entries(topics);
        Ok(InboxSummary {
            conversations,
            total,
        })
    }

    /// A message from a member's socket; resolves once it is committed (and broadcast).
    pub async fn send(&self, actor: &Actor, topic: &Topic, msg: NewMsg) -> Result<Message, Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        if let Topic::Direct(a, b) = topic
            && self.blocked_between(a, b)
        {
            return Err(Reason::Blocked);
        }
        // A socket whose replica missed the close (the broker is at-most-once) is still
        // joined: on sites where the host opens chats, each send asks.
        if self.config.direct_by_host
            && let Topic::Direct(..) = topic
            && !self.is_open_chat(topic).await?
        {
            return Err(Reason::Unauthorized);
        }
        let post = Post {
            topic: topic.clone(),
            sender: actor.user_id.clone(),
            body: msg.body,
            kind: MessageKind::User,
            status: MessageStatus::Complete,
            meta: msg.meta,
            client_ref: msg.client_ref,
            sender_name: actor.name.clone(),
            reply_to: msg.reply_to,
        };
        self.post(post).await.map(|(message, _)| message)
    }

    /// The one path of every message: validate, store through the writer (which
    /// broadcasts after COMMIT), then notify whoever is away. Returns the message and
    /// whether this call created it.
    pub async fn post(&self, post: Post) -> Result<(Message, bool), Reason> {
        let streaming = post.status == MessageStatus::Streaming;
        let body = match super::Body::parse(&post.body, self.config.max_body_bytes) {
            Ok(body) => body.into_inner(),
            // A bot may open a streaming message empty and append to it.
            Err(BodyError::Empty) if streaming => String::new(),
            Err(e) => return Err(e.into()),
        };
        if !super::attachments::valid(&post.meta) {
            return Err(Reason::InvalidPayload);
        }
        let meta = Value::Object(post.meta);
        if meta.to_string().len() > self.config.max_body_bytes {
            return Err(Reason::TooLarge);
        }
        if !super::ids::storable_json(&meta) {
            return Err(Reason::InvalidPayload);
        }
        let reply = match post.reply_to {
            Some(id) => Some(self.quoted(&post.topic, id).await?),
            None => None,
        };
        let recipient = post.topic.recipient_of(&post.sender);
        let stored = self
            .writer
            .write(NewMessage {
                topic: post.topic.to_string(),
                sender_id: post.sender.to_string(),
                recipient_id: recipient.as_ref().map(UserId::to_string),
                body,
                kind: post.kind.as_str().into(),
                status: post.status.as_str().into(),
                meta,
                client_ref: post.client_ref.map(|r| r.as_str().to_owned()),
                user_name: post.sender_name,
                reply,
            })
            .await
            .map_err(storage)?;
        if stored.created {
            self.notify_away(&post.topic, &post.sender, recipient, &stored.row);
        }
        Ok((Message::from(stored.row), stored.created))
    }

    /// What a reply to `id` quotes: a live message of `topic`, else `not_found`.
    async fn quoted(&self, topic: &Topic, id: MessageId) -> Result<(i64, String, String), Reason> {
        let topic = topic.to_string();
        let original = store::blocking(&self.pool, move |c| {
            messages::find_in_topic(c, &topic, id.get())
        })
        .await
        .map_err(storage)?
        .ok_or(Reason::NotFound)?;
        Ok((
            original.id,
            original.sender_id,
            messages::quote(&original.body),
        ))
    }

    /// Marks what `actor` has not read in `topic` up to `up_to` as read; returns how
    /// many messages changed. Tells the conversation (`read`), and the reader's lobbies
    /// or, for staff in support, every inbox (`unread`).
    pub async fn read(
        &self,
        actor: &Actor,
        topic: &Topic,
        up_to: MessageId,
    ) -> Result<usize, Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        let staff_in_support = matches!(topic, Topic::Support(visitor)
            if actor.role == Role::Staff && *visitor != actor.user_id);
        let room = match topic {
            Topic::Room(room) => Some(room.to_string()),
            _ => None,
        };
        let topic_name = topic.to_string();
        let (t, reader, id) = (topic_name.clone(), actor.user_id.to_string(), up_to.get());
        let (marked, count) = if room.is_none() && !staff_in_support {
            // The common case, a one-to-one or support reader: stored in batches.
            let receipt = Receipt {
                topic: t,
                reader,
                up_to: id,
            };
            match self.receipts.mark(receipt).await.map_err(storage)? {
                Some(done) => (done.marked, done.still_unread),
                None => return Err(Reason::NotFound),
            }
        } else {
            self.mark_read_in_room_or_inbox(room, t, reader, id).await?
        };
        self.hub.publish(event(
            &topic_name,
            "read",
            &json!({"user_id": actor.user_id, "message_id": up_to}),
        ));
        let counted_in = if staff_in_support {
            Topic::Inbox
        } else {
            Topic::Lobby(actor.user_id.clone())
        };
        self.hub.publish(event(
            &counted_in.to_string(),
            "unread",
            &json!({"topic": topic_name, "count": count}),
        ));
        Ok(marked)
    }

    /// A room member's read cursor, or staff reading a visitor's support messages:
    /// returns how many it marked and what stays unread.
    async fn mark_read_in_room_or_inbox(
        &self,
        room: Option<String>,
        topic: String,
        reader: String,
        up_to: i64,
    ) -> Result<(usize, i64), Reason> {
        store::blocking(&self.pool, move |conn| {
            use diesel::Connection;
            conn.transaction(|conn| {
                if messages::find_in_topic(conn, &topic, up_to)?.is_none() {
                    return Err(store::Error::NotFound);
                }
                if let Some(room) = &room {
                    let marked = rooms::advance_read_cursor(conn, room, &reader, up_to)?;
                    let count =
                        rooms::unread_for_members(conn, room, std::slice::from_ref(&reader))?
                            .remove(&reader)
                            .unwrap_or(0);
                    Ok((marked, count))
                } else {
                    let marked = messages::mark_read_by_staff(conn, &topic, up_to)?;
                    Ok((marked, messages::staff_unread_count(conn, &topic)?))
                }
            })
        })
        .await
        .map_err(storage)
    }

    /// Tells the others in the conversation that `actor` is (or stopped) typing, unless
    /// the throttle drops it: then nothing is sent, and the caller answers `ok` all the same.
    pub fn typing(&self, actor: &Actor, topic: &Topic, typing: bool) -> Result<(), Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        // A blocked pair's chat carries no typing either: answered `ok`, told to nobody.
        if let Topic::Direct(a, b) = topic
            && self.blocked_between(a, b)
        {
            return Ok(());
        }
        let topic_name = topic.to_string();
        let user = actor.user_id.as_str();
        if !self
            .typing_gate
            .pass(&topic_name, user, typing, Instant::now())
        {
            self.metrics.typing_dropped.inc();
            return Ok(());
        }
        let mut typing_event = event(
            &topic_name,
            "typing",
            &json!({"user_id": actor.user_id, "typing": typing}),
        );
        typing_event.skip_user = Some(actor.user_id.to_string());
        self.hub.publish(typing_event);
        Ok(())
    }

    /// Whether presence in `topic` is told to its members: everywhere but in rooms with
    /// more than `presence_room_limit` members.
    async fn presence_broadcast(&self, topic: &Topic) -> bool {
        let limit = self.config.presence_room_limit;
        let Topic::Room(room) = topic else {
            return true;
        };
        if limit == 0 {
            return true;
        }
        let room = room.to_string();
        let large = store::blocking(&self.pool, move |c| {
            rooms::has_more_members_than(c, &room, i64::from(limit))
        })
        .await;
        match large {
            Ok(large) => !large,
            Err(e) => {
                // Announcing into a room of unknown size could flood it; staying quiet
                // only hides presence.
                log::warn!("presence in {topic}: {e}");
                false
            }
        }
    }

    /// Marks `conn` present in a conversation (lobby notifications skip the present)
    /// and, unless the conversation is too large for it, tells the others
    /// (`presence_diff`) and answers the `presence_state` payload.
    pub async fn enter(&self, topic: &Topic, conn: ConnId, actor: &Actor) -> Entered {
        let user = &actor.user_id;
        let topic_name = topic.to_string();
        let meta = PresenceMeta {
            name: actor.name.clone(),
            phx_ref: format!("F{:x}", self.presence_refs.fetch_add(1, Ordering::Relaxed)),
            online_at: chrono::Utc::now().timestamp_millis(),
        };
        self.presence
            .track(&topic_name, conn, user.as_str(), meta.clone());
        if !self.presence_broadcast(topic).await {
            return Entered {
                state: json!({}),
                announced: false,
            };
        }
        self.presence_diffs
            .announce(&topic_name, Change::Join, user.as_str(), &meta);
        let mut state = serde_json::Map::new();
        for (user_id, meta) in self.presence.list(&topic_name).await {
            let entry = state.entry(user_id).or_insert_with(|| json!({"metas": []}));
            if let Some(metas) = entry.get_mut("metas").and_then(Value::as_array_mut) {
                metas.push(json!(meta));
            }
        }
        Entered {
            state: Value::Object(state),
            announced: true,
        }
    }

    /// Removes `conn` from a conversation's presence and, if its arrival was
    /// `announced`, tells the others.
    pub fn exit(&self, topic: &Topic, conn: ConnId, announced: bool) {
        let topic_name = topic.to_string();
        if let Some((user, meta)) = self.presence.untrack(&topic_name, conn)
            && announced
        {
            self.presence_diffs
                .announce(&topic_name, Change::Leave, &user, &meta);
        }
    }
}
