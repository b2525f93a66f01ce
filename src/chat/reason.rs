//! The error reasons of PROTOCOL.md §2: the strings clients branch on.

use serde::Serialize;

/// Why a request was refused. Serialised snake_case; the strings are public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The actor may not join or act on this topic.
    #[error("unauthorized")]
    Unauthorized,
    /// The topic string does not parse.
    #[error("invalid_topic")]
    InvalidTopic,
    /// The room, message or conversation does not exist.
    #[error("not_found")]
    NotFound,
    /// The payload is missing a field or holds a wrong type or value.
    #[error("invalid_payload")]
    InvalidPayload,
    /// A body over `chat.max_body_bytes`.
    #[error("too_large")]
    TooLarge,
    /// Over a limit of `[limits]`.
    #[error("rate_limited")]
    RateLimited,
    /// An event this topic does not handle.
    #[error("unknown_event")]
    UnknownEvent,
    /// A push on a topic this socket has not joined.
    #[error("not_joined")]
    NotJoined,
    /// Storage is down; nothing was stored.
    #[error("unavailable")]
    Unavailable,
    /// One of the two users of a `chat:` blocks the other; nothing was stored.
    #[error("blocked")]
    Blocked,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unauthorized => "unauthorized",
            Reason::InvalidTopic => "invalid_topic",
            Reason::NotFound => "not_found",
            Reason::InvalidPayload => "invalid_payload",
            Reason::TooLarge => "too_large",
            Reason::RateLimited => "rate_limited",
            Reason::UnknownEvent => "unknown_event",
            Reason::NotJoined => "not_joined",
            Reason::Unavailable => "unavailable",
            Reason::Blocked => "blocked",
        }
    }
}

impl From<super::BodyError> for Reason {
    fn from(e: super::BodyError) -> Self {
        match e {
            super::BodyError::Empty => Reason::InvalidPayload,
            super::BodyError::TooLarge => Reason::TooLarge,
            super::BodyError::Unstorable => Reason::InvalidPayload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_serialise_to_the_protocol_strings() {
        let all = [
            (Reason::Unauthorized, "unauthorized"),
            (Reason::InvalidTopic, "invalid_topic"),
            (Reason::NotFound, "not_found"),
            (Reason::InvalidPayload, "invalid_payload"),
            (Reason::TooLarge, "too_large"),
            (Reason::RateLimited, "rate_limited"),
            (Reason::UnknownEvent, "unknown_event"),
            (Reason::NotJoined, "not_joined"),
            (Reason::Unavailable, "unavailable"),
            (Reason::Blocked, "blocked"),
        ];
        for (reason, wire) in all {
            assert_eq!(serde_json::to_value(reason).unwrap(), wire);
            assert_eq!(reason.as_str(), wire);
            assert_eq!(reason.to_string(), wire);
            assert!(crate::metrics::ERROR_REASONS.contains(&wire), "{wire}");
        }
    }
}
