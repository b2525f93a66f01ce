//! Rooms and their members. A member's unread state is their read cursor.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};

use super::Error;
use super::schema::{messages, room_members, rooms};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = rooms)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct RoomRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub created_at: DateTime<Utc>,
}

/// What `put` did.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomChange {
    pub room: RoomRow,
    pub created: bool,
    pub members: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

fn topic(room_id: &str) -> String {
    format!("room:{room_id}")
}

pub fn get(conn: &mut PgConnection, room_id: &str) -> Result<Option<RoomRow>, Error> {
    Ok(rooms::table
        .find(room_id)
        .select(RoomRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn members(conn: &mut PgConnection, room_id: &str) -> Result<Vec<String>, Error> {
    Ok(room_members::table
        .filter(room_members::room_id.eq(room_id))
        .select(room_members::user_id)
        .order(room_members::user_id)
        .load(conn)?)
}

/// Whether `user_id` is a member of room `room_id`.
pub fn is_member(conn: &mut PgConnection, room_id: &str, user_id: &str) -> Result<bool, Error> {
    let found = room_members::table
        .filter(room_members::room_id.eq(room_id))
        .filter(room_members::user_id.eq(user_id))
        .select(room_members::user_id)
        .first::<String>(conn)
        .optional()?;
    Ok(found.is_some())
}

/// Whether room `room_id` has more than `n` members (reads at most n + 1 of them).
pub fn has_more_members_than(
    conn: &mut PgConnection,
    room_id: &str,
    n: i64,
) -> Result<bool, Error> {
    let beyond = room_members::table
        .filter(room_members::room_id.eq(room_id))
        .select(room_members::user_id)
        .order(room_members::user_id)
        .offset(n)
        .first::<String>(conn)
        .optional()?;
    Ok(beyond.is_some())
}

/// The newest message id in the room: where a new member's read cursor starts, so
/// joining a busy room does not bring its whole past as unread.
fn newest_id(conn: &mut PgConnection, room_id: &str) -> Result<i64, Error> {
    Ok(messages::table
        .filter(messages::topic.eq(topic(room_id)))
        .select(diesel::dsl::max(messages::id))
        .first::<Option<i64>>(conn)?
        .unwrap_or(0))
}

fn insert_members(conn: &mut PgConnection, room_id: &str, users: &[String]) -> Result<(), Error> {
    if users.is_empty() {
        return Ok(());
    }
    let cursor = newest_id(conn, room_id)?;
    let rows: Vec<_> = users
        .iter()
        .map(|user| {
            (
                room_members::room_id.eq(room_id),
                room_members::user_id.eq(user),
                room_members::last_read_id.eq(cursor),
            )
        })
        .collect();
    diesel::insert_into(room_members::table)
        .values(&rows)
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// Creates the room or replaces its name (when given) and members.
pub fn put(
    conn: &mut PgConnection,
    room_id: &str,
    name: Option<&str>,
    members: &[String],
) -> Result<RoomChange, Error> {
    super::durably(conn, |conn| {
        let existing = get(conn, room_id)?;
        let room = match (&existing, name) {
            (Some(room), None) => room.clone(),
            (Some(_), Some(name)) => diesel::update(rooms::table.find(room_id))
                .set(rooms::name.eq(name))
                .returning(RoomRow::as_returning())
                .get_result(conn)?,
            (None, name) => diesel::insert_into(rooms::table)
                .values((rooms::id.eq(room_id), rooms::name.eq(name.unwrap_or(""))))
                .returning(RoomRow::as_returning())
                .get_result(conn)?,
        };
        let wanted: BTreeSet<String> = members.iter().cloned().collect();
        let current: BTreeSet<String> = self::members(conn, room_id)?.into_iter().collect();
        let removed: Vec<String> = current.difference(&wanted).cloned().collect();
        let added: Vec<String> = wanted.difference(&current).cloned().collect();
        diesel::delete(
            room_members::table
                .filter(room_members::room_id.eq(room_id))
                .filter(room_members::user_id.eq_any(&removed)),
        )
        .execute(conn)?;
        insert_members(conn, room_id, &added)?;
        Ok(RoomChange {
            room,
            created: existing.is_none(),
            members: wanted.into_iter().collect(),
            added,
            removed,
        })
    })
}

/// Adds a member; false when they already were one. `NotFound` for an unknown room.
pub fn add_member(conn: &mut PgConnection, room_id: &str, user_id: &str) -> Result<bool, Error> {
    super::durably(conn, |conn| {
        if get(conn, room_id)?.is_none() {
            return Err(Error::NotFound);
        }
        if is_member(conn, room_id, user_id)? {
            return Ok(false);
        }
        insert_members(conn, room_id, &[user_id.to_owned()])?;
        Ok(true)
    })
}

/// Removes a member. `NotFound` when the room or the membership does not exist.
pub fn remove_member(conn: &mut PgConnection, room_id: &str, user_id: &str) -> Result<(), Error> {
    super::durably(conn, |conn| {
        let removed = diesel::delete(
            room_members::table
                .filter(room_members::room_id.eq(room_id))
                .filter(room_members::user_id.eq(user_id)),
        )
        .execute(conn)?;
        if removed == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    })
}

/// Moves the member's read cursor forward to `up_to` (never back); returns how many
/// messages from others it passed.
pub fn advance_read_cursor(
    conn: &mut PgConnection,
    room_id: &str,
    user_id: &str,
    up_to: i64,
) -> Result<usize, Error> {
    let previous: i64 = room_members::table
        .filter(room_members::room_id.eq(room_id))
        .filter(room_members::user_id.eq(user_id))
        .select(room_members::last_read_id)
        .first(conn)?;
    if up_to <= previous {
        return Ok(0);
    }
    diesel::update(
        room_members::table
            .filter(room_members::room_id.eq(room_id))
            .filter(room_members::user_id.eq(user_id)),
    )
    .set(room_members::last_read_id.eq(up_to))
    .execute(conn)?;
    let passed: i64 = messages::table
        .filter(messages::topic.eq(topic(room_id)))
        .filter(messages::id.gt(previous))
        .filter(messages::id.le(up_to))
        .filter(messages::sender_id.ne(user_id))
        .filter(messages::deleted_at.is_null())
        .count()
        .get_result(conn)?;
    Ok(usize::try_from(passed).unwrap_or(0))
}

#[derive(QueryableByName)]
struct UserCount {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Unread counts in the room for each of `users` (members only; others are absent).
pub fn unread_for_members(
    conn: &mut PgConnection,
    room_id: &str,
    users: &[String],
) -> Result<HashMap<String, i64>, Error> {
    let rows: Vec<UserCount> = diesel::sql_query(
        "SELECT rm.user_id, count(m.id) AS count \
         FROM room_members rm \
         LEFT JOIN messages m ON m.topic = $1 AND m.id > rm.last_read_id \
              AND m.sender_id <> rm.user_id AND m.deleted_at IS NULL \
         WHERE rm.room_id = $2 AND rm.user_id = ANY($3) \
         GROUP BY rm.user_id",
    )
    .bind::<Text, _>(topic(room_id))
    .bind::<Text, _>(room_id)
    .bind::<Array<Text>, _>(users)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.count)).collect())
}
