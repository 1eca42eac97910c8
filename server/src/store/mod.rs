//! Where carts live. Handlers see only the [`CartStore`] trait: load a cart, apply a change atomically. The
//! embedded default is SQLite ([`sqlite::SqliteCartStore`]); a shared backend for several instances implements
//! the same trait.
//!
//! Contract every implementation keeps:
//! - `mutate` returns `Ok` only once the change is durable (committed), so a 2xx survives a crash;
//! - changes to one cart are serialized, each change that alters the cart adds exactly 1 to its version, and a
//!   refused or no-op change leaves version and contents untouched;
//! - a repeated `Idempotency-Key` (per cart) returns the first answer without applying anything again.

pub mod sqlite;

use futures_util::future::BoxFuture;
use shared::{Cart, CartError, CartOp, Change};
use thiserror::Error;

use crate::error::AppError;
use crate::session::CartKey;

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
}

#[derive(Debug, Error)]
pub enum MutationError {
    #[error(transparent)]
    Cart(#[from] CartError),
    #[error("Idempotency-Key reused for a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<MutationError> for AppError {
    fn from(e: MutationError) -> Self {
        match e {
            MutationError::Cart(e) => AppError::Cart(e),
            MutationError::IdempotencyKeyReused => AppError::IdempotencyKeyReused,
            MutationError::Store(e) => AppError::Store(e),
        }
    }
}

pub trait CartStore: Send + Sync + 'static {
    /// The cart as it is now, priced (an empty cart at version 0 if it was never changed).
    fn load<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Cart, StoreError>>;

    /// Apply one change atomically and durably.
    fn mutate(&self, request: MutationRequest) -> BoxFuture<'_, Result<Mutation, MutationError>>;
}
