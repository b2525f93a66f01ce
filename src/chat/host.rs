//! What the host backend does through its API: post as any user, a bot or the system;
//! edit (a bot streaming its answer), delete, erase a user; manage rooms. The host is
//! trusted with any user id, but every change still goes through the writer and the
//! same broadcasts as a socket's.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    Chat, ClientRef, HistoryPage, HistoryParams, Message, MessageId, MessageKind, MessageStatus,
    Reason, RoomId, Topic, UserId, storage,
};
use crate::hub::HubEvent;
use crate::store::{self, Erasure, MessageEdit, Mutation, Outcome, rooms};

/// A message to store, from a socket or the API.
#[derive(Debug, Clone)]
pub struct Post {
    pub topic: Topic,
    pub sender: UserId,
    pub body: String,
    pub kind: MessageKind,
    pub status: MessageStatus,
    pub meta: Map<String, Value>,
    pub client_ref: Option<ClientRef>,
    /// The sender's display name (`ids::display_name`).
    pub sender_name: Option<String>,
    /// A message of the same conversation this one answers.
    pub reply_to: Option<MessageId>,
}

/// An edit from the API. `body` replaces; `append` extends, verbatim (a streamed token
/// may be a lone space); at most one of them.
#[derive(Debug, Clone, Default)]
pub struct MessagePatch {
    pub body: Option<String>,
    pub append: Option<String>,
    pub status: Option<MessageStatus>,
    pub meta: Option<Map<String, Value>>,
}

/// A room's new name (kept when `None`) and its whole member list.
#[derive(Debug, Clone)]
pub struct RoomUpdate {
    pub name: Option<String>,
    pub members: Vec<UserId>,
}

/// A room as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoomInfo {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
    pub created_at: String,
}

/// What erasing a user removed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErasureReport {
    pub user_id: String,
    pub messages_deleted: usize,
    pub memberships_removed: usize,
}

impl From<&Erasure> for ErasureReport {
    fn from(e: &Erasure) -> Self {
        ErasureReport {
            user_id: e.user_id.clone(),
            messages_deleted: e.messages.len(),
            memberships_removed: e.rooms.len(),
        }
    }
}

impl Chat {
    /// Posts as anyone. In a one-to-one chat the sender must be one of its two users
    /// (the other is the recipient); a room must exist.
    pub async fn post_as_host(&self, post: Post) -> Result<(Message, bool), Reason> {
        match &post.topic {
            Topic::Direct(a, b) if *a != post.sender && *b != post.sender => {
                return Err(Reason::Unauthorized);
            }
            Topic::Room(room) => {
                let room = room.to_string();
                let exists = store::blocking(&self.pool, move |c| rooms::get(c, &room))
                    .await
                    .map_err(storage)?
                    .is_some();
                if !exists {
                    return Err(Reason::NotFound);
                }
            }
            Topic::Lobby(_) | Topic::Inbox => return Err(Reason::InvalidTopic),
            _ => {}
        }
        self.post(post).await
    }

    /// Edits a message; every joined client gets `msg_updated`.
    pub async fn edit(&self, id: MessageId, patch: MessagePatch) -> Result<Message, Reason> {
        if patch.body.is_some() && patch.append.is_some() {
            return Err(Reason::InvalidPayload);
        }
        if patch.body.is_none()
            && patch.append.is_none()
            && patch.status.is_none()
            && patch.meta.is_none()
        {
            return Err(Reason::InvalidPayload);
        }
        let body = match patch.body {
            Some(raw) => Some(
                super::Body::parse(&raw, self.config.max_body_bytes)
                    .map_err(Reason::from)?
                    .into_inner(),
            ),
            None => None,
        };
        if patch
            .meta
            .as_ref()
            .is_some_and(|meta| !super::attachments::valid(meta))
        {
            return Err(Reason::InvalidPayload);
        }
        let meta = patch.meta.map(Value::Object);
        if meta
            .as_ref()
            .is_some_and(|m| m.to_string().len() > self.config.max_body_bytes)
        {
            return Err(Reason::TooLarge);
        }
        let unstorable_meta = meta.as_ref().is_some_and(|m| !super::ids::storable_json(m));
        let unstorable_append = patch
            .append
            .as_deref()
            .is_some_and(|a| !super::ids::storable(a));
        if unstorable_meta || unstorable_append {
            return Err(Reason::InvalidPayload);
        }
        let edit = MessageEdit {
            id: id.get(),
            body,
            append: patch.append,
            status: patch.status.map(|s| s.as_str().to_owned()),
            meta,
            max_body_bytes: self.config.max_body_bytes,
            by: None,
        };
        self.apply_edit(edit).await
    }

    /// The one path of every edit, the host's and an author's: through the writer,
    /// which broadcasts `msg_updated` after COMMIT.
    pub(super) async fn apply_edit(&self, edit: MessageEdit) -> Result<Message, Reason> {
        match self
            .writer
            .apply(Mutation::Edit(edit))
            .await
            .map_err(storage)?
        {
            Outcome::Edited(row) => Ok(Message::from(row)),
            _ => Err(Reason::Unavailable),
        }
    }

