//! Parse-don't-validate keys: a value of these types is well formed by construction, so the stores, the
//! channel between instances and the logs never see a malformed one.

use std::fmt;

use thiserror::Error;

/// Longest accepted `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("session must be a session id as GET /api/session gives it (32 lowercase hex digits)")]
    CartKey,
    #[error("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters")]
    IdempotencyKey,
}

/// Identifies a cart: the first 16 bytes of SHA-256 of the session token, as 32 lowercase hex digits. It is
/// also the session's public id (services address notices with it). Safe to log and store: it cannot be
/// turned back into a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CartKey(String);

impl CartKey {
    pub const LEN: usize = 32;

    /// A key as [`CartKey::as_str`] wrote it.
    pub fn parse(text: &str) -> Result<CartKey, KeyError> {
        let hex = text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if text.len() == Self::LEN && hex {
            Ok(CartKey(text.to_owned()))
        } else {
            Err(KeyError::CartKey)
        }
    }

    /// The key of a session whose token hashes to `digest`.
    pub fn from_digest(digest: &[u8; 16]) -> CartKey {
        CartKey(hex::encode(digest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short prefix for log lines: enough to follow one shopper, too little to be a key.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl fmt::Display for CartKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's `Idempotency-Key`: 1 to [`IDEMPOTENCY_KEY_MAX_LEN`] visible ASCII characters. A repeated key
/// (per cart) gets the first answer again instead of applying the change twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<IdempotencyKey, KeyError> {
        let visible = text.bytes().all(|b| b.is_ascii_graphic());
        if (1..=IDEMPOTENCY_KEY_MAX_LEN).contains(&text.len()) && visible {
            Ok(IdempotencyKey(text.to_owned()))
        } else {
            Err(KeyError::IdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cart_keys_are_32_lowercase_hex_digits() {
        let key = CartKey::parse(&"a1".repeat(16)).unwrap();
        assert_eq!(key.short(), "a1a1a1a1");
        assert_eq!(CartKey::parse(key.as_str()), Ok(key));
        assert_eq!(CartKey::from_digest(&[0xab; 16]).as_str(), "ab".repeat(16));
        for bad in ["a1".repeat(15), "a1".repeat(17), "A1".repeat(16), "g1".repeat(16), String::new()] {
            assert_eq!(CartKey::parse(&bad), Err(KeyError::CartKey), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::parse("k").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(IDEMPOTENCY_KEY_MAX_LEN)).is_ok());
        for bad in [String::new(), "k".repeat(IDEMPOTENCY_KEY_MAX_LEN + 1), "a b".into(), "é".into(), "a\tb".into()] {
            assert_eq!(IdempotencyKey::parse(&bad), Err(KeyError::IdempotencyKey), "{bad:?}");
        }
    }
}
