//! The host backend API (`/api/v1`): for the host's servers, never browsers. One
//! handler per call, each reading as a checklist: authorise, parse, act, answer.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::future::{Ready, ready};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::ApiError;
use crate::chat::{
    ClientRef, ConversationPage, ErasureReport, HistoryPage, HistoryParams, ListParams, Message,
    MessageId, MessageKind, MessagePatch, MessageStatus, Post, Reason, RoomId, RoomInfo,
    RoomUpdate, Topic, UnreadSummary, UserId,
};

/// A caller holding one of `api.keys`. Keys are compared as SHA-256 digests in
/// constant time, and every key is tried, so timing tells nothing of a key.
pub struct HostKey;

fn key_matches(presented: &str, keys: &[crate::settings::Secret]) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        matched |= Sha256::digest(key.expose().as_bytes()).ct_eq(&presented);
    }
    bool::from(matched)
}

impl FromRequest for HostKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let unauthorized = |message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                Reason::Unauthorized.as_str(),
                message,
            )
        };
        let result = (|| {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::from(Reason::Unavailable))?;
            let keys = &state.settings.api.keys;
            if keys.is_empty() {
                return Err(unauthorized("the host API is off: set api.keys"));
            }
            let presented = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .ok_or_else(|| unauthorized("send Authorization: Bearer <api key>"))?;
            if key_matches(presented.trim(), keys) {
                Ok(HostKey)
            } else {
                Err(unauthorized("unknown API key"))
            }
        })();
        ready(result)
    }
}

pub(super) fn bad(reason: Reason, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, reason.as_str(), message)
}

pub(super) fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| bad(Reason::InvalidPayload, format!("user id {raw:?}: {e}")))
}

fn room_id(raw: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| bad(Reason::InvalidPayload, format!("room id {raw:?}: {e}")))
}

fn message_id(raw: i64) -> Result<MessageId, ApiError> {
    MessageId::parse(raw).map_err(|e| bad(Reason::InvalidPayload, e.to_string()))
}

fn topic(raw: &str) -> Result<Topic, ApiError> {
    let topic =
        Topic::parse(raw).map_err(|e| bad(Reason::InvalidTopic, format!("topic {raw:?}: {e}")))?;
    if !topic.is_conversation() {
        return Err(bad(
            Reason::InvalidTopic,
            "the API takes conversation topics: chat:, room: or support:",
        ));
    }
    Ok(topic)
}

/// `POST /api/v1/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// `chat:<a>:<b>`, `room:<rid>` or `support:<uid>`.
    pub topic: String,
    /// Who it is from: a user, a bot or the system.
    pub user_id: String,
    /// May be empty only when `status` is `streaming`.
    pub body: String,
    pub kind: Option<MessageKind>,
    pub status: Option<MessageStatus>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Map<String, Value>>,
    /// Makes a retry idempotent: the same sender and ref return the stored message.
    pub client_ref: Option<String>,
    /// The sender's display name, shown as the message's `user_name` (a bot's name).
    pub user_name: Option<String>,
}

#[utoipa::path(
    post, path = "/api/v1/messages", tag = "host",
    request_body = PostMessage,
    responses(
        (status = 201, description = "Stored and broadcast", body = Message),
        (status = 200, description = "A retry: the message stored earlier with this client_ref", body = Message),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn post_message(
    _: HostKey,
    state: web::Data<AppState>,
    body: web::Json<PostMessage>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let client_ref = request
        .client_ref
        .as_deref()
        .map(ClientRef::parse)
        .transpose()
        .map_err(|e| bad(Reason::InvalidPayload, e.to_string()))?;
    let post = Post {
        topic: topic(&request.topic)?,
        sender: user_id(&request.user_id)?,
        body: request.body,
        kind: request.kind.unwrap_or_default(),
        status: request.status.unwrap_or_default(),
        meta: request.meta.unwrap_or_default(),
        client_ref,
        sender_name: request
            .user_name
            .as_deref()
            .and_then(crate::chat::ids::display_name),
        reply_to: None,
    };
    let (message, created) = state.chat.post_as_host(post).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(message))
}

/// `PATCH /api/v1/messages/{id}`: `body` replaces, `append` extends (not both).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMessage {
    pub body: Option<String>,
    /// Appended verbatim: a bot streams its answer token by token.
    pub append: Option<String>,
    pub status: Option<MessageStatus>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Map<String, Value>>,
}

