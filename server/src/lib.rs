//! Cartwheel's cart server.
//!
//! One process owns the carts: every mutation arrives over REST, is committed by the [`store`] and announced
//! by the [`shop`] to every WebSocket connection of that session, with a version number so no client shows
//! stale state. Several instances can share one Redis instead ([`store::redis`] for the carts,
//! [`realtime::bus`] for the fan-out between instances).
//!
//! Layers, each importing only from those before it (`scripts/check-layers` keeps the rule):
//! 1. [`domain`] — keys, catalog, events; with the leaf helpers [`clock`], [`sync`], [`throttle`], and
//!    [`config`] and [`metrics`], which every layer may read;
//! 2. [`store`] — persistence only (SQLite or Redis);
//! 3. [`shop`] — the operations, and the one place where "commit, then announce" happens;
//! 4. [`realtime`] — fan-out to connections (hub, bus, one WebSocket connection, the help chat's desk);
//! 5. [`http`] — routes, extractors, guards, the error mapping;
//! 6. this file — start-up: [`Server::bind`] builds the backend (store, fan-out, secret) and the router,
//!    [`Server::run`] serves until shutdown.

pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod realtime;
pub mod shop;
pub mod store;
pub mod sync;
pub mod throttle;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{defaults, Config, ConfigError};
use crate::domain::{Catalog, CatalogError};
use crate::http::assets::Assets;
use crate::http::guards::origin::OriginPolicy;
use crate::http::guards::rate_limit::RequestLimits;
use crate::http::guards::session::SessionKeys;
use crate::http::service::ServiceAccess;
use crate::http::{AppParts, AppState};
use crate::metrics::Metrics;
use crate::realtime::bus::envelope::EnvelopeFormat;
use crate::realtime::bus::Bus;
use crate::realtime::hub::CartHub;
use crate::realtime::quota::SocketQuota;
use crate::realtime::ws::{SocketLimits, Sockets};
use crate::shop::{Fanout, Shop};
use crate::store::redis::RedisCartStore;
use crate::store::sqlite::SqliteCartStore;
use crate::store::{CartStore, Retention, StoreError};
use crate::throttle::{KeyedLimiter, Rate};

#[derive(Debug, Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot open the cart database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot use Redis at the given --redis-url: {0}")]
    Redis(StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("loading the browser assets failed")]
    Assets,
}

/// A ready server: its store is open and its assets loaded before its socket is bound, so nothing connects
/// to a server that cannot answer yet. `run` serves until the shutdown future completes.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    backend: BackendKind,
}

/// Where the carts live, and how committed changes reach connections: what `run` must start next to the
/// server and stop after it.
struct Backend {
    store: Arc<dyn CartStore>,
    fanout: Arc<dyn Fanout>,
    /// Signs session cookies: configured, or kept by the store so it survives restarts (and, in Redis mode,
    /// is the same on every instance).
    secret: Vec<u8>,
    kind: BackendKind,
}

enum BackendKind {
    /// Flushed and closed at shutdown.
    Sqlite(Arc<SqliteCartStore>),
    /// Its subscription runs as long as the server.
    Redis(Arc<Bus>),
}

