//! `broker.kind = "redis-cluster"`: three replicas over a six-node Redis Cluster (three
//! masters, three replicas) made with `redis-cli --cluster create` on loopback.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::{Value, json};
use sidechat::dev::redis::{self, ClusterShape, RedisCluster};
use sidechat::settings::Secret;
use tokio::sync::watch;

use crate::helpers::*;

/// Six `redis-server`s in cluster mode (three masters, a replica each), with what the
/// tests do to them.
pub struct OwnRedisCluster(RedisCluster);

impl OwnRedisCluster {
    pub fn start() -> OwnRedisCluster {
        OwnRedisCluster(
            RedisCluster::start(ClusterShape {
                masters: 3,
                replicas_per_master: 1,
                // A failover within seconds.
                node_timeout: Duration::from_secs(1),
            })
            .expect("a Redis Cluster"),
        )
    }

    /// Each live node's port and the sharded channels it has subscribers on.
    fn shard_channels(&self) -> Vec<(u16, Vec<String>)> {
        (self.0.ports().into_iter())
            .map(|port| {
                let channels = Self::cli(port, &["pubsub", "shardchannels"])
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                (port, channels)
            })
            .collect()
    }

    /// `redis-cli -p <port> <args>`'s output.
    fn cli(port: u16, args: &[&str]) -> String {
        redis::cli(port, args).expect("redis-cli")
    }

