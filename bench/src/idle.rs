//! S7, many idle connections: N WebSockets (three per session, as a page holds one per bundle), opened from
//! several loopback source addresses (127.0.0.2, 127.0.0.3, …: each gives its own range of ephemeral ports),
//! then the server's RSS per connection, and the time one product change takes to reach all of them.
//!
//! Every socket is a file in this process and one in the server, so N is capped by the open-file limit
//! (raised to the hard limit first); the report says what was asked for, what was held, and why.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::load::{open_socket, sessions, Incoming, CONNECT_CONCURRENCY};
use crate::process::{Flavor, ServerProcess};
use crate::stats::Samples;
use crate::target::product_revision;

/// Connections per loopback source address (below the 28,231 ephemeral ports of Linux's default range).
const PER_SOURCE: usize = 20_000;
/// Files this process and the server keep for themselves besides the sockets.
const SPARE_FILES: u64 = 1_000;
/// How long the broadcast may take to reach everyone before the rest count as missed.
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct IdleReport {
    pub asked: usize,
    pub held: usize,
    pub failed: usize,
    pub cap_reason: Option<String>,
    pub sources: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    pub connect_seconds: f64,
    /// Per connection: PATCH sent → its `PRODUCT_UPDATE` received.
    pub broadcast: Samples,
    pub missed: usize,
}

/// How many connections the open-file limit allows (client and server each hold one file per socket).
pub fn capacity(asked: usize, open_files: u64) -> (usize, Option<String>) {
    let room = usize::try_from(open_files.saturating_sub(SPARE_FILES)).unwrap_or(usize::MAX);
    if room < asked {
        (
            room,
            Some(format!(
                "the open-file limit is {open_files} per process (hard limit; raising it needs CAP_SYS_RESOURCE)"
            )),
        )
    } else {
        (asked, None)
    }
}

pub async fn run(server: &ServerProcess, asked: usize, open_files: u64) -> Result<IdleReport, String> {
    let flavor: Flavor = server.flavor;
    let base = server.base.clone();
    let addr = base.trim_start_matches("http://").to_owned();
    let (held, cap_reason) = capacity(asked, open_files);
    let mut report = IdleReport { asked, cap_reason, sources: held.div_ceil(PER_SOURCE), ..Default::default() };
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().map_err(|e| e.to_string())?;
    let carts = held.div_ceil(3);
    let cookies = sessions(&http, &base, carts).await?;
    // One change first, so the broadcast's revision is known.
    let first = set_stock(&http, flavor, &base, 500_000).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    report.rss_before = server.rss_bytes();
    let started = Instant::now();
    let connected: Vec<_> = futures_util::stream::iter(0..held)
        .map(|i| {
            let (cookie, addr) = (cookies[i / 3].clone(), addr.clone());
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8));
            async move { open_socket(flavor, &addr, &cookie, Some(source)).await.map(|(ws, _)| ws) }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    report.connect_seconds = started.elapsed().as_secs_f64();
    let (sent_tx, sent_rx) = tokio::sync::watch::channel(None::<Instant>);
    let mut readers = Vec::new();
    for result in connected {
        let mut ws = match result {
            Ok(ws) => ws,
            Err(e) => {
                if report.failed == 0 {
                    eprintln!("first failed connection: {e}");
                }
                report.failed += 1;
                continue;
            }
        };
        report.held += 1;
        let mut sent = sent_rx.clone();
        readers.push(tokio::spawn(async move {
            let wait = async {
                while let Some(Incoming::Text(text)) = ws.next().await {
                    if product_revision(text).is_some_and(|r| r > first) && flavor.is_stormed_product(text) {
                        let received = Instant::now();
                        // The PATCH is sent before anyone can receive its frame; wait for its time if needed.
                        let at = loop {
                            if let Some(at) = *sent.borrow_and_update() {
                                break at;
                            }
                            if sent.changed().await.is_err() {
                                return None;
                            }
                        };
                        return Some(received.saturating_duration_since(at));
                    }
                }
                None
            };
            let took = tokio::time::timeout(BROADCAST_TIMEOUT, wait).await.ok().flatten();
            drop(ws);
            took
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.rss_after = server.rss_bytes();
    let _ = sent_tx.send(Some(Instant::now()));
    set_stock(&http, flavor, &base, 400_000).await?;
    for r in readers {
        match r.await.ok().flatten() {
            Some(took) => report.broadcast.push(took.as_micros() as u64),
            None => report.missed += 1,
        }
    }
    Ok(report)
}

async fn set_stock(http: &reqwest::Client, flavor: Flavor, base: &str, stock: u32) -> Result<u64, String> {
    let r = flavor.set_stock(http, base, stock).send().await.map_err(|e| format!("PATCH: {e}"))?;
    let body = r.text().await.map_err(|e| e.to_string())?;
    crate::target::number_after(&body, "revision").ok_or_else(|| format!("no revision in {body}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_file_limit_caps_the_connections() {
        assert_eq!(super::capacity(100_000, 200_000), (100_000, None));
        let (held, reason) = super::capacity(100_000, 20_000);
        assert_eq!(held, 19_000);
        assert!(reason.is_some());
    }
}
