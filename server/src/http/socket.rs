//! `GET /ws`: check the session, upgrade, and hand the TCP stream to [`crate::realtime::ws::serve`]. The route
//! sits outside the session guard: a socket without a valid session is refused (401), never given one.
//!
//! The handshake is ours rather than axum's `WebSocketUpgrade` (which the services' socket still uses, through
//! [`bounded`]): a shopper's connection writes the hub's pre-framed bytes to the socket itself (see
//! `realtime::wire`), so it takes the TCP stream back from hyper instead of a WebSocket stream type with its
//! own buffers. It checks what `WebSocketUpgrade` checks (RFC 6455 §4.2.1).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, RawQuery, State};
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, SET_COOKIE, UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine;

use super::client::Client;
use super::error::AppError;
use super::guards::session::Session;
use super::serve::{AcceptedIo, ConnectionSlot, UpgradedStream};
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

/// A checked WebSocket upgrade request: its key, and hyper's handle on the connection once it is upgraded.
pub struct ShopperUpgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for ShopperUpgrade {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let refuse = |why: &str| Err(AppError::BadUpgrade(why.to_owned()));
        if parts.method != Method::GET {
            return refuse("a WebSocket upgrade is a GET");
        }
        if !has_token(&parts.headers, CONNECTION, "upgrade") {
            return refuse("Connection header did not include 'upgrade'");
        }
        if !has_token(&parts.headers, UPGRADE, "websocket") {
            return refuse("`Upgrade` header did not include 'websocket'");
        }
        if parts.headers.get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
            // 426 with the version this server speaks (RFC 6455 §4.4).
            return Err(AppError::WebSocketVersion);
        }
        let Some(key) = parts.headers.get(SEC_WEBSOCKET_KEY).cloned() else {
            return refuse("`Sec-WebSocket-Key` header missing");
        };
        let nonce = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
        if nonce.map_or(true, |n| n.len() != 16) {
            return refuse("`Sec-WebSocket-Key` is not 16 bytes in base64");
        }
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return refuse("WebSocket request couldn't be upgraded since no upgrade state was present");
        };
        Ok(ShopperUpgrade { key, on_upgrade })
    }
}

/// Whether the comma-separated `name` header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: axum::http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    tungstenite::handshake::derive_accept_key(key)
}

async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    client: Option<Extension<Client>>,
    RawQuery(query): RawQuery,
    session: Result<Session, AppError>,
    slot: Option<Extension<ConnectionSlot>>,
    upgrade: Result<ShopperUpgrade, AppError>,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return e.into_response(),
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
    let ShopperUpgrade { key, on_upgrade } = upgrade;
    tokio::spawn(connections.track_future(async move {
        // Both end with the socket: its place in the quota and its connection's slot.
        let _held = (permit, slot);
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "the WebSocket upgrade did not complete");
                return;
            }
        };
        let parts = match upgraded.downcast::<AcceptedIo>() {
            Ok(parts) => parts,
            Err(_) => {
                tracing::error!("an upgraded connection is not the accept loop's stream; closing it");
                return;
            }
        };
        let stream = Box::new(UpgradedStream(parts.io.into_inner()));
        let issued_ms = session.issued_ms();
        serve(stream, parts.read_buf, sockets, session.cart, issued_ms, peer, client_label(query.as_deref())).await;
    }));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    // Base64 is always a valid header value; were it not, no client could take the answer anyway.
    match HeaderValue::from_str(&accept_key(key.as_bytes())) {
        Ok(accept) => {
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        Err(e) => tracing::error!(error = %e, "the WebSocket accept key is not a header value"),
    }
    if let Some(cookie) = renewal.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    /// The example of RFC 6455 §1.3.
    #[test]
    fn the_accept_key_is_the_rfcs() {
        assert_eq!(super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
