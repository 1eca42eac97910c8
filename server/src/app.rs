//! The application: shared state ([`AppState`]), the domain operations handlers call on it, and the router
//! that wires routes to handlers with the middleware in the order it must run.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::{middleware, Extension, Router};
use shared::{Cart, CartOp, Change, Product};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

use crate::api::{self, BodyLimit};
use crate::assets::{self, Assets};
use crate::bus::Bus;
use crate::config::Config;
use crate::error::AppError;
use crate::hub::{CartEvents, CartHub};
use crate::metrics::Metrics;
use crate::origin::{self, OriginPolicy};
use crate::rate_limit::{self, RequestLimits};
use crate::service::{self, ServiceAccess};
use crate::session::{self, Session, SessionKeys};
use crate::store::{CartStore, Checkout, CheckoutRequest, Mutation, MutationRequest, ProductUpdate};
use crate::{page, ws};

/// Everything a request handler may need. Cloned into every extractor and middleware of every request, so it is
/// one `Arc`: a clone is one atomic increment, not one per field (the profile of S4 showed the per-field clones
/// and the cancellation token's refcount lock at about 5% of the server's CPU).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub config: Arc<Config>,
    pub store: Arc<dyn CartStore>,
    pub events: Arc<dyn CartEvents>,
    pub hub: Arc<CartHub>,
    /// Redis mode: this instance's subscription to the others' changes.
    pub bus: Option<Arc<Bus>>,
    pub sessions: SessionKeys,
    pub origins: Arc<OriginPolicy>,
    pub request_limits: Option<Arc<RequestLimits>>,
    /// The service API's tokens and limits; `None` when it is off.
    pub service: Option<Arc<ServiceAccess>>,
    pub metrics: Arc<Metrics>,
    /// The browser bundles and stylesheet, content-hashed and precompressed.
    pub assets: Assets,
    /// Cancelled when the server shuts down: every WebSocket closes with 1001.
    pub shutdown: CancellationToken,
    /// The WebSocket connection tasks, so shutdown can wait for their close handshakes.
    pub connections: TaskTracker,
}

impl AppState {
    /// Apply a change to the session's cart and, if it changed, announce the new version to its connections.
    pub async fn mutate(
        &self,
        session: &Session,
        op: CartOp,
        idempotency_key: Option<String>,
    ) -> Result<Mutation, AppError> {
        let request = MutationRequest { cart: session.cart.clone(), op, idempotency_key };
        let result = self.store.mutate(request).await;
        let outcome = match &result {
            Ok(m) if m.replayed => "replayed",
            Ok(m) if m.change == Change::Changed => "changed",
            Ok(_) => "unchanged",
            Err(_) => "rejected",
        };
        self.metrics.mutations.get_or_create(&vec![("outcome", outcome)]).inc();
        let mutation = result?;
        if mutation.change == Change::Changed && !mutation.replayed {
            self.events.publish(&session.cart, &mutation.cart);
        }
        Ok(mutation)
    }

    pub async fn cart(&self, session: &Session) -> Result<Cart, AppError> {
        Ok(self.store.load(&session.cart).await?)
    }

    /// Change a product's stock or price and, if it changed, tell every connection.
    pub async fn update_product(&self, update: ProductUpdate) -> Result<Product, AppError> {
        let (product, change) = self.store.update_product(update).await?;
        if change == Change::Changed {
            self.events.publish_products(std::slice::from_ref(&product));
        }
        Ok(product)
    }

    /// Check out the session's cart; the cart's connections get the emptied cart and every connection the new
    /// stock of what was bought.
    pub async fn checkout(&self, session: &Session, idempotency_key: Option<String>) -> Result<Checkout, AppError> {
        let request = CheckoutRequest { cart: session.cart.clone(), idempotency_key };
        let result = self.store.checkout(request).await;
        let outcome = match &result {
            Ok(c) if c.replayed => "replayed",
            Ok(_) => "ordered",
            Err(crate::store::MutationError::Shortfalls(_)) => "short_of_stock",
            Err(_) => "refused",
        };
        self.metrics.checkouts.get_or_create(&vec![("outcome", outcome)]).inc();
        let checkout = result?;
        if !checkout.replayed {
            self.events.publish(&session.cart, &checkout.receipt.cart);
            self.events.publish_products(&checkout.products);
        }
        Ok(checkout)
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let shopper_api = Router::new()
        .route("/products", get(api::list_products))
        .route("/products/{id}", get(api::get_product))
        .route("/session", get(api::session_info))
        .route("/cart", get(api::get_cart).post(api::add_item).delete(api::clear_cart))
        .route("/cart/items/{product_id}", axum::routing::put(api::set_item).delete(api::remove_item))
        .route("/cart/checkout", post(api::checkout))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit::limit))
        .layer(middleware::from_fn_with_state(state.clone(), session::ensure_session));
    // Services are not shoppers: no session cookie, and their own per-token limit (in the `ServiceCaller`
    // extractor) instead of the per-address one.
    let service_api = Router::new()
        .route("/products/{id}", patch(service::update_product))
        .route("/notify", post(service::notify))
        .method_not_allowed_fallback(api::method_not_allowed);
    let api = Router::new()
        .nest("/service", service_api)
        .merge(shopper_api)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)));

    // The page gets a session like the API: its first answer sets the cookie its bundles then use.
    let pages = Router::new()
        .route("/", get(page::shop))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit::limit))
        .layer(middleware::from_fn_with_state(state.clone(), session::ensure_session));

    // `/ws` sits outside `ensure_session`: a socket without a valid session is refused, never given one.
    let ws = Router::new()
        .route(shared::protocol::WS_PATH, get(ws::upgrade))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit::limit));

    Router::new()
        .nest("/api", api)
        .merge(ws)
        .merge(pages)
        .route(&format!("{}/{{file}}", assets::ASSETS_PATH), get(assets::serve))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest_service("/images", ServeDir::new(&state.config.images_dir))
        .layer(middleware::from_fn_with_state(state.clone(), origin::guard))
        .with_state(state)
}

/// Liveness and readiness: `ok` when the cart store answers a read (and, in Redis mode, the subscription to
/// the other instances' changes is up); `degraded` (503) when not.
async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let probe = crate::session::CartKey("healthz".into());
    let store = app.store.load(&probe).await.err().map(|e| e.to_string());
    let bus = app.bus.as_ref().map(|bus| if bus.is_subscribed() { "subscribed" } else { "resubscribing" });
    let healthy = store.is_none() && bus != Some("resubscribing");
    let status = if healthy { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::json!({ "status": if healthy { "ok" } else { "degraded" } });
    if let Some(e) = store {
        body["store"] = e.into();
    }
    if let Some(bus) = bus {
        body["bus"] = bus.into();
    }
    (status, axum::Json(body))
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
}
