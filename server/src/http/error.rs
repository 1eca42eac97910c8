//! Every way a request can fail, as one type, mapped to an HTTP answer in exactly one place.
//!
//! Handlers return `Result<_, AppError>`; the `IntoResponse` impl below decides the status, the JSON body
//! `{"error":{"code","message"}}` and any extra header (`Retry-After`). Messages are written for the shopper or
//! the developer reading them; internal details go to the log, not to the client.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cartwheel_core::{Cart, CartError, ErrorBody, ErrorCode, Shortfall};
use thiserror::Error;

use crate::domain::KeyError;
use crate::store::{MutationError, StoreError};

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Cart(#[from] CartError),
    #[error("{0}")]
    InvalidJson(String),
    /// The body's `Content-Type` is not the one this endpoint reads (named).
    #[error("send the body with 'Content-Type: {0}'")]
    UnsupportedMediaType(&'static str),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    #[error("origin '{0}' may not change carts here")]
    ForbiddenOrigin(String),
    #[error("no valid session: load the shop page first so the server can give you a session cookie")]
    Unauthorized,
    #[error("a valid service token is required: 'Authorization: Bearer <token>'")]
    ServiceUnauthorized,
    #[error("this service token may not change '{0}': give it that scope")]
    InsufficientScope(&'static str),
    #[error("{0}")]
    InvalidField(String),
    #[error("the cart is empty: add something before checking out")]
    EmptyCart,
    #[error("not enough stock for {}", describe_shortfalls(.0))]
    Shortfalls(Vec<Shortfall>),
    #[error("too many requests; retry in {} s", retry_after_secs(*.retry_after))]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("{0}")]
    BadUpgrade(String),
    #[error("this server speaks WebSocket version 13 only (`Sec-WebSocket-Version: 13`)")]
    WebSocketVersion,
    #[error("{0}: close one before opening another")]
    TooManySockets(#[from] crate::realtime::quota::QuotaExceeded),
    #[error("the cart changed (in another tab or device) since the version this request names; nothing was changed — here is the cart as it is now")]
    VersionMismatch(Box<Cart>),
    #[error("prices changed since this total was shown; nothing was charged — here is the cart at today's prices")]
    PriceChanged(Box<Cart>),
    #[error("the cart store is unavailable; retry shortly")]
    Store(#[from] StoreError),
}

fn describe_shortfalls(lines: &[Shortfall]) -> String {
    let each: Vec<String> = lines
        .iter()
        .map(|l| match l.available {
            0 => format!("{} (sold out)", l.name),
            n => format!("{} (only {n} left, the cart holds {})", l.name, l.requested),
        })
        .collect();
    each.join(", ")
}

fn retry_after_secs(d: Duration) -> u64 {
    // Round up: "retry in 0 s" would invite an immediate, equally refused retry.
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl From<MutationError> for AppError {
    fn from(e: MutationError) -> Self {
        match e {
            MutationError::Cart(e) => AppError::Cart(e),
            MutationError::IdempotencyKeyReused => AppError::IdempotencyKeyReused,
            MutationError::EmptyCart => AppError::EmptyCart,
            MutationError::Shortfalls(lines) => AppError::Shortfalls(lines),
            MutationError::VersionMismatch(cart) => AppError::VersionMismatch(cart),
            MutationError::PriceChanged(cart) => AppError::PriceChanged(cart),
            MutationError::Store(e) => AppError::Store(e),
        }
    }
}

impl From<KeyError> for AppError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::IdempotencyKey => AppError::InvalidIdempotencyKey(e.to_string()),
            KeyError::CartKey => AppError::InvalidField(e.to_string()),
        }
    }
}

/// The fallback for paths that match no route.
pub async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint".into())
}

/// The fallback for a known path with a method it does not take.
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Cart(e) => match e {
                CartError::UnknownProduct(_) => StatusCode::NOT_FOUND,
                CartError::InsufficientStock { .. } => StatusCode::CONFLICT,
                CartError::QuantityOutOfRange { .. }
                | CartError::DeltaOutOfRange { .. }
                | CartError::LineLimitExceeded { .. }
                | CartError::TooManyLines { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            },
            AppError::InvalidJson(_) | AppError::InvalidIdempotencyKey(_) | AppError::BadUpgrade(_) => {
                StatusCode::BAD_REQUEST
            }
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::WebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            AppError::Unauthorized | AppError::ServiceUnauthorized => StatusCode::UNAUTHORIZED,
            AppError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            AppError::InvalidField(_) => StatusCode::BAD_REQUEST,
            AppError::EmptyCart | AppError::Shortfalls(_) | AppError::PriceChanged(_) => StatusCode::CONFLICT,
            AppError::VersionMismatch(_) => StatusCode::PRECONDITION_FAILED,
            AppError::RateLimited { .. } | AppError::TooManySockets(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Cart(e) => e.code(),
            AppError::InvalidJson(_) => ErrorCode::InvalidJson,
            AppError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            AppError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            AppError::ForbiddenOrigin(_) => ErrorCode::ForbiddenOrigin,
            AppError::Unauthorized | AppError::ServiceUnauthorized => ErrorCode::Unauthorized,
            AppError::InsufficientScope(_) => ErrorCode::InsufficientScope,
            AppError::InvalidField(_) => ErrorCode::InvalidField,
            AppError::EmptyCart => ErrorCode::EmptyCart,
            AppError::Shortfalls(_) => ErrorCode::InsufficientStock,
            AppError::RateLimited { .. } => ErrorCode::RateLimited,
            AppError::TooManySockets(_) => ErrorCode::TooManyConnections,
            AppError::InvalidIdempotencyKey(_) => ErrorCode::InvalidIdempotencyKey,
            AppError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            AppError::BadUpgrade(_) | AppError::WebSocketVersion => ErrorCode::InvalidMessage,
            AppError::VersionMismatch(_) => ErrorCode::VersionMismatch,
            AppError::PriceChanged(_) => ErrorCode::PriceChanged,
            AppError::Store(_) => ErrorCode::ServiceUnavailable,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Store(e) = &self {
            tracing::error!(error = %e, "cart store failed");
        }
        let retry_after = match &self {
            AppError::RateLimited { retry_after } => Some(retry_after_secs(*retry_after)),
            AppError::Store(_) => Some(1),
            _ => None,
        };
        let mut body = ErrorBody::new(self.code(), self.to_string());
        let bearer_challenge = matches!(self, AppError::ServiceUnauthorized);
        let version_wanted = matches!(self, AppError::WebSocketVersion);
        match self {
            AppError::Shortfalls(lines) => body.error.shortfalls = lines,
            AppError::VersionMismatch(cart) | AppError::PriceChanged(cart) => body.error.cart = Some(*cart),
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if bearer_challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if version_wanted {
            response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
