//! Fan-out to WebSocket connections: cart changes to the connections of that cart, product changes and
//! general notices to every connection, a targeted notice to one session's connections.
//!
//! The shop announces committed changes through its [`Fanout`] trait, which the hub implements for one
//! instance (in Redis mode the [`super::bus::Bus`] wraps it). The hub serializes each frame once and hands the
//! same bytes to every recipient.
//!
//! Per-cart frames go through each connection's bounded [`Mailbox`]. The hub remembers the newest version it
//! delivered per cart and drops anything not newer, so every connection sees strictly increasing versions even
//! if two publishers race. When a connection falls `capacity` frames behind, its queued cart updates are
//! replaced by the newest one (a cart update is a full snapshot, so skipping intermediate versions loses
//! nothing), and the oldest notices make room; one stalled reader never holds memory or others hostage.
//!
//! Frames for everyone go through one shared ring ([`tokio::sync::broadcast`]), not through every mailbox: a
//! product change costs one serialization and one slot, whatever the number of connections. A connection that
//! falls a whole ring behind learns it (`Lagged`) and is sent the current state of every product instead, so a
//! stock or price change is never silently lost.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use cartwheel_core::chat::ChatMessage;
use cartwheel_core::version::Epoch;
use cartwheel_core::{Cart, CartVersion, PostedNotice, Product, ServerMessage};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{broadcast, Notify};

use crate::domain::{CartKey, Event};
use crate::metrics::Metrics;
use crate::shop::Fanout;
use crate::store::StoreError;
use crate::sync::lock;

/// What a frame carries, as far as queueing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A `CART_UPDATE` at this epoch (its bits) and version: a newer one supersedes it.
    Cart(CartPosition),
    /// A `PRODUCT_UPDATE`.
    Product,
    /// A `NOTICE`, with its seq.
    Notice(u64),
    /// A `PRESENCE` (counts).
    Presence,
    /// A help-chat `CHAT` message.
    Chat,
}

/// Where a cart update is in its cart's history: `(epoch bits, version)`.
pub type CartPosition = (u64, CartVersion);

/// Whether a cart update at `incoming` should follow one at `sent`: always in another epoch (a new history,
/// see `cartwheel_core::version`), else only at a higher version.
pub fn supersedes(incoming: CartPosition, sent: Option<CartPosition>) -> bool {
    sent.is_none_or(|(epoch, version)| epoch != incoming.0 || incoming.1 > version)
}

/// One serialized server frame, shared by all its recipients.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: FrameKind,
    pub text: Utf8Bytes,
    pub published_at: Instant,
}

impl Frame {
    fn new(kind: FrameKind, message: &ServerMessage) -> Frame {
        // Serializing plain data with string keys cannot fail; an empty frame would be refused by clients anyway.
        let text = serde_json::to_string(message).unwrap_or_default();
        Frame { kind, text: text.into(), published_at: Instant::now() }
    }

    /// A frame serialized elsewhere (another instance), forwarded as it is.
    pub fn from_text(kind: FrameKind, text: String) -> Frame {
        Frame { kind, text: text.into(), published_at: Instant::now() }
    }

    pub fn cart_update(cart: &Cart) -> Frame {
        Frame::new(
            FrameKind::Cart((cart.epoch.bits(), cart.version)),
            &ServerMessage::CartUpdate { version: cart.version, data: cart.clone() },
        )
    }

    pub fn product_update(product: &Product) -> Frame {
        Frame::new(FrameKind::Product, &ServerMessage::ProductUpdate { data: product.clone() })
    }

    /// The frame that tells connections of a committed event.
    pub fn of_event(event: &Event) -> Frame {
        match event {
            Event::CartChanged { cart, .. } => Frame::cart_update(cart),
            Event::ProductChanged(product) => Frame::product_update(product),
        }
    }

    pub fn notice(epoch: &Epoch, notice: &PostedNotice) -> Frame {
        Frame::new(
            FrameKind::Notice(notice.seq),
            &ServerMessage::Notice { epoch: epoch.clone(), notice: notice.clone() },
        )
    }

    pub fn chat(message: &ChatMessage) -> Frame {
        Frame::new(FrameKind::Chat, &ServerMessage::Chat { message: message.clone() })
    }

    pub fn presence(counts: &cartwheel_core::presence::Presence) -> Frame {
        Frame::new(FrameKind::Presence, &ServerMessage::Presence { counts: counts.clone() })
    }

    /// The cart's epoch and version, for a cart update.
    pub fn position(&self) -> Option<CartPosition> {
        match self.kind {
            FrameKind::Cart(p) => Some(p),
            _ => None,
        }
    }

