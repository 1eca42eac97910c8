//! Cartwheel's cart server.
//!
//! One process owns the carts: every mutation arrives over REST, is applied and committed by the
//! [`store`], and the new cart is broadcast by the [`hub`] to every WebSocket connection of that session,
//! with a version number so no client shows stale state.
//!
//! Several instances can share one Redis instead ([`store::redis`] for the carts, [`bus`] for the fan-out
//! between instances).
//!
//! Module map: [`config`] (flags and limits), [`app`] (state and router), [`api`] (REST handlers), [`service`]
//! (the API other backend services call), [`ws`] (WebSocket connections), [`hub`] (fan-out), [`bus`] (fan-out
//! between instances), [`store`] (persistence: SQLite or Redis), [`session`] (cookies), [`origin`] and [`rate_limit`] (request guards), [`catalog`]
//! (products), [`metrics`], [`error`] (failures → responses).

pub mod api;
pub mod app;
pub mod assets;
pub mod bus;
pub mod catalog;
pub mod config;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod origin;
pub mod page;
pub mod rate_limit;
pub mod service;
pub mod session;
pub mod store;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{AppParts, AppState};
use crate::assets::Assets;
use crate::bus::Bus;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{defaults, Config};
use crate::hub::CartEvents;
use crate::hub::CartHub;
use crate::metrics::Metrics;
use crate::origin::OriginPolicy;
use crate::rate_limit::{KeyedLimiter, Rate, RequestLimits};
use crate::service::ServiceAccess;
use crate::session::SessionKeys;
use crate::store::redis::RedisCartStore;
use crate::store::sqlite::SqliteCartStore;
use crate::store::{CartStore, StoreError};

#[derive(Debug, Error)]
pub enum StartupError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot open the cart database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot use Redis at the given --redis-url: {0}")]
    Redis(StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the session secret must be at least {} bytes", session::MIN_SECRET_LEN)]
    WeakSecret,
    #[error("every service token must be at least {} characters", defaults::MIN_SERVICE_TOKEN_LEN)]
    WeakServiceToken,
    #[error("loading the browser assets failed")]
    Assets,
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound, ready server. `run` serves until the shutdown future completes.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    backend: Backend,
}

/// Where the carts live: what `run` must start next to the server and stop after it.
enum Backend {
    /// Flushed and closed at shutdown.
    Sqlite(Arc<SqliteCartStore>),
    /// Its subscription runs as long as the server.
    Redis(Arc<Bus>),
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, StartupError> {
        let catalog = match &config.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::built_in()?,
        };
        let configured_secret = config.session_secret.as_deref().map(str::as_bytes);
        if configured_secret.is_some_and(|s| s.len() < session::MIN_SECRET_LEN) {
            return Err(StartupError::WeakSecret);
        }
        if config.service_tokens.iter().any(|t| t.len() < defaults::MIN_SERVICE_TOKEN_LEN) {
            return Err(StartupError::WeakServiceToken);
        }
        let metrics = Arc::new(Metrics::new());
        let hub = CartHub::new(config.ws_queue_capacity, config.broadcast_capacity, metrics.clone());
        let (store, events, secret, backend): (Arc<dyn CartStore>, Arc<dyn CartEvents>, Vec<u8>, Backend) =
            match &config.redis_url {
                Some(url) => {
                    let store = Arc::new(
                        RedisCartStore::open(url, catalog, config.cart_limits(), configured_secret, metrics.clone())
                            .await
                            .map_err(StartupError::Redis)?,
                    );
                    let bus = Bus::new(store.clone(), hub.clone(), metrics.clone());
                    let secret = store.session_secret().to_vec();
                    (store, bus.clone(), secret, Backend::Redis(bus))
                }
                None => {
                    let store = Arc::new(SqliteCartStore::open(
                        &config.database,
                        catalog,
                        config.cart_limits(),
                        configured_secret,
                    )?);
                    let secret = store.session_secret().to_vec();
                    (store.clone(), hub.clone(), secret, Backend::Sqlite(store))
                }
            };
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| StartupError::Bind { addr: config.bind, source })?;
        let service_rate = Rate { per_sec: config.service_rate_per_sec, burst: config.service_burst };
        let service =
            ServiceAccess::new(&config.service_tokens, (!config.no_rate_limit).then_some(service_rate)).map(Arc::new);
        let request_limits = (!config.no_rate_limit).then(|| {
            Arc::new(RequestLimits {
                per_session: KeyedLimiter::new(Rate {
                    per_sec: config.session_rate_per_sec,
                    burst: config.session_burst,
                }),
                per_address: KeyedLimiter::new(Rate {
                    per_sec: config.address_rate_per_sec,
                    burst: config.address_burst,
                }),
            })
        });
        // Leptos renders on whatever executor is global; ours is tokio. Err only means it was already set.
        let _ = any_spawner::Executor::init_tokio();
        let assets = {
            let (site, style) = (config.site_dir.clone(), config.stylesheet.clone());
            tokio::task::spawn_blocking(move || Assets::load(site, style)).await.map_err(|_| StartupError::Assets)?
        };
        let state = AppState::new(AppParts {
            assets,
            sessions: SessionKeys::new(&secret, config.https, defaults::SESSION_MAX_AGE),
            origins: Arc::new(OriginPolicy::new(config.https, &config.allowed_origins)),
            config: Arc::new(config),
            bus: match &backend {
                Backend::Redis(bus) => Some(bus.clone()),
                Backend::Sqlite(_) => None,
            },
            store,
            events,
            hub,
            request_limits,
            service,
            metrics,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
        });
        Ok(Server { listener, state, backend })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes; then stop accepting, close every WebSocket with 1001, wait (bounded)
    /// for their close handshakes and in-flight requests, and flush the store.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartupError> {
        let Server { listener, state, backend } = self;
        let addr = listener.local_addr().ok();
        let token = state.shutdown.clone();
        if let Backend::Redis(bus) = &backend {
            tokio::spawn(bus.clone().run(token.clone()));
        }
        if state.config.watch_assets {
            state.assets.watch(token.clone());
        }
        let connections = state.connections.clone();
        let send_buffer = state.config.socket_send_buffer_bytes;
        let app = app::router(state).into_make_service_with_connect_info::<SocketAddr>();
        // Small frames must not wait for Nagle + delayed ACK (~40 ms).
        let listener = listener.tap_io(move |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
            // Linux auto-tunes a socket's send buffer up to `tcp_wmem` (4 MiB): a fixed size bounds the kernel
            // memory one stalled reader can pin; past it the WebSocket's own bounded queue takes over.
            if send_buffer > 0 {
                if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
                    tracing::warn!(error = %e, "cannot set SO_SNDBUF");
                }
            }
        });
        tracing::info!(addr = ?addr, "listening");
        let signal_token = token.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: closing WebSockets with 1001");
                signal_token.cancel();
            })
            .await;
        token.cancel();
        connections.close();
        if tokio::time::timeout(defaults::SHUTDOWN_GRACE, connections.wait()).await.is_err() {
            tracing::warn!(left = connections.len(), "some WebSocket connections did not close in time");
        }
        // Queued writes finish before the writer stops; every answered request is already committed.
        if let Backend::Sqlite(store) = backend {
            tokio::task::spawn_blocking(move || store.close()).await.ok();
        }
        tracing::info!("stopped");
        served.map_err(StartupError::Serve)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
