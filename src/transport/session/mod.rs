//! The session loop: one task per socket, protocol-neutral.
//!
//! One `select!` over the client's frames, the hub queue, the replies still owed, the
//! idle, expiry, keep-alive and read-pause timers, and shutdown. Work that waits on Postgres runs as futures
//! in `pending`, so a slow query never stops the socket from reading; on shutdown the
//! loop stops reading and finishes those first, so no committed message loses its reply.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseReason, ProtocolError};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod join;
mod outbound;
mod reads;
mod requests;

use super::{CloseCode, Codec, Inbound, Response};
use crate::auth::Identity;
use crate::chat::{Actor, Chat, Cost, JoinReply, MessageId, Reason, Streak, Topic};
use crate::hub::{ConnId, HubEvent};

/// How long the close frame may wait behind a slow client's backlog before the
/// connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests one socket may have waiting on storage before it stops reading frames.
const MAX_PENDING: usize = 64;

/// The close code a browser reports for a connection that ended without a close frame
/// (RFC 6455 §7.1.5); never sent, only counted.
const ABNORMAL_CLOSURE: u16 = 1006;

/// The limits one session enforces.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub outbound_queue: usize,
    /// 0 = unlimited.
    pub joins_per_connection: usize,
    pub idle_timeout: Duration,
    pub disconnect_on_expiry: bool,
    /// Close a socket that keeps pushing over budget this long (4004); None = never.
    pub abuse_close: Option<Duration>,
}

/// Everything a session needs besides its socket.
pub struct SessionContext {
    pub conn: ConnId,
    pub identity: Identity,
    pub chat: Arc<Chat>,
    pub limits: SessionLimits,
    pub shutdown: CancellationToken,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// We close the socket with this code.
    Close(CloseCode),
    /// The client closed it with a close frame.
    Gone,
    /// The connection went without a close frame (a tab killed, a network lost):
    /// counted as 1006, the code a browser reports for it.
    Lost,
}

enum JoinState {
    /// Subscribed, history loading: events wait here so none slips between the history
    /// query and the live stream.
    Joining(Vec<Arc<HubEvent>>),
    Ready,
}

struct Channel {
    /// The topic as the client spelled it (`chat:b:a` stays `chat:b:a`).
    spelled: String,
    topic: Topic,
    join_ref: Option<String>,
    state: JoinState,
    /// Receipts that arrived while one was being stored; they go as one.
    reads_waiting: Vec<(ReplyTo, MessageId)>,
    read_in_flight: bool,
    /// Whether the others were told this socket joined (big rooms broadcast no presence).
    presence_announced: bool,
}

/// Where a reply goes: the refs and topic spelling of the push it answers.
#[derive(Clone)]
struct ReplyTo {
    join_ref: Option<String>,
    msg_ref: Option<String>,
    topic: String,
}

/// The result of work that ran off the loop.
enum Completion {
    Reply {
        to: ReplyTo,
        result: Result<Response, Reason>,
    },
    Joined {
        key: String,
        join_ref: Option<String>,
        msg_ref: Option<String>,
        result: Result<JoinReply, Reason>,
        started: Instant,
    },
    /// Receipts stored as one, up to the highest message id among them.
    Read {
        key: String,
        requests: Vec<(ReplyTo, MessageId)>,
        result: Result<usize, Reason>,
    },
}

struct Session<C: Codec> {
    codec: C,
    ws: actix_ws::Session,
    ctx: SessionContext,
    actor: Actor,
    channels: HashMap<String, Channel>,
    queue_tx: mpsc::Sender<Arc<HubEvent>>,
    overflowed: CancellationToken,
    pending: FuturesUnordered<LocalBoxFuture<'static, Completion>>,
    /// How long this socket has kept pushing over budget.
    over_budget: Streak,
    /// After a refusal, frames are not read until the budget could have earned a push
    /// back: a flood waits in the client's own TCP buffer, not in our CPU.
    read_paused_until: Option<Instant>,
}

/// Runs one socket until it ends; cleans up its subscriptions and presence.
pub async fn run<C: Codec>(
    codec: C,
    ws: actix_ws::Session,
    stream: AggregatedMessageStream,
    ctx: SessionContext,
) {
    let (queue_tx, queue_rx) = mpsc::channel(ctx.limits.outbound_queue);
    let actor = ctx.identity.actor();
    let mut session = Session {
        codec,
        ws,
        actor,
        channels: HashMap::new(),
        queue_tx,
        overflowed: CancellationToken::new(),
        pending: FuturesUnordered::new(),
        over_budget: Streak::default(),
        read_paused_until: None,
        ctx,
    };
    log::info!(
        conn = session.ctx.conn.0, user = session.actor.user_id.as_str();
        "connected"
    );
    let end = session.serve(stream, queue_rx).await;
    session.finish(end).await;
}

