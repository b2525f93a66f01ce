//! Browsers' Web Push subscriptions.

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::Error;
use super::schema::push_subscriptions;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = push_subscriptions)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct PushSubscriptionRow {
    pub endpoint: String,
    pub user_id: String,
    pub p256dh: String,
    pub auth: String,
}

/// Registers `row` for its user; true when the endpoint was new. An endpoint already
/// known (the same browser, perhaps another user now) takes the new user and keys.
pub fn subscribe(conn: &mut PgConnection, row: &PushSubscriptionRow) -> Result<bool, Error> {
    let existed = push_subscriptions::table
        .find(&row.endpoint)
        .select(push_subscriptions::endpoint)
        .first::<String>(conn)
        .optional()?
        .is_some();
    diesel::insert_into(push_subscriptions::table)
        .values((
            push_subscriptions::endpoint.eq(&row.endpoint),
            push_subscriptions::user_id.eq(&row.user_id),
            push_subscriptions::p256dh.eq(&row.p256dh),
            push_subscriptions::auth.eq(&row.auth),
        ))
        .on_conflict(push_subscriptions::endpoint)
        .do_update()
        .set((
            push_subscriptions::user_id.eq(excluded(push_subscriptions::user_id)),
            push_subscriptions::p256dh.eq(excluded(push_subscriptions::p256dh)),
            push_subscriptions::auth.eq(excluded(push_subscriptions::auth)),
        ))
        .execute(conn)?;
    Ok(!existed)
}

/// Removes `user_id`'s subscription at `endpoint`; false when they had none there.
pub fn unsubscribe(conn: &mut PgConnection, user_id: &str, endpoint: &str) -> Result<bool, Error> {
    let removed = diesel::delete(
        push_subscriptions::table
            .filter(push_subscriptions::endpoint.eq(endpoint))
            .filter(push_subscriptions::user_id.eq(user_id)),
    )
    .execute(conn)?;
    Ok(removed > 0)
}

/// Every subscription of `user_id`.
pub fn for_user(conn: &mut PgConnection, user_id: &str) -> Result<Vec<PushSubscriptionRow>, Error> {
    Ok(push_subscriptions::table
        .filter(push_subscriptions::user_id.eq(user_id))
        .select(PushSubscriptionRow::as_select())
        .order(push_subscriptions::endpoint)
        .load(conn)?)
}

/// The subscription at `endpoint`, if it is still registered.
pub fn by_endpoint(
    conn: &mut PgConnection,
    endpoint: &str,
) -> Result<Option<PushSubscriptionRow>, Error> {
    Ok(push_subscriptions::table
        .find(endpoint)
        .select(PushSubscriptionRow::as_select())
        .first(conn)
        .optional()?)
}
