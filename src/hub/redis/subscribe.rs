//! Receiving events from the other replicas: a pub/sub connection to one Redis, or
//! sharded subscriptions on a Redis Cluster.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use tokio::sync::mpsc;

use super::{Envelope, RECONNECT_AFTER, Shared};
use crate::hub::HubEvent;

/// Keeps one pub/sub connection subscribed to exactly the wanted topics, delivering
/// what arrives; reconnects and resubscribes after any failure.
pub(super) async fn subscriber(shared: Arc<Shared>, client: redis::Client) {
    loop {
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                let mut subscribed: HashSet<String> = HashSet::new();
                loop {
                    let wanted: HashSet<String> = shared.wanted().clone();
                    let add: Vec<String> = wanted
                        .difference(&subscribed)
                        .map(|t| shared.channel(t))
                        .collect();
                    let drop: Vec<String> = subscribed
                        .difference(&wanted)
                        .map(|t| shared.channel(t))
                        .collect();
                    if (!add.is_empty() && sink.subscribe(&add).await.is_err())
                        || (!drop.is_empty() && sink.unsubscribe(&drop).await.is_err())
                    {
                        break;
                    }
                    subscribed = wanted;
                    // Connected means events flow again: only once resubscribed.
                    shared.connected.store(true, Ordering::Relaxed);
                    tokio::select! {
                        _ = shared.wanted_changed.notified() => {}
                        message = stream.next() => match message {
                            Some(message) => deliver(&shared, message.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                log::warn!("redis: subscription connection lost; reconnecting");
            }
            Err(e) => log::warn!("redis: cannot subscribe: {e}"),
        }
        shared.connected.store(false, Ordering::Relaxed);
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// The cluster's subscriber: one `SSUBSCRIBE` per wanted topic on the cluster
/// connection, which sends each to the topic's shard and subscribes again by itself
/// after a failover or a resharding; messages arrive as pushes.
pub(super) async fn cluster_subscriber(
    shared: Arc<Shared>,
    mut connection: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
) {
    let mut subscribed: HashSet<String> = HashSet::new();
    loop {
        let wanted: HashSet<String> = shared.wanted().clone();
        let mut failed = false;
        for topic in wanted.difference(&subscribed).cloned().collect::<Vec<_>>() {
            match connection.ssubscribe(shared.channel(&topic)).await {
                Ok(()) => {
                    subscribed.insert(topic);
                }
                Err(e) => {
                    log::warn!("redis: cannot subscribe to {topic}: {e}");
                    failed = true;
                }
            }
        }
        for topic in subscribed.difference(&wanted).cloned().collect::<Vec<_>>() {
            match connection.sunsubscribe(shared.channel(&topic)).await {
                Ok(()) => {
                    subscribed.remove(&topic);
                }
                Err(e) => {
                    log::warn!("redis: cannot unsubscribe from {topic}: {e}");
                    failed = true;
                }
            }
        }
        shared.connected.store(!failed, Ordering::Relaxed);
        let retry = tokio::time::sleep(if failed {
            RECONNECT_AFTER
        } else {
            Duration::from_secs(24 * 3600)
        });
        tokio::select! {
            _ = shared.wanted_changed.notified() => {}
            _ = retry => {}
            push = pushes.recv() => match push {
                Some(push) if push.kind == redis::PushKind::SMessage => {
                    if let Some(redis::Value::BulkString(payload)) = push.data.get(1) {
                        deliver(&shared, payload);
                    }
                }
                Some(_) => {}
                None => return,
            },
        }
    }
}

fn deliver(shared: &Shared, payload: &[u8]) {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(payload) else {
        log::warn!("redis: an event that does not parse was ignored");
        return;
    };
    if envelope.origin == shared.replica {
        return; // delivered locally when published
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
