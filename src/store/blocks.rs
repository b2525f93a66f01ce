//! Blocks between users. Postgres is the truth; every replica reads it whole at start-up
//! (and now and then after) into the copy the hot path reads (`chat::blocks`).

use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::Error;
use super::schema::blocks;

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Added,
    /// The pair was blocked already.
    Already,
    /// `blocker` blocks `most` users already: nothing changed.
    TooMany,
}

/// `blocker` blocks `blocked`, unless they block `most` others already. Every replica
/// holds every block in memory, so one user's blocks are bounded.
pub fn add(
    conn: &mut PgConnection,
    blocker: &str,
    blocked: &str,
    most: i64,
) -> Result<Added, Error> {
    if is_blocked(conn, blocker, blocked)? {
        return Ok(Added::Already);
    }
    let held: i64 = blocks::table
        .filter(blocks::blocker_id.eq(blocker))
        .count()
        .get_result(conn)?;
    if held >= most {
        return Ok(Added::TooMany);
    }
    let added = diesel::insert_into(blocks::table)
        .values((
            blocks::blocker_id.eq(blocker),
            blocks::blocked_id.eq(blocked),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(if added > 0 {
        Added::Added
    } else {
        Added::Already
    })
}

pub fn is_blocked(conn: &mut PgConnection, blocker: &str, blocked: &str) -> Result<bool, Error> {
    Ok(
        diesel::select(diesel::dsl::exists(blocks::table.find((blocker, blocked))))
            .get_result(conn)?,
    )
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
