//! Faults of the parts around the service: Postgres stops and comes back; Redis
//! restarts. The service keeps its sockets, refuses clearly while a part is gone, and
//! recovers by itself.

use std::time::Duration;

use serde_json::json;
use sidechat::dev::redis::RedisServer;
use sidechat::dev::{ClusterOptions, PgCluster};
use sidechat::settings::Secret;

use crate::helpers::*;

/// Pushes `new_msg` until it is stored: each push is one attempt of the writer's
/// reconnection, answered at once while the database is away.
async fn send_once_back(client: &mut Client, topic: &str, client_ref: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = client
            .push(
                topic,
                "new_msg",
                json!({"body": client_ref, "client_ref": client_ref}),
            )
            .await;
        if reply["status"] == "ok" {
            return reply["response"]["message"].clone();
        }
        assert_eq!(reply["response"]["reason"], "unavailable", "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not back within the wait"
        );
    }
}

/// A Postgres of the test's own (stopping the shared one would fail the others), a
/// server on it, and alice in her chat with bob, one message stored.
async fn alice_on_own_postgres(name: &str) -> (PgCluster, TestApp, Client) {
    let data_dir =
        std::env::temp_dir().join(format!("sidechat-{name}-{}", uuid::Uuid::new_v4().simple()));
    let pg = PgCluster::start(ClusterOptions {
        data_dir,
        fast_unsafe: true,
        remove_on_stop: true,
        settings: Vec::new(),
    })
    .unwrap();
    pg.create_database("sidechat").unwrap();
    let db_url = pg.url("sidechat");
    let app = spawn_app_with(|s| s.database.url = Secret::new(db_url.clone())).await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.send_msg("chat:alice:bob", "before").await;
    (pg, app, alice)
}

