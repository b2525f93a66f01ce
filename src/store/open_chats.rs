//! The one-to-one chats the host opened, for sites where only the host decides who may
//! chat (`chat.direct = "host"`).

use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::Error;
use super::schema::open_chats;

/// Opens `topic` (idempotent).
pub fn open(conn: &mut PgConnection, topic: &str) -> Result<(), Error> {
    diesel::insert_into(open_chats::table)
        .values(open_chats::topic.eq(topic))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// Closes `topic`; true when it was open.
pub fn close(conn: &mut PgConnection, topic: &str) -> Result<bool, Error> {
    Ok(diesel::delete(open_chats::table.find(topic)).execute(conn)? > 0)
}

pub fn is_open(conn: &mut PgConnection, topic: &str) -> Result<bool, Error> {
    Ok(diesel::select(diesel::dsl::exists(open_chats::table.find(topic))).get_result(conn)?)
}

/// Closes every chat of `user` (erasure).
pub fn forget_user(conn: &mut PgConnection, user: &str) -> Result<(), Error> {
    // `chat:a:b` with a < b: the user is either side.
    diesel::delete(
        open_chats::table.filter(
            open_chats::topic
                .like(format!("chat:{}:%", escape_like(user)))
                .or(open_chats::topic.like(format!("chat:%:{}", escape_like(user)))),
        ),
    )
    .execute(conn)?;
    Ok(())
}

/// `_` is an id character and a LIKE wildcard.
fn escape_like(id: &str) -> String {
    id.replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%")
}
