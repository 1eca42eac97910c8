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

/// `ok` when the cart store answers a read (and, in Redis mode, the subscription to the other instances'
/// changes is up); `degraded` (503) when not.
async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    // A key no session can have (it is not a hash prefix anyone holds), read like any cart.
    let probe = CartKey::from_digest(&[0; 16]);
    let store = app.shop.cart(&probe).await.err().map(|e| e.to_string());
    let bus = app.bus.as_ref().map(|bus| if bus.is_subscribed() { "subscribed" } else { "resubscribing" });
    let healthy = store.is_none() && bus != Some("resubscribing");
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::json!({ "status": if healthy { "ok" } else { "degraded" } });
    if let Some(e) = store {
        body["store"] = e.into();
    }
    if let Some(bus) = bus {
        body["bus"] = bus.into();
    }
    (status, Json(body))
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
}