    /// Moves the slot of `key` from the master `from` to the master `to`, keys and all,
    /// as `redis-cli --cluster reshard` does for each slot it moves.
    fn move_slot(&self, key: &str, from: u16, to: u16) {
        let slot = Self::cli(from, &["cluster", "keyslot", key]);
        let (from_id, to_id) = (
            Self::cli(from, &["cluster", "myid"]),
            Self::cli(to, &["cluster", "myid"]),
        );
        Self::cli(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        Self::cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        let keys = Self::cli(from, &["cluster", "getkeysinslot", &slot, "1000"]);
        for key in keys.lines().filter(|k| !k.is_empty()) {
            let to_port = to.to_string();
            let moved = Self::cli(from, &["migrate", "127.0.0.1", &to_port, key, "0", "5000"]);
            assert_eq!(moved, "OK", "migrate {key}");
        }
        for port in self.0.ports() {
            Self::cli(port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
    }

    /// The ports of the nodes that are masters now.
    fn masters(&self) -> Vec<u16> {
        self.0.masters().expect("the masters")
    }

    /// Kills a node as a crash would (SIGKILL).
    fn kill(&mut self, port: u16) {
        self.0.kill(port).expect("kill");
    }

    /// `count` sidechat replicas whose broker is this cluster.
    pub async fn replicas(
        &self,
        count: usize,
        customize: impl Fn(&mut sidechat::settings::Settings),
    ) -> Vec<TestApp> {
        let seeds: Vec<Secret> = self.0.seeds().into_iter().map(Secret::new).collect();
        spawn_replicas(count, |s| {
            s.broker.kind = "redis-cluster".into();
            s.broker.redis_urls = seeds.clone();
            customize(s);
        })
        .await
    }
}

#[tokio::test]
async fn three_replicas_on_a_cluster_deliver_share_presence_and_notify() {
    let cluster = OwnRedisCluster::start();
    let replicas = cluster.replicas(3, |_| {}).await;
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
    let channels: usize = per_node.iter().map(|(_, channels)| channels.len()).sum();
    assert!(channels >= 12, "{per_node:?}");

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

/// The ids of the messages sent, by topic.
type Sent = HashMap<String, HashSet<i64>>;

/// A user on `replica` following one chat: every message id it has seen, live or read
/// back with `after` when a 1001 made it rejoin.
struct Follower {
    topic: String,
    url: String,
    client: Client,
    seen: HashSet<i64>,
    rejoins: u32,
}

impl Follower {
    async fn join(app: &TestApp, user: &str, topic: &str) -> Follower {
        let url = app.socket_url(&hmac_token(user, 3600));
        let mut client = app.connect_with_token(&hmac_token(user, 3600)).await;
        client.join_ok(topic, json!({})).await;
        Follower {
            topic: topic.to_owned(),
            url,
            client,
            seen: HashSet::new(),
            rejoins: 0,
        }
    }

    /// Reads until every id in `expected` (once known) was seen.
    async fn follow(mut self, mut expected: watch::Receiver<Option<Sent>>) -> Follower {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        loop {
            if heartbeat.tick().now_or_never().is_some() {
                let beat = json!([null, "hb", "phoenix", "heartbeat", {}]);
                self.client.send_text(beat.to_string()).await;
            }
            if let Some(sent) = &*expected.borrow_and_update() {
                let all = &sent[&self.topic];
                if all.is_subset(&self.seen) {
                    return self;
                }
                let missing: Vec<_> = all.difference(&self.seen).collect();
                assert!(
                    Instant::now() < deadline,
                    "{}: never saw {missing:?}",
                    self.topic
                );
            }
            match self.client.next_frame(Duration::from_millis(100)).await {
                Some(Ok(frame)) if frame[2] == json!(self.topic) && frame[3] == "new_msg" => {
                    self.seen.insert(frame[4]["id"].as_i64().expect("an id"));
                }
                None | Some(Ok(_)) => {}
                Some(Err(Closed::Code(1001))) => self.rejoin().await,
                Some(Err(closed)) => panic!("{}: closed with {closed:?}", self.topic),
            }
        }
    }

    /// Reconnects and joins with `after` the newest id seen, as the official client does.
    async fn rejoin(&mut self) {
        self.rejoins += 1;
        'again: loop {
            let (ws, _) = tokio_tungstenite::connect_async(self.url.as_str())
                .await
                .expect("reconnect");
            self.client = Client::from_socket(ws);
            let after = self.seen.iter().max().copied().unwrap_or(0);
            let join = json!(["r", "r", self.topic, "phx_join", {"after": after, "limit": 500}]);
            self.client.send_text(join.to_string()).await;
            loop {
                match self.client.next_frame(WAIT).await.expect("a join reply") {
                    Ok(frame) if frame[1] == "r" && frame[3] == "phx_reply" => {
                        assert_eq!(frame[4]["status"], "ok", "{frame}");
                        let missed = frame[4]["response"]["messages"].as_array().unwrap();
                        self.seen
                            .extend(missed.iter().map(|m| m["id"].as_i64().unwrap()));
                        return;
                    }
                    Ok(frame) => self.client.push_back(frame),
                    Err(Closed::Code(1001)) => continue 'again,
                    Err(closed) => panic!("{}: closed with {closed:?}", self.topic),
                }
            }
        }
    }
}

/// The topic a sharded channel (`{prefix:topic:<topic>}`) carries.
fn topic_of(channel: &str) -> String {
    let inner = channel.trim_start_matches('{').trim_end_matches('}');
    inner
        .split_once(":topic:")
        .expect("a sidechat channel")
        .1
        .to_owned()
}

/// What `user` sees of `topic`'s presence, joining it afresh on `app`.
async fn presence_seen_by(app: &TestApp, user: &str, topic: &str) -> Value {
    let mut client = app.connect(user).await;
    client.join_ok(topic, json!({})).await;
    client.expect_event(topic, "presence_state").await
}

#[tokio::test]
async fn a_master_killed_under_load_fails_over_and_only_its_topics_rejoin() {
    const PEERS: usize = 12;
    const MESSAGES: usize = 360;
    let mut cluster = OwnRedisCluster::start();
    // The presence checks at the end join again and again.
    let replicas = cluster.replicas(3, |s| s.limits.joins_burst = 1000).await;
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
    let topics: Vec<String> = (0..PEERS).map(|n| format!("chat:alice:u{n}")).collect();

    // Alice is present in every chat from b; each peer follows its chat from c.
    let mut alice = b.connect("alice").await;
    let (expected_tx, expected) = watch::channel(None::<Sent>);
    let mut following = Vec::new();
    for (n, topic) in topics.iter().enumerate() {
        alice.join_ok(topic, json!({})).await;
        let follower = Follower::join(c, &format!("u{n}"), topic).await;
        following.push(tokio::spawn(follower.follow(expected.clone())));
    }

    // The master carrying most of the topics is the one to die.
    let (victim, victim_channels) = cluster
        .shard_channels()
        .into_iter()
        .max_by_key(|(_, channels)| channels.len())
        .expect("nodes");
    let doomed: HashSet<String> = victim_channels.iter().map(|c| topic_of(c)).collect();
    assert!(!doomed.is_empty() && doomed.len() < PEERS, "{doomed:?}");

    // Messages from the host API on a, round robin, paced; the master dies a third in.
    let mut sent = Sent::new();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    let mut killed_at = None;
    for n in 0..MESSAGES {
        pace.tick().await;
        if n == MESSAGES / 3 {
            cluster.kill(victim);
            killed_at = Some(Instant::now());
        }
        let topic = &topics[n % PEERS];
        let message = a.post_message(topic, "alice", &format!("m{n}")).await;
        let id = message["id"].as_i64().expect("an id");
        sent.entry(topic.clone()).or_default().insert(id);
    }

    // Every message reaches its follower, live or read back after a rejoin.
    expected_tx.send_replace(Some(sent.clone()));
    for handle in following {
        let follower = handle.await.expect("the follower held");
        let mine = &sent[&follower.topic];
        assert!(mine.is_subset(&follower.seen), "{}", follower.topic);
        // Only the topics whose shard failed over rejoined: the others lost nothing.
        if doomed.contains(&follower.topic) {
            assert!(follower.rejoins >= 1, "{} was not told", follower.topic);
        } else {
            assert_eq!(follower.rejoins, 0, "{} rejoined", follower.topic);
        }
    }
    let healed_in = killed_at.expect("killed").elapsed();
    eprintln!("master killed; all delivered {healed_in:?} later");

    // Every replica's broker is connected again; the topics ride the promoted master.
    for replica in &replicas {
        eventually("the broker reconnected", || async {
            replica.metric("sidechat_broker_connected").await == Some(1.0)
        })
        .await;
    }
    // What an operator sees: c resynced at least the failed shard's topics it carries.
    let resynced = c
        .metric("sidechat_broker_resyncs_total")
        .await
        .unwrap_or(0.0);
    assert!(resynced >= doomed.len() as f64, "{resynced} resyncs");

    // Presence converges: alice's socket on b was told to rejoin (it was in the failed
    // shard's chats), so she leaves them all; back, she is seen again, once.
    assert_eq!(alice.expect_close().await, Closed::Code(1001));
    let probe = topics
        .iter()
        .find(|t| doomed.contains(*t))
        .expect("a failed-over topic");
    let peer = probe.rsplit(':').next().expect("the peer");
    eventually("alice left the presence", || async {
        let seen = presence_seen_by(c, peer, probe).await;
        seen.get("alice").is_none()
    })
    .await;
    let mut alice = b.connect("alice").await;
    alice.join_ok(probe, json!({})).await;
    eventually("alice is back in the presence, once", || async {
        let seen = presence_seen_by(c, peer, probe).await;
        seen["alice"]["metas"].as_array().map(Vec::len) == Some(1)
    })
    .await;
}

#[tokio::test]
async fn a_slot_moved_by_resharding_is_followed_and_only_its_topic_rejoins() {
    const MESSAGES: usize = 60;
    let cluster = OwnRedisCluster::start();
    let replicas = cluster.replicas(2, |_| {}).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let prefix = a.redis_prefix.clone().expect("a prefix");
    let (moving, staying) = ("chat:alice:u0", "chat:alice:u1");
    let channel = format!("{{{prefix}:topic:{moving}}}");
    let (expected_tx, expected) = watch::channel(None::<Sent>);
    let mut following = Vec::new();
    for (n, topic) in [moving, staying].iter().enumerate() {
        let follower = Follower::join(b, &format!("u{n}"), topic).await;
        following.push(tokio::spawn(follower.follow(expected.clone())));
    }
    let masters = cluster.masters();
    let from = *masters
        .iter()
        .find(|port| OwnRedisCluster::cli(**port, &["pubsub", "shardchannels"]).contains(&channel))
        .expect("the topic's master");
    let to = *masters
        .iter()
        .find(|port| **port != from)
        .expect("another master");

    let mut sent = Sent::new();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    for n in 0..MESSAGES {
        pace.tick().await;
        if n == MESSAGES / 3 {
            cluster.move_slot(&channel, from, to);
        }
        let topic = [moving, staying][n % 2];
        let message = a.post_message(topic, "alice", &format!("m{n}")).await;
        let id = message["id"].as_i64().expect("an id");
        sent.entry(topic.to_owned()).or_default().insert(id);
    }
    expected_tx.send_replace(Some(sent.clone()));
    let mut followers = Vec::new();
    for handle in following {
        let follower = handle.await.expect("the follower held");
        assert!(sent[&follower.topic].is_subset(&follower.seen));
        if follower.topic == moving {
            assert!(follower.rejoins >= 1, "the moved topic was not told");
        } else {
            assert_eq!(follower.rejoins, 0, "{} rejoined", follower.topic);
        }
        followers.push(follower); // still joined
    }
    // The subscription followed the slot.
    eventually("subscribed on the new master", || async {
        OwnRedisCluster::cli(to, &["pubsub", "shardchannels"]).contains(&channel)
    })
    .await;
}
