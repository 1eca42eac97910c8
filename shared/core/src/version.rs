//! The version rule: which cart a client may show.
//!
//! Every successful change of a cart increments its version by one (a request that changes nothing keeps it).
//! A cart can reach a client by several paths — a WebSocket `CART_UPDATE`, a REST answer, a `CustomEvent` from a
//! sibling micro-frontend, a periodic `GET` — in any order, and any of them may repeat. Each carries the whole
//! cart, so the rule is simple: show a cart only if its version is newer than the one shown. Duplicates and
//! late arrivals are ignored, and a skipped version loses nothing because the newer cart contains it.
//!
//! Versions count within an [`Epoch`]: one history of one cart. A store gets a random epoch when it is made
//! (a fresh database, a flushed Redis), and each cart's epoch is derived from the store's and the cart's key,
//! so a new session's cart (cookie cleared or expired) has its own. Versions of different epochs are not
//! comparable: a client that sees a cart of another epoch than the one it shows takes it as it is, whatever
//! its version — otherwise a restored database or a new session, which start again at low versions, would be
//! ignored for ever.
//!
//! Prices and stock change without the cart's version changing (a `PRODUCT_UPDATE` for every connection), so
//! products follow the same rule with their own number, [`Product::revision`], within the store's epoch
//! ([`Product::epoch`]): a client keeps the newest state of each product it has heard of and prices the cart
//! it shows with it. A cart update priced before a price change that arrives after it therefore still shows
//! the new price.

use serde::{Deserialize, Serialize};

use crate::cart::Cart;
use crate::catalog::Product;

/// A cart's version: 0 before its first change, then +1 per change.
pub type CartVersion = u64;

/// One history of versions or revisions: 16 lowercase hex digits on the wire (a random 64-bit number, which
/// JavaScript's numbers could not hold exactly). Empty for a cart or product from before epochs existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(String);

impl Epoch {
    pub const LEN: usize = 16;

    pub fn from_bits(bits: u64) -> Epoch {
        Epoch(format!("{bits:016x}"))
    }

