//! One WebSocket connection per micro-frontend instance, subscribed to its session's cart (the HTTP layer
//! checks the session and upgrades `GET /ws`, then hands the socket to [`serve`]).
//!
//! The connection first sends a `CART_UPDATE` snapshot, then every newer version the hub delivers, every
//! `PRODUCT_UPDATE` and the `NOTICE`s meant for it, answers `PING` with `PONG` and `RESYNC` with a fresh
//! snapshot, and refuses anything else with an `ERROR` frame while staying open. When the store cannot be
//! read (Redis unreachable), it says so in an `ERROR` frame, stays open and tries the snapshot again every
//! [`defaults::SNAPSHOT_RETRY`]. It closes with 1009 for an oversized frame, 1008 for a client that floods
//! frames, 1001 when the server shuts down or the peer stops answering heartbeats — and it drops a peer that
//! stops reading rather than buffer for it without bound.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use cartwheel_core::protocol::close;
use cartwheel_core::{ClientMessage, ErrorCode, ServerMessage};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{sleep_until, timeout, Instant as TokioInstant};
use tokio_util::sync::CancellationToken;

use super::hub::{supersedes, CartHub, CartPosition, Frame, FrameKind};
use super::presence::PresenceBoard;
use crate::clock::now_ms;
use crate::config::defaults;
use crate::domain::CartKey;
use crate::metrics::Metrics;
use crate::shop::Shop;
use crate::throttle::{Rate, TokenBucket};

/// The limits one connection runs under (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Frames a client may send.
    pub frames: Rate,
    /// One frame's write may take this long (`--send-timeout`): a peer that stopped reading is dropped.
    pub send_timeout: Duration,
}

/// Everything a WebSocket connection needs from the server; one per server, shared by every connection.
pub struct Sockets {
    pub shop: Shop,
    pub hub: Arc<CartHub>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down: every connection closes with 1001.
    pub shutdown: CancellationToken,
    pub limits: SocketLimits,
    /// The presence counts as last read, sent to each connection after its snapshot.
    pub presence: Arc<PresenceBoard>,
    /// The help chat's services here and the shoppers' write budget.
    pub chat: Arc<super::chat::ChatDesk>,
}

/// Why a connection ended (a metric label and a log field).
#[derive(Debug, Clone, Copy)]
enum Ending {
    ClientClosed,
    ClientGone,
    ServerShutdown,
    HeartbeatTimeout,
    MessageTooBig,
    Flooding,
    StoppedReading,
    ReadError,
}

impl Ending {
    fn label(self) -> &'static str {
        match self {
            Ending::ClientClosed => "client_closed",
            Ending::ClientGone => "client_gone",
            Ending::ServerShutdown => "server_shutdown",
            Ending::HeartbeatTimeout => "heartbeat_timeout",
            Ending::MessageTooBig => "message_too_big",
            Ending::Flooding => "flooding",
            Ending::StoppedReading => "stopped_reading",
            Ending::ReadError => "read_error",
        }
    }
}

/// Which part of the page opened the socket (`?mfe=product-list`), for logs only: at most 32 of `a-z0-9-`.
pub fn client_label(query: Option<&str>) -> String {
    let value = query.unwrap_or_default().split('&').find_map(|pair| pair.strip_prefix("mfe=")).unwrap_or_default();
    value.chars().filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-').take(32).collect()
}

/// Serve one upgraded connection of `cart` until it ends.
pub async fn serve(socket: WebSocket, sockets: Arc<Sockets>, cart: CartKey, peer: SocketAddr, client: String) {
    let started = Instant::now();
    let metrics = sockets.metrics.clone();
    metrics.ws_connections_total.inc();
    metrics.ws_connections_open.inc();
    tracing::info!(cart = cart.short(), peer = %peer, client, "websocket connected");
    let mut conn = Connection {
        socket,
        sockets,
        cart,
        last_sent: None,
        sent: 0,
        snapshot_due: None,
        notices_due: None,
        replayed: HashSet::new(),
    };
    let ending = conn.run().await;
    metrics.ws_connections_open.dec();
    metrics.ws_disconnects.get_or_create(&vec![("reason", ending.label())]).inc();
    tracing::info!(
        cart = conn.cart.short(),
        peer = %peer,
        client,
        reason = ending.label(),
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        messages_sent = conn.sent,
        "websocket disconnected"
    );
}

