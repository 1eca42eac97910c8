//! What a commit produces for the shoppers who should hear of it. Stores return these next to what they
//! committed; the shop hands them to the fan-out ([`crate::shop::Fanout`]) once the commit is durable. How an
//! event becomes a WebSocket frame or a pub/sub message is the realtime layer's business, not the store's.

use cartwheel_core::{Cart, Product};

use super::keys::CartKey;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new version of one cart: for that cart's connections.
    CartChanged { key: CartKey, cart: Cart },
    /// A product's new stock or price, at its new revision: for every connection.
    ProductChanged(Product),
}
