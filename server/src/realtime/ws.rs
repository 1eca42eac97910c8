//! One WebSocket connection per micro-frontend instance, subscribed to its session's cart (the HTTP layer
//! checks the session and upgrades `GET /ws`, then hands the socket to [`serve`]).
//!
//! The connection first sends a `CART_UPDATE` snapshot, then every newer version the hub delivers, every
//! `PRODUCT_UPDATE` and the `NOTICE`s meant for it, answers `PING` with `PONG` and `RESYNC` with a fresh
//! snapshot, and refuses anything else with an `ERROR` frame while staying open. The bytes on the wire are
//! [`super::wire`]'s; frames for many connections are written by their publisher (see [`super::hub`]), this
//! task writes the connection's own and finishes what a full socket could not take. When the store cannot be
//! read (Redis unreachable), it says so in an `ERROR` frame, stays open and tries the snapshot again every
//! [`defaults::SNAPSHOT_RETRY`]. It closes with 1009 for an oversized frame, 1002 for bytes that break the
//! protocol, 1007 for text that is not UTF-8, 1008 for a client that floods frames, 1001 when the server shuts
//! down or the peer stops answering heartbeats, and answers a client's close with its code — and it drops a
//! peer that stops reading rather than buffer for it without bound.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cartwheel_core::protocol::close;
use cartwheel_core::{ClientMessage, ErrorCode, ServerMessage};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{sleep_until, timeout, Instant as TokioInstant};
use tokio_util::sync::CancellationToken;

use super::hub::{CartHub, Flushed, Frame, FrameKind, Mailbox, Wire};
use super::presence::PresenceBoard;
use super::wire::{self, Decoder, Incoming, WireError};
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
    /// The largest message (and frame) a client may send (`--max-ws-message-bytes`); larger closes with 1009.
    pub max_message: usize,
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

/// The TCP connection a WebSocket was upgraded from, lent by whatever owns it (the HTTP layer's stream).
pub trait TcpOwner: Send + Sync + 'static {
    fn stream(&self) -> &TcpStream;
}

/// A connection's socket as the hub writes to it.
struct Socket(Box<dyn TcpOwner>);

impl Socket {
    fn tcp(&self) -> &TcpStream {
        self.0.stream()
    }
}

impl Wire for Socket {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.tcp().try_write(bytes)
    }
}

/// Bytes read from the socket at a time (on the stack of a synchronous read, so an idle connection holds none).
const READ_CHUNK: usize = 2048;
/// How long a closing connection waits for the peer's close frame (or its hang-up) before letting go.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Reads per turn of the loop before the connection's other work gets a look in.
const READS_PER_TURN: usize = 8;

