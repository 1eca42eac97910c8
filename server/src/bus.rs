//! Fan-out between instances (Redis mode): every committed change is published on one Redis pub/sub channel,
//! and every instance forwards what it receives to its own connections through its [`CartHub`].
//!
//! A message is the WebSocket frame exactly as clients receive it, behind a one-line header ([`Envelope`]):
//! the publishing instance serializes a change once, and receiving instances only slice the frame out, so each
//! instance serializes nothing it forwards. The publish is part of the commit ([`crate::store::redis`]), so the
//! channel carries each cart's versions in commit order.
//!
//! Pub/sub is fire-and-forget: a message sent while an instance's subscription is down is gone. So the
//! subscription is watched (it ends, or a heartbeat goes unanswered), and every time it comes back the
//! instance reloads the shared stock and prices and reads every cart that has a connection here, and delivers
//! what is newer than what those connections were sent (the hub remembers the newest version per cart). A
//! change can therefore be delayed by an outage, but never lost, and never shown out of order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use shared::{Cart, CartVersion, Notice, Product, ReconnectPolicy, ServerMessage};
use tokio_util::sync::CancellationToken;

use crate::config::defaults;
use crate::hub::{CartEvents, CartHub, Frame, FrameKind};
use crate::metrics::Metrics;
use crate::session::CartKey;
use crate::store::redis::{bounded, RedisCartStore};
use crate::store::{CartStore, StoreError};

/// The one channel all instances of a shop share.
pub const CHANNEL: &str = "cartwheel:events";

/// Whom a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// A `CART_UPDATE` of this cart at this version.
    Cart { key: CartKey, version: CartVersion },
    /// A `PRODUCT_UPDATE`, for every connection.
    Product,
    /// A `NOTICE` for one session's connections, or for every connection.
    Notice(Option<CartKey>),
}

/// One message on the channel: `<kind> <origin> <sent µs> [<cart key> [<version>]]\n<frame>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub topic: Topic,
    /// The publishing instance.
    pub origin: String,
    /// When it was published, in µs since the Unix epoch (for the lag metric; instances' clocks are assumed
    /// close, as NTP keeps them).
    pub sent_us: u64,
    /// The frame as clients receive it.
    pub frame: String,
}

impl Envelope {
    pub fn new(topic: Topic, origin: &str, frame: String) -> Envelope {
        Envelope { topic, origin: origin.to_owned(), sent_us: now_us(), frame }
    }

    pub fn encode(&self) -> String {
        let (origin, sent) = (&self.origin, self.sent_us);
        let header = match &self.topic {
            Topic::Cart { key, version } => format!("cart {origin} {sent} {key} {version}"),
            Topic::Product => format!("product {origin} {sent}"),
            Topic::Notice(Some(key)) => format!("notice {origin} {sent} {key}"),
            Topic::Notice(None) => format!("notice {origin} {sent} *"),
        };
        format!("{header}\n{}", self.frame)
    }

