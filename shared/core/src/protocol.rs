//! The wire protocol: WebSocket frames in both directions, the JSON error body of the REST API, the error
//! codes both share, and the few names (paths, close codes, the DOM event) that client and server must agree on.
//!
//! Every frame is a JSON object with a `"type"` tag in SCREAMING_SNAKE_CASE, e.g.
//! `{"type":"CART_UPDATE","version":3,"data":{...}}` or `{"type":"PING","id":7}`.

use serde::{Deserialize, Serialize};

use crate::cart::{Cart, Shortfall};
use crate::catalog::{Product, ProductId};
use crate::version::{CartVersion, Epoch};

/// Path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";

/// Name of the `window` `CustomEvent` a micro-frontend dispatches after it changed the cart over REST; its
/// `detail` is the [`Cart`] JSON (with its version), so every other micro-frontend on the page can apply it.
pub const CART_EVENT: &str = "cartwheel:cart";

/// Name of the `window` `CustomEvent` every bundle's link dispatches for each `NOTICE` its socket brings; its
/// `detail` is the frame's JSON text. The shell shows each notice once, whichever socket brought it.
pub const NOTICE_EVENT: &str = "cartwheel:notice";

/// How every `NOTICE` frame's text begins (serde writes the `type` tag first): bundles that only pass notices on
/// recognise them by it without parsing.
pub const NOTICE_FRAME_PREFIX: &str = r#"{"type":"NOTICE""#;

/// Name of the `window` `CustomEvent` every bundle's link dispatches for each `PRESENCE` frame; its `detail` is
/// the frame's JSON text (for the bundles that show presence).
pub const PRESENCE_EVENT: &str = "cartwheel:presence";

/// How every `PRESENCE` frame's text begins (see [`NOTICE_FRAME_PREFIX`]).
pub const PRESENCE_FRAME_PREFIX: &str = r#"{"type":"PRESENCE""#;

/// Name of the `window` `CustomEvent` every bundle's link dispatches for each `CHAT` frame; its `detail` is the
/// frame's JSON text (for the shell, which shows the conversation).
pub const CHAT_EVENT: &str = "cartwheel:chat";

/// How every `CHAT` frame's text begins (see [`NOTICE_FRAME_PREFIX`]).
pub const CHAT_FRAME_PREFIX: &str = r#"{"type":"CHAT""#;

/// Largest WebSocket message the server reads; a larger one closes the socket with [`close::MESSAGE_TOO_BIG`].
pub const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;

/// WebSocket close codes the server uses (RFC 6455 §7.4.1).
pub mod close {
    /// The close handshake's answer to a client that closed without a code.
    pub const NORMAL: u16 = 1000;
    /// Server shutting down or the peer stopped answering heartbeats: reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// The client's bytes were not valid WebSocket (unmasked, reserved bits, a lone continuation, …).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that was not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client broke a rule (flooding): reconnect, but slower.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame exceeded [`super::MAX_WS_MESSAGE_BYTES`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server failed internally.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Frames the server sends. Bundles read them with `cartwheel-link`'s `json::parse_server_message`, which lists the
/// variants by hand (for bundle weight): a new variant goes there too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerMessage {
    /// The whole cart at `version` — first as the snapshot after connecting, then after every change.
    CartUpdate { version: CartVersion, data: Cart },
    /// Answer to [`ClientMessage::Ping`], echoing its id.
    Pong { id: u64, server_time_ms: u64 },
    /// A frame was refused; the socket stays open unless a close frame follows.
    Error { code: ErrorCode, message: String },
    /// A product's stock or price changed (sent to every connection). Keep it if its `revision` is newer than
    /// the state you hold.
    ProductUpdate { data: Product },
    /// A message from a backend service for the shopper (for one session, or for everyone), as stored: sent
    /// live, and again after each (re)connect until acknowledged ([`ClientMessage::Ack`]). `seq` counts within
    /// the store's `epoch`; a client drops one whose `id` it has shown.
    Notice {
        epoch: Epoch,
        #[serde(flatten)]
        notice: PostedNotice,
    },
    /// How many shoppers are here and how many carts hold each product: everything after connecting, then
    /// what changed, at most once per presence interval.
    Presence {
        #[serde(flatten)]
        counts: crate::presence::Presence,
    },
    /// A message of this session's help chat, the shopper's own or a service's answer (see [`crate::chat`]):
    /// to every connection of the session.
    Chat {
        #[serde(flatten)]
        message: crate::chat::ChatMessage,
    },
}

