//! Start-up configuration: command-line flags, each with an environment-variable twin, and every limit the
//! server enforces as a named default an operator can override.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use cartwheel_core::CartLimits;
use clap::Parser;
use ipnet::IpNet;
use thiserror::Error;

/// A configuration that cannot be run: refused at start-up, before anything listens.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("the session secret must be at least {} bytes", defaults::MIN_SESSION_SECRET_LEN)]
    WeakSecret,
    #[error("every service token must be at least {} characters", defaults::MIN_SERVICE_TOKEN_LEN)]
    WeakServiceToken,
    #[error("service token '{0}': write name:scopes:token, scopes among stock, price, notify, chat joined by '+' (or 'all'), a name of 1-32 of a-z 0-9 _ -")]
    BadServiceToken(String),
    #[error("--cart-ttl-days ({cart}) must be at least --session-max-age-days ({session}): a cart may only expire once no session can name it, or a session still in use would see its cart's versions start again")]
    CartTtlBelowSessionAge { cart: u32, session: u32 },
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 24 * 60 * 60)
}

/// What a service token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes {
    /// `PATCH` a product's stock.
    pub stock: bool,
    /// `PATCH` a product's price.
    pub price: bool,
    /// Send notices.
    pub notify: bool,
    /// Answer shoppers in the help chat (`GET /api/service/ws`, `POST /api/service/chat/{session}`).
    pub chat: bool,
}

impl Scopes {
    pub const ALL: Scopes = Scopes { stock: true, price: true, notify: true, chat: true };

    fn parse(text: &str) -> Option<Scopes> {
        if text == "all" {
            return Some(Scopes::ALL);
        }
        let mut scopes = Scopes { stock: false, price: false, notify: false, chat: false };
        for scope in text.split('+') {
            match scope {
                "stock" => scopes.stock = true,
                "price" => scopes.price = true,
                "notify" => scopes.notify = true,
                "chat" => scopes.chat = true,
                _ => return None,
            }
        }
        Some(scopes)
    }
}

/// One `--service-token`: `name:scopes:token` (e.g. `inventory:stock:…`, `pricing:price+stock:…`), or — as
/// before scopes existed — a bare token, which may do everything and is named `token-<n>` in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTokenSpec {
    pub name: String,
    pub scopes: Scopes,
    pub token: String,
}

/// Every configured service token, read.
pub fn service_token_specs(list: &[String]) -> Result<Vec<ServiceTokenSpec>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, spec)| {
            let parts: Vec<&str> = spec.splitn(3, ':').collect();
            let named = match parts.as_slice() {
                [name, scopes, token] => Some((*name, *scopes, *token)),
                _ => None,
            };
            let spec = match named {
                None => ServiceTokenSpec { name: format!("token-{}", i + 1), scopes: Scopes::ALL, token: spec.clone() },
                Some((name, scopes, token)) => {
                    let name_ok = (1..=32).contains(&name.len())
                        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
                    let scopes = Scopes::parse(scopes).filter(|_| name_ok);
                    let Some(scopes) = scopes else { return Err(ConfigError::BadServiceToken(name.to_owned())) };
                    ServiceTokenSpec { name: name.to_owned(), scopes, token: token.to_owned() }
                }
            };
            if spec.token.len() < defaults::MIN_SERVICE_TOKEN_LEN {
                return Err(ConfigError::WeakServiceToken);
            }
            Ok(spec)
        })
        .collect()
}

/// Defaults, named so tests and docs can refer to them.
pub mod defaults {
    use std::time::Duration;

