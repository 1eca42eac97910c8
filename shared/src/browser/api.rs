//! REST calls to the cart API, with the error shown to people when they fail.

use crate::cart::Cart;
use crate::link::MUTATION_RETRIES;
use crate::protocol::{AddToCart, ErrorBody, ErrorCode, SetQuantity};
use crate::reconnect::ReconnectPolicy;
use gloo_net::http::{Request, RequestBuilder, Response};

/// A change to the session's cart, as the REST API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartRequest {
    Add { product_id: String, quantity: i64 },
    Set { product_id: String, quantity: i64 },
    Remove { product_id: String },
    Clear,
}

/// Why a call failed, in words fit for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, or `None` when the server could not be reached.
    pub status: Option<u16>,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    fn network() -> ApiError {
        ApiError {
            status: None,
            code: ErrorCode::ServiceUnavailable,
            message: "The shop cannot be reached. Check your connection and try again.".to_owned(),
        }
    }

    fn retryable(&self) -> bool {
        matches!(self.status, None | Some(429 | 502 | 503 | 504))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `GET /api/cart`.
pub async fn fetch_cart() -> Result<Cart, ApiError> {
    let response = Request::get("/api/cart").send().await.map_err(|_| ApiError::network())?;
    read_cart(response).await
}

/// Apply a change over REST. Network failures, 429 and 5xx are retried with the same `Idempotency-Key`, so a
/// change whose answer was lost is applied once, not twice.
pub async fn send(request: &CartRequest) -> Result<Cart, ApiError> {
    let key = idempotency_key();
    let policy = ReconnectPolicy::default();
    let mut attempt = 0;
    loop {
        let result = match build(request, &key) {
            Ok(r) => match r.send().await {
                Ok(response) => read_cart(response).await,
                Err(_) => Err(ApiError::network()),
            },
            Err(e) => return Err(e),
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

fn build(request: &CartRequest, key: &str) -> Result<Request, ApiError> {
    let with_key = |b: RequestBuilder| b.header("Idempotency-Key", key);
    let built = match request {
        CartRequest::Add { product_id, quantity } => with_key(Request::post("/api/cart"))
            .json(&AddToCart { product_id: product_id.as_str().into(), quantity: *quantity }),
        CartRequest::Set { product_id, quantity } => {
            with_key(Request::put(&item_path(product_id))).json(&SetQuantity { quantity: *quantity })
        }
        CartRequest::Remove { product_id } => with_key(Request::delete(&item_path(product_id))).build(),
        CartRequest::Clear => with_key(Request::delete("/api/cart")).build(),
    };
    built.map_err(|e| ApiError { status: None, code: ErrorCode::Internal, message: e.to_string() })
}

fn item_path(product_id: &str) -> String {
    let encoded: String = js_sys::encode_uri_component(product_id).into();
    format!("/api/cart/items/{encoded}")
}

async fn read_cart(response: Response) -> Result<Cart, ApiError> {
    let status = response.status();
    if (200..300).contains(&status) {
        return response.json::<Cart>().await.map_err(|_| ApiError {
            status: Some(status),
            code: ErrorCode::Internal,
            message: "The shop sent an answer this page does not understand. Reload the page.".to_owned(),
        });
    }
    match response.json::<ErrorBody>().await {
        Ok(body) => Err(ApiError { status: Some(status), code: body.error.code, message: body.error.message }),
        Err(_) => Err(ApiError {
            status: Some(status),
            code: if status >= 500 { ErrorCode::ServiceUnavailable } else { ErrorCode::Unknown },
            message: format!("The shop answered with an error ({status}). Please try again."),
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
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
