//! The catalog over REST, with the stock and prices as committed now.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use cartwheel_core::{Product, ProductId};

use super::error::AppError;
use super::state::AppState;
use crate::shop::Shop;

/// `/products…`, relative to `/api`.
pub fn router() -> Router<AppState> {
    Router::new().route("/products", get(list_products)).route("/products/{id}", get(get_product))
}

async fn list_products(State(shop): State<Shop>) -> Json<Vec<Product>> {
    Json(shop.catalog().products().to_vec())
}

async fn get_product(State(shop): State<Shop>, Path(id): Path<String>) -> Result<Json<Product>, AppError> {
    shop.catalog()
        .get(&ProductId(id.clone()))
        .cloned()
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("no product '{id}'")))
}
