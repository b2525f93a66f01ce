//! The hot queries are served by the indexes meant for them. With sequential scans
//! priced out, a query that no index can serve still scans: the plan shows it.

use diesel::prelude::*;

use crate::helpers::*;

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    line: String,
}

fn plan(conn: &mut PgConnection, sql: &str) -> String {
    diesel::sql_query(format!("EXPLAIN {sql}"))
        .load::<PlanLine>(conn)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn every_hot_query_uses_its_index() {
    let app = spawn_app().await;
    app.db(|conn| {
        diesel::sql_query("SET enable_seqscan = off")
            .execute(conn)
            .unwrap();
        // (query as the store runs it, the indexes that may serve it)
        let cases: [(&str, &str, &[&str]); 5] = [
            (
                "unread summary at login",
                "SELECT topic, count(*), max(id) FROM messages WHERE recipient_id = 'b' \
                 AND NOT is_delivered AND deleted_at IS NULL GROUP BY topic",
                &["messages_unread_live_idx"],
            ),
            (
                "idempotent resend lookup",
                "SELECT * FROM messages WHERE sender_id = ANY(ARRAY['a','b']) \
                 AND client_ref = ANY(ARRAY['r1','r2'])",
                &["messages_sender_client_ref_key"],
            ),
            (
                "staff inbox unread",
                "SELECT count(*) FROM messages WHERE topic = 'support:v' AND recipient_id IS NULL \
                 AND NOT is_delivered AND sender_id = 'v' AND deleted_at IS NULL",
                // On a small table either is as good; both avoid a scan.
                &["messages_support_unread_idx", "messages_topic_id_idx"],
            ),
            (
                "room members",
                "SELECT user_id FROM room_members WHERE room_id = 'r' ORDER BY user_id",
                &["room_members_pkey"],
            ),
            (
                "a user's rooms",
                "SELECT room_id FROM room_members WHERE user_id = 'u'",
                &["room_members_user_id_idx"],
            ),
        ];
        for (what, sql, indexes) in cases {
            let plan = plan(conn, sql);
            assert!(
                indexes.iter().any(|index| plan.contains(index)),
                "{what}: expected one of {indexes:?} in\n{plan}"
            );
            assert!(
                !plan.contains("Seq Scan on messages"),
                "{what}: scans messages\n{plan}"
            );
        }
        // The kept statements below run as the service runs them: one generic plan.
        diesel::sql_query("SET plan_cache_mode = force_generic_plan")
            .execute(conn)
            .unwrap();
        // History pages (their reactions summed up on each row), as `messages::history`
        // runs them.
        for (name, types, sql, execute) in [
            (
                "newest",
                "text, bigint, bigint",
                sidechat::store::messages::PAGE_BEFORE,
                "('chat:a:b', 100, 51)",
            ),
            (
                "after",
                "text, bigint, bigint, bigint",
                sidechat::store::messages::PAGE_AFTER,
                "('chat:a:b', 10, 100, 51)",
            ),
        ] {
            diesel::sql_query(format!("PREPARE history_{name}({types}) AS {sql}"))
                .execute(conn)
                .unwrap();
            let page = plan(conn, &format!("EXECUTE history_{name}{execute}"));
            assert!(
                page.contains("messages_topic_id_idx"),
                "history {name}: {page}"
            );
            assert!(!page.contains("Seq Scan"), "history {name}: {page}");
        }
        // Receipts, as the batch statement stores them.
        diesel::sql_query(format!(
            "PREPARE mark_all(text[], text[], bigint[]) AS {}",
            sidechat::store::receipts::MARK_ALL
        ))
        .execute(conn)
        .unwrap();
        let plan = plan(
            conn,
            "EXECUTE mark_all(ARRAY['chat:a:b', 'chat:b:c'], ARRAY['b', 'c'], ARRAY[10, 20])",
        );
        assert!(
            plan.contains("Index Scan using messages_unread_live_idx"),
            "receipts: {plan}"
        );
        assert!(!plan.contains("Seq Scan on messages"), "receipts: {plan}");
        // A page of the conversation list, as `conversations::page` runs it.
        diesel::sql_query(format!(
            "PREPARE list_page(text, timestamptz, text, bigint, text, timestamptz, text, \
             bigint, bigint, text, text) AS {}",
            sidechat::store::conversations::PAGE
        ))
        .execute(conn)
        .unwrap();
        let list = self::plan(
            conn,
            "EXECUTE list_page('u', 'infinity', '', 51, 'u', 'infinity', '', 51, 51, 'u', 'u')",
        );
        for index in [
            "conversation_members_pkey",
            "conversations_pkey",
            "room_members_user_id_idx",
        ] {
            assert!(list.contains(index), "list page: {index} in\n{list}");
        }
        assert!(!list.contains("Seq Scan"), "list page: {list}");
        // The writer's batch INSERT and the lists it moves, as a kept generic plan made
        // on empty tables (the writer's connection prices scans out too).
        diesel::sql_query(format!(
            "PREPARE insert_all(text[], text[], text[], text[], text[], text[], jsonb[], \
             text[], text[], bigint[], text[], text[]) AS {}",
            sidechat::store::messages::INSERT_ALL.as_str()
        ))
        .execute(conn)
        .unwrap();
        let insert = self::plan(
            conn,
            "EXECUTE insert_all(ARRAY['chat:a:b', 'room:r'], ARRAY['a', 'a'], \
             ARRAY['b', NULL], ARRAY['x', 'y'], ARRAY['user', 'user'], \
             ARRAY['complete', 'complete'], ARRAY['{}'::jsonb, '{}'::jsonb], ARRAY[NULL, NULL], \
             ARRAY[NULL, NULL], ARRAY[NULL, NULL]::bigint[], ARRAY[NULL, NULL], \
             ARRAY[NULL, NULL])",
        );
        assert!(insert.contains("rooms_pkey"), "batch insert: {insert}");
        assert!(!insert.contains("Seq Scan"), "batch insert: {insert}");
        // The deferred moves of a busy replica, by message id, as a kept generic plan.
        diesel::sql_query(format!(
            "PREPARE move_lists(bigint[]) AS {}",
            sidechat::store::list_moves::MOVE_BY_IDS.as_str()
        ))
        .execute(conn)
        .unwrap();
        let moves = self::plan(conn, "EXECUTE move_lists(ARRAY[1, 2, 3])");
        assert!(moves.contains("messages_pkey"), "list moves: {moves}");
        assert!(!moves.contains("Seq Scan"), "list moves: {moves}");
    })
    .await;
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Text)]
    setting: String,
}

