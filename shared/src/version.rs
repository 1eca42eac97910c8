//! The version rule: which cart a client may show.
//!
//! Every successful change of a cart increments its version by one (a request that changes nothing keeps it).
//! A cart can reach a client by several paths — a WebSocket `CART_UPDATE`, a REST answer, a `CustomEvent` from a
//! sibling micro-frontend, a periodic `GET` — in any order, and any of them may repeat. Each carries the whole
//! cart, so the rule is simple: show a cart only if its version is newer than the one shown. Duplicates and
//! late arrivals are ignored, and a skipped version loses nothing because the newer cart contains it.

use crate::cart::Cart;

/// A cart's version: 0 before its first change, then +1 per change.
pub type CartVersion = u64;

/// Whether a cart at `incoming` should replace what is shown (`None` when nothing is shown yet).
pub fn is_newer(shown: Option<CartVersion>, incoming: CartVersion) -> bool {
    shown.is_none_or(|v| incoming > v)
}

/// The cart a client currently shows, guarded by the version rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionedCart {
    shown: Option<Cart>,
}

impl VersionedCart {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn current(&self) -> Option<&Cart> {
        self.shown.as_ref()
    }

    pub fn version(&self) -> Option<CartVersion> {
        self.shown.as_ref().map(|c| c.version)
    }

    /// Offer a cart from any source; returns whether it was taken.
    pub fn offer(&mut self, cart: Cart) -> bool {
        if is_newer(self.version(), cart.version) {
            self.shown = Some(cart);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cart(v: CartVersion) -> Cart {
        let mut c = Cart::empty("EUR");
        c.version = v;
        c.item_count = v; // a marker so we can tell carts apart
        c
    }

    #[test]
    fn first_cart_is_always_taken_then_only_newer() {
        let mut s = VersionedCart::new();
        assert!(s.offer(cart(0)));
        assert!(!s.offer(cart(0)), "duplicate ignored");
        assert!(s.offer(cart(3)));
        assert!(!s.offer(cart(2)), "late arrival ignored");
        assert!(s.offer(cart(4)));
        assert_eq!(s.version(), Some(4));
    }

    proptest! {
        /// Whatever order and duplication the carts arrive in, the client ends on the highest version and
        /// what it shows never goes backwards.
        #[test]
        fn ends_on_the_newest_and_never_regresses(arrivals in prop::collection::vec(0u64..30, 1..80)) {
            let mut s = VersionedCart::new();
            let mut last = None;
            for v in &arrivals {
                s.offer(cart(*v));
                let now = s.version();
                prop_assert!(now >= last);
                last = now;
            }
            prop_assert_eq!(s.version(), arrivals.iter().copied().max());
            prop_assert_eq!(s.current().map(|c| c.item_count), arrivals.iter().copied().max());
        }
    }
}
