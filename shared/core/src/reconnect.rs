//! When to try a lost WebSocket again: exponential backoff with full jitter, forever.
//!
//! After the n-th consecutive failure a client waits a random time in `[min_delay, ceiling(n)]`, where the
//! ceiling doubles from `base` up to `max`. The randomness (full jitter) spreads thousands of clients that lost
//! the same server at the same instant, so its restart is not met by a synchronized storm. There is no last
//! attempt: the ceiling stops growing, the attempts do not stop. A connection that stayed open for
//! `healthy_after` resets the schedule, so one blip after hours of health is retried quickly.
//!
//! Time and randomness are passed in (milliseconds, and a number in `[0, 1)`), which keeps this pure and
//! testable on the host; the browser supplies `Date.now()` and `Math.random()`.

use std::time::Duration;

/// The schedule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Ceiling of the first retry.
    pub base: Duration,
    /// The ceiling never grows beyond this.
    pub max: Duration,
    /// No retry sooner than this, so a random draw near 0 cannot become a hot loop.
    pub min_delay: Duration,
    /// A connection open at least this long counts as healthy and resets the schedule.
    pub healthy_after: Duration,
    /// The first retry after a live socket closed with `1001` (the server is going away: a restart or a
    /// deploy, which every client of it sees at the same instant) waits a random time in `[min_delay, this]`.
    pub restart_spread: Duration,
}

impl ReconnectPolicy {
    pub const DEFAULT_BASE: Duration = Duration::from_millis(500);
    pub const DEFAULT_MAX: Duration = Duration::from_secs(20);
    pub const DEFAULT_MIN_DELAY: Duration = Duration::from_millis(100);
    pub const DEFAULT_HEALTHY_AFTER: Duration = Duration::from_secs(10);
    pub const DEFAULT_RESTART_SPREAD: Duration = Duration::from_secs(5);
    /// After a close that says the client broke a rule (`1008`), or asks it to come back later (`1013`, or
    /// an application code `4000`–`4999`), every wait is this many times the usual one.
    pub const SLOWDOWN: u32 = 4;

    /// The upper bound of the delay after `failures` consecutive failures (1 = the first retry).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(32);
        let ceiling = self.base.saturating_mul(1u32 << exponent.min(31));
        ceiling.min(self.max).max(self.min_delay)
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            base: Self::DEFAULT_BASE,
            max: Self::DEFAULT_MAX,
            min_delay: Self::DEFAULT_MIN_DELAY,
            healthy_after: Self::DEFAULT_HEALTHY_AFTER,
            restart_spread: Self::DEFAULT_RESTART_SPREAD,
        }
    }
}

/// One connection's retry state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectSchedule {
    policy: ReconnectPolicy,
    failures: u32,
    opened_at_ms: Option<u64>,
}

impl ReconnectSchedule {
    pub fn new(policy: ReconnectPolicy) -> Self {
        ReconnectSchedule { policy, failures: 0, opened_at_ms: None }
    }

    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// Consecutive failures since the last healthy connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The socket opened at `now_ms`.
    pub fn opened(&mut self, now_ms: u64) {
        self.opened_at_ms = Some(now_ms);
    }

    /// The socket closed (or failed to open) at `now_ms`; returns how long to wait before the next attempt.
    /// `unit_random` is a uniform draw from `[0, 1)`; values outside are clamped.
    pub fn closed(&mut self, now_ms: u64, unit_random: f64) -> Duration {
        if let Some(opened) = self.opened_at_ms.take() {
            let healthy_ms = u64::try_from(self.policy.healthy_after.as_millis()).unwrap_or(u64::MAX);
            if now_ms.saturating_sub(opened) >= healthy_ms {
                self.failures = 0;
            }
        }
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.policy.ceiling(self.failures);
        let floor = self.policy.min_delay.min(ceiling);
        between(floor, ceiling, unit_random)
    }

    /// Like [`ReconnectSchedule::closed`], for a socket that closed with `code` (`None`: it never opened, or
    /// was given up on): `1008`, `1013` and `4000`–`4999` wait [`ReconnectPolicy::SLOWDOWN`] times longer; the
    /// first retry after a live socket's `1001` is spread over [`ReconnectPolicy::restart_spread`] instead of
    /// the short first ceiling. `1009` needs nothing: the only frames a client sends are `PING` and
    /// `RESYNC`, far below the limit, and no frame is ever resent.
    pub fn closed_with(&mut self, now_ms: u64, code: Option<u16>, unit_random: f64) -> Duration {
        let was_open = self.opened_at_ms.is_some();
        let delay = self.closed(now_ms, unit_random);
        match code {
            Some(1008 | 1013 | 4000..=4999) => delay.saturating_mul(ReconnectPolicy::SLOWDOWN),
            Some(1001) if was_open && self.failures == 1 => {
                let spread = self.policy.restart_spread;
                between(self.policy.min_delay.min(spread), spread, unit_random)
            }
            _ => delay,
        }
    }

