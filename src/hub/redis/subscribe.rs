//! Receiving events from the other replicas: a pub/sub connection to one Redis, or
//! sharded subscriptions on a Redis Cluster. Pub/sub is at most once, so whenever a
//! subscription lapsed (a lost connection, a master that failed over, a slot that moved)
//! the topics it carried are resynced: their sockets rejoin with `after`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::shards::{Layout, Node};
use super::{Envelope, RECONNECT_AFTER, Shared};
use crate::hub::{HubEvent, RESYNC_EVENT};

/// Keeps one pub/sub connection subscribed to exactly the wanted topics, delivering
/// what arrives; reconnects and resubscribes after any failure. A delivered message
/// costs no look at the subscriptions: only a change of the wanted topics does, and
/// only for the topics that changed.
pub(super) async fn subscriber(shared: Arc<Shared>, client: redis::Client) {
    // Whether a connection was lost: every topic missed what was published meanwhile.
    let mut lost = false;
    loop {
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                let mut subscribed: HashSet<String> = HashSet::new();
                // A new connection carries nothing: every wanted topic is to add.
                let mut changes: Vec<(String, bool)> = (shared.take_all_wanted().into_iter())
                    .map(|topic| (topic, true))
                    .collect();
                'connected: loop {
                    let (mut add, mut drop) = (Vec::new(), Vec::new());
                    for (topic, wanted) in changes.drain(..) {
                        match (wanted, subscribed.contains(&topic)) {
                            (true, false) => add.push(topic),
                            (false, true) => drop.push(topic),
                            _ => {}
                        }
                    }
                    let channels = |topics: &[String]| -> Vec<String> {
                        topics.iter().map(|t| shared.channel(t)).collect()
                    };
                    if (!add.is_empty() && sink.subscribe(channels(&add)).await.is_err())
                        || (!drop.is_empty() && sink.unsubscribe(channels(&drop)).await.is_err())
                    {
                        break;
                    }
                    shared.set_active(&drop, false);
                    for topic in &drop {
                        subscribed.remove(topic);
                    }
                    shared.set_active(&add, true);
                    // After `set_active`: a join that gave up waiting before it marked
                    // its topic `unwaited`, under the same lock.
                    let unwaited: Vec<String> = {
                        let mut unwaited = shared.unwaited();
                        add.iter().filter_map(|t| unwaited.take(t)).collect()
                    };
                    shared.resync(unwaited.iter());
                    subscribed.extend(add);
                    if std::mem::take(&mut lost) {
                        shared.resync(subscribed.iter());
                    }
                    // Connected means events flow again: only once resubscribed.
                    shared.connected.store(true, Ordering::Relaxed);
                    loop {
                        tokio::select! {
                            _ = shared.wanted_changed.notified() => {
                                changes = shared.take_changes();
                                break;
                            }
                            message = stream.next() => match message {
                                Some(message) => deliver(&shared, message.get_payload_bytes()),
                                None => break 'connected,
                            },
                        }
                    }
                }
                log::warn!("redis: subscription connection lost; reconnecting");
            }
            Err(e) => log::warn!("redis: cannot subscribe: {e}"),
        }
        lost = true;
        shared.connected.store(false, Ordering::Relaxed);
        shared.active().clear();
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// How often the cluster subscriber reads the cluster's layout when nothing prompts
/// it: the longest a moved slot's topics go unheard.
const LAYOUT_EVERY: Duration = Duration::from_secs(1);

