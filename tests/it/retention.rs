//! `chat.retention_days`: old messages deleted in batches by one replica at a time, with
//! what hangs on them, while new ones are stored; lists and unread counts right after.

use diesel::RunQueryDsl;
use diesel::sql_types::BigInt;
use serde_json::{Value, json};

use crate::helpers::*;

const DELETED: &str = "sidechat_retention_deleted_total";

fn retaining(s: &mut sidechat::settings::Settings) {
    s.chat.retention_days = 30;
    s.chat.retention_batch = 25;
    s.chat.retention_pause_ms = 30;
    s.chat.retention_every_s = 1;
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `SELECT count(*) AS n ...` with `up_to` bound as `$1`.
async fn count(app: &TestApp, sql: &'static str, up_to: i64) -> i64 {
    app.db(move |conn| {
        diesel::sql_query(sql)
            .bind::<BigInt, _>(up_to)
            .get_result::<Count>(conn)
            .unwrap()
            .n
    })
    .await
}

/// Moves every message up to `up_to`, and the list activity pointing at them, 40 days
/// back: as if they had been sent then.
async fn age(app: &TestApp, up_to: i64) {
    app.db(move |conn| {
        for sql in [
            "UPDATE messages SET sent_at = sent_at - interval '40 days' WHERE id <= $1",
            "UPDATE conversations SET last_message_at = last_message_at - interval '40 days' \
             WHERE last_message_id <= $1",
            "UPDATE rooms SET last_message_at = last_message_at - interval '40 days' \
             WHERE last_message_id <= $1",
        ] {
            diesel::sql_query(sql)
                .bind::<BigInt, _>(up_to)
                .execute(conn)
                .unwrap();
        }
    })
    .await
}

async fn list(app: &TestApp, user: &str) -> Value {
    let (status, page) = app.my_list(user, "").await;
    assert_eq!(status, 200, "{page}");
    page
}

fn listed(page: &Value) -> Vec<(String, i64)> {
    page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["topic"].as_str().unwrap().to_owned(),
                c["unread"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn old_messages_go_in_batches_with_what_hangs_on_them_while_new_ones_are_stored() {
    let app = spawn_app_with(retaining).await;
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/rooms/old",
            Some(json!({"name": "Old room", "members": ["alice", "bob"]})),
        )
        .await;
    assert!(status == 200 || status == 201);
    // The backlog: a chat with nothing newer, a room, a chat that goes on, and filler
    // enough for many batches of 25.
    for i in 0..5 {
        app.post_message("chat:alice:bob", "bob", &format!("old {i}"))
            .await;
        app.post_message("room:old", "bob", &format!("old room {i}"))
            .await;
    }
    for i in 0..300 {
        app.post_message(&format!("chat:dave:u{}", i % 20), "dave", "filler")
            .await;
    }
    let mut old_carol = Vec::new();
    for i in 0..5 {
        old_carol.push(
            app.post_message("chat:alice:carol", "alice", &format!("old {i}"))
                .await,
        );
    }
    let mut alice = app.connect("alice").await;
    let mut carol = app.connect("carol").await;
    alice.join_ok("chat:alice:carol", json!({})).await;
    carol.join_ok("chat:alice:carol", json!({})).await;
    let quoted = &old_carol[0];
    let reacted = alice
        .push(
            "chat:alice:carol",
            "react",
            json!({"id": quoted["id"], "emoji": "👍"}),
        )
        .await;
    assert_eq!(reacted["status"], "ok", "{reacted}");
    let reported = carol
        .push(
            "chat:alice:carol",
            "report",
            json!({"message_id": quoted["id"], "reason": "old news"}),
        )
        .await;
    assert_eq!(reported["status"], "ok", "{reported}");
    let last_old = old_carol[4]["id"].as_i64().unwrap();
    app.db(move |conn| {
        diesel::sql_query(
            "INSERT INTO outbox (message_id, topic, recipient_id, due_at) \
             VALUES ($1, 'chat:alice:carol', 'carol', now() + interval '1 hour')",
        )
        .bind::<BigInt, _>(last_old)
        .execute(conn)
        .unwrap();
    })
    .await;
    // A new reply quoting an old message.
    let reply = alice
        .push(
            "chat:alice:carol",
            "new_msg",
            json!({"body": "as I said", "reply_to": quoted["id"]}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let reply = reply["response"]["message"].clone();
    assert_eq!(reply["reply_to"]["body"], "old 0");

    let old = count(
        &app,
        "SELECT count(*) AS n FROM messages WHERE id <= $1",
        last_old,
    )
    .await;
    assert_eq!(old, 315);
    assert_eq!(app.metric(DELETED).await, Some(0.0));
    age(&app, last_old).await;

    // Sends go on, each acknowledged, while the backlog is deleted.
    let mut acked = vec![reply["id"].as_i64().unwrap()];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let sent = alice
            .send_msg("chat:alice:carol", &format!("new {}", acked.len()))
            .await;
        acked.push(sent["id"].as_i64().unwrap());
        if acked.len() % 5 == 0 && app.metric(DELETED).await == Some(old as f64) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog is not deleted: {:?} of {old}",
            app.metric(DELETED).await
        );
    }
    assert!(acked.len() > 5, "sends went on while it was deleted");

    let left = |sql| count(&app, sql, last_old);
    assert_eq!(
        left("SELECT count(*) AS n FROM messages WHERE id <= $1").await,
        0
    );
    assert_eq!(
        left("SELECT count(*) AS n FROM reactions WHERE message_id <= $1").await,
        0
    );
    assert_eq!(
        left("SELECT count(*) AS n FROM reports WHERE message_id <= $1").await,
        0
    );
    assert_eq!(
        left("SELECT count(*) AS n FROM outbox WHERE message_id <= $1").await,
        0
    );
    // Every acknowledged new message is there, once.
    let first_new = acked[0];
    let stored: Vec<i64> = app
        .db(move |conn| {
            #[derive(diesel::QueryableByName)]
            struct Id {
                #[diesel(sql_type = BigInt)]
                id: i64,
            }
            diesel::sql_query(
                "SELECT id FROM messages WHERE topic = 'chat:alice:carol' AND id >= $1 ORDER BY id",
            )
            .bind::<BigInt, _>(first_new)
            .load::<Id>(conn)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
        })
        .await;
    assert_eq!(stored, acked);
    // The reply quotes nothing now.
    let reply_id = reply["id"].as_i64().unwrap();
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM messages \
             WHERE id = $1 AND reply_to_body IS NULL AND reply_to_user IS NULL",
            reply_id,
        )
        .await,
        1
    );

    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM rooms WHERE id = 'old' AND last_message_id IS NULL \
               AND last_message_at IS NULL AND $1 > 0",
            1,
        )
        .await,
        1,
        "the room's activity is back to none"
    );
    // Lists: the chat with nothing left is gone from both; the room stays, with nothing
    // unread; carol's unread count is the new messages only.
    let new_count = acked.len() as i64;
    assert_eq!(listed(&list(&app, "bob").await), [("room:old".into(), 0)]);
    let carol_list = listed(&list(&app, "carol").await);
    assert_eq!(carol_list, [("chat:alice:carol".into(), new_count)]);
    let alice_list = listed(&list(&app, "alice").await);
    assert_eq!(
        alice_list,
        [("chat:alice:carol".into(), 0), ("room:old".into(), 0)]
    );
    let (_, unread) = app
        .api_with_key("GET", "/v1/me/unread", None, Some(&hmac_token("carol", 60)))
        .await;
    assert_eq!(unread["total"], new_count, "{unread}");
    assert!(
        app.metric(r#"sidechat_retention_runs_total{outcome="done"}"#)
            .await
            >= Some(1.0)
    );
    assert!(
        app.metric("sidechat_retention_last_run_timestamp_seconds")
            .await
            > Some(0.0)
    );
}

