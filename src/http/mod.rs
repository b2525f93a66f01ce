//! HTTP: the socket upgrade, the user reads, who may talk to whom, health and metrics.
//! The whole route table is `routes`.

mod demo;
mod error;
mod health;
mod host_api;
pub mod openapi;
mod safety;
mod socket;
mod user_api;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::chat::Chat;
use crate::settings::Settings;

pub use error::ApiError;

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

/// Every route the service answers.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|err, _| invalid(err).into()))
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_JSON_BYTES)
                .error_handler(|err, _| json_error(err).into()),
        )
        .app_data(web::PathConfig::default().error_handler(|err, _| invalid(err).into()))
        .route("/socket/websocket", web::get().to(socket::phoenix))
        .route("/cable", web::get().to(socket::actioncable))
        .route("/api/v1/messages", web::post().to(host_api::post_message))
        .route(
            "/api/v1/messages/{id}",
            web::patch().to(host_api::patch_message),
        )
        .route(
            "/api/v1/messages/{id}",
            web::delete().to(host_api::delete_message),
        )
        .route("/api/v1/rooms/{rid}", web::put().to(host_api::put_room))
        .route("/api/v1/rooms/{rid}", web::get().to(host_api::get_room))
        .route(
            "/api/v1/rooms/{rid}/members/{uid}",
            web::put().to(host_api::put_member),
        )
        .route(
            "/api/v1/rooms/{rid}/members/{uid}",
            web::delete().to(host_api::delete_member),
        )
        .route(
            "/api/v1/users/{uid}/unread",
            web::get().to(host_api::user_unread),
        )
        .route(
            "/api/v1/users/{uid}/conversations",
            web::get().to(host_api::user_conversations),
        )
        .route(
            "/api/v1/users/{uid}",
            web::delete().to(host_api::erase_user),
        )
        .route(
            "/api/v1/conversations/{topic}/messages",
            web::get().to(host_api::conversation_messages),
        )
        .route(
            "/api/v1/users/{uid}/blocks",
            web::get().to(safety::user_blocks),
        )
        .route(
            "/api/v1/users/{uid}/blocks/{other}",
            web::put().to(safety::host_block),
        )
        .route(
            "/api/v1/users/{uid}/blocks/{other}",
            web::delete().to(safety::host_unblock),
        )
        .route("/api/v1/chats/{a}/{b}", web::put().to(safety::open_chat))
        .route(
            "/api/v1/chats/{a}/{b}",
            web::delete().to(safety::close_chat),
        )
        .route("/api/v1/reports", web::get().to(safety::reports))
        .route("/v1/me/blocks", web::get().to(safety::my_blocks))
        .route("/v1/me/blocks/{uid}", web::put().to(safety::block))
        .route("/v1/me/blocks/{uid}", web::delete().to(safety::unblock))
        .route("/api/openapi.json", web::get().to(openapi::openapi_json))
        .route("/demo", web::get().to(demo::page))
        .route("/demo/phoenix.min.js", web::get().to(demo::phoenix_js))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/v1/me/unread", web::get().to(user_api::my_unread))
        .route(
            "/v1/me/conversations",
            web::get().to(user_api::my_conversations),
        )
        .route(
            "/v1/push/public-key",
            web::get().to(user_api::push_public_key),
        )
        .route(
            "/v1/me/push-subscriptions",
            web::post().to(user_api::subscribe_push),
        )
        .route(
            "/v1/me/push-subscriptions",
            web::delete().to(user_api::unsubscribe_push),
        )
        .route(
            "/v1/conversations/{topic}/messages",
            web::get().to(user_api::conversation_messages),
        )
        .default_service(web::to(not_found));
}

impl From<ApiError> for HttpResponse {
    fn from(e: ApiError) -> Self {
        actix_web::ResponseError::error_response(&e)
    }
}
