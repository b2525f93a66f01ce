//! The reads a user's own token may make over HTTP: unread summary and history.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::future::{Ready, ready};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::host_api::{ErrorBody, PageQuery};
use crate::auth::{AuthError, Identity};
use crate::chat::{HistoryPage, Reason, Topic, UnreadSummary};

/// The user behind `Authorization: Bearer <token>` (or `?token=`).
pub struct AuthedUser(pub Identity);

/// The token of a request: the Authorization header first, then the query string.
pub fn request_token(req: &HttpRequest) -> Option<String> {
    if let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = header.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().token)
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

impl FromRequest for AuthedUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = (|| {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::from(Reason::Unavailable))?;
            let token = request_token(req).ok_or(AuthError::Missing)?;
            let identity = state
                .verifier
                .verify(&token, chrono::Utc::now().timestamp())?;
            Ok(AuthedUser(identity))
        })();
        ready(result)
    }
}

#[utoipa::path(
    get, path = "/v1/me/unread", tag = "user",
    responses((status = 200, body = UnreadSummary), (status = 401, body = ErrorBody)),
    security(("user_token" = []))
)]
pub async fn my_unread(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
) -> Result<HttpResponse, ApiError> {
    let summary = state.chat.unread_summary(&identity.user_id).await?;
    Ok(HttpResponse::Ok().json(summary))
}

#[utoipa::path(
    get, path = "/v1/conversations/{topic}/messages", tag = "user",
    params(("topic" = String, Path, description = "A conversation the token's user may read"), PageQuery),
    responses(
        (status = 200, body = HistoryPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("user_token" = []))
)]
pub async fn conversation_messages(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let topic = Topic::parse(&path.into_inner()).map_err(|_| Reason::InvalidTopic)?;
    let page = state
        .chat
        .history(&identity.actor(), &topic, query.params()?)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}