    /// The cart version, for a cart update.
    pub fn version(&self) -> Option<CartVersion> {
        self.position().map(|(_, v)| v)
    }
}

/// A connection's bounded queue of pending updates.
pub struct Mailbox {
    queue: Mutex<VecDeque<Frame>>,
    ready: Notify,
    capacity: usize,
}

impl Mailbox {
    fn new(capacity: usize) -> Mailbox {
        Mailbox { queue: Mutex::new(VecDeque::new()), ready: Notify::new(), capacity: capacity.max(1) }
    }

    /// Queue `frame`; returns `true` if the queue was full and made room (see the module doc).
    fn push(&self, frame: Frame) -> bool {
        let mut queue = lock(&self.queue);
        let overflowed = queue.len() >= self.capacity;
        if overflowed {
            let is_cart = |f: &Frame| matches!(f.kind, FrameKind::Cart(_));
            // Superseded snapshots go first: by the new frame if it is one, else by the newest queued one.
            let keep = if is_cart(&frame) { None } else { queue.iter().rposition(is_cart) };
            let mut index = 0;
            queue.retain(|f| {
                let kept = !is_cart(f) || Some(index) == keep;
                index += 1;
                kept
            });
            // Still full of notices: the oldest make room.
            while queue.len() >= self.capacity {
                match queue.iter().position(|f| !is_cart(f)) {
                    Some(oldest) => drop(queue.remove(oldest)),
                    None => break,
                }
            }
        }
        queue.push_back(frame);
        drop(queue);
        self.ready.notify_one();
        overflowed
    }

    /// The next queued update, waiting for one if necessary. Cancel-safe.
    pub async fn next(&self) -> Frame {
        loop {
            if let Some(frame) = lock(&self.queue).pop_front() {
                return frame;
            }
            self.ready.notified().await;
        }
    }
}

struct CartTopic {
    newest: Option<CartPosition>,
    mailboxes: Vec<Arc<Mailbox>>,
}

/// The subscriptions of this process, by cart, and the ring of frames for everyone.
pub struct CartHub {
    topics: Mutex<HashMap<CartKey, CartTopic>>,
    mailbox_capacity: usize,
    everyone: broadcast::Sender<Frame>,
    /// Rung when shopper messages wait or a service let go: this instance's chat desk claims again.
    chat_waiting: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl CartHub {
    /// `mailbox_capacity` frames per connection; `broadcast_capacity` frames in the shared ring for everyone.
    pub fn new(mailbox_capacity: usize, broadcast_capacity: usize, metrics: Arc<Metrics>) -> Arc<CartHub> {
        let (everyone, _) = broadcast::channel(broadcast_capacity.max(1));
        Arc::new(CartHub {
            topics: Mutex::new(HashMap::new()),
            mailbox_capacity,
            everyone,
            chat_waiting: Arc::new(Notify::new()),
            metrics,
        })
    }

    /// What rings when shopper messages wait for a service (see [`super::chat::ChatDesk`]).
    pub fn chat_waiting(&self) -> Arc<Notify> {
        self.chat_waiting.clone()
    }

    /// Start receiving the frames for everyone (product updates, general notices).
    pub fn everyone(&self) -> broadcast::Receiver<Frame> {
        self.everyone.subscribe()
    }

    /// Start receiving updates of `key`; they stop when the subscription is dropped.
    pub fn subscribe(self: &Arc<Self>, key: &CartKey) -> Subscription {
        let mailbox = Arc::new(Mailbox::new(self.mailbox_capacity));
        let mut topics = lock(&self.topics);
        topics
            .entry(key.clone())
            .or_insert_with(|| CartTopic { newest: None, mailboxes: Vec::new() })
            .mailboxes
            .push(mailbox.clone());
        Subscription { hub: Arc::downgrade(self), key: key.clone(), mailbox }
    }

    /// Deliver an already-serialized frame to the local subscribers of `key`; returns how many it reached.
    pub fn deliver(&self, key: &CartKey, frame: Frame) -> usize {
        let mut topics = lock(&self.topics);
        let Some(topic) = topics.get_mut(key) else {
            return 0;
        };
        if let Some(position) = frame.position() {
            if !supersedes(position, topic.newest) {
                return 0;
            }
            topic.newest = Some(position);
        }
        for mailbox in &topic.mailboxes {
            if mailbox.push(frame.clone()) {
                self.metrics.slow_consumer_events.inc();
            }
        }
        topic.mailboxes.len()
    }

    /// Hand `frame` to every connection through the shared ring; returns how many receivers it reached.
    pub fn broadcast(&self, frame: Frame) -> usize {
        // Err only means nobody is connected.
        self.everyone.send(frame).unwrap_or(0)
    }

    /// The carts with at least one subscriber here.
    pub fn subscribed_keys(&self) -> Vec<CartKey> {
        lock(&self.topics).keys().cloned().collect()
    }

    /// The carts with at least one subscriber here, with how many each has.
    pub fn subscriptions(&self) -> Vec<(CartKey, usize)> {
        lock(&self.topics).iter().map(|(key, topic)| (key.clone(), topic.mailboxes.len())).collect()
    }

    /// Carts with at least one subscriber here (for metrics and tests).
    pub fn subscribed_carts(&self) -> usize {
        lock(&self.topics).len()
    }

    fn unsubscribe(&self, key: &CartKey, mailbox: &Arc<Mailbox>) {
        let mut topics = lock(&self.topics);
        if let Some(topic) = topics.get_mut(key) {
            topic.mailboxes.retain(|m| !Arc::ptr_eq(m, mailbox));
            if topic.mailboxes.is_empty() {
                topics.remove(key);
            }
        }
    }
}

impl CartHub {
    /// Deliver a committed event to the connections of this instance it concerns.
    pub fn deliver_event(&self, event: &Event) {
        match event {
            Event::CartChanged { key, cart } => {
                self.deliver(key, Frame::cart_update(cart));
            }
            Event::ProductChanged(product) => {
                self.broadcast(Frame::product_update(product));
            }
        }
    }

