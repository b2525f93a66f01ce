//! Every user's conversation list (PROTOCOL.md §10).
//!
//! One-to-one and support conversations keep their activity in one `conversations` row
//! each, and whose lists hold them in `conversation_members`; rooms keep theirs on their
//! `rooms` row, read through `room_members`. So a message moves one row, however many
//! lists hold its conversation. In `conversations`, whose pages keep room for it, the
//! move is a HOT update (no index on what moves). Memberships are written with a
//! conversation's first message only. The writer makes the moves in the statement that
//! inserts the batch (`LIST_MOVE`); deletions and erasures put rows back to the newest
//! live message (`refresh`). A page reads the user's memberships and the rows they point
//! to, newest first.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};

use super::Error;
use super::models::MessageRow;
use super::schema::conversation_members;

/// The part of the batch INSERT's statement that moves the lists: CTEs over `ins`, the
/// rows just inserted (or, from `list_moves`, messages stored a moment ago). A
/// conversation's first message also puts it on its members' lists: both users of
/// `chat:<a>:<b>`, the visitor of `support:<uid>`. Later messages only move the one row,
/// unless an erasure took a member off the lists since: it set `relist_after` to the
/// newest message id then, and the first newer message lists the members again. Older
/// messages moved late (a deferred or replayed move) never do, so an erased user is not
/// brought back by their own past. A row already past the batch's newest message is not
/// written at all: the moves are idempotent, so `list_moves` can make them again.
/// Rows go in key order, so two replicas' batches of inserts alone lock them in one
/// order; a batch that also deletes may still meet another in a deadlock, which
/// Postgres breaks by failing one, and the writer then applies that batch one by one.
pub const LIST_MOVE: &str = "\
batch AS ( \
    SELECT topic, max(id) AS id, max(sent_at) AS at FROM ins \
    WHERE topic LIKE 'chat:%' OR topic LIKE 'support:%' GROUP BY topic), \
relisting AS ( \
    SELECT c.topic FROM conversations c JOIN batch b ON b.topic = c.topic \
    WHERE c.relist_after < b.id), \
moved AS ( \
    INSERT INTO conversations (topic, last_message_id, last_message_at) \
    SELECT topic, id, at FROM batch ORDER BY topic \
    ON CONFLICT (topic) DO UPDATE SET \
        last_message_id = GREATEST(conversations.last_message_id, EXCLUDED.last_message_id), \
        last_message_at = GREATEST(conversations.last_message_at, EXCLUDED.last_message_at), \
        relist_after = CASE WHEN conversations.topic IN (SELECT topic FROM relisting) \
                            THEN NULL ELSE conversations.relist_after END \
    WHERE conversations.last_message_id < EXCLUDED.last_message_id \
       OR conversations.topic IN (SELECT topic FROM relisting) \
    RETURNING topic, xmax = 0 AS created), \
listed AS ( \
    INSERT INTO conversation_members (user_id, topic) \
    SELECT member, topic FROM ( \
        SELECT topic FROM moved WHERE created UNION SELECT topic FROM relisting) t \
    CROSS JOIN LATERAL (VALUES \
        (CASE WHEN topic LIKE 'chat:%' THEN split_part(topic, ':', 2) END), \
        (CASE WHEN topic LIKE 'chat:%' THEN split_part(topic, ':', 3) \
              WHEN topic LIKE 'support:%' THEN substr(topic, 9) END) \
    ) AS members(member) \
    WHERE member IS NOT NULL ORDER BY member, topic \
    ON CONFLICT DO NOTHING), \
rooms_moved AS ( \
    UPDATE rooms r SET \
        last_message_id = GREATEST(r.last_message_id, latest.id), \
        last_message_at = GREATEST(r.last_message_at, latest.at) \
    FROM (SELECT substr(topic, 6) AS room_id, max(id) AS id, max(sent_at) AS at FROM ins \
          WHERE topic LIKE 'room:%' GROUP BY 1 ORDER BY 1) latest \
    WHERE r.id = latest.room_id \
      AND (r.last_message_id IS NULL OR r.last_message_id < latest.id)) ";

