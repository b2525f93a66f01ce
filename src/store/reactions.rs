//! Reactions to messages: one row per message, emoji and user.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};

use super::Error;
use super::schema::reactions;

/// One emoji on one message: how many reacted with it, and the first ten of them.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ReactionCount {
    #[diesel(sql_type = BigInt)]
    pub message_id: i64,
    #[diesel(sql_type = Text)]
    pub emoji: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    #[diesel(sql_type = Array<Text>)]
    pub users: Vec<String>,
}

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
/// The message row is locked while the distinct emoji are counted, so two reactors
/// cannot pass the cap together. `NotFound` for an unknown or deleted message or one of
/// another conversation.
pub fn set(
    conn: &mut PgConnection,
    topic: &str,
    id: i64,
    user: &str,
    emoji: &str,
    on: bool,
    most: i64,
) -> Result<Reacted, Error> {
    conn.transaction(|conn| {
        #[derive(QueryableByName)]
        struct Found {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        let found: Option<Found> = diesel::sql_query(
            "SELECT id FROM messages WHERE id = $1 AND topic = $2 AND deleted_at IS NULL \
             FOR UPDATE",
        )
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(topic)
        .get_result(conn)
        .optional()?;
        if found.map(|f| f.id).is_none() {
            return Err(Error::NotFound);
        }
        let mine = reactions::table.find((id, emoji, user));
        if !on {
            let removed = diesel::delete(mine).execute(conn)?;
            return Ok(if removed > 0 {
                Reacted::Changed
            } else {
                Reacted::Unchanged
            });
        }
        if diesel::select(diesel::dsl::exists(mine)).get_result(conn)? {
            return Ok(Reacted::Unchanged);
        }
        let emoji_present: bool = diesel::select(diesel::dsl::exists(
            reactions::table
                .filter(reactions::message_id.eq(id))
                .filter(reactions::emoji.eq(emoji)),
        ))
        .get_result(conn)?;
        if !emoji_present {
            let distinct: i64 = reactions::table
                .filter(reactions::message_id.eq(id))
                .select(diesel::dsl::count(reactions::emoji).aggregate_distinct())
                .get_result(conn)?;
            if distinct >= most {
                return Ok(Reacted::TooMany);
            }
        }
        diesel::insert_into(reactions::table)
            .values((
                reactions::message_id.eq(id),
                reactions::emoji.eq(emoji),
                reactions::user_id.eq(user),
            ))
            .on_conflict_do_nothing()
            .execute(conn)?;
        Ok(Reacted::Changed)
    })
}

/// The reactions of the messages `ids`, in one query: per message, each emoji in the
/// order it was first used, with its first ten users.
pub fn counts(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<ReactionCount>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Kept prepared: every page of history runs it, and planning would cost more than
    // reading a page's few reactions.
    Ok(super::prepared::prepared(
        "SELECT message_id, emoji, count(*) AS count, \
                (array_agg(user_id ORDER BY created_at, user_id))[1:10] AS users \
         FROM reactions WHERE message_id = ANY($1) \
         GROUP BY message_id, emoji ORDER BY message_id, min(created_at), emoji",
    )
    .bind::<Array<BigInt>, _>(ids)
    .load(conn)?)
}

/// Removes `user`'s reactions, and every reaction to the messages `gone` (erasure).
pub fn forget(conn: &mut PgConnection, user: &str, gone: &[i64]) -> Result<(), Error> {
    diesel::delete(
        reactions::table.filter(
            reactions::user_id
                .eq(user)
                .or(reactions::message_id.eq_any(gone)),
        ),
    )
    .execute(conn)?;
    Ok(())
}

/// Removes the reactions to a deleted message.
pub fn clear(conn: &mut PgConnection, id: i64) -> Result<(), Error> {
    diesel::delete(reactions::table.filter(reactions::message_id.eq(id))).execute(conn)?;
    Ok(())
}
