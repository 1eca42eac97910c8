//! The cart: what a shopper has chosen, the rules for changing it, and its priced form on the wire.
//!
//! Two shapes on purpose. [`CartContents`] is what is stored — product ids and quantities, nothing that could
//! go stale. [`Cart`] is what is sent — the contents priced against the catalog at the moment of sending, with
//! line totals, item count and total computed here so that no client ever adds prices up on its own.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::catalog::{Product, ProductId};
use crate::money::Cents;
use crate::protocol::ErrorCode;
use crate::version::{CartVersion, Epoch};

/// Bounds on what one cart may hold. Both are configurable on the server; these are the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLimits {
    /// Highest quantity of one product in one cart (and in one request).
    pub max_quantity_per_line: u32,
    /// Most distinct products in one cart.
    pub max_lines: usize,
}

impl CartLimits {
    pub const DEFAULT_MAX_QUANTITY_PER_LINE: u32 = 99;
    pub const DEFAULT_MAX_LINES: usize = 50;
}

impl Default for CartLimits {
    fn default() -> Self {
        CartLimits { max_quantity_per_line: Self::DEFAULT_MAX_QUANTITY_PER_LINE, max_lines: Self::DEFAULT_MAX_LINES }
    }
}

/// One stored line: a product and how many of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub product_id: ProductId,
    pub quantity: u32,
}

/// The stored state of a cart: its lines in the order they were first added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartContents {
    pub lines: Vec<LineItem>,
}

/// A requested change to a cart. Quantities arrive as the client sent them (`i64`) and are range-checked here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartOp {
    /// Add `quantity` (1..=max) to the product's line, creating it if absent.
    Add { product_id: ProductId, quantity: i64 },
    /// Set the line to `quantity` (0..=max); 0 removes it.
    Set { product_id: ProductId, quantity: i64 },
    /// Remove the product's line; removing an absent line changes nothing.
    Remove { product_id: ProductId },
    /// Change the line by `delta` (±1..=max): what "+" and "−" mean, so two tabs pressing "+" together both
    /// count. A result at or below 0 removes the line; above the stock or the line limit it is refused.
    Adjust { product_id: ProductId, delta: i64 },
    /// Empty the cart.
    Clear,
}

/// Whether an accepted operation changed the cart. Only a change earns a new version and a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Changed,
    Unchanged,
}

/// Why an operation was refused. A refused operation leaves the cart exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CartError {
    #[error("unknown product '{0}'")]
    UnknownProduct(ProductId),
    #[error("quantity must be between {min} and {max}, got {got}")]
    QuantityOutOfRange { min: u32, max: u32, got: i64 },
    #[error("only {available} of '{name}' in stock; the cart would hold {requested}")]
    InsufficientStock { name: String, available: u32, requested: u32 },
    #[error("a cart holds at most {max} different products")]
    TooManyLines { max: usize },
    #[error("a line holds at most {max} of one product; the cart would hold {requested}")]
    LineLimitExceeded { max: u32, requested: u32 },
    #[error("delta must be between -{max} and {max} and not 0, got {got}")]
    DeltaOutOfRange { max: u32, got: i64 },
}

impl CartError {
    /// The wire code a client can act on.
    pub fn code(&self) -> ErrorCode {
        match self {
            CartError::UnknownProduct(_) => ErrorCode::UnknownProduct,
            CartError::QuantityOutOfRange { .. }
            | CartError::LineLimitExceeded { .. }
            | CartError::DeltaOutOfRange { .. } => ErrorCode::QuantityOutOfRange,
            CartError::InsufficientStock { .. } => ErrorCode::InsufficientStock,
            CartError::TooManyLines { .. } => ErrorCode::TooManyLines,
        }
    }
}

impl CartContents {
    pub fn quantity_of(&self, id: &ProductId) -> u32 {
        self.lines.iter().find(|l| &l.product_id == id).map_or(0, |l| l.quantity)
    }

