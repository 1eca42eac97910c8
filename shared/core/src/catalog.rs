//! What a shop sells: products and their identifiers, as the server loads them and as clients receive them.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::money::Cents;

/// A product's stable identifier: a lowercase slug such as `"walnut-desk-lamp"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductId(pub String);

impl ProductId {
    /// The longest id the catalog accepts; ids come from URLs and bodies, so they are bounded.
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a well-formed slug: 1..=64 chars of `a-z`, `0-9` and inner `-`.
    pub fn is_well_formed(&self) -> bool {
        let s = self.0.as_str();
        !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ProductId {
    fn from(s: &str) -> Self {
        ProductId(s.to_owned())
    }
}

/// One product as listed in the shop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub price_cents: Cents,
    /// ISO 4217 code, e.g. `"EUR"`.
    pub currency: String,
    /// Units available; a cart line can never be raised above it.
    pub stock: u32,
    /// URL path of the product's picture, e.g. `"/images/walnut-desk-lamp.svg"`.
    pub image: String,
    /// The catalog revision at which stock or price last changed (0: as shipped). Revisions only grow, so a
    /// client holding two states of one product keeps the one with the higher revision, whatever order they
    /// arrived in.
    #[serde(default)]
    pub revision: u64,
    /// The store's epoch `revision` counts in (see [`crate::version`]): a state of another epoch replaces
    /// the one held whatever the revisions.
    #[serde(default)]
    pub epoch: crate::version::Epoch,
}

impl Product {
    /// A few words about availability, the same on the server-rendered page and in the browser.
    pub fn stock_label(&self) -> String {
        Product::stock_label_of(self.stock)
    }

    /// [`Product::stock_label`] for a stock figure.
    pub fn stock_label_of(stock: u32) -> String {
        match stock {
            0 => "Out of stock".to_owned(),
            n @ 1..=3 => format!("Only {n} left"),
            _ => "In stock".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rules() {
        assert!(ProductId::from("walnut-desk-lamp").is_well_formed());
        assert!(ProductId::from("a1").is_well_formed());
        assert!(!ProductId::from("").is_well_formed());
        assert!(!ProductId::from("-a").is_well_formed());
        assert!(!ProductId::from("a-").is_well_formed());
        assert!(!ProductId::from("Upper").is_well_formed());
        assert!(!ProductId::from("sp ace").is_well_formed());
        assert!(ProductId("a".repeat(ProductId::MAX_LEN)).is_well_formed());
        assert!(!ProductId("a".repeat(ProductId::MAX_LEN + 1)).is_well_formed());
    }

    #[test]
    fn stock_labels() {
        let mut p = Product {
            id: "x".into(),
            name: "X".into(),
            description: String::new(),
            price_cents: Cents(100),
            currency: "EUR".into(),
            stock: 0,
            image: String::new(),
            revision: 0,
            epoch: Default::default(),
        };
        assert_eq!(p.stock_label(), "Out of stock");
        p.stock = 2;
        assert_eq!(p.stock_label(), "Only 2 left");
        p.stock = 4;
        assert_eq!(p.stock_label(), "In stock");
    }
}