    /// An epoch as it appears on the wire, or `None` if `text` is not one.
    pub fn parse(text: &str) -> Option<Epoch> {
        let hex = text.len() == Self::LEN && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex.then(|| Epoch(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 bits it stands for (0 for the empty epoch), for compact comparisons on the server.
    pub fn bits(&self) -> u64 {
        u64::from_str_radix(&self.0, 16).unwrap_or(0)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a cart is in its history: what `ETag` answers and `If-Match` names, as `"<epoch>.<version>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub epoch: Epoch,
    pub version: CartVersion,
}

impl Stamp {
    pub fn of(cart: &Cart) -> Stamp {
        Stamp { epoch: cart.epoch.clone(), version: cart.version }
    }

    /// The quoted entity tag: `"<epoch>.<version>"`.
    pub fn to_header(&self) -> String {
        format!("\"{}.{}\"", self.epoch, self.version)
    }

    /// An `If-Match` value naming one stamp (quoted, optionally weak `W/`), or `None` if it is not one.
    pub fn parse_header(value: &str) -> Option<Stamp> {
        let value = value.trim();
        let value = value.strip_prefix("W/").unwrap_or(value);
        let inner = value.strip_prefix('"')?.strip_suffix('"')?;
        let (epoch, version) = inner.split_once('.')?;
        let version = version.parse().ok().filter(|_| version.bytes().all(|b| b.is_ascii_digit()))?;
        Some(Stamp { epoch: Epoch::parse(epoch)?, version })
    }
}

/// Whether a cart at `incoming` should replace what is shown (`None` when nothing is shown yet): always when
/// nothing is shown or the epochs differ, else only a higher version.
pub fn is_newer(shown: Option<(&Epoch, CartVersion)>, incoming: (&Epoch, CartVersion)) -> bool {
    shown.is_none_or(|(epoch, version)| epoch != incoming.0 || incoming.1 > version)
}

/// Whether a `CART_UPDATE` arriving on the socket skips versions after the one shown. The newer cart is whole,
/// so nothing is lost by showing it; but a skip means this connection's stream missed changes (its server
/// coalesced a slow connection's queue, or caught up after losing its Redis subscription), so the client asks
/// for `RESYNC` rather than trust that the stream is current. A cart of another epoch is no skip: it starts a
/// new history.
pub fn skips_versions(shown: Option<(&Epoch, CartVersion)>, incoming: (&Epoch, CartVersion)) -> bool {
    shown.is_some_and(|(epoch, version)| epoch == incoming.0 && incoming.1 > version.saturating_add(1))
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

    /// The epoch and version shown, for [`is_newer`] and [`skips_versions`].
    pub fn position(&self) -> Option<(&Epoch, CartVersion)> {
        self.shown.as_ref().map(|c| (&c.epoch, c.version))
    }

    /// Offer a cart from any source; returns whether it was taken. A taken cart is priced with the newest
    /// product states held — unless it starts another epoch: then the store changed under this client, and
    /// the product states held (of the old store) are dropped; the cart's own prices are current.
    pub fn offer(&mut self, mut cart: Cart) -> bool {
        if !is_newer(self.position(), (&cart.epoch, cart.version)) {
            return false;
        }
        if self.shown.as_ref().is_some_and(|c| c.epoch != cart.epoch) {
            self.products.clear();
        }
        for p in &self.products {
            cart.apply_product(p);
        }
        self.shown = Some(cart);
        true
    }

    /// Offer a product state from any source (a `PRODUCT_UPDATE`, the page, a refresh). A state of another
    /// epoch than the one held replaces it, and re-prices the cart's line whatever its revision.
    pub fn offer_product(&mut self, product: Product) -> ProductOffer {
        let (newer, new_epoch) = match self.products.iter_mut().find(|p| p.id == product.id) {
            Some(held) if held.epoch == product.epoch && held.revision >= product.revision => (false, false),
            Some(held) => {
                let new_epoch = held.epoch != product.epoch;
                *held = product.clone();
                (true, new_epoch)
            }
            None => {
                self.products.push(product.clone());
                (true, false)
            }
        };
        let cart_changed = newer
            && self.shown.as_mut().is_some_and(|c| {
                if new_epoch {
                    c.reprice_line(&product)
                } else {
                    c.apply_product(&product)
                }
            });
        ProductOffer { newer, cart_changed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_more_than_one_version_ahead_of_the_shown_cart() {
        let a = Epoch::from_bits(1);
        let at = |v| Some((&a, v));
        assert!(!skips_versions(None, (&a, 9)), "nothing shown yet: the first cart is no skip");
        assert!(!skips_versions(at(4), (&a, 5)));
        assert!(!skips_versions(at(5), (&a, 5)), "a repeat");
        assert!(!skips_versions(at(6), (&a, 5)), "a late arrival");
        assert!(skips_versions(at(4), (&a, 6)));
        assert!(!skips_versions(at(u64::MAX), (&a, u64::MAX)));
        assert!(!skips_versions(at(4), (&Epoch::from_bits(2), 9)), "another epoch starts a new history");
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
            epoch: Epoch::from_bits(7),
        }
    }

    fn cart_with_mug(version: CartVersion, product: &Product) -> Cart {
        let mut contents = crate::CartContents::default();
        contents
            .apply(&crate::CartOp::Add { product_id: "mug".into(), quantity: 2 }, &Default::default(), |_| {
                Some(product)
            })
            .unwrap();
        let mut cart = Cart::priced(version, &contents, "EUR", |_| Some(product));
        cart.epoch = Epoch::from_bits(9);
        cart
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

    fn cart_of(epoch: u64, v: CartVersion) -> Cart {
        let mut c = cart(v);
        c.epoch = Epoch::from_bits(epoch);
        c
    }

    #[test]
    fn a_cart_of_another_epoch_is_taken_whatever_its_version() {
        let mut s = VersionedCart::new();
        assert!(s.offer(cart_of(0xA, 7)));
        assert!(!s.offer(cart_of(0xA, 6)), "same epoch: older is ignored");
        assert!(s.offer(cart_of(0xB, 1)), "version 1 of epoch B replaces version 7 of epoch A");
        assert_eq!(s.position(), Some((&Epoch::from_bits(0xB), 1)));
        assert!(!s.offer(cart_of(0xB, 1)), "a repeat within the new epoch is ignored");
        assert!(s.offer(cart_of(0xB, 2)));
    }

    #[test]
    fn product_states_of_another_epoch_replace_the_held_ones_and_reprice() {
        let mut s = VersionedCart::new();
        let old = mug(1000, 9);
        assert!(s.offer(cart_with_mug(1, &old)));
        assert!(s.offer_product(old).newer);
        let mut fresh = mug(700, 1);
        fresh.epoch = Epoch::from_bits(8);
        assert_eq!(
            s.offer_product(fresh),
            ProductOffer { newer: true, cart_changed: true },
            "revision 1 of a new epoch"
        );
        assert_eq!(s.current().unwrap().total_cents, crate::Cents(1400));
    }

    #[test]
    fn stamps_round_trip_and_junk_is_refused() {
        let stamp = Stamp { epoch: Epoch::from_bits(0xdead_beef), version: 12 };
        assert_eq!(stamp.to_header(), "\"00000000deadbeef.12\"");
        assert_eq!(Stamp::parse_header(&stamp.to_header()), Some(stamp.clone()));
        assert_eq!(Stamp::parse_header(" W/\"00000000deadbeef.12\" "), Some(stamp));
        for junk in [
            "",
            "*",
            "00000000deadbeef.12",
            "\"00000000deadbeef\"",
            "\"00000000DEADBEEF.1\"",
            "\"0.1\"",
            "\"00000000deadbeef.-1\"",
            "\"00000000deadbeef.+1\"",
            "\"00000000deadbeef.1\", \"x\"",
        ] {
            assert_eq!(Stamp::parse_header(junk), None, "{junk}");
        }
        assert_eq!(Epoch::parse("0123456789abcdef").map(|e| e.to_string()), Some("0123456789abcdef".into()));
    }

    proptest! {
        /// Within one epoch the rule is the version rule; a change of epoch always wins, and after it only
        /// that epoch's newer versions do. Whatever the arrivals, what is shown is the highest version of the
        /// epoch that arrived last among epoch changes — never a lower version of the same epoch.
        #[test]
        fn within_an_epoch_never_regresses_and_a_new_epoch_always_wins(
            arrivals in prop::collection::vec((0u64..3, 0u64..20), 1..80)
        ) {
            let mut s = VersionedCart::new();
            let mut last_epoch = None;
            for (epoch, v) in &arrivals {
                let before = s.position().map(|(e, v)| (e.clone(), v));
                let taken = s.offer(cart_of(*epoch, *v));
                let incoming = Epoch::from_bits(*epoch);
                match before {
                    None => prop_assert!(taken),
                    Some((e, _)) if e != incoming => prop_assert!(taken),
                    Some((_, shown)) => prop_assert_eq!(taken, *v > shown),
                }
                let (e, now) = s.position().unwrap();
                if taken {
                    prop_assert_eq!((e, now), (&incoming, *v));
                }
                // Within the epoch shown, the version never went down.
                if let Some((le, lv)) = &last_epoch {
                    if le == e {
                        prop_assert!(now >= *lv);
                    }
                }
                last_epoch = Some((e.clone(), now));
            }
        }
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
