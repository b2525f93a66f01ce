//! ActionCable (`actioncable-v1-json`), for Rails hosts that keep `@rails/actioncable`.
//!
//! A subscription's identifier is a JSON string, `{"channel": "ChatChannel", "topic": T,
//! ...join params}`, echoed back verbatim on everything for that subscription; it plays
//! the part of Phoenix's join_ref. `perform(action, data)` becomes the event `action` with
//! `data` as its payload; a `ref` in the data asks for a `reply` message. Events reach the
//! client as `{"identifier", "message": {"event", "payload"}}`, and a successful
//! subscription is confirmed and then sent its join reply as the event `joined`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{CloseCode, Codec, DecodeError, Inbound, Outbound};

/// The sub-protocol a client must offer.
pub const PROTOCOL: &str = "actioncable-v1-json";
/// The one channel class sidechat serves.
pub const CHANNEL: &str = "ChatChannel";
/// ActionCable servers ping every 3 s; its client reconnects after about two missed.
const PING_EVERY: Duration = Duration::from_secs(3);

pub struct ActionCable;

/// The topic and join params in an identifier; an unknown channel or a missing topic
/// yields an empty topic, which the session refuses as `invalid_topic`.
fn parse_identifier(identifier: &str) -> (String, Value) {
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(identifier) else {
        return (String::new(), Value::Null);
    };
    let channel = fields.remove("channel");
    let topic = fields.remove("topic");
    match (channel, topic) {
        (Some(Value::String(channel)), Some(Value::String(topic))) if channel == CHANNEL => {
            (topic, Value::Object(fields))
        }
        _ => (String::new(), Value::Null),
    }
}