    /// Forget past failures, e.g. when the browser reports it is back `online` and we retry at once.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// `floor + (ceiling − floor) × r` for `r` in [0, 1] (clamped; not a number counts as 0), in whole
/// milliseconds: `Duration::mul_f64` would add its float code to every bundle.
fn between(floor: Duration, ceiling: Duration, unit_random: f64) -> Duration {
    let r = if unit_random.is_finite() { unit_random.clamp(0.0, 1.0) } else { 0.0 };
    let (floor, ceiling) = (floor.as_millis() as u64, ceiling.as_millis() as u64);
    Duration::from_millis(floor + (ceiling.saturating_sub(floor) as f64 * r) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn close_codes_a_rule_broken_waits_longer_and_a_restart_spreads_the_first_retry() {
        let policy = ReconnectPolicy::default();
        // 1008 (and 1013, 4xxx): four times the usual wait, from the first retry on.
        for code in [1008, 1013, 4000, 4999] {
            let mut normal = ReconnectSchedule::new(policy);
            let mut slowed = ReconnectSchedule::new(policy);
            for _ in 0..3 {
                let usual = normal.closed_with(0, Some(1006), 0.7);
                assert_eq!(slowed.closed_with(0, Some(code), 0.7), usual * ReconnectPolicy::SLOWDOWN, "{code}");
            }
        }
        // 1001 after a live socket: the first retry anywhere in [min_delay, 5 s], not within the first 0.5 s.
        let spread = |r| {
            let mut s = ReconnectSchedule::new(policy);
            s.opened(0);
            s.closed_with(1_000, Some(1001), r)
        };
        assert_eq!(spread(0.0), policy.min_delay);
        assert_eq!(spread(1.0), policy.restart_spread);
        assert!(spread(0.5) > policy.ceiling(1));
        // Only the first retry: a server still down is retried on the usual schedule after it.
        let mut s = ReconnectSchedule::new(policy);
        s.opened(0);
        s.closed_with(1_000, Some(1001), 0.5);
        assert!(s.closed_with(2_000, Some(1001), 0.999) <= policy.ceiling(2));
        // A 1001 on a socket that never opened is an ordinary failure.
        let mut never = ReconnectSchedule::new(policy);
        assert!(never.closed_with(0, Some(1001), 0.999) <= policy.ceiling(1));
    }

    #[test]
    fn ceilings_double_then_cap() {
        let p = ReconnectPolicy::default();
        let seen: Vec<u128> = (1..=9).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(seen, vec![500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000]);
        assert_eq!(p.ceiling(u32::MAX), p.max);
    }

    #[test]
    fn full_jitter_spans_floor_to_ceiling() {
        let mut s = ReconnectSchedule::new(ReconnectPolicy::default());
        assert_eq!(s.closed(0, 0.0), ms(100));
        let mut s = ReconnectSchedule::new(ReconnectPolicy::default());
        assert_eq!(s.closed(0, 1.0), ms(500));
        assert_eq!(s.closed(0, 0.5), ms(100 + 450));
    }

    #[test]
    fn healthy_connection_resets_short_one_does_not() {
        let mut s = ReconnectSchedule::new(ReconnectPolicy::default());
        for _ in 0..5 {
            s.closed(0, 0.5);
        }
        assert_eq!(s.failures(), 5);
        s.opened(1_000);
        s.closed(1_000 + 9_999, 0.5);
        assert_eq!(s.failures(), 6, "open 9.999 s is not healthy");
        s.opened(20_000);
        let d = s.closed(30_000, 1.0);
        assert_eq!(s.failures(), 1, "open 10 s is healthy: back to the first ceiling");
        assert_eq!(d, ms(500));
    }

    #[test]
    fn never_gives_up() {
        let mut s = ReconnectSchedule::new(ReconnectPolicy::default());
        for _ in 0..10_000 {
            let d = s.closed(0, 0.99);
            assert!(d >= ms(100) && d <= ms(20_000));
        }
        assert_eq!(s.failures(), 10_000);
    }

    proptest! {
        #[test]
        fn delay_within_bounds(draws in prop::collection::vec(proptest::num::f64::ANY, 1..60)) {
            let p = ReconnectPolicy::default();
            let mut s = ReconnectSchedule::new(p);
            for (i, r) in draws.iter().enumerate() {
                let d = s.closed(0, *r);
                let n = u32::try_from(i + 1).unwrap();
                prop_assert!(d >= p.min_delay, "{d:?} below floor");
                prop_assert!(d <= p.ceiling(n), "{d:?} above ceiling {:?}", p.ceiling(n));
                prop_assert!(d <= p.max);
            }
        }

        #[test]
        fn ceiling_is_monotonic(a in 1u32..200, b in 1u32..200) {
            let p = ReconnectPolicy::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(p.ceiling(lo) <= p.ceiling(hi));
        }

        /// Different draws spread clients: across many clients' first retries, delays are not all equal.
        #[test]
        fn jitter_spreads_clients(seed in 0u64..1000) {
            let p = ReconnectPolicy::default();
            let delays: std::collections::BTreeSet<Duration> = (0..20u64)
                .map(|i| ReconnectSchedule::new(p).closed(0, ((seed * 31 + i * 17) % 100) as f64 / 100.0))
                .collect();
            prop_assert!(delays.len() > 1);
        }
    }
}