/// A notice as the store keeps it: an id, its place in the store's one notice sequence (shared by targeted and
/// general notices, so a session's notices are ordered by it and one cursor covers both) and when it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedNotice {
    /// `ntc_` and 20 hex digits.
    pub id: String,
    pub seq: u64,
    pub sent_at_ms: u64,
    pub data: Notice,
}

/// Answer of `GET /api/notices`: the session's stored notices after its acknowledged cursor, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeList {
    pub epoch: Epoch,
    /// The highest `seq` acknowledged (0: none).
    pub cursor: u64,
    pub notices: Vec<PostedNotice>,
}

/// Body of `POST /api/notices/ack` (and the fields of [`ClientMessage::Ack`]): every notice up to `seq` `upto`
/// of `epoch` has been shown. One of another epoch (the store was reset since) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeAck {
    pub upto: u64,
    pub epoch: Epoch,
}

/// Answer of `POST /api/service/notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticePosted {
    pub id: String,
    pub seq: u64,
    /// Connections it was handed to at once (the rest get it when they connect).
    pub delivered_now: usize,
}

/// A message for shoppers from a backend service, e.g. "price dropped on an item in your cart".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// What sort of notice, as the service names it (`price_drop`, `restock`, …): 1..=32 of `a-z0-9_-`.
    pub kind: String,
    /// The words shown to the shopper: 1..=[`Notice::MAX_MESSAGE_CHARS`] characters.
    pub message: String,
    /// The product it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<ProductId>,
}

impl Notice {
    pub const MAX_KIND_LEN: usize = 32;
    pub const MAX_MESSAGE_CHARS: usize = 500;

    /// Why this notice cannot be sent, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= Self::MAX_KIND_LEN
            && self.kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !kind_ok {
            return Some(format!("kind must be 1 to {} characters of a-z, 0-9, '_' and '-'", Self::MAX_KIND_LEN));
        }
        let chars = self.message.chars().count();
        if self.message.trim().is_empty() || chars > Self::MAX_MESSAGE_CHARS {
            return Some(format!("message must be 1 to {} characters, got {chars}", Self::MAX_MESSAGE_CHARS));
        }
        if self.product_id.as_ref().is_some_and(|id| !id.is_well_formed()) {
            return Some("product_id is not a product id".into());
        }
        None
    }
}

/// Body of `POST /api/service/notify`: a [`Notice`] for one session (its public id, see `GET /api/session`)
/// or, without `session`, for every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(flatten)]
    pub notice: Notice,
}

/// Body of `PATCH /api/service/products/{id}`: the fields to change. Signed, so a negative number is refused
/// with a clear message rather than as a type error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_cents: Option<i64>,
}

/// Answer of `GET /api/session`: the session's public id, which services use to address notices to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session: String,
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientMessage {
    /// Round-trip probe; answered by a `PONG` with the same id.
    Ping { id: u64 },
    /// Ask for a fresh `CART_UPDATE` snapshot.
    Resync,
    /// Every notice up to `seq` `upto` of `epoch` has been shown: not sent again.
    Ack { upto: u64, epoch: Epoch },
    /// A message for the help chat (see [`crate::chat`]).
    Chat {
        text: String,
        #[serde(default)]
        client_id: Option<String>,
    },
}

