//! The help chat on this instance: the services connected here (`GET /api/service/ws`), the desk that hands
//! them the shoppers' waiting messages, and the per-session write limit.
//!
//! Who gets a message is decided in the store ([`crate::store::CartStore::chat_claim`]), so it holds across
//! instances: a conversation is one service's until its messages are acknowledged or that service goes; its
//! messages go in order to that service. The desk claims whenever it is rung — a shopper wrote (here, or on
//! another instance through the bus), a service connected, acknowledged or left — and every third of the
//! lease, which renews the services' hold and picks up conversations whose service's instance died. New
//! conversations go to the least busy service here first (fewest unacknowledged messages), one per service per
//! round, so several services share the waiting ones; a service at `in_flight` unacknowledged messages takes no
//! new conversation until it acknowledges.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use cartwheel_core::chat::{ChatText, FromService, ToService};
use cartwheel_core::protocol::ErrorCode;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::domain::CartKey;
use crate::metrics::Metrics;
use crate::shop::Shop;
use crate::sync::lock;
use crate::throttle::MAX_TRACKED_KEYS;

/// The chat's limits and timings (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct ChatSettings {
    /// Characters in one message.
    pub max_chars: usize,
    /// Messages one session may write per minute (on this instance).
    pub per_minute: u32,
    /// A service's hold on its conversations, renewed a third of it apart.
    pub lease: Duration,
    /// Unacknowledged messages one service connection may hold before it takes no new conversation.
    pub in_flight: usize,
    /// A Ping to each service this often.
    pub heartbeat: Duration,
}

/// Rounds of claims per ring at most (each gives every service at most one new conversation).
const MAX_ROUNDS: usize = 64;

/// A service connected here.
struct Seat {
    id: String,
    /// Frames for its connection.
    frames: mpsc::UnboundedSender<String>,
    /// Message ids handed to it and not acknowledged.
    handed: HashSet<String>,
}

impl Seat {
    /// Send these handed messages to its connection.
    fn hand(&mut self, handed: Vec<(CartKey, cartwheel_core::chat::ChatMessage)>) {
        for (cart, message) in handed {
            let frame = ToService::Chat {
                session: cart.as_str().to_owned(),
                id: message.id.clone(),
                text: message.text,
                at: message.at,
            };
            if let Ok(text) = serde_json::to_string(&frame) {
                // A closed channel: the service is leaving, and its release hands this on.
                let _ = self.frames.send(text);
            }
            self.handed.insert(message.id);
        }
    }
}

/// This instance's services and the shoppers' write budget.
pub struct ChatDesk {
    shop: Shop,
    pub settings: ChatSettings,
    seats: std::sync::Mutex<Vec<Seat>>,
    /// Rung by the hub when shopper messages wait (here or, through the bus, elsewhere).
    waiting: Arc<Notify>,
    /// Each session's writes in the last minute.
    writes: std::sync::Mutex<HashMap<CartKey, VecDeque<Instant>>>,
    metrics: Arc<Metrics>,
}

/// Why a shopper's message was refused before it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatRefusal {
    /// Empty, too long, or a bad `client_id` (`invalid_field`), in words.
    Invalid(String),
    /// Over the session's budget (`rate_limited`).
    TooMany(ChatRateExceeded),
}

impl ChatRefusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatRefusal::Invalid(_) => ErrorCode::InvalidField,
            ChatRefusal::TooMany(_) => ErrorCode::RateLimited,
        }
    }
}

impl std::fmt::Display for ChatRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatRefusal::Invalid(words) => f.write_str(words),
            ChatRefusal::TooMany(e) => {
                write!(
                    f,
                    "at most {} messages a minute; the next in {} s",
                    e.per_minute,
                    e.retry_after.as_secs().max(1)
                )
            }
        }
    }
}

/// Refused: the session wrote `per_minute` messages in the last minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatRateExceeded {
    pub per_minute: u32,
    pub retry_after: Duration,
}

impl ChatDesk {
    pub fn new(shop: Shop, settings: ChatSettings, waiting: Arc<Notify>, metrics: Arc<Metrics>) -> Arc<ChatDesk> {
        Arc::new(ChatDesk {
            shop,
            settings,
            seats: std::sync::Mutex::default(),
            waiting,
            writes: std::sync::Mutex::default(),
            metrics,
        })
    }

