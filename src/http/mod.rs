//! HTTP: the socket upgrade, the user reads, who may talk to whom, health and metrics.
//! The route tables are in `routes`.

mod demo;
mod error;
mod health;
mod host_api;
pub mod openapi;
mod routes;
mod safety;
mod socket;
mod user_api;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::chat::Chat;
use crate::settings::Settings;

pub use error::ApiError;
pub use routes::Listener;

/// What every request handler shares.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub verifier: Verifier,
    pub chat: Arc<Chat>,
    /// Cancelled when SIGTERM (or a test) starts the drain.
    pub shutdown: CancellationToken,
    /// Every socket task; shutdown waits for them all.
    pub sockets: TaskTracker,
    pub connections: Arc<Connections>,
    pub next_conn: AtomicU64,
    pub writer_alive: Arc<AtomicBool>,
    /// Browsers' `applicationServerKey`, when Web Push is on.
    pub vapid_public_key: Option<String>,
}

impl AppState {
    pub fn writer_stopped(&self) -> bool {
        !self.writer_alive.load(Ordering::Relaxed)
    }
}

/// Open sockets per user on this replica, for `limits.connections_per_user`.
#[derive(Default)]
pub struct Connections {
    per_user: Mutex<HashMap<String, u32>>,
    total: AtomicUsize,
}

/// Holds one connection slot; gives it back on drop.
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    user: String,
}

impl Connections {
    /// Takes a slot for `user` unless they already hold `limit` (0 = unlimited).
    pub fn acquire(self: &Arc<Self>, user: &str, limit: u32) -> Option<ConnectionSlot> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_user.entry(user.to_owned()).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot {
            connections: self.clone(),
            user: user.to_owned(),
        })
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_user = self
            .connections
            .per_user
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_user.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
        self.connections.total.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn not_found() -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into()
}

/// Largest JSON body the API reads; a message body is far smaller.
const MAX_JSON_BYTES: usize = 256 * 1024;

fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError;
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the JSON body is too large",
            )
        }
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_payload",
            "send Content-Type: application/json",
        ),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            other.to_string(),
        ),
    }
}

/// A query string or path segment that does not parse.
fn invalid(err: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", err.to_string())
}

impl From<ApiError> for HttpResponse {
    fn from(e: ApiError) -> Self {
        actix_web::ResponseError::error_response(&e)
    }
}
