//! Reactions to messages: one row per message, emoji and user. Each change also rewrites
//! the message's summary of them (`messages.reactions`, made by the SQL function
//! `sidechat_reactions_of`) in the same transaction, so whatever reads a message reads
//! its reactions with it, at no cost of its own.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt};

use super::Error;
use super::schema::reactions;

/// What `set` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reacted {
    Changed,
    /// Already so: a repeat changes nothing.
    Unchanged,
    /// The message carries `most` distinct emoji already, and this is another.
    TooMany,
}

/// `user` reacts to (or, `on` false, takes back) message `id` of `topic` with `emoji`.
/// The message row is locked while its summary says which emoji it carries, so two
/// reactors cannot pass the cap together. `NotFound` for an unknown or deleted message or
/// one of another conversation.
pub fn set(
    conn: &mut PgConnection,
    topic: &str,
    id: i64,
    user: &str,
    emoji: &str,
    on: bool,
    most: i64,
) -> Result<Reacted, Error> {
    use super::schema::messages;
    conn.transaction(|conn| {
        let summary: Option<serde_json::Value> = messages::table
            .filter(messages::id.eq(id))
            .filter(messages::topic.eq(topic))
            .filter(messages::deleted_at.is_null())
            .select(messages::reactions)
            .for_update()
            .first(conn)
            .optional()?
            .ok_or(Error::NotFound)?;
        let changed = if on {
            // The summary lists each distinct emoji once.
            let carried = summary.as_ref().and_then(|s| s.as_array());
            let present = carried.is_some_and(|all| all.iter().any(|r| r["emoji"] == emoji));
            if !present && carried.map_or(0, Vec::len) as i64 >= most {
                return Ok(Reacted::TooMany);
            }
            diesel::insert_into(reactions::table)
                .values((
                    reactions::message_id.eq(id),
                    reactions::emoji.eq(emoji),
                    reactions::user_id.eq(user),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?
        } else {
            diesel::delete(reactions::table.find((id, emoji, user))).execute(conn)?
        };
        if changed == 0 {
            return Ok(Reacted::Unchanged);
        }
        summarise(conn, &[id])?;
        Ok(Reacted::Changed)
    })
}

/// Rewrites the summaries of messages `ids` from the `reactions` table.
fn summarise(conn: &mut PgConnection, ids: &[i64]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    super::prepared::statement! {
        Summarise = "UPDATE messages SET reactions = sidechat_reactions_of(id) WHERE id = ANY($1)";
    }
    super::prepared::prepared::<Summarise>()
        .bind::<Array<BigInt>, _>(ids)
        .execute(conn)?;
    Ok(())
}

/// Removes `user`'s reactions, and every reaction to the messages `gone` (erasure, which
/// deletes those rows); the messages that remain keep a summary without them.
pub fn forget(conn: &mut PgConnection, user: &str, gone: &[i64]) -> Result<(), Error> {
    let mut touched: Vec<i64> =
        diesel::delete(reactions::table.filter(reactions::user_id.eq(user)))
            .returning(reactions::message_id)
            .get_results(conn)?;
    diesel::delete(reactions::table.filter(reactions::message_id.eq_any(gone))).execute(conn)?;
    touched.sort_unstable();
    touched.dedup();
    summarise(conn, &touched)
}

/// Removes the reactions to a deleted message, and its summary.
pub fn clear(conn: &mut PgConnection, id: i64) -> Result<(), Error> {
    diesel::delete(reactions::table.filter(reactions::message_id.eq(id))).execute(conn)?;
    summarise(conn, &[id])
}
