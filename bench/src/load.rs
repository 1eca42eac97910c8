//! One scenario: K sessions, K×N WebSockets, M mutations over REST at a rate, and for every mutation the time
//! until each subscriber of its cart has a `CART_UPDATE` with that version or newer.
//!
//! Each cart has at most one mutation in flight, so the version a mutation will produce is known before it is
//! sent (versions grow by exactly one per change, and every mutation changes the cart): the send time is
//! recorded under that version, and a subscriber that receives version `v` settles every version up to `v` it
//! had not seen — a coalesced (skipped) version counts as delivered by the newer snapshot, as the protocol says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::process::ServerProcess;
use crate::stats::Samples;

/// The product every mutation sets (plenty of stock, so 1 ↔ 2 always succeeds).
const PRODUCT: &str = "linen-notebook";
/// WebSocket handshakes in flight at once.
const CONNECT_CONCURRENCY: usize = 256;
/// How long subscribers may take to catch up after the last mutation before the rest counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Subscribers that measure a PING → PONG round trip at the end.
const PING_SAMPLES: usize = 200;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub carts: usize,
    pub subscribers_per_cart: usize,
    pub mutations: usize,
    /// Mutations per second over all carts; `None`: as fast as the server answers.
    pub rate: Option<f64>,
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
    pub fanout: Samples,
    pub deliveries: u64,
    pub lost: u64,
    pub mutations_done: usize,
    pub mutation_seconds: f64,
    pub ping: Samples,
    pub cpu_percent: f64,
    /// From the server's own histogram (`cartwheel_broadcast_latency_seconds`): commit → frame written, as the
    /// upper bounds of the buckets holding p50, p99 and p99.9 (seconds).
    pub server_fanout: Option<[f64; 3]>,
    /// Redis mode, from the first instance's histograms (bucket bounds of p50, p99, p99.9, seconds): Redis
    /// round trips, and pub/sub lag from the publishing commit to this instance receiving it.
    pub redis_round_trip: Option<[f64; 3]>,
    pub redis_pubsub_lag: Option<[f64; 3]>,
    /// Redis mode: what the first instance counted (`name value` lines) — resubscriptions, conflicts, ...
    pub redis_counters: Vec<String>,
}

struct Subscriber {
    samples: Samples,
    last_seen: u64,
    ping: Option<u64>,
}

