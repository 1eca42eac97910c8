//! Fan-out between instances (Redis mode): every committed change is published on one Redis pub/sub channel
//! by the commit itself ([`crate::store::redis`], in the [`envelope`] format), and every instance forwards
//! what it receives — its own messages included — to its own connections through its [`CartHub`]. The
//! committing instance also delivers its own cart changes at once ([`Fanout::announce`]); when the same
//! version comes back on the channel the hub's per-cart version rule drops it — unless the commit's answer was
//! lost on the way back, in which case the echo is what delivers it. Product changes have no such rule in the
//! hub, so for them the echo is the one delivery, here as on every other instance.
//!
//! Pub/sub is fire-and-forget: a message sent while an instance's subscription is down is gone. So the
//! subscription is watched (it ends, or a heartbeat goes unanswered), and every time it comes back the
//! instance reloads the shared stock and prices and reads every cart that has a connection here, and delivers
//! what is newer than what those connections were sent (the hub remembers the newest version per cart). A
//! change can therefore be delayed by an outage, but never lost, and never shown out of order.

pub mod envelope;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cartwheel_core::chat::ChatMessage;
use cartwheel_core::version::Epoch;
use cartwheel_core::{PostedNotice, ReconnectPolicy, ServerMessage};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use self::envelope::{Audience, Envelope, EnvelopeFormat};
use super::hub::{CartHub, Frame, FrameKind};
use crate::clock::now_us;
use crate::config::defaults;
use crate::domain::{CartKey, Event};
use crate::metrics::Metrics;
use crate::shop::Fanout;
use crate::store::redis::keys::CHANNEL;
use crate::store::redis::{bounded, RedisCartStore};
use crate::store::{CartStore, StoreError};

/// This instance's end of the channel.
pub struct Bus {
    store: Arc<RedisCartStore>,
    hub: Arc<CartHub>,
    format: Arc<EnvelopeFormat>,
    metrics: Arc<Metrics>,
    subscribed: AtomicBool,
}

impl Bus {
    pub fn new(
        store: Arc<RedisCartStore>,
        hub: Arc<CartHub>,
        format: Arc<EnvelopeFormat>,
        metrics: Arc<Metrics>,
    ) -> Arc<Bus> {
        Arc::new(Bus { store, hub, format, metrics, subscribed: AtomicBool::new(false) })
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
            ..ReconnectPolicy::default()
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
            self.hub.publish_product(&product, Frame::product_update(&product));
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
        match envelope.audience {
            // The hub drops a version it already delivered (our own change, announced at commit).
            Audience::Cart { key, epoch, version } => {
                self.hub.deliver(&key, Frame::from_text(FrameKind::Cart((epoch, version)), envelope.frame));
            }
            Audience::Product => {
                // The catalog learns the new state too: this instance prices carts and answers
                // `GET /api/products` with it.
                match serde_json::from_str(&envelope.frame) {
                    Ok(ServerMessage::ProductUpdate { data }) => {
                        self.store.live_catalog().merge(std::slice::from_ref(&data));
                        self.hub.publish_product(&data, Frame::from_text(FrameKind::Product, envelope.frame));
                    }
                    _ => tracing::warn!("ignored a product envelope whose frame is not a PRODUCT_UPDATE"),
                }
            }
            // Its own notices were delivered here when they were sent.
            Audience::Notice(_) if envelope.origin == self.format.origin() => {}
            Audience::Notice(session) => {
                let seq = match serde_json::from_str(&envelope.frame) {
                    Ok(ServerMessage::Notice { notice, .. }) => notice.seq,
                    _ => {
                        tracing::warn!("ignored a notice envelope whose frame is not a NOTICE");
                        return;
                    }
                };
                self.hub.deliver_notice(session.as_ref(), Frame::from_text(FrameKind::Notice(seq), envelope.frame));
            }
            // Its own were delivered (and rung) here when they were sent.
            Audience::Chat(_) | Audience::ChatWaiting if envelope.origin == self.format.origin() => {}
            Audience::Chat(session) => {
                self.hub.deliver(&session, Frame::from_text(FrameKind::Chat, envelope.frame));
            }
            Audience::ChatWaiting => self.hub.chat_waiting().notify_one(),
        }
    }
}

/// Several instances: a committed change is already on the channel (the commit published it), so announcing
/// it only delivers a new cart version here at once; product changes arrive with the echo (see the module
/// doc). A notice, which no commit carries, is published and delivered here.
impl Fanout for Bus {
    fn announce(&self, events: &[Event]) {
        for event in events {
            if let Event::CartChanged { .. } = event {
                self.hub.deliver_event(event);
            }
        }
    }

    fn notify<'a>(
        &'a self,
        session: Option<&'a CartKey>,
        epoch: &'a Epoch,
        notice: &'a PostedNotice,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        async move {
            let frame = Frame::notice(epoch, notice);
            let envelope =
                Envelope::new(Audience::Notice(session.cloned()), self.format.origin(), frame.text().to_owned());
            self.store.publish(envelope.encode()).await?;
            Ok(self.hub.deliver_notice(session, frame))
        }
        .boxed()
    }

    fn chat<'a>(&'a self, session: &'a CartKey, message: &'a ChatMessage) -> BoxFuture<'a, Result<usize, StoreError>> {
        async move {
            let frame = Frame::chat(message);
            let here = self.hub.deliver(session, frame.clone());
            let envelope =
                Envelope::new(Audience::Chat(session.clone()), self.format.origin(), frame.text().to_owned());
            self.store.publish(envelope.encode()).await?;
            Ok(here)
        }
        .boxed()
    }

    fn chat_waiting(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.hub.chat_waiting().notify_one();
            let envelope = Envelope::new(Audience::ChatWaiting, self.format.origin(), String::new());
            self.store.publish(envelope.encode()).await
        }
        .boxed()
    }
}