    /// `None` for anything that is not an envelope (another program on the channel, a newer format).
    pub fn decode(payload: &[u8]) -> Option<Envelope> {
        let text = std::str::from_utf8(payload).ok()?;
        let (header, frame) = text.split_once('\n')?;
        let mut fields = header.split(' ');
        let (kind, origin, sent_us) = (fields.next()?, fields.next()?, fields.next()?.parse().ok()?);
        let topic = match kind {
            "cart" => {
                let key = CartKey(fields.next()?.to_owned());
                Topic::Cart { key, version: fields.next()?.parse().ok()? }
            }
            "product" => Topic::Product,
            "notice" => match fields.next()? {
                "*" => Topic::Notice(None),
                key => Topic::Notice(Some(CartKey(key.to_owned()))),
            },
            _ => return None,
        };
        if fields.next().is_some() {
            return None;
        }
        Some(Envelope { topic, origin: origin.to_owned(), sent_us, frame: frame.to_owned() })
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// This instance's end of the channel.
pub struct Bus {
    store: Arc<RedisCartStore>,
    hub: Arc<CartHub>,
    metrics: Arc<Metrics>,
    subscribed: AtomicBool,
}

impl Bus {
    pub fn new(store: Arc<RedisCartStore>, hub: Arc<CartHub>, metrics: Arc<Metrics>) -> Arc<Bus> {
        Arc::new(Bus { store, hub, metrics, subscribed: AtomicBool::new(false) })
    }

    /// Whether the subscription is up (for `/healthz`).
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Subscribe, and keep subscribing again whenever the subscription is lost, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let policy = ReconnectPolicy {
            base: defaults::REDIS_RESUBSCRIBE_BASE,
            max: defaults::REDIS_RESUBSCRIBE_MAX,
            min_delay: defaults::REDIS_RESUBSCRIBE_BASE / 2,
            healthy_after: defaults::REDIS_RESUBSCRIBE_MAX,
        };
        let mut failures = 0u32;
        let mut first = true;
        loop {
            let started = Instant::now();
            tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.subscription(first) => {
                    self.set_subscribed(false);
                    match outcome {
                        Ok(()) => tracing::warn!("Redis subscription ended; subscribing again"),
                        Err(e) => tracing::warn!(error = %e, "Redis subscription failed; subscribing again"),
                    }
                }
            }
            first = false;
            failures = if started.elapsed() >= policy.healthy_after { 1 } else { failures.saturating_add(1) };
            let ceiling = policy.ceiling(failures);
            let wait = policy.min_delay.max(ceiling.mul_f64(rand::random::<f64>()));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn set_subscribed(&self, up: bool) {
        self.subscribed.store(up, Ordering::Relaxed);
        self.metrics.redis_subscribed.set(i64::from(up));
    }

    /// One subscription's life: subscribe, catch up, forward until it is lost.
    async fn subscription(&self, first: bool) -> Result<(), StoreError> {
        let pubsub = bounded(self.store.client().get_async_pubsub()).await?;
        let (mut sink, mut stream) = pubsub.split();
        bounded(sink.subscribe(CHANNEL)).await?;
        // Subscribed first, caught up second: anything committed meanwhile arrives on the stream, and the
        // hub drops whatever the catch-up already delivered. The first time too: connections accepted before
        // the subscription was up have read their snapshot, and a change committed since would be missed.
        self.catch_up().await?;
        if !first {
            self.metrics.redis_resubscriptions.inc();
            tracing::info!("Redis subscription is back; local carts caught up");
        }
        self.set_subscribed(true);
        let mut heartbeat = tokio::time::interval(defaults::REDIS_HEARTBEAT);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.forward(message.get_payload_bytes()),
                    None => return Ok(()),
                },
                _ = heartbeat.tick() => {
                    bounded(sink.ping::<redis::Value>()).await?;
                }
            }
        }
    }

    /// After a gap in the subscription: the shared stock and prices, and every local cart, as they are now.
    async fn catch_up(&self) -> Result<(), StoreError> {
        for product in self.store.reload_catalog().await? {
            self.hub.broadcast(Frame::product_update(&product));
        }
        for key in self.hub.subscribed_keys() {
            let cart = self.store.load(&key).await?;
            self.hub.deliver(&key, Frame::cart_update(&cart));
        }
        Ok(())
    }

    fn forward(&self, payload: &[u8]) {
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!(bytes = payload.len(), "ignored a message on the channel that is not an envelope");
            return;
        };
        let lag_us = now_us().saturating_sub(envelope.sent_us);
        self.metrics.redis_pubsub_lag.observe(lag_us as f64 / 1e6);
        match envelope.topic {
            Topic::Cart { key, version } => {
                self.hub.deliver(&key, Frame::from_text(FrameKind::Cart(version), envelope.frame));
            }
            Topic::Product => {
                // The catalog learns the new state too: this instance prices carts and answers
                // `GET /api/products` with it.
                if let Ok(ServerMessage::ProductUpdate { data }) = serde_json::from_str(&envelope.frame) {
                    self.store.live_catalog().merge(std::slice::from_ref(&data));
                }
                self.hub.broadcast(Frame::from_text(FrameKind::Product, envelope.frame));
            }
            // Its own notices were delivered here when they were sent.
            Topic::Notice(_) if envelope.origin == self.store.origin() => {}
            Topic::Notice(Some(key)) => {
                self.hub.deliver(&key, Frame::from_text(FrameKind::Notice, envelope.frame));
            }
            Topic::Notice(None) => {
                self.hub.broadcast(Frame::from_text(FrameKind::Notice, envelope.frame));
            }
        }
    }
}

/// In Redis mode a change is published by the commit itself, so announcing a cart or product change here
/// has nothing left to do; notices, which no commit carries, are delivered here and published for the others.
impl CartEvents for Bus {
    fn publish(&self, _key: &CartKey, _cart: &Cart) {}

    fn publish_products(&self, _products: &[Product]) {}

    fn publish_notice<'a>(
        &'a self,
        session: Option<&'a CartKey>,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        async move {
            let frame = Frame::notice(notice);
            let envelope = Envelope::new(Topic::Notice(session.cloned()), self.store.origin(), frame.text.to_string());
            self.store.publish(&envelope).await?;
            Ok(match session {
                Some(key) => self.hub.deliver(key, frame),
                None => self.hub.broadcast(frame),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_carry_the_frame_verbatim() {
        let frame = r#"{"type":"CART_UPDATE","version":7,"data":{"note":"a\nb c"}}"#.to_owned();
        for topic in [
            Topic::Cart { key: CartKey("ab12".into()), version: 7 },
            Topic::Product,
            Topic::Notice(Some(CartKey("ab12".into()))),
            Topic::Notice(None),
        ] {
            let envelope = Envelope::new(topic, "0011aabb", frame.clone());
            assert_eq!(Envelope::decode(envelope.encode().as_bytes()), Some(envelope));
        }
    }

    #[test]
    fn anything_else_on_the_channel_is_not_an_envelope() {
        for junk in [
            &b"hello"[..],
            b"cart o 1 key\n{}",
            b"cart o 1 key seven\n{}",
            b"product o 1 extra\n{}",
            b"refund o 1\n{}",
            b"product o x\n{}",
            b"\xff\xfe\n{}",
        ] {
            assert_eq!(Envelope::decode(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }
}
