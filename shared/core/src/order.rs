//! Orders: what a checkout bought, as it is recorded and as the shopper sees the confirmation.

use serde::{Deserialize, Serialize};

use crate::cart::{Cart, CartLine};
use crate::money::Cents;

/// A completed checkout: the lines at the prices paid, their total, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// `ord_` and 20 hex digits.
    pub id: String,
    /// The public id of the session that checked out (see `GET /api/session`).
    pub session: String,
    pub lines: Vec<CartLine>,
    pub item_count: u64,
    pub total_cents: Cents,
    pub currency: String,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// Answer of `POST /api/cart/checkout`: the order and the (now empty) cart at its new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutReceipt {
    pub order: Order,
    pub cart: Cart,
}

impl Order {
    /// The order for `cart` as it is priced now.
    pub fn of(id: String, session: String, cart: &Cart, created_at_ms: u64) -> Order {
        Order {
            id,
            session,
            lines: cart.items.clone(),
            item_count: cart.item_count,
            total_cents: cart.total_cents,
            currency: cart.currency.clone(),
            created_at_ms,
        }
    }
}
