//! Read receipts on one socket: while one is being stored, the next wait, and then go
//! together as "read up to the highest".

use serde_json::json;

use super::{Completion, End, ReplyTo, Session};
use crate::chat::{MessageId, Reason, Topic};
use crate::transport::{Codec, Response};

impl<C: Codec> Session<C> {
    /// Stores receipts as one read up to their highest message id.
    pub(super) fn store_reads(
        &mut self,
        key: String,
        topic: Topic,
        requests: Vec<(ReplyTo, MessageId)>,
    ) {
        let Some(up_to) = requests.iter().map(|(_, id)| *id).max() else {
            return;
        };
        let (chat, actor) = (self.ctx.chat.clone(), self.actor.clone());
        self.pending.push(Box::pin(async move {
            let result = chat.read(&actor, &topic, up_to).await;
            Completion::Read {
                key,
                requests,
                result,
            }
        }));
    }

    /// Answers receipts stored together: the one with the highest id gets the count,
    /// the others `{"marked": 0}` (their messages are in that count). Then stores what
    /// waited meanwhile.
    pub(super) async fn finish_reads(
        &mut self,
        key: String,
        mut requests: Vec<(ReplyTo, MessageId)>,
        result: Result<usize, Reason>,
    ) -> Result<(), End> {
        let topic = self.channels.get(&key).map(|c| c.topic.clone());
        if result == Err(Reason::NotFound) && requests.len() > 1 {
            // The highest id is not in this conversation; the others may be. Each on
            // its own then, so one bad id fails only itself.
            if let Some(topic) = topic {
                for request in requests.drain(..) {
                    self.store_reads(key.clone(), topic.clone(), vec![request]);
                }
                return Ok(());
            }
        }
        let up_to = requests.iter().map(|(_, id)| *id).max();
        for (to, id) in requests {
            let answer = match &result {
                Ok(marked) if Some(id) == up_to => Ok(Response::of(&json!({"marked": marked}))),
                Ok(_) => Ok(Response::of(&json!({"marked": 0}))),
                Err(reason) => Err(*reason),
            };
            self.reply(
                to.join_ref.as_deref(),
                to.msg_ref.as_deref(),
                &to.topic,
                answer,
            )
            .await?;
        }
        let next = match self.channels.get_mut(&key) {
            Some(channel) if !channel.reads_waiting.is_empty() => Some((
                channel.topic.clone(),
                std::mem::take(&mut channel.reads_waiting),
            )),
            Some(channel) => {
                channel.read_in_flight = false;
                None
            }
            None => None,
        };
        if let Some((topic, waiting)) = next {
            self.store_reads(key, topic, waiting);
        }
        Ok(())
    }
}
