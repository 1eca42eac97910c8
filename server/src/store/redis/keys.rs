//! Every Redis key and value layout the store uses, in one place (all under `cartwheel:`):
//! `cart:<key>` (hash `v` version, `c` contents), `idem:<cart key>:<Idempotency-Key>` (expires),
//! `products` (hash id → `stock price revision`, overriding the catalog file), `epoch`,
//! `order:<id>`, `session-secret`, `health-probe`, notices (`notice-seq`, `notices`, `inbox:<cart key>`,
//! `notice-cursor:<cart key>`), presence (`presence`, `presence:<instance>`, `holders:<product>`), and the pub/sub channel every instance of one shop shares.

use cartwheel_core::{Product, ProductId};

use crate::domain::{CartKey, IdempotencyKey};

/// What every key starts with (the chat's script builds its keys from it).
pub const PREFIX: &str = "cartwheel:";

/// A session's help-chat conversation: a list of message JSON, the newest kept. The rest of the chat's keys
/// are made by `chat.lua` from [`PREFIX`]: `chat-client:<cart>` (client id → message), `chat-pending` (waiting
/// shopper messages by seq), `chat-msg:<id>` (a waiting message's cart and JSON), `chat-waiting:<cart>`, `chat-sent`
/// (message → the service it was handed to), `chat-owner:<cart>` (the service holding it, with a lease),
/// `chat-owned:<service>`, `chat-services` (connected services by lease), `chat-seq`.
pub fn chat(cart: &CartKey) -> String {
    format!("cartwheel:chat:{cart}")
}

/// The one channel all instances of a shop share.
pub const CHANNEL: &str = "cartwheel:events";
/// The store's epoch (see `cartwheel_core::version`): set by the first instance, missing after a flush.
pub const EPOCH: &str = "cartwheel:epoch";
pub const PRODUCTS: &str = "cartwheel:products";
pub const SESSION_SECRET: &str = "cartwheel:session-secret";
/// SHA-256 (hex) of the secret the most recently started instance signs session cookies with.
pub const SESSION_SIGNER: &str = "cartwheel:session-signer";
/// Written by `/healthz` to prove Redis takes writes; expires by itself.
pub const HEALTH_PROBE: &str = "cartwheel:health-probe";

pub fn cart(cart: &CartKey) -> String {
    format!("cartwheel:cart:{cart}")
}

pub fn idempotency(cart: &CartKey, key: &IdempotencyKey) -> String {
    format!("cartwheel:idem:{cart}:{}", key.as_str())
}

/// A session's idempotency records by time (a sorted set), so their number can be capped.
pub fn idempotency_index(cart: &CartKey) -> String {
    format!("cartwheel:idem-index:{cart}")
}

/// The key a change without a client key commits with, so a commit whose answer was lost can be asked again.
pub fn internal_idempotency(cart: &CartKey) -> String {
    format!("cartwheel:idem:{cart}:internal:{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// The one notice sequence (`INCR`), shared by targeted and general notices.
pub const NOTICE_SEQ: &str = "cartwheel:notice-seq";
/// General notices: a sorted set, score = seq, member = the notice's JSON.
pub const NOTICES: &str = "cartwheel:notices";

/// A session's targeted notices, like [`NOTICES`].
pub fn inbox(cart: &CartKey) -> String {
    format!("cartwheel:inbox:{cart}")
}

/// The carts holding a product: a sorted set of cart keys, score = when that cart expires (ms), so an expired
/// cart stops counting without anyone deleting it.
pub fn holders(product: &ProductId) -> String {
    format!("cartwheel:holders:{}", product.as_str())
}

/// Instances reporting presence: a sorted set of their session sets' keys, score = when the report expires.
pub const PRESENCE: &str = "cartwheel:presence";

/// One instance's open connections: a hash of session → connections, and `*` → all of them (expiring unless
/// reported again).
pub fn presence_of(instance: &str) -> String {
    format!("cartwheel:presence:{instance}")
}

/// A session's notice cursor: `<upto> <general_from>`.
pub fn notice_cursor(cart: &CartKey) -> String {
    format!("cartwheel:notice-cursor:{cart}")
}

pub fn order(id: &str) -> String {
    format!("cartwheel:order:{id}")
}

/// A product's field in [`PRODUCTS`]: `stock price revision`.
pub fn product_state(p: &Product) -> String {
    format!("{} {} {}", p.stock, p.price_cents.0, p.revision)
}

/// `(stock, price_cents, revision)` from a [`product_state`]; `None` if it is not one.
pub fn parse_product_state(state: &str) -> Option<(u32, u64, u64)> {
    let mut fields = state.split(' ');
    let stock = fields.next()?.parse().ok()?;
    let price = fields.next()?.parse().ok()?;
    let revision = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((stock, price, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_states_round_trip_and_junk_is_refused() {
        assert_eq!(parse_product_state("4 9900 7"), Some((4, 9900, 7)));
        for junk in ["", "4 9900", "4 9900 7 1", "-1 9900 7", "4 x 7"] {
            assert_eq!(parse_product_state(junk), None, "{junk}");
        }
    }
}
