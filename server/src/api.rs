//! The REST API: products, the session's cart, and its mutations. Handlers are thin — extract, call
//! [`AppState`], answer — and every failure is an [`AppError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use shared::protocol::{AddToCart, SessionInfo, SetQuantity};
use shared::{Cart, CartOp, CheckoutReceipt, Product, ProductId};

use crate::app::AppState;
use crate::config::defaults;
use crate::error::AppError;
use crate::session::Session;
use crate::store::{Checkout, Mutation};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer that repeats the first answer to the same Idempotency-Key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub async fn list_products(State(app): State<AppState>) -> Json<Vec<Product>> {
    Json(app.store.catalog().products().to_vec())
}

pub async fn get_product(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Product>, AppError> {
    app.store
        .catalog()
        .get(&ProductId(id.clone()))
        .cloned()
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("no product '{id}'")))
}

pub async fn get_cart(State(app): State<AppState>, session: Session) -> Result<Json<Cart>, AppError> {
    Ok(Json(app.store.load(&session.cart).await?))
}

pub async fn add_item(
    State(app): State<AppState>,
    session: Session,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<AddToCart>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Add { product_id: body.product_id, quantity: body.quantity };
    app.mutate(&session, op, key).await.map(CartAnswer)
}

pub async fn set_item(
    State(app): State<AppState>,
    session: Session,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
    ApiJson(body): ApiJson<SetQuantity>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Set { product_id: ProductId(product_id), quantity: body.quantity };
    app.mutate(&session, op, key).await.map(CartAnswer)
}

pub async fn remove_item(
    State(app): State<AppState>,
    session: Session,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Remove { product_id: ProductId(product_id) };
    app.mutate(&session, op, key).await.map(CartAnswer)
}

pub async fn clear_cart(
    State(app): State<AppState>,
    session: Session,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<CartAnswer, AppError> {
    app.mutate(&session, CartOp::Clear, key).await.map(CartAnswer)
}

/// The session's public id, which services use to address a notice to it.
pub async fn session_info(session: Session) -> Json<SessionInfo> {
    Json(SessionInfo { session: session.cart.0 })
}

pub async fn checkout(
    State(app): State<AppState>,
    session: Session,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<CheckoutAnswer, AppError> {
    app.checkout(&session, key).await.map(CheckoutAnswer)
}

pub async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint".into())
}

pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// A mutation's answer: the cart, marked when it repeats an earlier answer.
pub struct CartAnswer(Mutation);

impl IntoResponse for CartAnswer {
    fn into_response(self) -> Response {
        let replayed = self.0.replayed;
        let mut response = Json(self.0.cart).into_response();
        if replayed {
            response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

/// A checkout's answer: 201 with the order and the emptied cart, marked when it repeats an earlier answer.
pub struct CheckoutAnswer(Checkout);

impl IntoResponse for CheckoutAnswer {
    fn into_response(self) -> Response {
        let Checkout { receipt, replayed, .. } = self.0;
        let mut response = (StatusCode::CREATED, Json::<CheckoutReceipt>(receipt)).into_response();
        if replayed {
            response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

/// The optional `Idempotency-Key` header: 1..=255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyKey(None));
        };
        let max = defaults::IDEMPOTENCY_KEY_MAX_LEN;
        let bad =
            || AppError::InvalidIdempotencyKey(format!("Idempotency-Key must be 1 to {max} visible ASCII characters"));
        let key = value.to_str().map_err(|_| bad())?;
        if key.is_empty() || key.len() > max || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// A JSON body whose every failure is a typed [`AppError`]: 415 without a JSON content type, 413 over the size
/// limit, 400 for malformed JSON, missing fields or wrong types.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(AppError::UnsupportedMediaType);
        }
        let limit = request.extensions().get::<BodyLimit>().map_or(defaults::MAX_BODY_BYTES, |l| l.0);
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge { limit }
            } else {
                AppError::InvalidJson(format!("could not read the body: {rejection}"))
            }
        })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => "the JSON does not have the expected fields and types",
                _ => "the body is not valid JSON",
            };
            AppError::InvalidJson(format!("{what}: {e}"))
        })
    }
}

/// The configured body limit, attached to requests so error messages can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);
