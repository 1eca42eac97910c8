//! The version rule: which cart a client may show.
//!
//! Every successful change of a cart increments its version by one (a request that changes nothing keeps it).
//! A cart can reach a client by several paths — a WebSocket `CART_UPDATE`, a REST answer, a `CustomEvent` from a
//! sibling micro-frontend, a periodic `GET` — in any order, and any of them may repeat. Each carries the whole
//! cart, so the rule is simple: show a cart only if its version is newer than the one shown. Duplicates and
//! late arrivals are ignored, and a skipped version loses nothing because the newer cart contains it.
//!
//! Prices and stock change without the cart's version changing (a `PRODUCT_UPDATE` for every connection), so
//! products follow the same rule with their own number, [`Product::revision`]: a client keeps the newest state
//! of each product it has heard of and prices the cart it shows with it. A cart update priced before a price
//! change that arrives after it therefore still shows the new price.

use crate::cart::Cart;
use crate::catalog::Product;

/// A cart's version: 0 before its first change, then +1 per change.
pub type CartVersion = u64;

/// Whether a cart at `incoming` should replace what is shown (`None` when nothing is shown yet).
pub fn is_newer(shown: Option<CartVersion>, incoming: CartVersion) -> bool {
    shown.is_none_or(|v| incoming > v)
}

/// Whether a `CART_UPDATE` arriving on the socket skips versions after the one shown. The newer cart is whole,
/// so nothing is lost by showing it; but a skip means this connection's stream missed changes (its server
/// coalesced a slow connection's queue, or caught up after losing its Redis subscription), so the client asks
/// for `RESYNC` rather than trust that the stream is current.
pub fn skips_versions(shown: Option<CartVersion>, incoming: CartVersion) -> bool {
    shown.is_some_and(|v| incoming > v.saturating_add(1))
}

/// The cart a client currently shows, guarded by the version rule, and the newest state of every product it
/// has heard of, guarded by the revision rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionedCart {
    shown: Option<Cart>,
    products: Vec<Product>,
}

/// What a product state offered to [`VersionedCart::offer_product`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductOffer {
    /// It is newer than the state held: show it.
    pub newer: bool,
    /// The cart shown was re-priced with it.
    pub cart_changed: bool,
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

    /// Offer a cart from any source; returns whether it was taken. A taken cart is priced with the newest
    /// product states held.
    pub fn offer(&mut self, mut cart: Cart) -> bool {
        if is_newer(self.version(), cart.version) {
            for p in &self.products {
                cart.apply_product(p);
            }
            self.shown = Some(cart);
            true
        } else {
            false
        }
    }

    /// Offer a product state from any source (a `PRODUCT_UPDATE`, the page, a refresh).
    pub fn offer_product(&mut self, product: Product) -> ProductOffer {
        let newer = match self.products.iter_mut().find(|p| p.id == product.id) {
            Some(held) if held.revision >= product.revision => false,
            Some(held) => {
                *held = product.clone();
                true
            }
            None => {
                self.products.push(product.clone());
                true
            }
        };
        let cart_changed = newer && self.shown.as_mut().is_some_and(|c| c.apply_product(&product));
        ProductOffer { newer, cart_changed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_more_than_one_version_ahead_of_the_shown_cart() {
        assert!(!skips_versions(None, 9), "nothing shown yet: the first cart is no skip");
        assert!(!skips_versions(Some(4), 5));
        assert!(!skips_versions(Some(5), 5), "a repeat");
        assert!(!skips_versions(Some(6), 5), "a late arrival");
        assert!(skips_versions(Some(4), 6));
        assert!(!skips_versions(Some(u64::MAX), u64::MAX));
    }
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

    fn mug(price: u64, revision: u64) -> Product {
        Product {
            id: "mug".into(),
            name: "Mug".into(),
            description: String::new(),
            price_cents: crate::Cents(price),
            currency: "EUR".into(),
            stock: 5,
            image: String::new(),
            revision,
        }
    }

    fn cart_with_mug(version: CartVersion, product: &Product) -> Cart {
        let mut contents = crate::CartContents::default();
        contents
            .apply(&crate::CartOp::Add { product_id: "mug".into(), quantity: 2 }, &Default::default(), |_| {
                Some(product)
            })
            .unwrap();
        Cart::priced(version, &contents, "EUR", |_| Some(product))
    }

    #[test]
    fn a_cart_priced_before_a_price_change_that_arrives_after_it_shows_the_new_price() {
        let old = mug(1000, 0);
        let new = mug(800, 3);
        let mut s = VersionedCart::new();
        assert!(s.offer(cart_with_mug(1, &old)));
        assert_eq!(s.offer_product(new.clone()), ProductOffer { newer: true, cart_changed: true });
        assert_eq!(s.current().unwrap().total_cents, crate::Cents(1600));
        // Version 2, priced at the old price, arrives late.
        assert!(s.offer(cart_with_mug(2, &old)));
        assert_eq!(s.current().unwrap().total_cents, crate::Cents(1600), "priced with the newest state held");
        assert_eq!(s.offer_product(old), ProductOffer { newer: false, cart_changed: false }, "an older state");
        assert_eq!(s.offer_product(new), ProductOffer { newer: false, cart_changed: false }, "the same state");
        assert_eq!(
            s.offer_product(mug(900, 4)),
            ProductOffer { newer: true, cart_changed: true },
            "a newer one reprices again"
        );
        assert_eq!(s.current().unwrap().total_cents, crate::Cents(1800));
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