/// The next tick of an optional interval; never, without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What a stream error says: a client that sent bad bytes, or a connection that went.
fn ended_by(error: &ProtocolError) -> End {
    match error {
        ProtocolError::Overflow => End::Close(CloseCode::TooLarge),
        // Text that is not UTF-8.
        ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            End::Close(CloseCode::Malformed)
        }
        // actix-ws reports a message over the continuation limit as an error of its own text.
        ProtocolError::Io(e) if e.to_string().contains("continuation size") => {
            End::Close(CloseCode::TooLarge)
        }
        // Reading the connection failed: it is gone.
        ProtocolError::Io(_) => End::Lost,
        _ => End::Close(CloseCode::Malformed),
    }
}

/// Sleeps until `at`; never, without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn expiry_instant(expires_at: i64) -> Instant {
    let remaining = expires_at.saturating_sub(chrono::Utc::now().timestamp());
    Instant::now() + Duration::from_secs(u64::try_from(remaining).unwrap_or(0))
}

impl<C: Codec> Session<C> {
    async fn serve(
        &mut self,
        mut stream: AggregatedMessageStream,
        mut queue_rx: mpsc::Receiver<Arc<HubEvent>>,
    ) -> End {
        let idle_timeout = self.ctx.limits.idle_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        let expiry = tokio::time::sleep_until(expiry_instant(self.ctx.identity.expires_at));
        tokio::pin!(expiry);
        let watch_expiry = self.ctx.limits.disconnect_on_expiry;
        // Made once: a cancellation future made anew on every turn of the loop would
        // register with its token and leave again each time.
        let shutdown = self.ctx.shutdown.clone();
        let shutdown = shutdown.cancelled();
        tokio::pin!(shutdown);
        let overflowed = self.overflowed.clone();
        let overflowed = overflowed.cancelled();
        tokio::pin!(overflowed);
        // Protocols whose clients send no heartbeats (ActionCable) get our pings instead;
        // the WebSocket pongs they draw count as activity for the idle timeout.
        let mut keepalive = self.codec.keepalive_interval().map(|every| {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        if let Some(welcome) = self.codec.welcome()
            && let Err(end) = self.write(welcome).await
        {
            return end;
        }

        loop {
            let paused_until = self.read_paused_until;
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => Err(End::Close(CloseCode::GoingAway)),
                _ = &mut overflowed => Err(End::Close(CloseCode::TooSlow)),
                _ = &mut idle => Err(End::Close(CloseCode::Idle)),
                _ = &mut expiry, if watch_expiry => Err(End::Close(CloseCode::TokenExpired)),
                Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                    self.complete(done).await
                }
                Some(event) = queue_rx.recv() => self.deliver(event).await,
                _ = tick(&mut keepalive) => self.keep_alive().await,
                _ = sleep_until(paused_until), if paused_until.is_some() => {
                    self.read_paused_until = None;
                    Ok(())
                }
                // A client that pipelines faster than storage answers waits here, in
                // its own TCP buffer, instead of in our memory.
                frame = stream.recv(), if self.pending.len() < MAX_PENDING && paused_until.is_none() => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    match frame {
                        None => Err(End::Lost),
                        Some(Ok(message)) => self.on_frame(message).await,
                        Some(Err(error)) => Err(ended_by(&error)),
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Ends the session: on a 1001, first the replies still owed; then the close
    /// frame; then subscriptions and presence.
    async fn finish(mut self, end: End) {
        if matches!(
            end,
            End::Close(CloseCode::GoingAway | CloseCode::MissedEvents)
        ) {
            while let Some(done) = self.pending.next().await {
                if self.complete(done).await.is_err() {
                    break;
                }
            }
            // No phx_close here: the official client takes phx_close as final and would
            // not rejoin. Closed by 1001 alone, its channels error and rejoin (with
            // `after`) once it reconnects to another replica.
        }
        let keys: Vec<String> = self.channels.keys().cloned().collect();
        for key in keys {
            self.drop_channel(&key);
        }
        let (conn, user) = (self.ctx.conn, self.actor.user_id.clone());
        match end {
            End::Close(code) => {
                self.ctx.chat.metrics().disconnect(code.code());
                if let Some(goodbye) = self.codec.goodbye(code) {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.text(goodbye)).await;
                }
                log::info!(
                    conn = conn.0, user = user.as_str(), code = code.code();
                    "closed: {}",
                    code.description()
                );
                let reason = CloseReason {
                    code: actix_ws::CloseCode::Other(code.code()),
                    description: Some(code.description().to_owned()),
                };
                // A client that stopped reading must not hold the task forever.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(Some(reason))).await;
            }
            End::Gone => {
                log::info!(conn = conn.0, user = user.as_str(); "disconnected");
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(None)).await;
            }
            End::Lost => {
                self.ctx.chat.metrics().disconnect(ABNORMAL_CLOSURE);
                log::info!(conn = conn.0, user = user.as_str(); "lost (no close frame)");
            }
        }
    }

    async fn on_frame(&mut self, message: AggregatedMessage) -> Result<(), End> {
        match message {
            AggregatedMessage::Text(text) => match self.codec.decode(&text) {
                Ok(Inbound::Heartbeat { msg_ref }) => {
                    let result = self.charge(Cost::Event, false)?.map(|()| Response::empty());
                    self.reply(None, msg_ref.as_deref(), "phoenix", result)
                        .await
                }
                Ok(Inbound::Event {
                    join_ref,
                    msg_ref,
                    topic,
                    event,
                    payload,
                }) => {
                    let cost = Cost::of(&event);
                    // A well-behaved client may read every message of a busy room, and
                    // its leave frees what it held: neither brings the 4004 close, and a
                    // leave is done even over budget (its refusal still pauses reading).
                    let benign = matches!(event.as_str(), "read" | "phx_leave");
                    if let Err(reason) = self.charge(cost, !benign)?
                        && event != "phx_leave"
                    {
                        let (jr, mr) = (join_ref.as_deref(), msg_ref.as_deref());
                        return match cost {
                            Cost::Join => self.join_reply(jr, mr, &topic, Err(reason)).await,
                            _ => self.reply(jr, mr, &topic, Err(reason)).await,
                        };
                    }
                    self.on_event(join_ref, msg_ref, topic, event, payload)
                        .await
                }
                Err(e) => {
                    log::info!(
                        conn = self.ctx.conn.0, user = self.actor.user_id.as_str();
                        "{e}"
                    );
                    Err(End::Close(CloseCode::Malformed))
                }
            },
            AggregatedMessage::Binary(_) => Err(End::Close(CloseCode::Malformed)),
            AggregatedMessage::Ping(bytes) => self.ws.pong(&bytes).await.map_err(|_| End::Lost),
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(_) => Err(End::Gone),
        }
    }

    /// Takes one push of `cost` from the user's budget: `Ok(Err(rate_limited))` when it
    /// is spent, and the socket is not read again until the budget could have earned a
    /// push back. A socket that keeps being refused (`Streak`) for `abuse_close` is
    /// closed (4004), counting only refusals `toward_close`.
    fn charge(&mut self, cost: Cost, toward_close: bool) -> Result<Result<(), Reason>, End> {
        let Err(wait) = self.ctx.chat.charge(&self.actor.user_id, cost) else {
            return Ok(Ok(()));
        };
        // At most 1 s: a budget earns at least one push a second.
        self.read_paused_until = Some(Instant::now() + wait);
        if !toward_close {
            return Ok(Err(Reason::RateLimited));
        }
        let lasted = self.over_budget.refused(std::time::Instant::now());
        if let Some(limit) = self.ctx.limits.abuse_close
            && lasted >= limit
        {
            log::warn!(
                conn = self.ctx.conn.0, user = self.actor.user_id.as_str();
                "kept pushing over its {} budget for {:?}; closing",
                cost.as_str(),
                limit
            );
            return Err(End::Close(CloseCode::TooManyRequests));
        }
        Ok(Err(Reason::RateLimited))
    }

    async fn complete(&mut self, done: Completion) -> Result<(), End> {
        match done {
            Completion::Reply { to, result } => {
                self.reply(
                    to.join_ref.as_deref(),
                    to.msg_ref.as_deref(),
                    &to.topic,
                    result,
                )
                .await
            }
            Completion::Joined {
                key,
                join_ref,
                msg_ref,
                result,
                started,
            } => {
                self.finish_join(key, join_ref, msg_ref, result, started)
                    .await
            }
            Completion::Read {
                key,
                requests,
                result,
            } => self.finish_reads(key, requests, result).await,
        }
    }

    fn drop_channel(&mut self, key: &str) {
        if let Some(channel) = self.channels.remove(key) {
            self.ctx.chat.metrics().channels.dec();
            self.ctx.chat.hub().unsubscribe(key, self.ctx.conn);
            if channel.topic.is_conversation() && matches!(channel.state, JoinState::Ready) {
                self.ctx
                    .chat
                    .exit(&channel.topic, self.ctx.conn, channel.presence_announced);
            }
        }
    }
}
