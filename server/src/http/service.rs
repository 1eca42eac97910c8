//! The service API: how other backend services reach shoppers. A service never opens sockets to browsers; it
//! calls these endpoints and the server forwards the result to the right connections.
//!
//! - `PATCH /api/service/products/{id}` changes stock and/or price; every connection gets `PRODUCT_UPDATE`.
//! - `POST /api/service/notify` sends a `NOTICE` to one session's connections or to every connection.
//!
//! Callers authenticate with `Authorization: Bearer <token>` (the scheme in any case), one of the tokens
//! configured with `--service-token`. Tokens are compared as SHA-256 digests in constant time, against every
//! configured token, so neither the answer's timing nor its content tells how close a guess was. With no token
//! configured the API does not exist (404). Each token has its own rate limit, a name and scopes: `stock` and
//! `price` for the two halves of a product change, `notify` for notices; a call outside them is 403
//! `insufficient_scope`. Every change is logged and counted with the token's name (never the token). Failed
//! attempts are rate limited per client address, so tokens cannot be guessed at the speed of the network.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};
use cartwheel_core::protocol::{NoticePosted, NoticeRequest};
use cartwheel_core::{Cents, Product, ProductId, ProductPatch};

use sha2::{Digest, Sha256};

use super::client::Client;
use super::error::{self, AppError};
use super::extract::ApiJson;
use crate::config::{defaults, Scopes, ServiceTokenSpec};
use crate::domain::CartKey;
use crate::metrics::Metrics;
use crate::realtime::quota::address_bucket;
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

/// The configured service tokens (as digests, with their names and scopes) and the rate limits.
pub struct ServiceAccess {
    tokens: Vec<KnownToken>,
    limits: Option<KeyedLimiter<usize>>,
    /// Failed attempts per client address (IPv6 by /64).
    failures: Option<KeyedLimiter<IpAddr>>,
}

struct KnownToken {
    digest: [u8; 32],
    /// Fixed for the process (one per configured token), so it can label metrics.
    name: &'static str,
    scopes: Scopes,
}

impl ServiceAccess {
    /// `None` when no token is configured: the service API is off. `rate` `None`: no rate limits.
    pub fn new(tokens: &[ServiceTokenSpec], rate: Option<Rate>) -> Option<ServiceAccess> {
        if tokens.is_empty() {
            return None;
        }
        let tokens = tokens
            .iter()
            .map(|t| KnownToken {
                digest: digest(t.token.as_bytes()),
                name: Box::leak(t.name.clone().into_boxed_str()),
                scopes: t.scopes,
            })
            .collect();
        let failures =
            Rate { per_sec: defaults::SERVICE_AUTH_FAILURES_PER_SEC, burst: defaults::SERVICE_AUTH_FAILURE_BURST };
        Some(ServiceAccess {
            tokens,
            limits: rate.map(KeyedLimiter::new),
            failures: rate.map(|_| KeyedLimiter::new(failures)),
        })
    }

