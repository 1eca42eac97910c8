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
}

impl ApiError {
    /// The server could not be reached.
    pub fn network() -> ApiError {
        ApiError {
            status: None,
            code: ErrorCode::ServiceUnavailable,
            message: "The shop cannot be reached. Check your connection and try again.".to_owned(),
            cart: None,
        }
    }

    /// Worth trying again with the same `Idempotency-Key`: the server was not reached, was busy, or is down.
    pub fn retryable(&self) -> bool {
        matches!(self.status, None | Some(429 | 502 | 503 | 504))
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
        for status in [429, 502, 503, 504] {
            assert!(with(status).retryable(), "{status}");
        }
        for status in [200, 400, 404, 409, 413, 422, 500, 501] {
            assert!(!with(status).retryable(), "{status}");
        }
    }
}
