//! Extractors that validate: a request that reaches a handler has a well-formed JSON body of the expected
//! shape and, if it sent one, a well-formed `Idempotency-Key`. Every refusal is a typed [`AppError`], so the
//! client gets the same `{"error":{"code","message"}}` body as for any other failure.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH, TRANSFER_ENCODING};
use axum::http::request::Parts;
use axum::http::HeaderName;
use cartwheel_core::version::Stamp;
use serde::de::DeserializeOwned;

use super::error::AppError;
use crate::config::defaults;
use crate::domain::{IdempotencyKey, KeyError};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer that repeats the first answer to the same Idempotency-Key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The optional `Idempotency-Key` header, parsed ([`IdempotencyKey::parse`]); 400 when malformed.
pub struct IdempotencyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyHeader(None));
        };
        // A header that is not even text is refused like any other malformed key.
        let text = value.to_str().map_err(|_| KeyError::IdempotencyKey)?;
        Ok(IdempotencyHeader(Some(IdempotencyKey::parse(text)?)))
    }
}

/// The optional `If-Match` header naming one cart stamp (`"<epoch>.<version>"`, as `ETag` gave it); 400
/// `invalid_field` when it is anything else (a list, `*`, junk), since guessing could change the wrong cart.
pub struct IfMatch(pub Option<Stamp>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let refused = || AppError::InvalidField("If-Match must name one cart version: \"<epoch>.<version>\"".into());
        let stamp = value.to_str().ok().and_then(Stamp::parse_header).ok_or_else(refused)?;
        Ok(IfMatch(Some(stamp)))
    }
}

/// A JSON body that may be left out (no body at all: `T::default()`); when sent, refused like [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = request.headers().get(CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0")
            || (request.headers().get(CONTENT_TYPE).is_none()
                && request.headers().get(CONTENT_LENGTH).is_none()
                && request.headers().get(TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(OptionalJson(T::default()));
        }
        ApiJson::from_request(request, state).await.map(|ApiJson(v)| OptionalJson(v))
    }
}

/// A JSON body whose every failure is a typed [`AppError`]: 415 without a JSON content type, 413 over the size
/// limit, 400 for malformed JSON, missing fields or wrong types.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_of(request, state, "application/json", AppError::InvalidJson).await?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => "the JSON does not have the expected fields and types",
                _ => "the body is not valid JSON",
            };
            AppError::InvalidJson(format!("{what}: {e}"))
        })
    }
}

/// A form body (`application/x-www-form-urlencoded`, what a `<form method="post">` sends) of the expected
/// shape, refused like [`ApiJson`]: 415 for another content type, 413 over the size limit, 400 `invalid_field`
/// when it does not parse.
pub struct FormBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for FormBody<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_of(request, state, "application/x-www-form-urlencoded", AppError::InvalidField).await?;
        serde_urlencoded::from_bytes(&bytes)
            .map(FormBody)
            .map_err(|e| AppError::InvalidField(format!("the form does not have the expected fields: {e}")))
    }
}

/// The body of a request sent as `mime` (415 otherwise), within the body limit (413 over it); any other
/// failure to read it is `unreadable`.
async fn body_of<S: Send + Sync>(
    request: Request,
    state: &S,
    mime: &'static str,
    unreadable: fn(String) -> AppError,
) -> Result<Bytes, AppError> {
    let sent_as = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|sent| sent.trim().eq_ignore_ascii_case(mime));
    if !sent_as {
        return Err(AppError::UnsupportedMediaType(mime));
    }
    let limit = request.extensions().get::<BodyLimit>().map_or(defaults::MAX_BODY_BYTES, |l| l.0);
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge { limit }
        } else {
            unreadable(format!("could not read the body: {rejection}"))
        }
    })
}

/// The configured body limit, attached to requests so error messages can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

#[cfg(test)]
mod tests {
    //! The extractors and the error mapping through a real router, one request at a time.
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use axum::{Extension, Json, Router};
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        n: u32,
    }

    async fn echo(
        IdempotencyHeader(key): IdempotencyHeader,
        ApiJson(probe): ApiJson<Probe>,
    ) -> Json<(u32, Option<String>)> {
        Json((probe.n, key.map(|k| k.as_str().to_owned())))
    }

    fn app() -> Router {
        Router::new()
            .route("/probe", post(echo))
            .layer(axum::extract::DefaultBodyLimit::max(64))
            .layer(Extension(BodyLimit(64)))
    }

    async fn send(content_type: Option<&str>, key: Option<&[u8]>, body: &str) -> (StatusCode, serde_json::Value) {
        let mut request = Request::post("/probe");
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_KEY, axum::http::HeaderValue::from_bytes(key).unwrap());
        }
        let response = app().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn a_valid_request_reaches_the_handler() {
        let (status, body) = send(Some("application/json; charset=utf-8"), Some(b"k-1"), r#"{"n":7}"#).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!([7, "k-1"]));
        let (status, body) = send(Some("Application/JSON"), None, r#"{"n":1}"#).await;
        assert_eq!((status, body), (StatusCode::OK, serde_json::json!([1, null])));
    }

    #[tokio::test]
    async fn every_refusal_is_a_typed_json_error() {
        let cases: [(Option<&str>, Option<&[u8]>, &str, StatusCode, &str); 7] = [
            (None, None, r#"{"n":1}"#, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            (Some("text/plain"), None, r#"{"n":1}"#, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            (Some("application/json"), None, "{", StatusCode::BAD_REQUEST, "invalid_json"),
            (Some("application/json"), None, r#"{"n":"x"}"#, StatusCode::BAD_REQUEST, "invalid_json"),
            (Some("application/json"), None, &"x".repeat(65), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            (
                Some("application/json"),
                Some(b"has space"),
                r#"{"n":1}"#,
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
            ),
            (Some("application/json"), Some(b"\xff"), r#"{"n":1}"#, StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
        ];
        for (content_type, key, body, status, code) in cases {
            let (got, json) = send(content_type, key, body).await;
            assert_eq!(got, status, "{content_type:?} {key:?} {body}");
            assert_eq!(json["error"]["code"], code, "{json}");
            assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
        }
    }

    #[tokio::test]
    async fn an_idempotency_key_at_its_length_limit_passes_and_one_past_it_fails() {
        let at = "k".repeat(crate::domain::keys::IDEMPOTENCY_KEY_MAX_LEN);
        let (status, _) = send(Some("application/json"), Some(at.as_bytes()), r#"{"n":1}"#).await;
        assert_eq!(status, StatusCode::OK);
        let past = format!("{at}k");
        let (status, json) = send(Some("application/json"), Some(past.as_bytes()), r#"{"n":1}"#).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_idempotency_key"))
        );
    }
}
