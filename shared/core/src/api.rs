//! What a view asks of the cart API and what it shows when a call fails. The calls themselves (the browser's
//! `fetch`, the `Idempotency-Key`, the retries) are `cartwheel-link`'s; these types are pure, so views name them
//! in server-side rendering too.

use crate::protocol::ErrorCode;

/// A change to the session's cart, as the REST API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartRequest {
    Add {
        product_id: String,
        quantity: i64,
    },
    Set {
        product_id: String,
        quantity: i64,
    },
    /// "+" and "−": relative, so changes from other tabs are never overwritten.
    Adjust {
        product_id: String,
        delta: i64,
    },
    Remove {
        product_id: String,
    },
    Clear,
}

/// What a view shows while a change's outcome is unknown (no answer in time, or a failure while it ran) and the
/// link is finding out: by retrying it with the same key and, if that does not settle it, by reading the cart.
pub const CHECKING: &str = "Not confirmed yet — checking…";

/// Why a call failed, in words fit for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, or `None` when the server could not be reached.
    pub status: Option<u16>,
    pub code: ErrorCode,
    pub message: String,
    /// The cart as it is now, when the server sent it with the refusal (`version_mismatch`, `price_changed`):
    /// shown at once, so the shopper decides again on what is true.
    pub cart: Option<Box<crate::cart::Cart>>,
    /// What the answer's `Retry-After` asked for, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// The server could not be reached.
    pub fn network() -> ApiError {
        ApiError {
            status: None,
            code: ErrorCode::ServiceUnavailable,
            message: "The shop cannot be reached. Check your connection and try again.".to_owned(),
            cart: None,
            retry_after_ms: None,
        }
    }

    /// The call was aborted: no answer within the request timeout.
    pub fn timed_out() -> ApiError {
        ApiError { message: "The shop did not answer in time.".to_owned(), ..ApiError::network() }
    }

    /// Worth trying again with the same `Idempotency-Key`: the server was not reached, did not answer in
    /// time, was busy, or failed (a retry of an applied change is answered from its key, never applied twice).
    pub fn retryable(&self) -> bool {
        matches!(self.status, None | Some(429 | 500 | 502 | 503 | 504))
    }

    /// After this failure a change may or may not have been applied: no answer came, or the server or a
    /// proxy failed while it ran. (A 429 was refused before anything ran; other statuses are definite.)
    pub fn outcome_unknown(&self) -> bool {
        matches!(self.status, None | Some(500 | 502 | 503 | 504))
    }

    /// A change whose outcome is still unknown after its last retry, once the cart was read again (`read`: the
    /// read worked, so the cart shown is the shop's). The same change tried again reuses its key, so it is
    /// applied once at most; the words say so.
    pub fn unconfirmed(read: bool) -> ApiError {
        let message = if read {
            "Not confirmed. The cart shows what the shop has now; trying the same again will not apply it twice."
        } else {
            "Not confirmed, and the shop cannot be reached to check. Trying the same again will not apply it twice."
        };
        ApiError { message: message.to_owned(), ..ApiError::network() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_failures_busy_and_gateway_errors_are_retried_the_rest_are_not() {
        let network = ApiError::network();
        assert_eq!(network.status, None);
        assert_eq!(network.code, ErrorCode::ServiceUnavailable);
        assert_eq!(network.to_string(), network.message);
        assert!(network.retryable());
        let with = |status| ApiError { status: Some(status), ..ApiError::network() };
        for status in [429, 500, 502, 503, 504] {
            assert!(with(status).retryable(), "{status}");
        }
        for status in [200, 400, 404, 409, 412, 413, 422, 501, 505] {
            assert!(!with(status).retryable(), "{status}");
            assert!(!with(status).outcome_unknown(), "{status}");
        }
        // A 429 is retried but was never applied; no answer or a failure while it ran may have been.
        assert!(!with(429).outcome_unknown());
        assert!(network.outcome_unknown() && ApiError::timed_out().outcome_unknown() && with(502).outcome_unknown());
        assert!(ApiError::unconfirmed(true).message.starts_with("Not confirmed"));
        assert_ne!(ApiError::unconfirmed(true).message, ApiError::unconfirmed(false).message);
    }
}