impl Backend {
    async fn open(
        config: &Config,
        catalog: Catalog,
        hub: &Arc<CartHub>,
        metrics: &Arc<Metrics>,
    ) -> Result<Backend, StartupError> {
        // The store keeps (or, in Redis, shares) the signing secret when none is given.
        let secret = config.session_secret.first().map(String::as_bytes);
        let ring: Vec<Vec<u8>> = config.session_secret.iter().map(|s| s.as_bytes().to_vec()).collect();
        let retention = Retention {
            idempotency_per_cart: config.idempotency_keys_per_session,
            cart_expiry: config.cart_expiry(),
            notice_ttl: std::time::Duration::from_secs(u64::from(config.notice_ttl_days.max(1)) * 86_400),
            inbox_cap: config.notice_inbox_cap.max(1),
            shop_notices_cap: config.shop_notices_cap.max(1),
            chat_history: config.chat_history.max(1),
            chat_ttl: std::time::Duration::from_secs(config.chat_ttl_days.max(1) * 86_400),
        };
        match &config.redis_url {
            Some(url) => {
                let format = Arc::new(EnvelopeFormat::new());
                let store = Arc::new(
                    RedisCartStore::open(
                        url,
                        catalog,
                        config.cart_limits(),
                        retention,
                        &ring,
                        format.clone(),
                        metrics.clone(),
                    )
                    .await
                    .map_err(StartupError::Redis)?,
                );
                let bus = Bus::new(store.clone(), hub.clone(), format, metrics.clone());
                let secret = store.session_secret().to_vec();
                Ok(Backend { store, fanout: bus.clone(), secret, kind: BackendKind::Redis(bus) })
            }
            None => {
                // Opening may wait for the file's lock (see `SqliteCartStore::open`): off the runtime's threads.
                let (path, limits, secret) =
                    (config.database.clone(), config.cart_limits(), secret.map(<[u8]>::to_vec));
                let store = tokio::task::spawn_blocking(move || {
                    SqliteCartStore::open(&path, catalog, limits, retention, secret.as_deref())
                })
                .await
                .map_err(|_| StartupError::Store(StoreError::Closed))??;
                let store = Arc::new(store);
                let secret = store.session_secret().to_vec();
                Ok(Backend { store: store.clone(), fanout: hub.clone(), secret, kind: BackendKind::Sqlite(store) })
            }
        }
    }
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, StartupError> {
        config.validate()?;
        let catalog = match &config.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::built_in()?,
        };
        let metrics = Arc::new(Metrics::new());
        let hub = CartHub::new(
            config.ws_queue_capacity,
            config.broadcast_capacity,
            config.board_round_interval,
            metrics.clone(),
        );
        let backend = Backend::open(&config, catalog, &hub, &metrics).await?;
        let service_rate = Rate { per_sec: config.service_rate_per_sec, burst: config.service_burst };
        let service = ServiceAccess::new(
            &config::service_token_specs(&config.service_tokens)?,
            (!config.no_rate_limit).then_some(service_rate),
        )
        .map(Arc::new);
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
                metrics: metrics.clone(),
            })
        });
        // Leptos renders on whatever executor is global; ours is tokio. Err only means it was already set.
        let _ = any_spawner::Executor::init_tokio();
        let assets = {
            let (site, style) = (config.site_dir.clone(), config.stylesheet.clone());
            tokio::task::spawn_blocking(move || Assets::load(site, style)).await.map_err(|_| StartupError::Assets)?
        };
        let shutdown = CancellationToken::new();
        let shop = Shop::new(backend.store.clone(), backend.fanout.clone(), metrics.clone());
        let chat_waiting = hub.chat_waiting();
        let sockets = Arc::new(Sockets {
            shop: shop.clone(),
            hub,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            limits: SocketLimits {
                heartbeat_interval: config.heartbeat_interval,
                heartbeat_timeout: config.heartbeat_timeout,
                frames: Rate { per_sec: config.ws_frames_per_sec, burst: config.ws_frame_burst },
                send_timeout: config.send_timeout,
                max_message: config.max_ws_message_bytes,
            },
            presence: Arc::default(),
            chat: realtime::chat::ChatDesk::new(
                shop.clone(),
                realtime::chat::ChatSettings {
                    max_chars: config.chat_max_chars.max(1),
                    per_minute: config.chat_per_minute,
                    lease: std::time::Duration::from_millis(config.chat_lease_ms.max(30)),
                    in_flight: config.chat_in_flight.max(1),
                    heartbeat: config.heartbeat_interval,
                },
                chat_waiting,
                metrics.clone(),
            ),
        });
        // Listen last: the kernel would accept (and queue) connections on a bound socket while the assets and
        // the store load, then they would all be answered at once, cancelling the clients' reconnect jitter.
        // Refused until now, each client retries on its own schedule.
        let listener = listen(config.bind, config.listen_backlog)
            .map_err(|source| StartupError::Bind { addr: config.bind, source })?;
        let socket_quota = SocketQuota::new(config.max_sockets_per_session, config.max_sockets_per_address);
        let state = AppState::new(AppParts {
            assets,
            sessions: SessionKeys::new(
                &session_ring(&config.session_secret, &backend.secret),
                config.https,
                config.session_max_age(),
            ),
            origins: Arc::new(OriginPolicy::new(config.https, &config.allowed_origins)),
            config: Arc::new(config),
            bus: match &backend.kind {
                BackendKind::Redis(bus) => Some(bus.clone()),
                BackendKind::Sqlite(_) => None,
            },
            socket_quota,
            shop,
            sockets,
            request_limits,
            service,
            metrics,
            shutdown,
            connections: TaskTracker::new(),
        });
        Ok(Server { listener, state, backend: backend.kind })
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
        if let BackendKind::Redis(bus) = &backend {
            tokio::spawn(bus.clone().run(token.clone()));
        }
        {
            let sockets = &state.sockets;
            let timing = realtime::presence::PresenceTiming {
                interval: state.config.presence_interval,
                ttl: state.config.presence_ttl,
            };
            let presence = realtime::presence::run(
                sockets.presence.clone(),
                sockets.shop.clone(),
                sockets.hub.clone(),
                timing,
                token.clone(),
            );
            tokio::spawn(presence);
            tokio::spawn(sockets.chat.clone().run(token.clone()));
        }
        if state.config.watch_assets {
            state.assets.watch(token.clone());
        }
        let connections = state.connections.clone();
        let limits = http::serve::ConnectionLimits {
            max_connections: connection_capacity(state.config.max_connections),
            header_read_timeout: state.config.header_read_timeout,
            send_timeout: state.config.send_timeout,
            send_buffer_bytes: state.config.socket_send_buffer_bytes,
            trusted_proxies: Arc::new(http::client::TrustedProxies::new(state.config.trusted_proxies.clone())),
        };
        let metrics = state.metrics.clone();
        let app = http::router(state);
        tracing::info!(addr = ?addr, max_connections = limits.max_connections, "listening");
        // One token: it stops the accept loop, asks HTTP connections to finish, and closes WebSockets with 1001.
        let signal_token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: closing WebSockets with 1001");
            signal_token.cancel();
        });
        http::serve::serve(listener, app, limits, metrics, token.clone(), defaults::SHUTDOWN_GRACE).await;
        token.cancel();
        connections.close();
        if tokio::time::timeout(defaults::SHUTDOWN_GRACE, connections.wait()).await.is_err() {
            tracing::warn!(left = connections.len(), "some WebSocket connections did not close in time");
        }
        // Queued writes finish before the writer stops; every answered request is already committed.
        if let BackendKind::Sqlite(store) = backend {
            tokio::task::spawn_blocking(move || store.close()).await.ok();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The secrets that verify session cookies: the configured ring (its first signs), or the store's one.
fn session_ring(configured: &[String], stored: &[u8]) -> Vec<Vec<u8>> {
    if configured.is_empty() {
        vec![stored.to_vec()]
    } else {
        configured.iter().map(|s| s.as_bytes().to_vec()).collect()
    }
}

/// The listening socket, with its backlog set: `TcpListener::bind` leaves it at 128 here, and a reconnect storm
/// of thousands of clients overflowed it — each SYN beyond it was dropped and retried a second later, which
/// put a second into the handshake p99. Address reuse as `bind` has it, so a restart takes its port back while
/// the old connections are in `TIME_WAIT`.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The connections this process can hold: `wanted`, or fewer when the open-file limit (raised to its hard
/// maximum first) leaves less room after [`defaults::RESERVED_FILE_DESCRIPTORS`]. Said in the log either way.
fn connection_capacity(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return wanted;
        }
    };
    let room = usize::try_from(limit.saturating_sub(defaults::RESERVED_FILE_DESCRIPTORS)).unwrap_or(usize::MAX).max(1);
    if room < wanted {
        tracing::warn!(open_file_limit = limit, wanted, capacity = room, "the open-file limit caps connections");
        room
    } else {
        tracing::info!(open_file_limit = limit, capacity = wanted, "connection capacity");
        wanted
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
