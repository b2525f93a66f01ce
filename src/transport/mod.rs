//! Sockets: one protocol-neutral session loop (`session`), and pure codecs that turn
//! frames into `Inbound` and `Outbound` into frames.

pub mod actioncable;
pub mod phoenix;
pub mod session;

use std::time::Duration;

use serde_json::Value;

use crate::chat::Reason;

/// What a client sent, whatever the wire protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Keeps the connection alive; answered `ok`.
    Heartbeat { msg_ref: Option<String> },
    /// An event on a topic (join, leave, new_msg, ...).
    Event {
        join_ref: Option<String>,
        msg_ref: Option<String>,
        topic: String,
        event: String,
        payload: Value,
    },
}

/// A frame that could not be decoded: the socket closes with 1007.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct DecodeError(pub &'static str);

/// A reply's `response`, as JSON text: encoded once by whoever answers and written into
/// the frame as it is. A page of history goes straight from its structs to text, never
/// through a `Value` tree that the frame would copy again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response(String);

impl Response {
    /// `{}`: done, nothing to tell.
    pub fn empty() -> Response {
        Response("{}".to_owned())
    }

    pub fn of(value: &impl serde::Serialize) -> Response {
        match serde_json::to_string(value) {
            Ok(text) => Response(text),
            // Only maps with non-string keys fail, and no response has one.
            Err(e) => {
                log::error!("a response did not encode: {e}");
                Response::empty()
            }
        }
    }

    /// `{"message": message}`.
    pub fn message(message: &crate::chat::Message) -> Response {
        #[derive(serde::Serialize)]
        struct Sent<'a> {
            message: &'a crate::chat::Message,
        }
        Response::of(&Sent { message })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the server sends, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound<'a> {
    /// The answer to a join: always sent.
    JoinReply {
        join_ref: Option<&'a str>,
        msg_ref: Option<&'a str>,
        topic: &'a str,
        /// The response as JSON text.
        result: Result<&'a str, Reason>,
    },
    /// The answer to any other event; sent only when the event carried a ref.
    Reply {
        join_ref: Option<&'a str>,
        msg_ref: Option<&'a str>,
        topic: &'a str,
        /// The response as JSON text.
        result: Result<&'a str, Reason>,
    },
    /// An event on a topic; `payload` is JSON text, encoded once for every receiver.
    Push {
        join_ref: Option<&'a str>,
        topic: &'a str,
        event: &'a str,
        payload: &'a str,
    },
    /// The server dropped the client's channel on this topic.
    Close {
        join_ref: Option<&'a str>,
        topic: &'a str,
    },
}

/// A wire protocol: frames in, frames out. Pure, so codecs are tested with tables.
pub trait Codec {
    fn decode(&self, text: &str) -> Result<Inbound, DecodeError>;
    /// Appends the frames for `outbound` (none, one, or for some protocols two).
    fn encode(&self, outbound: &Outbound<'_>, frames: &mut Vec<String>);
    /// The frame a socket opens with, if the protocol has one.
    fn welcome(&self) -> Option<String> {
        None
    }
    /// How often the server must show it is alive, for protocols whose clients do not
    /// send heartbeats themselves.
    fn keepalive_interval(&self) -> Option<Duration> {
        None
    }
    /// The frame sent every `keepalive_interval`.
    fn keepalive(&self, _now_unix: i64) -> Option<String> {
        None
    }
    /// The frame sent just before the server closes the socket with `code`.
    fn goodbye(&self, _code: CloseCode) -> Option<String> {
        None
    }
}

/// Close codes the server uses (PROTOCOL.md §2), each with what a client should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// Server shutting down: reconnect (another replica) and rejoin with `after`.
    GoingAway,
    /// The broker may have lost events of a joined topic (a Redis failover): reconnect
    /// and rejoin with `after`. Sent as 1001 too, which clients already handle so.
    MissedEvents,
    /// Malformed frame: a client bug, do not retry as is.
    Malformed,
    /// Frame too large: a client bug.
    TooLarge,
    /// Token expired: fetch a fresh token, then reconnect.
    TokenExpired,
    /// The outbound queue overflowed: reconnect and rejoin with `after`.
    TooSlow,
    /// Nothing received for `server.idle_timeout_s`: reconnect.
    Idle,
    /// Kept pushing over budget for `limits.abuse_close_s`: a client bug or abuse;
    /// reconnect only after a pause, and push less.
    TooManyRequests,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway | CloseCode::MissedEvents => 1001,
            CloseCode::Malformed => 1007,
            CloseCode::TooLarge => 1009,
            CloseCode::TokenExpired => 4001,
            CloseCode::TooSlow => 4002,
            CloseCode::Idle => 4003,
            CloseCode::TooManyRequests => 4004,
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            CloseCode::GoingAway => "server shutting down",
            CloseCode::MissedEvents => "events may have been missed: rejoin with after",
            CloseCode::Malformed => "malformed frame",
            CloseCode::TooLarge => "frame too large",
            CloseCode::TokenExpired => "token expired",
            CloseCode::TooSlow => "too slow: outbound queue overflowed",
            CloseCode::Idle => "idle timeout",
            CloseCode::TooManyRequests => "too many requests",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CloseCode;

    #[test]
    fn every_close_code_has_its_series_on_metrics_from_the_start() {
        use CloseCode::*;
        let all = [
            GoingAway,
            MissedEvents,
            Malformed,
            TooLarge,
            TokenExpired,
            TooSlow,
            Idle,
            TooManyRequests,
        ];
        for code in all {
            // A new code fails to compile here: add it to `all` and to DISCONNECT_CODES.
            match code {
                GoingAway | MissedEvents | Malformed | TooLarge | TokenExpired | TooSlow | Idle
                | TooManyRequests => {}
            }
            assert!(crate::metrics::DISCONNECT_CODES.contains(&code.code()));
        }
    }
}
