//! The faults real clients and networks produce, against the real server: a write path that stops while reads
//! still work, and clients retrying while the server starts.

use std::time::{Duration, Instant};

use cartwheel_core::reconnect::{ReconnectPolicy, ReconnectSchedule};
use serde_json::Value;

use crate::support::{Shopper, TestServer, EVENT_TIMEOUT};

async fn health(server: &TestServer) -> (u16, Value) {
    let response = reqwest::get(server.url("/healthz")).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Another process holding the database's write lock (a backup, an operator's `sqlite3` shell) stops the
/// writer while reads still work: `/healthz` must say so, naming the part, and recover when it is released.
#[tokio::test]
async fn healthz_reports_a_stopped_writer_and_recovers_when_it_runs_again() {
    let server = TestServer::start_with(|c| c.health_probe_timeout = Duration::from_millis(300)).await;
    let (status, body) = health(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store"], serde_json::json!({ "read": "ok", "write": "ok" }));

    let blocker = rusqlite::Connection::open(&server.db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, body) = health(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["store"]["read"], "ok", "reads still work: {body}");
    assert_eq!(body["store"]["write"], "no answer within 300 ms", "{body}");

    blocker.execute_batch("ROLLBACK").unwrap();
    // The writer's queued probes commit once the lock is free; the next check is healthy again.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let (status, body) = health(&server).await;
        if status == 200 {
            assert_eq!(body["store"]["write"], "ok");
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {body}");
    }
}

/// Twenty clients keep reconnecting (the browsers' own schedule: exponential backoff with full jitter) while
/// the server starts. The server must not listen before it can answer: an attempt during start-up is refused,
/// so each client retries on its own jitter, instead of being queued by the kernel and answered together with
/// all the others at readiness.
#[tokio::test]
async fn clients_reconnecting_during_start_up_are_refused_until_ready_and_arrive_spread_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("carts.sqlite3");
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // Start-up waits for the database's lock (held here, as by a backup running while the server restarts).
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE; CREATE TABLE held (x); ").unwrap();

    let (refused_twice, mut refusals) = tokio::sync::mpsc::channel::<()>(20);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let refused_twice = refused_twice.clone();
            tokio::spawn(async move {
                let mut schedule = ReconnectSchedule::new(ReconnectPolicy::default());
                let started = Instant::now();
                loop {
                    if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
                        return (Instant::now(), tcp);
                    }
                    if schedule.failures() == 1 {
                        let _ = refused_twice.send(()).await;
                    }
                    let now = u64::try_from(started.elapsed().as_millis()).unwrap();
                    tokio::time::sleep(schedule.closed(now, rand::random::<f64>())).await;
                }
            })
        })
        .collect();
    let starting = tokio::spawn({
        let db = db.clone();
        async move { TestServer::start_on(&db, |c| c.bind = addr).await }
    });
    // Every client has been refused twice: they are out of step, as real reconnecting browsers are.
    for _ in 0..20 {
        tokio::time::timeout(EVENT_TIMEOUT, refusals.recv()).await.unwrap().unwrap();
    }
    let released = Instant::now();
    blocker.execute_batch("ROLLBACK").unwrap();
    let server = tokio::time::timeout(EVENT_TIMEOUT, starting).await.expect("starts once the lock is free").unwrap();

    let mut arrivals = Vec::new();
    for client in clients {
        let (at, mut tcp) = tokio::time::timeout(Duration::from_secs(30), client).await.unwrap().unwrap();
        assert!(at >= released, "a connection was accepted before the server was ready");
        // Accepted means answered: the server is ready for it.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        arrivals.push(at);
    }
    let first = *arrivals.iter().min().unwrap();
    let last = *arrivals.iter().max().unwrap();
    let spread = last - first;
    eprintln!(
        "start-up: 20 reconnecting clients arrived over {} ms after readiness (first {} ms after the lock was released)",
        spread.as_millis(),
        (first - released).as_millis()
    );
    assert!(spread >= Duration::from_millis(100), "arrivals bunched within {} ms", spread.as_millis());
    server.stop().await;
}

/// How a client hangs up: a closed tab (FIN) or a connection torn down (RST, as when a phone loses signal
/// and the stack gives up).
#[derive(Clone, Copy, Debug)]
enum HangUp {
    Fin,
    Rst,
}

/// Send `request` over raw TCP and hang up `after` the last byte without reading the answer.
async fn send_and_hang_up(addr: std::net::SocketAddr, request: &str, after: Duration, how: HangUp) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    if !after.is_zero() {
        // The fault's timing, not a synchronisation: the point is *when* the client goes away.
        tokio::time::sleep(after).await;
    }
    if let HangUp::Rst = how {
        socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(tcp);
}

