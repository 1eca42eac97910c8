//! What every request handler, extractor and middleware may reach: one [`AppState`] per server.

use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::assets::Assets;
use super::guards::origin::OriginPolicy;
use super::guards::rate_limit::RequestLimits;
use super::guards::session::SessionKeys;
use super::service::{ServiceAccess, ServiceGate};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::realtime::bus::Bus;
use crate::realtime::quota::SocketQuota;
use crate::realtime::ws::Sockets;
use crate::shop::Shop;

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

/// The parts handlers, extractors and guards take by themselves (`State<Shop>`, `State<SessionKeys>`, …), so
/// their modules need not know the whole state.
macro_rules! substate {
    ($($part:ident: $ty:ty),* $(,)?) => {$(
        impl FromRef<AppState> for $ty {
            fn from_ref(app: &AppState) -> $ty {
                app.$part.clone()
            }
        }
    )*};
}

substate! {
    shop: Shop,
    assets: Assets,
    sessions: SessionKeys,
    origins: Arc<OriginPolicy>,
    request_limits: Option<Arc<RequestLimits>>,
    metrics: Arc<Metrics>,
}

impl FromRef<AppState> for ServiceGate {
    fn from_ref(app: &AppState) -> ServiceGate {
        ServiceGate { access: app.service.clone(), metrics: app.metrics.clone() }
    }
}

pub struct AppParts {
    pub config: Arc<Config>,
    pub shop: Shop,
    /// Redis mode: this instance's subscription to the others' changes.
    pub bus: Option<Arc<Bus>>,
    /// What every WebSocket connection shares (the hub, the shop, limits, the shutdown signal).
    pub sockets: Arc<Sockets>,
    /// Open WebSockets per session and per client address.
    pub socket_quota: Arc<SocketQuota>,
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
