//! Request rate limits on the HTTP API: per session and per client address, each a [`KeyedLimiter`] of token
//! buckets; over either, the request is answered 429 with `Retry-After` before any handler runs.

use std::net::IpAddr;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::domain::CartKey;
use crate::http::client::Client;
use crate::http::error::AppError;
use crate::http::guards::session::Session;
use crate::metrics::Metrics;
use crate::realtime::quota::address_bucket;
use crate::throttle::KeyedLimiter;
use std::sync::Arc;

/// The HTTP limiters, or none when switched off.
pub struct RequestLimits {
    pub per_session: KeyedLimiter<CartKey>,
    pub per_address: KeyedLimiter<IpAddr>,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
}

/// Middleware: 429 with `Retry-After` when the client's address or session is over its rate.
pub async fn limit(State(limits): State<Option<Arc<RequestLimits>>>, request: Request, next: Next) -> Response {
    if let Some(limits) = limits.as_deref() {
        let now = Instant::now();
        // The client a trusted proxy named, else the peer; IPv6 by /64 (one host is often given a whole /64).
        let address = request.extensions().get::<Client>().map(|c| address_bucket(c.address));
        let session = request.extensions().get::<Session>().map(|s| s.cart.clone());
        let verdict = address
            .map_or(Ok(()), |ip| limits.per_address.check(&ip, now))
            .and_then(|()| session.map_or(Ok(()), |k| limits.per_session.check(&k, now)));
        if let Err(retry_after) = verdict {
            limits.metrics.rate_limited.inc();
            return AppError::RateLimited { retry_after }.into_response();
        }
    }
    next.run(request).await
}
