//! What `/metrics` reports, all prefixed `sidechat_`. One `Metrics` per service, built
//! with the application and handed to the parts that count (never a global, so tests
//! running several services in one process do not mix their numbers).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

/// What was joined: `lobby`, `inbox` or `conversation`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Which of a user's budgets a refused push drew on: `messages`, `joins`, `events`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    pub budget: &'static str,
}

/// An offline notification's sink (`webhook`, `push`) and what its attempt came to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub sink: &'static str,
    pub outcome: &'static str,
}

/// The broker this replica uses (`memory`, `redis`), as set in `broker.kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabel {
    pub kind: String,
}

/// How a retention run ended: `done`, `skipped` (another replica holds the lock),
/// `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Fine where joins should land (a few milliseconds), coarse beyond.
const JOIN_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// Label values each family is known to take. Their series start at 0 so that they are
/// on `/metrics` before the first event (dashboards show 0, not "no data") and so that
/// the first event is an increase `rate()` sees rather than a new series at 1.
pub const JOIN_KINDS: [&str; 3] = ["lobby", "inbox", "conversation"];
pub const READ_KINDS: [&str; 1] = ["conversations"];
/// PROTOCOL.md §2.
pub const ERROR_REASONS: [&str; 10] = [
    "unauthorized",
    "invalid_topic",
    "not_found",
    "invalid_payload",
    "too_large",
    "rate_limited",
    "unknown_event",
    "not_joined",
    "unavailable",
    "blocked",
];
/// The server's close codes (PROTOCOL.md §3) and 1006, a connection lost.
pub const DISCONNECT_CODES: [u16; 8] = [1001, 1006, 1007, 1009, 4001, 4002, 4003, 4004];
pub const BUDGETS: [&str; 3] = ["messages", "joins", "events"];
/// The outcomes the alerts and the dashboard watch; the skipped ones appear when they occur.
const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "failed", "abandoned"];
const SINKS: [&str; 2] = ["webhook", "push"];
const RETENTION_OUTCOMES: [&str; 3] = ["done", "skipped", "failed"];

