//! Cross-origin protection for everything that changes state or opens a socket.
//!
//! Browsers send `Origin` on cross-site requests and on every WebSocket handshake, and axum checks none of it.
//! A mutation or `/ws` upgrade whose `Origin` is present and not allowed is refused with 403 before any handler
//! runs. Allowed: the server's own origin (scheme + the `Host` the request was sent to) and a configured list.
//! Requests without `Origin` (curl, server-to-server) pass: the session cookie is `SameSite=Lax`, so a
//! cross-site browser request that omits `Origin` carries no session either.

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::client::Client;
use crate::http::error::AppError;
use crate::metrics::Metrics;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct OriginPolicy {
    scheme: &'static str,
    extra: Vec<String>,
    /// Refusals are logged at most once per [`REFUSAL_LOG_INTERVAL`] (with how many were not): a hostile page
    /// can send them as fast as browsers go, and each line costs the server more than the refusal.
    log: Mutex<RefusalLog>,
}

#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

/// At most one log line per this long for refused origins; every refusal is counted in the metrics.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl OriginPolicy {
    pub fn new(https: bool, extra: &[String]) -> OriginPolicy {
        let extra = extra.iter().map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase()).collect();
        OriginPolicy { scheme: if https { "https" } else { "http" }, extra, log: Mutex::default() }
    }

    /// Whether this refusal gets a log line now; `Some(n)`: yes, and `n` earlier ones were not logged.
    fn should_log(&self, now: Instant) -> Option<u64> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.last.is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            log.unlogged += 1;
            return None;
        }
        log.last = Some(now);
        Some(std::mem::take(&mut log.unlogged))
    }

    /// Whether a request sent to `host` may act with `origin`. `forwarded_https`: the scheme a trusted proxy
    /// said the client used, which wins over `--https` for the own origin.
    pub fn allows(&self, origin: &str, host: Option<&str>, forwarded_https: Option<bool>) -> bool {
        let origin = origin.to_ascii_lowercase();
        let scheme = match forwarded_https {
            Some(true) => "https",
            Some(false) => "http",
            None => self.scheme,
        };
        let own = host.map(|h| format!("{scheme}://{}", h.to_ascii_lowercase()));
        own.as_deref() == Some(origin.as_str()) || self.extra.contains(&origin)
    }
}

fn needs_check(request: &Request) -> bool {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    !safe || request.uri().path() == cartwheel_core::protocol::WS_PATH
}

/// Middleware: 403 for a state-changing request or WebSocket upgrade from a foreign origin.
pub async fn guard(
    State(origins): State<Arc<OriginPolicy>>,
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    if needs_check(&request) {
        if let Some(origin) = request.headers().get(ORIGIN) {
            let host = request.headers().get(HOST).and_then(|h| h.to_str().ok());
            let origin = origin.to_str().unwrap_or("<not text>");
            let forwarded_https = request.extensions().get::<Client>().and_then(|c| c.forwarded_https);
            if !origins.allows(origin, host, forwarded_https) {
                metrics.origin_refused.inc();
                if let Some(unlogged) = origins.should_log(Instant::now()) {
                    tracing::info!(origin, path = request.uri().path(), unlogged, "refused cross-origin request");
                }
                return AppError::ForbiddenOrigin(origin.to_owned()).into_response();
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origin_and_listed_ones_only() {
        let p = OriginPolicy::new(false, &["https://Shop.Example/".to_owned()]);
        assert!(p.allows("http://127.0.0.1:3000", Some("127.0.0.1:3000"), None));
        assert!(!p.allows("http://127.0.0.1:3001", Some("127.0.0.1:3000"), None), "other port");
        assert!(!p.allows("https://127.0.0.1:3000", Some("127.0.0.1:3000"), None), "other scheme");
        assert!(!p.allows("http://evil.example", Some("127.0.0.1:3000"), None));
        assert!(!p.allows("null", Some("127.0.0.1:3000"), None));
        assert!(!p.allows("http://127.0.0.1:3000", None, None), "no Host: no own origin");
        assert!(p.allows("https://shop.example", Some("127.0.0.1:3000"), None));
        let https = OriginPolicy::new(true, &[]);
        assert!(https.allows("https://shop.example", Some("shop.example"), None));
        assert!(!https.allows("http://shop.example", Some("shop.example"), None));
        // A trusted proxy's X-Forwarded-Proto decides the own origin's scheme.
        assert!(p.allows("https://shop.example:8443", Some("shop.example:8443"), Some(true)));
        assert!(!https.allows("https://shop.example", Some("shop.example"), Some(false)));
    }

    #[test]
    fn refusals_are_logged_at_most_once_per_interval_with_the_count_of_the_rest() {
        let p = OriginPolicy::new(false, &[]);
        let t0 = Instant::now();
        assert_eq!(p.should_log(t0), Some(0));
        for ms in [1, 500, 999] {
            assert_eq!(p.should_log(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(p.should_log(t0 + REFUSAL_LOG_INTERVAL), Some(3));
        assert_eq!(p.should_log(t0 + REFUSAL_LOG_INTERVAL * 2), Some(0));
    }
}
