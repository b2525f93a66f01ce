//! The OpenAPI document, generated from the handlers' annotations so it cannot drift.

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{demo, health, host_api, safety, socket, user_api};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sidechat",
        description = "Chat beside your web app. The socket protocol is Phoenix Channels V2 at /socket/websocket; this document covers the HTTP routes."
    ),
    paths(
        socket::phoenix,
        socket::actioncable,
        host_api::post_message,
        host_api::patch_message,
        host_api::delete_message,
        host_api::put_room,
        host_api::get_room,
        host_api::put_member,
        host_api::delete_member,
        host_api::user_unread,
        host_api::user_conversations,
        host_api::conversation_messages,
        host_api::erase_user,
        user_api::my_unread,
        user_api::my_conversations,
        user_api::conversation_messages,
        user_api::subscribe_push,
        user_api::unsubscribe_push,
        user_api::push_public_key,
        safety::my_blocks,
        safety::block,
        safety::unblock,
        safety::user_blocks,
        safety::host_block,
        safety::host_unblock,
        safety::open_chat,
        safety::close_chat,
        safety::reports,
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
        demo::page,
        demo::phoenix_js,
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "user_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