    pub fn item_count(&self) -> u64 {
        self.lines.iter().map(|l| u64::from(l.quantity)).sum()
    }

    /// Apply `op`, looking products up with `product`. On `Err` the contents are untouched.
    pub fn apply<'a>(
        &mut self,
        op: &CartOp,
        limits: &CartLimits,
        product: impl Fn(&ProductId) -> Option<&'a Product>,
    ) -> Result<Change, CartError> {
        match op {
            CartOp::Add { product_id, quantity } => {
                let add = checked_quantity(*quantity, 1, limits)?;
                let p = product(product_id).ok_or_else(|| CartError::UnknownProduct(product_id.clone()))?;
                let current = self.quantity_of(product_id);
                self.set_line(p, current.saturating_add(add), limits)
            }
            CartOp::Set { product_id, quantity } => {
                let wanted = checked_quantity(*quantity, 0, limits)?;
                let p = product(product_id).ok_or_else(|| CartError::UnknownProduct(product_id.clone()))?;
                self.set_line(p, wanted, limits)
            }
            CartOp::Adjust { product_id, delta } => {
                let max = limits.max_quantity_per_line;
                if *delta == 0 || delta.unsigned_abs() > u64::from(max) {
                    return Err(CartError::DeltaOutOfRange { max, got: *delta });
                }
                let p = product(product_id).ok_or_else(|| CartError::UnknownProduct(product_id.clone()))?;
                let wanted = i64::from(self.quantity_of(product_id)).saturating_add(*delta).max(0);
                self.set_line(p, u32::try_from(wanted).unwrap_or(u32::MAX), limits)
            }
            CartOp::Remove { product_id } => {
                let before = self.lines.len();
                self.lines.retain(|l| &l.product_id != product_id);
                if self.lines.len() != before {
                    Ok(Change::Changed)
                } else if product(product_id).is_none() {
                    Err(CartError::UnknownProduct(product_id.clone()))
                } else {
                    Ok(Change::Unchanged)
                }
            }
            CartOp::Clear => {
                if self.lines.is_empty() {
                    Ok(Change::Unchanged)
                } else {
                    self.lines.clear();
                    Ok(Change::Changed)
                }
            }
        }
    }

    /// Make the product's line hold exactly `wanted`. Raising a line above the stock is refused; lowering one
    /// that already exceeds it (stock fell after it was added) is allowed, so a shopper can always fix a cart.
    fn set_line(&mut self, p: &Product, wanted: u32, limits: &CartLimits) -> Result<Change, CartError> {
        let current = self.quantity_of(&p.id);
        if wanted == current {
            return Ok(Change::Unchanged);
        }
        if wanted > current && wanted > p.stock {
            return Err(CartError::InsufficientStock { name: p.name.clone(), available: p.stock, requested: wanted });
        }
        if wanted > limits.max_quantity_per_line {
            return Err(CartError::LineLimitExceeded { max: limits.max_quantity_per_line, requested: wanted });
        }
        if wanted == 0 {
            self.lines.retain(|l| l.product_id != p.id);
        } else if let Some(line) = self.lines.iter_mut().find(|l| l.product_id == p.id) {
            line.quantity = wanted;
        } else {
            if self.lines.len() >= limits.max_lines {
                return Err(CartError::TooManyLines { max: limits.max_lines });
            }
            self.lines.push(LineItem { product_id: p.id.clone(), quantity: wanted });
        }
        Ok(Change::Changed)
    }
}

fn checked_quantity(quantity: i64, min: u32, limits: &CartLimits) -> Result<u32, CartError> {
    let max = limits.max_quantity_per_line;
    u32::try_from(quantity).ok().filter(|q| (min..=max).contains(q)).ok_or(CartError::QuantityOutOfRange {
        min,
        max,
        got: quantity,
    })
}

