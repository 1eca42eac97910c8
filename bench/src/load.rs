//! One traffic scenario: K sessions, K×N WebSockets, M cart changes over REST at a rate, and for every change
//! the time until each subscriber of its cart has a `CART_UPDATE` with that version or newer. Optionally a
//! product storm (S5): a service PATCHes one product's stock at a fixed rate for a while, in the middle of the
//! cart traffic, and for every revision the time until *every* connection has it or a newer one.
//!
//! Each cart has at most one change in flight, so the version a change will produce is known before it is
//! sent (versions grow by exactly one per change, and every change changes the cart): the send time is
//! recorded under that version, and a subscriber that receives version `v` settles every version up to `v` it
//! had not seen — a coalesced (skipped) version counts as delivered by the newer snapshot, as the protocol says.
//! Product revisions are settled the same way: the storm's PATCHes go one at a time, so revision `base + k`
//! is the `k`-th, and a connection that receives revision `r` has every revision up to `r`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::process::{Flavor, ServerProcess};
pub use crate::socket::{Incoming, Socket};
use crate::stats::Samples;
use crate::target::{cart_version, product_revision};

/// WebSocket handshakes in flight at once.
pub const CONNECT_CONCURRENCY: usize = 256;
/// How long subscribers may take to catch up after the last change before the rest counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Unanswered PATCHes at once in the storm.
const STORM_IN_FLIGHT: usize = 64;
/// Subscribers that measure a PING → PONG round trip at the end.
const PING_SAMPLES: usize = 200;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub carts: usize,
    pub subscribers_per_cart: usize,
    pub mutations: usize,
    /// Changes per second over all carts; `None`: as fast as the server answers.
    pub rate: Option<f64>,
    pub storm: Option<Storm>,
}

/// A service changing one product's stock during the cart traffic.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    pub per_second: f64,
    pub seconds: f64,
    /// Seconds after the cart traffic starts (the cart fan-out before it is the "without the storm" figure).
    pub after: f64,
}