#[tokio::test]
async fn while_one_replica_holds_the_lock_the_others_delete_nothing() {
    // Two replicas of one deployment (the broker plays no part here).
    let db_url = fresh_database();
    let a = &spawn_app_on(db_url.clone(), retaining).await;
    let b = &spawn_app_on(db_url.clone(), retaining).await;
    for i in 0..60 {
        a.post_message("chat:alice:bob", "alice", &format!("old {i}"))
            .await;
    }
    // The test plays the replica that is deleting: it holds the lock.
    let mut holder = {
        use diesel::Connection;
        diesel::PgConnection::establish(&db_url).unwrap()
    };
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(sidechat::store::retention::RETENTION_LOCK)
        .execute(&mut holder)
        .unwrap();
    age(a, i64::MAX).await;
    let skipped = r#"sidechat_retention_runs_total{outcome="skipped"}"#;
    let (a_before, b_before) = (a.metric(skipped).await, b.metric(skipped).await);
    eventually("both replicas skip two runs", || async {
        a.metric(skipped).await >= a_before.map(|n| n + 2.0)
            && b.metric(skipped).await >= b_before.map(|n| n + 2.0)
    })
    .await;
    assert_eq!(a.metric(DELETED).await, Some(0.0));
    assert_eq!(b.metric(DELETED).await, Some(0.0));
    assert_eq!(a.message_count().await, 60);

    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(sidechat::store::retention::RETENTION_LOCK)
        .execute(&mut holder)
        .unwrap();
    eventually("the backlog is deleted once the lock is free", || async {
        a.message_count().await == 0
    })
    .await;
    let total = a.metric(DELETED).await.unwrap() + b.metric(DELETED).await.unwrap();
    assert_eq!(total, 60.0, "each message deleted once, by one of them");
}

