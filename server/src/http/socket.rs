//! `GET /ws`: check the session, upgrade with bounded buffers, and hand the socket to
//! [`crate::realtime::ws::serve`]. The route sits outside the session guard: a socket without a valid session
//! is refused (401), never given one.

use std::net::SocketAddr;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::header::SET_COOKIE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::client::Client;
use super::error::AppError;
use super::guards::session::Session;
use super::serve::ConnectionSlot;
use super::state::AppState;
use crate::config::defaults;
use crate::realtime::quota::QuotaExceeded;
use crate::realtime::ws::{client_label, serve};

pub fn router() -> Router<AppState> {
    Router::new().route(cartwheel_core::protocol::WS_PATH, get(upgrade))
}

/// An upgrade with bounded buffers, and messages and frames of at most `max_message` bytes (every socket the
/// server accepts, shoppers' and services').
pub fn bounded(upgrade: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(defaults::WS_READ_BUFFER_BYTES)
        .write_buffer_size(defaults::WS_WRITE_BUFFER_BYTES)
        .max_write_buffer_size(defaults::WS_MAX_WRITE_BUFFER_BYTES)
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    client: Option<Extension<Client>>,
    RawQuery(query): RawQuery,
    session: Result<Session, AppError>,
    slot: Option<Extension<ConnectionSlot>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return AppError::BadUpgrade(rejection.body_text()).into_response(),
    };
    // Counted before the upgrade, so a refusal is still a plain HTTP answer; the permit lives as long as the
    // socket's task (or is dropped with the upgrade if it never completes).
    let address = client.map_or(peer.ip(), |Extension(c)| c.address);
    let permit = match app.socket_quota.try_open(&session.cart, address) {
        Ok(permit) => permit,
        Err(exceeded) => {
            let scope = match exceeded {
                QuotaExceeded::Session(_) => "session",
                QuotaExceeded::Address(_) => "address",
            };
            app.metrics.ws_refused.get_or_create(&vec![("scope", scope)]).inc();
            tracing::debug!(%address, scope, "WebSocket refused: too many open");
            return AppError::from(exceeded).into_response();
        }
    };
    // A tab that only keeps its sockets open renews its session here (the `101` may set a cookie too).
    let renewal = app.sessions.renewal(&session, &app.shop).await;
    let (sockets, connections) = (app.sockets.clone(), app.connections.clone());
    let mut response = bounded(upgrade, app.config.max_ws_message_bytes).on_upgrade(move |socket| {
        connections.track_future(async move {
            // Both end with the socket: its place in the quota and its connection's slot.
            let _held = (permit, slot);
            serve(socket, sockets, session.cart, peer, client_label(query.as_deref())).await;
        })
    });
    if let Some(cookie) = renewal.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}
