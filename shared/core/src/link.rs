//! What a micro-frontend's link to the server looks like from the outside: its state, the report it publishes
//! so the shell can summarise every MFE's connection, and the timings of the browser-side connection.
//!
//! The browser implementation lives in the `cartwheel-link` crate; these types and numbers are pure so they
//! are tested on the host and shared with anything that displays them.

use serde::{Deserialize, Serialize};

use crate::cart::Cart;
use crate::catalog::Product;

/// Name of the `window` `CustomEvent` each micro-frontend dispatches when its connection changes; its
/// `detail` is a [`LinkReport`]. The shell listens to it to show every MFE's state in one place.
pub const LINK_EVENT: &str = "cartwheel:link";
/// Dispatched (no detail) by a late listener, e.g. the shell after it hydrates: every bundle answers by
/// dispatching its current [`LINK_EVENT`] again.
pub const LINK_QUERY_EVENT: &str = "cartwheel:link-query";

/// How a link notices a dead connection and what it does meanwhile, in milliseconds. Tunable by the operator
/// (the page embeds them) and shortened by the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTimings {
    /// A `PING` after this long without any frame from the server.
    pub ping_ms: u64,
    /// No frame at all within this long after a `PING`: the connection is dead, whatever the socket says
    /// (a laptop that slept, a Wi-Fi switch, a NAT or proxy that dropped it, a hung server close nothing).
    pub deadline_ms: u64,
    /// A socket not open this long after it was created counts as a failed attempt (a proxy or captive
    /// portal holding the upgrade).
    pub connect_timeout_ms: u64,
    /// While not live, `GET /api/cart` about this often (jittered ±50 %, one request at a time).
    pub poll_ms: u64,
    /// A REST call (its answer and body) not done this long after it started is aborted: a change is then
    /// retried with the same key, and after the last retry its outcome is unknown (and said so).
    #[serde(default = "LinkTimings::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl LinkTimings {
    pub const DEFAULT_PING_MS: u64 = 10_000;
    pub const DEFAULT_DEADLINE_MS: u64 = 10_000;
    pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 8_000;
    pub const DEFAULT_POLL_MS: u64 = 5_000;
    pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
    /// While polling, the catalog (`GET /api/products`) is re-read on the first poll and every this many after.
    pub const CATALOG_EVERY_POLLS: u32 = 6;

    fn default_request_timeout_ms() -> u64 {
        Self::DEFAULT_REQUEST_TIMEOUT_MS
    }

    /// The wait before the next poll: `poll_ms` × [0.5, 1.5) for a uniform `unit_random` in [0, 1), so the
    /// polls of many tabs (after a server restart, all at once) spread out instead of firing in lockstep.
    pub fn poll_delay_ms(&self, unit_random: f64) -> u64 {
        let r = unit_random.clamp(0.0, 1.0);
        ((self.poll_ms.max(1) as f64) * (0.5 + r)) as u64
    }

    /// The wait before the next poll after one answered with `status` (`None`: no answer) and `Retry-After`
    /// (in ms): a busy server (429, 503) is polled half as often, and never sooner than it asked.
    pub fn poll_after_ms(&self, status: Option<u16>, retry_after_ms: Option<u64>, unit_random: f64) -> u64 {
        let mut wait = self.poll_delay_ms(unit_random);
        if matches!(status, Some(429 | 503)) {
            wait = wait.saturating_mul(2);
        }
        match retry_after_ms {
            Some(asked) => wait.max(retry_wait_ms(0, Some(asked), unit_random)),
            None => wait,
        }
    }

    /// Whether the `n`-th poll (0 = the first) also re-reads the catalog.
    pub fn catalog_due(poll: u32) -> bool {
        poll % Self::CATALOG_EVERY_POLLS == 0
    }
}

/// A `Retry-After` longer than this is waited for only this long: a shopper's change should not sit for minutes
/// behind one header (a retry after it is harmless: the same key).
pub const RETRY_AFTER_CAP_MS: u64 = 30_000;

/// `Retry-After` in milliseconds, from its delta-seconds form (`"2"`), the one our server and nginx send.
/// The HTTP-date form is not read (a page's clock may be off by more than the wait); it counts as absent.
pub fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || value.len() > 10 {
        return None;
    }
    // By hand: `str::parse` links integer parsing and its error into every bundle (~1 KB).
    value.bytes().try_fold(0u64, |n, b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))).map(|s| s * 1_000)
}

