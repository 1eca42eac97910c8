//! The guarded commit: every change is written by one Lua script (`commit.lua`) that first checks nothing the
//! instance read has moved — the Idempotency-Key still unused, the store's epoch unchanged (a flushed Redis
//! has none), the cart at the version read, and each product the change relied on at the revision read —
//! and then, in the same step, writes the new state and publishes the change's events on the instances'
//! channel. Redis runs a script alone, so the check, the write and the publish are one step.
//!
//! Products are guarded one by one, not by one catalog-wide revision: changes of different products never
//! conflict, and a product the catalog file no longer lists cannot wedge anything. A checkout does not even
//! guard its products' revisions: it *takes* stock inside the script (price as priced, enough units left,
//! decremented there), so any number of checkouts of one product commit one after another without a retry;
//! their `PRODUCT_UPDATE`s get the stock and revision the script computed.
//!
//! KEYS: 1 the epoch, 2 the products hash. ARGV: 1 Idempotency-Key's Redis key or '', 2 expected epoch,
//! 3 cart hash key or '', 4 expected cart version, 5 number of product guards, then per guard five fields:
//! `id rev <expected revision> <revision without a stored entry> ''` or
//! `id take <units> <expected price> <state without a stored entry>`; then operations: `hset key field value`,
//! `set key value`, `setex key value secs`, `expire key secs`, `zadd key score member`, `zrem key member`, `setex-capped key value secs index cap`, `publish channel message`, `publish-taken channel message id`.
//! Answers `{'ok', (id, new state)…}`, `{'conflict'}`, `{'epoch'}` or `{'replay', <remembered answer>}`.

use std::time::Duration;

use cartwheel_core::{Product, ProductId};

use super::keys::{holders, product_state, CHANNEL};

pub(super) const SCRIPT: &str = include_str!("commit.lua");

/// One guarded commit under construction.
pub(super) struct Commit {
    pub idempotency: Option<String>,
    /// The cart hash key and the version read.
    pub cart: Option<(String, u64)>,
    /// Five fields per product guard (see the module doc).
    pub products: Vec<[String; 5]>,
    pub ops: Vec<String>,
}

impl Commit {
    pub(super) fn new() -> Commit {
        Commit { idempotency: None, cart: None, products: Vec::new(), ops: Vec::new() }
    }

    /// Commit only if `product` is still at the revision read; `base` is the catalog file's state of it.
    pub(super) fn guard(&mut self, product: &Product, base: Option<&Product>) {
        let unstored = base.map_or(0, |b| b.revision);
        self.products.push([
            product.id.as_str().to_owned(),
            "rev".into(),
            product.revision.to_string(),
            unstored.to_string(),
            String::new(),
        ]);
    }

    /// Take `units` of `product` if it still costs what it cost when priced and enough are left; `base` is the
    /// catalog file's state of it (what holds while Redis has no entry).
    pub(super) fn take(&mut self, product: &Product, units: u32, base: Option<&Product>) {
        self.products.push([
            product.id.as_str().to_owned(),
            "take".into(),
            units.to_string(),
            product.price_cents.0.to_string(),
            base.map_or_else(|| product_state(product), product_state),
        ]);
    }

    /// Publish `message` (a `PRODUCT_UPDATE` of `product`) with the stock and revision the script takes.
    pub(super) fn publish_taken(&mut self, message: String, product: &str) {
        self.ops.extend(["publish-taken".into(), CHANNEL.into(), message, product.into()]);
    }

    pub(super) fn hset(&mut self, key: &str, field: &str, value: impl ToString) {
        self.ops.extend(["hset".into(), key.into(), field.into(), value.to_string()]);
    }

    /// `key` expires `ttl` from now (the cart hash: each change keeps it another cart expiry).
    pub(super) fn expire(&mut self, key: &str, ttl: Duration) {
        self.ops.extend(["expire".into(), key.into(), ttl.as_secs().max(1).to_string()]);
    }

    /// The cart `cart` holds `product` until `expires_at_ms` (see `keys::holders`), or no longer.
    pub(super) fn hold(&mut self, product: &ProductId, cart: &str, expires_at_ms: Option<u64>) {
        match expires_at_ms {
            Some(at) => self.ops.extend(["zadd".into(), holders(product), at.to_string(), cart.into()]),
            None => self.ops.extend(["zrem".into(), holders(product), cart.into()]),
        }
    }

    pub(super) fn set(&mut self, key: &str, value: String) {
        self.ops.extend(["set".into(), key.into(), value]);
    }

    pub(super) fn remember(&mut self, key: String, answer: String, ttl: Duration) {
        self.ops.extend(["setex".into(), key.clone(), answer, ttl.as_secs().max(1).to_string()]);
        self.idempotency = Some(key);
    }

    /// [`Commit::remember`], also indexed in the session's `index` of records: beyond `cap`, the oldest go.
    pub(super) fn remember_capped(&mut self, key: String, answer: String, ttl: Duration, index: String, cap: usize) {
        self.ops.extend([
            "setex-capped".into(),
            key.clone(),
            answer,
            ttl.as_secs().max(1).to_string(),
            index,
            cap.max(1).to_string(),
        ]);
        self.idempotency = Some(key);
    }

    pub(super) fn publish(&mut self, message: String) {
        self.ops.extend(["publish".into(), CHANNEL.into(), message]);
    }
}

/// What a commit found.
pub(super) enum Committed {
    /// Committed; with the new state (`stock price revision`) of every product it took stock of.
    Done(Vec<(String, String)>),
    Conflict,
    /// The store's epoch is not the one this instance holds (Redis was flushed or replaced).
    Epoch,
    /// The Idempotency-Key was used meanwhile: its remembered answer.
    Replay(String),
}
