//! Test harness: the real server on a loopback port with a temporary SQLite file, a real HTTP client per
//! shopper (its own session cookie) and real WebSocket clients.

pub mod nginx;
pub mod process;
pub mod redis;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cartwheel_server::config::Config;
use cartwheel_server::Server;
use futures_util::{SinkExt, StreamExt};
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single awaited event may take before the test fails (generous: CI machines are slow).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub db: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

pub fn test_config(db: &Path) -> Config {
    let mut c = Config::defaults();
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.database = db.to_path_buf();
    // No bundles: tests of the page read its server-rendered HTML (bundles are tested end to end).
    c.site_dir = db.with_file_name("no-site");
    c
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("carts.sqlite3");
        let mut s = Self::start_on(&db, adjust).await;
        s._dir = Some(dir);
        s
    }

    /// Start on an existing database file (the caller keeps its directory alive).
    pub async fn start_on(db: &Path, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config(db);
        adjust(&mut config);
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            addr,
            base: format!("http://{addr}"),
            db: db.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    /// Graceful shutdown, as on SIGTERM; returns when the server has fully stopped.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task).await.expect("server stops in time").unwrap();
        }
    }

    /// Keep the database directory when restarting on the same file.
    pub fn take_dir(&mut self) -> tempfile::TempDir {
        self.take_dir_opt().expect("server owns its directory")
    }

    fn take_dir_opt(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn shopper(&self) -> Shopper {
        Shopper::new(self).await
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap()
    }

    /// The value of the unlabelled metric `name` now (a counter's `_total` line, a gauge's line).
    pub async fn metric_value(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        value_of(&text, name).unwrap_or_else(|| panic!("no metric {name}:\n{text}"))
    }

    /// Poll `/metrics` until the unlabelled metric `name` is at least `floor`.
    pub async fn await_metric_at_least(&self, name: &str, floor: u64) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let text = self.metrics().await;
            if value_of(&text, name).is_some_and(|v| v >= floor) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name} never reached {floor}:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll `/metrics` until `line` appears (an event we cannot observe from a socket).
    pub async fn await_metric(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "metric line {line:?} never appeared:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The value on `name`'s line of a Prometheus text exposition.
fn value_of(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// One shopper: an HTTP client holding one session cookie.
pub struct Shopper {
    pub http: reqwest::Client,
    pub base: String,
    pub addr: SocketAddr,
    pub cookie: String,
}

/// How many of `product` a cart's JSON holds (0 when it has no line of it).
pub fn quantity(cart: &Value, product: &str) -> u64 {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["product_id"] == product)
        .map_or(0, |l| l["quantity"].as_u64().unwrap())
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {}", self.body))
    }

    pub fn version(&self) -> u64 {
        self.body["version"].as_u64().unwrap_or_else(|| panic!("not a cart: {}", self.body))
    }

    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.error_code(), code, "body: {}", self.body);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {}", self.body);
        assert_eq!(self.headers[CONTENT_TYPE], "application/json");
    }
}

