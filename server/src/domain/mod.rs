//! The server's domain vocabulary, below every other layer: the keys that name a cart and a request, the
//! product catalog and its live snapshot, and the events a commit produces. Nothing here does I/O or knows
//! of HTTP, SQL, Redis or the wire protocol; the cart arithmetic itself lives in `cartwheel-core`, shared
//! with the browser.

pub mod catalog;
pub mod epochs;
pub mod events;
pub mod keys;

pub use catalog::{Catalog, CatalogError, LiveCatalog};
pub use epochs::{cart_epoch, new_store_epoch};
pub use events::Event;
pub use keys::{CartKey, IdempotencyKey, KeyError};
