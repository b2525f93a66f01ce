//! Phoenix Channels V2 JSON: every frame is `[join_ref, ref, topic, event, payload]`.

use serde_json::Value;

use super::{Codec, DecodeError, Inbound, Outbound};

pub struct PhoenixV2;

/// Refs are strings from the official client; numbers are accepted as their text.
fn reference(value: &Value) -> Result<Option<String>, DecodeError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(DecodeError("join_ref and ref are strings or null")),
    }
}

/// Appends `s` as a JSON string. Topics, events and refs rarely need escaping, so the
/// common case is a copy; the rest goes through serde_json.
fn push_json_str(frame: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        frame.push('"');
        frame.push_str(s);
        frame.push('"');
    } else {
        frame.push_str(&Value::from(s).to_string());
    }
}

fn push_json_ref(frame: &mut String, r: Option<&str>) {
    match r {
        Some(r) => push_json_str(frame, r),
        None => frame.push_str("null"),
    }
}

/// One frame, `[join_ref, ref, topic, event, payload]`, its payload JSON text already,
/// written into one string sized for it.
fn frame(
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &[&str],
) -> String {
    let refs = join_ref.map_or(4, str::len) + msg_ref.map_or(4, str::len);
    let payload_len: usize = payload.iter().map(|part| part.len()).sum();
    let mut frame = String::with_capacity(refs + topic.len() + event.len() + payload_len + 16);
    frame.push('[');
    push_json_ref(&mut frame, join_ref);
    frame.push(',');
    push_json_ref(&mut frame, msg_ref);
    frame.push(',');
    push_json_str(&mut frame, topic);
    frame.push(',');
    push_json_str(&mut frame, event);
    frame.push(',');
    for part in payload {
        frame.push_str(part);
    }
    frame.push(']');
    frame
}

impl Codec for PhoenixV2 {
    fn decode(&self, text: &str) -> Result<Inbound, DecodeError> {
        let value: Value = serde_json::from_str(text).map_err(|_| DecodeError("not JSON"))?;
        let Value::Array(mut parts) = value else {
            return Err(DecodeError("a frame is a JSON array"));
        };
        if parts.len() != 5 {
            return Err(DecodeError("a frame has 5 elements"));
        }
        let payload = parts.pop().unwrap_or(Value::Null);
        let (Some(Value::String(event)), Some(Value::String(topic))) = (parts.pop(), parts.pop())
        else {
            return Err(DecodeError("topic and event are strings"));
        };
        let msg_ref = reference(parts.get(1).unwrap_or(&Value::Null))?;
        let join_ref = reference(parts.first().unwrap_or(&Value::Null))?;
        if topic == "phoenix" && event == "heartbeat" {
            return Ok(Inbound::Heartbeat { msg_ref });
        }
        Ok(Inbound::Event {
            join_ref,
            msg_ref,
            topic,
            event,
            payload,
        })
    }

