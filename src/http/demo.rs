//! The demo page (PROTOCOL.md §9), compiled into the binary: no build step, no files
//! to ship. Served only where `server.demo = true` (`sidechat dev` turns it on).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use super::AppState;
use super::error::ApiError;

const PAGE: &str = include_str!("../../assets/demo/index.html");
/// The official `phoenix` client, vendored with its licence (assets/vendor/phoenix).
const PHOENIX_JS: &str = include_str!("../../assets/vendor/phoenix/phoenix.min.js");

fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.settings.server.demo {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the demo page is off (server.demo = false)",
        ))
    }
}

/// The demo page.
#[utoipa::path(get, path = "/demo", tag = "demo", responses((status = 200, description = "The demo page", content_type = "text/html"), (status = 404, description = "server.demo is off")))]
pub async fn page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    enabled(&state)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(PAGE))
}

/// The Phoenix client the demo page runs on.
#[utoipa::path(get, path = "/demo/phoenix.min.js", tag = "demo", responses((status = 200, description = "phoenix.js", content_type = "text/javascript")))]
pub async fn phoenix_js(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    enabled(&state)?;
    Ok(HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(PHOENIX_JS))
}
