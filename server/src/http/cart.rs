//! The shopper's cart over REST: read it, change it, check it out, and the session's public id. Each change
//! goes through [`Shop`], which commits it and announces the new version to every open tab.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cartwheel_core::protocol::{AddToCart, SessionInfo, SetQuantity};
use cartwheel_core::{Cart, CartOp, CheckoutReceipt, ProductId};

use super::error::AppError;
use super::extract::{ApiJson, IdempotencyHeader, IDEMPOTENT_REPLAYED};
use super::guards::session::Session;
use super::state::AppState;
use crate::shop::Shop;
use crate::store::{Checkout, Mutation};

/// `/cart…` and `/session`, relative to `/api`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/session", get(session_info))
        .route("/cart", get(get_cart).post(add_item).delete(clear_cart))
        .route("/cart/items/{product_id}", put(set_item).delete(remove_item))
        .route("/cart/checkout", post(checkout))
}

async fn get_cart(State(shop): State<Shop>, session: Session) -> Result<Json<Cart>, AppError> {
    Ok(Json(shop.cart(&session.cart).await?))
}

async fn add_item(
    State(shop): State<Shop>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    ApiJson(body): ApiJson<AddToCart>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Add { product_id: body.product_id, quantity: body.quantity };
    Ok(CartAnswer(shop.mutate(&session.cart, op, key).await?))
}

async fn set_item(
    State(shop): State<Shop>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    Path(product_id): Path<String>,
    ApiJson(body): ApiJson<SetQuantity>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Set { product_id: ProductId(product_id), quantity: body.quantity };
    Ok(CartAnswer(shop.mutate(&session.cart, op, key).await?))
}

async fn remove_item(
    State(shop): State<Shop>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
    Path(product_id): Path<String>,
) -> Result<CartAnswer, AppError> {
    let op = CartOp::Remove { product_id: ProductId(product_id) };
    Ok(CartAnswer(shop.mutate(&session.cart, op, key).await?))
}

async fn clear_cart(
    State(shop): State<Shop>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
) -> Result<CartAnswer, AppError> {
    Ok(CartAnswer(shop.mutate(&session.cart, CartOp::Clear, key).await?))
}

/// The session's public id, which services use to address a notice to it.
async fn session_info(session: Session) -> Json<SessionInfo> {
    Json(SessionInfo { session: session.cart.as_str().to_owned() })
}

async fn checkout(
    State(shop): State<Shop>,
    session: Session,
    IdempotencyHeader(key): IdempotencyHeader,
) -> Result<CheckoutAnswer, AppError> {
    Ok(CheckoutAnswer(shop.checkout(&session.cart, key).await?))
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