fn join_histogram() -> Histogram {
    Histogram::new(JOIN_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    /// Open sockets on this replica.
    pub connections: Gauge,
    /// Channels (joined topics) open on this replica.
    pub channels: Gauge,
    pub joins: Counter,
    /// From a join's arrival to its reply on the socket (history or summary included).
    pub join_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// From a read request (a `conversations` page) to its answer built, storage included.
    pub read_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Messages stored (new rows, whoever sent them).
    pub messages_in: Counter,
    /// Events written to sockets.
    pub messages_out: Counter,
    pub writer_batch_size: Histogram,
    pub writer_batch_seconds: Histogram,
    /// Requests waiting for the writer, read when scraped.
    pub writer_queue_depth: Gauge,
    /// Time of one receipts statement (a lot of reads stored together).
    pub receipts_batch_seconds: Histogram,
    /// Reads waiting for the receipts thread, read when scraped.
    pub receipts_queue_depth: Gauge,
    /// Topics with a listener on this replica, read when scraped.
    pub hub_topics: Gauge,
    /// Error replies and API errors, by reason.
    pub errors: Family<ReasonLabel, Counter>,
    /// Sockets the server closed, by its close code, and 1006 for connections lost
    /// without a close frame (a client's own close is not counted).
    pub disconnects: Family<CodeLabel, Counter>,
    /// Pushes refused because the user's budget was spent, by budget.
    pub rate_limited: Family<BudgetLabel, Counter>,
    /// `typing` events the throttle kept from the conversation.
    pub typing_dropped: Counter,
    /// Offline notification attempts, by sink and outcome.
    pub deliveries: Family<DeliveryLabel, Counter>,
    /// Messages in the outbox waiting to fall due (counted every few seconds).
    pub outbox_waiting: Gauge,
    /// Deliveries waiting to be made or retried (counted every few seconds).
    pub outbox_deliveries: Gauge,
    /// Blocks in this replica's copy (every replica holds them all).
    pub blocks: Gauge,
    /// Reports of messages stored (repeats not counted).
    pub reports: Counter,
    /// Checks of deferred list moves run (`store::list_moves::keep_healed`).
    pub list_heals: Counter,
    /// Messages deleted by `chat.retention_days` on this replica.
    pub retention_deleted: Counter,
    /// Unix time retention last made progress on this replica: a batch deleted, or a
    /// run found nothing to do (0: never).
    pub retention_last_run: Gauge,
    /// `chat.retention_days` (0: retention off), for alerts that apply only when on.
    pub retention_days: Gauge,
    /// Retention runs by how they ended.
    pub retention_runs: Family<OutcomeLabel, Counter>,
    /// 1 when `/readyz` would answer 200, read when scraped.
    pub ready: Gauge,
    /// 1 when events reach the other replicas (always, with the memory broker), read
    /// when scraped.
    pub broker_connected: Gauge,
    /// 1 for the broker kind in use: several replicas on `memory` do not hear each other.
    pub broker: Family<BrokerLabel, Gauge>,
    /// Topics whose sockets were told to rejoin (1001) because the broker may have lost
    /// their events.
    pub broker_resyncs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sidechat");
        let metrics = Metrics {
            connections: Gauge::default(),
            channels: Gauge::default(),
            joins: Counter::default(),
            join_seconds: Family::new_with_constructor(join_histogram),
            read_seconds: Family::new_with_constructor(join_histogram),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            // 1 to 512 messages per batch.
            writer_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            // 0.25 ms to about 4 s per batch transaction.
            writer_batch_seconds: Histogram::new(exponential_buckets(0.00025, 2.0, 15)),
            writer_queue_depth: Gauge::default(),
            // 0.24 ms to 128 s, with 0.5 s (SidechatReadsFallingBehind's bound) an edge:
            // a lot of reads that fell behind has taken a minute and more.
            receipts_batch_seconds: Histogram::new(exponential_buckets(0.5 / 2048.0, 2.0, 20)),
            receipts_queue_depth: Gauge::default(),
            hub_topics: Gauge::default(),
            errors: Family::default(),
            disconnects: Family::default(),
            rate_limited: Family::default(),
            typing_dropped: Counter::default(),
            deliveries: Family::default(),
            outbox_waiting: Gauge::default(),
            outbox_deliveries: Gauge::default(),
            blocks: Gauge::default(),
            reports: Counter::default(),
            list_heals: Counter::default(),
            retention_deleted: Counter::default(),
            retention_last_run: Gauge::default(),
            retention_days: Gauge::default(),
            retention_runs: Family::default(),
            ready: Gauge::default(),
            broker_connected: Gauge::default(),
            broker: Family::default(),
            broker_resyncs: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open sockets", metrics.connections.clone());
        registry.register(
            "channels",
            "Joined topics across open sockets",
            metrics.channels.clone(),
        );
        registry.register("joins", "Successful joins", metrics.joins.clone());
        registry.register(
            "join_seconds",
            "From a join's arrival to its reply, by what was joined",
            metrics.join_seconds.clone(),
        );
        registry.register(
            "read_seconds",
            "From a read request to its answer built, storage included, by what was read",
            metrics.read_seconds.clone(),
        );
        registry.register(
            "messages_in",
            "Messages stored",
            metrics.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Events written to sockets",
            metrics.messages_out.clone(),
        );
        registry.register(
            "writer_batch_size",
            "Messages and edits per writer transaction",
            metrics.writer_batch_size.clone(),
        );
        registry.register(
            "writer_batch_seconds",
            "Time of one writer transaction, COMMIT included",
            metrics.writer_batch_seconds.clone(),
        );
        registry.register(
            "writer_queue_depth",
            "Requests waiting for the writer",
            metrics.writer_queue_depth.clone(),
        );
        registry.register(
            "receipts_batch_seconds",
            "Time of one receipts statement, a lot of reads stored together",
            metrics.receipts_batch_seconds.clone(),
        );
        registry.register(
            "receipts_queue_depth",
            "Reads waiting to be stored",
            metrics.receipts_queue_depth.clone(),
        );
        registry.register(
            "hub_topics",
            "Topics with a listener on this replica",
            metrics.hub_topics.clone(),
        );
        registry.register(
            "errors",
            "Refused requests by reason",
            metrics.errors.clone(),
        );
        registry.register(
            "disconnects",
            "Sockets the server closed, by close code; 1006: the connection was lost without a close frame",
            metrics.disconnects.clone(),
        );
        registry.register(
            "rate_limited",
            "Pushes and user requests refused because the user's budget (messages, joins, events) was spent",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "typing_dropped",
            "typing events not relayed: more than one per user and conversation per chat.typing_interval_ms",
            metrics.typing_dropped.clone(),
        );
        registry.register(
            "deliveries",
            "Offline notification attempts (webhook, push) by outcome: delivered, failed (to be retried), abandoned, refused, gone (push subscription removed), blocked (push endpoint not public; subscription removed), skipped_read, skipped_present, skipped_unsubscribed",
            metrics.deliveries.clone(),
        );
        registry.register(
            "outbox_waiting",
            "Messages in the outbox not yet due",
            metrics.outbox_waiting.clone(),
        );
        registry.register(
            "outbox_deliveries",
            "Offline notifications waiting to be made or retried",
            metrics.outbox_deliveries.clone(),
        );
        registry.register(
            "blocks",
            "Blocks held in this replica's copy",
            metrics.blocks.clone(),
        );
        registry.register(
            "reports",
            "Reports of messages stored",
            metrics.reports.clone(),
        );
        registry.register(
            "list_heals",
            "Checks of the newest messages' conversation-list moves run",
            metrics.list_heals.clone(),
        );
        // Each get_or_create makes the series; its guard is dropped at once.
        for kind in JOIN_KINDS {
            drop(metrics.join_seconds.get_or_create(&KindLabel { kind }));
        }
        for kind in READ_KINDS {
            drop(metrics.read_seconds.get_or_create(&KindLabel { kind }));
        }
        for reason in ERROR_REASONS {
            drop(metrics.errors.get_or_create(&ReasonLabel { reason }));
        }
        for code in DISCONNECT_CODES {
            drop(metrics.disconnects.get_or_create(&CodeLabel { code }));
        }
        for budget in BUDGETS {
            drop(metrics.rate_limited.get_or_create(&BudgetLabel { budget }));
        }
        for sink in SINKS {
            for outcome in DELIVERY_OUTCOMES {
                drop(
                    metrics
                        .deliveries
                        .get_or_create(&DeliveryLabel { sink, outcome }),
                );
            }
        }
        registry.register(
            "retention_deleted",
            "Messages deleted for being older than chat.retention_days",
            metrics.retention_deleted.clone(),
        );
        registry.register(
            "retention_last_run_timestamp_seconds",
            "Unix time retention last made progress here (a batch deleted, or a run found nothing to do); 0 if never (or another replica does the runs)",
            metrics.retention_last_run.clone(),
        );
        registry.register(
            "retention_days",
            "chat.retention_days: messages older than this many days are deleted; 0 = retention off",
            metrics.retention_days.clone(),
        );
        registry.register(
            "retention_runs",
            "Retention runs (chat.retention_days) by outcome: done, skipped (another replica held the lock), failed",
            metrics.retention_runs.clone(),
        );
        for outcome in RETENTION_OUTCOMES {
            drop(
                metrics
                    .retention_runs
                    .get_or_create(&OutcomeLabel { outcome }),
            );
        }
        registry.register(
            "ready",
            "1 when this replica is ready for traffic (as /readyz), 0 when not",
            metrics.ready.clone(),
        );
        registry.register(
            "broker_connected",
            "1 when events reach the other replicas, 0 while the broker is unreachable",
            metrics.broker_connected.clone(),
        );
        registry.register(
            "broker",
            "The broker in use (kind label), always 1",
            metrics.broker.clone(),
        );
        registry.register(
            "broker_resyncs",
            "Topics whose sockets were closed with 1001 to rejoin with after, because the broker may have lost their events (a lost Redis connection, a failed-over master, a failed publish)",
            metrics.broker_resyncs.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A push refused over budget; `budget` is the budget's name (`Cost::as_str`).
    pub fn rate_limited(&self, budget: &'static str) {
        self.rate_limited
            .get_or_create(&BudgetLabel { budget })
            .inc();
    }

    pub fn disconnect(&self, code: u16) {
        self.disconnects.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn retention_run(&self, outcome: &'static str) {
        self.retention_runs
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Records `broker.kind`, once at start.
    pub fn broker_kind(&self, kind: &str) {
        self.broker
            .get_or_create(&BrokerLabel {
                kind: kind.to_owned(),
            })
            .set(1);
    }

    /// The OpenMetrics text Prometheus scrapes.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