impl Shopper {
    pub async fn new(server: &TestServer) -> Shopper {
        let http = reqwest::Client::new();
        let response = http.get(server.url("/api/cart")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let set_cookie = response.headers().get(SET_COOKIE).expect("a new client gets a session cookie");
        let cookie = set_cookie.to_str().unwrap().split(';').next().unwrap().to_owned();
        Shopper { http, base: server.base.clone(), addr: server.addr, cookie }
    }

    /// A shopper holding a cookie made by the test (see [`v1_session_cookie`]).
    pub fn with_cookie(server: &TestServer, cookie: &str) -> Shopper {
        Shopper {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            addr: server.addr,
            cookie: cookie.to_owned(),
        }
    }

    /// The same shopper (same cookie) talking to another instance.
    pub fn on(&self, server: &TestServer) -> Shopper {
        Shopper {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            addr: server.addr,
            cookie: self.cookie.clone(),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{}", self.base, path)).header(COOKIE, &self.cookie);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_owned());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, headers, body }
    }

    pub async fn cart(&self) -> Answer {
        self.send(reqwest::Method::GET, "/api/cart", None, &[]).await
    }

    pub async fn add(&self, product: &str, quantity: i64) -> Answer {
        let body = serde_json::json!({ "product_id": product, "quantity": quantity }).to_string();
        self.send(reqwest::Method::POST, "/api/cart", Some(&body), &[]).await
    }

    pub async fn set(&self, product: &str, quantity: i64) -> Answer {
        let body = serde_json::json!({ "quantity": quantity }).to_string();
        self.send(reqwest::Method::PUT, &format!("/api/cart/items/{product}"), Some(&body), &[]).await
    }

    pub async fn remove(&self, product: &str) -> Answer {
        self.send(reqwest::Method::DELETE, &format!("/api/cart/items/{product}"), None, &[]).await
    }

    pub async fn clear(&self) -> Answer {
        self.send(reqwest::Method::DELETE, "/api/cart", None, &[]).await
    }

    /// A WebSocket with this shopper's cookie and the server's own Origin, as a browser page would open it.
    pub async fn ws(&self) -> Ws {
        let origin = format!("http://{}", self.addr);
        Ws::connect(self.addr, Some(&self.cookie), Some(&origin)).await.expect("upgrade accepted")
    }

    /// [`Shopper::ws`] with a 4 KiB kernel receive buffer: a reader that can be stalled for real.
    pub async fn ws_with_small_receive_buffer(&self) -> Ws {
        let origin = format!("http://{}", self.addr);
        Ws::connect_with(self.addr, Some(&self.cookie), Some(&origin), Some(4096)).await.expect("upgrade accepted")
    }
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Ws {
    pub stream: Stream,
}

impl Ws {
    /// Open `/ws`; `Err` carries the HTTP status of a refused upgrade.
    pub async fn connect(addr: SocketAddr, cookie: Option<&str>, origin: Option<&str>) -> Result<Ws, u16> {
        Ws::connect_with(addr, cookie, origin, None).await
    }

    /// As [`Ws::connect`], optionally with a small kernel receive buffer so a client that stops reading
    /// backs the server up after a few KiB instead of the megabytes loopback auto-tuning allows.
    pub async fn connect_with(
        addr: SocketAddr,
        cookie: Option<&str>,
        origin: Option<&str>,
        receive_buffer: Option<u32>,
    ) -> Result<Ws, u16> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let tcp = socket.connect(addr).await.unwrap();
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(cookie) = cookie {
            request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).unwrap());
        }
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await {
            Ok((stream, _)) => Ok(Ws { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    /// Open and consume the initial snapshot, returning its version.
    pub async fn connect_synced(shopper: &Shopper) -> (Ws, u64) {
        let mut ws = shopper.ws().await;
        let snapshot = ws.next_json().await;
        assert_eq!(snapshot["type"], "CART_UPDATE", "first frame is a snapshot: {snapshot}");
        let v = snapshot["version"].as_u64().unwrap();
        (ws, v)
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.unwrap();
    }

    /// Next message, or `None` when the connection ended.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            let next = tokio::time::timeout(EVENT_TIMEOUT, self.stream.next()).await.expect("a frame in time");
            match next {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
            }
        }
    }

    /// The next JSON frame other than `PRESENCE` (counts pushed in the background, like heartbeats: only the
    /// presence tests read them, with [`Ws::next_frame`]).
    pub async fn next_json(&mut self) -> Value {
        loop {
            let v = self.next_frame().await;
            if v["type"] != "PRESENCE" {
                return v;
            }
        }
    }

    /// The next JSON frame, whatever it is.
    pub async fn next_frame(&mut self) -> Value {
        match self.next_message().await {
            Some(Message::Text(t)) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }

    /// Next `CART_UPDATE`'s version (skipping nothing: any other frame fails the test).
    pub async fn next_update(&mut self) -> Value {
        let v = self.next_json().await;
        assert_eq!(v["type"], "CART_UPDATE", "{v}");
        v
    }

    /// Prove that nothing is queued for this socket: a PING's PONG must be the very next frame.
    pub async fn assert_quiet(&mut self) {
        self.send_text(r#"{"type":"PING","id":424242}"#).await;
        let v = self.next_json().await;
        assert_eq!(v["type"], "PONG", "expected no pending frames, got {v}");
        assert_eq!(v["id"], 424242);
    }

    /// Wait for the connection to end: `Some(code)` for a close frame, `None` when it ended without one (for
    /// a peer that never read, tungstenite's queued Pong replies can hit the already-closed socket first).
    pub async fn expect_end(&mut self) -> Option<u16> {
        loop {
            match self.next_message().await {
                Some(Message::Close(Some(frame))) => return Some(u16::from(frame.code)),
                Some(Message::Close(None)) => return Some(u16::from(CloseCode::Status)),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Wait for the server's close frame and return its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            match self.next_message().await {
                Some(Message::Close(Some(frame))) => return u16::from(frame.code),
                Some(Message::Close(None)) => return u16::from(CloseCode::Status),
                Some(_) => continue,
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// A version 1 session cookie (16 random bytes and their HMAC-SHA256 tag, no issue time), as releases before
/// session expiry issued them, signed with `secret`.
pub fn v1_session_cookie(secret: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let nonce: [u8; 16] = std::array::from_fn(|i| u8::try_from(i).unwrap() * 7 + 3);
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&nonce);
    let mut raw = nonce.to_vec();
    raw.extend_from_slice(&mac.finalize().into_bytes()[..16]);
    format!("cartwheel_session={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// The session cookie (`name=value`) a response sets, if any.
pub fn set_cookie(headers: &HeaderMap) -> Option<String> {
    headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).map(str::to_owned)
}
