//! REST calls to the cart API with the browser's `fetch`; their failures are [`ApiError`]s (defined in `cartwheel-core`).

use gloo_net::http::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

pub use cartwheel_core::api::{ApiError, CartRequest};
use cartwheel_core::cart::Cart;
use cartwheel_core::catalog::Product;
use cartwheel_core::link::MUTATION_RETRIES;
use cartwheel_core::order::CheckoutReceipt;
use cartwheel_core::protocol::{AddToCart, AdjustQuantity, CheckoutRequest, ErrorBody, ErrorCode, SetQuantity};
use cartwheel_core::reconnect::ReconnectPolicy;
use cartwheel_core::version::Stamp;

use crate::json;

/// `GET /api/cart`.
pub async fn fetch_cart() -> Result<Cart, ApiError> {
    let (status, body) = call("GET", "/api/cart", None, None, None).await?;
    read(status, body)
}

/// `GET /api/products`.
pub async fn fetch_products() -> Result<Vec<Product>, ApiError> {
    let (status, body) = call("GET", "/api/products", None, None, None).await?;
    read(status, body)
}

/// `POST /api/cart/checkout` of the cart shown (`shown`: its `If-Match` stamp and total), retried like a cart
/// change: a lost answer never buys twice, and a cart that changed or got dearer is not bought.
pub async fn checkout(shown: Option<&Cart>) -> Result<CheckoutReceipt, ApiError> {
    let body = shown.and_then(|c| json::stringify(&CheckoutRequest { expected_total_cents: Some(c.total_cents) }));
    send_once("POST", "/api/cart/checkout", body.as_deref(), shown.map(stamp).as_deref()).await
}

/// The `If-Match` value naming `cart`.
fn stamp(cart: &Cart) -> String {
    Stamp::of(cart).to_header()
}

/// Apply a change over REST (see [`send_once`]). A `Set` names the cart it was decided on (`shown`), so it
/// cannot undo a change this tab has not seen (`412`).
pub async fn send(request: &CartRequest, shown: Option<&Cart>) -> Result<Cart, ApiError> {
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
    send_once(method, &path, body.as_deref(), if_match.as_deref()).await
}

/// One change over REST. Network failures, 429 and 5xx are retried with the same `Idempotency-Key`, so a
/// change whose answer was lost is applied once, not twice.
async fn send_once<T: DeserializeOwned>(
    method: &str,
    path: &str,
    body: Option<&str>,
    if_match: Option<&str>,
) -> Result<T, ApiError> {
    let key = idempotency_key();
    let policy = ReconnectPolicy::default();
    let mut attempt = 0;
    loop {
        let result = match call(method, path, body, Some(&key), if_match).await {
            Ok((status, body)) => read(status, body),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.retryable() && attempt < MUTATION_RETRIES => {
                attempt += 1;
                let ceiling = policy.ceiling(attempt).as_millis() as f64;
                let wait = (ceiling * (0.5 + js_sys::Math::random() / 2.0)) as u32;
                gloo_timers::future::TimeoutFuture::new(wait).await;
            }
            other => return other,
        }
    }
}

/// One `fetch` (through gloo-net): the status and the parsed JSON body (`null` when there is none). `Err` only
/// when the server could not be reached. The body is parsed by the browser's own `JSON.parse`
/// (`Response.json()`), not by a Rust JSON parser: gloo-net's `json` feature would link serde_json.
async fn call(
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
    if_match: Option<&str>,
) -> Result<(u16, JsValue), ApiError> {
    let network = |_| ApiError::network();
    let method = match method {
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "PATCH" => Method::PATCH,
        _ => Method::GET,
    };
    let mut request = RequestBuilder::new(path).method(method);
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
    let response = request.send().await.map_err(network)?;
    let status = response.status();
    let raw: web_sys::Response = response.into();
    let json = match raw.json() {
        Ok(promise) => JsFuture::from(promise).await.unwrap_or(JsValue::NULL),
        Err(_) => JsValue::NULL,
    };
    Ok((status, json))
}

fn item_path(product_id: &str) -> String {
    let encoded: String = js_sys::encode_uri_component(product_id).into();
    format!("/api/cart/items/{encoded}")
}

fn read<T: DeserializeOwned>(status: u16, body: JsValue) -> Result<T, ApiError> {
    if (200..300).contains(&status) {
        return json::from_js::<T>(body).ok_or_else(|| ApiError {
            status: Some(status),
            code: ErrorCode::Internal,
            message: "The shop sent an answer this page does not understand. Reload the page.".to_owned(),
            cart: None,
        });
    }
    match json::from_js::<ErrorBody>(body) {
        Some(body) => Err(ApiError {
            status: Some(status),
            code: body.error.code,
            message: body.error.message,
            cart: body.error.cart.map(Box::new),
        }),
        None => Err(ApiError {
            status: Some(status),
            code: if status >= 500 { ErrorCode::ServiceUnavailable } else { ErrorCode::Unknown },
            message: format!("The shop answered with an error ({status}). Please try again."),
            cart: None,
        }),
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
