//! The product catalog: the products are loaded at start-up from a JSON file (the built-in one by default) and
//! validated; their stock and price then change at run time (service API, checkout). Every cart is priced
//! against the current catalog.
//!
//! A [`Catalog`] is an immutable snapshot; [`LiveCatalog`] holds the current one. Only the store's writer
//! publishes a new snapshot, after the change that made it is committed, so readers never see a stock or
//! price that could still be rolled back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use cartwheel_core::version::Epoch;
use cartwheel_core::{Product, ProductId};
use thiserror::Error;

use crate::sync::{read, write};

/// The catalog shipped with the server (`server/catalog/products.json`).
const BUILT_IN: &str = include_str!("../../catalog/products.json");

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("catalog is not valid JSON: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("catalog is invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Catalog {
    products: Vec<Product>,
    index: HashMap<ProductId, usize>,
    currency: String,
    /// The highest product revision: the next change gets a higher one.
    revision: u64,
    /// The store's epoch, which every revision counts in (and every product carries).
    epoch: Epoch,
}

impl Catalog {
    pub fn built_in() -> Result<Catalog, CatalogError> {
        Catalog::from_json(BUILT_IN)
    }

    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CatalogError::Read { path: path.display().to_string(), source })?;
        Catalog::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Catalog, CatalogError> {
        let products: Vec<Product> = serde_json::from_str(text)?;
        Catalog::new(products)
    }

    pub fn new(products: Vec<Product>) -> Result<Catalog, CatalogError> {
        let invalid = |m: String| Err(CatalogError::Invalid(m));
        let Some(first) = products.first() else {
            return invalid("it lists no products".into());
        };
        let currency = first.currency.clone();
        let mut index = HashMap::with_capacity(products.len());
        for (i, p) in products.iter().enumerate() {
            if !p.id.is_well_formed() {
                return invalid(format!("product id '{}' is not a lowercase slug", p.id));
            }
            if index.insert(p.id.clone(), i).is_some() {
                return invalid(format!("product id '{}' appears twice", p.id));
            }
            if p.currency != currency {
                return invalid(format!("'{}' is priced in {}, the catalog in {currency}", p.id, p.currency));
            }
            if p.price_cents.0 == 0 {
                return invalid(format!("'{}' has no price", p.id));
            }
        }
        let revision = products.iter().map(|p| p.revision).max().unwrap_or(0);
        Ok(Catalog { products, index, currency, revision, epoch: Epoch::default() })
    }

    /// This catalog as the store with `epoch` holds it: every product carries the epoch.
    pub fn with_epoch(mut self, epoch: Epoch) -> Catalog {
        for p in &mut self.products {
            p.epoch = epoch.clone();
        }
        self.epoch = epoch;
        self
    }

    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// Put a changed product in place of the one with its id (unknown ids are ignored: the catalog's products
    /// are fixed at start-up) and raise the catalog's revision to it.
    pub fn replace(&mut self, product: Product) {
        if let Some(&i) = self.index.get(&product.id) {
            self.revision = self.revision.max(product.revision);
            self.products[i] = Product { epoch: self.epoch.clone(), ..product };
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn products(&self) -> &[Product] {
        &self.products
    }

    pub fn get(&self, id: &ProductId) -> Option<&Product> {
        self.index.get(id).map(|&i| &self.products[i])
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }
}

/// The current catalog snapshot, shared by every reader.
#[derive(Debug)]
pub struct LiveCatalog {
    current: RwLock<Arc<Catalog>>,
}

impl LiveCatalog {
    pub fn new(catalog: Arc<Catalog>) -> LiveCatalog {
        LiveCatalog { current: RwLock::new(catalog) }
    }

    /// The catalog as it is now; cheap (one reference count), and consistent for as long as it is held.
    pub fn current(&self) -> Arc<Catalog> {
        read(&self.current).clone()
    }

    /// Make `catalog` the current one.
    pub fn publish(&self, catalog: Arc<Catalog>) {
        *write(&self.current) = catalog;
    }

    /// Take in product states committed elsewhere (another instance's change, a reload), keeping for each
    /// product whichever state has the higher revision, whatever order they arrive in. Returns the products
    /// that were newer than what this catalog had. States of another epoch than this catalog's are not
    /// comparable and are left out (a store that changed epoch is reloaded whole).
    pub fn merge(&self, products: &[Product]) -> Vec<Product> {
        let mut current = write(&self.current);
        let newer: Vec<Product> = products
            .iter()
            .filter(|p| &p.epoch == current.epoch())
            .filter(|p| current.get(&p.id).is_some_and(|known| p.revision > known.revision))
            .cloned()
            .collect();
        if !newer.is_empty() {
            let mut next = (**current).clone();
            for p in &newer {
                next.replace(p.clone());
            }
            *current = Arc::new(next);
        }
        newer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_catalog_is_valid_and_exercises_limits() {
        let c = Catalog::built_in().expect("built-in catalog");
        assert!(c.products().len() >= 12);
        assert!(c.products().iter().any(|p| p.stock == 0), "an out-of-stock product");
        assert!(c.products().iter().any(|p| (1..=3).contains(&p.stock)), "a nearly sold-out product");
        for p in c.products() {
            assert!(p.image.starts_with("/images/"), "{}", p.id);
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog").join(&p.image[1..]);
            assert!(file.exists(), "image for {} at {}", p.id, file.display());
        }
    }

    #[test]
    fn replacing_a_product_raises_the_revision_and_ignores_unknown_ids() {
        let mut c = Catalog::built_in().unwrap();
        assert_eq!(c.revision(), 0);
        let mut p = c.products()[0].clone();
        p.stock = 1234;
        p.revision = 5;
        c.replace(p.clone());
        assert_eq!(c.get(&p.id), Some(&p));
        assert_eq!(c.revision(), 5);
        let mut stranger = p.clone();
        stranger.id = "not-in-the-catalog".into();
        stranger.revision = 9;
        c.replace(stranger);
        assert_eq!(c.revision(), 5);
        assert_eq!(c.products().len(), Catalog::built_in().unwrap().products().len());
    }

    #[test]
    fn merging_keeps_the_newest_revision_of_each_product() {
        let base = Catalog::built_in().unwrap();
        let live = LiveCatalog::new(Arc::new(base.clone()));
        let mut newer = base.products()[0].clone();
        newer.stock = 7;
        newer.revision = 3;
        let mut older = newer.clone();
        older.stock = 9;
        older.revision = 2;
        assert_eq!(live.merge(std::slice::from_ref(&newer)), vec![newer.clone()]);
        assert!(live.merge(&[older, newer.clone()]).is_empty(), "an older and the same state change nothing");
        assert_eq!(live.current().get(&newer.id), Some(&newer));
        assert_eq!(live.current().revision(), 3);
    }

    #[test]
    fn rejects_bad_catalogs() {
        assert!(matches!(Catalog::from_json("[]"), Err(CatalogError::Invalid(_))));
        assert!(matches!(Catalog::from_json("{"), Err(CatalogError::Parse(_))));
        let p = r#"{"id":"a","name":"A","description":"","price_cents":100,"currency":"EUR","stock":1,"image":"/images/a.svg"}"#;
        assert!(matches!(Catalog::from_json(&format!("[{p},{p}]")), Err(CatalogError::Invalid(_))));
        let usd = p.replace("EUR", "USD").replace("\"a\"", "\"b\"");
        assert!(matches!(Catalog::from_json(&format!("[{p},{usd}]")), Err(CatalogError::Invalid(_))));
        let bad_id = p.replace("\"a\"", "\"A B\"");
        assert!(matches!(Catalog::from_json(&format!("[{bad_id}]")), Err(CatalogError::Invalid(_))));
    }
}
