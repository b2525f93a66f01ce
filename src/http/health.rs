//! Liveness, readiness and metrics for the orchestrator.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::store;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready for traffic: not shutting down, database reachable with every migration
/// applied, writer running.
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
    match store::blocking(state.chat.pool(), store::migrations_applied).await {
        Ok(true) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Ok(false) => not_ready("migrations_pending"),
        Err(e) => {
            log::warn!("readyz: {e}");
            not_ready("database_unreachable")
        }
    }
}

/// Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let body = format!(
        "# HELP sidechat_connections Open sockets on this replica.\n\
         # TYPE sidechat_connections gauge\n\
         sidechat_connections {}\n",
        state.connections.total()
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}
