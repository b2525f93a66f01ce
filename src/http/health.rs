//! Liveness, readiness and metrics for the orchestrator.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::store;

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready for traffic: not shutting down, database reachable with every migration
/// applied, writer running, broker connected.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready, with the reason"))
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let not_ready = |reason: &str| {
        HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "reason": reason}))
    };
    if state.shutdown.is_cancelled() {
        return not_ready("shutting_down");
    }
    if state.writer_stopped() {
        return not_ready("writer_stopped");
    }
    if !state.chat.hub().broker_connected() {
        return not_ready("broker_disconnected");
    }
    match store::blocking(state.chat.pool(), store::migrations_applied).await {
        Ok(true) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Ok(false) => not_ready("migrations_pending"),
        Err(e) => {
            log::warn!("readyz: {e}");
            not_ready("database_unreachable")
        }
    }
}

/// OpenMetrics text, which Prometheus scrapes.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "sidechat_* metrics", content_type = "application/openmetrics-text")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let metrics = state.chat.metrics();
    metrics
        .connections
        .set(i64::try_from(state.connections.total()).unwrap_or(i64::MAX));
    metrics
        .hub_topics
        .set(i64::try_from(state.chat.hub().topic_count()).unwrap_or(i64::MAX));
    metrics
        .writer_queue_depth
        .set(i64::try_from(state.chat.writer().queue_depth()).unwrap_or(i64::MAX));
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics.encode())
}
