//! What a push on a topic asks for: the topic and the request parsed, checked against
//! the channel's state, and routed to the domain. Work that waits on storage runs off
//! the loop (`in_flight`) and is answered when it completes.

use serde_json::Value;

use super::{Channel, Completion, End, JoinState, ReplyTo, Session};
use crate::chat::{Reason, Request, Topic};
use crate::transport::{Codec, Response};

impl<C: Codec> Session<C> {
    pub(super) async fn on_event(
        &mut self,
        join_ref: Option<String>,
        msg_ref: Option<String>,
        raw_topic: String,
        event: String,
        payload: Value,
    ) -> Result<(), End> {
        let (jr, mr) = (join_ref.as_deref(), msg_ref.as_deref());
        let topic = match Topic::parse(&raw_topic) {
            Ok(topic) => topic,
            Err(_) if event == "phx_join" => {
                return self
                    .join_reply(jr, mr, &raw_topic, Err(Reason::InvalidTopic))
                    .await;
            }
            Err(_) => {
                return self
                    .reply(jr, mr, &raw_topic, Err(Reason::InvalidTopic))
                    .await;
            }
        };
        if event == "phx_join" {
            return self
                .join(join_ref, msg_ref, raw_topic, topic, &payload)
                .await;
        }
        let key = topic.to_string();
        let ready = matches!(
            self.channels.get(&key),
            Some(Channel {
                state: JoinState::Ready,
                ..
            })
        );
        if event == "phx_leave" {
            self.drop_channel(&key);
            return self.reply(jr, mr, &raw_topic, Ok(Response::empty())).await;
        }
        if !ready {
            return self.reply(jr, mr, &raw_topic, Err(Reason::NotJoined)).await;
        }
        let request = match Request::parse(&event, &payload) {
            Ok(request) => request,
            Err(reason) => return self.reply(jr, mr, &raw_topic, Err(reason)).await,
        };
        let chat = self.ctx.chat.clone();
        let actor = self.actor.clone();
        let to = ReplyTo {
            join_ref: join_ref.clone(),
            msg_ref: msg_ref.clone(),
            topic: raw_topic.clone(),
        };
        match request {
            Request::Typing(typing) => {
                let result = chat
                    .typing(&actor, &topic, typing)
                    .map(|()| Response::empty());
                self.reply(jr, mr, &raw_topic, result).await
            }
            Request::NewMsg(msg) => {
                self.in_flight(to, async move {
                    let message = chat.send(&actor, &topic, msg).await?;
                    Ok(Response::message(&message))
                });
                Ok(())
            }
            Request::Read(up_to) => {
                // A client that reads every message as it arrives sends receipts faster
                // than storage takes them one by one; while one is stored, the next wait
                // and then go together, as "read up to the highest".
                if let Some(channel) = self.channels.get_mut(&key) {
                    if channel.read_in_flight {
                        channel.reads_waiting.push((to, up_to));
                        return Ok(());
                    }
                    channel.read_in_flight = true;
                }
                self.store_reads(key, topic, vec![(to, up_to)]);
                Ok(())
            }
            Request::History(params) => {
                self.in_flight(to, async move {
                    Ok(Response::of(&chat.history(&actor, &topic, params).await?))
                });
                Ok(())
            }
            Request::Conversations(params) => match topic {
                // A lobby is joined only by its own user.
                Topic::Lobby(user) => {
                    self.in_flight(to, async move {
                        Ok(Response::of(&chat.conversations(&user, params).await?))
                    });
                    Ok(())
                }
                _ => {
                    self.reply(jr, mr, &raw_topic, Err(Reason::UnknownEvent))
                        .await
                }
            },
            Request::EditMsg { id, body } => {
                self.in_flight(to, async move {
                    let message = chat.edit_own(&actor, &topic, id, &body).await?;
                    Ok(Response::message(&message))
                });
                Ok(())
            }
            Request::DeleteMsg(id) => {
                self.in_flight(to, async move {
                    chat.delete_own(&actor, &topic, id).await?;
                    Ok(Response::empty())
                });
                Ok(())
            }
            Request::React { id, emoji, on } => {
                self.in_flight(to, async move {
                    chat.react(&actor, &topic, id, &emoji, on).await?;
                    Ok(Response::empty())
                });
                Ok(())
            }
            Request::Report(params) => {
                self.in_flight(to, async move {
                    chat.report(&actor, &topic, params).await?;
                    Ok(Response::empty())
                });
                Ok(())
            }
            Request::Join(_) | Request::Leave => {
                self.reply(jr, mr, &raw_topic, Err(Reason::UnknownEvent))
                    .await
            }
        }
    }

    /// Runs `work` off the loop; its result is answered to `to` when it completes.
    fn in_flight(
        &mut self,
        to: ReplyTo,
        work: impl Future<Output = Result<Response, Reason>> + 'static,
    ) {
        self.pending.push(Box::pin(async move {
            Completion::Reply {
                to,
                result: work.await,
            }
        }));
    }
}
