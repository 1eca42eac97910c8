//! The faults real clients and networks produce, against the real server: a write path that stops while reads
//! still work, and clients retrying while the server starts.

use std::time::{Duration, Instant};

use cartwheel_core::reconnect::{ReconnectPolicy, ReconnectSchedule};
use serde_json::Value;

use crate::support::{TestServer, EVENT_TIMEOUT};

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