fn show(conn: &mut PgConnection, name: &str) -> String {
    diesel::sql_query(format!("SELECT current_setting('{name}') AS setting"))
        .get_result::<Setting>(conn)
        .unwrap()
        .setting
}

/// Short queries only: no parallel workers or JIT (each costs milliseconds to start,
/// more than the query; the login summary's tail went from 4 to 37 ms with JIT), and
/// on the read pool sequential scans priced out (plans are kept: see below) and
/// receipts committed without waiting.
#[tokio::test]
async fn service_connections_are_set_up_for_short_queries() {
    let url = fresh_database();
    tokio::task::spawn_blocking(move || {
        let timeout = std::time::Duration::from_secs(5);
        let pool = sidechat::store::read_pool(&url, 1, timeout).unwrap();
        let mut pooled = pool.get().unwrap();
        let mut single = sidechat::store::connect(&url, timeout).unwrap();
        for conn in [&mut *pooled, &mut single] {
            assert_eq!(show(conn, "jit"), "off");
            assert_eq!(show(conn, "max_parallel_workers_per_gather"), "0");
        }
        assert_eq!(show(&mut pooled, "enable_seqscan"), "off");
        assert_eq!(show(&mut pooled, "plan_cache_mode"), "force_generic_plan");
        assert_eq!(show(&mut pooled, "synchronous_commit"), "off");
        // The writer's: scans priced out.
        let mut writer = sidechat::store::connect(&url, timeout).unwrap();
        sidechat::store::set_up_for_writes(&mut writer).unwrap();
        assert_eq!(show(&mut writer, "enable_seqscan"), "off");
    })
    .await
    .unwrap();
}

fn explain_execute(conn: &mut PgConnection) -> String {
    plan(
        conn,
        "EXECUTE trap(ARRAY['chat:a:b', 'chat:b:c'], ARRAY['b', 'c'], ARRAY[10, 20])",
    )
}