    pub const BIND: &str = "127.0.0.1:3000";
    pub const DATABASE: &str = "data/cartwheel.sqlite3";
    /// Largest request body accepted on the REST API.
    pub const MAX_BODY_BYTES: usize = 64 * 1024;
    /// Sustained requests per second per session (token-bucket refill rate) and its burst.
    pub const SESSION_RATE_PER_SEC: u32 = 50;
    pub const SESSION_BURST: u32 = 100;
    /// Per client address: higher than per session, because a household or an office shares one address.
    pub const ADDRESS_RATE_PER_SEC: u32 = 200;
    pub const ADDRESS_BURST: u32 = 400;
    /// Frames per second a WebSocket client may send, and its burst, before it is told off and closed (1008).
    pub const WS_FRAMES_PER_SEC: u32 = 20;
    pub const WS_FRAME_BURST: u32 = 40;
    /// Cart updates queued for one connection before stale ones are dropped in favour of the newest.
    pub const WS_QUEUE_CAPACITY: usize = 16;
    /// tungstenite's buffers: its 128 KiB read default would cost that much per idle connection; clients send tiny
    /// frames (PING, RESYNC), and larger ones are simply read in several chunks.
    pub const WS_READ_BUFFER_BYTES: usize = 2 * 1024;
    pub const WS_WRITE_BUFFER_BYTES: usize = 0;
    pub const WS_MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;
    /// Kernel send buffer (SO_SNDBUF) of every accepted socket; 0 leaves the kernel's auto-tuning (up to 4 MiB).
    pub const SOCKET_SEND_BUFFER_BYTES: usize = 64 * 1024;
    /// Open TCP connections at most (HTTP and WebSocket); beyond it new ones wait in the backlog.
    pub const MAX_CONNECTIONS: usize = 20_000;
    /// Connections the kernel completes and queues for the server to accept (the listen backlog; the kernel
    /// caps it at `net.core.somaxconn`). A reconnect storm after a restart, or every slot taken, fills it; a
    /// connection beyond it has its SYN dropped and retried by the client's kernel a second later.
    pub const LISTEN_BACKLOG: u32 = 1024;
    /// File descriptors kept for everything that is not a client connection (the store, Redis, assets, logs).
    pub const RESERVED_FILE_DESCRIPTORS: u64 = 64;
    /// A request head must be complete this long after the connection starts waiting for it (also the idle
    /// keep-alive timeout).
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// A connection whose peer takes no bytes for this long while the server has some to send is closed (also
    /// the bound on one WebSocket frame's write: a peer that stopped reading is dropped).
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
    /// Open WebSockets per session and per client address (IPv6: per /64).
    pub const MAX_SOCKETS_PER_SESSION: usize = 32;
    pub const MAX_SOCKETS_PER_ADDRESS: usize = 512;
    /// How long an Idempotency-Key is remembered.
    pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    /// Idempotency records kept per session: the oldest beyond this are forgotten first.
    pub const IDEMPOTENCY_KEYS_PER_SESSION: usize = 256;
    /// Expired idempotency records are deleted this many at a time, so pruning never holds the writer long.
    pub const PRUNE_BATCH: usize = 500;
    /// Shortest session secret accepted from configuration or found in Redis.
    pub const MIN_SESSION_SECRET_LEN: usize = 32;
    /// A session unused this many days is over (each use slides it); also the cookie's `Max-Age`.
    pub const SESSION_MAX_AGE_DAYS: u32 = 90;
    /// A cart nobody changed (and whose session was not renewed) for this many days is deleted. At least the
    /// session's maximum age: every session renewal touches its cart, so a cart only expires once no valid cookie
    /// names it (a cart that came back would start its versions again in the same epoch).
    pub const CART_TTL_DAYS: u32 = 90;
    /// A stored notice is delivered (on every reconnect, until acknowledged) for this many days after it was sent.
    pub const NOTICE_TTL_DAYS: u32 = 7;
    /// Targeted notices kept per session, and general notices kept for the shop: the newest.
    pub const NOTICE_INBOX_CAP: usize = 100;
    pub const SHOP_NOTICES_CAP: usize = 1_000;
    /// How long a service's hold on its help-chat conversations lasts unrenewed.
    pub const CHAT_LEASE_MS: u64 = 15_000;
    /// Waiting help-chat messages one claim looks at in Redis (the oldest).
    pub const CHAT_SCAN: usize = 1_000;
    /// Unacknowledged shopper messages handed to one service connection at most.
    pub const CHAT_IN_FLIGHT: usize = 64;
    /// Presence (shoppers here, carts holding each product) is read and pushed this often: at most one
    /// `PRESENCE` frame per connection per interval.
    pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(2);
    /// Rounds bringing every connection up to the product board (product updates, presence counts) begin at
    /// least this far apart, so while a flash sale changes stock a hundred times a second a connection is sent
    /// the newest state about once per interval, not every change; a change when the board has been quiet
    /// for an interval goes at once.
    pub const BOARD_ROUND_INTERVAL: Duration = Duration::from_millis(250);
    /// One instance's report of its online sessions counts this long (Redis mode): a killed instance's
    /// shoppers drop out of the count within it.
    pub const PRESENCE_TTL: Duration = Duration::from_secs(15);
    /// Extra time an untouched cart is kept past its TTL, for clocks of several instances that disagree.
    pub const CART_EXPIRY_SLACK: Duration = Duration::from_secs(60 * 60);
    /// Mutations committed together in one SQLite transaction at most (group commit).
    pub const MAX_COMMIT_BATCH: usize = 256;
    /// Read-only SQLite connections kept for concurrent reads.
    pub const READ_CONNECTIONS: usize = 4;
    /// How long shutdown waits for WebSocket connections to finish their close handshake.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
    /// Frames for every connection (product updates, general notices) kept in the shared ring; a connection
    /// further behind is sent every product again.
    pub const BROADCAST_CAPACITY: usize = 1024;
    /// Service API requests per second per token, and its burst.
    pub const SERVICE_RATE_PER_SEC: u32 = 50;
    pub const SERVICE_BURST: u32 = 100;
    /// Shortest service token accepted from configuration.
    pub const MIN_SERVICE_TOKEN_LEN: usize = 16;
    /// Failed service-token attempts per client address: sustained per second, and the burst.
    pub const SERVICE_AUTH_FAILURES_PER_SEC: u32 = 1;
    pub const SERVICE_AUTH_FAILURE_BURST: u32 = 10;
    /// Highest stock and price a service may set.
    pub const MAX_STOCK: u32 = 1_000_000;
    pub const MAX_PRICE_CENTS: u64 = 100_000_000;
    /// Redis mode: longest a command or script may take before the request fails with 503.
    pub const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
    /// Redis mode: how often a change is tried again when another instance changed the same cart or the
    /// catalog between its read and its commit.
    pub const REDIS_CONFLICT_ATTEMPTS: u32 = 64;
    /// Redis mode: how often a commit whose answer was lost (timeout, dropped connection) is asked again with
    /// its Idempotency-Key before the request fails with 503.
    pub const REDIS_AMBIGUOUS_COMMIT_RETRIES: u32 = 2;
    /// Redis mode: how long the key made for a change sent without one is remembered (long enough to ask
    /// again after a lost answer).
    pub const REDIS_INTERNAL_IDEMPOTENCY_TTL: Duration = Duration::from_secs(60);
    /// Redis mode: the pub/sub connection is pinged this often; no answer within the command timeout means it
    /// is gone, and the instance subscribes again.
    pub const REDIS_HEARTBEAT: Duration = Duration::from_secs(1);
    /// Redis mode: the first and the longest wait before subscribing again (full jitter below them).
    pub const REDIS_RESUBSCRIBE_BASE: Duration = Duration::from_millis(100);
    pub const REDIS_RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);
    /// `/healthz`: longest its read probe and its write probe may each take before the part counts as failed.
    pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    /// A WebSocket whose snapshot could not be read (store unavailable) tries again this often.
    pub const SNAPSHOT_RETRY: Duration = Duration::from_secs(1);
}

