//! Who may talk to whom, over HTTP (PROTOCOL.md §10): a user's blocks and the host's
//! view of anyone's, the one-to-one chats the host opens, and reports.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::host_api::{ErrorBody, HostKey, bad, user_id};
use super::user_api::AuthedUser;
use crate::chat::{Reason, ReportPage, UserId};

/// Whom a user blocks, oldest block first.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockList {
    pub blocks: Vec<String>,
}

/// The pair of a block: two different valid users.
fn pair(blocker: &UserId, other: &str) -> Result<UserId, ApiError> {
    let other = user_id(other)?;
    if *blocker == other {
        return Err(bad(
            Reason::InvalidPayload,
            "a user cannot block themselves",
        ));
    }
    Ok(other)
}

async fn list(state: &AppState, user: &UserId) -> Result<HttpResponse, ApiError> {
    let blocks = state.chat.blocks_of(user).await?;
    Ok(HttpResponse::Ok().json(BlockList { blocks }))
}

async fn set(
    state: &AppState,
    blocker: &UserId,
    other: &str,
    on: bool,
) -> Result<HttpResponse, ApiError> {
    let blocked = pair(blocker, other)?;
    if on {
        state
            .chat
            .block(blocker, &blocked)
            .await
            .map_err(|reason| match reason {
                Reason::TooLarge => ApiError::new(
                    StatusCode::CONFLICT,
                    "too_many_blocks",
                    format!(
                        "a user may block at most {} users (chat.max_blocks_per_user): unblock someone first",
                        state.settings.chat.max_blocks_per_user
                    ),
                ),
                other => ApiError::from(other),
            })?;
    } else {
        state.chat.unblock(blocker, &blocked).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get, path = "/v1/me/blocks", tag = "user",
    responses(
        (status = 200, body = BlockList), (status = 401, body = ErrorBody),
        (status = 429, description = "Over the user's budget of requests", body = ErrorBody),
    ),
    security(("user_token" = []))
)]
pub async fn my_blocks(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
) -> Result<HttpResponse, ApiError> {
    list(&state, &identity.user_id).await
}

#[utoipa::path(
    put, path = "/v1/me/blocks/{uid}", tag = "user",
    params(("uid" = String, Path, description = "The user to block")),
    responses(
        (status = 204, description = "Blocked, on every replica (idempotent)"),
        (status = 400, description = "An invalid user id, or the token's own", body = ErrorBody),
        (status = 409, description = "The user blocks chat.max_blocks_per_user others already (reason too_many_blocks)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 429, description = "Over the user's budget of requests", body = ErrorBody),
    ),
    security(("user_token" = []))
)]
pub async fn block(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set(&state, &identity.user_id, &uid, true).await
}

#[utoipa::path(
    delete, path = "/v1/me/blocks/{uid}", tag = "user",
    params(("uid" = String, Path, description = "The user to unblock")),
    responses(
        (status = 204, description = "Not blocked (idempotent)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, description = "Over the user's budget of requests", body = ErrorBody),
    ),
    security(("user_token" = []))
)]
pub async fn unblock(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set(&state, &identity.user_id, &uid, false).await
}

#[utoipa::path(
    get, path = "/api/v1/users/{uid}/blocks", tag = "host",
    params(("uid" = String, Path, description = "User id")),
    responses((status = 200, body = BlockList), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn user_blocks(
    _: HostKey,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    list(&state, &user_id(&uid)?).await
}

#[utoipa::path(
    put, path = "/api/v1/users/{uid}/blocks/{other}", tag = "host",
    params(("uid" = String, Path, description = "Who blocks"), ("other" = String, Path, description = "Whom")),
    responses(
        (status = 204, description = "Blocked, on every replica (idempotent)"),
        (status = 400, description = "An invalid user id, or the same user twice", body = ErrorBody),
        (status = 409, description = "The user blocks chat.max_blocks_per_user others already (reason too_many_blocks)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn host_block(
    _: HostKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (uid, other) = path.into_inner();
    set(&state, &user_id(&uid)?, &other, true).await
}

#[utoipa::path(
    delete, path = "/api/v1/users/{uid}/blocks/{other}", tag = "host",
    params(("uid" = String, Path, description = "Who blocked"), ("other" = String, Path, description = "Whom")),
    responses((status = 204, description = "Not blocked (idempotent)"), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn host_unblock(
    _: HostKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (uid, other) = path.into_inner();
    set(&state, &user_id(&uid)?, &other, false).await
}

fn chat_pair(path: web::Path<(String, String)>) -> Result<(UserId, UserId), ApiError> {
    let (a, b) = path.into_inner();
    let (a, b) = (user_id(&a)?, user_id(&b)?);
    if a == b {
        return Err(bad(
            Reason::InvalidPayload,
            "a chat needs two different users",
        ));
    }
    Ok((a, b))
}

#[utoipa::path(
    put, path = "/api/v1/chats/{a}/{b}", tag = "host",
    params(("a" = String, Path, description = "One user"), ("b" = String, Path, description = "The other, in either order")),
    responses(
        (status = 204, description = "Open: with chat.direct = \"host\", the two may join chat:a:b (idempotent)"),
        (status = 400, description = "An invalid user id, or the same user twice", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn open_chat(
    _: HostKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (a, b) = chat_pair(path)?;
    state.chat.open_chat(&a, &b).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    delete, path = "/api/v1/chats/{a}/{b}", tag = "host",
    params(("a" = String, Path, description = "One user"), ("b" = String, Path, description = "The other, in either order")),
    responses(
        (status = 204, description = "Closed: joined sockets on every replica get phx_close; history is kept (idempotent)"),
        (status = 400, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn close_chat(
    _: HostKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (a, b) = chat_pair(path)?;
    state.chat.close_chat(&a, &b).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A page of reports, oldest first.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportsQuery {
    /// The `id` of the last report of the page before.
    pub after: Option<i64>,
    /// 1 to 200; default 50.
    pub limit: Option<i64>,
}

#[utoipa::path(
    get, path = "/api/v1/reports", tag = "host",
    params(ReportsQuery),
    responses((status = 200, body = ReportPage), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn reports(
    _: HostKey,
    state: web::Data<AppState>,
    query: web::Query<ReportsQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.after.is_some_and(|after| after < 0) {
        return Err(bad(Reason::InvalidPayload, "after must be a report id"));
    }
    let page =
        state
            .chat
            .reports(query.after, query.limit)
            .await
            .map_err(|reason| match reason {
                Reason::InvalidPayload => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    reason.as_str(),
                    "limit must be between 1 and 200",
                ),
                other => ApiError::from(other),
            })?;
    Ok(HttpResponse::Ok().json(page))
}
