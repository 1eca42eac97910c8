//! Fan-out of cart changes to the WebSocket connections of that cart.
//!
//! Handlers announce a committed change through the [`CartEvents`] trait; a multi-instance backend implements
//! it by publishing to its bus and feeding every instance's [`CartHub`]. The hub serializes each update once and
//! hands the same bytes to every subscribed connection's [`Mailbox`].
//!
//! Ordering and slow consumers: the hub remembers the newest version it delivered per cart and drops anything
//! not newer, so every connection sees strictly increasing versions even if two publishers race. A mailbox is
//! bounded; when a connection falls that far behind, its queue is replaced by the newest update alone. A cart
//! update is a full snapshot, so skipping intermediate versions loses nothing, and one stalled reader never
//! holds memory or other readers hostage.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use shared::{Cart, CartVersion, ServerMessage};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::session::CartKey;

/// Announces committed cart changes.
pub trait CartEvents: Send + Sync + 'static {
    /// `cart` was committed for `key`; deliver it to every connection of that cart.
    fn publish(&self, key: &CartKey, cart: &Cart);
}

/// One serialized `CART_UPDATE`, shared by all its recipients.
#[derive(Debug, Clone)]
pub struct Frame {
    pub version: CartVersion,
    pub text: Utf8Bytes,
    pub published_at: Instant,
}

impl Frame {
    pub fn cart_update(cart: &Cart) -> Frame {
        let message = ServerMessage::CartUpdate { version: cart.version, data: cart.clone() };
        // Serializing plain data with string keys cannot fail; an empty frame would be refused by clients anyway.
        let text = serde_json::to_string(&message).unwrap_or_default();
        Frame { version: cart.version, text: text.into(), published_at: Instant::now() }
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

    /// Queue `frame`; returns `true` if the queue was full and its stale contents were dropped.
    fn push(&self, frame: Frame) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let overflowed = queue.len() >= self.capacity;
        if overflowed {
            queue.clear();
        }
        queue.push_back(frame);
        drop(queue);
        self.ready.notify_one();
        overflowed
    }

    /// The next queued update, waiting for one if necessary. Cancel-safe.
    pub async fn next(&self) -> Frame {
        loop {
            if let Some(frame) = self.queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
                return frame;
            }
            self.ready.notified().await;
        }
    }
}

struct Topic {
    newest: CartVersion,
    mailboxes: Vec<Arc<Mailbox>>,
}

/// The subscriptions of this process, by cart.
pub struct CartHub {
    topics: Mutex<HashMap<CartKey, Topic>>,
    mailbox_capacity: usize,
    metrics: Arc<Metrics>,
}

impl CartHub {
    pub fn new(mailbox_capacity: usize, metrics: Arc<Metrics>) -> Arc<CartHub> {
        Arc::new(CartHub { topics: Mutex::new(HashMap::new()), mailbox_capacity, metrics })
    }

    /// Start receiving updates of `key`; they stop when the subscription is dropped.
    pub fn subscribe(self: &Arc<Self>, key: &CartKey) -> Subscription {
        let mailbox = Arc::new(Mailbox::new(self.mailbox_capacity));
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(key.clone())
            .or_insert_with(|| Topic { newest: 0, mailboxes: Vec::new() })
            .mailboxes
            .push(mailbox.clone());
        Subscription { hub: Arc::downgrade(self), key: key.clone(), mailbox }
    }

    /// Deliver an already-serialized update to the local subscribers of `key`.
    pub fn deliver(&self, key: &CartKey, frame: Frame) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let Some(topic) = topics.get_mut(key) else {
            return;
        };
        if frame.version <= topic.newest {
            return;
        }
        topic.newest = frame.version;
        for mailbox in &topic.mailboxes {
            if mailbox.push(frame.clone()) {
                self.metrics.slow_consumer_events.inc();
            }
        }
    }

    /// Carts with at least one subscriber here (for metrics and tests).
    pub fn subscribed_carts(&self) -> usize {
        self.topics.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn unsubscribe(&self, key: &CartKey, mailbox: &Arc<Mailbox>) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(topic) = topics.get_mut(key) {
            topic.mailboxes.retain(|m| !Arc::ptr_eq(m, mailbox));
            if topic.mailboxes.is_empty() {
                topics.remove(key);
            }
        }
    }
}

impl CartEvents for CartHub {
    fn publish(&self, key: &CartKey, cart: &Cart) {
        self.deliver(key, Frame::cart_update(cart));
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

    fn cart(v: CartVersion) -> Cart {
        let mut c = Cart::empty("EUR");
        c.version = v;
        c
    }

    fn hub(capacity: usize) -> Arc<CartHub> {
        CartHub::new(capacity, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn delivers_to_the_carts_subscribers_only() {
        let hub = hub(8);
        let a = CartKey("a".into());
        let (s1, s2, other) = (hub.subscribe(&a), hub.subscribe(&a), hub.subscribe(&CartKey("b".into())));
        hub.publish(&a, &cart(1));
        assert_eq!(s1.next().await.version, 1);
        assert_eq!(s2.next().await.version, 1);
        assert!(other.mailbox.queue.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn stale_versions_are_dropped() {
        let hub = hub(8);
        let a = CartKey("a".into());
        let s = hub.subscribe(&a);
        hub.publish(&a, &cart(2));
        hub.publish(&a, &cart(1));
        hub.publish(&a, &cart(2));
        hub.publish(&a, &cart(3));
        assert_eq!(s.next().await.version, 2);
        assert_eq!(s.next().await.version, 3);
        assert!(s.mailbox.queue.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn overflow_keeps_only_the_newest() {
        let metrics = Arc::new(Metrics::new());
        let hub = CartHub::new(4, metrics.clone());
        let a = CartKey("a".into());
        let s = hub.subscribe(&a);
        for v in 1..=5 {
            hub.publish(&a, &cart(v));
        }
        assert_eq!(s.mailbox.queue.lock().unwrap().len(), 1, "bounded: the fifth push replaced the queue");
        assert_eq!(s.next().await.version, 5);
        assert_eq!(metrics.slow_consumer_events.get(), 1);
    }

    #[test]
    fn dropping_the_last_subscription_forgets_the_cart() {
        let hub = hub(4);
        let a = CartKey("a".into());
        let s1 = hub.subscribe(&a);
        let s2 = hub.subscribe(&a);
        assert_eq!(hub.subscribed_carts(), 1);
        drop(s1);
        assert_eq!(hub.subscribed_carts(), 1);
        drop(s2);
        assert_eq!(hub.subscribed_carts(), 0);
    }
}