/// Cartwheel's cart server.
#[derive(Debug, Clone, Parser)]
#[command(name = "server", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CARTWHEEL_BIND", default_value = defaults::BIND)]
    pub bind: SocketAddr,

    /// Share carts, stock and sessions with other instances through this Redis (`redis://host:port/db`)
    /// instead of the SQLite file. Every instance of one shop points at the same Redis.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// SQLite database file (created with its directory if missing); unused with `--redis-url`.
    #[arg(long, env = "CARTWHEEL_DATABASE", default_value = defaults::DATABASE)]
    pub database: PathBuf,

    /// Product catalog JSON file; the built-in catalog when not given.
    #[arg(long, env = "CARTWHEEL_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Directory the product images are served from (`/images/...`).
    #[arg(long, env = "CARTWHEEL_IMAGES_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/catalog/images"))]
    pub images_dir: PathBuf,

    /// Where cargo-leptos writes the bundles: one folder per bundle (`shell/`, `product-list/`, `shopping-cart/`).
    #[arg(long, env = "CARTWHEEL_SITE_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/site"))]
    pub site_dir: PathBuf,

    /// The stylesheet served to the page.
    #[arg(long, env = "CARTWHEEL_STYLESHEET", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../style/cartwheel.css"))]
    pub stylesheet: PathBuf,

    /// Development: reload the bundles and the stylesheet when they change on disk.
    #[arg(long, env = "CARTWHEEL_WATCH_ASSETS")]
    pub watch_assets: bool,

    /// Origins allowed besides the server's own, comma-separated (e.g. `https://shop.example`).
    #[arg(long = "allowed-origin", env = "CARTWHEEL_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Shoppers reach the server over https (behind a TLS proxy): cookies get `Secure`, the own origin is https.
    #[arg(long, env = "CARTWHEEL_HTTPS")]
    pub https: bool,

    /// Proxies (load balancers) believed about the client: networks or addresses, comma-separated (e.g.
    /// `10.0.0.0/8,127.0.0.1`). Only for peers inside them, the client address comes from `Forwarded` /
    /// `X-Forwarded-For` (right-most untrusted hop) and the scheme from `X-Forwarded-Proto`. None by default.
    #[arg(long, env = "CARTWHEEL_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Log filter, e.g. `info` or `server=debug,tower_http=info`.
    #[arg(long, env = "CARTWHEEL_LOG", default_value = "info")]
    pub log: String,

    /// Secrets for session cookies (each ≥ 32 bytes, comma-separated): the first signs, all verify, so one is
    /// rotated by putting the new one first and removing the old one later. Generated once and kept in the
    /// store when not given.
    #[arg(long, env = "CARTWHEEL_SESSION_SECRET", value_delimiter = ',', hide_env_values = true)]
    pub session_secret: Vec<String>,
    /// Days a session may go unused: each use slides it; an older cookie is not a session any more.
    #[arg(long, env = "CARTWHEEL_SESSION_MAX_AGE_DAYS", default_value_t = defaults::SESSION_MAX_AGE_DAYS)]
    pub session_max_age_days: u32,
    /// Days a cart may go untouched (no change, no session renewal) before it is deleted; at least
    /// `--session-max-age-days`.
    #[arg(long, env = "CARTWHEEL_CART_TTL_DAYS", default_value_t = defaults::CART_TTL_DAYS)]
    pub cart_ttl_days: u32,
    /// Days a stored notice is delivered (on each connect, until acknowledged) after it was sent.
    #[arg(long, env = "CARTWHEEL_NOTICE_TTL_DAYS", default_value_t = defaults::NOTICE_TTL_DAYS)]
    pub notice_ttl_days: u32,
    /// Targeted notices kept per session (its inbox); beyond it the oldest go.
    #[arg(long, env = "CARTWHEEL_NOTICE_INBOX_CAP", default_value_t = defaults::NOTICE_INBOX_CAP)]
    pub notice_inbox_cap: usize,
    /// General notices kept for the shop; beyond it the oldest go.
    #[arg(long, env = "CARTWHEEL_SHOP_NOTICES_CAP", default_value_t = defaults::SHOP_NOTICES_CAP)]
    pub shop_notices_cap: usize,

    /// Characters in one help-chat message (trimmed); a longer one is refused with an ERROR frame / 400.
    #[arg(long, env = "CARTWHEEL_CHAT_MAX_CHARS", default_value_t = cartwheel_core::chat::ChatLimits::DEFAULT_MAX_CHARS)]
    pub chat_max_chars: usize,
    /// Help-chat messages one session may write per minute (per instance), then `rate_limited`.
    #[arg(long, env = "CARTWHEEL_CHAT_PER_MINUTE", default_value_t = cartwheel_core::chat::ChatLimits::DEFAULT_PER_MINUTE)]
    pub chat_per_minute: u32,
    /// Messages kept per help-chat conversation; beyond it the oldest answered ones go.
    #[arg(long, env = "CARTWHEEL_CHAT_HISTORY", default_value_t = cartwheel_core::chat::ChatLimits::DEFAULT_HISTORY)]
    pub chat_history: usize,
    /// Days a help-chat conversation is kept after its last message.
    #[arg(long, env = "CARTWHEEL_CHAT_TTL_DAYS", default_value_t = cartwheel_core::chat::ChatLimits::DEFAULT_TTL_DAYS)]
    pub chat_ttl_days: u64,
    /// Milliseconds a connected service's hold on its conversations lasts without renewal (renewed a third of
    /// it apart while it is connected): how long the conversations of a service whose instance died wait.
    #[arg(long, env = "CARTWHEEL_CHAT_LEASE_MS", default_value_t = defaults::CHAT_LEASE_MS)]
    pub chat_lease_ms: u64,
    /// Unacknowledged shopper messages one service connection is handed at most; more wait for its ACKs.
    #[arg(long, env = "CARTWHEEL_CHAT_IN_FLIGHT", default_value_t = defaults::CHAT_IN_FLIGHT)]
    pub chat_in_flight: usize,
    /// Milliseconds between presence reads and pushes (at most one `PRESENCE` frame per connection each).
    #[arg(long = "presence-interval-ms", env = "CARTWHEEL_PRESENCE_INTERVAL_MS", value_parser = parse_duration_ms, default_value = "2000")]
    pub presence_interval: Duration,
    /// Milliseconds one report of an instance's online sessions counts (Redis mode; refreshed every interval).
    #[arg(long = "presence-ttl-ms", env = "CARTWHEEL_PRESENCE_TTL_MS", value_parser = parse_duration_ms, default_value = "15000")]
    pub presence_ttl: Duration,
    /// Milliseconds at least between the starts of two rounds that bring every connection up to the product
    /// board (each writes a connection the newest state of what changed); 0 = a round as soon as one ends.
    #[arg(long = "board-round-interval-ms", env = "CARTWHEEL_BOARD_ROUND_INTERVAL_MS", value_parser = parse_duration_ms_or_zero, default_value = "250")]
    pub board_round_interval: Duration,

    /// Switch every request rate limit off (for load benchmarks only).
    #[arg(long, env = "CARTWHEEL_NO_RATE_LIMIT")]
    pub no_rate_limit: bool,

    #[arg(long, env = "CARTWHEEL_SESSION_RATE", default_value_t = defaults::SESSION_RATE_PER_SEC)]
    pub session_rate_per_sec: u32,
    #[arg(long, env = "CARTWHEEL_SESSION_BURST", default_value_t = defaults::SESSION_BURST)]
    pub session_burst: u32,
    #[arg(long, env = "CARTWHEEL_ADDRESS_RATE", default_value_t = defaults::ADDRESS_RATE_PER_SEC)]
    pub address_rate_per_sec: u32,
    #[arg(long, env = "CARTWHEEL_ADDRESS_BURST", default_value_t = defaults::ADDRESS_BURST)]
    pub address_burst: u32,
    #[arg(long, env = "CARTWHEEL_WS_FRAME_RATE", default_value_t = defaults::WS_FRAMES_PER_SEC)]
    pub ws_frames_per_sec: u32,
    #[arg(long, env = "CARTWHEEL_WS_FRAME_BURST", default_value_t = defaults::WS_FRAME_BURST)]
    pub ws_frame_burst: u32,

    /// Tokens that may call the service API (`/api/service/...`), comma-separated in the environment: each
    /// `name:scopes:token` (scopes `stock`, `price`, `notify` joined by `+`, or `all`; the token at least 16
    /// characters), or a bare token that may do everything. None: the service API is off.
    #[arg(long = "service-token", env = "CARTWHEEL_SERVICE_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub service_tokens: Vec<String>,
    #[arg(long, env = "CARTWHEEL_SERVICE_RATE", default_value_t = defaults::SERVICE_RATE_PER_SEC)]
    pub service_rate_per_sec: u32,
    #[arg(long, env = "CARTWHEEL_SERVICE_BURST", default_value_t = defaults::SERVICE_BURST)]
    pub service_burst: u32,
    /// Frames for every connection kept in the shared broadcast ring.
    #[arg(long, env = "CARTWHEEL_BROADCAST_CAPACITY", default_value_t = defaults::BROADCAST_CAPACITY)]
    pub broadcast_capacity: usize,

    /// Most units of one product in one cart.
    #[arg(long, env = "CARTWHEEL_MAX_QUANTITY", default_value_t = CartLimits::DEFAULT_MAX_QUANTITY_PER_LINE)]
    pub max_quantity_per_line: u32,
    /// Most different products in one cart.
    #[arg(long, env = "CARTWHEEL_MAX_LINES", default_value_t = CartLimits::DEFAULT_MAX_LINES)]
    pub max_lines: usize,

    /// Largest REST request body in bytes.
    #[arg(long, env = "CARTWHEEL_MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest WebSocket message in bytes.
    #[arg(long, env = "CARTWHEEL_MAX_WS_MESSAGE_BYTES", default_value_t = cartwheel_core::protocol::MAX_WS_MESSAGE_BYTES)]
    pub max_ws_message_bytes: usize,
    /// Cart updates queued per connection before stale ones are coalesced.
    #[arg(long, env = "CARTWHEEL_WS_QUEUE", default_value_t = defaults::WS_QUEUE_CAPACITY)]
    pub ws_queue_capacity: usize,
    /// Kernel send buffer per accepted socket in bytes (0 = the kernel's auto-tuning).
    #[arg(long, env = "CARTWHEEL_SOCKET_SEND_BUFFER_BYTES", default_value_t = defaults::SOCKET_SEND_BUFFER_BYTES)]
    pub socket_send_buffer_bytes: usize,
    /// Idempotency records (a change's key and its answer) kept per session; beyond it the oldest go first.
    #[arg(long, env = "CARTWHEEL_IDEMPOTENCY_KEYS_PER_SESSION", default_value_t = defaults::IDEMPOTENCY_KEYS_PER_SESSION)]
    pub idempotency_keys_per_session: usize,
    /// Open TCP connections at most (HTTP and WebSocket together); beyond it new ones wait in the kernel's
    /// backlog. Lowered at start to what the file-descriptor limit allows.
    #[arg(long, env = "CARTWHEEL_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections the kernel queues while the server has not accepted them (capped by `net.core.somaxconn`).
    #[arg(long, env = "CARTWHEEL_LISTEN_BACKLOG", default_value_t = defaults::LISTEN_BACKLOG)]
    pub listen_backlog: u32,
    /// Seconds a connection may take to send a request head, counted from when it starts waiting for one (so
    /// also how long an idle kept-alive connection stays open).
    #[arg(long, env = "CARTWHEEL_HEADER_READ_TIMEOUT_SECS", value_parser = parse_duration_secs, default_value = "10")]
    pub header_read_timeout: Duration,
    /// Seconds a connection may go without the peer taking a byte while the server has some to send (an HTTP
    /// answer, the WebSocket handshake's `101`, a frame); then it is closed. Bounds slow readers.
    #[arg(long, env = "CARTWHEEL_SEND_TIMEOUT_SECS", value_parser = parse_duration_secs, default_value = "10")]
    pub send_timeout: Duration,
    /// Open WebSockets per session; the next upgrade is refused with 429.
    #[arg(long, env = "CARTWHEEL_MAX_SOCKETS_PER_SESSION", default_value_t = defaults::MAX_SOCKETS_PER_SESSION)]
    pub max_sockets_per_session: usize,
    /// Open WebSockets per client address (IPv6: per /64); the next upgrade is refused with 429.
    #[arg(long, env = "CARTWHEEL_MAX_SOCKETS_PER_ADDRESS", default_value_t = defaults::MAX_SOCKETS_PER_ADDRESS)]
    pub max_sockets_per_address: usize,

    /// The browser's WebSocket retry schedule: first ceiling and cap, in milliseconds (full jitter below them).
    #[arg(long, env = "CARTWHEEL_RECONNECT_BASE_MS", default_value_t = cartwheel_core::page::ReconnectSettings::default().base_ms)]
    pub reconnect_base_ms: u64,
    #[arg(long, env = "CARTWHEEL_RECONNECT_MAX_MS", default_value_t = cartwheel_core::page::ReconnectSettings::default().max_ms)]
    pub reconnect_max_ms: u64,
    /// After a server shutdown (close 1001), each browser's first retry is spread over this many milliseconds,
    /// so a restart is not met by every client at once.
    #[arg(long, env = "CARTWHEEL_RECONNECT_RESTART_SPREAD_MS", default_value_t = cartwheel_core::page::ReconnectSettings::default().restart_spread_ms)]
    pub reconnect_restart_spread_ms: u64,

    /// The browser's liveness check: a PING after this many milliseconds without a frame from the server…
    #[arg(long, env = "CARTWHEEL_LINK_PING_MS", default_value_t = cartwheel_core::link::LinkTimings::DEFAULT_PING_MS)]
    pub link_ping_ms: u64,
    /// …and the connection counts as dead when nothing arrives within this many milliseconds of it.
    #[arg(long, env = "CARTWHEEL_LINK_DEADLINE_MS", default_value_t = cartwheel_core::link::LinkTimings::DEFAULT_DEADLINE_MS)]
    pub link_deadline_ms: u64,
    /// Milliseconds the browser waits for a WebSocket to open before counting the attempt as failed.
    #[arg(long, env = "CARTWHEEL_LINK_CONNECT_TIMEOUT_MS", default_value_t = cartwheel_core::link::LinkTimings::DEFAULT_CONNECT_TIMEOUT_MS)]
    pub link_connect_timeout_ms: u64,
    /// While a bundle is not live, it reads the cart about this often (milliseconds, jittered ±50 %).
    #[arg(long, env = "CARTWHEEL_LINK_POLL_MS", default_value_t = cartwheel_core::link::LinkTimings::DEFAULT_POLL_MS)]
    pub link_poll_ms: u64,
    /// A browser REST call not answered within this many milliseconds is aborted (then retried with its key).
    #[arg(long, env = "CARTWHEEL_LINK_REQUEST_TIMEOUT_MS", default_value_t = cartwheel_core::link::LinkTimings::DEFAULT_REQUEST_TIMEOUT_MS)]
    pub link_request_timeout_ms: u64,

    /// Milliseconds the cart offers "Undo" after Remove or "Clear cart".
    #[arg(long, env = "CARTWHEEL_VIEW_UNDO_MS", default_value_t = cartwheel_core::page::ViewTimings::DEFAULT_UNDO_MS)]
    pub view_undo_ms: u64,
    /// Milliseconds a notice's toast stays (longer while the pointer or focus is on it).
    #[arg(long, env = "CARTWHEEL_VIEW_TOAST_MS", default_value_t = cartwheel_core::page::ViewTimings::DEFAULT_TOAST_MS)]
    pub view_toast_ms: u64,

    /// Seconds between server heartbeats (WebSocket Ping).
    #[arg(long, env = "CARTWHEEL_HEARTBEAT_SECS", value_parser = parse_duration_secs, default_value = "25")]
    pub heartbeat_interval: Duration,
    /// Seconds a Pong may take before the connection is closed.
    #[arg(long, env = "CARTWHEEL_HEARTBEAT_TIMEOUT_SECS", value_parser = parse_duration_secs, default_value = "10")]
    pub heartbeat_timeout: Duration,
    /// Seconds `/healthz` waits for its read probe and for its write probe before calling that part failed.
    #[arg(long, env = "CARTWHEEL_HEALTH_TIMEOUT_SECS", value_parser = parse_duration_secs, default_value = "2")]
    pub health_probe_timeout: Duration,
}

