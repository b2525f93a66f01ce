//! The route tables. With `server.internal_port` set, the service listens twice: the
//! public listener serves browsers (sockets, the user API, the demo) and the internal one
//! what only the host's servers and Prometheus should reach (the host API, its OpenAPI
//! document, `/metrics`). A route that is not in a listener's table does not exist
//! there: it answers 404 like any unknown path, whatever its spelling. Both answer the
//! probes.

use actix_web::web;

use super::{
    MAX_JSON_BYTES, demo, health, host_api, invalid, json_error, not_found, openapi, safety,
    socket, user_api,
};

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The only listener: every route (no `server.internal_port`).
    All,
    /// Browsers' routes.
    Public,
    /// The host's and the operator's routes.
    Internal,
}

impl Listener {
    /// Configures an `App` with this listener's routes.
    pub fn routes(self, cfg: &mut web::ServiceConfig) {
        extractors(cfg);
        probes(cfg);
        if self != Listener::Internal {
            public(cfg);
        }
        if self != Listener::Public {
            internal(cfg);
        }
        cfg.default_service(web::to(not_found));
    }
}

/// Bad input in a query, body or path is answered as every API error is.
fn extractors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|err, _| invalid(err).into()))
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_JSON_BYTES)
                .error_handler(|err, _| json_error(err).into()),
        )
        .app_data(web::PathConfig::default().error_handler(|err, _| invalid(err).into()));
}

/// Liveness and readiness: on every listener, so a probe works on either port.
fn probes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
}

/// What browsers reach: sockets, the user API (a user's token), the demo.
fn public(cfg: &mut web::ServiceConfig) {
    cfg.route("/socket/websocket", web::get().to(socket::phoenix))
        .route("/cable", web::get().to(socket::actioncable))
        .route("/v1/me/blocks", web::get().to(safety::my_blocks))
        .route("/v1/me/blocks/{uid}", web::put().to(safety::block))
        .route("/v1/me/blocks/{uid}", web::delete().to(safety::unblock))
        .route("/demo", web::get().to(demo::page))
        .route("/demo/phoenix.min.js", web::get().to(demo::phoenix_js))
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
        );
}

/// What the host's servers and Prometheus reach: the host API (its key), the OpenAPI
/// document, the metrics.
fn internal(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(health::metrics))
        .route("/api/openapi.json", web::get().to(openapi::openapi_json))
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
        .route("/api/v1/reports", web::get().to(safety::reports));
}
