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
    // A database that stopped answering (its host died, the network split) holds a
    // query until the connection is given up, about 10 s: not answering in time is
    // the answer.
    let ready = tokio::time::timeout(READINESS_WAIT, readiness(&state))
        .await
        .unwrap_or(Err("database_unreachable"));
    match ready {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": reason})),
    }
}

/// Why this replica should get no traffic now, if it should not.
async fn readiness(state: &AppState) -> Result<(), &'static str> {
    if state.shutdown.is_cancelled() {
        return Err("shutting_down");
    }
    if state.writer_stopped() {
        return Err("writer_stopped");
    }
    if !state.chat.hub().broker_connected() {
        return Err("broker_disconnected");
    }
    match store::blocking(state.chat.pool(), store::migrations_applied).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("migrations_pending"),
        Err(e) => {
            log::warn!("readyz: {e}");
            Err("database_unreachable")
        }
    }
}

/// How long `/readyz` and a scrape wait for the readiness check (Prometheus's default
/// scrape timeout is 10 s).
const READINESS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
    metrics
        .receipts_queue_depth
        .set(i64::try_from(state.chat.receipts().queue_depth()).unwrap_or(i64::MAX));
    metrics
        .broker_connected
        .set(i64::from(state.chat.hub().broker_connected()));
    // A database that hangs must not hang the scrape too: the gauge would vanish just
    // when it should read 0.
    let ready = tokio::time::timeout(READINESS_WAIT, readiness(&state)).await;
    metrics.ready.set(i64::from(matches!(ready, Ok(Ok(())))));
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics.encode())
}
