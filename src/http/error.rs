//! The JSON error every HTTP route answers with: `{"error": "...", "reason": "..."}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::auth::AuthError;
use crate::chat::Reason;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
    /// Seconds a client should wait before asking again (`Retry-After`), for 429s.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            reason,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// The same error, telling the client when to ask again.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.reason)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
        }
        response.json(json!({"error": self.message, "reason": self.reason}))
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, e.reason(), e.to_string())
    }
}

impl From<Reason> for ApiError {
    fn from(reason: Reason) -> Self {
        let (status, message) = match reason {
            Reason::Unauthorized => (StatusCode::FORBIDDEN, "not allowed on this topic"),
            Reason::InvalidTopic => (StatusCode::BAD_REQUEST, "the topic does not parse"),
            Reason::NotFound => (StatusCode::NOT_FOUND, "not found"),
            Reason::InvalidPayload => (StatusCode::BAD_REQUEST, "invalid request"),
            Reason::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too large"),
            Reason::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate limited"),
            Reason::UnknownEvent => (StatusCode::BAD_REQUEST, "not supported on this topic"),
            Reason::NotJoined => (StatusCode::BAD_REQUEST, "not joined"),
            Reason::Blocked => (StatusCode::FORBIDDEN, "one of these users blocks the other"),
            Reason::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; nothing was stored",
            ),
        };
        ApiError::new(status, reason.as_str(), message)
    }
}
