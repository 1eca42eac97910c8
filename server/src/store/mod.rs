//! Persistence, and nothing else: where carts, stock, prices, orders and idempotency keys live. The layers
//! above see only the [`CartStore`] trait; the embedded default is SQLite ([`sqlite::SqliteCartStore`]), the
//! shared backend for several instances is Redis ([`redis::RedisCartStore`]). The rules both apply inside
//! their atomic step are written once, in [`rules`]. A store returns what it committed plus the [`Event`]s to
//! announce; it knows nothing of HTTP, of WebSocket frames or of who is listening.
//!
//! Contract every implementation keeps:
//! - every change returns `Ok` only once it is durable (committed), so a 2xx survives a crash;
//! - changes to one cart are serialized, each change that alters the cart adds exactly 1 to its version, and a
//!   refused or no-op change leaves version and contents untouched;
//! - a checkout checks every line against stock, decrements it, records the order and empties the cart as one
//!   step: two checkouts racing for the last unit cannot both win, and stock never goes negative;
//! - a change naming an expected stamp (`If-Match`) or checkout total is checked against the cart as it is
//!   inside the same atomic step, and refused with the current cart when it differs;
//! - every cart and product answered carries the store's epoch (a cart's derived from it, see
//!   [`crate::domain::epochs`]);
//! - a repeated `Idempotency-Key` (per cart) returns the first answer without applying anything again, and
//!   with no events (they were announced the first time);
//! - [`CartStore::catalog`] never shows a stock or price whose change is not committed;
//! - a cart neither changed nor touched for [`Retention::cart_expiry`] is deleted (and reads as empty at
//!   version 0 again: start-up makes that expiry no shorter than a session's maximum age, and every session
//!   renewal touches its cart, so no valid cookie names an expired cart);
//! - a notice is stored (numbered by one sequence per store epoch, never reused) before anyone hears of it;
//!   a session is given its own and the general ones after its cursor, unexpired, oldest first, and the cursor
//!   only moves up;
//! - a change whose caller went away is still committed (or not) as a whole: no future of a store is
//!   cancelled half-way through a commit by the HTTP layer (the shop runs each change on its own task).

pub mod redis;
pub mod rules;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use cartwheel_core::chat::{ChatMessage, ChatSender};
use cartwheel_core::version::Stamp;
use cartwheel_core::{
    Cart, CartError, CartOp, Cents, Change, CheckoutReceipt, Notice, Order, PostedNotice, Product, ProductId, Shortfall,
};
use futures_util::future::BoxFuture;
use thiserror::Error;

use crate::domain::{CartKey, Catalog, Event, IdempotencyKey};

/// What a store keeps, and for how long, beyond what a request needs now.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Idempotency records kept per cart (session): the newest.
    pub idempotency_per_cart: usize,
    /// A cart neither changed nor [touched](CartStore::touch) for this long is deleted (and so is the session's
    /// notice cursor).
    pub cart_expiry: std::time::Duration,
    /// A stored notice is delivered (and kept) this long after it was sent.
    pub notice_ttl: std::time::Duration,
    /// Targeted notices kept per session, the newest.
    pub inbox_cap: usize,
    /// General notices kept, the newest.
    pub shop_notices_cap: usize,
    /// Messages kept per help-chat conversation, the newest.
    pub chat_history: usize,
    /// A conversation is kept this long after its last message.
    pub chat_ttl: std::time::Duration,
}

impl Retention {
    /// The most notices one session can be sent on a (re)connect: its inbox and the shop's list.
    pub fn notices_per_session(&self) -> usize {
        self.inbox_cap + self.shop_notices_cap
    }
}

/// Where a session is in the notice sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoticeCursor {
    /// Every notice up to this `seq` was acknowledged.
    pub upto: u64,
    /// General notices start after this `seq` for this session: just before the first one sent once its token
    /// was issued (the sequence when it was first seen, for a token that does not say).
    pub general_from: u64,
}

/// A change to apply to one cart.
#[derive(Debug, Clone)]
pub struct MutationRequest {
    pub cart: CartKey,
    pub op: CartOp,
    pub idempotency_key: Option<IdempotencyKey>,
    /// `If-Match`: apply only if the cart is still at this epoch and version.
    pub expected: Option<Stamp>,
}

/// What a change did.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The cart after the change (or, for a replay, as first answered).
    pub cart: Cart,
    pub change: Change,
    /// The answer was remembered from an earlier request with the same `Idempotency-Key`.
    pub replayed: bool,
    /// What to announce now that it is committed: the new cart version, if it changed (and is no replay).
    pub events: Vec<Event>,
}

/// A service's change to one product (already validated: stock ≥ 0, price > 0).
#[derive(Debug, Clone)]
pub struct ProductUpdate {
    pub id: ProductId,
    pub stock: Option<u32>,
    pub price_cents: Option<Cents>,
}

/// What a product change did.
#[derive(Debug, Clone)]
pub struct ProductUpdated {
    /// The product as it is now.
    pub product: Product,
    /// A change earns the catalog's next revision.
    pub change: Change,
    pub events: Vec<Event>,
}

/// Check out one cart.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub cart: CartKey,
    pub idempotency_key: Option<IdempotencyKey>,
    /// `If-Match`: buy only the cart at this epoch and version (what the shopper saw).
    pub expected: Option<Stamp>,
    /// Buy only if the cart costs exactly this now (the total the shopper saw).
    pub expected_total: Option<Cents>,
}

/// What a checkout did.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub receipt: CheckoutReceipt,
    /// The products whose stock it changed, at their new revision (empty for a replay).
    pub products: Vec<Product>,
    pub replayed: bool,
    /// The emptied cart and every product whose stock it changed (none for a replay).
    pub events: Vec<Event>,
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
    #[error("the instances sharing this Redis sign session cookies with a secret this one was not given (--session-secret): its cookies would not be valid here, nor this one's there; give every instance the same secrets")]
    SessionSecretMismatch,
}

