//! What a member does to a message of a conversation they joined (PROTOCOL.md §11):
//! edit and delete their own. The same path as the host's edits and deletions: the
//! writer applies them, checking the author against the row under its lock, and
//! broadcasts `msg_updated` / `msg_deleted` after COMMIT.

use super::{Actor, Body, Chat, Message, MessageId, Reason, Role, Topic, storage};
use crate::store::{Author, MessageEdit, Mutation, Outcome};

impl Chat {
    fn author(&self, actor: &Actor, topic: &Topic) -> Author {
        Author {
            user_id: actor.user_id.to_string(),
            topic: topic.to_string(),
            staff: actor.role == Role::Staff,
            edit_window: self.config.edit_window,
        }
    }

    /// Replaces the body of `actor`'s own message `id` in `topic`, within the edit
    /// window: `not_found` for an unknown or deleted id or one of another conversation,
    /// `unauthorized` for someone else's, a bot's, or one past the window.
    pub async fn edit_own(
        &self,
        actor: &Actor,
        topic: &Topic,
        id: MessageId,
        body: &str,
    ) -> Result<Message, Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        let body = Body::parse(body, self.config.max_body_bytes)?.into_inner();
        let edit = MessageEdit {
            id: id.get(),
            body: Some(body),
            max_body_bytes: self.config.max_body_bytes,
            by: Some(self.author(actor, topic)),
            ..MessageEdit::default()
        };
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

    /// Deletes `actor`'s own message `id` in `topic` (staff: any in a `support:`
    /// conversation), as a moderation delete does.
    pub async fn delete_own(
        &self,
        actor: &Actor,
        topic: &Topic,
        id: MessageId,
    ) -> Result<(), Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        let delete = Mutation::Delete {
            id: id.get(),
            by: Some(self.author(actor, topic)),
        };
        match self.writer.apply(delete).await.map_err(storage)? {
            Outcome::Deleted(_) => Ok(()),
            _ => Err(Reason::Unavailable),
        }
    }
}
