//! Wall-clock time in the units the server stores and sends: order timestamps (ms), idempotency-key ages (s),
//! pub/sub lag (µs), `PONG` server time (ms). One place, so no two modules round or saturate differently.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    // A clock set before 1970 reads as the epoch rather than failing a request.
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch, as SQLite stores them.
pub fn now_secs() -> i64 {
    i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_agree() {
        let (s, ms, us) = (now_secs(), now_ms(), now_us());
        assert!(s > 1_700_000_000, "after 2023");
        assert!(ms / 1000 >= u64::try_from(s).unwrap() && us / 1000 >= ms);
    }
}
