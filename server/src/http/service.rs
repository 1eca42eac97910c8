//! The service API: how other backend services reach shoppers. A service never opens sockets to browsers; it
//! calls these endpoints and the server forwards the result to the right connections.
//!
//! - `PATCH /api/service/products/{id}` changes stock and/or price; every connection gets `PRODUCT_UPDATE`.
//! - `POST /api/service/notify` sends a `NOTICE` to one session's connections or to every connection.
//!
//! Callers authenticate with `Authorization: Bearer <token>`, one of the tokens configured with
//! `--service-token`. Tokens are compared as SHA-256 digests in constant time, against every configured token,
//! so neither the answer's timing nor its content tells how close a guess was. With no token configured the
//! API does not exist (404). Each token has its own rate limit.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};
use cartwheel_core::protocol::NoticeRequest;
use cartwheel_core::{Cents, Product, ProductId, ProductPatch};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{self, AppError};
use super::extract::ApiJson;
use crate::config::defaults;
use crate::domain::CartKey;
use crate::metrics::Metrics;
use crate::shop::Shop;
use crate::store::ProductUpdate;
use crate::throttle::{KeyedLimiter, Rate};

/// `/products/{id}` and `/notify`, relative to `/api/service`.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Shop: FromRef<S>,
    ServiceGate: FromRef<S>,
{
    Router::new()
        .route("/products/{id}", patch(update_product))
        .route("/notify", post(notify))
        .method_not_allowed_fallback(error::method_not_allowed)
}

/// The configured service tokens (as digests) and their rate limits.
pub struct ServiceAccess {
    digests: Vec<[u8; 32]>,
    limits: Option<KeyedLimiter<usize>>,
}

impl ServiceAccess {
    /// `None` when no token is configured: the service API is off. `rate` `None`: no rate limit.
    pub fn new(tokens: &[String], rate: Option<Rate>) -> Option<ServiceAccess> {
        if tokens.is_empty() {
            return None;
        }
        let digests = tokens.iter().map(|t| digest(t.as_bytes())).collect();
        Some(ServiceAccess { digests, limits: rate.map(KeyedLimiter::new) })
    }

