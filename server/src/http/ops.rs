//! What operators and their tools read: `/healthz` (liveness and readiness) and `/metrics` (Prometheus /
//! OpenMetrics text).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::state::AppState;
use crate::domain::CartKey;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics))
}

/// `ok` when the cart store answers a read *and* commits a write (a dead or wedged SQLite writer, a full disk or
/// a Redis refusing writes all fail the second), and, in Redis mode, the subscription to the other instances'
/// changes is up; `degraded` (503) when not, naming the part that failed:
/// `{"status","store":{"read","write"},"bus"?}` with `"ok"` or the failure for each part.
async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let limit = app.config.health_probe_timeout;
    let timed_out = || format!("no answer within {} ms", limit.as_millis());
    // A key no session can have (it is not a hash prefix anyone holds), read like any cart.
    let probe = CartKey::from_digest(&[0; 16]);
    let (read, write) = tokio::join!(
        tokio::time::timeout(limit, app.shop.cart(&probe)),
        tokio::time::timeout(limit, app.shop.probe_write()),
    );
    let read = match read {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(timed_out()),
    };
    let write = match write {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(timed_out()),
    };
    let bus = app.bus.as_ref().map(|bus| if bus.is_subscribed() { "subscribed" } else { "resubscribing" });
    let healthy = read.is_none() && write.is_none() && bus != Some("resubscribing");
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let part = |failure: Option<String>| failure.unwrap_or_else(|| "ok".to_owned());
    let mut body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "store": { "read": part(read), "write": part(write) },
    });
    if let Some(bus) = bus {
        body["bus"] = bus.into();
    }
    if !healthy {
        tracing::warn!(health = %body, "health check failed");
    }
    (status, Json(body))
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
}