fn raw_request(method: &str, path: &str, host: std::net::SocketAddr, headers: &[(&str, &str)], body: &str) -> String {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    request
}

/// The latest cart version (per epoch) and product revisions a socket has received so far.
#[derive(Default)]
struct Seen {
    cart: Option<(String, u64)>,
    products: std::collections::HashMap<String, u64>,
    frames: usize,
}

impl Seen {
    fn take(&mut self, frame: &Value) {
        self.frames += 1;
        match frame["type"].as_str() {
            Some("CART_UPDATE") => {
                let epoch = frame["data"]["epoch"].as_str().unwrap().to_owned();
                let version = frame["version"].as_u64().unwrap();
                let newer = self.cart.as_ref().is_none_or(|(e, v)| *e != epoch || version > *v);
                assert!(newer, "a socket was sent an old version: {frame}");
                self.cart = Some((epoch, version));
            }
            Some("PRODUCT_UPDATE") => {
                let id = frame["data"]["id"].as_str().unwrap().to_owned();
                let revision = frame["data"]["revision"].as_u64().unwrap();
                let held = self.products.entry(id).or_default();
                *held = (*held).max(revision);
            }
            _ => {}
        }
    }
}

/// Read `ws` until `done(seen)` holds or nothing arrives for [`EVENT_TIMEOUT`]; returns whether it held.
async fn read_until(ws: &mut crate::support::Ws, seen: &mut Seen, done: impl Fn(&Seen) -> bool) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    while !done(seen) {
        match tokio::time::timeout(EVENT_TIMEOUT, ws.stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => seen.take(&serde_json::from_str(t.as_str()).unwrap()),
            Ok(Some(Ok(_))) => {}
            _ => return false,
        }
    }
    true
}

const SUITE_TOKEN: &str = "hang-up-suite-service-token";

/// Counts of one run of the hang-up suite.
#[derive(Debug)]
struct HangUpCounts {
    sent: usize,
    committed_cart_versions: u64,
    changed_products: usize,
    sockets: usize,
    /// Cart versions and product states that reached a socket, counted once per socket they concern.
    delivered: u64,
    lost: u64,
}

