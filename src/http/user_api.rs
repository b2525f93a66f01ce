//! The reads a user's own token may make over HTTP: unread summary and history.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::future::{Ready, ready};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Identity};
use crate::chat::{HistoryParams, MessageId, Reason, Topic};

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

pub async fn my_unread(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
) -> Result<HttpResponse, ApiError> {
    let summary = state.chat.unread_summary(&identity.user_id).await?;
    Ok(HttpResponse::Ok().json(summary))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

fn positive_id(raw: Option<i64>) -> Result<Option<MessageId>, ApiError> {
    raw.map(|id| {
        MessageId::parse(id).map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                Reason::InvalidPayload.as_str(),
                e.to_string(),
            )
        })
    })
    .transpose()
}

pub async fn conversation_messages(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let topic = Topic::parse(&path.into_inner()).map_err(|_| Reason::InvalidTopic)?;
    let limit = match query.limit {
        None => None,
        Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(_) => {
            return Err(ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                Reason::InvalidPayload.as_str(),
                "limit must be at least 1",
            ));
        }
    };
    let params = HistoryParams {
        before: positive_id(query.before)?,
        after: positive_id(query.after)?,
        limit,
    };
    let page = state
        .chat
        .history(&identity.actor(), &topic, params)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}