/// The trap of kept plans: a plan made while `messages` was empty is the one the
/// connection goes on using as the table fills. On the read pool it must use the index
/// even so; on a connection with default settings the same steps keep scanning the
/// table, which is what this test would catch.
#[tokio::test]
async fn a_plan_kept_from_an_empty_table_still_uses_the_index_on_a_full_one() {
    let app = spawn_app().await;
    let url = app.db_url.clone();
    tokio::task::spawn_blocking(move || {
        let timeout = std::time::Duration::from_secs(5);
        let pool = sidechat::store::read_pool(&url, 1, timeout).unwrap();
        let mut pooled = pool.get().unwrap();
        let mut plain = PgConnection::establish(&url).unwrap();
        let mut filler = PgConnection::establish(&url).unwrap();
        // What the statistics say of an empty table, at its worst; and no autovacuum
        // analysing it behind the test's back, which would drop the kept plans.
        diesel::sql_query("ALTER TABLE messages SET (autovacuum_enabled = off)")
            .execute(&mut filler)
            .unwrap();
        diesel::sql_query("ANALYZE messages").execute(&mut filler).unwrap();
        for conn in [&mut *pooled, &mut plain] {
            diesel::sql_query(format!(
                "PREPARE trap(text[], text[], bigint[]) AS {}",
                sidechat::store::receipts::MARK_ALL
            ))
            .execute(conn)
            .unwrap();
            // The plan made now, on the empty table, is the one kept.
            diesel::sql_query("SET plan_cache_mode = force_generic_plan")
                .execute(conn)
                .unwrap();
            let _ = explain_execute(conn);
        }
        diesel::sql_query(
            "INSERT INTO messages (topic, sender_id, recipient_id, body, kind, status, meta) \
             SELECT 'chat:a:b' || (n % 1000), 'a', 'b' || (n % 1000), 'x', 'user', 'complete', '{}' \
             FROM generate_series(1, 200000) n",
        )
        .execute(&mut filler)
        .unwrap();
        let kept = explain_execute(&mut pooled);
        assert!(
            kept.contains("Index Scan using messages_unread_live_idx"),
            "read pool: {kept}"
        );
        assert!(!kept.contains("Seq Scan on messages"), "read pool: {kept}");
        let stale = explain_execute(&mut plain);
        assert!(
            stale.contains("Seq Scan on messages"),
            "the trap this guards against, on default settings: {stale}"
        );
    })
    .await
    .unwrap();
}

/// The hot statements stay prepared on their connection: Postgres parses and plans them
/// once, not at every call.
#[tokio::test]
async fn the_hot_statements_stay_prepared_on_their_connection() {
    use sidechat::store::receipts::{Receipt, mark_all};
    let app = spawn_app().await;
    let url = app.db_url.clone();
    tokio::task::spawn_blocking(move || {
        let timeout = std::time::Duration::from_secs(5);
        let pool = sidechat::store::read_pool(&url, 1, timeout).unwrap();
        let mut conn = pool.get().unwrap();
        for up_to in 1..=3 {
            let receipt = Receipt {
                topic: "chat:a:b".into(),
                reader: "b".into(),
                up_to,
            };
            mark_all(&mut conn, &[receipt]).unwrap();
            sidechat::store::messages::unread_summary(&mut conn, "b").unwrap();
            let page = sidechat::store::messages::Page {
                before: None,
                after: None,
                limit: 50,
            };
            sidechat::store::messages::history(&mut conn, "chat:a:b", page).unwrap();
            // The other statement of the same call: each is cached under its own name.
            let later = sidechat::store::messages::Page {
                after: Some(0),
                ..page
            };
            sidechat::store::messages::history(&mut conn, "chat:a:b", later).unwrap();
        }
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut prepared = |pattern: &str| {
            diesel::sql_query(
                "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE $1",
            )
            .bind::<diesel::sql_types::Text, _>(pattern)
            .get_result::<Count>(&mut *conn)
            .unwrap()
            .n
        };
        assert_eq!(
            prepared("%unnest($1::text[], $2::text[], $3::bigint[])%"),
            1,
            "receipts"
        );
        assert_eq!(prepared("WITH direct AS%"), 1, "the login summary");
        assert_eq!(
            prepared("SELECT * FROM messages WHERE topic = $1%id < $2%"),
            1,
            "a history page"
        );
        assert_eq!(
            prepared("SELECT * FROM messages WHERE topic = $1%id > $2 AND id < $3%"),
            1,
            "a history page after a message"
        );
    })
    .await
    .unwrap();
}
