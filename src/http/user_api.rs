//! What a user's own token may do over HTTP: unread summary, conversation list,
//! history, and Web Push subscriptions.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::future::{Ready, ready};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::host_api::{ErrorBody, ListQuery, PageQuery};
use crate::auth::{AuthError, Identity};
use crate::chat::{
    ConversationPage, Cost, HistoryPage, NewPushSubscription, PushRefused, Reason, Topic,
    UnreadSummary,
};

/// The user behind `Authorization: Bearer <token>` (or `?token=`). Each request costs
/// the user one event from their budget, as a push on a socket does.
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
            if let Err(wait) = state.chat.charge(&identity.user_id, Cost::Event) {
                // Whole seconds until the budget has earned a request back.
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                return Err(ApiError::from(Reason::RateLimited).retry_after(seconds));
            }
            Ok(AuthedUser(identity))
        })();
        ready(result)
    }
}

#[utoipa::path(
    get, path = "/v1/me/unread", tag = "user",
    responses(
        (status = 200, body = UnreadSummary), (status = 401, body = ErrorBody),
        (status = 429, description = "Over the user's budget of requests", body = ErrorBody),
    ),
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
    get, path = "/v1/me/conversations", tag = "user",
    params(ListQuery),
    responses(
        (status = 200, body = ConversationPage),
        (status = 400, description = "A limit out of range, or a cursor this server did not issue", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 429, description = "Over the user's budget of requests", body = ErrorBody),
    ),
    security(("user_token" = []))
)]
pub async fn my_conversations(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = state
        .chat
        .conversations(&identity.user_id, query.params()?)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(
    get, path = "/v1/conversations/{topic}/messages", tag = "user",
    params(("topic" = String, Path, description = "A conversation the token's user may read"), PageQuery),
    responses(
        (status = 200, body = HistoryPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, description = "Over the user's budget of requests", body = ErrorBody),
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

/// The browser's keys, as `PushSubscription.toJSON()` gives them.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PushKeys {
    /// The browser's P-256 public key, base64url (65 bytes decoded).
    pub p256dh: String,
    /// The browser's auth secret, base64url (16 bytes decoded).
    pub auth: String,
}

/// A browser's Web Push subscription: pass `PushSubscription.toJSON()` as it is.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PushSubscriptionBody {
    /// The push service's URL: https, naming a host whose addresses are all public.
    pub endpoint: String,
    pub keys: PushKeys,
}

/// Which browser to unsubscribe.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PushEndpoint {
    pub endpoint: String,
}

#[utoipa::path(
    post, path = "/v1/me/push-subscriptions", tag = "user",
    request_body = PushSubscriptionBody,
    responses(
        (status = 201, description = "Registered"),
        (status = 200, description = "Already registered; the user and keys are now these"),
        (status = 400, description = "A malformed subscription, or an endpoint that is not a public https push service", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 429, description = "Over the user's budget of requests", body = ErrorBody),
    ),
    security(("user_token" = []))
)]
pub async fn subscribe_push(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
    body: web::Json<PushSubscriptionBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let created = state
        .chat
        .subscribe_push(
            &identity.user_id,
            NewPushSubscription {
                endpoint: body.endpoint,
                p256dh: body.keys.p256dh,
                auth: body.keys.auth,
            },
        )
        .await
        .map_err(|PushRefused { reason, detail }| {
            let mut error = ApiError::from(reason);
            if let Some(detail) = detail {
                error.message = detail;
            }
            error
        })?;
    Ok(if created {
        HttpResponse::Created().finish()
    } else {
        HttpResponse::Ok().finish()
    })
}

#[utoipa::path(
    delete, path = "/v1/me/push-subscriptions", tag = "user",
    request_body = PushEndpoint,
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 429, description = "Over the user's budget of requests", body = ErrorBody),
    ),
    security(("user_token" = []))
)]
pub async fn unsubscribe_push(
    state: web::Data<AppState>,
    AuthedUser(identity): AuthedUser,
    body: web::Json<PushEndpoint>,
) -> Result<HttpResponse, ApiError> {
    state
        .chat
        .unsubscribe_push(&identity.user_id, body.into_inner().endpoint)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The key browsers subscribe with.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct VapidKey {
    /// base64url, for `pushManager.subscribe({applicationServerKey})`.
    pub vapid_public_key: String,
}

#[utoipa::path(
    get, path = "/v1/push/public-key", tag = "user",
    responses(
        (status = 200, body = VapidKey),
        (status = 404, description = "Web Push is not configured", body = ErrorBody),
    )
)]
pub async fn push_public_key(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = state.vapid_public_key.clone().ok_or(Reason::NotFound)?;
    Ok(HttpResponse::Ok().json(VapidKey {
        vapid_public_key: key,
    }))
}
