//! The accept loop: every TCP connection the server takes, and the limits on them.
//!
//! Ours rather than `axum::serve`, which installs no timer (so hyper's header-read timeout never fires), caps
//! nothing, and on running out of file descriptors only sleeps: a flood of half-sent requests could hold every
//! descriptor and stop the server from accepting anyone.
//!
//! - **Slots.** A slot (`--max-connections`) is taken *before* `accept`: beyond the cap, new connections wait in
//!   the kernel's backlog and are taken as slots free up, instead of being accepted and starved. A WebSocket
//!   keeps its connection's slot for as long as it is open.
//! - **Header-read timeout.** HTTP/1 through hyper with a Tokio timer: a connection whose next request head is
//!   not complete within `--header-read-timeout` is closed. Hyper starts that clock when the connection starts
//!   waiting for a head — a new connection, or a kept-alive one after its last answer — so it is also the idle
//!   keep-alive timeout.
//! - **Send timeout.** Every accepted socket's writes are bounded (`--send-timeout`): a peer that takes no
//!   bytes for that long while an answer, a WebSocket handshake's `101` or a frame waits is closed, so slow
//!   readers cannot hold slots. Only writes: an idle socket (a WebSocket between frames) is not a stalled one.
//! - **Accept errors.** Out of descriptors (`EMFILE`, `ENFILE`) or memory: logged at most once a second, counted
//!   (`cartwheel_accept_errors_total`), then a short pause so the loop does not spin. Errors of one connection
//!   that died in the backlog (`ECONNABORTED`, …) are skipped.
//! - **Shutdown.** On the token, the loop stops accepting and every HTTP connection is asked to finish its
//!   request in flight and close; WebSockets are closed by their own tasks (1001).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::client::TrustedProxies;
use crate::metrics::Metrics;

/// A connection's slot, in every request's extensions: a WebSocket handler keeps a clone for as long as its
/// socket is open (the HTTP connection's own task ends at the upgrade).
/// It also counts the connection in `connections_open` until its last clone goes.
#[derive(Clone)]
pub struct ConnectionSlot {
    _held: Arc<Slot>,
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> ConnectionSlot {
        metrics.connections_open.inc();
        ConnectionSlot { _held: Arc::new(Slot { _permit: permit, metrics }) }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}

/// An accepted TCP connection as hyper serves it: the type a WebSocket upgrade takes back from hyper
/// ([`hyper::upgrade::Upgraded::downcast`]) to write to the socket itself.
pub type AcceptedIo = TokioIo<std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<TcpStream>>>>;

/// The TCP stream of an upgraded connection, lent to the WebSocket that owns it now.
pub struct UpgradedStream(pub std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<TcpStream>>>);

impl crate::realtime::ws::TcpOwner for UpgradedStream {
    fn stream(&self) -> &TcpStream {
        self.0.as_ref().get_ref().get_ref()
    }
}

/// The limits the accept loop enforces.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open TCP connections at most (HTTP and WebSocket together).
    pub max_connections: usize,
    /// A request head must be complete within this long of the connection waiting for it.
    pub header_read_timeout: Duration,
    /// A write that makes no progress for this long fails, and the connection with it.
    pub send_timeout: Duration,
    /// `SO_SNDBUF` of every accepted socket (0: the kernel's auto-tuning).
    pub send_buffer_bytes: usize,
    /// Whose forwarding headers name the client (see [`super::client::Client`]).
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// Accept connections on `listener` and serve `app` on each until `shutdown`; then give open HTTP connections
/// up to `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tasks = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut last_warned: Option<Instant> = None;
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                drop(slot);
                if let Some(pause) = accept_error(&e, &metrics, &mut last_warned) {
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        tune(&tcp, limits.send_buffer_bytes);
        let slot = Slot::new(slot, metrics.clone());
        let held = slot.clone();
        // Each request carries the peer address (as axum's `into_make_service_with_connect_info` would), the
        // client it is from (resolved once, here) and the connection's slot.
        let trusted = limits.trusted_proxies.clone();
        let service = app.clone().map_request(move |mut request: Request<Incoming>| {
            let client = trusted.client(peer, request.headers());
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(client);
            request.extensions_mut().insert(slot.clone());
            request
        });
        let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
        io.set_write_timeout(Some(limits.send_timeout));
        let connection =
            http.serve_connection(TokioIo::new(Box::pin(io)), TowerToHyperService::new(service)).with_upgrades();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _slot = held;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    // Finish the request in flight, then close; an idle connection closes at once.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(left = tasks.len(), "some HTTP connections did not finish in time");
    }
}

/// What to do after a failed `accept`: `Some(pause)` when the process is out of a resource (descriptors,
/// memory) and accepting again at once would spin; `None` for an error of one connection only.
fn accept_error(e: &io::Error, metrics: &Metrics, last_warned: &mut Option<Instant>) -> Option<Duration> {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    let exhausted = matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM));
    let kind = if exhausted { "exhausted" } else { "connection" };
    metrics.accept_errors.get_or_create(&vec![("kind", kind)]).inc();
    if !exhausted {
        tracing::debug!(error = %e, "accept failed for one connection");
        return None;
    }
    if last_warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
        *last_warned = Some(Instant::now());
        tracing::error!(error = %e, "cannot accept connections: out of file descriptors or memory; pausing");
    }
    Some(ACCEPT_PAUSE)
}

/// How long the loop waits after running out of descriptors: long enough not to spin, short enough that a
/// freed descriptor is used soon.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

fn tune(tcp: &TcpStream, send_buffer: usize) {
    // Small frames must not wait for Nagle + delayed ACK (~40 ms).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY");
    }
    // Linux auto-tunes a socket's send buffer up to `tcp_wmem` (4 MiB): a fixed size bounds the kernel
    // memory one stalled reader can pin; past it the WebSocket's own bounded queue takes over.
    if send_buffer > 0 {
        if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(send_buffer) {
            tracing::warn!(error = %e, "cannot set SO_SNDBUF");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_pauses_and_is_counted_one_lost_connection_is_skipped() {
        let metrics = Metrics::new();
        let mut last_warned = None;
        for errno in [24, 23] {
            let pause = accept_error(&io::Error::from_raw_os_error(errno), &metrics, &mut last_warned);
            assert_eq!(pause, Some(ACCEPT_PAUSE), "errno {errno}");
        }
        assert!(last_warned.is_some());
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(accept_error(&aborted, &metrics, &mut last_warned), None);
        let text = metrics.render();
        assert!(text.contains(r#"cartwheel_accept_errors_total{kind="exhausted"} 2"#), "{text}");
        assert!(text.contains(r#"cartwheel_accept_errors_total{kind="connection"} 1"#), "{text}");
    }

    #[test]
    fn the_flag_defaults_are_the_named_ones() {
        let c = crate::config::Config::defaults();
        assert_eq!(c.header_read_timeout, crate::config::defaults::HEADER_READ_TIMEOUT);
        assert_eq!(c.max_connections, crate::config::defaults::MAX_CONNECTIONS);
    }
}