    /// Count one message of `cart` against its budget, or say when the next is allowed.
    pub fn allow_write(&self, cart: &CartKey, now: Instant) -> Result<(), ChatRateExceeded> {
        const WINDOW: Duration = Duration::from_secs(60);
        let per_minute = self.settings.per_minute;
        let mut writes = lock(&self.writes);
        if writes.len() >= MAX_TRACKED_KEYS && !writes.contains_key(cart) {
            writes.retain(|_, w| w.back().is_some_and(|t| now.saturating_duration_since(*t) < WINDOW));
        }
        let window = writes.entry(cart.clone()).or_default();
        while window.front().is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW) {
            window.pop_front();
        }
        if window.len() >= per_minute as usize {
            let retry_after =
                window.front().map_or(WINDOW, |t| WINDOW.saturating_sub(now.saturating_duration_since(*t)));
            return Err(ChatRateExceeded { per_minute, retry_after });
        }
        window.push_back(now);
        Ok(())
    }

    /// A message's text, parsed against the configured length.
    pub fn text(&self, text: &str) -> Result<ChatText, cartwheel_core::chat::ChatTextError> {
        ChatText::parse(text, self.settings.max_chars)
    }

    /// A shopper's message as the WebSocket and REST take it: its text and `client_id` valid, and within the
    /// session's budget (which it then counts against).
    pub fn accept(
        &self,
        cart: &CartKey,
        text: &str,
        client_id: Option<&str>,
        now: Instant,
    ) -> Result<ChatText, ChatRefusal> {
        let text = self.text(text).map_err(|e| ChatRefusal::Invalid(e.to_string()))?;
        if client_id.is_some_and(|c| !cartwheel_core::chat::valid_client_id(c)) {
            return Err(ChatRefusal::Invalid("client_id: 1–64 visible ASCII characters".into()));
        }
        self.allow_write(cart, now).map_err(ChatRefusal::TooMany)?;
        Ok(text)
    }

    /// Claim for the services here until a round hands none a new conversation (see the module doc).
    async fn round(&self) {
        for _ in 0..MAX_ROUNDS {
            let mut seats: Vec<(String, usize)> =
                lock(&self.seats).iter().map(|s| (s.id.clone(), s.handed.len())).collect();
            if seats.is_empty() {
                return;
            }
            seats.sort_by_key(|(_, busy)| *busy);
            let mut took = false;
            // Once a seat that could take a new conversation finds none, the rest of this round only renews
            // and collects follow-ups: a shopper's message committed while the round is under way would
            // otherwise go to a busier seat further down. The commit rings the desk, so the next round, sorted
            // afresh, hands it to the least busy.
            let mut none_waiting = false;
            for (id, busy) in seats {
                let take = usize::from(busy < self.settings.in_flight && !none_waiting);
                let handed = match self.shop.chat_claim(&id, self.settings.lease, take).await {
                    Ok(handed) => handed,
                    Err(e) => {
                        tracing::warn!(error = %e, "help chat: claiming waiting messages failed; next round retries");
                        return;
                    }
                };
                took |= !handed.is_empty();
                none_waiting |= take == 1 && handed.is_empty();
                let gone = {
                    let mut all = lock(&self.seats);
                    match all.iter_mut().find(|s| s.id == id) {
                        Some(seat) => {
                            seat.hand(handed);
                            false
                        }
                        None => true,
                    }
                };
                // It left while this round claimed for it: let go again of what it was just given.
                if gone {
                    if let Err(e) = self.shop.chat_release(&id).await {
                        tracing::warn!(error = %e, "help chat: releasing a departed service's claim failed");
                    }
                }
            }
            if !took {
                return;
            }
        }
    }

    /// Claim whenever rung, and every third of the lease, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval((self.settings.lease / 3).max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.waiting.notified() => {}
                _ = ticks.tick() => {}
            }
            self.round().await;
        }
    }

    fn seat(&self, frames: mpsc::UnboundedSender<String>) -> String {
        let id = format!("svc_{}", hex::encode(rand::random::<[u8; 8]>()));
        lock(&self.seats).push(Seat { id: id.clone(), frames, handed: HashSet::new() });
        self.metrics.chat_services_open.inc();
        self.waiting.notify_one();
        id
    }

    async fn unseat(&self, id: &str) {
        lock(&self.seats).retain(|s| s.id != id);
        self.metrics.chat_services_open.dec();
        if let Err(e) = self.shop.chat_release(id).await {
            // Its hold runs out with the lease instead; its conversations move then.
            tracing::warn!(error = %e, "help chat: releasing a service's conversations failed");
        }
    }

    fn acknowledged(&self, id: &str, message: &str) {
        if let Some(seat) = lock(&self.seats).iter_mut().find(|s| s.id == id) {
            seat.handed.remove(message);
        }
        self.waiting.notify_one();
    }
}

/// One service connection (`name`: its token's name, for logs) until it closes or the server shuts down.
pub async fn serve_service(desk: Arc<ChatDesk>, socket: WebSocket, name: &'static str, shutdown: CancellationToken) {
    let (mut sink, mut stream) = socket.split();
    let (frames, mut outgoing) = mpsc::unbounded_channel::<String>();
    let id = desk.seat(frames.clone());
    tracing::info!(service = name, seat = id, "help-chat service connected");
    let mut heartbeat = tokio::time::interval(desk.settings.heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(text) = outgoing.recv() => {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            incoming = stream.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                if let Err((code, message)) = handle(&desk, &id, name, text.as_str()).await {
                    let refusal = ToService::Error { code, message };
                    if let Ok(text) = serde_json::to_string(&refusal) {
                        let _ = frames.send(text);
                    }
                }
            }
        }
    }
    desk.unseat(&id).await;
    tracing::info!(service = name, seat = id, "help-chat service disconnected");
}

/// One frame from a service; a refusal is an `ERROR` frame back (the socket stays open).
async fn handle(desk: &ChatDesk, seat: &str, name: &'static str, text: &str) -> Result<(), (ErrorCode, String)> {
    let frame: FromService = serde_json::from_str(text).map_err(|e| {
        let expected = r#"expected {"type":"REPLY","session","text"} or {"type":"ACK","id"}"#;
        (ErrorCode::InvalidMessage, format!("not a known message: {e}; {expected}"))
    })?;
    match frame {
        FromService::Reply { session, text } => {
            let session = CartKey::parse(&session).map_err(|e| (ErrorCode::InvalidField, e.to_string()))?;
            let text = desk.text(&text).map_err(|e| (ErrorCode::InvalidField, e.to_string()))?;
            desk.shop.chat_from_service(&session, text).await.map_err(|_| {
                (ErrorCode::ServiceUnavailable, "the reply could not be stored; send it again".to_owned())
            })?;
            tracing::debug!(service = name, cart = session.short(), "help-chat reply");
            Ok(())
        }
        FromService::Ack { id } => {
            desk.shop.chat_ack(seat, &id).await.map_err(|_| {
                (ErrorCode::ServiceUnavailable, "the ACK could not be stored; send it again".to_owned())
            })?;
            desk.acknowledged(seat, &id);
            Ok(())
        }
    }
}
