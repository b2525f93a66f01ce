//! What the writer is asked to change, and what it reports back: the types its callers,
//! its batches and the queries it runs share.

use super::models::{MessageRow, NewMessage};

/// A committed message, and whether this request created it (false: a resend with a
/// `client_ref` already used, answered with the stored row).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub row: MessageRow,
    pub created: bool,
}

/// An edit of a stored message. `body` replaces, `append` extends (an assistant
/// streaming its answer); both may not be given at once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageEdit {
    pub id: i64,
    pub body: Option<String>,
    pub append: Option<String>,
    pub status: Option<String>,
    pub meta: Option<serde_json::Value>,
    /// The body after the edit may not be longer.
    pub max_body_bytes: usize,
    /// A user editing their own message; None for the host, who may edit any.
    pub by: Option<Author>,
}

/// A user acting on a message as its author (or as staff in support): checked against
/// the row under its lock, in the writer's transaction, so nothing changes it between
/// the check and the change.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Author {
    pub user_id: String,
    /// The conversation the request came on: a message of another is not found.
    pub topic: String,
    /// Staff may delete any message of a `support:` conversation.
    pub staff: bool,
    /// How long after sending an edit is taken; zero = always.
    pub edit_window: std::time::Duration,
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Erasure {
    pub user_id: String,
    /// (id, topic) of every message removed.
    pub messages: Vec<(i64, String)>,
    /// Rooms the user was a member of.
    pub rooms: Vec<String>,
    /// Blocks the user gave or got, as (blocker, blocked): every replica forgets them.
    pub blocks: Vec<(String, String)>,
}

/// One change to make.
#[derive(Debug, Clone)]
pub enum Mutation {
    Insert(NewMessage),
    Edit(MessageEdit),
    /// The row stays as a tombstone with its body cleared: moderation (`by` None) or
    /// its author.
    Delete {
        id: i64,
        by: Option<Author>,
    },
    /// Every message the user sent, and their memberships.
    EraseUser {
        user_id: String,
    },
}

/// What one mutation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Inserted(Stored),
    Edited(MessageRow),
    Deleted(MessageRow),
    Erased(Erasure),
}

/// A committed change, as `on_commit` sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Created(MessageRow),
    Updated(MessageRow),
    Deleted(MessageRow),
    Erased(Erasure),
}