#[tokio::test]
async fn postgres_stopping_and_returning_needs_no_restart_and_no_reconnect() {
    let (mut pg, app, mut alice) = alice_on_own_postgres("outage").await;

    pg.pause();
    for body in ["during-1", "during-2"] {
        let reply = alice
            .push("chat:alice:bob", "new_msg", json!({"body": body}))
            .await;
        assert_eq!(reply["response"]["reason"], "unavailable", "{reply}");
    }
    let ready = http_get(app.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    // Presence and typing need no database: the socket is still useful.
    alice
        .push("chat:alice:bob", "typing", json!({"typing": true}))
        .await;

    pg.resume().unwrap();
    let after = send_once_back(&mut alice, "chat:alice:bob", "after").await;
    assert_eq!(after["body"], "after");
    let ready = http_get(app.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let bodies = alice.history_bodies("chat:alice:bob").await;
    assert_eq!(
        bodies,
        ["before", "after"],
        "nothing from the outage was stored"
    );
    drop(app);
    pg.stop();
}

/// While alive, loopback drops every packet sent to `port`: its server looks like a host
/// that vanished without closing its connections (its machine died, the network split).
/// Nothing answers, nothing resets.
struct Partition {
    port: String,
}

/// Marks this test's iptables rules, so a run that was killed cannot leave one behind
/// for the next run to trip over.
const PARTITION_TAG: &str = "sidechat-partition-test";

impl Partition {
    fn cut(port: u16) -> Partition {
        Self::remove_stale();
        let partition = Partition {
            port: port.to_string(),
        };
        assert!(
            partition.iptables("-I"),
            "iptables could not drop packets (this test needs root with NET_ADMIN)"
        );
        partition
    }

    fn iptables(&self, action: &str) -> bool {
        std::process::Command::new("iptables")
            .args([action, "INPUT", "-p", "tcp", "--dport", &self.port])
            .args(["-m", "comment", "--comment", PARTITION_TAG, "-j", "DROP"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Rules an earlier, killed run left.
    fn remove_stale() {
        let Ok(listed) = std::process::Command::new("iptables")
            .args(["-S", "INPUT"])
            .output()
        else {
            return;
        };
        for rule in String::from_utf8_lossy(&listed.stdout).lines() {
            if let Some(spec) = rule
                .strip_prefix("-A ")
                .filter(|r| r.contains(PARTITION_TAG))
            {
                let _ = std::process::Command::new("iptables")
                    .arg("-D")
                    .args(spec.split_whitespace())
                    .status();
            }
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.iptables("-D");
    }
}

/// How long a send may wait on a Postgres that stopped answering before it is refused:
/// the connection is given up after about 10 s without an answer (TCP keepalives and
/// `tcp_user_timeout`, added to the URL), and a new one after `connect_timeout_s`.
const GIVEN_UP_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_postgres_that_stops_answering_is_given_up_on_and_found_again() {
    let (mut pg, app, mut alice) = alice_on_own_postgres("partition").await;

    let partition = Partition::cut(pg.port());
    let cut_at = tokio::time::Instant::now();
    // The writer's connection is open, and its next statement is never answered.
    let frame = json!(["1", "during", "chat:alice:bob", "new_msg", {"body": "during"}]);
    alice.send_text(frame.to_string()).await;
    let reply = loop {
        match alice.next_frame(Duration::from_secs(1)).await {
            Some(Ok(f)) if f[1] == "during" => break f,
            Some(Ok(_)) => {}
            Some(Err(closed)) => panic!("socket closed: {closed:?}"),
            None => {}
        }
        assert!(
            cut_at.elapsed() < GIVEN_UP_WITHIN,
            "a send waited {GIVEN_UP_WITHIN:?} on a Postgres that does not answer"
        );
    };
    assert_eq!(reply[4]["response"]["reason"], "unavailable", "{reply}");
    // Readiness says so at once, rather than when the check's connection is given up.
    let asked = tokio::time::Instant::now();
    let ready = http_get(app.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(asked.elapsed() < Duration::from_secs(5), "/readyz hung");

    drop(partition);
    let after = send_once_back(&mut alice, "chat:alice:bob", "after").await;
    assert_eq!(after["body"], "after");
    let bodies = alice.history_bodies("chat:alice:bob").await;
    assert_eq!(
        bodies,
        ["before", "after"],
        "the refused send was not stored"
    );
    drop(app);
    pg.stop();
}

/// Waits until every replica's `/readyz` answers `wanted` (200 once its broker has
/// subscribed again, 503 while it is away).
async fn all_readyz(replicas: &[TestApp], wanted: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    for replica in replicas {
        loop {
            let status = http_get(replica.http("/readyz")).await.unwrap().status();
            if status == wanted {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a replica stayed {status}"
            );
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test]
async fn a_redis_restart_heals_by_itself_and_replicas_keep_serving_meanwhile() {
    let port = free_port();
    let redis = RedisServer::start(Some(port)).expect("redis-server");
    let redis_url = format!("redis://127.0.0.1:{port}/");
    let replicas = spawn_replicas(2, |s| s.broker.redis_url = Secret::new(redis_url.clone())).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let mut alice = a.connect("alice").await;
    let mut carol = a.connect("carol").await;
    let mut bob = b.connect("bob").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.join_ok("chat:alice:carol", json!({})).await;
    carol.join_ok("chat:alice:carol", json!({})).await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let first = alice.send_msg("chat:alice:bob", "across").await;
    assert_eq!(bob.expect_event("chat:alice:bob", "new_msg").await, first);

    assert_eq!(a.metric("sidechat_broker{kind=\"redis\"}").await, Some(1.0));
    assert_eq!(a.metric("sidechat_broker_connected").await, Some(1.0));
    drop(redis);
    all_readyz(&replicas, 503).await;
    // What the SidechatBrokerDisconnected and SidechatNotReady alerts watch.
    assert_eq!(a.metric("sidechat_broker_connected").await, Some(0.0));
    assert_eq!(a.metric("sidechat_ready").await, Some(0.0));
    // While Redis is away: messages are stored, and delivered within a replica.
    let local = alice.send_msg("chat:alice:carol", "same replica").await;
    assert_eq!(
        carol.expect_event("chat:alice:carol", "new_msg").await,
        local
    );
    let stored = alice.send_msg("chat:alice:bob", "while away").await;
    assert!(stored["id"].as_i64().unwrap() > first["id"].as_i64().unwrap());

    let _redis = RedisServer::start(Some(port)).expect("redis-server");
    all_readyz(&replicas, 200).await;
    assert_eq!(b.metric("sidechat_broker_connected").await, Some(1.0));
    assert_eq!(b.metric("sidechat_ready").await, Some(1.0));
    // Events published meanwhile were lost between replicas (pub/sub is at most once),
    // so every socket on a topic the broker carries is told so: 1001, and its client
    // rejoins with `after`, which reads back what the broker dropped.
    assert_eq!(bob.expect_close().await, Closed::Code(1001));
    assert_eq!(alice.expect_close().await, Closed::Code(1001));
    for replica in [a, b] {
        let resynced = replica.metric("sidechat_broker_resyncs_total").await;
        assert!(resynced >= Some(1.0), "{resynced:?}");
    }
    let mut bob = b.connect("bob").await;
    let rejoined = bob
        .join_ok("chat:alice:bob", json!({"after": first["id"]}))
        .await;
    assert_eq!(rejoined["messages"], json!([stored]));
    // What comes after the heal crosses replicas again.
    let mut alice = a.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let again = alice.send_msg("chat:alice:bob", "across again").await;
    assert_eq!(bob.expect_event("chat:alice:bob", "new_msg").await, again);
}