struct Connection {
    socket: WebSocket,
    sockets: Arc<Sockets>,
    cart: CartKey,
    last_sent: Option<CartPosition>,
    sent: u64,
    /// When to try again a snapshot the store could not give.
    snapshot_due: Option<TokioInstant>,
    /// When to try again the stored notices the store could not give.
    notices_due: Option<TokioInstant>,
    /// The seqs of recent notices the last replay of stored notices sent: the same notice arriving live
    /// afterwards (it was posted while the replay read the store) is not sent twice.
    replayed: HashSet<u64>,
}

/// A notice posted longer ago than this cannot still be on its way live (the pub/sub between instances takes
/// milliseconds): only younger ones are remembered against duplicates, so the set stays a handful of seqs even
/// for a session with a thousand unacknowledged notices.
const NOTICE_IN_FLIGHT_MS: u64 = 10_000;

/// A write either went out or ended the connection.
type Sent = Result<(), Ending>;

impl Connection {
    async fn run(&mut self) -> Ending {
        // Subscribe before reading the snapshot: a change committed in between then arrives as a newer frame
        // instead of falling into the gap.
        let subscription = self.sockets.hub.subscribe(&self.cart);
        let mut everyone = self.sockets.hub.everyone();
        let mut everyone_open = true;
        if let Err(ending) = self.send_snapshot().await {
            return ending;
        }
        // Then every stored notice the session has not acknowledged (live ones may come twice: clients drop a
        // notice whose id they have shown).
        if let Err(ending) = self.send_stored_notices().await {
            return ending;
        }
        // All the counts now; then what changes, with everyone (at most one frame per presence interval). Not
        // before the first count (the server just started): zeros would blank the labels the page was rendered
        // with, and the first count follows within an interval.
        let counts = self.sockets.presence.current();
        if counts.online > 0 {
            if let Err(ending) = self.send(Message::Text(Frame::presence(&counts).text)).await {
                return ending;
            }
        }
        let limits = self.sockets.limits;
        let mut frames = TokenBucket::new(limits.frames, Instant::now());
        let mut heartbeat =
            tokio::time::interval_at(TokioInstant::now() + limits.heartbeat_interval, limits.heartbeat_interval);
        let mut pong_deadline: Option<TokioInstant> = None;
        let far_future = TokioInstant::now() + Duration::from_secs(86_400 * 365);

        loop {
            tokio::select! {
                () = self.sockets.shutdown.cancelled() => {
                    self.close(close::GOING_AWAY, "server shutting down").await;
                    return Ending::ServerShutdown;
                }
                frame = subscription.next() => {
                    if let Err(ending) = self.send_frame(frame).await {
                        return ending;
                    }
                }
                received = everyone.recv(), if everyone_open => {
                    let sent = match received {
                        Ok(frame) => self.send_frame(frame).await,
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(cart = self.cart.short(), missed, "fell behind the broadcast ring");
                            self.sockets.metrics.broadcast_lagged.inc();
                            // General notices in the gap are stored: send what is not acknowledged again.
                            match self.send_catalog().await {
                                Ok(()) => self.send_stored_notices().await,
                                ended => ended,
                            }
                        }
                        // Only when the hub is gone, i.e. the server is stopping.
                        Err(RecvError::Closed) => {
                            everyone_open = false;
                            Ok(())
                        }
                    };
                    if let Err(ending) = sent {
                        return ending;
                    }
                }
                incoming = self.socket.recv() => {
                    pong_deadline = None;
                    let message = match incoming {
                        None => return Ending::ClientGone,
                        Some(Ok(m)) => m,
                        Some(Err(e)) => return self.read_failed(e).await,
                    };
                    match message {
                        Message::Text(text) => {
                            if frames.take(Instant::now()).is_err() {
                                // Closing either way: whether the explanation got through does not change the ending.
                                let _ = self.send_error(ErrorCode::RateLimited, "too many messages; closing").await;
                                self.close(close::POLICY_VIOLATION, "rate limited").await;
                                return Ending::Flooding;
                            }
                            if let Err(ending) = self.handle_text(text.as_str()).await {
                                return ending;
                            }
                        }
                        Message::Binary(_) => {
                            if frames.take(Instant::now()).is_err() {
                                self.close(close::POLICY_VIOLATION, "rate limited").await;
                                return Ending::Flooding;
                            }
                            if let Err(ending) =
                                self.send_error(ErrorCode::InvalidMessage, "send JSON text frames").await
                            {
                                return ending;
                            }
                        }
                        // tungstenite answers pings itself; any frame proves the peer is alive. Control frames
                        // count against the frame rate too: each Ping costs the server a Pong, so a flood of
                        // them is a flood like any other.
                        Message::Ping(_) | Message::Pong(_) => {
                            if frames.take(Instant::now()).is_err() {
                                self.close(close::POLICY_VIOLATION, "rate limited").await;
                                return Ending::Flooding;
                            }
                        }
                        Message::Close(_) => return Ending::ClientClosed,
                    }
                }
                _ = heartbeat.tick() => {
                    if pong_deadline.is_none() {
                        pong_deadline = Some(TokioInstant::now() + limits.heartbeat_timeout);
                    }
                    if let Err(ending) = self.send(Message::Ping(Default::default())).await {
                        return ending;
                    }
                }
                () = sleep_until(self.snapshot_due.unwrap_or(far_future)), if self.snapshot_due.is_some() => {
                    if let Err(ending) = self.send_snapshot().await {
                        return ending;
                    }
                }
                () = sleep_until(self.notices_due.unwrap_or(far_future)), if self.notices_due.is_some() => {
                    if let Err(ending) = self.send_stored_notices().await {
                        return ending;
                    }
                }
                () = sleep_until(pong_deadline.unwrap_or(far_future)), if pong_deadline.is_some() => {
                    self.close(close::GOING_AWAY, "heartbeat timeout").await;
                    return Ending::HeartbeatTimeout;
                }
            }
        }
    }

    async fn handle_text(&mut self, text: &str) -> Sent {
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Ping { id }) => {
                self.send_message(&ServerMessage::Pong { id, server_time_ms: now_ms() }).await
            }
            Ok(ClientMessage::Resync) => self.send_snapshot().await,
            Ok(ClientMessage::Chat { text, client_id }) => self.chat(&text, client_id).await,
            Ok(ClientMessage::Ack { upto, epoch }) => {
                // Lost, it only means the notices come again on the next connect (and are dropped by id).
                if let Err(e) = self.sockets.shop.ack_notices(&self.cart, &epoch, upto).await {
                    tracing::warn!(cart = self.cart.short(), error = %e, "cannot record a notice acknowledgement");
                }
                Ok(())
            }
            Err(e) => {
                let message = format!(
                    "not a known message: {e}; expected {{\"type\":\"PING\",\"id\":n}}, {{\"type\":\"RESYNC\"}}, \
                     {{\"type\":\"ACK\",\"upto\":n,\"epoch\":\"…\"}} or {{\"type\":\"CHAT\",\"text\":\"…\"}}"
                );
                self.send_error(ErrorCode::InvalidMessage, &message).await
            }
        }
    }

    /// A help-chat message from the shopper: stored and sent to every connection of the session (this one
    /// too), or refused with an `ERROR` frame (too long, too many, the store down); the socket stays open.
    async fn chat(&mut self, text: &str, client_id: Option<String>) -> Sent {
        let text = match self.sockets.chat.accept(&self.cart, text, client_id.as_deref(), Instant::now()) {
            Ok(text) => text,
            Err(refusal) => return self.send_error(refusal.code(), &refusal.to_string()).await,
        };
        match self.sockets.shop.chat_from_shopper(&self.cart, text, client_id).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(cart = self.cart.short(), error = %e, "cannot store a help-chat message");
                self.send_error(ErrorCode::ServiceUnavailable, "the message could not be sent; send it again").await
            }
        }
    }

    async fn send_snapshot(&mut self) -> Sent {
        match self.sockets.shop.cart(&self.cart).await {
            Ok(cart) => {
                self.snapshot_due = None;
                let frame = Frame::cart_update(&cart);
                if let Some(position) = frame.position().filter(|p| supersedes(*p, self.last_sent)) {
                    self.last_sent = Some(position);
                }
                self.send(Message::Text(frame.text)).await
            }
            Err(e) => {
                tracing::warn!(cart = self.cart.short(), error = %e, "cannot load cart for a snapshot");
                // Said once per outage, not once per retry.
                let first = self.snapshot_due.replace(TokioInstant::now() + defaults::SNAPSHOT_RETRY).is_none();
                if !first {
                    return Ok(());
                }
                let message = "the cart cannot be read right now; it will be sent as soon as it can";
                self.send_error(ErrorCode::ServiceUnavailable, message).await
            }
        }
    }

    /// The session's stored notices after its cursor, oldest first; retried later if the store cannot say.
    async fn send_stored_notices(&mut self) -> Sent {
        match self.sockets.shop.notices(&self.cart).await {
            Ok(list) => {
                self.notices_due = None;
                let count = list.notices.len();
                let now = now_ms();
                self.replayed = list
                    .notices
                    .iter()
                    .filter(|n| now.saturating_sub(n.sent_at_ms) < NOTICE_IN_FLIGHT_MS)
                    .map(|n| n.seq)
                    .collect();
                for notice in &list.notices {
                    self.send(Message::Text(Frame::notice(&list.epoch, notice).text)).await?;
                }
                self.sockets.metrics.notices_replayed.inc_by(u64::try_from(count).unwrap_or(u64::MAX));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(cart = self.cart.short(), error = %e, "cannot read stored notices");
                self.notices_due = Some(TokioInstant::now() + defaults::SNAPSHOT_RETRY);
                Ok(())
            }
        }
    }

    /// Every product as it is now: what a connection that missed product updates needs to be exact again.
    async fn send_catalog(&mut self) -> Sent {
        let catalog = self.sockets.shop.catalog();
        for product in catalog.products() {
            self.send_frame(Frame::product_update(product)).await?;
        }
        Ok(())
    }

    /// Forward a hub frame; a cart update only if this connection has not shown that version or a newer one.
    async fn send_frame(&mut self, frame: Frame) -> Sent {
        if let FrameKind::Notice(seq) = frame.kind {
            if self.replayed.remove(&seq) {
                return Ok(());
            }
        }
        if let Some(position) = frame.position() {
            if !supersedes(position, self.last_sent) {
                return Ok(());
            }
            self.last_sent = Some(position);
        }
        let published_at = frame.published_at;
        self.send(Message::Text(frame.text)).await?;
        self.sockets.metrics.broadcast_latency.observe(published_at.elapsed().as_secs_f64());
        Ok(())
    }

    async fn send_error(&mut self, code: ErrorCode, message: &str) -> Sent {
        self.send_message(&ServerMessage::Error { code, message: message.to_owned() }).await
    }

    async fn send_message(&mut self, message: &ServerMessage) -> Sent {
        match serde_json::to_string(message) {
            Ok(text) => self.send(Message::Text(text.into())).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a server message");
                Ok(())
            }
        }
    }

    /// Write one message; a peer that does not take it within the send timeout has stopped reading.
    async fn send(&mut self, message: Message) -> Sent {
        match timeout(self.sockets.limits.send_timeout, self.socket.send(message)).await {
            Ok(Ok(())) => {
                self.sent += 1;
                self.sockets.metrics.ws_messages_sent.inc();
                Ok(())
            }
            Ok(Err(_)) => Err(Ending::ClientGone),
            Err(_) => Err(Ending::StoppedReading),
        }
    }

    async fn read_failed(&mut self, error: axum::Error) -> Ending {
        let too_big = error
            .into_inner()
            .downcast_ref::<tungstenite::Error>()
            .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
        if too_big {
            self.close(close::MESSAGE_TOO_BIG, "message too big").await;
            Ending::MessageTooBig
        } else {
            Ending::ReadError
        }
    }

    /// Send a close frame and give the peer a moment to answer it, so the close handshake completes.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame { code, reason: reason.into() };
        let limit = self.sockets.limits.send_timeout;
        if timeout(limit, self.socket.send(Message::Close(Some(frame)))).await.is_err() {
            return;
        }
        let _ = timeout(Duration::from_secs(1), async {
            while let Some(Ok(message)) = self.socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::client_label;

    #[test]
    fn client_label_is_bounded_and_sanitised() {
        assert_eq!(client_label(Some("mfe=product-list")), "product-list");
        assert_eq!(client_label(Some("x=1&mfe=shell")), "shell");
        assert_eq!(client_label(Some("mfe=%0Aevil\"<b>")), "0evilb");
        assert_eq!(client_label(Some(&format!("mfe={}", "a".repeat(100)))).len(), 32);
        assert_eq!(client_label(None), "");
    }
}
