//! Offline notifications: webhooks to the host (PROTOCOL.md §8) and Web Push to
//! browsers, for messages that reached a user with no connection in that conversation.
//!
//! The writer puts each such message in the outbox in the message's own transaction
//! (`store::outbox`). This worker, one per replica, turns due outbox groups into
//! deliveries and makes them: before each attempt it checks again that something is
//! still unread and that the recipient has not joined the conversation meanwhile, then
//! calls, and on failure retries with exponential backoff. Replicas share the work
//! through row locks, so each delivery is made once in the normal case; after a crash
//! mid-call it may be made twice, with the same event id, for the host to drop.

pub mod push;
mod reports;
pub mod signature;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::chat::Message;
use crate::egress::{self, Egress};
use crate::hub::{Presence, is_present};
use crate::metrics::{DeliveryLabel, Metrics};
use crate::settings::Settings;
use crate::store::outbox::{self, Delivery, Sink};
use crate::store::push::PushSubscriptionRow;
use crate::store::{self, PgPool};
use push::WebPush;
use webhook::Webhook;

/// How often a worker looks for due work when nothing wakes it (other replicas' messages,
/// retries and delays fall due on the clock).
const POLL: Duration = Duration::from_millis(500);
/// Rounds start at most this often: each costs three statements however little it takes.
const MIN_ROUND: Duration = Duration::from_millis(100);
/// Due groups formed per round.
const GROUPS_PER_ROUND: i64 = 200;
/// A taken delivery is another worker's again after this: longer than a call may take.
const LEASE: Duration = Duration::from_secs(30);
/// Retries wait at most this long.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Outbox depth is counted this often, not every round.
const DEPTH_EVERY: Duration = Duration::from_secs(5);
/// A push message body longer than this is cut: push services take about 4 KB in all.
const PUSH_BODY_BYTES: usize = 1000;

/// What one call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Try again later.
    Failed(String),
    /// The push service says the subscription no longer exists.
    Gone,
    /// The push endpoint is not a public destination (any more): the subscription goes.
    Blocked(String),
    /// Will never succeed as it is: drop it.
    Refused(String),
}

pub struct Notifier {
    pool: PgPool,
    presence: Arc<dyn Presence>,
    metrics: Arc<Metrics>,
    webhook: Option<Webhook>,
    push: Option<WebPush>,
    wake: Arc<Notify>,
    retry_initial: Duration,
    retry_for: Duration,
    concurrency: i64,
}

/// Where offline users are told: checked and loaded at start-up, before anything else
/// starts, so a bad key is one line and no half-started service.
pub struct Sinks {
    webhook: Option<Webhook>,
    push: Option<WebPush>,
}

impl Sinks {
    /// The sinks `settings` ask for, or `None` when webhooks and Web Push are both off.
    /// Errors are one line naming the setting.
    pub fn from_settings(settings: &Settings) -> Result<Option<Sinks>, String> {
        if !settings.notifies_offline() {
            return Ok(None);
        }
        let egress = Arc::new(Egress::new(egress::Policy {
            allow_local: settings.push.allow_local_endpoints,
        })?);
        let hooks = &settings.webhooks;
        let webhook = match hooks.url.as_str() {
            "" => None,
            url => Some(Webhook::new(
                url.parse()
                    .map_err(|e| format!("webhooks.url: not a URL: {e}"))?,
                hooks.secret.clone(),
                egress.clone(),
            )),
        };
        let push = match settings.push.vapid_private_key_file.as_str() {
            "" => None,
            _ => Some(WebPush::new(&settings.push, egress)?),
        };
        Ok(Some(Sinks { webhook, push }))
    }
}

