//! Migrations apply, revert and apply again to the same schema.

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
