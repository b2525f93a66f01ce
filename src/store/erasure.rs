//! Erasing a user (`DELETE /api/v1/users/{uid}`): everything of theirs, in the writer's
//! transaction.

use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::Error;
use super::mutation::Erasure;
use super::schema::messages;

/// Removes every message `user_id` sent (and the quotes of them in others' replies),
/// every room membership they hold, their
/// conversation list, blocks, opened chats and reports (made by them or of their
/// messages), and every notification waiting for them or their browsers' push
/// subscriptions. Others' lists move back to what is left.
pub fn erase_user(conn: &mut PgConnection, user_id: &str) -> Result<Erasure, Error> {
    use super::schema::room_members;
    super::reports::forget_user(conn, user_id)?;
    let blocks = super::blocks::forget_user(conn, user_id)?;
    super::open_chats::forget_user(conn, user_id)?;
    let mut removed: Vec<(i64, String)> =
        diesel::delete(messages::table.filter(messages::sender_id.eq(user_id)))
            .returning((messages::id, messages::topic))
            .get_results(conn)?;
    removed.sort();
    // Others' replies to what is gone quote nothing now.
    let ids: Vec<i64> = removed.iter().map(|(id, _)| *id).collect();
    super::messages::unquote(conn, &ids)?;
    super::reactions::forget(conn, user_id, &ids)?;
    let rooms: Vec<String> =
        diesel::delete(room_members::table.filter(room_members::user_id.eq(user_id)))
            .returning(room_members::room_id)
            .get_results(conn)?;
    super::outbox::forget_user(conn, user_id)?;
    super::conversations::forget_user(conn, user_id)?;
    let mut touched: Vec<&str> = removed.iter().map(|(_, topic)| topic.as_str()).collect();
    touched.sort_unstable();
    touched.dedup();
    super::conversations::refresh(conn, &touched)?;
    Ok(Erasure {
        user_id: user_id.to_owned(),
        messages: removed,
        rooms,
        blocks,
    })
}