/// One priced line as clients receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub product_id: ProductId,
    pub name: String,
    pub unit_price_cents: Cents,
    pub quantity: u32,
    pub line_total_cents: Cents,
    /// The product's stock when this cart was priced, so a client can cap its "+" button.
    pub stock: u32,
    pub image: String,
    /// The product's [`Product::revision`] this line was priced at.
    #[serde(default)]
    pub product_revision: u64,
}

impl CartLine {
    /// The line holds more than is in stock now (stock fell after it was added): checkout would refuse it.
    pub fn exceeds_stock(&self) -> bool {
        self.quantity > self.stock
    }
}

/// A line that cannot be bought as it is: what the cart holds and what is available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub product_id: ProductId,
    pub name: String,
    pub requested: u32,
    pub available: u32,
}

/// A cart as clients receive it: contents priced against the catalog, at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// The history `version` counts in (see [`crate::version`]).
    #[serde(default)]
    pub epoch: Epoch,
    pub version: CartVersion,
    pub items: Vec<CartLine>,
    pub item_count: u64,
    pub total_cents: Cents,
    /// The catalog's currency; every line is in it.
    pub currency: String,
}

impl Cart {
    /// An empty cart at version 0: what a session has before its first change.
    pub fn empty(currency: &str) -> Cart {
        Cart {
            epoch: Epoch::default(),
            version: 0,
            items: Vec::new(),
            item_count: 0,
            total_cents: Cents::ZERO,
            currency: currency.to_owned(),
        }
    }

