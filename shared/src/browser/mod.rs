//! The browser side of a micro-frontend's link to the server: one [`CartLink`] per bundle.
//!
//! Each bundle (shell, product list, shopping cart) installs its own link: its own WebSocket to `/ws`,
//! reconnected forever on the shared [`crate::ReconnectSchedule`]; REST for every change, with an
//! `Idempotency-Key` and retries; a `window` `CustomEvent` after each change so the other bundles on the page
//! update at once even when no socket is open; and a slow `GET /api/cart` poll while the socket is down. Every
//! cart that arrives, by whatever path, passes the version rule ([`crate::VersionedCart`]) before it is shown.
//!
//! It compiles on every target so components can call it in server-side rendering too, where it is never
//! started: event handlers and effects only run in the browser.

pub mod api;
pub mod boot;
mod json;
pub mod link;

pub use api::{ApiError, CartRequest};
pub use link::{checkout, mutate, on_link_reports, CartLink, Handlers};