/// How long to wait before retry number `attempt` (1 = the first) of a REST change, for a uniform
/// `unit_random` in [0, 1): what the server asked for (`Retry-After`, capped at [`RETRY_AFTER_CAP_MS`]) plus up
/// to a quarter more, so the clients it told the same are not back in the same instant; without one, the
/// reconnect backoff's ceiling × [0.5, 1).
pub fn retry_wait_ms(attempt: u32, retry_after_ms: Option<u64>, unit_random: f64) -> u64 {
    let r = if unit_random.is_finite() { unit_random.clamp(0.0, 1.0) } else { 0.0 };
    match retry_after_ms {
        Some(asked) => {
            let asked = asked.min(RETRY_AFTER_CAP_MS);
            asked + (asked as f64 * r / 4.0) as u64
        }
        None => {
            let ceiling = crate::reconnect::ReconnectPolicy::default().ceiling(attempt).as_millis() as f64;
            (ceiling * (0.5 + r / 2.0)) as u64
        }
    }
}

impl Default for LinkTimings {
    fn default() -> Self {
        LinkTimings {
            ping_ms: Self::DEFAULT_PING_MS,
            deadline_ms: Self::DEFAULT_DEADLINE_MS,
            connect_timeout_ms: Self::DEFAULT_CONNECT_TIMEOUT_MS,
            poll_ms: Self::DEFAULT_POLL_MS,
            request_timeout_ms: Self::DEFAULT_REQUEST_TIMEOUT_MS,
        }
    }
}

/// Whether an open connection is alive, from what was heard on it: any frame from the server is a sign of
/// life; after `ping_ms` of silence a `PING` is due, and if nothing at all arrives within `deadline_ms` of it
/// the connection is dead. Times are milliseconds of one clock (the browser's `Date.now()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    last_heard_ms: u64,
    ping_sent_ms: Option<u64>,
}

/// What a [`Liveness`] asks for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessCheck {
    /// Send a `PING` (then call [`Liveness::pinged`]).
    Ping,
    /// Nothing was heard within the deadline: drop the connection.
    Dead,
    /// Check again after this many milliseconds.
    Wait(u64),
}

impl Liveness {
    /// A connection that opened at `now_ms`.
    pub fn opened(now_ms: u64) -> Liveness {
        Liveness { last_heard_ms: now_ms, ping_sent_ms: None }
    }

    /// A frame arrived.
    pub fn heard(&mut self, now_ms: u64) {
        self.last_heard_ms = now_ms;
        self.ping_sent_ms = None;
    }

    /// A `PING` went out.
    pub fn pinged(&mut self, now_ms: u64) {
        self.ping_sent_ms.get_or_insert(now_ms);
    }

    pub fn check(&self, now_ms: u64, timings: &LinkTimings) -> LivenessCheck {
        match self.ping_sent_ms {
            Some(sent) => {
                let waited = now_ms.saturating_sub(sent);
                if waited >= timings.deadline_ms {
                    LivenessCheck::Dead
                } else {
                    LivenessCheck::Wait(timings.deadline_ms - waited)
                }
            }
            None => {
                let quiet = now_ms.saturating_sub(self.last_heard_ms);
                if quiet >= timings.ping_ms {
                    LivenessCheck::Ping
                } else {
                    LivenessCheck::Wait(timings.ping_ms - quiet)
                }
            }
        }
    }
}
/// A REST mutation that fails on the network is retried with the same `Idempotency-Key` this many times.
pub const MUTATION_RETRIES: u32 = 3;

/// The state of one micro-frontend's WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// The first attempt is under way (also what the server renders).
    Connecting,
    /// Open: cart updates arrive live.
    Live,
    /// Closed or failed; the next attempt is scheduled. Changes still work over REST and page events.
    Reconnecting,
    /// The browser reports no network; a new attempt starts when it comes back.
    Offline,
    /// The bundle itself did not load or start (the page's loader reports it): its part stays as the server
    /// rendered it, and its forms still post without it.
    Failed,
}

impl LinkState {
    /// Short words for people.
    pub fn label(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Live => "live",
            LinkState::Reconnecting => "reconnecting",
            LinkState::Offline => "offline",
            LinkState::Failed => "failed",
        }
    }

    /// One word for people, as a part's badge shows it.
    pub fn word(self) -> &'static str {
        match self {
            LinkState::Connecting => "Connecting…",
            LinkState::Live => "Live",
            LinkState::Reconnecting => "Reconnecting…",
            LinkState::Offline => "Offline",
            LinkState::Failed => "Not loaded",
        }
    }

    /// The worst of several states, for a one-word summary of the page.
    pub fn worst(states: impl IntoIterator<Item = LinkState>) -> Option<LinkState> {
        states.into_iter().max_by_key(|s| match s {
            LinkState::Live => 0,
            LinkState::Connecting => 1,
            LinkState::Reconnecting => 2,
            LinkState::Offline => 3,
            LinkState::Failed => 4,
        })
    }
}