#[utoipa::path(
    patch, path = "/api/v1/messages/{id}", tag = "host",
    params(("id" = i64, Path, description = "Message id")),
    request_body = PatchMessage,
    responses(
        (status = 200, description = "Edited; joined clients get msg_updated", body = Message),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn patch_message(
    _: HostKey,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: web::Json<PatchMessage>,
) -> Result<HttpResponse, ApiError> {
    let id = message_id(id.into_inner())?;
    let request = body.into_inner();
    let patch = MessagePatch {
        body: request.body,
        append: request.append,
        status: request.status,
        meta: request.meta,
    };
    Ok(HttpResponse::Ok().json(state.chat.edit(id, patch).await?))
}

#[utoipa::path(
    delete, path = "/api/v1/messages/{id}", tag = "host",
    params(("id" = i64, Path, description = "Message id")),
    responses(
        (status = 204, description = "Deleted; joined clients get msg_deleted"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn delete_message(
    _: HostKey,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.chat.delete(message_id(id.into_inner())?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `PUT /api/v1/rooms/{rid}`: the room's name (kept when absent) and all its members.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRoom {
    pub name: Option<String>,
    pub members: Vec<String>,
}

/// The longest room name.
const MAX_ROOM_NAME: usize = 200;

#[utoipa::path(
    put, path = "/api/v1/rooms/{rid}", tag = "host",
    params(("rid" = String, Path, description = "Room id")),
    request_body = PutRoom,
    responses(
        (status = 201, description = "Created", body = RoomInfo),
        (status = 200, description = "Replaced; removed members' sockets leave the room", body = RoomInfo),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn put_room(
    _: HostKey,
    state: web::Data<AppState>,
    rid: web::Path<String>,
    body: web::Json<PutRoom>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(&rid)?;
    let request = body.into_inner();
    if request
        .name
        .as_ref()
        .is_some_and(|n| n.len() > MAX_ROOM_NAME)
    {
        return Err(bad(Reason::TooLarge, "a room name is at most 200 bytes"));
    }
    let members = request
        .members
        .iter()
        .map(|m| user_id(m))
        .collect::<Result<Vec<_>, _>>()?;
    let update = RoomUpdate {
        name: request.name,
        members,
    };
    let (info, created) = state.chat.put_room(&room, update).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(info))
}

#[utoipa::path(
    get, path = "/api/v1/rooms/{rid}", tag = "host",
    params(("rid" = String, Path, description = "Room id")),
    responses((status = 200, body = RoomInfo), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_room(
    _: HostKey,
    state: web::Data<AppState>,
    rid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.chat.room(&room_id(&rid)?).await?))
}

#[utoipa::path(
    put, path = "/api/v1/rooms/{rid}/members/{uid}", tag = "host",
    params(("rid" = String, Path, description = "Room id"), ("uid" = String, Path, description = "User id")),
    responses(
        (status = 201, description = "Added"), (status = 200, description = "Already a member"),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn put_member(
    _: HostKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (rid, uid) = path.into_inner();
    let added = state
        .chat
        .add_member(&room_id(&rid)?, &user_id(&uid)?)
        .await?;
    Ok(if added {
        HttpResponse::Created().finish()
    } else {
        HttpResponse::Ok().finish()
    })
}

#[utoipa::path(
    delete, path = "/api/v1/rooms/{rid}/members/{uid}", tag = "host",
    params(("rid" = String, Path, description = "Room id"), ("uid" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Removed; their sockets in the room get phx_close"),
        (status = 404, description = "No such room or member", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn delete_member(
    _: HostKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (rid, uid) = path.into_inner();
    state
        .chat
        .remove_member(&room_id(&rid)?, &user_id(&uid)?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get, path = "/api/v1/users/{uid}/unread", tag = "host",
    params(("uid" = String, Path, description = "User id")),
    responses((status = 200, body = UnreadSummary), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn user_unread(
    _: HostKey,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let summary = state.chat.unread_summary(&user_id(&uid)?).await?;
    Ok(HttpResponse::Ok().json(summary))
}

#[utoipa::path(
    get, path = "/api/v1/users/{uid}/conversations", tag = "host",
    params(("uid" = String, Path, description = "User id"), ListQuery),
    responses((status = 200, body = ConversationPage), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn user_conversations(
    _: HostKey,
    state: web::Data<AppState>,
    uid: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = state
        .chat
        .conversations(&user_id(&uid)?, query.params()?)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A page of a user's conversation list, most recent activity first.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next` of the page before; absent for the first page.
    pub before: Option<String>,
    /// 1 to 200; default 50.
    pub limit: Option<i64>,
}

impl ListQuery {
    pub fn params(&self) -> Result<ListParams, ApiError> {
        ListParams::parse(self.before.as_deref(), self.limit)
            .map_err(|e| bad(Reason::InvalidPayload, e.to_string()))
    }
}

/// A page of history: the newest `limit` before `before`, or the oldest after `after`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub before: Option<i64>,
    pub after: Option<i64>,
    /// 1 to 500; default `chat.history_limit`.
    pub limit: Option<i64>,
}

impl PageQuery {
    pub fn params(&self) -> Result<HistoryParams, ApiError> {
        let limit = match self.limit {
            None => None,
            Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            Some(_) => return Err(bad(Reason::InvalidPayload, "limit must be at least 1")),
        };
        Ok(HistoryParams {
            before: self.before.map(message_id).transpose()?,
            after: self.after.map(message_id).transpose()?,
            limit,
        })
    }
}

#[utoipa::path(
    get, path = "/api/v1/conversations/{topic}/messages", tag = "host",
    params(("topic" = String, Path, description = "A conversation topic"), PageQuery),
    responses((status = 200, body = HistoryPage), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn conversation_messages(
    _: HostKey,
    state: web::Data<AppState>,
    raw_topic: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let topic = topic(&raw_topic)?;
    let page = state.chat.host_history(&topic, query.params()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(
    delete, path = "/api/v1/users/{uid}", tag = "host",
    params(("uid" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "Every message they sent and their memberships, gone", body = ErasureReport),
        (status = 400, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn erase_user(
    _: HostKey,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let report = state.chat.erase(&user_id(&uid)?).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Every error body: a message for people, a reason for code.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the shape ApiError serialises
pub struct ErrorBody {
    pub error: String,
    pub reason: String,
}
