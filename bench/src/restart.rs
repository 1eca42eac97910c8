//! S6, the reconnect storm: K×N connections, then the server is restarted (SIGTERM, the same database and
//! port) and every client comes back on the schedule the browser ships (`cartwheel_core::reconnect`, with its
//! full jitter drawn here). Measured from the SIGTERM: when 50 %, 99 % and 100 % were connected again (with a
//! snapshot), their handshakes, the attempts that failed after the server was back, and `/healthz` latency
//! while it all happens.
//!
//! The peer keeps its carts in memory, so after its restart it answers every old cookie with 401; its client
//! then fetches a new session (as a reloaded page would) and tries again at once — counted, not hidden.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cartwheel_core::reconnect::{ReconnectPolicy, ReconnectSchedule};
use futures_util::StreamExt;

use crate::load::{open_socket, session, sessions, Incoming, CONNECT_CONCURRENCY};
use crate::process::{Flavor, ServerProcess};
use crate::stats::Samples;

/// How long the clients may take to come back before the rest count as never reconnected.
const GIVE_UP: Duration = Duration::from_secs(90);
/// One reconnect attempt's handshake (and snapshot) may take this long before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `/healthz` is asked during the storm.
const HEALTH_EVERY: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
pub struct RestartReport {
    pub connections: usize,
    pub connections_failed: usize,
    /// SIGTERM → the old process gone.
    pub exit: Duration,
    /// SIGTERM → the new process listening.
    pub ready: Duration,
    /// Per connection, SIGTERM → connected again with a snapshot.
    pub reconnected: Samples,
    pub never: usize,
    /// Handshakes of the reconnects that succeeded.
    pub handshake: Samples,
    /// Attempts refused because nothing listened yet (the server was down).
    pub refused: usize,
    /// Attempts that reached a listening server and still failed (an HTTP error, a timeout, a reset).
    pub failed_handshakes: usize,
    /// Peer only: sessions fetched again because the restart forgot them.
    pub new_sessions: usize,
    /// `/healthz` answers from the moment the new process listens until everyone is back.
    pub health: Samples,
    pub health_failed: usize,
    /// The schedule's cap for the first retry after a server restart (`restart_spread`).
    pub schedule_cap: Duration,
    /// Each client's first failed handshake, by what it said.
    pub failures: std::collections::BTreeMap<String, usize>,
    /// Where the clients that never came back were when the wait gave up.
    pub never_by_phase: std::collections::BTreeMap<&'static str, usize>,
}

/// A small xorshift: the jitter needs spread, not cryptography (no dependency for it).
struct Jitter(u64);

impl Jitter {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub async fn run(server: &mut ServerProcess, carts: usize, per_cart: usize) -> Result<RestartReport, String> {
    let flavor = server.flavor;
    let base = server.base.clone();
    let addr = base.trim_start_matches("http://").to_owned();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().map_err(|e| e.to_string())?;
    let cookies = sessions(&http, &base, carts).await?;
    let mut report = RestartReport { schedule_cap: ReconnectPolicy::default().restart_spread, ..Default::default() };