    /// Price `contents` at `version`. A line whose product has left the catalog is not shown (it cannot be
    /// bought); it stays stored and reappears if the product returns.
    pub fn priced<'a>(
        version: CartVersion,
        contents: &CartContents,
        currency: &str,
        product: impl Fn(&ProductId) -> Option<&'a Product>,
    ) -> Cart {
        let items: Vec<CartLine> = contents
            .lines
            .iter()
            .filter_map(|line| {
                let p = product(&line.product_id)?;
                Some(CartLine {
                    product_id: line.product_id.clone(),
                    name: p.name.clone(),
                    unit_price_cents: p.price_cents,
                    quantity: line.quantity,
                    // Within CartLimits this cannot overflow; saturate rather than panic if limits are raised absurdly.
                    line_total_cents: p.price_cents.checked_times(line.quantity).unwrap_or(Cents(u64::MAX)),
                    stock: p.stock,
                    image: p.image.clone(),
                    product_revision: p.revision,
                })
            })
            .collect();
        let mut cart = Cart {
            epoch: Epoch::default(),
            version,
            items,
            item_count: 0,
            total_cents: Cents::ZERO,
            currency: currency.to_owned(),
        };
        cart.recount();
        cart
    }

    /// Item count and total from the lines.
    fn recount(&mut self) {
        self.item_count = self.items.iter().map(|l| u64::from(l.quantity)).sum();
        self.total_cents = self
            .items
            .iter()
            .try_fold(Cents::ZERO, |acc, l| acc.checked_add(l.line_total_cents))
            .unwrap_or(Cents(u64::MAX));
    }

    /// Re-price this cart's line of `product` from a newer state of the product (a `PRODUCT_UPDATE`), exactly
    /// as the server would price it. A state not newer than the one the line was priced at is ignored, so an
    /// older update arriving late never undoes a newer price. Returns whether the cart changed. The version
    /// stays: the cart's contents did not change, only the catalog they are priced against.
    pub fn apply_product(&mut self, product: &Product) -> bool {
        let Some(line) = self.items.iter_mut().find(|l| l.product_id == product.id) else {
            return false;
        };
        if product.revision <= line.product_revision {
            return false;
        }
        self.reprice_line(product)
    }

    /// Re-price the line of `product` from this state whatever its revision (a state of a new epoch, whose
    /// revisions start again). Returns whether the cart holds the product.
    pub fn reprice_line(&mut self, product: &Product) -> bool {
        let Some(line) = self.items.iter_mut().find(|l| l.product_id == product.id) else {
            return false;
        };
        line.name = product.name.clone();
        line.unit_price_cents = product.price_cents;
        line.line_total_cents = product.price_cents.checked_times(line.quantity).unwrap_or(Cents(u64::MAX));
        line.stock = product.stock;
        line.image = product.image.clone();
        line.product_revision = product.revision;
        self.recount();
        true
    }

    /// Lines that hold more than their stock.
    pub fn shortfalls(&self) -> Vec<Shortfall> {
        self.items
            .iter()
            .filter(|l| l.exceeds_stock())
            .map(|l| Shortfall {
                product_id: l.product_id.clone(),
                name: l.name.clone(),
                requested: l.quantity,
                available: l.stock,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn product(id: &str, price: u64, stock: u32) -> Product {
        Product {
            id: id.into(),
            name: format!("Product {id}"),
            description: String::new(),
            price_cents: Cents(price),
            currency: "EUR".into(),
            stock,
            image: format!("/images/{id}.svg"),
            revision: 0,
            epoch: Default::default(),
        }
    }

    fn catalog() -> Vec<Product> {
        vec![product("mug", 1250, 10), product("lamp", 4999, 2), product("sold-out", 300, 0), product("bulk", 5, 1000)]
    }

    fn lookup<'c>(c: &'c [Product]) -> impl Fn(&ProductId) -> Option<&'c Product> + 'c {
        move |id| c.iter().find(|p| &p.id == id)
    }

    fn add(id: &str, q: i64) -> CartOp {
        CartOp::Add { product_id: id.into(), quantity: q }
    }
    fn set(id: &str, q: i64) -> CartOp {
        CartOp::Set { product_id: id.into(), quantity: q }
    }

    #[test]
    fn a_newer_product_state_reprices_its_line_and_an_older_one_is_ignored() {
        let mut c = catalog();
        let l = CartLimits::default();
        let mut contents = CartContents::default();
        contents.apply(&add("mug", 3), &l, lookup(&c)).unwrap();
        contents.apply(&add("lamp", 1), &l, lookup(&c)).unwrap();
        let mut cart = Cart::priced(4, &contents, "EUR", lookup(&c));
        assert_eq!(cart.total_cents, Cents(3 * 1250 + 4999));

        c[0].price_cents = Cents(1000);
        c[0].stock = 2;
        c[0].revision = 7;
        assert!(cart.apply_product(&c[0]));
        assert_eq!(cart, Cart::priced(4, &contents, "EUR", lookup(&c)), "the same as the server would price it");
        assert_eq!(cart.total_cents, Cents(3 * 1000 + 4999));
        assert_eq!(
            cart.shortfalls(),
            vec![Shortfall { product_id: "mug".into(), name: "Product mug".into(), requested: 3, available: 2 }]
        );

        let mut stale = c[0].clone();
        stale.price_cents = Cents(1);
        stale.revision = 6;
        assert!(!cart.apply_product(&stale), "an older state never undoes a newer one");
        assert!(!cart.apply_product(&c[0]), "the same state twice changes nothing");
        assert!(!cart.apply_product(&c[2]), "a product not in the cart");
        assert_eq!(cart.total_cents, Cents(3 * 1000 + 4999));
    }

    #[test]
    fn add_creates_then_accumulates() {
        let c = catalog();
        let mut cart = CartContents::default();
        let l = CartLimits::default();
        assert_eq!(cart.apply(&add("mug", 2), &l, lookup(&c)), Ok(Change::Changed));
        assert_eq!(cart.apply(&add("mug", 3), &l, lookup(&c)), Ok(Change::Changed));
        assert_eq!(cart.quantity_of(&"mug".into()), 5);
        assert_eq!(cart.lines.len(), 1);
    }

    #[test]
    fn stock_is_the_ceiling_for_increases_only() {
        let c = catalog();
        let l = CartLimits::default();
        let mut cart = CartContents::default();
        cart.apply(&add("lamp", 2), &l, lookup(&c)).unwrap();
        let before = cart.clone();
        assert!(matches!(
            cart.apply(&add("lamp", 1), &l, lookup(&c)),
            Err(CartError::InsufficientStock { available: 2, requested: 3, .. })
        ));
        assert_eq!(cart, before, "a refused op changes nothing");
        assert!(matches!(cart.apply(&add("sold-out", 1), &l, lookup(&c)), Err(CartError::InsufficientStock { .. })));
        // Stock fell below what the cart holds: lowering is still allowed, raising is not.
        let mut fallen = catalog();
        fallen[1].stock = 0;
        assert_eq!(cart.apply(&set("lamp", 1), &l, lookup(&fallen)), Ok(Change::Changed));
        assert!(cart.apply(&set("lamp", 2), &l, lookup(&fallen)).is_err());
    }

    #[test]
    fn quantity_range_edges() {
        let c = catalog();
        let l = CartLimits::default();
        let mut cart = CartContents::default();
        for bad in [0, -1, 100, i64::MAX, i64::MIN] {
            assert!(
                matches!(cart.apply(&add("bulk", bad), &l, lookup(&c)), Err(CartError::QuantityOutOfRange { .. })),
                "add {bad}"
            );
        }
        assert_eq!(cart.apply(&add("bulk", 99), &l, lookup(&c)), Ok(Change::Changed));
        // 99 already: one more exceeds the per-line limit even though stock allows it.
        assert!(matches!(
            cart.apply(&add("bulk", 1), &l, lookup(&c)),
            Err(CartError::LineLimitExceeded { max: 99, requested: 100 })
        ));
        assert!(matches!(cart.apply(&set("bulk", 100), &l, lookup(&c)), Err(CartError::QuantityOutOfRange { .. })));
        assert!(matches!(cart.apply(&set("bulk", -1), &l, lookup(&c)), Err(CartError::QuantityOutOfRange { .. })));
        assert_eq!(cart.apply(&set("bulk", 0), &l, lookup(&c)), Ok(Change::Changed));
        assert!(cart.lines.is_empty());
    }

    #[test]
    fn line_count_limit_edge() {
        let c = catalog();
        let l = CartLimits { max_lines: 2, ..CartLimits::default() };
        let mut cart = CartContents::default();
        cart.apply(&add("mug", 1), &l, lookup(&c)).unwrap();
        cart.apply(&add("lamp", 1), &l, lookup(&c)).unwrap();
        assert_eq!(cart.apply(&add("bulk", 1), &l, lookup(&c)), Err(CartError::TooManyLines { max: 2 }));
        // Raising an existing line is not a new line.
        assert_eq!(cart.apply(&add("mug", 1), &l, lookup(&c)), Ok(Change::Changed));
    }

    #[test]
    fn unknown_products_and_no_ops() {
        let c = catalog();
        let l = CartLimits::default();
        let mut cart = CartContents::default();
        assert!(matches!(cart.apply(&add("nope", 1), &l, lookup(&c)), Err(CartError::UnknownProduct(_))));
        assert!(matches!(
            cart.apply(&CartOp::Remove { product_id: "nope".into() }, &l, lookup(&c)),
            Err(CartError::UnknownProduct(_))
        ));
        assert_eq!(cart.apply(&CartOp::Remove { product_id: "mug".into() }, &l, lookup(&c)), Ok(Change::Unchanged));
        assert_eq!(cart.apply(&CartOp::Clear, &l, lookup(&c)), Ok(Change::Unchanged));
        assert_eq!(cart.apply(&set("mug", 0), &l, lookup(&c)), Ok(Change::Unchanged));
        cart.apply(&add("mug", 2), &l, lookup(&c)).unwrap();
        assert_eq!(cart.apply(&set("mug", 2), &l, lookup(&c)), Ok(Change::Unchanged));
        assert_eq!(cart.apply(&CartOp::Clear, &l, lookup(&c)), Ok(Change::Changed));
    }

    #[test]
    fn priced_cart_totals_and_json_shape() {
        let c = catalog();
        let l = CartLimits::default();
        let mut contents = CartContents::default();
        contents.apply(&add("mug", 3), &l, lookup(&c)).unwrap();
        contents.apply(&add("lamp", 1), &l, lookup(&c)).unwrap();
        let cart = Cart::priced(7, &contents, "EUR", lookup(&c));
        assert_eq!(cart.item_count, 4);
        assert_eq!(cart.total_cents, Cents(3 * 1250 + 4999));
        assert_eq!(cart.items[0].line_total_cents, Cents(3750));
        let json = serde_json::to_value(&cart).unwrap();
        assert_eq!(json["version"], 7);
        assert_eq!(json["items"][1]["product_id"], "lamp");
        assert_eq!(json["items"][1]["unit_price_cents"], 4999);
        assert_eq!(json["total_cents"], 8749);
        let back: Cart = serde_json::from_value(json).unwrap();
        assert_eq!(back, cart);
    }

    #[test]
    fn lines_of_vanished_products_are_not_priced() {
        let c = catalog();
        let contents = CartContents { lines: vec![LineItem { product_id: "gone".into(), quantity: 2 }] };
        let cart = Cart::priced(1, &contents, "EUR", lookup(&c));
        assert!(cart.items.is_empty());
        assert_eq!(cart.total_cents, Cents::ZERO);
    }

    fn arb_op() -> impl Strategy<Value = CartOp> {
        let id = prop::sample::select(vec!["mug", "lamp", "sold-out", "bulk", "nope"]);
        prop_oneof![
            (id.clone(), -5i64..120).prop_map(|(i, q)| add(i, q)),
            (id.clone(), -5i64..120).prop_map(|(i, q)| set(i, q)),
            id.prop_map(|i| CartOp::Remove { product_id: i.into() }),
            Just(CartOp::Clear),
        ]
    }

    proptest! {
        /// Whatever sequence of operations arrives, the cart never breaks its invariants, refused operations
        /// change nothing, and the priced totals are exactly the sum of the lines.
        #[test]
        fn invariants_hold_under_any_sequence(ops in prop::collection::vec(arb_op(), 0..60), max_lines in 1usize..4) {
            let c = catalog();
            let l = CartLimits { max_lines, ..CartLimits::default() };
            let mut cart = CartContents::default();
            for op in &ops {
                let before = cart.clone();
                match cart.apply(op, &l, lookup(&c)) {
                    Err(_) => prop_assert_eq!(&cart, &before),
                    Ok(Change::Unchanged) => prop_assert_eq!(&cart, &before),
                    Ok(Change::Changed) => prop_assert_ne!(&cart, &before),
                }
                prop_assert!(cart.lines.len() <= l.max_lines);
                let mut ids: Vec<_> = cart.lines.iter().map(|x| &x.product_id).collect();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), cart.lines.len(), "one line per product");
                for line in &cart.lines {
                    let p = lookup(&c)(&line.product_id).unwrap();
                    prop_assert!(line.quantity >= 1 && line.quantity <= l.max_quantity_per_line);
                    prop_assert!(line.quantity <= p.stock, "never above stock when stock never falls");
                }
            }
            let priced = Cart::priced(1, &cart, "EUR", lookup(&c));
            let total: u64 = priced.items.iter().map(|l| l.unit_price_cents.0 * u64::from(l.quantity)).sum();
            prop_assert_eq!(priced.total_cents, Cents(total));
            prop_assert_eq!(priced.item_count, cart.item_count());
        }

        /// Add then set back to the old quantity restores the contents exactly.
        #[test]
        fn set_restores_after_add(q in 1i64..=10) {
            let c = catalog();
            let l = CartLimits::default();
            let mut cart = CartContents::default();
            cart.apply(&add("bulk", 5), &l, lookup(&c)).unwrap();
            let before = cart.clone();
            cart.apply(&add("bulk", q), &l, lookup(&c)).unwrap();
            cart.apply(&set("bulk", 5), &l, lookup(&c)).unwrap();
            prop_assert_eq!(cart, before);
        }
    }
}
