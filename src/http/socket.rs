//! The WebSocket upgrade: every check that can refuse a client happens here, before
//! the upgrade, with a JSON error the client can read.

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::user_api::request_token;
use crate::auth::AuthError;
use crate::hub::ConnId;
use crate::transport::Codec;
use crate::transport::actioncable::{self, ActionCable};
use crate::transport::phoenix::PhoenixV2;
use crate::transport::session::{self, SessionContext, SessionLimits};

#[derive(Deserialize)]
struct SocketQuery {
    vsn: Option<String>,
}

/// Whether the page that opened the socket may: exact match against
/// `server.allowed_origins`; no list, or no Origin header (not a browser), passes.
fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get(actix_web::http::header::ORIGIN) {
        None => true,
        Some(origin) => origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a == o)),
    }
}

/// `GET /socket/websocket?vsn=2.0.0&token=...`: Phoenix Channels V2.
#[utoipa::path(
    get, path = "/socket/websocket", tag = "socket",
    params(
        ("token" = String, Query, description = "The user's token (HMAC or JWT)"),
        ("vsn" = Option<String>, Query, description = "2.0.0"),
    ),
    responses(
        (status = 101, description = "Upgraded to a WebSocket speaking Phoenix Channels V2"),
        (status = 400, description = "Not a WebSocket, or an unsupported vsn", body = super::host_api::ErrorBody),
        (status = 401, description = "Missing, malformed, badly signed or expired token", body = super::host_api::ErrorBody),
        (status = 403, description = "Origin not allowed", body = super::host_api::ErrorBody),
        (status = 429, description = "Too many sockets for this user", body = super::host_api::ErrorBody),
        (status = 503, description = "Shutting down", body = super::host_api::ErrorBody),
    )
)]
pub async fn phoenix(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    refuse_while_shutting_down(&state)?;
    let query = web::Query::<SocketQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or(SocketQuery { vsn: None });
    if let Some(vsn) = &query.vsn
        && !vsn.starts_with("2.")
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_version",
            "only the Phoenix V2 serializer (vsn=2.0.0) is supported",
        ));
    }
    open(PhoenixV2, &req, body, &state, &[]).await
}

/// `GET /cable?token=...` with sub-protocol `actioncable-v1-json`.
#[utoipa::path(
    get, path = "/cable", tag = "socket",
    params(("token" = String, Query, description = "The user's token (HMAC or JWT)")),
    responses(
        (status = 101, description = "Upgraded to a WebSocket speaking actioncable-v1-json"),
        (status = 401, description = "Missing, malformed, badly signed or expired token", body = super::host_api::ErrorBody),
        (status = 403, description = "Origin not allowed", body = super::host_api::ErrorBody),
        (status = 429, description = "Too many sockets for this user", body = super::host_api::ErrorBody),
        (status = 503, description = "Shutting down", body = super::host_api::ErrorBody),
    )
)]
pub async fn actioncable(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    refuse_while_shutting_down(&state)?;
    open(ActionCable, &req, body, &state, &[actioncable::PROTOCOL]).await
}

/// The checks every socket passes (origin, token, connection limit), then the upgrade
/// and the session task, speaking `codec`.
async fn open<C: Codec + 'static>(
    codec: C,
    req: &HttpRequest,
    body: web::Payload,
    state: &web::Data<AppState>,
    protocols: &[&str],
) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    if !origin_allowed(req, &settings.server.allowed_origins) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not open sockets",
        ));
    }
    let token = request_token(req).ok_or(AuthError::Missing)?;
    let identity = state
        .verifier
        .verify(&token, chrono::Utc::now().timestamp())?;
    let slot = state
        .connections
        .acquire(
            identity.user_id.as_str(),
            settings.limits.connections_per_user,
        )
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "this user has too many open sockets",
            )
        })?;

    let (response, ws, stream) = actix_ws::handle_with_protocols(req, body, protocols)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "not_a_websocket", e.to_string()))?;
    let max_frame = settings.limits.max_frame_bytes;
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    let ctx = SessionContext {
        conn: ConnId(state.next_conn.fetch_add(1, Ordering::Relaxed)),
        identity,
        chat: state.chat.clone(),
        limits: SessionLimits {
            outbound_queue: settings.limits.outbound_queue,
            joins_per_connection: usize::try_from(settings.limits.joins_per_connection)
                .unwrap_or(usize::MAX),
            idle_timeout: settings.idle_timeout(),
            disconnect_on_expiry: settings.auth.disconnect_on_expiry,
            abuse_close: settings.abuse_close(),
        },
        shutdown: state.shutdown.clone(),
    };
    actix_web::rt::spawn(state.sockets.track_future(async move {
        let _slot = slot;
        session::run(codec, ws, stream, ctx).await;
    }));
    Ok(response)
}

fn refuse_while_shutting_down(state: &AppState) -> Result<(), ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this replica is shutting down; connect again",
        ));
    }
    Ok(())
}