/// What one micro-frontend publishes about its connection (the `detail` of [`LINK_EVENT`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    /// `shell`, `product-list` or `shopping-cart`.
    pub mfe: String,
    pub state: LinkState,
    /// Round trip of the last `PING`, in milliseconds.
    pub rtt_ms: Option<u32>,
    /// Milliseconds until the next attempt, while reconnecting.
    pub retry_in_ms: Option<u32>,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// Milliseconds since the last frame from the server, when the report was made (`None`: nothing heard
    /// since the page loaded).
    #[serde(default)]
    pub heard_ago_ms: Option<u32>,
}

impl LinkReport {
    pub fn connecting(mfe: &str) -> LinkReport {
        LinkReport {
            mfe: mfe.to_owned(),
            state: LinkState::Connecting,
            rtt_ms: None,
            retry_in_ms: None,
            failures: 0,
            heard_ago_ms: None,
        }
    }

    /// When the server was last heard from, for people: "just now", "12 s ago", "3 min ago", or "never".
    pub fn heard(&self) -> String {
        match self.heard_ago_ms {
            None => "never".to_owned(),
            Some(ms) if ms < 1_000 => "just now".to_owned(),
            Some(ms) if ms < 120_000 => format!("{} s ago", ms / 1_000),
            Some(ms) => format!("{} min ago", ms / 60_000),
        }
    }

    /// The state in words for people, with the next attempt while reconnecting ("reconnecting (attempt 3 in
    /// 1.2 s)"). Integer arithmetic only: float formatting would add ~10 KB to a bundle.
    pub fn describe(&self) -> String {
        match (self.state, self.retry_in_ms) {
            (LinkState::Reconnecting, Some(ms)) => {
                let tenths = ms.saturating_add(50) / 100;
                format!("reconnecting (attempt {} in {}.{} s)", self.failures + 1, tenths / 10, tenths % 10)
            }
            (state, _) => state.label().to_owned(),
        }
    }
}