/// ≥ 200 changes of every kind, each sent over raw TCP by a client that hangs up (FIN or RST) 0–3 ms after
/// its last byte; then every committed change must have reached every open socket of its cart (product
/// changes: every socket). `servers` take the requests and the sockets in turn (several instances in Redis
/// mode).
async fn hang_up_suite(servers: &[&TestServer]) -> HangUpCounts {
    use rand::Rng;
    let first = servers[0];
    let products: Vec<Value> = reqwest::get(first.url("/api/products")).await.unwrap().json().await.unwrap();
    let plenty: Vec<String> = products
        .iter()
        .filter(|p| p["stock"].as_u64().unwrap() >= 50)
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .take(4)
        .collect();
    assert_eq!(plenty.len(), 4, "four products with stock to spare");
    let mut shoppers = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..4 {
        let shopper = Shopper::new(servers[i % servers.len()]).await;
        for tab in 0..2 {
            let on = shopper.on(servers[(i + tab) % servers.len()]);
            sockets.push((i, on.ws().await, Seen::default()));
        }
        shoppers.push(shopper);
    }
    // Every socket starts from its snapshot.
    for (_, ws, seen) in &mut sockets {
        assert!(read_until(ws, seen, |s| s.cart.is_some()).await);
    }
    let kinds = ["add", "delta", "put", "delete", "clear", "checkout", "service"];
    let mut rng = rand::rng();
    let rounds = 210;
    for n in 0..rounds {
        let kind = kinds[n % kinds.len()];
        let shopper = &shoppers[rng.random_range(0..shoppers.len())];
        let server = servers[rng.random_range(0..servers.len())];
        let product = &plenty[rng.random_range(0..plenty.len())];
        let cookie = [("Cookie", shopper.cookie.as_str())];
        let item = format!("/api/cart/items/{product}");
        let request = match kind {
            "add" => {
                let body = format!(r#"{{"product_id":"{product}","quantity":{}}}"#, rng.random_range(1..3));
                raw_request("POST", "/api/cart", server.addr, &cookie, &body)
            }
            "delta" => {
                let delta = if rng.random_bool(0.7) { 1 } else { -1 };
                raw_request("PATCH", &item, server.addr, &cookie, &format!(r#"{{"delta":{delta}}}"#))
            }
            "put" => raw_request(
                "PUT",
                &item,
                server.addr,
                &cookie,
                &format!(r#"{{"quantity":{}}}"#, rng.random_range(0..4)),
            ),
            "delete" => raw_request("DELETE", &item, server.addr, &cookie, ""),
            "clear" => raw_request("DELETE", "/api/cart", server.addr, &cookie, ""),
            "checkout" => raw_request("POST", "/api/cart/checkout", server.addr, &cookie, ""),
            _ => {
                let body = format!(
                    r#"{{"stock":{},"price_cents":{}}}"#,
                    rng.random_range(900..1000),
                    rng.random_range(500..5000)
                );
                let auth = format!("Bearer {SUITE_TOKEN}");
                raw_request(
                    "PATCH",
                    &format!("/api/service/products/{product}"),
                    server.addr,
                    &[("Authorization", &auth)],
                    &body,
                )
            }
        };
        let after = Duration::from_micros(rng.random_range(0..=3000));
        let how = if n % 2 == 0 { HangUp::Fin } else { HangUp::Rst };
        send_and_hang_up(server.addr, &request, after, how).await;
    }

    // What was committed is what the store says now; each socket must get there.
    let mut committed_cart_versions = 0;
    let mut lost = 0;
    let mut delivered = 0;
    for (i, shopper) in shoppers.iter().enumerate() {
        // Ask until the answer stops moving: a hung-up request may still be committing.
        let mut stored = shopper.cart().await.body;
        let epoch = stored["epoch"].as_str().unwrap().to_owned();
        for (_, ws, seen) in sockets.iter_mut().filter(|(owner, _, _)| *owner == i) {
            loop {
                let version = stored["version"].as_u64().unwrap();
                let reached =
                    read_until(ws, seen, |s| s.cart.as_ref().is_some_and(|(e, v)| *e == epoch && *v >= version)).await;
                if !reached {
                    let shown = seen.cart.as_ref().map_or(0, |(_, v)| *v);
                    lost += version.saturating_sub(shown);
                    delivered += shown;
                    break;
                }
                let again = shopper.cart().await.body;
                if again["version"] == stored["version"] {
                    delivered += version;
                    break;
                }
                stored = again;
            }
        }
        committed_cart_versions += stored["version"].as_u64().unwrap();
    }
    let now: Vec<Value> = reqwest::get(first.url("/api/products")).await.unwrap().json().await.unwrap();
    let mut changed_products = 0;
    for product in &now {
        let id = product["id"].as_str().unwrap();
        let revision = product["revision"].as_u64().unwrap();
        let before = products.iter().find(|p| p["id"] == id).unwrap()["revision"].as_u64().unwrap();
        if revision == before {
            continue;
        }
        changed_products += 1;
        for (_, ws, seen) in &mut sockets {
            if read_until(ws, seen, |s| s.products.get(id).is_some_and(|r| *r >= revision)).await {
                delivered += 1;
            } else {
                lost += 1;
            }
        }
    }
    HangUpCounts { sent: rounds, committed_cart_versions, changed_products, sockets: sockets.len(), delivered, lost }
}

#[tokio::test]
async fn hang_up_suite_loses_nothing_with_sqlite() {
    let server = TestServer::start_with(|c| {
        c.no_rate_limit = true;
        c.service_tokens = vec![SUITE_TOKEN.to_owned()];
    })
    .await;
    let counts = hang_up_suite(&[&server]).await;
    eprintln!("hang-up suite, SQLite: {counts:?}");
    assert!(counts.committed_cart_versions >= 50, "most changes committed before the hang-up: {counts:?}");
    assert!(counts.changed_products >= 1, "{counts:?}");
    assert!(counts.sent >= 200 && counts.sockets == 8, "{counts:?}");
    assert_eq!(counts.lost, 0, "{counts:?}");
    // Two tabs per cart, every socket for products: all of it arrived.
    assert_eq!(counts.delivered, 2 * counts.committed_cart_versions + 8 * counts.changed_products as u64, "{counts:?}");
}

#[tokio::test]
async fn hang_up_suite_loses_nothing_over_two_instances_sharing_redis() {
    let redis = crate::support::redis::RedisServer::start();
    let url = redis.url();
    let start = || {
        let url = url.clone();
        TestServer::start_with(move |c| {
            c.redis_url = Some(url);
            c.no_rate_limit = true;
            c.service_tokens = vec![SUITE_TOKEN.to_owned()];
        })
    };
    let (one, two) = (start().await, start().await);
    let counts = hang_up_suite(&[&one, &two]).await;
    eprintln!("hang-up suite, Redis (two instances): {counts:?}");
    assert!(counts.committed_cart_versions >= 50, "most changes committed before the hang-up: {counts:?}");
    assert!(counts.changed_products >= 1, "{counts:?}");
    assert!(counts.sent >= 200 && counts.sockets == 8, "{counts:?}");
    assert_eq!(counts.lost, 0, "{counts:?}");
    // Two tabs per cart, every socket for products: all of it arrived.
    assert_eq!(counts.delivered, 2 * counts.committed_cart_versions + 8 * counts.changed_products as u64, "{counts:?}");
}
