//! The domain: topics, who may join them, and what sending, reading and history mean.
//! Knows nothing of sockets or HTTP; both transports and the HTTP API call into here.
//!
//! `conversation.rs` holds what a member does in a conversation (join, send, read,
//! typing, presence); `away.rs` how those not in it hear of a new message; `list.rs` a
//! user's conversation list; `host.rs` what the host backend does (post as anyone, edit,
//! delete, erase, rooms). Every message, whoever sends it, goes through `Chat::post`.

mod actions;
mod attachments;
mod away;
mod blocks;
mod budget;
mod conversation;
pub use conversation::{Entered, presence_leave};
mod host;
pub mod ids;
mod list;
mod message;
mod presence_diffs;
mod push;
mod reason;
mod reports;
mod request;
mod topic;
mod typing;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::hub::{Hub, HubEvent, Presence};
use crate::metrics::Metrics;
use crate::store::receipts::Receipts;
use crate::store::writer::OnCommit;
use crate::store::{self, Change, PgPool, Writer};
use presence_diffs::PresenceDiffs;
use typing::TypingGate;

pub use blocks::BLOCKS_TOPIC;
use budget::Budgets;
pub use budget::{Cost, Rate, Rates, Streak};
pub use host::{ErasureReport, MessagePatch, Post, RoomInfo, RoomUpdate};
pub use ids::{Actor, Body, BodyError, ClientRef, MessageId, Role, RoomId, UserId};
pub use list::{Conversation, ConversationKind, ConversationPage, ListError, ListParams};
pub use message::{Message, MessageKind, MessageStatus, Quote, Reaction};
pub use push::{NewPushSubscription, PushRefused};
pub use reason::Reason;
pub use reports::{Report, ReportPage};
pub use request::{HistoryParams, JoinParams, NewMsg, ReportParams, Request};
pub use topic::{Topic, TopicError};

/// What a join answers: the lobby's unread summary, the inbox, or history.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum JoinReply {
    Lobby(UnreadSummary),
    Inbox(InboxSummary),
    Conversation(HistoryPage),
}

/// A page of a conversation, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    /// More messages lie beyond this page in the direction read.
    pub more: bool,
}

/// Every conversation of a user with unread messages, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnreadSummary {
    pub unread: Vec<UnreadEntry>,
    pub total: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnreadEntry {
    /// The canonical topic.
    pub topic: String,
    pub count: i64,
    pub last_message: Message,
}

/// The support conversations for staff, newest first; `count` is what staff have not read.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InboxSummary {
    pub conversations: Vec<UnreadEntry>,
    pub total: i64,
}

/// How long presence changes in one conversation are merged into one `presence_diff`
/// after one was sent: unnoticeable to a person, and a reconnect storm in a room of N
/// costs N frames per window instead of N².
const PRESENCE_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

/// The settings the domain reads.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub history_limit: u32,
    pub max_body_bytes: usize,
    /// Rooms with more members than this broadcast no presence; 0 = no limit.
    pub presence_room_limit: u32,
    /// What each kind of push a client makes may cost.
    pub budgets: Rates,
    /// At most one `typing` per user and conversation this often; zero = every one.
    pub typing_interval: std::time::Duration,
    /// Which push endpoints users may register.
    pub push_endpoints: crate::egress::Policy,
    /// `chat.direct = "host"`: a `chat:` may be joined only once the host opened it.
    pub direct_by_host: bool,
    /// Reports are told to the host by webhook (`webhooks.url` is set).
    pub report_webhook: bool,
    /// Users one user may block.
    pub max_blocks_per_user: u32,
    /// How long after sending its author may edit a message; zero = always.
    pub edit_window: std::time::Duration,
    /// Distinct emoji one message may carry.
    pub max_reactions: u32,
}

pub struct Chat {
    pool: PgPool,
    writer: Writer,
    hub: Arc<Hub>,
    presence: Arc<dyn Presence>,
    metrics: Arc<Metrics>,
    config: ChatConfig,
    budgets: Budgets,
    typing_gate: TypingGate,
    presence_refs: AtomicU64,
    presence_diffs: Arc<PresenceDiffs>,
    receipts: Receipts,
    room_rounds: Arc<away::RoomRounds>,
    blocks: Arc<blocks::BlockList>,
}

/// Storage failures as the client sees them; the cause goes to the log.
fn storage(e: store::Error) -> Reason {
    match e {
        store::Error::NotFound => Reason::NotFound,
        store::Error::TooLarge => Reason::TooLarge,
        store::Error::Forbidden => Reason::Unauthorized,
        store::Error::Conflict(_) | store::Error::Unavailable(_) => {
            log::warn!("storage: {e}");
            Reason::Unavailable
        }
    }
}

/// A hub event with its payload encoded once.
fn event(topic: &str, name: &str, payload: &impl Serialize) -> HubEvent {
    let encoded = serde_json::to_string(payload).unwrap_or_else(|_| "{}".into());
    HubEvent::new(topic, name, Arc::from(encoded))
}

impl Chat {
    pub fn new(
        pool: PgPool,
        writer: Writer,
        hub: Arc<Hub>,
        presence: Arc<dyn Presence>,
        metrics: Arc<Metrics>,
        receipts: Receipts,
        config: ChatConfig,
    ) -> Chat {
        Chat {
            budgets: Budgets::new(config.budgets),
            typing_gate: TypingGate::new(config.typing_interval),
            presence_diffs: PresenceDiffs::new(hub.clone(), PRESENCE_WINDOW),
            receipts,
            room_rounds: Arc::default(),
            blocks: Arc::default(),
            pool,
            writer,
            hub,
            presence,
            metrics,
            config,
            presence_refs: AtomicU64::new(1),
        }
    }

    /// What the writer does after each COMMIT: tell every joined client, in order.
    pub fn broadcast_on_commit(hub: Arc<Hub>) -> OnCommit {
        Box::new(move |changes: &[Change]| {
            for change in changes {
                match change {
                    Change::Created(row) => {
                        let mut new_msg = event(&row.topic, "new_msg", &Message::from(row.clone()));
                        new_msg.message_id = Some(row.id);
                        hub.publish(new_msg);
                    }
                    Change::Updated(row) => {
                        hub.publish(event(
                            &row.topic,
                            "msg_updated",
                            &Message::from(row.clone()),
                        ));
                    }
                    Change::Deleted(row) => {
                        hub.publish(event(
                            &row.topic,
                            "msg_deleted",
                            &json!({"id": row.id, "topic": row.topic}),
                        ));
                    }
                    Change::Erased(erasure) => {
                        for (id, topic) in &erasure.messages {
                            hub.publish(event(
                                topic,
                                "msg_deleted",
                                &json!({"id": id, "topic": topic}),
                            ));
                        }
                        for room in &erasure.rooms {
                            hub.publish(HubEvent::drop_user(
                                &format!("room:{room}"),
                                &erasure.user_id,
                            ));
                        }
                        blocks::publish_forgotten(&hub, &erasure.blocks);
                    }
                }
            }
        })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    pub fn receipts(&self) -> &Receipts {
        &self.receipts
    }

    /// Takes one push of `cost` from `user`'s budget; every transport charges before it
    /// acts. `Err(wait)`: the budget is spent (and the refusal counted); it earns a push
    /// back after `wait`.
    pub fn charge(&self, user: &UserId, cost: Cost) -> Result<(), std::time::Duration> {
        let charged = self
            .budgets
            .charge(user.as_str(), cost, std::time::Instant::now());
        if charged.is_err() {
            self.metrics.rate_limited(cost.as_str());
        }
        charged
    }
}
