//! Room membership queries.

use diesel::prelude::*;

use super::Error;
use super::schema::room_members;

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

/// Moves the member's read cursor forward to `up_to` (never back); returns how many
/// messages from others it passed.
pub fn advance_read_cursor(
    conn: &mut PgConnection,
    room_id: &str,
    user_id: &str,
    up_to: i64,
) -> Result<usize, Error> {
    use super::schema::messages;
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
        .filter(messages::topic.eq(format!("room:{room_id}")))
        .filter(messages::id.gt(previous))
        .filter(messages::id.le(up_to))
        .filter(messages::sender_id.ne(user_id))
        .count()
        .get_result(conn)?;
    Ok(usize::try_from(passed).unwrap_or(0))
}
