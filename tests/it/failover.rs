//! Postgres failover: a primary with a synchronous standby, the primary killed under
//! load and the standby promoted. `database.url` names both hosts with
//! `target_session_attrs=read-write`, and sidechat finds the new primary by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use diesel::{Connection, RunQueryDsl};
use serde_json::json;
use sidechat::dev::{ClusterOptions, PgCluster};

use crate::helpers::*;

/// Service back within this long after the promotion.
const BACK_WITHIN: Duration = Duration::from_secs(15);
/// Senders at once (so that commits are in flight when the primary dies), and messages
/// each.
const SENDERS: usize = 4;
const MESSAGES: usize = 30;
const CRASH_AFTER: usize = 40;

fn temp_dir(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sidechat-{what}-{}", uuid::Uuid::new_v4().simple()))
}

fn execute(url: &str, sql: &str) {
    let mut conn = diesel::PgConnection::establish(url).unwrap();
    diesel::sql_query(sql).execute(&mut conn).unwrap();
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn count(url: &str, sql: &str) -> i64 {
    let mut conn = diesel::PgConnection::establish(url).unwrap();
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n
}

#[tokio::test]
async fn the_primary_dies_under_load_the_standby_takes_over_and_nothing_acknowledged_is_lost() {
    // Durable settings (fsync, synchronous commit): what is promised rests on them.
    let mut primary = PgCluster::start(ClusterOptions {
        data_dir: temp_dir("primary"),
        fast_unsafe: false,
        remove_on_stop: true,
        settings: Vec::new(),
    })
    .unwrap();
    primary.create_database("sidechat").unwrap();
    let standby = PgCluster::standby_of(&primary, temp_dir("standby"), true).unwrap();
    let admin = primary.url("postgres");
    execute(&admin, "ALTER SYSTEM SET synchronous_standby_names = '*'");
    execute(&admin, "SELECT pg_reload_conf()");
    eventually("the standby is synchronous", || async {
        count(
            &admin,
            "SELECT count(*) AS n FROM pg_stat_replication WHERE sync_state = 'sync'",
        ) == 1
    })
    .await;

    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/sidechat?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let app = spawn_app_on(url.clone(), |_| {}).await;
    // Senders, each message resent with its client_ref until acknowledged, as a client
    // that got `unavailable` may.
    let acked_count = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for n in 0..SENDERS {
        let user = format!("s{n}");
        let topic = format!("chat:bob:{user}");
        let mut client = app.connect(&user).await;
        client.join_ok(&topic, json!({})).await;
        let (acked_count, refused) = (acked_count.clone(), refused.clone());
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..MESSAGES {
                loop {
                    let reply = client
                        .push(
                            &topic,
                            "new_msg",
                            json!({"body": format!("m{i}"), "client_ref": format!("r{i}")}),
                        )
                        .await;
                    if reply["status"] == "ok" {
                        acked.push((
                            reply["response"]["message"]["id"].as_i64().unwrap(),
                            Instant::now(),
                        ));
                        acked_count.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    assert_eq!(reply["response"]["reason"], "unavailable", "{reply}");
                    refused.fetch_add(1, Ordering::SeqCst);
                    // A client's own pause before it resends.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            acked
        }));
    }

    eventually("the first messages are acknowledged", || async {
        acked_count.load(Ordering::SeqCst) >= CRASH_AFTER
    })
    .await;
    primary.crash();
    eventually("sends are refused while there is no primary", || async {
        refused.load(Ordering::SeqCst) >= 1
    })
    .await;
    let ready = http_get(app.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503, "/readyz reports the gap");

    standby.promote().unwrap();
    let promoted = Instant::now();
    let mut acked = Vec::new();
    for sender in senders {
        acked.extend(
            tokio::time::timeout(Duration::from_secs(60), sender)
                .await
                .expect("every message acknowledged in the end")
                .unwrap(),
        );
    }
    let first_after = acked
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| *at > promoted)
        .min()
        .expect("acknowledgements after the promotion");
    eprintln!(
        "failover: {} sends refused; first ack {:?} after the promotion",
        refused.load(Ordering::SeqCst),
        first_after.saturating_duration_since(promoted)
    );
    assert!(
        first_after.saturating_duration_since(promoted) < BACK_WITHIN,
        "service back {:?} after the promotion",
        first_after.saturating_duration_since(promoted)
    );
    eventually("/readyz is 200 again", || async {
        http_get(app.http("/readyz")).await.unwrap().status() == 200
    })
    .await;

    // On the new primary: every acknowledged message, each once, nothing else.
    let new_primary = standby.url("sidechat");
    let total = (SENDERS * MESSAGES) as i64;
    assert_eq!(acked.len() as i64, total);
    assert_eq!(
        count(&new_primary, "SELECT count(*) AS n FROM messages"),
        total
    );
    assert_eq!(
        count(
            &new_primary,
            "SELECT count(*) AS n FROM (SELECT DISTINCT sender_id, client_ref FROM messages) d"
        ),
        total,
        "no resend stored twice"
    );
    let ids = acked
        .iter()
        .map(|(id, _)| id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        count(
            &new_primary,
            &format!("SELECT count(*) AS n FROM messages WHERE id IN ({ids})")
        ),
        total,
        "every acknowledged id is there"
    );
}