/// Serve one upgraded connection of `cart` until it ends; `read_ahead` is what the HTTP layer had already read
/// past the upgrade request, `issued_ms` when the session's token was issued (see [`Shop::notices`]).
pub async fn serve(
    tcp: Box<dyn TcpOwner>,
    read_ahead: Bytes,
    sockets: Arc<Sockets>,
    cart: CartKey,
    issued_ms: Option<u64>,
    peer: SocketAddr,
    client: String,
) {
    let started = Instant::now();
    let metrics = sockets.metrics.clone();
    metrics.ws_connections_total.inc();
    metrics.ws_connections_open.inc();
    tracing::info!(cart = cart.short(), peer = %peer, client, "websocket connected");
    let decoder = Decoder::new(sockets.limits.max_message);
    let mut conn = Connection {
        socket: Arc::new(Socket(tcp)),
        decoder,
        read_ahead,
        sockets,
        cart,
        issued_ms,
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
    socket: Arc<Socket>,
    decoder: Decoder,
    read_ahead: Bytes,
    sockets: Arc<Sockets>,
    cart: CartKey,
    /// When the session's token was issued: where its general notices start if the store has not seen it yet.
    issued_ms: Option<u64>,
    /// Frames this task wrote (the hub counts its own).
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

/// What reading the socket gave.
enum Read {
    Open,
    /// The peer closed the TCP connection.
    Eof,
    Failed(WireError),
    Broken,
}

impl Connection {
    async fn run(&mut self) -> Ending {
        // Subscribe before reading the snapshot: a change committed in between then arrives as a newer frame
        // instead of falling into the gap.
        let subscription = self.sockets.hub.subscribe(&self.cart);
        let mut everyone = self.sockets.hub.everyone();
        let mut everyone_open = true;
        let mailbox = subscription.mailbox();
        Box::pin(self.queue_snapshot(mailbox)).await;
        // Then every stored notice the session has not acknowledged (live ones may come twice: clients drop a
        // notice whose id they have shown).
        Box::pin(self.queue_stored_notices(mailbox)).await;
        // All the counts now; then what changes, from the board (at most one frame per presence interval). Not
        // before the first count (the server just started): zeros would blank the labels the page was rendered
        // with, and the first count follows within an interval.
        let counts = self.sockets.presence.current();
        if counts.online > 0 {
            mailbox.push_own(Frame::presence(&counts));
        }
        if let Err(ending) = self.flush(mailbox).await {
            return ending;
        }
        // The opening frames are out: from now on the hub may write here.
        mailbox.attach(self.socket.clone());
        let limits = self.sockets.limits;
        let mut frames = TokenBucket::new(limits.frames, Instant::now());
        // One timer for every deadline (the next heartbeat, a missing pong, a retry of what the store could
        // not give): a connection holds one, not one per purpose.
        let mut next_ping = TokioInstant::now() + limits.heartbeat_interval;
        let mut pong_deadline: Option<TokioInstant> = None;
        let shutdown = self.sockets.shutdown.clone();
        let mut incoming = Vec::new();
        // Decoded and let go at once: even empty, these bytes can hold on to the HTTP layer's whole read
        // buffer (several KiB) for as long as the connection lives.
        let ahead = std::mem::take(&mut self.read_ahead);
        let mut read = if ahead.is_empty() { Read::Open } else { self.decode(&ahead, &mut incoming) };
        drop(ahead);

        loop {
            // What was read last turn (or read ahead by the HTTP layer): handled before waiting again.
            if !incoming.is_empty() || !matches!(read, Read::Open) {
                pong_deadline = None;
                for message in std::mem::take(&mut incoming) {
                    // Boxed, like every rare and large step below, so an idle connection's task stays small.
                    if let Err(ending) = Box::pin(self.handle(mailbox, &mut frames, message)).await {
                        return ending;
                    }
                }
                match std::mem::replace(&mut read, Read::Open) {
                    Read::Open => {}
                    Read::Eof | Read::Broken => return Ending::ClientGone,
                    Read::Failed(error) => {
                        let too_big = matches!(error, WireError::TooBig { .. });
                        Box::pin(self.close_unreadable(mailbox, error.close_code())).await;
                        return if too_big { Ending::MessageTooBig } else { Ending::ReadError };
                    }
                }
            }
            let deadline = [Some(next_ping), pong_deadline, self.snapshot_due, self.notices_due]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_ping);
            tokio::select! {
                () = shutdown.cancelled() => {
                    Box::pin(self.close(mailbox, close::GOING_AWAY, "server shutting down")).await;
                    return Ending::ServerShutdown;
                }
                () = mailbox.wanted() => {
                    if let Err(ending) = self.flush(mailbox).await {
                        return ending;
                    }
                }
                ready = self.socket.tcp().readable() => {
                    read = match ready {
                        Ok(()) => self.read_now(&mut incoming),
                        Err(_) => Read::Broken,
                    };
                }
                received = everyone.recv(), if everyone_open => {
                    match received {
                        Ok(frame) => {
                            if !matches!(frame.kind, FrameKind::Notice(seq) if self.replayed.remove(&seq)) {
                                mailbox.push_own(frame);
                            }
                        }
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(cart = self.cart.short(), missed, "fell behind the broadcast ring");
                            self.sockets.metrics.broadcast_lagged.inc();
                            // General notices in the gap are stored: send what is not acknowledged again.
                            // (Product changes and presence do not use the ring: see `StateBoard`.)
                            Box::pin(self.queue_stored_notices(mailbox)).await;
                        }
                        // Only when the hub is gone, i.e. the server is stopping.
                        Err(RecvError::Closed) => everyone_open = false,
                    }
                    if let Err(ending) = self.flush(mailbox).await {
                        return ending;
                    }
                }
                () = sleep_until(deadline) => {
                    let now = TokioInstant::now();
                    if pong_deadline.is_some_and(|d| d <= now) {
                        Box::pin(self.close(mailbox, close::GOING_AWAY, "heartbeat timeout")).await;
                        return Ending::HeartbeatTimeout;
                    }
                    if next_ping <= now {
                        next_ping = now + limits.heartbeat_interval;
                        if pong_deadline.is_none() {
                            pong_deadline = Some(now + limits.heartbeat_timeout);
                        }
                        mailbox.push_own(Frame::control(wire::ping()));
                    }
                    if self.snapshot_due.is_some_and(|d| d <= now) {
                        Box::pin(self.queue_snapshot(mailbox)).await;
                    }
                    if self.notices_due.is_some_and(|d| d <= now) {
                        Box::pin(self.queue_stored_notices(mailbox)).await;
                    }
                    if let Err(ending) = self.flush(mailbox).await {
                        return ending;
                    }
                }
            }
        }
    }

    /// Read what the socket has now, without waiting, into `incoming`.
    fn read_now(&mut self, incoming: &mut Vec<Incoming>) -> Read {
        let mut buffer = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_TURN {
            match self.socket.tcp().try_read(&mut buffer) {
                Ok(0) => return Read::Eof,
                Ok(n) => {
                    if let Read::Failed(error) = self.decode(&buffer[..n], incoming) {
                        return Read::Failed(error);
                    }
                    if incoming.iter().any(|m| matches!(m, Incoming::Close(_))) {
                        return Read::Open;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Read::Broken,
            }
        }
        Read::Open
    }

    fn decode(&mut self, bytes: &[u8], incoming: &mut Vec<Incoming>) -> Read {
        match self.decoder.feed(bytes, incoming) {
            Ok(()) => Read::Open,
            Err(error) => Read::Failed(error),
        }
    }

    /// One message from the client. Every frame counts against the frame rate, control frames too: each Ping
    /// costs the server a Pong, so a flood of them is a flood like any other.
    async fn handle(&mut self, mailbox: &Mailbox, frames: &mut TokenBucket, message: Incoming) -> Sent {
        if let Incoming::Close(code) = message {
            // The close handshake: answer with the client's code, then the connection is over.
            mailbox.detach();
            mailbox.push_own(Frame::control(wire::close_frame(code.unwrap_or(close::NORMAL), "")));
            let _ = self.flush(mailbox).await;
            return Err(Ending::ClientClosed);
        }
        if frames.take(Instant::now()).is_err() {
            if matches!(message, Incoming::Text(_)) {
                // Closing either way: whether the explanation got through does not change the ending.
                self.queue_error(mailbox, ErrorCode::RateLimited, "too many messages; closing");
            }
            self.close(mailbox, close::POLICY_VIOLATION, "rate limited").await;
            return Err(Ending::Flooding);
        }
        match message {
            Incoming::Text(text) => self.handle_text(mailbox, &text).await,
            Incoming::Binary => {
                self.queue_error(mailbox, ErrorCode::InvalidMessage, "send JSON text frames");
                self.flush(mailbox).await
            }
            Incoming::Ping(payload) => {
                mailbox.push_own(Frame::control(wire::pong(&payload)));
                self.flush(mailbox).await
            }
            Incoming::Pong | Incoming::Close(_) => Ok(()),
        }
    }

    async fn handle_text(&mut self, mailbox: &Mailbox, text: &str) -> Sent {
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Ping { id }) => {
                mailbox.push_own(Frame::reply(&ServerMessage::Pong { id, server_time_ms: now_ms() }));
            }
            Ok(ClientMessage::Resync) => self.queue_snapshot(mailbox).await,
            Ok(ClientMessage::Chat { text, client_id }) => self.chat(mailbox, &text, client_id).await,
            Ok(ClientMessage::Ack { upto, epoch }) => {
                // Lost, it only means the notices come again on the next connect (and are dropped by id).
                if let Err(e) = self.sockets.shop.ack_notices(&self.cart, &epoch, upto).await {
                    tracing::warn!(cart = self.cart.short(), error = %e, "cannot record a notice acknowledgement");
                }
            }
            Err(e) => {
                let message = format!(
                    "not a known message: {e}; expected {{\"type\":\"PING\",\"id\":n}}, {{\"type\":\"RESYNC\"}}, \
                     {{\"type\":\"ACK\",\"upto\":n,\"epoch\":\"…\"}} or {{\"type\":\"CHAT\",\"text\":\"…\"}}"
                );
                self.queue_error(mailbox, ErrorCode::InvalidMessage, &message);
            }
        }
        self.flush(mailbox).await
    }

    /// A help-chat message from the shopper: stored and sent to every connection of the session (this one
    /// too), or refused with an `ERROR` frame (too long, too many, the store down); the socket stays open.
    async fn chat(&mut self, mailbox: &Mailbox, text: &str, client_id: Option<String>) {
        let text = match self.sockets.chat.accept(&self.cart, text, client_id.as_deref(), Instant::now()) {
            Ok(text) => text,
            Err(refusal) => return self.queue_error(mailbox, refusal.code(), &refusal.to_string()),
        };
        if let Err(e) = self.sockets.shop.chat_from_shopper(&self.cart, text, client_id).await {
            tracing::warn!(cart = self.cart.short(), error = %e, "cannot store a help-chat message");
            self.queue_error(mailbox, ErrorCode::ServiceUnavailable, "the message could not be sent; send it again");
        }
    }

    /// The cart as it is now, queued to be written whatever this connection already has (a `RESYNC` asks for
    /// it); when the store cannot say, an `ERROR` once per outage and another try later.
    async fn queue_snapshot(&mut self, mailbox: &Mailbox) {
        match self.sockets.shop.cart(&self.cart).await {
            Ok(cart) => {
                self.snapshot_due = None;
                mailbox.push_own(Frame::snapshot(&cart));
            }
            Err(e) => {
                tracing::warn!(cart = self.cart.short(), error = %e, "cannot load cart for a snapshot");
                // Said once per outage, not once per retry.
                let first = self.snapshot_due.replace(TokioInstant::now() + defaults::SNAPSHOT_RETRY).is_none();
                if first {
                    let message = "the cart cannot be read right now; it will be sent as soon as it can";
                    self.queue_error(mailbox, ErrorCode::ServiceUnavailable, message);
                }
            }
        }
    }

    /// The session's stored notices after its cursor, oldest first; retried later if the store cannot say.
    async fn queue_stored_notices(&mut self, mailbox: &Mailbox) {
        match self.sockets.shop.notices(&self.cart, self.issued_ms).await {
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
                    mailbox.push_own(Frame::notice(&list.epoch, notice));
                }
                self.sockets.metrics.notices_replayed.inc_by(u64::try_from(count).unwrap_or(u64::MAX));
            }
            Err(e) => {
                tracing::warn!(cart = self.cart.short(), error = %e, "cannot read stored notices");
                self.notices_due = Some(TokioInstant::now() + defaults::SNAPSHOT_RETRY);
            }
        }
    }

    fn queue_error(&self, mailbox: &Mailbox, code: ErrorCode, message: &str) {
        mailbox.push_own(Frame::reply(&ServerMessage::Error { code, message: message.to_owned() }));
    }

    /// Write what the mailbox holds; a peer that takes nothing for the send timeout has stopped reading.
    async fn flush(&mut self, mailbox: &Mailbox) -> Sent {
        loop {
            let (written, flushed) = mailbox.flush(&*self.socket, &self.sockets.hub);
            self.sent += written;
            self.sockets.metrics.ws_messages_sent.inc_by(written);
            match flushed {
                Flushed::Done => return Ok(()),
                Flushed::Failed => return Err(Ending::ClientGone),
                Flushed::Blocked => {
                    let writable = Box::pin(timeout(self.sockets.limits.send_timeout, self.socket.tcp().writable()));
                    match writable.await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(Ending::ClientGone),
                        Err(_) => return Err(Ending::StoppedReading),
                    }
                }
            }
        }
    }

    /// Stop the hub writing here and send a close frame after the rest of a frame already begun and the answers
    /// queued; `false` if the peer is gone.
    async fn send_close(&mut self, mailbox: &Mailbox, code: u16, reason: &'static str) -> bool {
        mailbox.detach();
        mailbox.push_own(Frame::control(wire::close_frame(code, reason)));
        self.flush(mailbox).await.is_ok()
    }

    /// Send a close frame (after the rest of a frame already begun and the answers queued) and give the peer a
    /// moment to answer it, so the close handshake completes.
    async fn close(&mut self, mailbox: &Mailbox, code: u16, reason: &'static str) {
        if !self.send_close(mailbox, code, reason).await {
            return;
        }
        let _ = timeout(CLOSE_LINGER, async {
            let mut incoming = Vec::new();
            loop {
                if self.socket.tcp().readable().await.is_err() {
                    return;
                }
                match self.read_now(&mut incoming) {
                    Read::Open if incoming.iter().any(|m| matches!(m, Incoming::Close(_))) => return,
                    Read::Open => incoming.clear(),
                    _ => return,
                }
            }
        })
        .await;
    }

    /// Close after a frame that could not be decoded: what follows it is not frames, so it is read and thrown
    /// away (until the peer hangs up, or for a moment at most) rather than decoded. Dropping the socket with
    /// those bytes unread would reset the connection, and the peer could lose the close frame and its code.
    async fn close_unreadable(&mut self, mailbox: &Mailbox, code: u16) {
        if !self.send_close(mailbox, code, "invalid frame").await {
            return;
        }
        let _ = timeout(CLOSE_LINGER, async {
            let mut buffer = [0u8; READ_CHUNK];
            loop {
                if self.socket.tcp().readable().await.is_err() {
                    return;
                }
                match self.socket.tcp().try_read(&mut buffer) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(_) => return,
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