    /// Which configured token `presented` is. Every token is compared, each in constant time.
    fn authenticate(&self, presented: &[u8]) -> Option<usize> {
        let presented = digest(presented);
        let mut found = None;
        for (i, known) in self.tokens.iter().enumerate() {
            let difference = known.digest.iter().zip(&presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
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

/// Extractor: a request with a valid service token, within that token's rate: who is calling and what it may do.
pub struct ServiceCaller {
    pub name: &'static str,
    pub scopes: Scopes,
}

impl ServiceCaller {
    /// `Err(403 insufficient_scope)` unless the token has `scope`.
    pub fn require(&self, has: bool, scope: &'static str) -> Result<(), AppError> {
        if has {
            Ok(())
        } else {
            tracing::info!(token = self.name, scope, "service call outside its token's scopes");
            Err(AppError::InsufficientScope(scope))
        }
    }
}

/// What the [`ServiceCaller`] check needs: the configured tokens (`None`: the API is off) and the metrics it
/// counts refusals in.
#[derive(Clone)]
pub struct ServiceGate {
    pub access: Option<Arc<ServiceAccess>>,
    pub metrics: Arc<Metrics>,
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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
        let token = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        let Some(index) = token.and_then(|t| access.authenticate(t.as_bytes())) else {
            gate.metrics.service_requests.get_or_create(&vec![("outcome", "unauthorized")]).inc();
            // Guessing is limited per client address: past the budget, 429 instead of another 401.
            if let (Some(failures), Some(client)) = (&access.failures, parts.extensions.get::<Client>()) {
                if let Err(retry_after) = failures.check(&address_bucket(client.address), Instant::now()) {
                    gate.metrics.rate_limited.inc();
                    return Err(AppError::RateLimited { retry_after });
                }
            }
            return Err(AppError::ServiceUnauthorized);
        };
        if let Some(limits) = &access.limits {
            if let Err(retry_after) = limits.check(&index, Instant::now()) {
                gate.metrics.rate_limited.inc();
                return Err(AppError::RateLimited { retry_after });
            }
        }
        let known = &access.tokens[index];
        Ok(ServiceCaller { name: known.name, scopes: known.scopes })
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
    caller: ServiceCaller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ProductPatch>,
) -> Result<Json<Product>, AppError> {
    if patch.stock.is_some() {
        caller.require(caller.scopes.stock, "stock")?;
    }
    if patch.price_cents.is_some() {
        caller.require(caller.scopes.price, "price")?;
    }
    let update = validate(ProductId(id.clone()), &patch)?;
    let result = shop.update_product(update).await.map_err(AppError::from);
    let outcome = if result.is_ok() { "product_updated" } else { "product_refused" };
    gate.metrics.service_requests.get_or_create(&vec![("outcome", outcome)]).inc();
    if result.is_ok() {
        gate.metrics.service_changes.get_or_create(&vec![("token", caller.name), ("kind", "product")]).inc();
        tracing::info!(token = caller.name, product = %id, stock = ?patch.stock, price_cents = ?patch.price_cents, "service changed a product");
    }
    result.map(Json)
}

/// `POST /api/service/notify`: stored, then handed to the connections open now; 202 with its id and seq and
/// how many connections had it at once (the others get it when they connect).
async fn notify(
    State(shop): State<Shop>,
    State(gate): State<ServiceGate>,
    caller: ServiceCaller,
    ApiJson(request): ApiJson<NoticeRequest>,
) -> Result<(StatusCode, Json<NoticePosted>), AppError> {
    caller.require(caller.scopes.notify, "notify")?;
    if let Some(problem) = request.notice.problem() {
        return Err(AppError::InvalidField(problem));
    }
    let session = request.session.as_deref().map(CartKey::parse).transpose()?;
    let (posted, connections) = shop.notify(session.as_ref(), &request.notice).await?;
    gate.metrics.service_requests.get_or_create(&vec![("outcome", "notice_sent")]).inc();
    gate.metrics.service_changes.get_or_create(&vec![("token", caller.name), ("kind", "notice")]).inc();
    let to = if session.is_some() { "one session" } else { "everyone" };
    tracing::info!(token = caller.name, to, kind = %request.notice.kind, id = posted.id, connections, "service sent a notice");
    Ok((StatusCode::ACCEPTED, Json(NoticePosted { id: posted.id, seq: posted.seq, delivered_now: connections })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_token_and_nothing_else_authenticates() {
        let specs = crate::config::service_token_specs(&[
            "first-token-0123456789".to_owned(),
            "pricing:price:second-token-0123456789".to_owned(),
        ])
        .unwrap();
        let access = ServiceAccess::new(&specs, None).unwrap();
        assert_eq!(access.authenticate(b"first-token-0123456789"), Some(0));
        assert_eq!(access.authenticate(b"second-token-0123456789"), Some(1));
        assert_eq!(access.authenticate(b"pricing:price:second-token-0123456789"), None, "the spec is not the token");
        assert_eq!(access.authenticate(b"first-token-012345678"), None, "a prefix");
        assert_eq!(access.authenticate(b""), None);
        assert_eq!((access.tokens[0].name, access.tokens[0].scopes), ("token-1", Scopes::ALL));
        assert_eq!(access.tokens[1].scopes, Scopes { stock: false, price: true, notify: false, chat: false });
        assert!(ServiceAccess::new(&[], None).is_none(), "no tokens: no API");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER   abc ", " bEaReR abc"] {
            assert_eq!(bearer(header), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer(header), None, "{header:?}");
        }
    }

    #[test]
    fn token_specs_name_scopes_and_refuse_what_they_cannot_read() {
        use crate::config::{service_token_specs, ConfigError};
        let ok = service_token_specs(&["ops:stock+notify:a-token-of-16+chars:with:colons".to_owned()]).unwrap();
        assert_eq!(ok[0].name, "ops");
        assert_eq!(ok[0].scopes, Scopes { stock: true, price: false, notify: true, chat: false });
        assert_eq!(ok[0].token, "a-token-of-16+chars:with:colons");
        for bad in ["ops:stocks:0123456789abcdef", "Ops:stock:0123456789abcdef", ":all:0123456789abcdef"] {
            assert!(matches!(service_token_specs(&[bad.to_owned()]), Err(ConfigError::BadServiceToken(_))), "{bad}");
        }
        assert!(matches!(service_token_specs(&["ops:all:short".to_owned()]), Err(ConfigError::WeakServiceToken)));
        assert_eq!(service_token_specs(&["ops:all:0123456789abcdef".to_owned()]).unwrap()[0].scopes, Scopes::ALL);
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
