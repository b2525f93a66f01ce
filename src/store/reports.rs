//! Reports of messages by users, and the `message.reported` deliveries that tell the host.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;

use diesel::sql_types::{BigInt, Text};

use super::outbox::Sink;
use super::schema::{messages, reports};
use super::{Error, MessageRow};

/// A report as the host lists it.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct ReportRow {
    pub id: i64,
    pub reporter_id: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub message: MessageRow,
}

/// What a report is about, checked in the transaction that stores it.
pub struct NewReport<'a> {
    pub topic: &'a str,
    pub message_id: i64,
    pub reporter: &'a str,
    pub reason: Option<&'a str>,
}

/// Stores a report of a live message of `topic` and, when `webhook`, its delivery, in one
/// transaction. `Ok(None)`: this reporter had already reported it, and nothing changed.
pub fn add(
    conn: &mut PgConnection,
    report: &NewReport,
    webhook: bool,
) -> Result<Option<i64>, Error> {
    conn.transaction(|conn| {
        // Held until COMMIT: retention cannot delete the message between this check and
        // the report's insert (reports have no foreign key to do it for them).
        let live: Option<i64> = messages::table
            .filter(messages::id.eq(report.message_id))
            .filter(messages::topic.eq(report.topic))
            .filter(messages::deleted_at.is_null())
            .select(messages::id)
            .for_key_share()
            .first(conn)
            .optional()?;
        if live.is_none() {
            return Err(Error::NotFound);
        }
        let id: Option<i64> = diesel::insert_into(reports::table)
            .values((
                reports::message_id.eq(report.message_id),
                reports::reporter_id.eq(report.reporter),
                reports::reason.eq(report.reason),
            ))
            .on_conflict_do_nothing()
            .returning(reports::id)
            .get_result(conn)
            .optional()?;
        if let (Some(id), true) = (id, webhook) {
            // The event id is drawn by Postgres, in the statement that queues the call.
            diesel::sql_query(
                "INSERT INTO deliveries (id, sink, target, recipient_id, topic, message_ids, \
                                         next_attempt_at, report_id) \
                 VALUES (gen_random_uuid()::text, $1, '', $2, $3, ARRAY[$4], now(), $5)",
            )
            .bind::<Text, _>(Sink::Webhook.as_str())
            .bind::<Text, _>(report.reporter)
            .bind::<Text, _>(report.topic)
            .bind::<BigInt, _>(report.message_id)
            .bind::<BigInt, _>(id)
            .execute(conn)?;
        }
        Ok(id)
    })
}

/// One report with its message, as it stands now; None once erased.
pub fn get(conn: &mut PgConnection, id: i64) -> Result<Option<ReportRow>, Error> {
    Ok(listing()
        .filter(reports::id.eq(id))
        .first(conn)
        .optional()?)
}

/// Reports after `after` (by id), oldest first: up to `limit`, and whether more follow.
pub fn page(
    conn: &mut PgConnection,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<ReportRow>, bool), Error> {
    let mut rows: Vec<ReportRow> = listing()
        .filter(reports::id.gt(after.unwrap_or(0)))
        .order(reports::id)
        .limit(limit + 1)
        .load(conn)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, more))
}

#[allow(clippy::type_complexity)]
fn listing() -> diesel::dsl::Select<
    diesel::dsl::InnerJoin<reports::table, messages::table>,
    (
        reports::id,
        reports::reporter_id,
        reports::reason,
        reports::created_at,
        diesel::dsl::AsSelect<MessageRow, diesel::pg::Pg>,
    ),
> {
    reports::table.inner_join(messages::table).select((
        reports::id,
        reports::reporter_id,
        reports::reason,
        reports::created_at,
        MessageRow::as_select(),
    ))
}

/// Removes the reports `user` made and those of their messages (erasure). Call before
/// their messages go.
pub fn forget_user(conn: &mut PgConnection, user: &str) -> Result<(), Error> {
    diesel::delete(
        reports::table.filter(
            reports::reporter_id.eq(user).or(reports::message_id.eq_any(
                messages::table
                    .filter(messages::sender_id.eq(user))
                    .select(messages::id),
            )),
        ),
    )
    .execute(conn)?;
    Ok(())
}