/// Machine-readable error codes, shared by REST error bodies and WebSocket `ERROR` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON, or a field has the wrong type or is missing.
    InvalidJson,
    /// A JSON body was sent without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// The body exceeds the size limit.
    PayloadTooLarge,
    /// No product with that id.
    UnknownProduct,
    /// No such route or resource.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// The change would put more of a product in the cart than is in stock.
    InsufficientStock,
    /// A quantity outside the allowed range.
    QuantityOutOfRange,
    /// The cart already holds the maximum number of different products.
    TooManyLines,
    /// The request's `Origin` is not allowed.
    ForbiddenOrigin,
    /// No valid session cookie.
    Unauthorized,
    /// Too many requests or frames; retry later.
    RateLimited,
    /// This session or address already holds the most WebSockets it may (the upgrade is refused).
    TooManyConnections,
    /// A service token called outside its scopes.
    InsufficientScope,
    /// The `Idempotency-Key` header is malformed.
    InvalidIdempotencyKey,
    /// The `Idempotency-Key` was already used for a different request.
    IdempotencyKeyReused,
    /// A WebSocket frame that is not JSON or not a known message.
    InvalidMessage,
    /// Storage is unavailable; retry later.
    ServiceUnavailable,
    /// Something failed on the server.
    Internal,
    /// A field has a value outside what it allows (e.g. a negative stock).
    InvalidField,
    /// Checkout of a cart with no lines.
    EmptyCart,
    /// `If-Match` named a cart version (epoch and version) that is no longer current: nothing changed; the
    /// error carries the current cart.
    VersionMismatch,
    /// Checkout's `expected_total_cents` is not what the cart costs now: nothing was charged; the error
    /// carries the cart at today's prices.
    PriceChanged,
    /// A code this client version does not know yet.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Its name on the wire (`insufficient_stock`).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    /// The code named `name`, `Unknown` for any other text.
    pub fn from_name(name: &str) -> ErrorCode {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).unwrap_or(ErrorCode::Unknown)
    }

    /// What a shopper reads when a form posted without JavaScript was refused with this code: words fixed
    /// here, never taken from the URL the answer redirected to (so a link cannot make the page say anything).
    pub fn in_words(self) -> &'static str {
        match self {
            ErrorCode::InsufficientStock => "There is not enough of it in stock for that. The page shows what is left.",
            ErrorCode::QuantityOutOfRange | ErrorCode::InvalidField | ErrorCode::InvalidJson => {
                "Enter a whole number of items, from 1 to 99."
            }
            ErrorCode::TooManyLines => "Your cart holds as many different products as it can.",
            ErrorCode::UnknownProduct => "That product is not sold here any more.",
            ErrorCode::EmptyCart => "Your cart is empty: add something before checking out.",
            ErrorCode::PriceChanged => "Prices changed since this page was shown. Check the new total and try again.",
            ErrorCode::VersionMismatch => "Your cart changed meanwhile. Check it and try again.",
            ErrorCode::IdempotencyKeyReused => "That form was already sent with other values. Try again on this page.",
            ErrorCode::RateLimited => "Too many changes at once. Wait a moment and try again.",
            _ => "The shop could not save that just now. Try again in a moment.",
        }
    }
}

/// The REST error body: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// For a refused checkout (`insufficient_stock`): every line that no longer fits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortfalls: Vec<Shortfall>,
    /// For `version_mismatch` and `price_changed`: the cart as it is now, so the client shows it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart: Option<Cart>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { code, message: message.into(), shortfalls: Vec::new(), cart: None } }
    }
}

/// Request body of `POST /api/cart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddToCart {
    pub product_id: crate::ProductId,
    #[serde(default = "one")]
    pub quantity: i64,
}

fn one() -> i64 {
    1
}

/// Request body of `PATCH /api/cart/items/{product_id}`: change the line by `delta` (see `CartOp::Adjust`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustQuantity {
    pub delta: i64,
}

/// Optional request body of `POST /api/cart/checkout`: what the shopper was shown. When the cart costs
/// anything else now (a price changed meanwhile), checkout answers `409 price_changed` and charges nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_total_cents: Option<crate::Cents>,
}

