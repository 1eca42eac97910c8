//! What a micro-frontend's link to the server looks like from the outside: its state, the report it publishes
//! so the shell can summarise every MFE's connection, and the timings of the browser-side connection.
//!
//! The browser implementation lives in the `cartwheel-link` crate; these types and numbers are pure so they
//! are tested on the host and shared with anything that displays them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cart::Cart;
use crate::catalog::Product;
use crate::protocol::Notice;

/// Name of the `window` `CustomEvent` each micro-frontend dispatches when its connection changes; its
/// `detail` is a [`LinkReport`]. The shell listens to it to show every MFE's state in one place.
pub const LINK_EVENT: &str = "cartwheel:link";
/// Dispatched (no detail) by a late listener, e.g. the shell after it hydrates: every bundle answers by
/// dispatching its current [`LINK_EVENT`] again.
pub const LINK_QUERY_EVENT: &str = "cartwheel:link-query";

/// A `PING` this often while the socket is open, to measure the round trip.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// While the socket is not open, `GET /api/cart` this often, so a change from another tab still arrives.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
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
}

impl LinkState {
    /// Short words for people.
    pub fn label(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Live => "live",
            LinkState::Reconnecting => "reconnecting",
            LinkState::Offline => "offline",
        }
    }

    /// The worst of several states, for a one-word summary of the page.
    pub fn worst(states: impl IntoIterator<Item = LinkState>) -> Option<LinkState> {
        states.into_iter().max_by_key(|s| match s {
            LinkState::Live => 0,
            LinkState::Connecting => 1,
            LinkState::Reconnecting => 2,
            LinkState::Offline => 3,
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
}

impl LinkReport {
    pub fn connecting(mfe: &str) -> LinkReport {
        LinkReport { mfe: mfe.to_owned(), state: LinkState::Connecting, rtt_ms: None, retry_in_ms: None, failures: 0 }
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
    /// Every `NOTICE` for this session.
    pub on_notice: Option<Box<dyn Fn(Notice)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn report_round_trips_as_the_event_detail() {
        let report = LinkReport {
            mfe: "product-list".into(),
            state: LinkState::Reconnecting,
            rtt_ms: Some(12),
            retry_in_ms: Some(900),
            failures: 3,
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
    fn worst_state_summarises_the_page() {
        use LinkState::*;
        assert_eq!(LinkState::worst([Live, Live, Live]), Some(Live));
        assert_eq!(LinkState::worst([Live, Reconnecting, Connecting]), Some(Reconnecting));
        assert_eq!(LinkState::worst([Offline, Reconnecting]), Some(Offline));
        assert_eq!(LinkState::worst([]), None);
    }
}
