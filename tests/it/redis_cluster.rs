//! `broker.kind = "redis-cluster"`: three replicas over a six-node Redis Cluster (three
//! masters, three replicas) made with `redis-cli --cluster create` on loopback.

use std::process::{Child, Command, Stdio};

use serde_json::json;
use sidechat::settings::Secret;

use crate::helpers::*;

/// Six `redis-server`s in cluster mode, joined by `redis-cli --cluster create`.
pub struct OwnRedisCluster {
    nodes: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

impl OwnRedisCluster {
    pub fn start() -> OwnRedisCluster {
        let dir =
            std::env::temp_dir().join(format!("sidechat-rc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .arg("--cluster-config-file")
                .arg(dir.join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(&dir)
                .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server");
            nodes.push((port, child));
        }
        for (port, _) in &nodes {
            let deadline = std::time::Instant::now() + WAIT;
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server {port}");
                std::thread::yield_now();
            }
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = OwnRedisCluster { nodes, dir };
        cluster.wait_until_ok();
        cluster
    }

    /// Every live node says `cluster_state:ok`.
    fn wait_until_ok(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        for (port, _) in &self.nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the cluster is not ok on {port}"
                );
                std::thread::yield_now();
            }
        }
    }

    /// How many sharded channels each node has subscribers on.
    fn shard_channels(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|(port, _)| {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "pubsub", "shardchannels"])
                    .output()
                    .expect("redis-cli");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count()
            })
            .collect()
    }

    /// Seed URLs: two nodes, as an operator would give.
    pub fn seeds(&self) -> Vec<Secret> {
        self.nodes
            .iter()
            .take(2)
            .map(|(port, _)| Secret::new(format!("redis://127.0.0.1:{port}/")))
            .collect()
    }
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn three_replicas_on_a_cluster_deliver_share_presence_and_notify() {
    let cluster = OwnRedisCluster::start();
    let seeds = cluster.seeds();
    let replicas = spawn_replicas(3, |s| {
        s.broker.kind = "redis-cluster".into();
        s.broker.redis_urls = seeds.clone();
    })
    .await;
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
    for replica in &replicas {
        assert_eq!(
            replica
                .metric(r#"sidechat_broker{kind="redis-cluster"}"#)
                .await,
            Some(1.0)
        );
    }

    // Many topics, so that every shard carries some: each message crosses replicas.
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    for n in 0..12 {
        let topic = format!("chat:alice:u{n}");
        let mut peer = c.connect(&format!("u{n}")).await;
        peer.join_ok(&topic, json!({})).await;
        alice.join_ok(&topic, json!({})).await;
        let sent = alice.send_msg(&topic, &format!("to u{n}")).await;
        assert_eq!(peer.expect_event(&topic, "new_msg").await, sent);
        // Presence: the peer (on c) hears alice (on a) arrive.
        peer.expect(|f| {
            f[2] == json!(topic) && f[3] == "presence_diff" && f[4]["joins"].get("alice").is_some()
        })
        .await;
    }

    // The topics ride sharded pub/sub: each is a shard channel on the cluster.
    let per_node = cluster.shard_channels();
    assert!(per_node.iter().sum::<usize>() >= 12, "{per_node:?}");

    // Presence across replicas: bob joins on b, alice on a sees him arrive.
    alice.join_ok("chat:alice:bob", json!({})).await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    alice
        .expect(|f| {
            f[2] == "chat:alice:bob"
                && f[3] == "presence_diff"
                && f[4]["joins"].get("bob").is_some()
        })
        .await;

    // A lobby notification crosses replicas: carol is joined to her lobby on c only.
    let mut carol = c.connect("carol").await;
    carol.join_ok("user:carol", json!({})).await;
    alice.join_ok("chat:alice:carol", json!({})).await;
    let sent = alice.send_msg("chat:alice:carol", "are you there?").await;
    carol.expect_notification("user:carol", &sent).await;
}