/// `--trusted-proxies` entries: a network (`10.0.0.0/8`, `fd00::/8`) or one address.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{text}' is neither a network (10.0.0.0/8) nor an address"))
}

fn parse_duration_ms_or_zero(s: &str) -> Result<Duration, String> {
    s.parse::<u64>().map(Duration::from_millis).map_err(|_| "must be a whole number of milliseconds".into())
}

fn parse_duration_ms(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err("must be a positive whole number of milliseconds".into()),
    }
}

fn parse_duration_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if secs.is_finite() && secs > 0.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err("must be a positive number of seconds".into())
    }
}

impl Config {
    /// The defaults, as if started with no flags and no environment (what tests build on).
    pub fn defaults() -> Config {
        Config::parse_from(["server"])
    }

    /// Refuse secrets and tokens too short to be safe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.session_secret.iter().any(|s| s.len() < defaults::MIN_SESSION_SECRET_LEN) {
            return Err(ConfigError::WeakSecret);
        }
        service_token_specs(&self.service_tokens)?;
        if self.cart_ttl_days < self.session_max_age_days.max(1) {
            return Err(ConfigError::CartTtlBelowSessionAge {
                cart: self.cart_ttl_days,
                session: self.session_max_age_days,
            });
        }
        Ok(())
    }

    /// How long a session may go unused.
    pub fn session_max_age(&self) -> Duration {
        days(self.session_max_age_days.max(1))
    }

    /// How long an untouched cart is kept: its TTL plus the slack for clocks that disagree.
    pub fn cart_expiry(&self) -> Duration {
        days(self.cart_ttl_days.max(1)) + defaults::CART_EXPIRY_SLACK
    }

    pub fn cart_limits(&self) -> CartLimits {
        CartLimits { max_quantity_per_line: self.max_quantity_per_line, max_lines: self.max_lines }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cart_ttl_shorter_than_a_sessions_maximum_age_is_refused_and_equal_passes() {
        let mut c = Config::defaults();
        c.session_max_age_days = 30;
        c.cart_ttl_days = 30;
        assert_eq!(c.validate(), Ok(()));
        c.cart_ttl_days = 29;
        assert_eq!(c.validate(), Err(ConfigError::CartTtlBelowSessionAge { cart: 29, session: 30 }));
        assert_eq!(Config::defaults().validate(), Ok(()), "the defaults fit together");
        assert_eq!(c.cart_expiry(), Duration::from_secs(29 * 86_400) + defaults::CART_EXPIRY_SLACK);
    }

    #[test]
    fn the_listen_backlog_defaults_to_its_constant() {
        assert_eq!(Config::defaults().listen_backlog, defaults::LISTEN_BACKLOG);
    }

    #[test]
    fn the_board_round_interval_defaults_to_its_constant_and_zero_switches_it_off() {
        assert_eq!(Config::defaults().board_round_interval, defaults::BOARD_ROUND_INTERVAL);
        let off = Config::try_parse_from(["server", "--board-round-interval-ms", "0"]).map(|c| c.board_round_interval);
        assert_eq!(off.ok(), Some(Duration::ZERO));
        assert!(Config::try_parse_from(["server", "--board-round-interval-ms", "-1"]).is_err());
    }
}
