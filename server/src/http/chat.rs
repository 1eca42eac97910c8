//! The help chat over HTTP. Shoppers: `GET /api/chat` (the conversation) and `POST /api/chat` (a message, for
//! a page whose socket is down; its `client_id`, or else its `Idempotency-Key`, makes a retry count once).
//! Services (token scope `chat`): `GET /api/service/ws`, the socket the desk hands shopper messages to
//! ([`crate::realtime::chat`]), and `POST /api/service/chat/{session}`, an answer over REST.

use std::time::Instant;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cartwheel_core::chat::{ChatHistory, ChatMessage, ChatPost, ChatPosted};
use serde::Deserialize;

use super::error::AppError;
use super::extract::{ApiJson, IdempotencyHeader};
use super::guards::session::Session;
use super::service::ServiceCaller;
use super::socket::bounded;
use super::state::AppState;
use crate::domain::CartKey;
use crate::realtime::chat::{serve_service, ChatRefusal};

/// `/chat`, relative to `/api` (behind the session guard).
pub fn router() -> Router<AppState> {
    Router::new().route("/chat", get(history).post(post_message))
}

/// `/ws` and `/chat/{session}`, relative to `/api/service`.
pub fn service_router() -> Router<AppState> {
    Router::new().route("/ws", get(service_socket)).route("/chat/{session}", post(service_reply))
}

async fn history(State(app): State<AppState>, session: Session) -> Result<Json<ChatHistory>, AppError> {
    Ok(Json(app.shop.chat_history(&session.cart).await?))
}

async fn post_message(
    State(app): State<AppState>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    ApiJson(body): ApiJson<ChatPost>,
) -> Result<(StatusCode, Json<ChatPosted>), AppError> {
    let client_id = body.client_id.or_else(|| key.map(|k| k.as_str().to_owned()));
    let text = app.sockets.chat.accept(&session.cart, &body.text, client_id.as_deref(), Instant::now()).map_err(
        |refusal| match refusal {
            ChatRefusal::TooMany(e) => AppError::RateLimited { retry_after: e.retry_after },
            invalid => AppError::InvalidField(invalid.to_string()),
        },
    )?;
    let message = app.shop.chat_from_shopper(&session.cart, text, client_id).await?;
    // Only a page without its socket asks: it is told here whether anyone will answer now.
    let support_online = app.shop.chat_support_online().await?;
    Ok((StatusCode::CREATED, Json(ChatPosted { message, support_online })))
}

/// Body of `POST /api/service/chat/{session}`.
#[derive(Debug, Deserialize)]
struct ServiceReply {
    text: String,
}

async fn service_reply(
    State(app): State<AppState>,
    caller: ServiceCaller,
    Path(session): Path<String>,
    ApiJson(body): ApiJson<ServiceReply>,
) -> Result<(StatusCode, Json<ChatMessage>), AppError> {
    caller.require(caller.scopes.chat, "chat")?;
    let session = CartKey::parse(&session)?;
    let text = app.sockets.chat.text(&body.text).map_err(|e| AppError::InvalidField(e.to_string()))?;
    let message = app.shop.chat_from_service(&session, text).await?;
    tracing::info!(token = caller.name, cart = session.short(), "service answered in the help chat");
    Ok((StatusCode::CREATED, Json(message)))
}

/// `GET /api/service/ws`: a service's socket. Refused before the upgrade without the `chat` scope.
async fn service_socket(
    State(app): State<AppState>,
    caller: Result<ServiceCaller, AppError>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let caller = match caller.and_then(|c| c.require(c.scopes.chat, "chat").map(|()| c)) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return AppError::BadUpgrade(rejection.body_text()).into_response(),
    };
    let (desk, connections, shutdown) = (app.sockets.chat.clone(), app.connections.clone(), app.shutdown.clone());
    bounded(upgrade, app.config.max_ws_message_bytes)
        .on_upgrade(move |socket| connections.track_future(serve_service(desk, socket, caller.name, shutdown)))
}