    let wanted: Vec<usize> = (0..carts).flat_map(|c| std::iter::repeat_n(c, per_cart)).collect();
    let connected: Vec<_> = futures_util::stream::iter(wanted)
        .map(|cart| {
            let (cookie, addr) = (cookies[cart].clone(), addr.clone());
            async move { open_socket(flavor, &addr, &cookie, None).await.map(|(ws, _)| (cart, ws)) }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let origin = Instant::now();
    let sigterm_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let back = Arc::new(AtomicUsize::new(0));
    let all_back = Arc::new(tokio::sync::Notify::new());
    let stop = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for (index, result) in connected.into_iter().enumerate() {
        let Ok((cart, mut ws)) = result else {
            report.connections_failed += 1;
            continue;
        };
        report.connections += 1;
        let (http, addr, url) = (http.clone(), addr.clone(), format!("{base}/api/cart"));
        let mut cookie = cookies[cart].clone();
        let (sigterm_at, back, all_back) = (sigterm_at.clone(), back.clone(), all_back.clone());
        let mut stop = stop.1.clone();
        clients.push(tokio::spawn(async move {
            let mut out = Client::default();
            let mut schedule = ReconnectSchedule::new(ReconnectPolicy::default());
            let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
            schedule.opened(0);
            // Live until the server lets go; the close code decides the first wait.
            let code = loop {
                match ws.next().await {
                    Some(Incoming::Close(code)) => break code,
                    Some(Incoming::Text(_)) => continue,
                    None => break None,
                }
            };
            // Its file goes now: ten thousand closed sockets kept open while their clients reconnect would
            // double this process's files.
            drop(ws);
            let now_ms = |o: Instant| o.elapsed().as_millis() as u64;
            let mut delay = schedule.closed_with(now_ms(origin), code, jitter.unit());
            loop {
                out.phase = 1;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return out,
                }
                out.phase = 2;
                let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, open_socket(flavor, &addr, &cookie, None)).await;
                match attempt {
                    Ok(Ok((ws, handshake))) => {
                        let since = sigterm_at.lock().ok().and_then(|t| *t).map_or(Duration::ZERO, |t| t.elapsed());
                        out.reconnected = Some(since);
                        out.handshake = Some(handshake);
                        back.fetch_add(1, Ordering::AcqRel);
                        all_back.notify_one();
                        let _ = stop.changed().await;
                        drop(ws);
                        return out;
                    }
                    Ok(Err(e)) if e.contains("Connection refused") => out.refused += 1,
                    Ok(Err(e)) if e.contains("401") && flavor == Flavor::NodeWs => {
                        if let Ok(fresh) = session(&http, &url).await {
                            cookie = fresh;
                            out.new_sessions += 1;
                            delay = Duration::ZERO;
                            continue;
                        }
                        out.failed += 1;
                        out.first_failure.get_or_insert_with(|| "no new session".to_owned());
                    }
                    Ok(Err(e)) => {
                        out.failed += 1;
                        out.first_failure.get_or_insert(e);
                    }
                    Err(_) => {
                        out.failed += 1;
                        out.first_failure.get_or_insert_with(|| format!("no snapshot within {ATTEMPT_TIMEOUT:?}"));
                    }
                }
                delay = schedule.closed_with(now_ms(origin), None, jitter.unit());
            }
        }));
    }

    // The restart, and `/healthz` from the moment the new process listens.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    if let Ok(mut t) = sigterm_at.lock() {
        *t = Some(asked);
    }
    report.exit = server.restart().await?;
    report.ready = asked.elapsed();
    let liveness = flavor.liveness_url(&base);
    let waiting = async {
        loop {
            if back.load(Ordering::Acquire) >= report.connections {
                return;
            }
            all_back.notified().await;
        }
    };
    // `/healthz` until everyone is back (or the wait gives up): what it measured is kept either way.
    let everyone_back = std::cell::Cell::new(false);
    let health = std::cell::RefCell::new((Samples::default(), 0usize));
    let probe = async {
        while !everyone_back.get() {
            let t = Instant::now();
            let answered = tokio::time::timeout(Duration::from_secs(5), http.get(&liveness).send()).await;
            match answered {
                Ok(Ok(r)) if r.status().is_success() => health.borrow_mut().0.push(t.elapsed().as_micros() as u64),
                _ => health.borrow_mut().1 += 1,
            }
            tokio::time::sleep(HEALTH_EVERY.saturating_sub(t.elapsed())).await;
        }
    };
    let waited = async {
        let _ = tokio::time::timeout(GIVE_UP, waiting).await;
        everyone_back.set(true);
    };
    tokio::join!(waited, probe);
    let (health, failed) = health.into_inner();
    report.health = health;
    report.health_failed = failed;
    let _ = stop.0.send(true);
    for c in clients {
        let out = c.await.map_err(|e| e.to_string())?;
        match out.reconnected {
            Some(t) => report.reconnected.push(t.as_micros() as u64),
            None => {
                report.never += 1;
                *report
                    .never_by_phase
                    .entry(["live", "waiting", "trying"][usize::from(out.phase.min(2))])
                    .or_default() += 1;
            }
        }
        if let Some(failure) = out.first_failure {
            let kind: String = failure.chars().take(80).collect();
            *report.failures.entry(kind).or_default() += 1;
        }
        if let Some(h) = out.handshake {
            report.handshake.push(h.as_micros() as u64);
        }
        report.refused += out.refused;
        report.failed_handshakes += out.failed;
        report.new_sessions += out.new_sessions;
    }
    Ok(report)
}

#[derive(Debug, Default)]
struct Client {
    reconnected: Option<Duration>,
    handshake: Option<Duration>,
    refused: usize,
    failed: usize,
    new_sessions: usize,
    first_failure: Option<String>,
    /// Where a client that never came back was: 0 still on the old connection, 1 waiting, 2 trying.
    phase: u8,
}
