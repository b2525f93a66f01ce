//! Queries on `messages`.

use diesel::dsl::{count_star, max};
use diesel::prelude::*;

use super::Error;
use super::models::{MessageRow, NewMessage};
use super::mutation::Author;
use super::schema::messages;

/// One page of a conversation's history. With `after`, the oldest `limit` messages
/// after it (recovery after a reconnect); otherwise the newest `limit` before `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub limit: i64,
}

/// A page newest first, before `$2` (`i64::MAX` for the newest).
pub const PAGE_BEFORE: &str = "SELECT * FROM messages WHERE topic = $1 AND deleted_at IS NULL \
     AND id < $2 ORDER BY id DESC LIMIT $3";

/// A page oldest first, after `$2` and before `$3`.
pub const PAGE_AFTER: &str = "SELECT * FROM messages WHERE topic = $1 AND deleted_at IS NULL \
     AND id > $2 AND id < $3 ORDER BY id ASC LIMIT $4";

/// Messages oldest first, each with its reactions' summary, and whether more lie beyond
/// the page in the direction read. Kept prepared: a join runs it.
pub fn history(
    conn: &mut PgConnection,
    topic: &str,
    page: Page,
) -> Result<(Vec<MessageRow>, bool), Error> {
    use diesel::sql_types::{BigInt, Text};
    super::prepared::statement! { After = PAGE_AFTER; }
    super::prepared::statement! { Before = PAGE_BEFORE; }
    let before = page.before.unwrap_or(i64::MAX);
    let mut rows: Vec<MessageRow> = match page.after {
        Some(after) => super::prepared::prepared::<After>()
            .bind::<Text, _>(topic)
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(before)
            .bind::<BigInt, _>(page.limit + 1)
            .load(conn)?,
        None => super::prepared::prepared::<Before>()
            .bind::<Text, _>(topic)
            .bind::<BigInt, _>(before)
            .bind::<BigInt, _>(page.limit + 1)
            .load(conn)?,
    };
    let more = rows.len() as i64 > page.limit;
    rows.truncate(usize::try_from(page.limit).unwrap_or(0));
    if page.after.is_none() {
        rows.reverse();
    }
    Ok((rows, more))
}

/// The batch INSERT, as the CTE `ins` the list moves read.
const INSERT_CTE: &str = "WITH ins AS ( \
     INSERT INTO messages (topic, sender_id, recipient_id, body, kind, status, meta, client_ref, \
                           user_name, reply_to, reply_to_user, reply_to_body) \
     SELECT topic, sender_id, recipient_id, body, kind, status, meta, client_ref, user_name, \
            reply_to, reply_to_user, reply_to_body \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::jsonb[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[]) \
          WITH ORDINALITY AS m(topic, sender_id, recipient_id, body, kind, status, meta, \
                               client_ref, user_name, reply_to, reply_to_user, reply_to_body, n) \
     ORDER BY n \
     ON CONFLICT (sender_id, client_ref) DO NOTHING \
     RETURNING *) ";

/// The statement of `insert_all` with `Lists::Moved`: the INSERT, and the conversation
/// lists moved by what it inserted, in one round trip and one commit.
pub static INSERT_ALL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    [
        INSERT_CTE.trim_end(),
        ", ",
        super::conversations::LIST_MOVE,
        "SELECT * FROM ins",
    ]
    .concat()
});

/// The statement of `insert_all` with `Lists::Deferred`.
pub static INSERT_ONLY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| [INSERT_CTE, "SELECT * FROM ins"].concat());

/// Whether a batch INSERT moves the conversation lists itself, or leaves that to
/// `list_moves` (on a busy replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lists {
    Moved,
    Deferred,
}

/// Inserts every message in one statement; rows come back in insertion (id) order. A
/// message whose (sender, client_ref) is already stored is skipped, not an error: the
/// caller answers a resend with the stored row. With `Lists::Moved` the members'
/// conversation lists move in the same statement.
///
/// The rows travel as one array per column through `unnest`, so the statement text is
/// the same for any batch size and its plan is made once per connection; it does not
/// depend on how large the table is.
pub fn insert_all(
    conn: &mut PgConnection,
    new: &[&NewMessage],
    lists: Lists,
) -> Result<Vec<MessageRow>, Error> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    match lists {
        Lists::Moved => insert_as::<InsertAll>(conn, new),
        Lists::Deferred => insert_as::<InsertOnly>(conn, new),
    }
}

super::prepared::statement! { InsertAll = INSERT_ALL.as_str(); }
super::prepared::statement! { InsertOnly = INSERT_ONLY.as_str(); }