/// Run `scenario` against one server, or several sharing a Redis: sessions are made on the first; each
/// cart's subscribers are spread over all of them, and each cart's mutations go to one of them in turn, so
/// most deliveries cross instances.
pub async fn run(servers: &[ServerProcess], scenario: &Scenario) -> Result<Report, String> {
    let server = servers.first().ok_or("no server")?;
    let rss = || servers.iter().map(ServerProcess::rss_bytes).sum::<u64>();
    let cpu_time = || servers.iter().map(ServerProcess::cpu_time).sum::<Duration>();
    let addrs: Vec<String> = servers.iter().map(|s| s.base.trim_start_matches("http://").to_owned()).collect();
    let mut report = Report::default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(scenario.carts.min(512))
        .build()
        .map_err(|e| e.to_string())?;
    let base = server.base.clone();

    // Sessions.
    let cookies: Vec<String> = futures_util::stream::iter(0..scenario.carts)
        .map(|_| {
            let http = http.clone();
            let url = format!("{base}/api/cart");
            async move {
                let r = http.get(url).send().await.map_err(|e| e.to_string())?;
                let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).ok_or("no session cookie")?;
                Ok::<_, String>(cookie.split(';').next().unwrap_or_default().to_owned())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    let per_cart = scenario.mutations.div_ceil(scenario.carts.max(1));
    let finals: Vec<u64> = (0..scenario.carts)
        .map(|c| (0..scenario.mutations).filter(|i| i % scenario.carts == c).count() as u64)
        .collect();
    let epoch = Instant::now();
    let sent: Arc<Vec<Vec<AtomicU64>>> =
        Arc::new((0..scenario.carts).map(|_| (0..=per_cart).map(|_| AtomicU64::new(0)).collect()).collect());

    // Sockets.
    tokio::time::sleep(Duration::from_millis(300)).await;
    report.rss_before = rss();
    let stop = tokio::sync::watch::channel(false);
    let wanted: Vec<(usize, usize)> =
        (0..scenario.carts).flat_map(|c| (0..scenario.subscribers_per_cart).map(move |s| (c, s))).collect();
    let connected: Vec<_> = futures_util::stream::iter(wanted)
        .map(|(cart, index)| {
            let cookie = cookies[cart].clone();
            let addr = addrs[index % addrs.len()].clone();
            async move {
                let mut request =
                    format!("ws://{addr}/ws?mfe=bench").into_client_request().map_err(|e| e.to_string())?;
                request.headers_mut().insert("cookie", HeaderValue::from_str(&cookie).map_err(|e| e.to_string())?);
                let started = Instant::now();
                let (mut ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
                let handshake = started.elapsed();
                // The snapshot.
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => {}
                    other => return Err(format!("no snapshot: {other:?}")),
                }
                Ok::<_, String>((cart, index, ws, handshake))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut readers = Vec::new();
    for result in connected {
        match result {
            Ok((cart, _index, mut ws, handshake)) => {
                report.connections_ok += 1;
                report.handshake.push(handshake.as_micros() as u64);
                let sent = sent.clone();
                let last = finals[cart];
                let mut stop = stop.1.clone();
                let pinger = readers.len() < PING_SAMPLES;
                readers.push(tokio::spawn(async move {
                    let mut sub = Subscriber { samples: Samples::default(), last_seen: 0, ping: None };
                    while sub.last_seen < last {
                        let frame = tokio::select! {
                            f = ws.next() => f,
                            _ = stop.changed() => break,
                        };
                        let text = match frame {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(_)) => continue,
                            _ => break,
                        };
                        let now = epoch.elapsed().as_micros() as u64;
                        let Some(v) = version_of(text.as_str()) else { continue };
                        while sub.last_seen < v {
                            sub.last_seen += 1;
                            let at = sent[cart].get(sub.last_seen as usize).map_or(0, |a| a.load(Ordering::Acquire));
                            if at > 0 {
                                sub.samples.push(now.saturating_sub(at - 1));
                            }
                        }
                    }
                    if pinger && sub.last_seen >= last {
                        let started = Instant::now();
                        if ws.send(Message::text(r#"{"type":"PING","id":1}"#)).await.is_ok() {
                            while let Some(Ok(m)) = ws.next().await {
                                if matches!(&m, Message::Text(t) if t.as_str().contains("PONG")) {
                                    sub.ping = Some(started.elapsed().as_micros() as u64);
                                    break;
                                }
                            }
                        }
                    }
                    let _ = ws.close(None).await;
                    (cart, sub)
                }));
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

    // Mutations: one driver per cart, each at most one in flight, paced on a global open-loop schedule.
    let cpu_before = cpu_time();
    let started = Instant::now();
    let drivers: Vec<_> = (0..scenario.carts)
        .map(|cart| {
            let http = http.clone();
            let cookie = cookies[cart].clone();
            let url = format!("{}/api/cart/items/{PRODUCT}", servers[cart % servers.len()].base);
            let sent = sent.clone();
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
                    let quantity = if version % 2 == 1 { 1 } else { 2 };
                    let at = epoch.elapsed().as_micros() as u64 + 1;
                    sent[cart][version].store(at, Ordering::Release);
                    let t = Instant::now();
                    let ok = http
                        .put(&url)
                        .header("cookie", &cookie)
                        .header("content-type", "application/json")
                        .body(format!(r#"{{"quantity":{quantity}}}"#))
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
    for d in drivers {
        let (post, failed) = d.await.map_err(|e| e.to_string())?;
        report.mutations_done += post.len() - failed;
        report.post_failed += failed;
        report.post.extend(post);
    }
    report.mutation_seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu_before);
    report.cpu_percent = 100.0 * cpu.as_secs_f64() / report.mutation_seconds.max(1e-9);

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
        let _ = stop.0.send(true);
        std::future::pending::<()>().await
    };
    let subs = tokio::select! { s = collect => s, () = stopper => unreachable!() };
    if let Ok(r) = http.get(format!("{base}/metrics")).send().await {
        if let Ok(text) = r.text().await {
            report.server_fanout =
                histogram_quantiles(&text, "cartwheel_broadcast_latency_seconds", [0.5, 0.99, 0.999]);
            report.redis_round_trip =
                histogram_quantiles(&text, "cartwheel_redis_round_trip_seconds", [0.5, 0.99, 0.999]);
            report.redis_pubsub_lag =
                histogram_quantiles(&text, "cartwheel_redis_pubsub_lag_seconds", [0.5, 0.99, 0.999]);
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
    }
    for (cart, sub) in subs {
        report.deliveries += sub.last_seen;
        report.lost += finals[cart].saturating_sub(sub.last_seen);
        report.fanout.extend(sub.samples);
        if let Some(p) = sub.ping {
            report.ping.push(p);
        }
    }
    Ok(report)
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

/// The version of a `CART_UPDATE` frame, read without parsing the cart.
fn version_of(text: &str) -> Option<u64> {
    if !text.starts_with(r#"{"type":"CART_UPDATE""#) {
        return None;
    }
    let rest = &text[text.find(r#""version":"#)? + 10..];
    let digits: &str = &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())];
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn histogram_quantiles_pick_the_bucket_bounds() {
        let text = "x_bucket{le=\"0.001\"} 50\nx_bucket{le=\"0.002\"} 99\nx_bucket{le=\"0.004\"} 100\nx_bucket{le=\"+Inf\"} 100\n";
        assert_eq!(super::histogram_quantiles(text, "x", [0.5, 0.99, 0.999]), Some([0.001, 0.002, 0.004]));
        assert_eq!(super::histogram_quantiles("", "x", [0.5, 0.99, 0.999]), None);
    }

    #[test]
    fn reads_the_version_of_an_update_only() {
        assert_eq!(version_of(r#"{"type":"CART_UPDATE","version":42,"data":{"version":42}}"#), Some(42));
        assert_eq!(version_of(r#"{"type":"PONG","id":1,"server_time_ms":5}"#), None);
    }
}