/// What a bundle wants to hear from its link.
pub struct Handlers {
    /// Every cart newer than the one shown, and the shown cart again when a product change re-priced it.
    pub on_cart: Box<dyn Fn(Cart)>,
    /// Every change of the connection's state.
    pub on_report: Box<dyn Fn(LinkReport)>,
    /// Every product state newer than the one held. With it the link also keeps the cart's prices current and
    /// fetches every product after each (re)connect and while polling, because product updates sent while the
    /// socket was down are not replayed.
    pub on_product: Option<Box<dyn Fn(Product)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_from_delta_seconds_only() {
        assert_eq!(parse_retry_after("2"), Some(2_000));
        assert_eq!(parse_retry_after(" 0 "), Some(0));
        assert_eq!(parse_retry_after("9999999999"), Some(9_999_999_999_000));
        for bad in ["", "-1", "1.5", "2s", "Wed, 21 Oct 2026 07:28:00 GMT", "99999999999"] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_retry_waits_at_least_what_the_server_asked_up_to_the_cap() {
        for r in [0.0, 0.5, 0.999] {
            let wait = retry_wait_ms(1, Some(2_000), r);
            assert!((2_000..2_500).contains(&wait), "{wait}");
            let capped = retry_wait_ms(1, Some(3_600_000), r);
            assert!((RETRY_AFTER_CAP_MS..RETRY_AFTER_CAP_MS * 5 / 4).contains(&capped), "{capped}");
        }
        // Without a header: the backoff's ceiling (0.5 s, 1 s, 2 s …) × [0.5, 1).
        assert_eq!(retry_wait_ms(1, None, 0.0), 250);
        assert_eq!(retry_wait_ms(3, None, 0.0), 1_000);
        assert!(retry_wait_ms(3, None, 0.999) < 2_000);
        assert_eq!(retry_wait_ms(1, None, f64::NAN), 250);
    }

    #[test]
    fn polls_slow_down_for_a_busy_server_and_honour_its_retry_after() {
        let t = LinkTimings::default();
        assert_eq!(t.poll_after_ms(Some(200), None, 0.5), 5_000);
        assert_eq!(t.poll_after_ms(None, None, 0.5), 5_000);
        assert_eq!(t.poll_after_ms(Some(503), None, 0.5), 10_000);
        assert_eq!(t.poll_after_ms(Some(429), None, 0.0), 5_000);
        assert!(t.poll_after_ms(Some(503), Some(20_000), 0.0) >= 20_000);
        // A short Retry-After never makes a poll sooner than the schedule.
        assert_eq!(t.poll_after_ms(Some(503), Some(1_000), 0.5), 10_000);
        let polls: Vec<u32> = (0..13).filter(|&n| LinkTimings::catalog_due(n)).collect();
        assert_eq!(polls, [0, 6, 12]);
    }

    #[test]
    fn timings_from_an_older_page_get_the_default_request_timeout() {
        let old = r#"{"ping_ms":1,"deadline_ms":2,"connect_timeout_ms":3,"poll_ms":4}"#;
        let t: LinkTimings = serde_json::from_str(old).unwrap();
        assert_eq!(t.request_timeout_ms, LinkTimings::DEFAULT_REQUEST_TIMEOUT_MS);
    }

    #[test]
    fn description_rounds_the_wait_to_tenths_of_a_second() {
        let mut report = LinkReport::connecting("shell");
        assert_eq!(report.describe(), "connecting");
        report.state = LinkState::Reconnecting;
        report.failures = 2;
        assert_eq!(report.describe(), "reconnecting");
        for (ms, words) in [(0, "0.0"), (49, "0.0"), (50, "0.1"), (1249, "1.2"), (1250, "1.3"), (30_000, "30.0")] {
            report.retry_in_ms = Some(ms);
            assert_eq!(report.describe(), format!("reconnecting (attempt 3 in {words} s)"));
        }
    }

    #[test]
    fn last_heard_is_said_in_words() {
        let mut report = LinkReport::connecting("shell");
        assert_eq!(report.heard(), "never");
        for (ms, words) in
            [(0, "just now"), (999, "just now"), (1_000, "1 s ago"), (119_999, "119 s ago"), (120_000, "2 min ago")]
        {
            report.heard_ago_ms = Some(ms);
            assert_eq!(report.heard(), words);
        }
    }

    #[test]
    fn report_round_trips_as_the_event_detail() {
        let report = LinkReport {
            mfe: "product-list".into(),
            state: LinkState::Reconnecting,
            rtt_ms: Some(12),
            retry_in_ms: Some(900),
            failures: 3,
            heard_ago_ms: Some(4_200),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains(r#""state":"reconnecting""#), "{json}");
        assert_eq!(serde_json::from_str::<LinkReport>(&json).unwrap(), report);
    }

    #[test]
    fn cart_event_detail_round_trips_with_its_version() {
        let mut cart = Cart::empty("EUR");
        cart.version = 41;
        let json = serde_json::to_value(&cart).unwrap();
        assert_eq!(json["version"], 41);
        assert_eq!(serde_json::from_value::<Cart>(json).unwrap(), cart);
    }

    #[test]
    fn silence_earns_a_ping_and_silence_after_it_is_death() {
        let t = LinkTimings { ping_ms: 10_000, deadline_ms: 4_000, ..LinkTimings::default() };
        let mut l = Liveness::opened(1_000);
        assert_eq!(l.check(1_000, &t), LivenessCheck::Wait(10_000));
        assert_eq!(l.check(10_999, &t), LivenessCheck::Wait(1));
        assert_eq!(l.check(11_000, &t), LivenessCheck::Ping, "exactly the ping interval of silence");
        l.heard(6_000);
        assert_eq!(l.check(11_000, &t), LivenessCheck::Wait(5_000), "any frame resets the silence");
        l.pinged(16_000);
        l.pinged(17_000); // a second PING does not move the deadline
        assert_eq!(l.check(19_999, &t), LivenessCheck::Wait(1));
        assert_eq!(l.check(20_000, &t), LivenessCheck::Dead, "exactly the deadline after the PING");
        l.heard(19_000);
        assert_eq!(l.check(20_000, &t), LivenessCheck::Wait(9_000), "an answer in time keeps it alive");
        assert_eq!(Liveness::opened(5).check(0, &t), LivenessCheck::Wait(10_000), "a clock going back is no death");
    }

    #[test]
    fn polls_are_jittered_around_their_interval() {
        let t = LinkTimings::default();
        assert_eq!(t.poll_delay_ms(0.0), 2_500);
        assert_eq!(t.poll_delay_ms(0.5), 5_000);
        assert_eq!(t.poll_delay_ms(0.999_999), 7_499);
        assert_eq!(t.poll_delay_ms(7.0), 7_500, "out-of-range draws are clamped");
        assert_eq!(LinkTimings { poll_ms: 0, ..t }.poll_delay_ms(0.5), 1, "never a hot loop of 0 ms");
    }

    #[test]
    fn worst_state_summarises_the_page() {
        use LinkState::*;
        assert_eq!(LinkState::worst([Live, Live, Live]), Some(Live));
        assert_eq!(LinkState::worst([Live, Reconnecting, Connecting]), Some(Reconnecting));
        assert_eq!(LinkState::worst([Offline, Reconnecting]), Some(Offline));
        assert_eq!(LinkState::worst([Live, Failed, Offline]), Some(Failed), "a part that never loaded says most");
        assert_eq!(Failed.label(), "failed");
        assert_eq!(LinkState::worst([]), None);
    }
}