/// A batch that meets a row lock gives up within its lock timeout and changes nothing;
/// the writer, elsewhere, is not held up; the next run deletes it all.
#[tokio::test]
async fn a_batch_that_meets_a_lock_yields_and_leaves_everything_as_it_was() {
    let app = spawn_app_with(retaining).await;
    for i in 0..10 {
        app.post_message("chat:alice:bob", "alice", &format!("old {i}"))
            .await;
    }
    let mut holder = {
        use diesel::Connection;
        diesel::PgConnection::establish(&app.db_url).unwrap()
    };
    {
        use diesel::connection::SimpleConnection;
        // The list entry locked, as a long transaction elsewhere would hold it; then the
        // messages aged (their list entry is left as it was, or the aging would wait).
        holder
            .batch_execute(
                "BEGIN; SELECT 1 FROM conversations WHERE topic = 'chat:alice:bob' FOR UPDATE",
            )
            .unwrap();
    }
    app.db(|conn| {
        diesel::sql_query(
            "UPDATE messages SET sent_at = sent_at - interval '40 days' WHERE topic = 'chat:alice:bob'",
        )
        .execute(conn)
        .unwrap();
    })
    .await;
    let failed = r#"sidechat_retention_runs_total{outcome="failed"}"#;
    eventually("a run gives up on the locked row", || async {
        app.metric(failed).await >= Some(1.0)
    })
    .await;
    assert_eq!(app.metric(DELETED).await, Some(0.0));
    assert_eq!(app.message_count().await, 10, "the batch rolled back whole");
    // The writer does not wait on retention: a send elsewhere is acknowledged.
    let mut carol = app.connect("carol").await;
    carol.join_ok("chat:carol:dave", json!({})).await;
    carol.send_msg("chat:carol:dave", "meanwhile").await;

    {
        use diesel::connection::SimpleConnection;
        holder.batch_execute("ROLLBACK").unwrap();
    }
    eventually("the next run deletes the old ones", || async {
        app.metric(DELETED).await == Some(10.0)
    })
    .await;
    assert_eq!(app.message_count().await, 1);
    assert_eq!(listed(&list(&app, "bob").await), []);
}
