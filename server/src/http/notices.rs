//! `GET /api/notices` and `POST /api/notices/ack`: the session's stored notices after its cursor, and moving the
//! cursor — what the WebSocket does with its replay and `ACK` frames, for a client whose socket is down.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use cartwheel_core::protocol::{NoticeAck, NoticeList};
use serde::Serialize;

use super::error::AppError;
use super::extract::ApiJson;
use super::guards::session::Session;
use super::state::AppState;
use crate::shop::Shop;

pub fn router() -> Router<AppState> {
    Router::new().route("/notices", get(list)).route("/notices/ack", post(ack))
}

async fn list(State(shop): State<Shop>, session: Session) -> Result<Json<NoticeList>, AppError> {
    Ok(Json(shop.notices(&session.cart, session.issued_ms()).await?))
}

/// Answer of `POST /api/notices/ack`.
#[derive(Debug, Serialize)]
struct Cursor {
    cursor: u64,
}

async fn ack(
    State(shop): State<Shop>,
    session: Session,
    ApiJson(ack): ApiJson<NoticeAck>,
) -> Result<Json<Cursor>, AppError> {
    Ok(Json(Cursor { cursor: shop.ack_notices(&session.cart, &ack.epoch, ack.upto).await? }))
}