    fn encode(&self, outbound: &Outbound<'_>, frames: &mut Vec<String>) {
        let encoded = match outbound {
            // Phoenix clients only wait for replies to pushes that carried a ref.
            Outbound::Reply { msg_ref: None, .. } | Outbound::JoinReply { msg_ref: None, .. } => {
                return;
            }
            Outbound::Reply {
                join_ref,
                msg_ref,
                topic,
                result,
            }
            | Outbound::JoinReply {
                join_ref,
                msg_ref,
                topic,
                result,
            } => {
                // The response is JSON text already: written in, not parsed and copied.
                match result {
                    Ok(response) => frame(
                        *join_ref,
                        *msg_ref,
                        topic,
                        "phx_reply",
                        &["{\"status\":\"ok\",\"response\":", response, "}"],
                    ),
                    Err(reason) => {
                        let payload =
                            serde_json::json!({"status": "error", "response": {"reason": reason}})
                                .to_string();
                        frame(*join_ref, *msg_ref, topic, "phx_reply", &[&payload])
                    }
                }
            }
            Outbound::Push {
                join_ref,
                topic,
                event,
                payload,
            } => frame(*join_ref, None, topic, event, &[payload]),
            Outbound::Close { join_ref, topic } => {
                frame(*join_ref, *join_ref, topic, "phx_close", &["{}"])
            }
        };
        frames.push(encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Reason;
    use serde_json::json;

    #[test]
    fn frames_decode_into_inbound() {
        let cases = [
            (
                r#"[null,"1","phoenix","heartbeat",{}]"#,
                Inbound::Heartbeat {
                    msg_ref: Some("1".into()),
                },
            ),
            (
                r#"["3","3","chat:1:2","phx_join",{"limit":10}]"#,
                Inbound::Event {
                    join_ref: Some("3".into()),
                    msg_ref: Some("3".into()),
                    topic: "chat:1:2".into(),
                    event: "phx_join".into(),
                    payload: json!({"limit": 10}),
                },
            ),
            (
                r#"[1,2,"user:1","new_msg",null]"#,
                Inbound::Event {
                    join_ref: Some("1".into()),
                    msg_ref: Some("2".into()),
                    topic: "user:1".into(),
                    event: "new_msg".into(),
                    payload: Value::Null,
                },
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(PhoenixV2.decode(frame).unwrap(), expected, "{frame}");
        }
    }

    #[test]
    fn malformed_frames_are_refused() {
        for frame in [
            "",
            "not json",
            "{}",
            r#"{"topic":"phoenix"}"#,
            "[]",
            r#"[null,null,"t","e"]"#,
            r#"[null,null,"t","e",{},6]"#,
            r#"[null,null,5,"e",{}]"#,
            r#"[null,null,"t",null,{}]"#,
            r#"[{},null,"t","e",{}]"#,
            r#"[null,[1],"t","e",{}]"#,
        ] {
            assert!(PhoenixV2.decode(frame).is_err(), "{frame}");
        }
    }

    #[test]
    fn outbound_encodes_as_v2_frames() {
        let response = json!({"messages": [], "more": false}).to_string();
        let cases = [
            (
                Outbound::Reply {
                    join_ref: Some("3"),
                    msg_ref: Some("4"),
                    topic: "chat:1:2",
                    result: Ok(&response),
                },
                json!(["3", "4", "chat:1:2", "phx_reply", {"status": "ok", "response": {"messages": [], "more": false}}]),
            ),
            (
                Outbound::Reply {
                    join_ref: None,
                    msg_ref: Some("9"),
                    topic: "room:x",
                    result: Err(Reason::NotJoined),
                },
                json!([null, "9", "room:x", "phx_reply", {"status": "error", "response": {"reason": "not_joined"}}]),
            ),
            (
                Outbound::Push {
                    join_ref: None,
                    topic: "chat:2:1",
                    event: "new_msg",
                    payload: r#"{"id":1}"#,
                },
                json!([null, null, "chat:2:1", "new_msg", {"id": 1}]),
            ),
            (
                Outbound::Close {
                    join_ref: Some("3"),
                    topic: "t\"q",
                },
                json!(["3", "3", "t\"q", "phx_close", {}]),
            ),
        ];
        for (outbound, expected) in cases {
            let mut frames = Vec::new();
            PhoenixV2.encode(&outbound, &mut frames);
            assert_eq!(frames.len(), 1);
            let parsed: Value = serde_json::from_str(&frames[0]).unwrap();
            assert_eq!(parsed, expected, "{}", frames[0]);
        }
    }

    #[test]
    fn names_that_need_escaping_are_escaped() {
        let mut frames = Vec::new();
        let (join_ref, topic, event) = ("a\\b", "t\"\n\u{1}é", "e\tv");
        PhoenixV2.encode(
            &Outbound::Push {
                join_ref: Some(join_ref),
                topic,
                event,
                payload: "{}",
            },
            &mut frames,
        );
        let parsed: Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(parsed, json!([join_ref, null, topic, event, {}]));
    }

    #[test]
    fn replies_without_a_ref_are_not_sent() {
        let mut frames = Vec::new();
        PhoenixV2.encode(
            &Outbound::Reply {
                join_ref: None,
                msg_ref: None,
                topic: "t",
                result: Err(Reason::NotJoined),
            },
            &mut frames,
        );
        assert!(frames.is_empty());
    }
}