impl Notifier {
    pub fn new(
        sinks: Sinks,
        settings: &Settings,
        pool: PgPool,
        presence: Arc<dyn Presence>,
        metrics: Arc<Metrics>,
    ) -> Notifier {
        let hooks = &settings.webhooks;
        Notifier {
            pool,
            presence,
            metrics,
            webhook: sinks.webhook,
            push: sinks.push,
            wake: Arc::new(Notify::new()),
            retry_initial: Duration::from_millis(hooks.retry_initial_ms),
            retry_for: Duration::from_secs(hooks.retry_for_s),
            concurrency: i64::from(hooks.concurrency),
        }
    }

    /// Wakes the worker: the writer just enqueued something.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The VAPID public key, when Web Push is on.
    pub fn vapid_public_key(&self) -> Option<&str> {
        self.push.as_ref().map(WebPush::public_key)
    }

    /// Works until `stop` is cancelled; a round under way finishes first (its calls take
    /// at most the 10 s timeout), so nothing is left leased by a clean stop.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut depth_at = Instant::now();
        while !stop.is_cancelled() {
            let started = tokio::time::Instant::now();
            let worked = self.round().await;
            // Under load every commit wakes the worker: gather what arrives meanwhile
            // into the next round rather than run one per commit.
            tokio::time::sleep_until(started + MIN_ROUND).await;
            if depth_at.elapsed() >= DEPTH_EVERY {
                self.count_depth().await;
                depth_at = Instant::now();
            }
            if !worked {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }

    /// Forms what is due and makes what can be made now; true if there was any.
    async fn round(&self) -> bool {
        let (webhook, push) = (self.webhook.is_some(), self.push.is_some());
        // Whoever is in a due conversation now makes no delivery at all: in a busy chat
        // most recipients are, and a delivery made only to be skipped costs two writes.
        let present =
            match store::blocking(&self.pool, |c| outbox::due_topics(c, GROUPS_PER_ROUND)).await {
                Ok(topics) => self.present_in(topics).await,
                Err(e) => {
                    log::warn!("notifications: cannot read the outbox: {e}");
                    return false;
                }
            };
        let formed = store::blocking(&self.pool, move |c| {
            outbox::form(c, GROUPS_PER_ROUND, webhook, push, &present)
        })
        .await;
        match &formed {
            Ok(formed) if formed.present > 0 => {
                for sink in self.sinks() {
                    self.count(sink, "skipped_present", formed.present);
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("notifications: cannot form deliveries: {e}"),
        }
        let (limit, lease) = (self.concurrency, LEASE);
        let taken = match store::blocking(&self.pool, move |c| outbox::take(c, limit, lease)).await
        {
            Ok(taken) => taken,
            Err(e) => {
                log::warn!("notifications: cannot take deliveries: {e}");
                return false;
            }
        };
        let worked = !taken.is_empty() || formed.is_ok_and(|f| f.made > 0);
        join_all(taken.into_iter().map(|d| self.deliver(d))).await;
        worked
    }

    /// Every (user, topic) pair of someone joined to one of `topics`, on any replica.
    async fn present_in(&self, topics: Vec<String>) -> Vec<(String, String)> {
        let lists = join_all(topics.into_iter().map(|topic| async move {
            let users = self.presence.list(&topic).await;
            users
                .into_iter()
                .map(move |(user, _)| (user, topic.clone()))
        }))
        .await;
        let mut pairs: Vec<(String, String)> = lists.into_iter().flatten().collect();
        pairs.sort();
        pairs.dedup();
        pairs
    }

    /// One attempt at one delivery, and its bookkeeping. A database error leaves the
    /// delivery leased: it is tried again when the lease runs out.
    async fn deliver(&self, delivery: Delivery) {
        if let Some(report_id) = delivery.report_id {
            return self.deliver_report(delivery, report_id).await;
        }
        let sink = delivery.sink;
        let wanted = delivery.clone();
        let context = store::blocking(&self.pool, move |c| {
            let (rows, count) = outbox::still_unread(c, &wanted)?;
            let messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
            let subscription = match sink {
                Sink::Push => crate::store::push::by_endpoint(c, &wanted.target)?,
                Sink::Webhook => None,
            };
            Ok((messages, count, subscription))
        })
        .await;
        let (messages, count, subscription) = match context {
            Ok(context) => context,
            Err(e) => return log::warn!("notifications: delivery {}: {e}", delivery.id),
        };
        let skipped = if messages.is_empty() {
            Some("skipped_read")
        } else if is_present(
            self.presence.as_ref(),
            &delivery.topic,
            &delivery.recipient_id,
        )
        .await
        {
            Some("skipped_present")
        } else if sink == Sink::Push && subscription.is_none() {
            Some("skipped_unsubscribed")
        } else {
            None
        };
        let attempt = match skipped {
            // Nothing to send: done.
            Some(_) => Attempt::Delivered,
            None => {
                self.send(&delivery, messages, count, subscription.as_ref())
                    .await
            }
        };
        let settled = self.settle(&delivery, attempt).await;
        self.count(sink, skipped.unwrap_or(settled), 1);
    }

    /// The call itself, to the sink the delivery names.
    async fn send(
        &self,
        delivery: &Delivery,
        messages: Vec<Message>,
        count: i64,
        subscription: Option<&PushSubscriptionRow>,
    ) -> Attempt {
        match (delivery.sink, &self.webhook, &self.push, subscription) {
            (Sink::Webhook, Some(hook), _, _) => {
                let body = webhook_body(delivery, messages, count);
                hook.send(&delivery.id, body).await
            }
            (Sink::Push, _, Some(push), Some(subscription)) => {
                let payload = push_payload(delivery, messages, count);
                push.send(subscription, payload).await
            }
            (sink, ..) => Attempt::Refused(format!("{sink} is off on this replica")),
        }
    }

    /// What offline users are told by, for the start-up log: "webhook, push".
    pub fn describe(&self) -> String {
        self.sinks()
            .map(Sink::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn sinks(&self) -> impl Iterator<Item = Sink> {
        let webhook = self.webhook.as_ref().map(|_| Sink::Webhook);
        let push = self.push.as_ref().map(|_| Sink::Push);
        webhook.into_iter().chain(push)
    }

    fn count(&self, sink: Sink, outcome: &'static str, n: u64) {
        self.metrics
            .deliveries
            .get_or_create(&DeliveryLabel {
                sink: sink.as_str(),
                outcome,
            })
            .inc_by(n);
    }

    /// Records what an attempt came to; returns the outcome's metric label.
    async fn settle(&self, delivery: &Delivery, attempt: Attempt) -> &'static str {
        let id = delivery.id.clone();
        let (outcome, result) = match attempt {
            Attempt::Delivered => (
                "delivered",
                store::blocking(&self.pool, move |c| outbox::finish(c, &id)).await,
            ),
            Attempt::Gone => {
                log::info!("notifications: push subscription gone; removing it");
                ("gone", self.forget_subscription(delivery).await)
            }
            Attempt::Blocked(why) => {
                log::warn!("notifications: push subscription blocked ({why}); removing it");
                ("blocked", self.forget_subscription(delivery).await)
            }
            Attempt::Refused(why) => {
                log::warn!(
                    "notifications: {} {} refused for good: {why}",
                    delivery.sink,
                    delivery.id
                );
                (
                    "refused",
                    store::blocking(&self.pool, move |c| outbox::finish(c, &id)).await,
                )
            }
            Attempt::Failed(why) => {
                let waited = chrono::Utc::now()
                    .signed_duration_since(delivery.created_at)
                    .to_std()
                    .unwrap_or_default();
                if waited >= self.retry_for {
                    log::warn!(
                        "notifications: giving up on {} {} after {} attempts: {why}",
                        delivery.sink,
                        delivery.id,
                        delivery.attempts + 1
                    );
                    (
                        "abandoned",
                        store::blocking(&self.pool, move |c| outbox::finish(c, &id)).await,
                    )
                } else {
                    let after = backoff(self.retry_initial, delivery.attempts);
                    log::info!(
                        "notifications: {} {} failed ({why}); retrying in {:?}",
                        delivery.sink,
                        delivery.id,
                        after
                    );
                    (
                        "failed",
                        store::blocking(&self.pool, move |c| outbox::retry(c, &id, after, &why))
                            .await,
                    )
                }
            }
        };
        if let Err(e) = result {
            log::warn!("notifications: cannot record delivery {}: {e}", delivery.id);
        }
        outcome
    }

    /// Removes the push subscription `delivery` was for, and what waits for it.
    async fn forget_subscription(&self, delivery: &Delivery) -> Result<(), store::Error> {
        let endpoint = delivery.target.clone();
        store::blocking(&self.pool, move |c| {
            outbox::forget_subscription(c, &endpoint)
        })
        .await
    }

    async fn count_depth(&self) {
        match store::blocking(&self.pool, outbox::depth).await {
            Ok((waiting, delivering)) => {
                self.metrics.outbox_waiting.set(waiting);
                self.metrics.outbox_deliveries.set(delivering);
            }
            Err(e) => log::debug!("notifications: cannot count the outbox: {e}"),
        }
    }
}

/// The wait before the next attempt after `attempts` failed ones before this one:
/// doubling from `initial`, at most an hour.
fn backoff(initial: Duration, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts).unwrap_or(0).min(20);
    initial.saturating_mul(1u32 << doublings).min(MAX_BACKOFF)
}

/// The `message.unread` event of PROTOCOL.md §8.
fn webhook_body(delivery: &Delivery, messages: Vec<Message>, count: i64) -> Vec<u8> {
    json!({
        "id": delivery.id,
        "type": "message.unread",
        "recipient": delivery.recipient_id,
        "messages": messages,
        "unread": {"topic": delivery.topic, "count": count},
    })
    .to_string()
    .into_bytes()
}

/// What a service worker's `push` event reads: the same event, with only the newest
/// message, its body cut to fit a push message.
fn push_payload(delivery: &Delivery, messages: Vec<Message>, count: i64) -> Vec<u8> {
    let newest = messages.into_iter().last().map(|mut message| {
        if message.body.len() > PUSH_BODY_BYTES {
            let mut cut = PUSH_BODY_BYTES;
            while !message.body.is_char_boundary(cut) {
                cut -= 1;
            }
            message.body.truncate(cut);
        }
        message
    });
    json!({
        "id": delivery.id,
        "type": "message.unread",
        "recipient": delivery.recipient_id,
        "message": newest,
        "unread": {"topic": delivery.topic, "count": count},
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageRow;

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_an_hour() {
        let first = Duration::from_secs(2);
        assert_eq!(backoff(first, 0), Duration::from_secs(2));
        assert_eq!(backoff(first, 1), Duration::from_secs(4));
        assert_eq!(backoff(first, 5), Duration::from_secs(64));
        assert_eq!(backoff(first, 20), MAX_BACKOFF);
        assert_eq!(backoff(first, 10_000), MAX_BACKOFF);
        assert_eq!(backoff(first, -1), Duration::from_secs(2));
    }

    #[test]
    fn a_push_payload_cuts_a_long_body_at_a_character_boundary() {
        let delivery = Delivery {
            id: "e1".into(),
            sink: Sink::Push,
            target: "https://push.example/1".into(),
            recipient_id: "bob".into(),
            topic: "chat:alice:bob".into(),
            message_ids: vec![1],
            attempts: 0,
            created_at: chrono::Utc::now(),
            report_id: None,
        };
        let row = MessageRow::sample(1, "chat:alice:bob", "alice", &"é".repeat(PUSH_BODY_BYTES));
        let payload: serde_json::Value =
            serde_json::from_slice(&push_payload(&delivery, vec![Message::from(row)], 3)).unwrap();
        let body = payload["message"]["body"].as_str().unwrap();
        assert_eq!(body.len(), PUSH_BODY_BYTES);
        assert_eq!(payload["unread"]["count"], 3);
        assert_eq!(payload["id"], "e1");
    }
}
