//! Blocks between users. Postgres is the truth; every replica reads it whole at start-up
//! (and now and then after) into the copy the hot path reads (`chat::blocks`).

use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::Error;
use super::schema::blocks;

/// `blocker` blocks `blocked`; true when this made a change.
pub fn add(conn: &mut PgConnection, blocker: &str, blocked: &str) -> Result<bool, Error> {
    let added = diesel::insert_into(blocks::table)
        .values((
            blocks::blocker_id.eq(blocker),
            blocks::blocked_id.eq(blocked),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(added > 0)
}

/// `blocker` no longer blocks `blocked`; true when this made a change.
pub fn remove(conn: &mut PgConnection, blocker: &str, blocked: &str) -> Result<bool, Error> {
    let removed = diesel::delete(blocks::table.find((blocker, blocked))).execute(conn)?;
    Ok(removed > 0)
}

/// Whom `blocker` blocks, oldest block first.
pub fn of(conn: &mut PgConnection, blocker: &str) -> Result<Vec<String>, Error> {
    Ok(blocks::table
        .filter(blocks::blocker_id.eq(blocker))
        .order((blocks::created_at, blocks::blocked_id))
        .select(blocks::blocked_id)
        .load(conn)?)
}

/// Every block, as (blocker, blocked).
pub fn all(conn: &mut PgConnection) -> Result<Vec<(String, String)>, Error> {
    Ok(blocks::table
        .select((blocks::blocker_id, blocks::blocked_id))
        .load(conn)?)
}

/// Removes every block `user` gave or got (erasure); returns them as (blocker, blocked).
pub fn forget_user(conn: &mut PgConnection, user: &str) -> Result<Vec<(String, String)>, Error> {
    Ok(diesel::delete(
        blocks::table.filter(blocks::blocker_id.eq(user).or(blocks::blocked_id.eq(user))),
    )
    .returning((blocks::blocker_id, blocks::blocked_id))
    .get_results(conn)?)
}
