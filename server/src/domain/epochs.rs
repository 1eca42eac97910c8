//! Where epochs come from (the rule that uses them is `cartwheel_core::version`). A store draws one random
//! epoch when it is made — a new SQLite database, a Redis keyspace without one (first start, or flushed) —
//! and keeps it. A cart's epoch is derived from its store's and its own key, so a new session's cart starts
//! a history of its own and a client that showed another session's cart takes it whatever its version.

use cartwheel_core::version::Epoch;
use sha2::{Digest, Sha256};

use super::keys::CartKey;

/// A fresh store epoch: 64 random bits.
pub fn new_store_epoch() -> Epoch {
    Epoch::from_bits(rand::random())
}

/// The epoch of `cart`'s versions in the store of epoch `store`.
pub fn cart_epoch(store: &Epoch, cart: &CartKey) -> Epoch {
    let digest = Sha256::new().chain_update(store.as_str()).chain_update(b":").chain_update(cart.as_str()).finalize();
    let mut bits = [0u8; 8];
    bits.copy_from_slice(&digest[..8]);
    Epoch::from_bits(u64::from_be_bytes(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carts_epoch_is_stable_and_differs_per_cart_and_per_store() {
        let (a, b) = (CartKey::from_digest(&[1; 16]), CartKey::from_digest(&[2; 16]));
        let store = Epoch::from_bits(42);
        assert_eq!(cart_epoch(&store, &a), cart_epoch(&store, &a));
        assert_ne!(cart_epoch(&store, &a), cart_epoch(&store, &b), "a new session's cart has its own history");
        assert_ne!(cart_epoch(&store, &a), cart_epoch(&Epoch::from_bits(43), &a), "a new store starts new ones");
        assert!(Epoch::parse(cart_epoch(&store, &a).as_str()).is_some(), "16 lowercase hex digits");
        assert_ne!(new_store_epoch(), new_store_epoch());
    }
}
