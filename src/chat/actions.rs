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
        self.apply_edit(edit).await
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

/// The longest emoji, in bytes (PROTOCOL.md §11).
const MAX_EMOJI_BYTES: usize = 32;

impl Chat {
    /// `actor` reacts to (`on`) or takes back a reaction to message `id` of `topic`:
    /// `reaction` goes to the conversation when it changed anything; a repeat answers
    /// `ok` and changes nothing. An emoji is 1 to 32 bytes without whitespace; a message
    /// carries at most `chat.max_reactions` distinct ones (`too_large` past it).
    pub async fn react(
        &self,
        actor: &Actor,
        topic: &Topic,
        id: MessageId,
        emoji: &str,
        on: bool,
    ) -> Result<(), Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        if emoji.is_empty()
            || emoji.len() > MAX_EMOJI_BYTES
            || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Reason::InvalidPayload);
        }
        let (topic_name, user, emoji_owned) = (
            topic.to_string(),
            actor.user_id.to_string(),
            emoji.to_owned(),
        );
        let most = i64::from(self.config.max_reactions);
        let reacted = crate::store::blocking(&self.pool, move |c| {
            crate::store::reactions::set(c, &topic_name, id.get(), &user, &emoji_owned, on, most)
        })
        .await
        .map_err(storage)?;
        match reacted {
            crate::store::reactions::Reacted::TooMany => Err(Reason::TooLarge),
            crate::store::reactions::Reacted::Unchanged => Ok(()),
            crate::store::reactions::Reacted::Changed => {
                // After COMMIT, as every change to a message.
                self.hub.publish(super::event(
                    &topic.to_string(),
                    "reaction",
                    &serde_json::json!({
                        "message_id": id, "emoji": emoji, "user_id": actor.user_id, "on": on
                    }),
                ));
                Ok(())
            }
        }
    }
}