/// Puts each topic's activity back to its newest live message after a deletion or an
/// erasure; a one-to-one or support conversation with none left leaves every list (its
/// members stay: the next message brings it back to their lists, whichever replica
/// stores it). A few statements whatever the number of topics: an erasure may touch
/// thousands, inside the writer's transaction.
pub fn refresh(conn: &mut PgConnection, topics: &[&str]) -> Result<(), Error> {
    use diesel::sql_types::Array;
    if topics.is_empty() {
        return Ok(());
    }
    let (rooms, others): (Vec<&str>, Vec<&str>) =
        topics.iter().partition(|t| t.starts_with("room:"));
    let room_ids: Vec<&str> = rooms
        .iter()
        .filter_map(|t| t.strip_prefix("room:"))
        .collect();
    // The activity rows first, locked in key order, each lock a statement of its own:
    // another replica's writer moving one commits before the reads below (which then see
    // its message) or waits until this commits, so neither overwrites the other with an
    // older message.
    diesel::sql_query(
        "SELECT 1 FROM conversations WHERE topic = ANY($1) ORDER BY topic FOR UPDATE",
    )
    .bind::<Array<Text>, _>(&others)
    .execute(conn)?;
    diesel::sql_query("SELECT 1 FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind::<Array<Text>, _>(&room_ids)
        .execute(conn)?;
    diesel::sql_query(
        "DELETE FROM conversations c WHERE c.topic = ANY($1) AND NOT EXISTS ( \
         SELECT 1 FROM messages m WHERE m.topic = c.topic AND m.deleted_at IS NULL)",
    )
    .bind::<Array<Text>, _>(&others)
    .execute(conn)?;
    diesel::sql_query(
        "UPDATE conversations c SET (last_message_id, last_message_at) = ( \
         SELECT m.id, m.sent_at FROM messages m \
         WHERE m.topic = c.topic AND m.deleted_at IS NULL ORDER BY m.id DESC LIMIT 1) \
         WHERE c.topic = ANY($1)",
    )
    .bind::<Array<Text>, _>(&others)
    .execute(conn)?;
    // A room with no live message goes back to its creation time (both NULL).
    diesel::sql_query(
        "UPDATE rooms r SET (last_message_id, last_message_at) = ( \
         SELECT m.id, m.sent_at FROM messages m \
         WHERE m.topic = 'room:' || r.id AND m.deleted_at IS NULL ORDER BY m.id DESC LIMIT 1) \
         WHERE r.id = ANY($1)",
    )
    .bind::<Array<Text>, _>(&room_ids)
    .execute(conn)?;
    Ok(())
}

/// Takes a user off every list (erasure); the conversations stay on the others', and
/// their next message lists the user again should they come back.
pub fn forget_user(conn: &mut PgConnection, user_id: &str) -> Result<(), Error> {
    let topics: Vec<String> = diesel::delete(
        conversation_members::table.filter(conversation_members::user_id.eq(user_id)),
    )
    .returning(conversation_members::topic)
    .get_results(conn)?;
    // Messages up to now are the user's past; the first newer one lists them again.
    diesel::sql_query(
        "UPDATE conversations SET relist_after = (SELECT coalesce(max(id), 0) FROM messages) \
         WHERE topic = ANY($1)",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(&topics)
    .execute(conn)?;
    Ok(())
}

/// The last second Postgres and a cursor may name: 9999-12-31T23:59:59Z. The first page
/// starts there.
pub const LATEST_SECOND: i64 = 253_402_300_799;

/// Where a page starts: after the conversation with this activity and topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub at: DateTime<Utc>,
    pub topic: String,
}

/// One conversation of a user's list.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Listed {
    #[diesel(sql_type = Text)]
    pub topic: String,
    /// The last message's time; a room's creation while it has none.
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    /// The newest live message, read in the same statement (so from the same snapshot);
    /// None for a room that has none. Its `topic` is the conversation's.
    #[diesel(embed)]
    pub last_message: Option<MessageRow>,
    /// Rooms only.
    #[diesel(sql_type = Nullable<Text>)]
    pub room_name: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub unread: i64,
}