    /// Deletes a message (moderation); every joined client gets `msg_deleted`.
    pub async fn delete(&self, id: MessageId) -> Result<(), Reason> {
        match self
            .writer
            .apply(Mutation::Delete {
                id: id.get(),
                by: None,
            })
            .await
            .map_err(storage)?
        {
            Outcome::Deleted(_) => Ok(()),
            _ => Err(Reason::Unavailable),
        }
    }

    /// Erases every message `user` sent and their memberships, in one transaction.
    pub async fn erase(&self, user: &UserId) -> Result<ErasureReport, Reason> {
        let mutation = Mutation::EraseUser {
            user_id: user.to_string(),
        };
        match self.writer.apply(mutation).await.map_err(storage)? {
            Outcome::Erased(erasure) => Ok(ErasureReport::from(&erasure)),
            _ => Err(Reason::Unavailable),
        }
    }

    /// Opens the one-to-one chat of `a` and `b` (idempotent). It matters where
    /// `chat.direct = "host"`: only opened chats may be joined.
    pub async fn open_chat(&self, a: &UserId, b: &UserId) -> Result<(), Reason> {
        let topic = direct_topic(a, b)?.to_string();
        store::blocking(&self.pool, move |c| store::open_chats::open(c, &topic))
            .await
            .map_err(storage)
    }

    /// Closes the chat of `a` and `b`: where `chat.direct = "host"` it can no longer be
    /// joined, and sockets in it on every replica leave it now. History is kept.
    pub async fn close_chat(&self, a: &UserId, b: &UserId) -> Result<(), Reason> {
        let topic = direct_topic(a, b)?.to_string();
        let closing = topic.clone();
        store::blocking(&self.pool, move |c| store::open_chats::close(c, &closing))
            .await
            .map_err(storage)?;
        if self.config.direct_by_host {
            self.hub.publish(HubEvent::drop_all(&topic));
        }
        Ok(())
    }

    /// Whether the host opened `topic`.
    pub(super) async fn is_open_chat(&self, topic: &Topic) -> Result<bool, Reason> {
        let topic = topic.to_string();
        store::blocking(&self.pool, move |c| store::open_chats::is_open(c, &topic))
            .await
            .map_err(storage)
    }

    /// A page of any conversation, for the host.
    pub async fn host_history(
        &self,
        topic: &Topic,
        params: HistoryParams,
    ) -> Result<HistoryPage, Reason> {
        if !topic.is_conversation() {
            return Err(Reason::InvalidTopic);
        }
        self.page(topic, params, None).await
    }

    pub async fn room(&self, room: &RoomId) -> Result<RoomInfo, Reason> {
        let id = room.to_string();
        let (row, members) = store::blocking(&self.pool, move |c| {
            let row = rooms::get(c, &id)?.ok_or(store::Error::NotFound)?;
            Ok((row, rooms::members(c, &id)?))
        })
        .await
        .map_err(storage)?;
        Ok(room_info(row, members))
    }

    /// Creates or replaces a room; returns it and whether it was created. Removed
    /// members' sockets leave the room at once.
    pub async fn put_room(
        &self,
        room: &RoomId,
        update: RoomUpdate,
    ) -> Result<(RoomInfo, bool), Reason> {
        let id = room.to_string();
        let members: Vec<String> = update.members.iter().map(UserId::to_string).collect();
        let change = store::blocking(&self.pool, move |c| {
            rooms::put(c, &id, update.name.as_deref(), &members)
        })
        .await
        .map_err(storage)?;
        for user in &change.removed {
            self.hub.publish(HubEvent::drop_user(
                &Topic::Room(room.clone()).to_string(),
                user,
            ));
        }
        Ok((room_info(change.room, change.members), change.created))
    }

    /// Adds a member; false when they already were one.
    pub async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool, Reason> {
        let (id, user) = (room.to_string(), user.to_string());
        store::blocking(&self.pool, move |c| rooms::add_member(c, &id, &user))
            .await
            .map_err(storage)
    }

    /// Removes a member; their sockets in the room get `phx_close` at once.
    pub async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<(), Reason> {
        let (id, member) = (room.to_string(), user.to_string());
        store::blocking(&self.pool, move |c| rooms::remove_member(c, &id, &member))
            .await
            .map_err(storage)?;
        self.hub.publish(HubEvent::drop_user(
            &Topic::Room(room.clone()).to_string(),
            user.as_str(),
        ));
        Ok(())
    }
}

fn room_info(row: rooms::RoomRow, members: Vec<String>) -> RoomInfo {
    RoomInfo {
        id: row.id,
        name: row.name,
        members,
        created_at: row
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

/// The chat of two different users.
fn direct_topic(a: &UserId, b: &UserId) -> Result<Topic, Reason> {
    if a == b {
        return Err(Reason::InvalidPayload);
    }
    Ok(Topic::direct(a.clone(), b.clone()))
}
