//! Token buckets: a bucket holds up to `burst` tokens and refills at `per_sec`; each request or frame takes one.
//! Used per session and per client address on the HTTP API ([`crate::http::guards::rate_limit`]), per token on
//! the service API, and per connection on WebSocket frames ([`crate::realtime::ws`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Buckets kept per limiter before idle (full) ones are swept, bounding memory under many clients.
pub const MAX_TRACKED_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

/// One bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket { rate, tokens: f64::from(rate.burst), updated: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate.per_sec)).min(f64::from(self.rate.burst));
        self.updated = now;
    }

    /// Take a token, or say how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate.per_sec == 0 {
            Err(Duration::from_secs(60))
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / f64::from(self.rate.per_sec)))
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= f64::from(self.rate.burst)
    }
}

/// Buckets by key.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        KeyedLimiter { rate, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            // A full bucket is indistinguishable from a new one, so forgetting it is free.
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets.entry(key.clone()).or_insert_with(|| TokenBucket::new(self.rate, now)).take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(Rate { per_sec: 10, burst: 3 }, t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok(), "one token after 1/rate");
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
        assert!(b.take(t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn keys_are_independent() {
        let t0 = Instant::now();
        let l = KeyedLimiter::new(Rate { per_sec: 1, burst: 1 });
        assert!(l.check(&"a", t0).is_ok());
        assert!(l.check(&"a", t0).is_err());
        assert!(l.check(&"b", t0).is_ok());
    }
}
