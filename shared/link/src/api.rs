//! REST calls to the cart API with the browser's `fetch`; their failures are [`ApiError`]s (defined in `cartwheel-core`).

use std::cell::{Cell, RefCell};

use gloo_net::http::{Method, RequestBuilder};
use gloo_timers::callback::Timeout;
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::AbortController;

pub use cartwheel_core::api::{ApiError, CartRequest};
use cartwheel_core::cart::Cart;
use cartwheel_core::catalog::Product;
use cartwheel_core::link::{parse_retry_after, retry_wait_ms, LinkTimings, MUTATION_RETRIES};
use cartwheel_core::order::CheckoutReceipt;
use cartwheel_core::protocol::{AddToCart, AdjustQuantity, CheckoutRequest, ErrorBody, ErrorCode, Notice, SetQuantity};
use cartwheel_core::version::{Epoch, Stamp};

use crate::json;

thread_local! {
    /// Every call is aborted after this long (the page's [`LinkTimings::request_timeout_ms`], set when the
    /// bundle's link is installed).
    static REQUEST_TIMEOUT_MS: Cell<u32> = const { Cell::new(LinkTimings::DEFAULT_REQUEST_TIMEOUT_MS as u32) };
    /// The last change whose outcome stayed unknown after its retries (its method, path and body, and its
    /// key): the shopper trying the same change again sends the same key, so the server applies it once.
    static UNCONFIRMED: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Abort every later call after `ms` without a complete answer.
pub fn set_request_timeout(ms: u64) {
    REQUEST_TIMEOUT_MS.with(|t| t.set(ms.clamp(1, u64::from(u32::MAX)) as u32));
}

/// `GET /api/cart`.
pub async fn fetch_cart() -> Result<Cart, ApiError> {
    call("GET", "/api/cart", None, None, None).await?.read()
}

/// `GET /api/products`.
pub async fn fetch_products() -> Result<Vec<Product>, ApiError> {
    call("GET", "/api/products", None, None, None).await?.read()
}

/// `GET /api/notices`: the stored notices not acknowledged yet, and their epoch.
pub async fn fetch_notices() -> Option<(Epoch, Vec<(u64, Notice)>)> {
    let answer = call("GET", "/api/notices", None, None, None).await.ok()?;
    answer.succeeded().then(|| json::notice_list(&answer.body)).flatten()
}

/// `GET /api/chat`: the session's conversation and whether a service is connected.
pub async fn chat_history() -> Option<cartwheel_core::chat::ChatHistory> {
    call("GET", "/api/chat", None, None, None).await.ok()?.read().ok()
}

/// `POST /api/chat` with `body` (see [`cartwheel_core::chat::ChatPost`]), its `client_id` also the
/// `Idempotency-Key`, so a retry is stored once.
pub async fn post_chat(body: &str, client_id: &str) -> Result<cartwheel_core::chat::ChatPosted, ApiError> {
    call("POST", "/api/chat", Some(body), Some(client_id), None).await?.read()
}

/// `POST /api/notices/ack` with `body` (see [`cartwheel_core::protocol::NoticeAck`]); whether it was taken.
pub async fn ack_notices(body: &str) -> bool {
    call("POST", "/api/notices/ack", Some(body), None, None).await.is_ok_and(|a| a.succeeded())
}

/// `POST /api/cart/checkout` of the cart shown (`shown`: its `If-Match` stamp and total), retried like a cart
/// change: a lost answer never buys twice, and a cart that changed or got dearer is not bought.
pub async fn checkout(shown: Option<&Cart>, unsure: &dyn Fn()) -> Result<CheckoutReceipt, ApiError> {
    let body = shown.and_then(|c| json::stringify(&CheckoutRequest { expected_total_cents: Some(c.total_cents) }));
    send_once("POST", "/api/cart/checkout", body.as_deref(), shown.map(stamp).as_deref(), unsure).await?.read()
}

/// The `If-Match` value naming `cart`.
fn stamp(cart: &Cart) -> String {
    Stamp::of(cart).to_header()
}

/// Apply a change over REST (see [`send_once`]). A `Set` names the cart it was decided on (`shown`), so it
/// cannot undo a change this tab has not seen (`412`).
pub async fn send(request: &CartRequest, shown: Option<&Cart>, unsure: &dyn Fn()) -> Result<Cart, ApiError> {
    let mut if_match = None;
    let (method, path, body) = match request {
        CartRequest::Add { product_id, quantity } => (
            "POST",
            "/api/cart".to_owned(),
            json::stringify(&AddToCart { product_id: product_id.as_str().into(), quantity: *quantity }),
        ),
        CartRequest::Set { product_id, quantity } => {
            if_match = shown.map(stamp);
            ("PUT", item_path(product_id), json::stringify(&SetQuantity { quantity: *quantity }))
        }
        CartRequest::Adjust { product_id, delta } => {
            ("PATCH", item_path(product_id), json::stringify(&AdjustQuantity { delta: *delta }))
        }
        CartRequest::Remove { product_id } => ("DELETE", item_path(product_id), None),
        CartRequest::Clear => ("DELETE", "/api/cart".to_owned(), None),
    };
    send_once(method, &path, body.as_deref(), if_match.as_deref(), unsure).await?.read()
}

/// One change over REST. No answer (or none in time), 429 and 5xx are retried with the same
/// `Idempotency-Key`, after what `Retry-After` asked for or the backoff, so a change whose answer was lost is
/// applied once, not twice. `unsure` is called when the outcome first becomes unknown (the words for the
/// shopper while the retries go on). When it is still unknown after the last retry the key is kept: the same
/// change sent again reuses it.
///
/// Not generic over the answer's type (the caller reads it), so every bundle has one copy of this loop.
async fn send_once(
    method: &str,
    path: &str,
    body: Option<&str>,
    if_match: Option<&str>,
    unsure: &dyn Fn(),
) -> Result<Answer, ApiError> {
    let fingerprint = format!("{method} {path}\n{}", body.unwrap_or_default());
    let reused = UNCONFIRMED.with(|u| u.borrow().as_ref().filter(|(f, _)| *f == fingerprint).map(|(_, k)| k.clone()));
    let key = reused.unwrap_or_else(idempotency_key);
    let mut attempt = 0;
    let mut said_unsure = false;
    let result = loop {
        let result = match call(method, path, body, Some(&key), if_match).await {
            Ok(answer) if answer.succeeded() => Ok(answer),
            Ok(answer) => Err(answer.error()),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.retryable() && attempt < MUTATION_RETRIES => {
                if e.outcome_unknown() && !said_unsure {
                    said_unsure = true;
                    unsure();
                }
                attempt += 1;
                let wait = retry_wait_ms(attempt, e.retry_after_ms, js_sys::Math::random());
                gloo_timers::future::TimeoutFuture::new(wait as u32).await;
            }
            other => break other,
        }
    };
    let unknown = result.as_ref().err().is_some_and(ApiError::outcome_unknown);
    UNCONFIRMED.with(|u| {
        let mut u = u.borrow_mut();
        if unknown {
            *u = Some((fingerprint, key));
        } else if u.as_ref().is_some_and(|(f, _)| *f == fingerprint) {
            *u = None;
        }
    });
    result
}

/// What a call got back: its status, its `Retry-After` and its parsed JSON body (`null` when there is none).
struct Answer {
    status: u16,
    retry_after_ms: Option<u64>,
    body: JsValue,
}

/// One `fetch` (through gloo-net), aborted when neither the answer nor its body is complete within the
/// request timeout. `Err` only when the server could not be reached or did not answer in time. The body is
/// parsed by the browser's own `JSON.parse` (`Response.json()`), not by a Rust JSON parser: gloo-net's `json`
/// feature would link serde_json.
async fn call(
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
    if_match: Option<&str>,
) -> Result<Answer, ApiError> {
    let network = |_| ApiError::network();
    let method = match method {
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "PATCH" => Method::PATCH,
        _ => Method::GET,
    };
    let abort = AbortController::new().map_err(|_| ApiError::network())?;
    let signal = abort.signal();
    let _deadline = {
        let abort = abort.clone();
        Timeout::new(REQUEST_TIMEOUT_MS.with(Cell::get), move || abort.abort())
    };
    let failed = |_| if signal.aborted() { ApiError::timed_out() } else { ApiError::network() };
    let mut request = RequestBuilder::new(path).method(method).abort_signal(Some(&signal));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if let Some(stamp) = if_match {
        request = request.header("if-match", stamp);
    }
    let request = match body {
        Some(body) => request.header("content-type", "application/json").body(body).map_err(network)?,
        None => request.build().map_err(network)?,
    };
    let response = request.send().await.map_err(failed)?;
    let status = response.status();
    let retry_after_ms = response.headers().get("retry-after").as_deref().and_then(parse_retry_after);
    let raw: web_sys::Response = response.into();
    let body = match raw.json() {
        Ok(promise) => match JsFuture::from(promise).await {
            Ok(body) => body,
            // Cut off while the body was arriving: as good as no answer.
            Err(_) if signal.aborted() => return Err(ApiError::timed_out()),
            Err(_) => JsValue::NULL,
        },
        Err(_) => JsValue::NULL,
    };
    Ok(Answer { status, retry_after_ms, body })
}

fn item_path(product_id: &str) -> String {
    let encoded: String = js_sys::encode_uri_component(product_id).into();
    format!("/api/cart/items/{encoded}")
}

impl Answer {
    fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as `T` for a 2xx, else the error it carries.
    fn read<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        if !self.succeeded() {
            return Err(self.error());
        }
        let Answer { status, retry_after_ms, body } = self;
        json::from_js::<T>(body).ok_or_else(|| ApiError {
            status: Some(status),
            code: ErrorCode::Internal,
            message: "The shop sent an answer this page does not understand. Reload the page.".to_owned(),
            cart: None,
            retry_after_ms,
        })
    }

    /// The error a non-2xx answer carries (or one in words for a body that is not ours).
    fn error(self) -> ApiError {
        let Answer { status, retry_after_ms, body } = self;
        match json::from_js::<ErrorBody>(body) {
            Some(body) => ApiError {
                status: Some(status),
                code: body.error.code,
                message: body.error.message,
                cart: body.error.cart.map(Box::new),
                retry_after_ms,
            },
            None => ApiError {
                status: Some(status),
                code: if status >= 500 { ErrorCode::ServiceUnavailable } else { ErrorCode::Unknown },
                message: format!("The shop answered with an error ({status}). Please try again."),
                cart: None,
                retry_after_ms,
            },
        }
    }
}

/// 128 random bits, hex: unique per change, the same for every retry of it. `crypto.getRandomValues` works on
/// plain-http origins too, where `crypto.randomUUID` does not exist.
fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    let filled = web_sys::window()
        .and_then(|w| w.crypto().ok())
        .is_some_and(|c| c.get_random_values_with_u8_array(&mut bytes).is_ok());
    if !filled {
        for b in &mut bytes {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [HEX[usize::from(b >> 4)] as char, HEX[usize::from(b & 15)] as char]).collect()
}
