//! The outbox of offline notifications (webhooks, Web Push): what the writer enqueues
//! with each message, and what the delivery worker (`crate::notify`) takes from it.
//!
//! Two stages. `outbox` holds messages not yet told, one row each, written in the
//! message's own transaction. When a (topic, recipient) group falls due, `form` turns it
//! into `deliveries`, one per sink and target, each with the event id it keeps on every
//! retry. A delivery is taken with a lease (`take`) and then finished, retried or dropped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, Text};

use super::Error;
use super::models::MessageRow;
use super::schema::{deliveries, outbox, push_subscriptions};

/// Where a delivery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Webhook,
    Push,
}

impl Sink {
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Webhook => "webhook",
            Sink::Push => "push",
        }
    }
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery taken by a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub sink: Sink,
    /// The push endpoint; empty for the webhook.
    pub target: String,
    pub recipient_id: String,
    pub topic: String,
    pub message_ids: Vec<i64>,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// Set when the delivery tells the host of this report, not of unread messages.
    pub report_id: Option<i64>,
}

/// Adds the messages just inserted that someone may have to be told of: those with a
/// recipient, and room messages (their members are found when they fall due). Runs in
/// the writer's transaction, so a message and its notification commit together.
pub fn enqueue(
    conn: &mut PgConnection,
    rows: &[&MessageRow],
    delay: Duration,
) -> Result<(), Error> {
    let told: Vec<&&MessageRow> = rows
        .iter()
        .filter(|row| row.recipient_id.is_some() || row.topic.starts_with("room:"))
        .collect();
    if told.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT INTO outbox (message_id, topic, recipient_id, due_at) \
         SELECT id, topic, recipient_id, now() + make_interval(secs => $4) \
         FROM unnest($1::bigint[], $2::text[], $3::text[]) AS m(id, topic, recipient_id)",
    )
    .bind::<Array<BigInt>, _>(told.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(told.iter().map(|r| r.topic.clone()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        told.iter()
            .map(|r| r.recipient_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind::<Double, _>(delay.as_secs_f64())
    .execute(conn)?;
    Ok(())
}

/// What `form` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formed {
    /// Deliveries made.
    pub made: u64,
    /// (user, topic) groups left out because the user was in the conversation.
    pub present: u64,
}

/// The topics of up to `groups` due groups, in the order `form` takes them: the worker
/// asks who is in them before forming.
pub fn due_topics(conn: &mut PgConnection, groups: i64) -> Result<Vec<String>, Error> {
    #[derive(QueryableByName)]
    struct Due {
        #[diesel(sql_type = Text)]
        topic: String,
    }
    let due: Vec<Due> = diesel::sql_query(
        "SELECT DISTINCT topic FROM ( \
             SELECT topic FROM outbox WHERE due_at <= now() \
             GROUP BY topic, recipient_id ORDER BY min(due_at) LIMIT $1) d",
    )
    .bind::<BigInt, _>(groups)
    .load(conn)?;
    Ok(due.into_iter().map(|d| d.topic).collect())
}

/// Turns up to `groups` due (topic, recipient) groups into deliveries, in one
/// transaction: the webhook's when `webhook`, and one per Web Push subscription of the
/// recipient when `push`. A room's messages become one group per member who has not
/// read them. What was read or deleted meanwhile, or sent by someone the recipient
/// blocks, is left out, and so are the
/// (user, topic) pairs in `present` (joined there: they saw it); a group with nothing
/// left makes no delivery.
///
/// `SKIP LOCKED`: replicas forming at once take different groups.
pub fn form(
    conn: &mut PgConnection,
    groups: i64,
    webhook: bool,
    push: bool,
    present: &[(String, String)],
) -> Result<Formed, Error> {
    #[derive(QueryableByName)]
    struct Made {
        #[diesel(sql_type = BigInt)]
        made: i64,
        #[diesel(sql_type = BigInt)]
        present: i64,
    }
    let made: Made = conn.transaction(|conn| {
        diesel::sql_query(
            "WITH due AS ( \
                 SELECT topic, recipient_id FROM outbox WHERE due_at <= now() \
                 GROUP BY topic, recipient_id ORDER BY min(due_at) LIMIT $1 \
             ), locked AS ( \
                 SELECT o.message_id FROM outbox o \
                 JOIN due d ON o.topic = d.topic \
                           AND o.recipient_id IS NOT DISTINCT FROM d.recipient_id \
                 FOR UPDATE OF o SKIP LOCKED \
             ), claimed AS ( \
                 DELETE FROM outbox o USING locked l WHERE o.message_id = l.message_id \
                 RETURNING o.message_id, o.topic, o.recipient_id \
             ), unread AS ( \
                 SELECT c.recipient_id AS user_id, c.topic, m.id FROM claimed c \
                 JOIN messages m ON m.id = c.message_id \
                 WHERE c.recipient_id IS NOT NULL AND NOT m.is_delivered \
                   AND m.deleted_at IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM blocks b \
                       WHERE b.blocker_id = c.recipient_id AND b.blocked_id = m.sender_id) \
                 UNION ALL \
                 SELECT rm.user_id, c.topic, m.id FROM claimed c \
                 JOIN messages m ON m.id = c.message_id \
                 JOIN room_members rm ON rm.room_id = substr(c.topic, 6) \
                      AND rm.user_id <> m.sender_id AND rm.last_read_id < m.id \
                 WHERE c.recipient_id IS NULL AND m.deleted_at IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM blocks b \
                       WHERE b.blocker_id = rm.user_id AND b.blocked_id = m.sender_id) \
             ), grouped AS ( \
                 SELECT user_id, topic, array_agg(id ORDER BY id) AS ids \
                 FROM unread \
                 WHERE (user_id, topic) NOT IN ( \
                     SELECT * FROM unnest($4::text[], $5::text[])) \
                 GROUP BY user_id, topic \
             ), made AS ( \
                 INSERT INTO deliveries (id, sink, target, recipient_id, topic, message_ids, \
                                         next_attempt_at) \
                 SELECT gen_random_uuid()::text, 'webhook', '', user_id, topic, ids, now() \
                 FROM grouped WHERE $2 \
                 UNION ALL \
                 SELECT gen_random_uuid()::text, 'push', ps.endpoint, g.user_id, g.topic, \
                        g.ids, now() \
                 FROM grouped g JOIN push_subscriptions ps ON ps.user_id = g.user_id \
                 WHERE $3 \
                 RETURNING 1 \
             ) \
             SELECT (SELECT count(*) FROM made) AS made, \
                    (SELECT count(*) FROM ( \
                         SELECT DISTINCT u.user_id, u.topic FROM unread u \
                         JOIN unnest($4::text[], $5::text[]) AS p(user_id, topic) \
                           ON p.user_id = u.user_id AND p.topic = u.topic) s) AS present",
        )
        .bind::<BigInt, _>(groups)
        .bind::<Bool, _>(webhook)
        .bind::<Bool, _>(push)
        .bind::<Array<Text>, _>(present.iter().map(|(user, _)| user).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(present.iter().map(|(_, topic)| topic).collect::<Vec<_>>())
        .get_result(conn)
    })?;
    Ok(Formed {
        made: u64::try_from(made.made).unwrap_or(0),
        present: u64::try_from(made.present).unwrap_or(0),
    })
}

/// Takes up to `limit` deliveries whose time has come, leasing each for `lease` (longer
/// than a call may take): until then no other worker takes them.
pub fn take(conn: &mut PgConnection, limit: i64, lease: Duration) -> Result<Vec<Delivery>, Error> {
    Ok(diesel::sql_query(
        "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2) \
         WHERE id IN ( \
             SELECT id FROM deliveries WHERE next_attempt_at <= now() \
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, sink, target, recipient_id, topic, message_ids, attempts, created_at, \
                   report_id",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Double, _>(lease.as_secs_f64())
    .load::<DeliveryByName>(conn)?
    .into_iter()
    .map(Delivery::from)
    .collect())
}

#[derive(QueryableByName)]
#[diesel(table_name = deliveries)]
#[diesel(check_for_backend(diesel::pg::Pg))]
struct DeliveryByName {
    id: String,
    sink: String,
    target: String,
    recipient_id: String,
    topic: String,
    message_ids: Vec<i64>,
    attempts: i32,
    created_at: DateTime<Utc>,
    report_id: Option<i64>,
}

impl From<DeliveryByName> for Delivery {
    fn from(d: DeliveryByName) -> Self {
        Delivery {
            id: d.id,
            // The column's CHECK allows only these two.
            sink: if d.sink == Sink::Push.as_str() {
                Sink::Push
            } else {
                Sink::Webhook
            },
            target: d.target,
            recipient_id: d.recipient_id,
            topic: d.topic,
            message_ids: d.message_ids,
            attempts: d.attempts,
            created_at: d.created_at,
            report_id: d.report_id,
        }
    }
}

/// The messages of `delivery` its recipient still has to read (and whose senders they
/// do not block), oldest first, and how many they have unread in its topic now. Empty:
/// nothing left to tell.
pub fn still_unread(
    conn: &mut PgConnection,
    delivery: &Delivery,
) -> Result<(Vec<MessageRow>, i64), Error> {
    let messages: Vec<MessageRow> = diesel::sql_query(
        "SELECT m.* FROM messages m \
         WHERE m.id = ANY($1) AND m.deleted_at IS NULL \
           AND NOT EXISTS (SELECT 1 FROM blocks b \
               WHERE b.blocker_id = $2 AND b.blocked_id = m.sender_id) \
           AND ( \
             (m.recipient_id = $2 AND NOT m.is_delivered) \
             OR (m.recipient_id IS NULL AND m.topic LIKE 'room:%' AND EXISTS ( \
                 SELECT 1 FROM room_members rm \
                 WHERE rm.room_id = substr(m.topic, 6) AND rm.user_id = $2 \
                   AND rm.last_read_id < m.id))) \
         ORDER BY m.id",
    )
    .bind::<Array<BigInt>, _>(&delivery.message_ids)
    .bind::<Text, _>(&delivery.recipient_id)
    .load(conn)?;
    if messages.is_empty() {
        return Ok((messages, 0));
    }
    let count = match delivery.topic.strip_prefix("room:") {
        Some(room) => super::rooms::unread_for_members(
            conn,
            room,
            std::slice::from_ref(&delivery.recipient_id),
        )?
        .into_values()
        .next()
        .unwrap_or(0),
        None => super::messages::unread_count(conn, &delivery.topic, &delivery.recipient_id)?,
    };
    Ok((messages, count))
}

/// The delivery is done (sent, or nothing left to send).
pub fn finish(conn: &mut PgConnection, id: &str) -> Result<(), Error> {
    diesel::delete(deliveries::table.find(id)).execute(conn)?;
    Ok(())
}

/// The attempt failed: try again after `after`.
pub fn retry(conn: &mut PgConnection, id: &str, after: Duration, error: &str) -> Result<(), Error> {
    diesel::sql_query(
        "UPDATE deliveries SET attempts = attempts + 1, \
             next_attempt_at = now() + make_interval(secs => $2), last_error = $3 \
         WHERE id = $1",
    )
    .bind::<Text, _>(id)
    .bind::<Double, _>(after.as_secs_f64())
    .bind::<Text, _>(error)
    .execute(conn)?;
    Ok(())
}

/// The push service says the subscription is gone: forget it and what waits for it.
pub fn forget_subscription(conn: &mut PgConnection, endpoint: &str) -> Result<(), Error> {
    conn.transaction(|conn| {
        diesel::delete(push_subscriptions::table.find(endpoint)).execute(conn)?;
        diesel::delete(
            deliveries::table
                .filter(deliveries::sink.eq(Sink::Push.as_str()))
                .filter(deliveries::target.eq(endpoint)),
        )
        .execute(conn)?;
        Ok(())
    })
}

/// Erasure: nothing waits to tell `user_id` of anything, and their browsers are
/// forgotten. (Their own messages leave the outbox with the rows, by the foreign key.)
pub fn forget_user(conn: &mut PgConnection, user_id: &str) -> Result<(), Error> {
    diesel::delete(outbox::table.filter(outbox::recipient_id.eq(user_id))).execute(conn)?;
    diesel::delete(deliveries::table.filter(deliveries::recipient_id.eq(user_id))).execute(conn)?;
    diesel::delete(push_subscriptions::table.filter(push_subscriptions::user_id.eq(user_id)))
        .execute(conn)?;
    Ok(())
}

/// How many messages wait to fall due, and how many deliveries wait to be made.
pub fn depth(conn: &mut PgConnection) -> Result<(i64, i64), Error> {
    let waiting = outbox::table.count().get_result(conn)?;
    let delivering = deliveries::table.count().get_result(conn)?;
    Ok((waiting, delivering))
}
