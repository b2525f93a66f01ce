//! Joining a topic: checks, the subscription taken before the history query (locally and
//! through the broker, so nothing falls between the two), and the reply, presence and
//! buffered events once it loads.

use serde_json::Value;
use tokio::time::Instant;

use super::{Channel, Completion, End, JoinState, Session};
use crate::chat::{JoinReply, Reason, Request, Topic};
use crate::hub::Subscriber;
use crate::metrics::KindLabel;
use crate::transport::{Codec, Outbound, Response};

/// The longest a join waits for the broker to subscribe this replica to its topic.
const BROKER_SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl<C: Codec> Session<C> {
    pub(super) async fn join(
        &mut self,
        join_ref: Option<String>,
        msg_ref: Option<String>,
        spelled: String,
        topic: Topic,
        payload: &Value,
    ) -> Result<(), End> {
        let (jr, mr) = (join_ref.as_deref(), msg_ref.as_deref());
        let params = match Request::parse("phx_join", payload) {
            Ok(Request::Join(params)) => params,
            Ok(_) => {
                return self
                    .join_reply(jr, mr, &spelled, Err(Reason::InvalidPayload))
                    .await;
            }
            Err(reason) => return self.join_reply(jr, mr, &spelled, Err(reason)).await,
        };
        if !topic.admits(&self.actor) {
            return self
                .join_reply(jr, mr, &spelled, Err(Reason::Unauthorized))
                .await;
        }
        let key = topic.to_string();
        // Joining again replaces the earlier channel, as Phoenix does.
        if let Some(old) = self.channels.get(&key) {
            let (old_topic, old_ref) = (old.spelled.clone(), old.join_ref.clone());
            self.drop_channel(&key);
            self.send(&Outbound::Close {
                join_ref: old_ref.as_deref(),
                topic: &old_topic,
            })
            .await?;
        }
        let limit = self.ctx.limits.joins_per_connection;
        if limit > 0 && self.channels.len() >= limit {
            return self
                .join_reply(jr, mr, &spelled, Err(Reason::RateLimited))
                .await;
        }
        // Subscribe before the history query: whatever commits in between waits in
        // the channel's buffer instead of falling into the gap.
        self.ctx.chat.hub().subscribe(
            &key,
            Subscriber {
                conn: self.ctx.conn,
                user_id: self.actor.user_id.as_str().to_owned(),
                queue: self.queue_tx.clone(),
                overflowed: self.overflowed.clone(),
            },
        );
        self.ctx.chat.metrics().channels.inc();
        self.channels.insert(
            key.clone(),
            Channel {
                spelled,
                topic: topic.clone(),
                join_ref: join_ref.clone(),
                state: JoinState::Joining(Vec::new()),
                reads_waiting: Vec::new(),
                read_in_flight: false,
                presence_announced: false,
            },
        );
        let chat = self.ctx.chat.clone();
        let actor = self.actor.clone();
        let started = Instant::now();
        let subscribed = chat.hub().subscribed(&key);
        self.pending.push(Box::pin(async move {
            // Other replicas' events reach this one before history is read. A broker
            // that takes longer delays the join no more than this; an event missed then
            // is read back at the next join, as with a broker that is down.
            let _ = tokio::time::timeout(BROKER_SUBSCRIBE_WAIT, subscribed).await;
            let result = chat.join(&actor, &topic, params).await;
            Completion::Joined {
                key,
                join_ref,
                msg_ref,
                result,
                started,
            }
        }));
        Ok(())
    }

    pub(super) async fn finish_join(
        &mut self,
        key: String,
        join_ref: Option<String>,
        msg_ref: Option<String>,
        result: Result<JoinReply, Reason>,
        started: Instant,
    ) -> Result<(), End> {
        // The client may have left or joined again while the history loaded.
        let Some(channel) = self.channels.get(&key) else {
            return Ok(());
        };
        if channel.join_ref != join_ref || matches!(channel.state, JoinState::Ready) {
            return Ok(());
        }
        let (spelled, topic) = (channel.spelled.clone(), channel.topic.clone());
        let (jr, mr) = (join_ref.as_deref(), msg_ref.as_deref());
        let reply = match result {
            Ok(reply) => reply,
            Err(reason) => {
                self.drop_channel(&key);
                return self.join_reply(jr, mr, &spelled, Err(reason)).await;
            }
        };
        let newest_in_history = match &reply {
            JoinReply::Conversation(page) => page.messages.iter().map(|m| m.id).max(),
            JoinReply::Lobby(_) | JoinReply::Inbox(_) => None,
        };
        self.join_reply(jr, mr, &spelled, Ok(Response::of(&reply)))
            .await?;
        log::debug!(
            conn = self.ctx.conn.0, user = self.actor.user_id.as_str(), topic = key.as_str();
            "joined"
        );
        let kind = match topic {
            Topic::Lobby(_) => "lobby",
            Topic::Inbox => "inbox",
            _ => "conversation",
        };
        self.ctx
            .chat
            .metrics()
            .join_seconds
            .get_or_create(&KindLabel { kind })
            .observe(started.elapsed().as_secs_f64());
        if topic.is_conversation() {
            let entered = self
                .ctx
                .chat
                .enter(&topic, self.ctx.conn, &self.actor)
                .await;
            if let Some(channel) = self.channels.get_mut(&key) {
                channel.presence_announced = entered.announced;
            }
            self.send(&Outbound::Push {
                join_ref: jr,
                topic: &spelled,
                event: "presence_state",
                payload: &entered.state.to_string(),
            })
            .await?;
        }
        let buffered = match self.channels.get_mut(&key) {
            Some(channel) => match std::mem::replace(&mut channel.state, JoinState::Ready) {
                JoinState::Joining(buffer) => buffer,
                JoinState::Ready => Vec::new(),
            },
            None => Vec::new(),
        };
        for event in buffered {
            // History already holds these; presence_state already counts those diffs.
            let in_history = event.event == "new_msg"
                && event
                    .message_id
                    .zip(newest_in_history)
                    .is_some_and(|(id, max)| id <= max);
            if in_history || event.event == "presence_diff" {
                continue;
            }
            self.push(&spelled, jr, &event).await?;
        }
        Ok(())
    }
}