impl Storm {
    fn patches(&self) -> usize {
        (self.per_second * self.seconds).round() as usize
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub connections_ok: usize,
    pub connections_failed: usize,
    pub handshake: Samples,
    pub rss_before: u64,
    pub rss_after: u64,
    pub post: Samples,
    pub post_failed: usize,
    /// Cart fan-out of changes sent before the storm (all of them without one).
    pub fanout: Samples,
    pub deliveries: u64,
    pub lost: u64,
    pub mutations_done: usize,
    pub mutation_seconds: f64,
    pub ping: Samples,
    pub cpu_percent: f64,
    /// Connections the server closed while the scenario ran.
    pub dropped: usize,
    pub storm: Option<StormReport>,
    /// From our server's own histogram (`cartwheel_broadcast_latency_seconds`): commit → frame written, as the
    /// upper bounds of the buckets holding p50, p99 and p99.9 (seconds).
    pub server_fanout: Option<[f64; 3]>,
    /// Redis mode, from the first instance's histograms (bucket bounds of p50, p99, p99.9, seconds): Redis
    /// round trips, and pub/sub lag from the publishing commit to this instance receiving it.
    pub redis_round_trip: Option<[f64; 3]>,
    pub redis_pubsub_lag: Option<[f64; 3]>,
    /// Redis mode: what the first instance counted (`name value` lines) — resubscriptions, conflicts, ...
    pub redis_counters: Vec<String>,
}

#[derive(Debug, Default)]
pub struct StormReport {
    pub patches: usize,
    /// How long the PATCHes took to send and be answered (longer than planned when the server cannot take them).
    pub seconds: f64,
    pub patch: Samples,
    /// Per revision: the time from its PATCH being sent until every connection had it or a newer one.
    pub everyone: Samples,
    /// Connections that did not end on the final revision.
    pub left_behind: usize,
    /// Cart fan-out of changes sent during the storm.
    pub fanout: Samples,
    pub rss_before: u64,
    pub rss_after: u64,
    /// `PRODUCT_UPDATE` frames the connections received, against patches × connections.
    pub product_frames: u64,
    /// The revision of the last change (base + PATCHes, or one more for each retried PATCH applied twice).
    pub final_revision: u64,
}

/// `n` sessions (cookies) from `GET /api/cart` on `base`.
pub async fn sessions(http: &reqwest::Client, base: &str, n: usize) -> Result<Vec<String>, String> {
    futures_util::stream::iter(0..n)
        .map(|_| {
            let http = http.clone();
            let url = format!("{base}/api/cart");
            async move { session(&http, &url).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// One new session's cookie from `url` (`…/api/cart`).
pub async fn session(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).ok_or("no session cookie")?;
    Ok(cookie.split(';').next().unwrap_or_default().to_owned())
}

/// Open one WebSocket to `addr` with `cookie`, from `source` when given (to spread over loopback addresses),
/// and wait for its first frame (the snapshot).
pub async fn open_socket(
    flavor: Flavor,
    addr: &str,
    cookie: &str,
    source: Option<IpAddr>,
) -> Result<(Socket, Duration), String> {
    let started = Instant::now();
    let target: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(source) = source {
        // Let `connect` pick the port for the whole 4-tuple: a port bound to the source address alone would
        // be taken from every destination at once, and the range runs out sooner.
        let on: libc::c_int = 1;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind((source, 0).into()).map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket.connect(target).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut ws = Socket::upgrade(stream, &flavor.socket_url(addr), cookie).await?;
    let handshake = started.elapsed();
    match ws.next().await {
        Some(Incoming::Text(_)) => Ok((ws, handshake)),
        other => Err(format!("no snapshot: {other:?}")),
    }
}

struct Subscriber {
    fanout: Samples,
    storm_fanout: Samples,
    last_seen: u64,
    revision: u64,
    product_frames: u64,
    closed: bool,
    ping: Option<u64>,
}

/// What the readers share: when each change was sent (µs since `epoch`, +1 so 0 means "not yet"), when the
/// storm started, and per revision when the last connection to have it got it (a connection has revision `r`
/// once it received `r` or newer).
struct Clocks {
    epoch: Instant,
    sent: Vec<Vec<AtomicU64>>,
    storm_start: AtomicU64,
    everyone_at: Vec<AtomicU64>,
    base_revision: u64,
    /// The storm's last revision, `u64::MAX` while it runs.
    final_revision: AtomicU64,
}

impl Clocks {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }
}

/// Run `scenario` against one server, or several sharing a Redis: sessions are made on the first; each
/// cart's subscribers are spread over all of them, and each cart's changes go to one of them in turn, so
/// most deliveries cross instances.
pub async fn run(servers: &[ServerProcess], scenario: &Scenario) -> Result<Report, String> {
    let server = servers.first().ok_or("no server")?;
    let flavor = server.flavor;
    let rss = || servers.iter().map(ServerProcess::rss_bytes).sum::<u64>();
    let cpu_time = || servers.iter().map(ServerProcess::cpu_time).sum::<Duration>();
    let addrs: Vec<String> = servers.iter().map(|s| s.base.trim_start_matches("http://").to_owned()).collect();
    let mut report = Report::default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(scenario.carts.min(512))
        .build()
        .map_err(|e| e.to_string())?;
    let base = server.base.clone();
    let cookies = sessions(&http, &base, scenario.carts).await?;

    // The storm's starting revision: one PATCH before anyone connects.
    let base_revision = match scenario.storm {
        Some(_) => patch(&http, flavor, &base, 0).await?.1,
        None => 0,
    };
    let patches = scenario.storm.map_or(0, |s| s.patches());
    let per_cart = scenario.mutations.div_ceil(scenario.carts.max(1));
    let finals: Vec<u64> = (0..scenario.carts)
        .map(|c| (0..scenario.mutations).filter(|i| i % scenario.carts == c).count() as u64)
        .collect();
    let clocks = Arc::new(Clocks {
        epoch: Instant::now(),
        sent: (0..scenario.carts).map(|_| (0..=per_cart).map(|_| AtomicU64::new(0)).collect()).collect(),
        storm_start: AtomicU64::new(u64::MAX),
        // Slack for a retried PATCH that the server had applied already (one more revision than PATCHes).
        everyone_at: (0..patches + STORM_IN_FLIGHT).map(|_| AtomicU64::new(0)).collect(),
        base_revision,
        final_revision: AtomicU64::new(if patches == 0 { base_revision } else { u64::MAX }),
    });

    // Sockets.
    tokio::time::sleep(Duration::from_millis(300)).await;
    report.rss_before = rss();
    // 0: running; 1: the finals are known, stop once reached; 2: stop now.
    let stop = tokio::sync::watch::channel(if patches == 0 { 1u8 } else { 0 });
    let wanted: Vec<(usize, usize)> =
        (0..scenario.carts).flat_map(|c| (0..scenario.subscribers_per_cart).map(move |s| (c, s))).collect();
    let connected: Vec<_> = futures_util::stream::iter(wanted)
        .map(|(cart, index)| {
            let cookie = cookies[cart].clone();
            let addr = addrs[index % addrs.len()].clone();
            async move { open_socket(flavor, &addr, &cookie, None).await.map(|(ws, h)| (cart, ws, h)) }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut readers = Vec::new();
    for result in connected {
        match result {
            Ok((cart, ws, handshake)) => {
                report.connections_ok += 1;
                report.handshake.push(handshake.as_micros() as u64);
                let pinger = readers.len() < PING_SAMPLES;
                readers.push(tokio::spawn(read(
                    ws,
                    flavor,
                    cart,
                    finals[cart],
                    clocks.clone(),
                    stop.1.clone(),
                    pinger,
                )));
            }
            Err(e) => {
                if report.connections_failed == 0 {
                    eprintln!("first failed connection: {e}");
                }
                report.connections_failed += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.rss_after = rss();

    // Cart changes: one driver per cart, each at most one in flight, paced on a global open-loop schedule.
    let cpu_before = cpu_time();
    let started = Instant::now();
    let drivers: Vec<_> = (0..scenario.carts)
        .map(|cart| {
            let http = http.clone();
            let cookie = cookies[cart].clone();
            let target = servers[cart % servers.len()].base.clone();
            let clocks = clocks.clone();
            let slots: Vec<usize> = (0..scenario.mutations).filter(|i| i % scenario.carts == cart).collect();
            let rate = scenario.rate;
            tokio::spawn(async move {
                let mut post = Samples::default();
                let mut failed = 0usize;
                for (k, slot) in slots.into_iter().enumerate() {
                    if let Some(rate) = rate {
                        tokio::time::sleep_until((started + Duration::from_secs_f64(slot as f64 / rate)).into()).await;
                    }
                    let version = k + 1;
                    clocks.sent[cart][version].store(clocks.now(), Ordering::Release);
                    let t = Instant::now();
                    let ok = flavor
                        .mutation(&http, &target, &cookie, version)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false);
                    post.push(t.elapsed().as_micros() as u64);
                    if !ok {
                        failed += 1;
                        break; // the versions after this one would no longer be predictable
                    }
                }
                (post, failed)
            })
        })
        .collect();
    let storm = scenario.storm.map(|storm| {
        let (http, base, clocks) = (http.clone(), base.clone(), clocks.clone());
        let rss_pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
        tokio::spawn(async move {
            let rss = || rss_pids.iter().map(|p| crate::process::rss_of(*p)).sum::<u64>();
            tokio::time::sleep_until((started + Duration::from_secs_f64(storm.after)).into()).await;
            let mut out = StormReport { patches: storm.patches(), rss_before: rss(), ..StormReport::default() };
            let begun = Instant::now();
            clocks.storm_start.store(clocks.now(), Ordering::Release);
            // Open loop: each PATCH leaves at its time whether or not the ones before were answered (a service
            // does not wait for the shop's fan-out), with at most `STORM_IN_FLIGHT` unanswered.
            let in_flight = Arc::new(tokio::sync::Semaphore::new(STORM_IN_FLIGHT));
            let mut calls = Vec::with_capacity(storm.patches());
            for k in 0..storm.patches() {
                tokio::time::sleep_until((begun + Duration::from_secs_f64(k as f64 / storm.per_second)).into()).await;
                let permit = in_flight.clone().acquire_owned().await.map_err(|e| e.to_string())?;
                let (http, base, clocks) = (http.clone(), base.clone(), clocks.clone());
                calls.push(tokio::spawn(async move {
                    let at = clocks.now();
                    // A connection the server dropped (a keep-alive it closed) is tried again, twice.
                    let mut answer = patch(&http, flavor, &base, k + 1).await;
                    for _ in 0..2 {
                        match &answer {
                            Err(e) if e.starts_with("PATCH: ") => answer = patch(&http, flavor, &base, k + 1).await,
                            _ => break,
                        }
                    }
                    drop(permit);
                    answer.map(|(took, revision)| (at, took, revision))
                }));
            }
            let mut sent_at = vec![0u64; storm.patches() + STORM_IN_FLIGHT];
            let mut last = clocks.base_revision;
            for call in calls {
                let (at, took, revision) = call.await.map_err(|e| e.to_string())??;
                out.patch.push(took.as_micros() as u64);
                last = last.max(revision);
                let slot = revision.checked_sub(clocks.base_revision + 1).map(|i| i as usize);
                match slot.and_then(|i| sent_at.get_mut(i)) {
                    Some(slot) => *slot = at,
                    None => return Err(format!("a PATCH made revision {revision}, outside the storm's")),
                }
            }
            out.final_revision = last;
            out.seconds = begun.elapsed().as_secs_f64();
            out.rss_after = rss();
            Ok::<_, String>((out, sent_at))
        })
    });
    for d in drivers {
        let (post, failed) = d.await.map_err(|e| e.to_string())?;
        report.mutations_done += post.len() - failed;
        report.post_failed += failed;
        report.post.extend(post);
    }
    report.mutation_seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu_before);
    report.cpu_percent = 100.0 * cpu.as_secs_f64() / report.mutation_seconds.max(1e-9);
    let mut patch_sent_at = Vec::new();
    if let Some(storm) = storm {
        let (out, sent_at) = storm.await.map_err(|e| e.to_string())??;
        clocks.final_revision.store(out.final_revision, Ordering::Release);
        report.storm = Some(out);
        patch_sent_at = sent_at;
    }
    let _ = stop.0.send(1);

    // Drain, then count what never arrived.
    let collect = async {
        let mut subs = Vec::new();
        for r in readers {
            if let Ok(s) = r.await {
                subs.push(s);
            }
        }
        subs
    };
    let stopper = async {
        tokio::time::sleep(DRAIN_TIMEOUT).await;
        let _ = stop.0.send(2);
        std::future::pending::<()>().await
    };
    let subs = tokio::select! { s = collect => s, () = stopper => unreachable!() };
    if flavor == Flavor::Ours {
        read_server_metrics(&http, &base, &mut report).await;
    }
    let final_revision = clocks.final_revision.load(Ordering::Acquire);
    for (cart, sub) in subs {
        report.deliveries += sub.last_seen;
        report.lost += finals[cart].saturating_sub(sub.last_seen);
        report.fanout.extend(sub.fanout);
        report.dropped += usize::from(sub.closed);
        if let Some(storm) = report.storm.as_mut() {
            storm.fanout.extend(sub.storm_fanout);
            storm.left_behind += usize::from(sub.revision < final_revision);
            storm.product_frames += sub.product_frames;
        }
        if let Some(p) = sub.ping {
            report.ping.push(p);
        }
    }
    if let Some(storm) = report.storm.as_mut() {
        // Over the connections that reached each revision; those that did not show in `left_behind`.
        for (slot, sent) in clocks.everyone_at.iter().zip(patch_sent_at) {
            let last = slot.load(Ordering::Acquire);
            if last > 0 && sent > 0 {
                storm.everyone.push(last.saturating_sub(sent));
            }
        }
    }
    Ok(report)
}

/// Set the stormed product's stock (a different value each time, so each is a change); returns the PATCH's
/// latency and the revision it made.
async fn patch(http: &reqwest::Client, flavor: Flavor, base: &str, k: usize) -> Result<(Duration, u64), String> {
    let t = Instant::now();
    let stock = 900_000 - (k as u32 % 800_000);
    let r = flavor.set_stock(http, base, stock).send().await.map_err(|e| format!("PATCH: {e}"))?;
    let status = r.status();
    let body = r.text().await.map_err(|e| format!("PATCH body: {e}"))?;
    if !status.is_success() {
        return Err(format!("PATCH answered {status}: {body}"));
    }
    let revision = crate::target::number_after(&body, "revision").ok_or_else(|| format!("no revision in {body}"))?;
    Ok((t.elapsed(), revision))
}

/// One subscriber: settle cart versions and product revisions as frames arrive, until both finals are reached
/// (or the drain gives up); then a PING for the round-trip sample.
async fn read(
    mut ws: Socket,
    flavor: Flavor,
    cart: usize,
    last: u64,
    clocks: Arc<Clocks>,
    mut stop: tokio::sync::watch::Receiver<u8>,
    pinger: bool,
) -> (usize, Subscriber) {
    let mut sub = Subscriber {
        fanout: Samples::default(),
        storm_fanout: Samples::default(),
        last_seen: 0,
        revision: clocks.base_revision,
        product_frames: 0,
        closed: false,
        ping: None,
    };
    loop {
        let state = *stop.borrow_and_update();
        let done = sub.last_seen >= last && sub.revision >= clocks.final_revision.load(Ordering::Acquire);
        if state == 2 || (state == 1 && done) {
            break;
        }
        let frame = tokio::select! {
            f = ws.next() => f,
            _ = stop.changed() => continue,
        };
        let text = match frame {
            Some(Incoming::Text(text)) => text,
            Some(Incoming::Close(_)) | None => {
                sub.closed = true;
                break;
            }
        };
        let now = clocks.now();
        if let Some(v) = cart_version(text) {
            let storm_start = clocks.storm_start.load(Ordering::Acquire);
            while sub.last_seen < v {
                sub.last_seen += 1;
                let at = clocks.sent[cart].get(sub.last_seen as usize).map_or(0, |a| a.load(Ordering::Acquire));
                if at > 0 {
                    let samples = if at >= storm_start { &mut sub.storm_fanout } else { &mut sub.fanout };
                    samples.push(now.saturating_sub(at));
                }
            }
        } else if let Some(r) = product_revision(text) {
            if !flavor.is_stormed_product(text) {
                continue;
            }
            sub.product_frames += 1;
            while sub.revision < r {
                sub.revision += 1;
                let k = (sub.revision - clocks.base_revision - 1) as usize;
                if let Some(last) = clocks.everyone_at.get(k) {
                    last.fetch_max(now, Ordering::AcqRel);
                }
            }
        }
    }
    if pinger && !sub.closed && sub.last_seen >= last {
        let started = Instant::now();
        if ws.send_text(r#"{"type":"PING","id":1}"#).await.is_ok() {
            while let Some(Incoming::Text(t)) = ws.next().await {
                if t.contains("PONG") {
                    sub.ping = Some(started.elapsed().as_micros() as u64);
                    break;
                }
            }
        }
    }
    ws.close().await;
    (cart, sub)
}

async fn read_server_metrics(http: &reqwest::Client, base: &str, report: &mut Report) {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else { return };
    let Ok(text) = r.text().await else { return };
    report.server_fanout = histogram_quantiles(&text, "cartwheel_broadcast_latency_seconds", [0.5, 0.99, 0.999]);
    report.redis_round_trip = histogram_quantiles(&text, "cartwheel_redis_round_trip_seconds", [0.5, 0.99, 0.999]);
    report.redis_pubsub_lag = histogram_quantiles(&text, "cartwheel_redis_pubsub_lag_seconds", [0.5, 0.99, 0.999]);
    report.redis_counters = text
        .lines()
        .filter(|l| {
            [
                "cartwheel_redis_resubscriptions_total ",
                "cartwheel_redis_conflicts_total ",
                "cartwheel_ws_slow_consumer_events_total ",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(str::to_owned)
        .collect();
}

/// Quantiles of a Prometheus histogram, as the upper bound (`le`) of the bucket each falls in.
fn histogram_quantiles(metrics: &str, name: &str, qs: [f64; 3]) -> Option<[f64; 3]> {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let mut out = [0.0; 3];
    for (slot, q) in out.iter_mut().zip(qs) {
        *slot = buckets.iter().find(|(_, c)| *c >= q * total).map_or(f64::INFINITY, |(le, _)| *le);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn histogram_quantiles_pick_the_bucket_bounds() {
        let text = "x_bucket{le=\"0.001\"} 50\nx_bucket{le=\"0.002\"} 99\nx_bucket{le=\"0.004\"} 100\nx_bucket{le=\"+Inf\"} 100\n";
        assert_eq!(super::histogram_quantiles(text, "x", [0.5, 0.99, 0.999]), Some([0.001, 0.002, 0.004]));
        assert_eq!(super::histogram_quantiles("", "x", [0.5, 0.99, 0.999]), None);
    }
}