/// The statement of `page`. Each source gives its newest `limit` past the position;
/// the union keeps the newest `limit` of both, each with its last message. Unread counts as in the lobby summary:
/// rows addressed to the user, or room messages from others past the member's read
/// cursor. Placeholders each appear once (`store::prepared`), so the user, position and
/// limit are bound once per use.
pub const PAGE: &str = "\
WITH page AS ( \
    (SELECT c.topic, c.last_message_at AS at, c.last_message_id, \
            NULL::text AS room_name, NULL::bigint AS read_up_to \
     FROM conversation_members m JOIN conversations c ON c.topic = m.topic \
     WHERE m.user_id = $1 AND (c.last_message_at, c.topic) < ($2, $3) \
     ORDER BY c.last_message_at DESC, c.topic DESC LIMIT $4) \
    UNION ALL \
    (SELECT 'room:' || r.id, COALESCE(r.last_message_at, r.created_at), r.last_message_id, \
            r.name, m.last_read_id \
     FROM room_members m JOIN rooms r ON r.id = m.room_id \
     WHERE m.user_id = $5 \
       AND (COALESCE(r.last_message_at, r.created_at), 'room:' || r.id) < ($6, $7) \
     ORDER BY 2 DESC, 1 DESC LIMIT $8) \
    ORDER BY at DESC, topic DESC LIMIT $9) \
SELECT p.topic, p.at, p.room_name, \
    m.id, m.sender_id, m.recipient_id, m.body, m.kind, m.status, m.meta, m.client_ref, \
    m.sent_at, m.edited_at, m.deleted_at, m.is_delivered, m.user_name, \
    m.reply_to, m.reply_to_user, m.reply_to_body, m.reactions, \
    CASE WHEN p.read_up_to IS NULL THEN \
        (SELECT count(*) FROM messages u WHERE u.recipient_id = $10 AND u.topic = p.topic \
         AND NOT u.is_delivered AND u.deleted_at IS NULL) \
    ELSE \
        (SELECT count(*) FROM messages u WHERE u.topic = p.topic AND u.id > p.read_up_to \
         AND u.sender_id <> $11 AND u.deleted_at IS NULL) \
    END AS unread \
FROM page p LEFT JOIN messages m ON m.id = p.last_message_id AND m.deleted_at IS NULL \
ORDER BY p.at DESC, p.topic DESC";

/// Up to `limit` of `user`'s conversations after `after` (from the newest when None),
/// most recent activity first.
pub fn page(
    conn: &mut PgConnection,
    user: &str,
    after: Option<&Position>,
    limit: i64,
) -> Result<Vec<Listed>, Error> {
    // Past every stored time: the first page.
    let start = Position {
        at: DateTime::from_timestamp(LATEST_SECOND, 0).unwrap_or_default(),
        topic: String::new(),
    };
    let after = after.unwrap_or(&start);
    super::prepared::statement! { Page = PAGE; }
    Ok(super::prepared::prepared::<Page>()
        .bind::<Text, _>(user)
        .bind::<Timestamptz, _>(after.at)
        .bind::<Text, _>(&after.topic)
        .bind::<BigInt, _>(limit)
        .bind::<Text, _>(user)
        .bind::<Timestamptz, _>(after.at)
        .bind::<Text, _>(&after.topic)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(limit)
        .bind::<Text, _>(user)
        .bind::<Text, _>(user)
        .load(conn)?)
}
