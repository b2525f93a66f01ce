//! Migrations apply, revert and apply again to the same schema.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use sidechat::store::MIGRATIONS;

use crate::helpers::*;

fn schema(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query(
        "SELECT table_name || '.' || column_name || ':' || data_type || ':' || is_nullable \
         || ':' || coalesce(column_default, '') AS line \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name <> '__diesel_schema_migrations' \
         UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' \
         AND tablename <> '__diesel_schema_migrations' \
         ORDER BY 1",
    )
    .load::<Line>(conn)
    .unwrap()
    .into_iter()
    .map(|l| l.line)
    .collect()
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = diesel::sql_types::Text)]
    line: String,
}

#[tokio::test]
async fn migrations_apply_revert_and_apply_again_to_the_same_schema() {
    let url = fresh_database();
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        let first = schema(&mut conn);
        assert!(
            first
                .iter()
                .any(|l| l.starts_with("messages.is_delivered:boolean")),
            "{first:#?}"
        );
        assert!(first.iter().any(|l| l.contains("messages_unread_live_idx")));
        conn.revert_all_migrations(MIGRATIONS).unwrap();
        assert!(schema(&mut conn).is_empty());
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        assert_eq!(schema(&mut conn), first);
    })
    .await
    .unwrap();
}

/// Replicas of a deployment start together and each runs the migrations at start-up:
/// they take turns, and together apply each migration once.
#[tokio::test]
async fn replicas_migrating_at_once_take_turns() {
    let url = fresh_database();
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                sidechat::store::run_migrations(&mut conn)
            })
        })
        .collect();
    let applied: Vec<usize> = replicas
        .into_iter()
        .map(|r| r.join().unwrap().expect("every replica starts"))
        .collect();
    assert_eq!(
        applied.iter().sum::<usize>(),
        diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
            .unwrap()
            .len(),
        "{applied:?}"
    );
}

/// Runs every migration before the one whose name ends with `name`.
fn migrate_up_to(conn: &mut PgConnection, name: &str) {
    while !conn
        .pending_migrations(MIGRATIONS)
        .unwrap()
        .first()
        .is_some_and(|m| m.name().to_string().ends_with(name))
    {
        conn.run_next_migration(MIGRATIONS).unwrap();
    }
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Listed {
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    topic: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    last_message_id: i64,
}

/// An upgraded deployment shows the conversations it had before the list existed.
#[tokio::test]
async fn the_conversation_list_is_backfilled_from_existing_messages() {
    let url = fresh_database();
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        migrate_up_to(&mut conn, "_conversation_list");
        conn.batch_execute(
            "INSERT INTO rooms (id, name) VALUES ('club', 'Club'), ('empty', 'Empty'); \
             INSERT INTO room_members (room_id, user_id) VALUES ('club', 'a'), ('empty', 'a'); \
             INSERT INTO messages (id, topic, sender_id, recipient_id, body) VALUES \
               (1, 'chat:a:b', 'a', 'b', 'one'), \
               (2, 'chat:a:b', 'b', 'a', 'two'), \
               (3, 'support:c', 'c', NULL, 'help'), \
               (4, 'room:club', 'a', NULL, 'hi club'), \
               (5, 'chat:a:d', 'a', 'd', 'gone'); \
             UPDATE messages SET deleted_at = now() WHERE id = 5;",
        )
        .unwrap();
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        let listed: Vec<Listed> = diesel::sql_query(
            "SELECT m.user_id, m.topic, c.last_message_id FROM conversation_members m \
             JOIN conversations c ON c.topic = m.topic ORDER BY 1, 2",
        )
        .load(&mut conn)
        .unwrap();
        let row = |user: &str, topic: &str, id: i64| Listed {
            user_id: user.into(),
            topic: topic.into(),
            last_message_id: id,
        };
        assert_eq!(
            listed,
            [
                row("a", "chat:a:b", 2),
                row("b", "chat:a:b", 2),
                row("c", "support:c", 3)
            ],
            "a chat with nothing live is not listed"
        );
        let rooms: Vec<Listed> = diesel::sql_query(
            "SELECT id AS user_id, name AS topic, coalesce(last_message_id, 0) AS last_message_id \
             FROM rooms ORDER BY id",
        )
        .load(&mut conn)
        .unwrap();
        assert_eq!(rooms, [row("club", "Club", 4), row("empty", "Empty", 0)]);
    })
    .await
    .unwrap();
}

/// An upgraded deployment's messages carry the reactions they had before summaries.
#[tokio::test]
async fn reaction_summaries_are_backfilled_from_existing_reactions() {
    let url = fresh_database();
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        migrate_up_to(&mut conn, "_reaction_summaries");
        conn.batch_execute(
            "INSERT INTO messages (id, topic, sender_id, recipient_id, body) VALUES \
               (1, 'chat:a:b', 'a', 'b', 'one'), (2, 'chat:a:b', 'b', 'a', 'two'); \
             INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES \
               (1, 'x', 'b', '2026-01-01T00:00:02Z'), (1, 'y', 'a', '2026-01-01T00:00:01Z'), \
               (1, 'x', 'a', '2026-01-01T00:00:03Z');",
        )
        .unwrap();
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        let summaries: Vec<Line> = diesel::sql_query(
            "SELECT id || ' ' || coalesce(reactions::text, 'null') AS line FROM messages \
             ORDER BY id",
        )
        .load(&mut conn)
        .unwrap();
        let lines: Vec<String> = summaries.into_iter().map(|l| l.line).collect();
        assert_eq!(
            lines,
            [
                r#"1 [{"count": 1, "emoji": "y", "users": ["a"]}, {"count": 2, "emoji": "x", "users": ["b", "a"]}]"#,
                "2 null"
            ],
            "in the order first used, users in the order they reacted"
        );
    })
    .await
    .unwrap();
}
