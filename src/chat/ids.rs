//! Identifiers and message parts, parsed once at the edge. Past `chat/`, code holds these
//! types, never raw strings.

use std::fmt;

use serde::Serialize;

/// Why a value was refused; the text is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);

/// The longest user or room id (PROTOCOL.md §1).
pub const MAX_ID_LEN: usize = 64;

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-')
}

fn parse_id(raw: &str) -> Result<String, ParseError> {
    if raw.is_empty() || raw.len() > MAX_ID_LEN {
        return Err(ParseError("an id is 1 to 64 characters"));
    }
    if !raw.chars().all(is_id_char) {
        return Err(ParseError("an id may hold only A-Z a-z 0-9 _ . @ -"));
    }
    Ok(raw.to_owned())
}

/// A user id from the host app: 1 to 64 of `A-Z a-z 0-9 _ . @ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        parse_id(raw).map(UserId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group room id, with the same alphabet as a user id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RoomId(String);

impl RoomId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        parse_id(raw).map(RoomId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a token's `role` grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    User,
    /// A site's staff: the support inbox and every `support:` conversation.
    Staff,
}

impl Role {
    /// `"staff"` grants staff; any other role, or none, is an ordinary user.
    pub fn from_claim(claim: Option<&str>) -> Role {
        match claim {
            Some("staff") => Role::Staff,
            _ => Role::User,
        }
    }
}

/// Who is acting: the verified user behind a socket or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub role: Role,
    /// The token's display name (`display_name`), if it has one.
    pub name: Option<String>,
}

/// The longest display name kept, in bytes; a longer one is cut at a character boundary.
pub const MAX_NAME_BYTES: usize = 200;

/// A display name as stored and shown: trimmed, without NUL, at most `MAX_NAME_BYTES`;
/// None when nothing is left.
pub fn display_name(raw: &str) -> Option<String> {
    let trimmed = raw.trim().replace('\0', "");
    let mut end = trimmed.len().min(MAX_NAME_BYTES);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let name = trimmed.get(..end).unwrap_or("").trim_end();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Whether `text` can be stored: Postgres text and jsonb refuse the NUL character, and a
/// refused row would fail the writer's whole batch.
pub fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// Whether `value` can be stored and read back: every string, keys included, is
/// `storable`, and every number is well inside an f64's range. jsonb keeps a number as
/// exact decimal digits; one near f64::MAX comes back as 309 digits that the JSON reader
/// refuses, and the edit or post that stored it would fail after the fact.
pub fn storable_json(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => storable(s),
        Value::Array(items) => items.iter().all(storable_json),
        Value::Object(map) => map.iter().all(|(k, v)| storable(k) && storable_json(v)),
        Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.abs() < 1e300),
        Value::Null | Value::Bool(_) => true,
    }
}

/// A message body: UTF-8 without NUL, trimmed, 1 to `max_bytes` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body(String);

impl Body {
    pub fn parse(raw: &str, max_bytes: usize) -> Result<Self, BodyError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(BodyError::Empty);
        }
        if trimmed.len() > max_bytes {
            return Err(BodyError::TooLarge);
        }
        if !storable(trimmed) {
            return Err(BodyError::Unstorable);
        }
        Ok(Body(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    Empty,
    TooLarge,
    /// Holds a character Postgres cannot store (NUL).
    Unstorable,
}

/// The longest `client_ref`; a UUID needs 36.
pub const MAX_CLIENT_REF_LEN: usize = 128;

/// A client's own id for a message, which makes a resend idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientRef(String);

impl ClientRef {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty() || raw.len() > MAX_CLIENT_REF_LEN {
            return Err(ParseError("client_ref is 1 to 128 bytes"));
        }
        if raw.chars().any(char::is_control) {
            return Err(ParseError("client_ref may not hold control characters"));
        }
        Ok(ClientRef(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored message's id: positive, growing in broadcast order within a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MessageId(i64);

impl MessageId {
    pub fn parse(raw: i64) -> Result<Self, ParseError> {
        if raw < 1 {
            return Err(ParseError("a message id is a positive integer"));
        }
        Ok(MessageId(raw))
    }
    /// For ids read back from our own table.
    pub fn from_stored(id: i64) -> Self {
        MessageId(id)
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_protocol_alphabet() {
        for ok in ["1", "alice", "a.b@c-d_e", &"x".repeat(64)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a:b", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_are_trimmed_and_bounded_in_bytes() {
        assert_eq!(Body::parse("  hi \n", 10).unwrap().as_str(), "hi");
        assert_eq!(Body::parse(" \t ", 10), Err(BodyError::Empty));
        // Four bytes of UTF-8 in one character: the limit counts bytes.
        assert_eq!(Body::parse("😀😀😀", 11), Err(BodyError::TooLarge));
        assert_eq!(Body::parse("a\0b", 11), Err(BodyError::Unstorable));
        assert!(storable_json(
            &serde_json::json!({"a": ["b", 1, null, {"c": "d"}]})
        ));
        assert!(!storable_json(&serde_json::json!({"a": ["b\0"]})));
        assert!(!storable_json(&serde_json::json!({"a\0": 1})));
        assert!(storable_json(
            &serde_json::json!({"n": [u64::MAX, i64::MIN, 1.5e299]})
        ));
        assert!(!storable_json(
            &serde_json::json!({"n": [1.797_693_134_862_315_7e308]})
        ));
        assert!(Body::parse("😀😀😀", 12).is_ok());
    }

    #[test]
    fn message_ids_are_positive() {
        assert!(MessageId::parse(0).is_err());
        assert!(MessageId::parse(-5).is_err());
        assert_eq!(MessageId::parse(7).unwrap().get(), 7);
    }

    #[test]
    fn only_the_staff_claim_grants_staff() {
        assert_eq!(Role::from_claim(Some("staff")), Role::Staff);
        assert_eq!(Role::from_claim(Some("admin")), Role::User);
        assert_eq!(Role::from_claim(None), Role::User);
    }
}