    /// Which configured token `presented` is. Every token is compared, each in constant time.
    fn authenticate(&self, presented: &[u8]) -> Option<usize> {
        let presented = digest(presented);
        let mut found = None;
        for (i, known) in self.digests.iter().enumerate() {
            let difference = known.iter().zip(&presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(difference) == 0 {
                found = Some(i);
            }
        }
        found
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Extractor: a request with a valid service token, within that token's rate.
pub struct ServiceCaller;

/// What the [`ServiceCaller`] check needs: the configured tokens (`None`: the API is off) and the metrics it
/// counts refusals in.
#[derive(Clone)]
pub struct ServiceGate {
    pub access: Option<Arc<ServiceAccess>>,
    pub metrics: Arc<Metrics>,
}

impl<S: Send + Sync> FromRequestParts<S> for ServiceCaller
where
    ServiceGate: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let gate = ServiceGate::from_ref(state);
        let Some(access) = gate.access.as_deref() else {
            return Err(AppError::NotFound("the service API is off: start the server with --service-token".into()));
        };
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(index) = token.and_then(|t| access.authenticate(t.as_bytes())) else {
            gate.metrics.service_requests.get_or_create(&vec![("outcome", "unauthorized")]).inc();
            return Err(AppError::ServiceUnauthorized);
        };
        if let Some(limits) = &access.limits {
            if let Err(retry_after) = limits.check(&index, Instant::now()) {
                gate.metrics.rate_limited.inc();
                return Err(AppError::RateLimited { retry_after });
            }
        }
        Ok(ServiceCaller)
    }
}

/// The patch as a valid [`ProductUpdate`], or why it is not one.
pub fn validate(id: ProductId, patch: &ProductPatch) -> Result<ProductUpdate, AppError> {
    if patch.stock.is_none() && patch.price_cents.is_none() {
        return Err(AppError::InvalidField("give \"stock\" and/or \"price_cents\"".into()));
    }
    let max_stock = defaults::MAX_STOCK;
    let stock = patch
        .stock
        .map(|s| {
            u32::try_from(s)
                .ok()
                .filter(|s| *s <= max_stock)
                .ok_or_else(|| AppError::InvalidField(format!("stock must be 0 to {max_stock}, got {s}")))
        })
        .transpose()?;
    let max_price = defaults::MAX_PRICE_CENTS;
    let price_cents = patch
        .price_cents
        .map(|p| {
            u64::try_from(p)
                .ok()
                .filter(|p| (1..=max_price).contains(p))
                .map(Cents)
                .ok_or_else(|| AppError::InvalidField(format!("price_cents must be 1 to {max_price}, got {p}")))
        })
        .transpose()?;
    Ok(ProductUpdate { id, stock, price_cents })
}

/// `PATCH /api/service/products/{id}`: the product as it is now.
async fn update_product(
    State(shop): State<Shop>,
    State(gate): State<ServiceGate>,
    _: ServiceCaller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ProductPatch>,
) -> Result<Json<Product>, AppError> {
    let update = validate(ProductId(id), &patch)?;
    let result = shop.update_product(update).await.map_err(AppError::from);
    let outcome = if result.is_ok() { "product_updated" } else { "product_refused" };
    gate.metrics.service_requests.get_or_create(&vec![("outcome", outcome)]).inc();
    result.map(Json)
}

/// Answer of `POST /api/service/notify`.
#[derive(Debug, Serialize)]
pub struct Delivered {
    /// Connections of this server instance the notice was handed to.
    pub connections: usize,
}

/// `POST /api/service/notify`: 202 with how many connections it reached here.
async fn notify(
    State(shop): State<Shop>,
    State(gate): State<ServiceGate>,
    _: ServiceCaller,
    ApiJson(request): ApiJson<NoticeRequest>,
) -> Result<(StatusCode, Json<Delivered>), AppError> {
    if let Some(problem) = request.notice.problem() {
        return Err(AppError::InvalidField(problem));
    }
    let session = request.session.as_deref().map(CartKey::parse).transpose()?;
    let connections = shop.notify(session.as_ref(), &request.notice).await?;
    gate.metrics.service_requests.get_or_create(&vec![("outcome", "notice_sent")]).inc();
    Ok((StatusCode::ACCEPTED, Json(Delivered { connections })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_token_and_nothing_else_authenticates() {
        let tokens = vec!["first-token-0123456789".to_owned(), "second-token-0123456789".to_owned()];
        let access = ServiceAccess::new(&tokens, None).unwrap();
        assert_eq!(access.authenticate(tokens[0].as_bytes()), Some(0));
        assert_eq!(access.authenticate(tokens[1].as_bytes()), Some(1));
        assert_eq!(access.authenticate(b"first-token-012345678"), None, "a prefix");
        assert_eq!(access.authenticate(b""), None);
        assert!(ServiceAccess::new(&[], None).is_none(), "no tokens: no API");
    }

    #[test]
    fn patch_limits_are_inclusive() {
        let id = || ProductId::from("mug");
        let patch = |stock: Option<i64>, price: Option<i64>| ProductPatch { stock, price_cents: price };
        let max_stock = i64::from(defaults::MAX_STOCK);
        let max_price = i64::try_from(defaults::MAX_PRICE_CENTS).unwrap();
        assert!(validate(id(), &patch(Some(0), None)).is_ok());
        assert!(validate(id(), &patch(Some(max_stock), Some(max_price))).is_ok());
        assert!(validate(id(), &patch(Some(1), Some(1))).is_ok());
        for bad in [patch(Some(-1), None), patch(Some(max_stock + 1), None), patch(None, Some(0))] {
            assert!(matches!(validate(id(), &bad), Err(AppError::InvalidField(_))), "{bad:?}");
        }
        for bad in [patch(None, Some(-5)), patch(None, Some(max_price + 1)), patch(None, None)] {
            assert!(matches!(validate(id(), &bad), Err(AppError::InvalidField(_))), "{bad:?}");
        }
    }
}
