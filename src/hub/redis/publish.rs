//! Sending events to the other replicas: each topic's events one at a time, in the
//! order they were made; different topics side by side, so that a topic whose shard is
//! away (a master failing over) holds up only itself. A publish that fails loses its
//! event for the other replicas: the topic's later events are dropped too, until a
//! resync for it gets through, which makes the other replicas' sockets on it rejoin with
//! `after` and read everything back from Postgres.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::{Conn, Envelope, PUBLISH_QUEUE, RECONNECT_AFTER, Shared};
use crate::hub::HubEvent;

/// Publishes in flight at once, across topics.
const IN_FLIGHT: usize = 64;

/// One event on its way to Redis.
pub(super) struct Outgoing {
    pub topic: String,
    pub channel: String,
    /// The encoded `Envelope`.
    pub payload: Vec<u8>,
}

/// How a publish ended: its topic, whether it was a resync, and whether it got through.
type Sent = (String, bool, redis::RedisResult<()>);

pub(super) async fn publisher(
    shared: Arc<Shared>,
    redis: Conn,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    let command = if shared.sharded() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    let send = |outgoing: Outgoing, resync: bool| -> BoxFuture<'static, Sent> {
        let mut redis = redis.clone();
        Box::pin(async move {
            let sent = redis::cmd(command)
                .arg(&outgoing.channel)
                .arg(&outgoing.payload)
                .exec_async(&mut redis)
                .await;
            (outgoing.topic, resync, sent)
        })
    };
    let mut in_flight: FuturesUnordered<BoxFuture<'static, Sent>> = FuturesUnordered::new();
    // Topics with a publish in flight, and their events waiting behind it.
    let mut waiting: HashMap<String, VecDeque<Outgoing>> = HashMap::new();
    // Events in `waiting`: past the queue's size, the queue holds the rest.
    let mut held = 0_usize;
    let mut retry = tokio::time::interval(RECONNECT_AFTER);
    loop {
        tokio::select! {
            biased;
            Some((topic, resync, sent)) = in_flight.next() => {
                match sent {
                    Ok(()) if resync => {
                        shared.unpublished().remove(&topic);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        log::warn!("redis: publish failed for {topic}: {e}");
                        shared.unpublished().insert(topic.clone());
                        // Behind a lost event, the rest are read back after the resync.
                        held -= waiting.remove(&topic).map_or(0, |behind| behind.len());
                    }
                }
                match waiting.get_mut(&topic).and_then(VecDeque::pop_front) {
                    Some(next) => {
                        held -= 1;
                        in_flight.push(send(next, false));
                    }
                    None => {
                        waiting.remove(&topic);
                    }
                }
            }
            outgoing = queue.recv(), if in_flight.len() < IN_FLIGHT && held < PUBLISH_QUEUE => {
                let Some(outgoing) = outgoing else { return };
                if shared.unpublished().contains(&outgoing.topic) {
                    continue; // its resync, still owed, covers it
                }
                match waiting.get_mut(&outgoing.topic) {
                    Some(behind) => {
                        held += 1;
                        behind.push_back(outgoing);
                    }
                    None => {
                        waiting.insert(outgoing.topic.clone(), VecDeque::new());
                        in_flight.push(send(outgoing, false));
                    }
                }
            }
            _ = retry.tick() => {
                // Owed resyncs, for topics with nothing in flight.
                let owed: Vec<String> = shared
                    .unpublished()
                    .iter()
                    .filter(|topic| !waiting.contains_key(*topic))
                    .take(IN_FLIGHT.saturating_sub(in_flight.len()))
                    .cloned()
                    .collect();
                for topic in owed {
                    if let Some(outgoing) = outgoing(&shared, &HubEvent::resync(&topic)) {
                        waiting.insert(outgoing.topic.clone(), VecDeque::new());
                        in_flight.push(send(outgoing, true));
                    }
                }
            }
        }
    }
}

/// `event` as it travels to the other replicas; `None` if its payload is not JSON.
pub(super) fn outgoing(shared: &Shared, event: &HubEvent) -> Option<Outgoing> {
    let payload = serde_json::value::RawValue::from_string(event.payload.to_string()).ok()?;
    let payload = serde_json::to_vec(&Envelope {
        origin: &shared.replica,
        topic: &event.topic,
        event: &event.event,
        payload: &payload,
        message_id: event.message_id,
        skip_user: event.skip_user.as_deref(),
        only_user: event.only_user.as_deref(),
    })
    .ok()?;
    Some(Outgoing {
        topic: event.topic.clone(),
        channel: shared.channel(&event.topic),
        payload,
    })
}