/// Request body of `PUT /api/cart/items/{product_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetQuantity {
    pub quantity: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_by_name_and_have_words_for_the_page() {
        for code in [ErrorCode::InsufficientStock, ErrorCode::EmptyCart, ErrorCode::IdempotencyKeyReused] {
            assert_eq!(ErrorCode::from_name(&code.name()), code);
            assert!(!code.in_words().is_empty());
        }
        assert_eq!(ErrorCode::InsufficientStock.name(), "insufficient_stock");
        assert_eq!(ErrorCode::from_name("<script>"), ErrorCode::Unknown);
        assert_eq!(ErrorCode::from_name("\"quoted\""), ErrorCode::Unknown);
        assert_ne!(ErrorCode::EmptyCart.in_words(), ErrorCode::Unknown.in_words());
    }
    use serde_json::json;

    #[test]
    fn server_frames_have_the_documented_shape() {
        let cart = Cart::empty("EUR");
        let v = serde_json::to_value(ServerMessage::CartUpdate { version: 0, data: cart }).unwrap();
        assert_eq!(v["type"], "CART_UPDATE");
        assert_eq!(v["version"], 0);
        assert_eq!(v["data"]["items"], json!([]));
        let v = serde_json::to_value(ServerMessage::Pong { id: 9, server_time_ms: 5 }).unwrap();
        assert_eq!(v, json!({"type":"PONG","id":9,"server_time_ms":5}));
        let v = serde_json::to_value(ServerMessage::Error { code: ErrorCode::InvalidMessage, message: "x".into() })
            .unwrap();
        assert_eq!(v, json!({"type":"ERROR","code":"invalid_message","message":"x"}));
    }

    #[test]
    fn client_frames_parse() {
        let m: ClientMessage = serde_json::from_str(r#"{"type":"PING","id":42}"#).unwrap();
        assert_eq!(m, ClientMessage::Ping { id: 42 });
        let m: ClientMessage = serde_json::from_str(r#"{"type":"RESYNC"}"#).unwrap();
        assert_eq!(m, ClientMessage::Resync);
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"DANCE"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"PING","id":"x"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>("not json").is_err());
    }

    #[test]
    fn error_body_round_trips_and_tolerates_new_codes() {
        let body = ErrorBody::new(ErrorCode::InsufficientStock, "only 2 left");
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v, json!({"error":{"code":"insufficient_stock","message":"only 2 left"}}));
        let future: ErrorBody = serde_json::from_value(json!({"error":{"code":"brand_new","message":"m"}})).unwrap();
        assert_eq!(future.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn product_updates_and_notices_have_the_documented_shape() {
        let frame = ServerMessage::Notice {
            epoch: Epoch::from_bits(7),
            notice: PostedNotice {
                id: "ntc_1".into(),
                seq: 12,
                sent_at_ms: 5,
                data: Notice {
                    kind: "price_drop".into(),
                    message: "Cheaper now".into(),
                    product_id: Some("mug".into()),
                },
            },
        };
        let v = serde_json::to_value(&frame).unwrap();
        assert_eq!(
            v,
            json!({"type":"NOTICE","epoch":"0000000000000007","id":"ntc_1","seq":12,"sent_at_ms":5,
                   "data":{"kind":"price_drop","message":"Cheaper now","product_id":"mug"}})
        );
        assert_eq!(serde_json::from_value::<ServerMessage>(v).unwrap(), frame);
        assert!(serde_json::to_string(&frame).unwrap().starts_with(NOTICE_FRAME_PREFIX), "the tag comes first");
        let mut counts = crate::presence::Presence { online: 3, ..Default::default() };
        counts.in_carts.insert("mug".into(), 2);
        let presence = serde_json::to_string(&ServerMessage::Presence { counts }).unwrap();
        assert_eq!(presence, r#"{"type":"PRESENCE","online":3,"in_carts":{"mug":2}}"#);
        assert!(presence.starts_with(PRESENCE_FRAME_PREFIX));
        let ack: ClientMessage =
            serde_json::from_str(r#"{"type":"ACK","upto":12,"epoch":"0000000000000007"}"#).unwrap();
        assert_eq!(ack, ClientMessage::Ack { upto: 12, epoch: Epoch::from_bits(7) });
        let r: NoticeRequest = serde_json::from_value(json!({"kind":"k","message":"m","session":"abc"})).unwrap();
        assert_eq!(r.session.as_deref(), Some("abc"));
        assert_eq!(r.notice.product_id, None);
        let v = serde_json::to_value(ErrorBody::new(ErrorCode::EmptyCart, "x")).unwrap();
        assert_eq!(v, json!({"error":{"code":"empty_cart","message":"x"}}), "no shortfalls field when there are none");
    }

    #[test]
    fn notice_limits_are_inclusive() {
        let ok = |kind: &str, message: &str| {
            Notice { kind: kind.into(), message: message.into(), product_id: None }.problem().is_none()
        };
        assert!(ok(&"k".repeat(Notice::MAX_KIND_LEN), &"é".repeat(Notice::MAX_MESSAGE_CHARS)));
        assert!(!ok(&"k".repeat(Notice::MAX_KIND_LEN + 1), "m"));
        assert!(!ok("k", &"é".repeat(Notice::MAX_MESSAGE_CHARS + 1)));
        assert!(!ok("", "m"));
        assert!(!ok("Price Drop", "m"));
        assert!(!ok("k", "   "));
    }

    #[test]
    fn add_to_cart_quantity_defaults_to_one() {
        let a: AddToCart = serde_json::from_str(r#"{"product_id":"mug"}"#).unwrap();
        assert_eq!(a.quantity, 1);
    }
}
