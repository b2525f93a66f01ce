//! What a session writes: replies, pushed events and keep-alives, each within the time
//! a client that reads may take; a client that does not is too slow.

use std::sync::Arc;

use super::{End, JoinState, Session};
use crate::chat::Reason;
use crate::hub::{DROP_EVENT, HubEvent, RESYNC_EVENT};
use crate::transport::{CloseCode, Codec, Outbound, Response};

impl<C: Codec> Session<C> {
    /// Pings the client: the protocol's own keep-alive, if it has one, and a WebSocket ping.
    pub(super) async fn keep_alive(&mut self) -> Result<(), End> {
        if let Some(ping) = self.codec.keepalive(chrono::Utc::now().timestamp()) {
            self.write(ping).await?;
        }
        self.ws.ping(b"").await.map_err(|_| End::Lost)
    }

    /// Writes the frames of one outbound message.
    pub(super) async fn send(&mut self, outbound: &Outbound<'_>) -> Result<(), End> {
        let mut frames = Vec::new();
        self.codec.encode(outbound, &mut frames);
        self.write_all(frames).await
    }

    async fn write_all(&mut self, frames: Vec<String>) -> Result<(), End> {
        for frame in frames {
            self.write(frame).await?;
        }
        Ok(())
    }

    /// Writes one frame. A client that does not take it in time is too slow.
    pub(super) async fn write(&mut self, frame: String) -> Result<(), End> {
        let write = tokio::time::timeout(self.ctx.limits.idle_timeout, self.ws.text(frame));
        tokio::select! {
            // The write first: it nearly always completes at once, and then the token is
            // not looked at.
            biased;
            written = write => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Lost),
                Err(_) => Err(End::Close(CloseCode::TooSlow)),
            },
            _ = self.overflowed.cancelled() => Err(End::Close(CloseCode::TooSlow)),
        }
    }

    pub(super) async fn reply(
        &mut self,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        result: Result<Response, Reason>,
    ) -> Result<(), End> {
        self.answer(false, join_ref, msg_ref, topic, result).await
    }

    /// Answers a join: sent whatever the refs, since some protocols (ActionCable)
    /// confirm or reject every subscription.
    pub(super) async fn join_reply(
        &mut self,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        result: Result<Response, Reason>,
    ) -> Result<(), End> {
        self.answer(true, join_ref, msg_ref, topic, result).await
    }

    pub(super) async fn answer(
        &mut self,
        to_join: bool,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        result: Result<Response, Reason>,
    ) -> Result<(), End> {
        if let Err(reason) = &result {
            self.ctx.chat.metrics().error(reason.as_str());
        }
        let result = result.as_ref().map(Response::as_str).map_err(|r| *r);
        let outbound = if to_join {
            Outbound::JoinReply {
                join_ref,
                msg_ref,
                topic,
                result,
            }
        } else {
            Outbound::Reply {
                join_ref,
                msg_ref,
                topic,
                result,
            }
        };
        self.send(&outbound).await
    }

    pub(super) async fn deliver(&mut self, event: Arc<HubEvent>) -> Result<(), End> {
        let limit = self.ctx.limits.outbound_queue;
        let Some(channel) = self.channels.get_mut(&event.topic) else {
            return Ok(()); // left this topic since the event was queued
        };
        if event.event == RESYNC_EVENT {
            // Events of this topic may have been lost between replicas: the client
            // reconnects and rejoins every channel with `after`, which reads them back.
            log::info!(
                conn = self.ctx.conn.0, user = self.actor.user_id.as_str(),
                topic = event.topic.as_str();
                "the broker may have lost events of the topic"
            );
            return Err(End::Close(CloseCode::MissedEvents));
        }
        if event.event == DROP_EVENT {
            // No longer allowed here (removed from the room): leave, and say so.
            let (spelled, join_ref) = (channel.spelled.clone(), channel.join_ref.clone());
            log::info!(
                conn = self.ctx.conn.0, user = self.actor.user_id.as_str(),
                topic = event.topic.as_str();
                "dropped from the topic"
            );
            self.drop_channel(&event.topic);
            return self
                .send(&Outbound::Close {
                    join_ref: join_ref.as_deref(),
                    topic: &spelled,
                })
                .await;
        }
        match &mut channel.state {
            JoinState::Joining(buffer) => {
                if buffer.len() >= limit {
                    return Err(End::Close(CloseCode::TooSlow));
                }
                buffer.push(event);
                Ok(())
            }
            JoinState::Ready => {
                // Encoded while the channel is borrowed: no copy of its names per event.
                let mut frames = Vec::new();
                let push = pushed(channel.join_ref.as_deref(), &channel.spelled, &event);
                self.codec.encode(&push, &mut frames);
                self.ctx.chat.metrics().messages_out.inc();
                self.write_all(frames).await
            }
        }
    }

    pub(super) async fn push(
        &mut self,
        spelled: &str,
        join_ref: Option<&str>,
        event: &HubEvent,
    ) -> Result<(), End> {
        self.ctx.chat.metrics().messages_out.inc();
        self.send(&pushed(join_ref, spelled, event)).await
    }
}

/// A hub event as pushed on one channel.
fn pushed<'a>(join_ref: Option<&'a str>, spelled: &'a str, event: &'a HubEvent) -> Outbound<'a> {
    Outbound::Push {
        join_ref,
        topic: spelled,
        event: &event.event,
        payload: &event.payload,
    }
}