/// Why a change was not made: the shopper's request does not fit (cart rules, stock, key reuse), or the
/// store failed.
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
    /// The cart moved on from the `If-Match` stamp; nothing changed. Carries the cart as it is.
    #[error("the cart changed since the version this request names")]
    VersionMismatch(Box<Cart>),
    /// Checkout's expected total is not what the cart costs now; nothing was charged. Carries the cart at
    /// today's prices.
    #[error("prices changed since the total this checkout expects")]
    PriceChanged(Box<Cart>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where carts, stock, prices and orders live (see the module's contract). Object-safe, so start-up picks the
/// backend at run time; every method that writes is atomic and durable before it answers.
pub trait CartStore: Send + Sync + 'static {
    /// The cart as it is now, priced (an empty cart at version 0 if it was never changed).
    fn load<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Cart, StoreError>>;

    /// Apply one change atomically and durably.
    fn mutate(&self, request: MutationRequest) -> BoxFuture<'_, Result<Mutation, MutationError>>;

    /// The catalog with its committed stock and prices.
    fn catalog(&self) -> Arc<Catalog>;

    /// Change a product's stock and/or price.
    fn update_product(&self, update: ProductUpdate) -> BoxFuture<'_, Result<ProductUpdated, MutationError>>;

    /// Turn the cart into an order (see the module's contract).
    fn checkout(&self, request: CheckoutRequest) -> BoxFuture<'_, Result<Checkout, MutationError>>;

    /// The order `id` placed from `cart`'s session, if there is one (another session's order is `None`, as is
    /// an unknown id): what the page shows after a checkout made without JavaScript.
    fn order<'a>(&'a self, cart: &'a CartKey, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, StoreError>>;

    /// Keep `cart` from expiring for another [`Retention::cart_expiry`] (a session renewal calls it); nothing
    /// when the cart does not exist. Durable like a change.
    fn touch<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Store a notice for `to`'s session (or everyone), durably, numbered after every notice before it.
    fn post_notice<'a>(
        &'a self,
        to: Option<&'a CartKey>,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<PostedNotice, StoreError>>;

    /// `cart`'s cursor and the stored notices after it (see [`NoticeCursor`]), oldest first. A session seen for
    /// the first time gets a cursor: general notices from those sent at `issued_ms` on (when its token was
    /// issued: what was posted between the page and its first socket is not lost), or from now on when that is
    /// not known.
    fn notices_after<'a>(
        &'a self,
        cart: &'a CartKey,
        issued_ms: Option<u64>,
    ) -> BoxFuture<'a, Result<(NoticeCursor, Vec<PostedNotice>), StoreError>>;

    /// Every notice up to `upto` was shown to `cart`'s session: move its cursor there (never down).
    fn ack_notices<'a>(&'a self, cart: &'a CartKey, upto: u64) -> BoxFuture<'a, Result<NoticeCursor, StoreError>>;

    /// Append a message to `cart`'s help-chat conversation. A shopper's message also waits for a service until
    /// one acknowledges it ([`CartStore::chat_ack`]). A shopper's `client_id` already stored answers that message
    /// again, with `false` (not new): a retry is stored once.
    fn chat_post<'a>(
        &'a self,
        cart: &'a CartKey,
        from: ChatSender,
        text: &'a str,
        client_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(ChatMessage, bool), StoreError>>;

    /// `cart`'s conversation, oldest first (unexpired, at most [`Retention::chat_history`]).
    fn chat_history<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Vec<ChatMessage>, StoreError>>;

    /// For the connected service `service`: count it as connected for another `lease`, keep the conversations it
    /// holds for as long, take up to `take` conversations no live service holds (the oldest waiting first), and
    /// hand it every waiting shopper message of the conversations it holds that it was not handed yet, oldest
    /// first. A conversation is one service's until its messages are all acknowledged, its service is
    /// released, or the lease runs out (its instance died): so each message goes to one service at a time, and
    /// a conversation's messages go in order to the same one.
    fn chat_claim<'a>(
        &'a self,
        service: &'a str,
        lease: std::time::Duration,
        take: usize,
    ) -> BoxFuture<'a, Result<Vec<(CartKey, ChatMessage)>, StoreError>>;

    /// A service handled the shopper's message `id`: it is not handed to any service again. Answers whether it
    /// was waiting.
    fn chat_ack<'a>(&'a self, service: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// `service` disconnected: its conversations, and the messages it was handed and did not acknowledge, go
    /// to the next service that claims.
    fn chat_release<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// How many services are connected on every live instance (by their unexpired leases).
    fn chat_services(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// How many carts hold each product now (only products some cart holds), as kept on commit — never by
    /// scanning the carts.
    fn holds(&self) -> BoxFuture<'_, Result<BTreeMap<ProductId, u64>, StoreError>>;

    /// Report the sessions with an open connection on this instance and how many each has (replacing what it
    /// reported before; kept for `ttl`, so the report of an instance that stops reporting drops out by itself)
    /// and answer how many distinct sessions have one on any live instance.
    fn report_online<'a>(
        &'a self,
        sessions: &'a [(CartKey, usize)],
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The connections the *other* live instances last reported (see [`CartStore::report_online`]): of
    /// `session`, or in all. 0 with one instance.
    fn reach_elsewhere<'a>(&'a self, session: Option<&'a CartKey>) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Commit a tiny write the way changes commit (`/healthz`): `Ok` proves the write path — the SQLite
    /// writer thread and its disk, or Redis accepting writes — works now, not only that reads do.
    fn probe_write(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
