//! Everything both sides of Cartwheel's wire need, compiled for the host and for `wasm32`.
//!
//! The server and every micro-frontend depend on this crate, so a cart computed in the browser and one
//! computed on the server can never disagree: the arithmetic, the limits, the JSON shapes, the rule for
//! which cart version a client may show, and the reconnect schedule all live here once. Nothing in it
//! does I/O or needs an async runtime, and it depends on nothing browser-specific: the browser side of a
//! bundle's connection is `cartwheel-link`, built on these types.

pub mod api;
pub mod cart;
pub mod catalog;
pub mod chat;
pub mod link;
pub mod money;
pub mod notices;
pub mod order;
pub mod page;
pub mod presence;
pub mod protocol;
pub mod reconnect;
pub mod version;

pub use api::{ApiError, CartRequest};
pub use cart::{Cart, CartContents, CartError, CartLimits, CartLine, CartOp, Change, LineItem, Shortfall};
pub use catalog::{Product, ProductId};
pub use link::{Handlers, LinkReport, LinkState};
pub use money::{Cents, Locale};
pub use notices::NoticeInbox;
pub use order::{CheckoutReceipt, Order};
pub use protocol::{
    ClientMessage, ErrorBody, ErrorCode, ErrorDetail, Notice, PostedNotice, ProductPatch, ServerMessage,
};
pub use reconnect::{ReconnectPolicy, ReconnectSchedule};
pub use version::{CartVersion, VersionedCart};