fn reference(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn to_identifier(identifier: &str, body: Map<String, Value>) -> String {
    let mut frame = Map::new();
    frame.insert("identifier".into(), Value::from(identifier));
    frame.extend(body);
    Value::Object(frame).to_string()
}

/// `{"identifier": id, "message": {"event": event, "payload": <payload JSON text>}}`,
/// built by hand so a broadcast's payload, encoded once, is not parsed again.
fn message_frame(identifier: &str, event: &str, payload: &str) -> String {
    format!(
        "{{\"identifier\":{},\"message\":{{\"event\":{},\"payload\":{}}}}}",
        Value::from(identifier),
        Value::from(event),
        payload
    )
}

impl Codec for ActionCable {
    fn decode(&self, text: &str) -> Result<Inbound, DecodeError> {
        let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(text) else {
            return Err(DecodeError("a frame is a JSON object"));
        };
        let Some(Value::String(command)) = frame.remove("command") else {
            return Err(DecodeError("a frame names its command"));
        };
        let Some(Value::String(identifier)) = frame.remove("identifier") else {
            return Err(DecodeError("a frame carries its identifier as a string"));
        };
        let (topic, params) = parse_identifier(&identifier);
        let event = |event: &str, msg_ref, payload| Inbound::Event {
            join_ref: Some(identifier.clone()),
            msg_ref,
            topic: topic.clone(),
            event: event.to_owned(),
            payload,
        };
        match command.as_str() {
            "subscribe" => Ok(event("phx_join", None, params)),
            "unsubscribe" => Ok(event("phx_leave", None, Value::Null)),
            "message" => {
                let Some(Value::String(data)) = frame.remove("data") else {
                    return Err(DecodeError("a message carries its data as a string"));
                };
                let Ok(Value::Object(mut payload)) = serde_json::from_str::<Value>(&data) else {
                    return Err(DecodeError("a message's data is a JSON object"));
                };
                let Some(Value::String(action)) = payload.remove("action") else {
                    return Err(DecodeError("a message's data names its action"));
                };
                let msg_ref = reference(payload.get("ref"));
                Ok(event(&action, msg_ref, Value::Object(payload)))
            }
            _ => Err(DecodeError("unknown command")),
        }
    }

    fn encode(&self, outbound: &Outbound<'_>, frames: &mut Vec<String>) {
        match outbound {
            Outbound::JoinReply {
                join_ref: Some(identifier),
                result,
                ..
            } => match result {
                Ok(response) => {
                    let confirm = json!({"type": "confirm_subscription"});
                    frames.push(to_identifier(identifier, object(confirm)));
                    frames.push(message_frame(identifier, "joined", response));
                }
                Err(_) => {
                    let reject = json!({"type": "reject_subscription"});
                    frames.push(to_identifier(identifier, object(reject)));
                }
            },
            Outbound::Reply {
                join_ref: Some(identifier),
                msg_ref: Some(msg_ref),
                result,
                ..
            } => {
                let payload = match result {
                    // The response is JSON text already: written in, not parsed and copied.
                    Ok(response) => format!(
                        "{{\"ref\":{},\"status\":\"ok\",\"response\":{response}}}",
                        Value::from(*msg_ref)
                    ),
                    Err(reason) => {
                        json!({"ref": msg_ref, "status": "error", "response": {"reason": reason}})
                            .to_string()
                    }
                };
                frames.push(message_frame(identifier, "reply", &payload));
            }
            Outbound::Push {
                join_ref: Some(identifier),
                event,
                payload,
                ..
            } => frames.push(message_frame(identifier, event, payload)),
            // ActionCable has no close for one subscription; a rejection ends it.
            Outbound::Close {
                join_ref: Some(identifier),
                ..
            } => {
                let reject = json!({"type": "reject_subscription"});
                frames.push(to_identifier(identifier, object(reject)));
            }
            // Without an identifier there is no subscription to speak to.
            _ => {}
        }
    }

    fn welcome(&self) -> Option<String> {
        Some(json!({"type": "welcome"}).to_string())
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        Some(PING_EVERY)
    }

    fn keepalive(&self, now_unix: i64) -> Option<String> {
        Some(json!({"type": "ping", "message": now_unix}).to_string())
    }

    fn goodbye(&self, code: CloseCode) -> Option<String> {
        let (reason, reconnect) = match code {
            CloseCode::GoingAway | CloseCode::MissedEvents => ("server_restart", true),
            CloseCode::TokenExpired => ("unauthorized", false),
            CloseCode::TooSlow | CloseCode::Idle => ("remote", true),
            CloseCode::Malformed | CloseCode::TooLarge => ("invalid_request", false),
            // A client looping over refusals would loop over reconnects too.
            CloseCode::TooManyRequests => ("too_many_requests", false),
        };
        Some(json!({"type": "disconnect", "reason": reason, "reconnect": reconnect}).to_string())
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Reason;

    const ID: &str = r#"{"channel":"ChatChannel","topic":"chat:1:2","after":5}"#;

    fn frame(command: &str, data: Option<&str>) -> String {
        let mut f = json!({"command": command, "identifier": ID});
        if let Some(data) = data {
            f["data"] = Value::from(data);
        }
        f.to_string()
    }

    #[test]
    fn commands_decode_into_events_on_the_identifiers_topic() {
        let cases = [
            (
                frame("subscribe", None),
                "phx_join",
                None,
                json!({"after": 5}),
            ),
            (frame("unsubscribe", None), "phx_leave", None, Value::Null),
            (
                frame(
                    "message",
                    Some(r#"{"action":"new_msg","body":"hi","ref":"7"}"#),
                ),
                "new_msg",
                Some("7".to_string()),
                json!({"body": "hi", "ref": "7"}),
            ),
            (
                frame("message", Some(r#"{"action":"typing","typing":true}"#)),
                "typing",
                None,
                json!({"typing": true}),
            ),
        ];
        for (text, event, msg_ref, payload) in cases {
            assert_eq!(
                ActionCable.decode(&text).unwrap(),
                Inbound::Event {
                    join_ref: Some(ID.to_string()),
                    msg_ref,
                    topic: "chat:1:2".into(),
                    event: event.into(),
                    payload,
                },
                "{text}"
            );
        }
    }

    #[test]
    fn another_channel_class_has_no_topic() {
        let text = json!({"command": "subscribe", "identifier": r#"{"channel":"Other","topic":"chat:1:2"}"#}).to_string();
        let Inbound::Event { topic, .. } = ActionCable.decode(&text).unwrap() else {
            panic!("an event");
        };
        assert_eq!(topic, "");
    }

    #[test]
    fn malformed_frames_are_refused() {
        for text in [
            "nope".to_string(),
            "[]".to_string(),
            json!({"identifier": ID}).to_string(),
            json!({"command": "subscribe"}).to_string(),
            json!({"command": "subscribe", "identifier": {"channel": "ChatChannel"}}).to_string(),
            json!({"command": "dance", "identifier": ID}).to_string(),
            frame("message", None),
            frame("message", Some("not json")),
            frame("message", Some(r#"{"body":"no action"}"#)),
        ] {
            assert!(ActionCable.decode(&text).is_err(), "{text}");
        }
    }

    fn encoded(outbound: Outbound<'_>) -> Vec<Value> {
        let mut frames = Vec::new();
        ActionCable.encode(&outbound, &mut frames);
        frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    #[test]
    fn a_join_is_confirmed_then_answered_as_joined() {
        let response = json!({"messages": [], "more": false});
        assert_eq!(
            encoded(Outbound::JoinReply {
                join_ref: Some(ID),
                msg_ref: None,
                topic: "chat:1:2",
                result: Ok(&response.to_string()),
            }),
            vec![
                json!({"identifier": ID, "type": "confirm_subscription"}),
                json!({"identifier": ID, "message": {"event": "joined", "payload": response}}),
            ]
        );
        assert_eq!(
            encoded(Outbound::JoinReply {
                join_ref: Some(ID),
                msg_ref: None,
                topic: "chat:1:2",
                result: Err(Reason::Unauthorized),
            }),
            vec![json!({"identifier": ID, "type": "reject_subscription"})]
        );
    }

    #[test]
    fn events_and_replies_arrive_as_messages() {
        assert_eq!(
            encoded(Outbound::Push {
                join_ref: Some(ID),
                topic: "chat:1:2",
                event: "new_msg",
                payload: r#"{"id":1}"#,
            }),
            vec![json!({"identifier": ID, "message": {"event": "new_msg", "payload": {"id": 1}}})]
        );
        assert_eq!(
            encoded(Outbound::Reply {
                join_ref: Some(ID),
                msg_ref: Some("6"),
                topic: "chat:1:2",
                result: Ok(r#"{"marked":1}"#),
            }),
            vec![json!({"identifier": ID, "message": {"event": "reply",
                "payload": {"ref": "6", "status": "ok", "response": {"marked": 1}}}})]
        );
        assert_eq!(
            encoded(Outbound::Reply {
                join_ref: Some(ID),
                msg_ref: Some("7"),
                topic: "chat:1:2",
                result: Err(Reason::TooLarge),
            }),
            vec![json!({"identifier": ID, "message": {"event": "reply",
                "payload": {"ref": "7", "status": "error", "response": {"reason": "too_large"}}}})]
        );
        assert!(
            encoded(Outbound::Reply {
                join_ref: Some(ID),
                msg_ref: None,
                topic: "chat:1:2",
                result: Err(Reason::TooLarge),
            })
            .is_empty()
        );
    }

    #[test]
    fn the_server_welcomes_pings_and_says_goodbye() {
        assert_eq!(ActionCable.welcome().unwrap(), r#"{"type":"welcome"}"#);
        let ping: Value = serde_json::from_str(&ActionCable.keepalive(1700).unwrap()).unwrap();
        assert_eq!(ping, json!({"type": "ping", "message": 1700}));
        let bye: Value =
            serde_json::from_str(&ActionCable.goodbye(CloseCode::GoingAway).unwrap()).unwrap();
        assert_eq!(
            bye,
            json!({"type": "disconnect", "reason": "server_restart", "reconnect": true})
        );
    }
}