fn insert_as<S: super::prepared::Statement>(
    conn: &mut PgConnection,
    new: &[&NewMessage],
) -> Result<Vec<MessageRow>, Error> {
    use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text};
    // Columns of borrowed values: the batch is bound as it is, not copied.
    let text = |f: fn(&NewMessage) -> &str| new.iter().map(|m| f(m)).collect::<Vec<&str>>();
    let optional = |f: fn(&NewMessage) -> Option<&str>| {
        new.iter().map(|m| f(m)).collect::<Vec<Option<&str>>>()
    };
    let mut rows: Vec<MessageRow> = super::prepared::prepared::<S>()
        .bind::<Array<Text>, _>(text(|m| &m.topic))
        .bind::<Array<Text>, _>(text(|m| &m.sender_id))
        .bind::<Array<Nullable<Text>>, _>(optional(|m| m.recipient_id.as_deref()))
        .bind::<Array<Text>, _>(text(|m| &m.body))
        .bind::<Array<Text>, _>(text(|m| &m.kind))
        .bind::<Array<Text>, _>(text(|m| &m.status))
        .bind::<Array<Jsonb>, _>(new.iter().map(|m| &m.meta).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(optional(|m| m.client_ref.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(optional(|m| m.user_name.as_deref()))
        .bind::<Array<Nullable<BigInt>>, _>(
            new.iter()
                .map(|m| m.reply.as_ref().map(|r| r.0))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(optional(|m| m.reply.as_ref().map(|r| r.1.as_str())))
        .bind::<Array<Nullable<Text>>, _>(optional(|m| m.reply.as_ref().map(|r| r.2.as_str())))
        .load(conn)?;
    // Ids are drawn in ORDER BY n order; sorting makes that order explicit.
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// For the rest of this transaction, plan each statement for the table as it is now.
/// The writer's connection lives for days while the table grows from empty; its rare
/// lookups must not reuse a plan Postgres cached when the table was small.
pub fn plan_for_now(conn: &mut PgConnection) -> Result<(), Error> {
    diesel::sql_query("SET LOCAL plan_cache_mode = force_custom_plan").execute(conn)?;
    Ok(())
}

/// Stored messages matching any of the (sender, client_ref) pairs.
pub fn by_client_refs(
    conn: &mut PgConnection,
    pairs: &[(&str, &str)],
) -> Result<Vec<MessageRow>, Error> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let senders: Vec<&str> = pairs.iter().map(|(s, _)| *s).collect();
    let refs: Vec<&str> = pairs.iter().map(|(_, r)| *r).collect();
    let candidates: Vec<MessageRow> = messages::table
        .filter(messages::sender_id.eq_any(&senders))
        .filter(messages::client_ref.eq_any(&refs))
        .select(MessageRow::as_select())
        .load(conn)?;
    Ok(candidates
        .into_iter()
        .filter(|row| {
            pairs
                .iter()
                .any(|(s, r)| row.sender_id == *s && row.client_ref.as_deref() == Some(*r))
        })
        .collect())
}

/// The message with this id in this conversation, unless deleted.
pub fn find_in_topic(
    conn: &mut PgConnection,
    topic: &str,
    id: i64,
) -> Result<Option<MessageRow>, Error> {
    Ok(messages::table
        .filter(messages::id.eq(id))
        .filter(messages::topic.eq(topic))
        .filter(messages::deleted_at.is_null())
        .select(MessageRow::as_select())
        .first(conn)
        .optional()?)
}

/// How many messages `recipient` has not seen in `topic`.
pub fn unread_count(conn: &mut PgConnection, topic: &str, recipient: &str) -> Result<i64, Error> {
    Ok(messages::table
        .filter(messages::recipient_id.eq(recipient))
        .filter(messages::topic.eq(topic))
        .filter(messages::is_delivered.eq(false))
        .filter(messages::deleted_at.is_null())
        .select(count_star())
        .first(conn)?)
}

/// One conversation with unread messages.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadTopic {
    pub topic: String,
    pub count: i64,
    pub last_message: MessageRow,
}

/// Every conversation where `user` has unread messages, newest first: one-to-one and
/// support (unread rows addressed to them, counted from `messages_unread_live_idx`
/// alone) and rooms (messages from others past their read cursor). One statement: the
/// summary is on every login's path.
pub fn unread_summary(conn: &mut PgConnection, user: &str) -> Result<Vec<UnreadTopic>, Error> {
    #[derive(QueryableByName)]
    struct Group {
        #[diesel(embed)]
        last_message: MessageRow,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        unread: i64,
    }
    // Prepared: planned once per connection, not at every login. The user is bound twice
    // because each placeholder is one bind.
    super::prepared::statement! {
        Summary = "WITH direct AS ( \
             SELECT topic, count(*) AS unread, max(id) AS last_id FROM messages \
             WHERE recipient_id = $1 AND NOT is_delivered AND deleted_at IS NULL \
             GROUP BY topic), \
         in_rooms AS ( \
             SELECT m.topic, count(*) AS unread, max(m.id) AS last_id \
             FROM room_members rm \
             JOIN messages m ON m.topic = 'room:' || rm.room_id AND m.id > rm.last_read_id \
                  AND m.sender_id <> rm.user_id AND m.deleted_at IS NULL \
             WHERE rm.user_id = $2 \
             GROUP BY m.topic) \
         SELECT m.*, g.unread \
         FROM (SELECT * FROM direct UNION ALL SELECT * FROM in_rooms) g \
         JOIN messages m ON m.id = g.last_id \
         ORDER BY m.id DESC";
    }
    let groups: Vec<Group> = super::prepared::prepared::<Summary>()
        .bind::<diesel::sql_types::Text, _>(user)
        .bind::<diesel::sql_types::Text, _>(user)
        .load(conn)?;
    Ok(groups
        .into_iter()
        .map(|g| UnreadTopic {
            topic: g.last_message.topic.clone(),
            count: g.unread,
            last_message: g.last_message,
        })
        .collect())
}

/// Applies an edit to a message that is not deleted. The inner `Err` is `NotFound`
/// (no such message) or `TooLarge` (the body would pass the limit); nothing changes then.
pub fn edit(
    conn: &mut PgConnection,
    edit: &super::mutation::MessageEdit,
) -> Result<Result<MessageRow, Error>, Error> {
    let current: Option<MessageRow> = messages::table
        .filter(messages::id.eq(edit.id))
        .filter(messages::deleted_at.is_null())
        .select(MessageRow::as_select())
        .for_update()
        .first(conn)
        .optional()?;
    let Some(current) = current else {
        return Ok(Err(Error::NotFound));
    };
    if let Some(by) = &edit.by
        && let Err(refused) = may_edit(&current, by)
    {
        return Ok(Err(refused));
    }
    let body = match (&edit.body, &edit.append) {
        (Some(body), _) => body.clone(),
        (None, Some(tail)) => current.body + tail,
        (None, None) => current.body,
    };
    if body.len() > edit.max_body_bytes {
        return Ok(Err(Error::TooLarge));
    }
    let row = diesel::update(messages::table.filter(messages::id.eq(edit.id)))
        .set((
            messages::body.eq(body),
            messages::status.eq(edit.status.clone().unwrap_or(current.status)),
            messages::meta.eq(edit.meta.clone().unwrap_or(current.meta)),
            messages::edited_at.eq(diesel::dsl::now),
        ))
        .returning(MessageRow::as_returning())
        .get_result(conn)?;
    if edit.body.is_some() || edit.append.is_some() {
        requote(conn, row.id, &row.body)?;
    }
    Ok(Ok(row))
}

/// The longest quote of a message a reply carries, in bytes.
pub const QUOTE_BYTES: usize = 200;

/// What a reply quotes of `body`: its first `QUOTE_BYTES`, cut at a character boundary.
pub fn quote(body: &str) -> String {
    let mut end = body.len().min(QUOTE_BYTES);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body.get(..end).unwrap_or("").to_owned()
}

/// Keeps the quotes of the replies to `original` as its body now is (after an edit).
pub fn requote(conn: &mut PgConnection, original: i64, body: &str) -> Result<(), Error> {
    diesel::update(
        messages::table
            .filter(messages::reply_to.eq(original))
            .filter(messages::reply_to_body.is_not_null()),
    )
    .set(messages::reply_to_body.eq(quote(body)))
    .execute(conn)?;
    Ok(())
}

/// Clears the quotes of the replies to `originals` (deleted or erased): each reply's
/// quote is then null.
pub fn unquote(conn: &mut PgConnection, originals: &[i64]) -> Result<(), Error> {
    // Kept prepared: retention runs it for every batch.
    super::prepared::statement! {
        Unquote = "UPDATE messages SET reply_to_user = NULL, reply_to_body = NULL \
                   WHERE reply_to = ANY($1)";
    }
    super::prepared::prepared::<Unquote>()
        .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(originals)
        .execute(conn)?;
    Ok(())
}

/// Whether `by` may edit `current`: its author, on its conversation, a user's message,
/// within the edit window.
fn may_edit(current: &MessageRow, by: &Author) -> Result<(), Error> {
    if current.topic != by.topic {
        return Err(Error::NotFound);
    }
    if current.sender_id != by.user_id || current.kind != "user" {
        return Err(Error::Forbidden);
    }
    let age = chrono::Utc::now().signed_duration_since(current.sent_at);
    if !by.edit_window.is_zero() && age.to_std().unwrap_or_default() > by.edit_window {
        return Err(Error::Forbidden);
    }
    Ok(())
}

/// Deletes a message: the row stays so ids and receipts still add up, but its body and
/// meta are gone and history no longer shows it, nor the lists. With `by`, only its
/// author may, or staff in a `support:` conversation.
pub fn tombstone(
    conn: &mut PgConnection,
    id: i64,
    by: Option<&Author>,
) -> Result<Result<MessageRow, Error>, Error> {
    if let Some(by) = by {
        let current: Option<(String, String)> = messages::table
            .filter(messages::id.eq(id))
            .filter(messages::deleted_at.is_null())
            .select((messages::topic, messages::sender_id))
            .for_update()
            .first(conn)
            .optional()?;
        match current {
            Some((topic, _)) if topic != by.topic => return Ok(Err(Error::NotFound)),
            None => return Ok(Err(Error::NotFound)),
            Some((topic, sender)) => {
                let staff_in_support = by.staff && topic.starts_with("support:");
                if sender != by.user_id && !staff_in_support {
                    return Ok(Err(Error::Forbidden));
                }
            }
        }
    }
    let row = diesel::update(
        messages::table
            .filter(messages::id.eq(id))
            .filter(messages::deleted_at.is_null()),
    )
    .set((
        messages::body.eq(""),
        messages::meta.eq(serde_json::json!({})),
        messages::deleted_at.eq(diesel::dsl::now),
    ))
    .returning(MessageRow::as_returning())
    .get_result(conn)
    .optional()?;
    if let Some(row) = &row {
        super::conversations::refresh(conn, &[&row.topic])?;
        unquote(conn, &[row.id])?;
        super::reactions::clear(conn, row.id)?;
    }
    Ok(row.ok_or(Error::NotFound))
}

/// The visitor of a `support:<uid>` topic.
fn support_visitor(topic: &str) -> &str {
    topic.strip_prefix("support:").unwrap_or(topic)
}

/// What the site's staff have not read in one support conversation: the visitor's
/// messages there (they carry no recipient; `is_delivered` turns true when staff read).
pub fn staff_unread_count(conn: &mut PgConnection, topic: &str) -> Result<i64, Error> {
    Ok(messages::table
        .filter(messages::topic.eq(topic))
        .filter(messages::recipient_id.is_null())
        .filter(messages::is_delivered.eq(false))
        .filter(messages::sender_id.eq(support_visitor(topic)))
        .filter(messages::deleted_at.is_null())
        .select(count_star())
        .first(conn)?)
}

/// Marks the visitor's messages up to `up_to` as read by staff; returns how many.
pub fn mark_read_by_staff(
    conn: &mut PgConnection,
    topic: &str,
    up_to: i64,
) -> Result<usize, Error> {
    Ok(diesel::update(
        messages::table
            .filter(messages::topic.eq(topic))
            .filter(messages::recipient_id.is_null())
            .filter(messages::is_delivered.eq(false))
            .filter(messages::sender_id.eq(support_visitor(topic)))
            .filter(messages::id.le(up_to)),
    )
    .set(messages::is_delivered.eq(true))
    .execute(conn)?)
}

/// The support conversations with the newest activity, newest first, each with what
/// staff have not read: the inbox summary.
pub fn inbox_summary(conn: &mut PgConnection, limit: i64) -> Result<Vec<UnreadTopic>, Error> {
    let latest: Vec<(String, Option<i64>)> = messages::table
        .filter(messages::topic.like("support:%"))
        .filter(messages::deleted_at.is_null())
        .group_by(messages::topic)
        .select((messages::topic, max(messages::id)))
        .order(max(messages::id).desc())
        .limit(limit)
        .load(conn)?;
    let topics: Vec<&str> = latest.iter().map(|(t, _)| t.as_str()).collect();
    let unread: std::collections::HashMap<String, i64> = messages::table
        .filter(messages::topic.eq_any(&topics))
        .filter(messages::recipient_id.is_null())
        .filter(messages::is_delivered.eq(false))
        .filter(messages::deleted_at.is_null())
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "sender_id = substr(topic, 9)",
        ))
        .group_by(messages::topic)
        .select((messages::topic, count_star()))
        .load::<(String, i64)>(conn)?
        .into_iter()
        .collect();
    let last_ids: Vec<i64> = latest.iter().filter_map(|(_, id)| *id).collect();
    let mut rows = rows_by_id(conn, &last_ids)?;
    Ok(latest
        .into_iter()
        .filter_map(|(topic, last_id)| {
            let last_message = rows.remove(&last_id?)?;
            Some(UnreadTopic {
                count: unread.get(&topic).copied().unwrap_or(0),
                topic,
                last_message,
            })
        })
        .collect())
}

/// Rows by id, for attaching last messages to summaries.
pub fn rows_by_id(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, MessageRow>, Error> {
    Ok(messages::table
        .filter(messages::id.eq_any(ids))
        .select(MessageRow::as_select())
        .load::<MessageRow>(conn)?
        .into_iter()
        .map(|row| (row.id, row))
        .collect())
}
