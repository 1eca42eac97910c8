//! The browser side of a micro-frontend's link to the server: one [`CartLink`] per bundle.
//!
//! Each bundle (shell, product list, shopping cart) installs its own link: its own WebSocket to `/ws`,
//! reconnected forever on the shared [`cartwheel_core::ReconnectSchedule`]; REST for every change, with an
//! `Idempotency-Key` and retries; a `window` `CustomEvent` after each change so the other bundles on the page
//! update at once even when no socket is open; and a slow `GET /api/cart` poll while the socket is down. Every
//! cart that arrives, by whatever path, passes the version rule ([`cartwheel_core::VersionedCart`]) before it is
//! shown.
//!
//! Only bundles (feature `hydrate` of `cartwheel-mfe`) depend on this crate; views never name it, so the server's
//! build of them has no web-sys. It still compiles on every target (for `cargo check --workspace`).

pub mod api;
pub mod boot;
mod json;
pub mod link;

pub use api::{ApiError, CartRequest};
pub use link::{
    checkout, mutate, on_chat, on_link_reports, on_notices, refresh_reports, send_chat, show_presence, CartLink,
    Handlers,
};
