//! Memory per idle WebSocket connection: start the real server binary on a fresh SQLite file, open N idle
//! connections (each its own session, each synced to its snapshot), and report the server's RSS delta per connection.
//!
//! ```sh
//! cargo build -p server --bin server && cargo run -p server --example idle_ws_rss -- 1000
//! ```
//! The server binary is taken from `CARTWHEEL_SERVER_BIN`, else `target/debug/server`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn open(http: &reqwest::Client, base: &str, addr: &str) -> impl Sized {
    let answer = http.get(format!("{base}/api/cart")).send().await.expect("GET /api/cart");
    let cookie =
        answer.headers()["set-cookie"].to_str().unwrap_or_default().split(';').next().unwrap_or_default().to_owned();
    let mut request = format!("ws://{addr}/ws").into_client_request().expect("request");
    request.headers_mut().insert("cookie", HeaderValue::from_str(&cookie).expect("cookie"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    let snapshot = ws.next().await.expect("a snapshot").expect("a frame");
    assert!(snapshot.is_text());
    ws
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let bin = std::env::var("CARTWHEEL_SERVER_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/server").to_owned());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(&bin)
        .args(["--bind", "127.0.0.1:0", "--no-rate-limit", "--log", "warn,server=info", "--database"])
        .arg(dir.path().join("carts.sqlite3"))
        .arg("--site-dir")
        .arg(dir.path().join("no-site"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = loop {
        let line = lines.next().expect("the server printed its address").expect("a line");
        if let Some(rest) = line.split("serving on ").nth(1) {
            break rest.split_whitespace().next().unwrap_or_default().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let addr = base.trim_start_matches("http://").to_owned();
    let http = reqwest::Client::new();
    let pid = child.id();

    // Warm up: the first connections allocate the runtime's and SQLite's steady-state memory.
    let mut warm = Vec::new();
    for _ in 0..20 {
        warm.push(open(&http, &base, &addr).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        idle.push(open(&http, &base, &addr).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!("server RSS: {before} KiB before, {after} KiB with {n} more idle WebSockets: {per:.1} KiB per connection");
    drop(idle);
    drop(warm);
    let _ = child.kill();
    let _ = child.wait();
}
