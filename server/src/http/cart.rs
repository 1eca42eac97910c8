//! The shopper's cart over REST: read it, change it, check it out, and the session's public id. Each change
//! goes through [`Shop`], which commits it and announces the new version to every open tab.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cartwheel_core::protocol::{AddToCart, AdjustQuantity, CheckoutRequest as CheckoutBody, SessionInfo, SetQuantity};
use cartwheel_core::version::Stamp;
use cartwheel_core::{Cart, CartOp, CheckoutReceipt, ProductId};

use super::error::AppError;
use super::extract::{ApiJson, IdempotencyHeader, IfMatch, OptionalJson, IDEMPOTENT_REPLAYED};
use super::guards::session::Session;
use super::state::AppState;
use crate::shop::Shop;
use crate::store::{Checkout, CheckoutRequest, Mutation, MutationRequest};

/// `/cart…` and `/session`, relative to `/api`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/session", get(session_info))
        .route("/cart", get(get_cart).post(add_item).delete(clear_cart))
        .route("/cart/items/{product_id}", put(set_item).patch(adjust_item).delete(remove_item))
        .route("/cart/checkout", post(checkout))
}

async fn get_cart(State(shop): State<Shop>, session: Session) -> Result<CartAnswer, AppError> {
    let cart = shop.cart(&session.cart).await?;
    Ok(CartAnswer { cart, replayed: false })
}

/// One change of the session's cart through the shop.
async fn change(
    shop: &Shop,
    session: &Session,
    op: CartOp,
    IdempotencyHeader(idempotency_key): IdempotencyHeader,
    IfMatch(expected): IfMatch,
) -> Result<CartAnswer, AppError> {
    let request = MutationRequest { cart: session.cart.clone(), op, idempotency_key, expected };
    Ok(CartAnswer::from(shop.mutate(request).await?))
}

async fn add_item(
    State(shop): State<Shop>,
    session: Session,
    key: IdempotencyHeader,
    expected: IfMatch,
    ApiJson(body): ApiJson<AddToCart>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Add { product_id: body.product_id, quantity: body.quantity };
    change(&shop, &session, op, key, expected).await
}

async fn set_item(
    State(shop): State<Shop>,
    session: Session,
    key: IdempotencyHeader,
    expected: IfMatch,
    Path(product_id): Path<String>,
    ApiJson(body): ApiJson<SetQuantity>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Set { product_id: ProductId(product_id), quantity: body.quantity };
    change(&shop, &session, op, key, expected).await
}

/// `PATCH {"delta": ±n}`: relative, so two tabs' "+" both count.
async fn adjust_item(
    State(shop): State<Shop>,
    session: Session,
    key: IdempotencyHeader,
    expected: IfMatch,
    Path(product_id): Path<String>,
    ApiJson(body): ApiJson<AdjustQuantity>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Adjust { product_id: ProductId(product_id), delta: body.delta };
    change(&shop, &session, op, key, expected).await
}

async fn remove_item(
    State(shop): State<Shop>,
    session: Session,
    key: IdempotencyHeader,
    expected: IfMatch,
    Path(product_id): Path<String>,
) -> Result<CartAnswer, AppError> {
    change(&shop, &session, CartOp::Remove { product_id: ProductId(product_id) }, key, expected).await
}

async fn clear_cart(
    State(shop): State<Shop>,
    session: Session,
    key: IdempotencyHeader,
    expected: IfMatch,
) -> Result<CartAnswer, AppError> {
    change(&shop, &session, CartOp::Clear, key, expected).await
}

/// The session's public id, which services use to address a notice to it.
async fn session_info(session: Session) -> Json<SessionInfo> {
    Json(SessionInfo { session: session.cart.as_str().to_owned() })
}

async fn checkout(
    State(shop): State<Shop>,
    session: Session,
    IdempotencyHeader(idempotency_key): IdempotencyHeader,
    IfMatch(expected): IfMatch,
    OptionalJson(body): OptionalJson<CheckoutBody>,
) -> Result<CheckoutAnswer, AppError> {
    let request = CheckoutRequest {
        cart: session.cart.clone(),
        idempotency_key,
        expected,
        expected_total: body.expected_total_cents,
    };
    Ok(CheckoutAnswer(shop.checkout(request).await?))
}

/// A cart answer: the cart with its `ETag` (`"<epoch>.<version>"`, what `If-Match` names), marked when it
/// repeats an earlier answer.
pub struct CartAnswer {
    cart: Cart,
    replayed: bool,
}

impl From<Mutation> for CartAnswer {
    fn from(m: Mutation) -> Self {
        CartAnswer { cart: m.cart, replayed: m.replayed }
    }
}

impl IntoResponse for CartAnswer {
    fn into_response(self) -> Response {
        let etag = HeaderValue::from_str(&Stamp::of(&self.cart).to_header()).ok();
        let mut response = Json(self.cart).into_response();
        if let Some(etag) = etag {
            response.headers_mut().insert(header::ETAG, etag);
        }
        if self.replayed {
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