    /// Deliver a notice to `session`'s connections here, or to every connection here.
    pub fn deliver_notice(&self, session: Option<&CartKey>, frame: Frame) -> usize {
        match session {
            Some(key) => self.deliver(key, frame),
            None => self.broadcast(frame),
        }
    }
}

/// One instance: everything committed here is delivered here, and that is everyone.
impl Fanout for CartHub {
    fn announce(&self, events: &[Event]) {
        for event in events {
            self.deliver_event(event);
        }
    }

    fn notify<'a>(
        &'a self,
        session: Option<&'a CartKey>,
        epoch: &'a Epoch,
        notice: &'a PostedNotice,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        futures_util::future::ready(Ok(self.deliver_notice(session, Frame::notice(epoch, notice)))).boxed()
    }

    fn chat<'a>(&'a self, session: &'a CartKey, message: &'a ChatMessage) -> BoxFuture<'a, Result<usize, StoreError>> {
        futures_util::future::ready(Ok(self.deliver(session, Frame::chat(message)))).boxed()
    }

    fn chat_waiting(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.chat_waiting.notify_one();
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// A connection's subscription to one cart.
pub struct Subscription {
    hub: Weak<CartHub>,
    key: CartKey,
    mailbox: Arc<Mailbox>,
}

impl Subscription {
    pub async fn next(&self) -> Frame {
        self.mailbox.next().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(&self.key, &self.mailbox);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cartwheel_core::Notice;

    fn cart(v: CartVersion) -> Cart {
        let mut c = Cart::empty("EUR");
        c.version = v;
        c
    }

    fn key(name: &str) -> CartKey {
        CartKey::parse(&name.repeat(32)).unwrap()
    }

    fn cart_event(key: &CartKey, v: CartVersion) -> Vec<Event> {
        vec![Event::CartChanged { key: key.clone(), cart: cart(v) }]
    }

    fn hub(capacity: usize) -> Arc<CartHub> {
        CartHub::new(capacity, 8, Arc::new(Metrics::new()))
    }

    fn notice(message: &str) -> PostedNotice {
        let data = Notice { kind: "test".into(), message: message.into(), product_id: None };
        PostedNotice { id: format!("ntc_{message}"), seq: 1, sent_at_ms: 0, data }
    }

    #[tokio::test]
    async fn delivers_to_the_carts_subscribers_only() {
        let hub = hub(8);
        let a = key("a");
        let (s1, s2, other) = (hub.subscribe(&a), hub.subscribe(&a), hub.subscribe(&key("b")));
        hub.announce(&cart_event(&a, 1));
        assert_eq!(s1.next().await.version(), Some(1));
        assert_eq!(s2.next().await.version(), Some(1));
        assert!(other.mailbox.queue.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn stale_versions_are_dropped() {
        let hub = hub(8);
        let a = key("a");
        let s = hub.subscribe(&a);
        hub.announce(&cart_event(&a, 2));
        hub.announce(&cart_event(&a, 1));
        hub.announce(&cart_event(&a, 2));
        hub.announce(&cart_event(&a, 3));
        assert_eq!(s.next().await.version(), Some(2));
        assert_eq!(s.next().await.version(), Some(3));
        assert!(s.mailbox.queue.lock().unwrap().is_empty());
    }

    /// A restored database or a flushed Redis starts the cart again at a low version in another epoch: the
    /// hub must deliver it (and then only newer versions of that epoch), or the page stays stale for ever.
    #[tokio::test]
    async fn a_lower_version_of_another_epoch_is_delivered() {
        let hub = hub(8);
        let a = key("a");
        let s = hub.subscribe(&a);
        hub.announce(&cart_event(&a, 7));
        let mut fresh = cart(1);
        fresh.epoch = cartwheel_core::version::Epoch::from_bits(0xb);
        let event = |c: &Cart| vec![Event::CartChanged { key: a.clone(), cart: c.clone() }];
        hub.announce(&event(&fresh));
        hub.announce(&event(&fresh));
        assert_eq!(s.next().await.position(), Some((0, 7)));
        assert_eq!(s.next().await.position(), Some((0xb, 1)), "version 1 of epoch B follows version 7 of A");
        assert!(s.mailbox.queue.lock().unwrap().is_empty(), "a repeat within the new epoch is dropped");
    }

    #[tokio::test]
    async fn overflow_keeps_only_the_newest() {
        let metrics = Arc::new(Metrics::new());
        let hub = CartHub::new(4, 8, metrics.clone());
        let a = key("a");
        let s = hub.subscribe(&a);
        for v in 1..=5 {
            hub.announce(&cart_event(&a, v));
        }
        assert_eq!(s.mailbox.queue.lock().unwrap().len(), 1, "bounded: the fifth push replaced the queue");
        assert_eq!(s.next().await.version(), Some(5));
        assert_eq!(metrics.slow_consumer_events.get(), 1);
    }

    #[tokio::test]
    async fn overflow_keeps_notices_and_the_newest_cart_update() {
        let hub = hub(4);
        let a = key("a");
        let s = hub.subscribe(&a);
        hub.announce(&cart_event(&a, 1));
        hub.notify(Some(&a), &Epoch::default(), &notice("first")).await.unwrap();
        hub.announce(&cart_event(&a, 2));
        hub.notify(Some(&a), &Epoch::default(), &notice("second")).await.unwrap();
        // Full: a notice makes the older snapshot (version 1) go, not a notice.
        assert_eq!(hub.notify(Some(&a), &Epoch::default(), &notice("third")).await.unwrap(), 1);
        let kinds: Vec<FrameKind> = s.mailbox.queue.lock().unwrap().iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FrameKind::Notice(1), FrameKind::Cart((0, 2)), FrameKind::Notice(1), FrameKind::Notice(1)]);
        // Full of notices and one snapshot: a newer snapshot replaces the old one.
        hub.announce(&cart_event(&a, 3));
        let kinds: Vec<FrameKind> = s.mailbox.queue.lock().unwrap().iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FrameKind::Notice(1), FrameKind::Notice(1), FrameKind::Notice(1), FrameKind::Cart((0, 3))]);
        // Notices only: the oldest makes room.
        let only_notices = hub.subscribe(&key("b"));
        for i in 0..5 {
            hub.notify(Some(&key("b")), &Epoch::default(), &notice(&format!("n{i}"))).await.unwrap();
        }
        let texts: Vec<String> =
            only_notices.mailbox.queue.lock().unwrap().iter().map(|f| f.text.to_string()).collect();
        assert_eq!(texts.len(), 4);
        assert!(texts[0].contains("n1") && texts[3].contains("n4"), "{texts:?}");
    }

    #[tokio::test]
    async fn frames_for_everyone_reach_every_receiver_and_a_lagging_one_learns_it() {
        let hub = hub(4);
        let mut one = hub.everyone();
        let mut two = hub.everyone();
        assert_eq!(hub.notify(None, &Epoch::default(), &notice("hello")).await.unwrap(), 2);
        assert_eq!(one.recv().await.unwrap().kind, FrameKind::Notice(1));
        assert_eq!(two.recv().await.unwrap().kind, FrameKind::Notice(1));
        for i in 0..9 {
            hub.notify(None, &Epoch::default(), &notice(&format!("{i}"))).await.unwrap();
        }
        assert!(matches!(one.recv().await, Err(broadcast::error::RecvError::Lagged(1))), "ring of 8, 9 sent");
    }

    #[test]
    fn dropping_the_last_subscription_forgets_the_cart() {
        let hub = hub(4);
        let a = key("a");
        let s1 = hub.subscribe(&a);
        let s2 = hub.subscribe(&a);
        assert_eq!(hub.subscribed_carts(), 1);
        drop(s1);
        assert_eq!(hub.subscribed_carts(), 1);
        drop(s2);
        assert_eq!(hub.subscribed_carts(), 0);
    }
}