/// The redis crate's cluster client keeps sharded subscriptions badly through a
/// failover: it learns of a promoted master only when a command fails (a subscriber
/// sends none), it subscribes a node's channels again in one `SSUBSCRIBE`, which Redis
/// refuses (`CROSSSLOT`) when they span slots, and it rebuilds every connection when
/// one address is missing, dropping every subscription with it. So subscriptions ride
/// connections of our own, one per master, made with the crate's client from the
/// layout its cluster client reads (`CLUSTER SLOTS`); a lost connection or a moved
/// slot is a precise set of topics, which subscribe again, one channel per command,
/// and then tell their sockets to rejoin with `after`.
pub(super) async fn cluster_subscriber(
    shared: Arc<Shared>,
    mut cluster: ClusterConnection,
    seed: redis::ConnectionInfo,
) {
    let (push_tx, mut pushes) = mpsc::unbounded_channel::<(u64, PushInfo)>();
    let mut links: HashMap<Node, Link> = HashMap::new();
    let mut next_link = 0_u64;
    // Where each subscribed topic's channel is subscribed.
    let mut placed: HashMap<String, Node> = HashMap::new();
    // Wanted topics not subscribed yet (new, or lapsed, or refused): tried each pass.
    let mut pending: HashSet<String> = shared.take_all_wanted().into_iter().collect();
    // Our own `SUNSUBSCRIBE`s not yet confirmed, by connection and channel: any other
    // is the server's.
    let mut leaving: HashMap<(u64, String), usize> = HashMap::new();
    // Topics whose subscription lapsed: told to resync once subscribed again.
    let mut lapsed: HashSet<String> = HashSet::new();
    let mut layout = Layout::default();
    let mut read_layout_at = tokio::time::Instant::now();
    // Whether a subscription ended outside a pass (a lost connection, the server's
    // `SUNSUBSCRIBE`): a connection may carry nothing now.
    let mut left = false;
    loop {
        let mut failed = false;
        // Topics to leave, on the connection that carries them.
        let mut stale: Vec<(String, Node)> = Vec::new();
        for (topic, wanted) in shared.take_changes() {
            if wanted {
                if !placed.contains_key(&topic) {
                    pending.insert(topic);
                }
            } else {
                pending.remove(&topic);
                lapsed.remove(&topic);
                if let Some(node) = placed.remove(&topic) {
                    shared.set_active([&topic], false);
                    stale.push((topic, node));
                }
            }
        }
        if tokio::time::Instant::now() >= read_layout_at {
            match Layout::read(&mut cluster).await {
                Ok(now) if now != layout => {
                    layout = now;
                    // A failover or a resharding: the topics whose slot has another
                    // master now leave the old one and lapse until subscribed again.
                    placed.retain(|topic, node| {
                        if layout.master_of(&shared.channel(topic)) == Some(&*node) {
                            return true;
                        }
                        lapse_topic(&shared, topic, &mut lapsed, &mut pending);
                        stale.push((topic.clone(), node.clone()));
                        false
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    log::warn!("redis: cannot read the cluster's layout: {e}");
                    failed = true;
                }
            }
            read_layout_at = tokio::time::Instant::now() + LAYOUT_EVERY;
        }
        let mut unreachable: HashSet<Node> = HashSet::new();
        let reshaped = !stale.is_empty();
        for (topic, node) in stale {
            if unreachable.contains(&node) {
                continue;
            }
            let Some(link) = links.get_mut(&node) else {
                continue;
            };
            let channel = shared.channel(&topic);
            match link.unsubscribe(&channel).await {
                Ok(()) => *leaving.entry((link.id, channel)).or_default() += 1,
                // Not one unsubscribe per topic at 2 s each: the connection goes.
                Err(e) if broken(&e) => {
                    unreachable.insert(node);
                }
                Err(_) => {}
            }
        }

        // Wanted and not subscribed: subscribe on its master's connection.
        let mut healed: Vec<String> = Vec::new();
        let to_add: Vec<String> = pending.iter().cloned().collect();
        for topic in to_add {
            let channel = shared.channel(&topic);
            let Some(node) = layout.master_of(&channel).cloned() else {
                continue; // no master serves its slot now: still pending
            };
            if unreachable.contains(&node) {
                continue;
            }
            if !links.contains_key(&node) {
                next_link += 1;
                match Link::open(&seed, &node, next_link, push_tx.clone()).await {
                    Ok(link) => {
                        links.insert(node.clone(), link);
                    }
                    Err(e) => {
                        log::warn!("redis: cannot connect to {node}: {e}");
                        unreachable.insert(node);
                        continue;
                    }
                }
            }
            let Some(link) = links.get_mut(&node) else {
                continue;
            };
            match link.subscribe(&channel).await {
                Ok(true) => {
                    shared.set_active([&topic], true);
                    // After `set_active`: a join that gave up waiting before it marked
                    // its topic `unwaited`, under the same lock.
                    let unwaited = shared.unwaited().remove(&topic);
                    if lapsed.remove(&topic) || unwaited {
                        healed.push(topic.clone());
                    }
                    pending.remove(&topic);
                    placed.insert(topic, node);
                }
                Ok(false) => {
                    // Another reply took its place (a server push while a slot moves).
                    read_layout_at = tokio::time::Instant::now();
                }
                Err(e) if broken(&e) => {
                    log::warn!("redis: the connection to {node} failed: {e}");
                    unreachable.insert(node);
                }
                Err(e) => {
                    // Refused (MOVED: our layout is behind a slot that moved): the
                    // connection is sound, the layout is read again at once.
                    log::warn!("redis: {node} refused {topic}: {e}");
                    read_layout_at = tokio::time::Instant::now();
                }
            }
        }
        // Subscribed again after a lapse: what was missed meanwhile is read back.
        shared.resync(healed.iter());
        // A connection that failed is closed, and what it carried lapses with it.
        for node in &unreachable {
            if links.remove(node).is_some() {
                lapse(&shared, node, &mut placed, &mut lapsed, &mut pending);
            }
        }
        failed |= !pending.is_empty();
        // (A connection that failed left its topics pending: `failed` covers it.)
        if std::mem::take(&mut left) || reshaped || failed {
            // One that carries nothing is closed.
            let used: HashSet<&Node> = placed.values().collect();
            links.retain(|node, _| used.contains(node));
            let open: HashSet<u64> = links.values().map(|link| link.id).collect();
            leaving.retain(|(link, _), _| open.contains(link));
        }
        if failed {
            read_layout_at = read_layout_at.min(tokio::time::Instant::now() + RECONNECT_AFTER);
        }
        shared
            .connected
            .store(!failed && lapsed.is_empty(), Ordering::Relaxed);

        // Messages are delivered here without another pass; anything else makes one.
        loop {
            tokio::select! {
                _ = shared.wanted_changed.notified() => break,
                _ = tokio::time::sleep_until(read_layout_at) => break,
                push = pushes.recv() => {
                    let Some((link_id, push)) = push else { return };
                    if push.kind == PushKind::SMessage {
                        if let Some(Value::BulkString(payload)) = push.data.get(1) {
                            deliver(&shared, payload);
                        }
                        continue;
                    }
                    let Some(node) = links
                        .iter()
                        .find(|(_, link)| link.id == link_id)
                        .map(|(node, _)| node.clone())
                    else {
                        continue; // from a connection already closed
                    };
                    match push.kind {
                        PushKind::Disconnection => {
                            // Everything it carried missed what was published meanwhile.
                            log::warn!("redis: the connection to {node} was lost");
                            links.remove(&node);
                            lapse(&shared, &node, &mut placed, &mut lapsed, &mut pending);
                            shared.connected.store(false, Ordering::Relaxed);
                            read_layout_at = tokio::time::Instant::now();
                            left = true;
                            break;
                        }
                        PushKind::SUnsubscribe => {
                            let Some(channel) = push
                                .data
                                .first()
                                .and_then(|c| redis::from_redis_value_ref::<String>(c).ok())
                            else {
                                continue;
                            };
                            let key = (link_id, channel);
                            if let Some(ours) = leaving.get_mut(&key) {
                                *ours -= 1;
                                if *ours == 0 {
                                    leaving.remove(&key);
                                }
                                continue;
                            }
                            let Some(topic) = shared.topic_of(&key.1) else {
                                continue;
                            };
                            if placed.get(topic) == Some(&node) {
                                // The server's: the slot left this master.
                                placed.remove(topic);
                                lapse_topic(&shared, topic, &mut lapsed, &mut pending);
                                read_layout_at = tokio::time::Instant::now();
                                left = true;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Everything subscribed through `node`'s connection lapses with it: each topic is
/// subscribed again, then resynced.
fn lapse(
    shared: &Shared,
    node: &Node,
    placed: &mut HashMap<String, Node>,
    lapsed: &mut HashSet<String>,
    pending: &mut HashSet<String>,
) {
    placed.retain(|topic, placed| {
        let keep = placed != node;
        if !keep {
            lapse_topic(shared, topic, lapsed, pending);
        }
        keep
    });
}

/// `topic`'s subscription ended while it is still wanted: it is subscribed again, then
/// resynced. The caller has taken it out of `placed`.
fn lapse_topic(
    shared: &Shared,
    topic: &str,
    lapsed: &mut HashSet<String>,
    pending: &mut HashSet<String>,
) {
    shared.set_active([&topic.to_owned()], false);
    lapsed.insert(topic.to_owned());
    pending.insert(topic.to_owned());
}

/// Whether an error means the connection itself failed (rather than the server
/// refusing one command on a sound connection).
fn broken(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// Our connection to one master, carrying the subscriptions to its channels.
struct Link {
    /// Tells this connection's pushes from those of connections already replaced.
    id: u64,
    connection: redis::aio::MultiplexedConnection,
}

impl Link {
    /// Connects to `node` with the seed's credentials and TLS settings, in RESP3 so
    /// that messages arrive as pushes, tagged with `id`.
    async fn open(
        seed: &redis::ConnectionInfo,
        node: &Node,
        id: u64,
        pushes: mpsc::UnboundedSender<(u64, PushInfo)>,
    ) -> redis::RedisResult<Link> {
        let addr = match seed.addr().clone() {
            redis::ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => redis::ConnectionAddr::TcpTls {
                host: node.host.clone(),
                port: node.port,
                insecure,
                tls_params,
            },
            _ => redis::ConnectionAddr::Tcp(node.host.clone(), node.port),
        };
        let settings = seed
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let info = seed.clone().set_addr(addr).set_redis_settings(settings);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_push_sender(Tagged { id, pushes });
        let connection = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Link { id, connection })
    }

    /// Subscribes to `channel`; false when the reply was not its confirmation (the
    /// crate takes any subscription push for the oldest command's reply).
    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<bool> {
        let reply: Value = redis::cmd("SSUBSCRIBE")
            .arg(channel)
            .query_async(&mut self.connection)
            .await?;
        Ok(match reply {
            Value::Push {
                kind: PushKind::SSubscribe,
                data,
            } => data
                .first()
                .and_then(|c| redis::from_redis_value_ref::<String>(c).ok())
                .is_some_and(|confirmed| confirmed == channel),
            _ => false,
        })
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        redis::cmd("SUNSUBSCRIBE")
            .arg(channel)
            .exec_async(&mut self.connection)
            .await
    }
}

/// Hands a link's pushes to the subscriber, with the link's id.
struct Tagged {
    id: u64,
    pushes: mpsc::UnboundedSender<(u64, PushInfo)>,
}

impl redis::aio::AsyncPushSender for Tagged {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        self.pushes
            .send((self.id, info))
            .map_err(|_| redis::aio::SendError)
    }
}

/// Hands an event from another replica to this replica's hub.
fn deliver(shared: &Shared, payload: &[u8]) {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(payload) else {
        log::warn!("redis: an event that does not parse was ignored");
        return;
    };
    if envelope.origin == shared.replica {
        return; // delivered locally when published
    }
    if envelope.event == RESYNC_EVENT {
        // Another replica's publish failed: this replica's sockets missed its event.
        shared.config.resyncs.inc();
    }
    let Some(hub) = shared.hub.get().and_then(Weak::upgrade) else {
        return;
    };
    let event = HubEvent {
        message_id: envelope.message_id,
        skip_user: envelope.skip_user.map(String::from),
        only_user: envelope.only_user.map(String::from),
        ..HubEvent::new(
            envelope.topic,
            envelope.event,
            Arc::from(envelope.payload.get()),
        )
    };
    hub.deliver_local(&Arc::new(event));
}
