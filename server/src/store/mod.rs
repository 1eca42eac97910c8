//! Where carts, stock, prices and orders live. Handlers see only the [`CartStore`] trait: load a cart, apply a
//! change atomically, change a product, check out. The embedded default is SQLite ([`sqlite::SqliteCartStore`]);
//! a shared backend for several instances implements the same trait.
//!
//! Contract every implementation keeps:
//! - every change returns `Ok` only once it is durable (committed), so a 2xx survives a crash;
//! - changes to one cart are serialized, each change that alters the cart adds exactly 1 to its version, and a
//!   refused or no-op change leaves version and contents untouched;
//! - a checkout checks every line against stock, decrements it, records the order and empties the cart as one
//!   step: two checkouts racing for the last unit cannot both win, and stock never goes negative;
//! - a repeated `Idempotency-Key` (per cart) returns the first answer without applying anything again;
//! - [`CartStore::catalog`] never shows a stock or price whose change is not committed.

pub mod redis;
pub mod sqlite;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use shared::{Cart, CartError, CartOp, Cents, Change, CheckoutReceipt, Product, ProductId, Shortfall};
use thiserror::Error;

use crate::catalog::Catalog;
use crate::error::AppError;
use crate::session::CartKey;

/// What identifies "the same request" for an Idempotency-Key: a cart operation's `Debug` form, or
/// [`CHECKOUT_FINGERPRINT`]. Both stores remember it next to the answer.
pub(crate) fn fingerprint(op: &CartOp) -> String {
    format!("{op:?}")
}

pub(crate) const CHECKOUT_FINGERPRINT: &str = "Checkout";

/// Milliseconds since the Unix epoch (order timestamps).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What checking out `priced` does to the catalog, the rule both stores apply inside their atomic step: refused
/// for an empty cart or when any line no longer fits the stock; otherwise every bought product with its stock
/// lowered, at the catalog's next revision.
pub(crate) fn plan_checkout(priced: &Cart, catalog: &Catalog) -> Result<Vec<Product>, MutationError> {
    if priced.items.is_empty() {
        return Err(MutationError::EmptyCart);
    }
    let shortfalls = priced.shortfalls();
    if !shortfalls.is_empty() {
        return Err(MutationError::Shortfalls(shortfalls));
    }
    let revision = catalog.revision() + 1;
    priced
        .items
        .iter()
        .map(|line| {
            let mut product = catalog
                .get(&line.product_id)
                .cloned()
                .ok_or_else(|| CartError::UnknownProduct(line.product_id.clone()))?;
            product.stock = product.stock.checked_sub(line.quantity).ok_or_else(|| {
                StoreError::Corrupt(format!("stock of '{}' would go negative after the check", product.id))
            })?;
            product.revision = revision;
            Ok(product)
        })
        .collect()
}

/// A service's change applied to the product as `catalog` has it: the product as it would be, and whether it
/// changed (a change earns the catalog's next revision).
pub(crate) fn plan_product_update(
    update: &ProductUpdate,
    catalog: &Catalog,
) -> Result<(Product, Change), MutationError> {
    let current = catalog.get(&update.id).ok_or_else(|| CartError::UnknownProduct(update.id.clone()))?;
    let mut next = current.clone();
    next.stock = update.stock.unwrap_or(current.stock);
    next.price_cents = update.price_cents.unwrap_or(current.price_cents);
    if next.stock == current.stock && next.price_cents == current.price_cents {
        return Ok((next, Change::Unchanged));
    }
    next.revision = catalog.revision() + 1;
    Ok((next, Change::Changed))
}

/// A new order's id: `ord_` and 20 random hex digits.
pub(crate) fn new_order_id() -> String {
    format!("ord_{}", hex::encode(rand::random::<[u8; 10]>()))
}

/// A change to apply to one cart.
#[derive(Debug, Clone)]
pub struct MutationRequest {
    pub cart: CartKey,
    pub op: CartOp,
    pub idempotency_key: Option<String>,
}

/// What a change did.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The cart after the change (or, for a replay, as first answered).
    pub cart: Cart,
    pub change: Change,
    /// The answer was remembered from an earlier request with the same `Idempotency-Key`.
    pub replayed: bool,
}

/// A service's change to one product (already validated: stock ≥ 0, price > 0).
#[derive(Debug, Clone)]
pub struct ProductUpdate {
    pub id: ProductId,
    pub stock: Option<u32>,
    pub price_cents: Option<Cents>,
}

/// Check out one cart.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub cart: CartKey,
    pub idempotency_key: Option<String>,
}

/// What a checkout did.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub receipt: CheckoutReceipt,
    /// The products whose stock it changed, at their new revision (empty for a replay).
    pub products: Vec<Product>,
    pub replayed: bool,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("could not prepare the database directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the batch this change was part of failed to commit: {0}")]
    Batch(String),
    #[error("the store is shut down")]
    Closed,
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis did not answer within {} ms", .0.as_millis())]
    Timeout(std::time::Duration),
    #[error("the change conflicted with others {0} times in a row")]
    Contended(u32),
}

#[derive(Debug, Error)]
pub enum MutationError {
    #[error(transparent)]
    Cart(#[from] CartError),
    #[error("Idempotency-Key reused for a different request")]
    IdempotencyKeyReused,
    #[error("the cart is empty")]
    EmptyCart,
    #[error("not enough stock for every line")]
    Shortfalls(Vec<Shortfall>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<MutationError> for AppError {
    fn from(e: MutationError) -> Self {
        match e {
            MutationError::Cart(e) => AppError::Cart(e),
            MutationError::IdempotencyKeyReused => AppError::IdempotencyKeyReused,
            MutationError::EmptyCart => AppError::EmptyCart,
            MutationError::Shortfalls(lines) => AppError::Shortfalls(lines),
            MutationError::Store(e) => AppError::Store(e),
        }
    }
}

pub trait CartStore: Send + Sync + 'static {
    /// The cart as it is now, priced (an empty cart at version 0 if it was never changed).
    fn load<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Cart, StoreError>>;

    /// Apply one change atomically and durably.
    fn mutate(&self, request: MutationRequest) -> BoxFuture<'_, Result<Mutation, MutationError>>;

    /// The catalog with its committed stock and prices.
    fn catalog(&self) -> Arc<Catalog>;

    /// Change a product's stock and/or price. Returns the product as it is now and whether it changed (a
    /// change earns a new revision).
    fn update_product(&self, update: ProductUpdate) -> BoxFuture<'_, Result<(Product, Change), MutationError>>;

    /// Turn the cart into an order (see the module's contract).
    fn checkout(&self, request: CheckoutRequest) -> BoxFuture<'_, Result<Checkout, MutationError>>;
}
