//! Shopper sessions: who a request belongs to, and therefore which cart it may read and change.
//!
//! A session token is 16 random bytes plus a 16-byte HMAC-SHA256 tag over them, base64url-encoded into an
//! `HttpOnly; SameSite=Lax` cookie. Validating a token needs no storage round-trip, and a token the server did
//! not issue (guessed, truncated, tampered) is simply not a session. The cart belongs to the [`CartKey`], a hash of
//! the token: neither the database nor the logs ever hold a usable cookie.
//!
//! [`Session`] is also an extractor: the session [`ensure_session`] attached, or else a valid cookie (for
//! `/ws`, which never issues one); 401 otherwise.

use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::domain::CartKey;
use crate::http::error::AppError;

pub const COOKIE_NAME: &str = "cartwheel_session";
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// A validated session.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    token: String,
    pub cart: CartKey,
}

impl fmt::Debug for Session {
    // Never print the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("cart", &self.cart).finish_non_exhaustive()
    }
}

/// Issues and checks session tokens with one secret.
#[derive(Clone)]
pub struct SessionKeys {
    secret: Arc<[u8]>,
    secure: bool,
    max_age_secs: u64,
}

impl SessionKeys {
    pub fn new(secret: &[u8], secure: bool, max_age: std::time::Duration) -> SessionKeys {
        SessionKeys { secret: secret.into(), secure, max_age_secs: max_age.as_secs() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
    }

    pub fn issue(&self) -> Session {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut mac = self.mac();
        mac.update(&nonce);
        let tag = mac.finalize().into_bytes();
        let mut raw = Vec::with_capacity(NONCE_LEN + TAG_LEN);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&tag[..TAG_LEN]);
        Self::session_for(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The session a token stands for, if this server issued it.
    pub fn verify(&self, token: &str) -> Option<Session> {
        if token.len() > 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() != NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, tag) = raw.split_at(NONCE_LEN);
        let mut mac = self.mac();
        mac.update(nonce);
        mac.verify_truncated_left(tag).ok()?;
        Some(Self::session_for(token.to_owned()))
    }

    fn session_for(token: String) -> Session {
        let digest = Sha256::digest(token.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Session { cart: CartKey::from_digest(&first), token }
    }

    /// The `Set-Cookie` value for a new session.
    pub fn set_cookie(&self, session: &Session) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            session.token, self.max_age_secs
        )
    }

    /// The valid session named by a request's cookies, if any.
    pub fn from_headers(&self, headers: &axum::http::HeaderMap) -> Option<Session> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE_NAME)
            .find_map(|(_, value)| self.verify(value))
    }
}

/// Middleware: make sure the request has a session, issuing one (and its cookie) when it has none.
pub async fn ensure_session(State(keys): State<SessionKeys>, mut request: Request, next: Next) -> Response {
    let (session, fresh) = match keys.from_headers(request.headers()) {
        Some(s) => (s, false),
        None => (keys.issue(), true),
    };
    let cookie = fresh.then(|| keys.set_cookie(&session));
    request.extensions_mut().insert(session);
    let mut response = next.run(request).await;
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Session
where
    SessionKeys: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(s) = parts.extensions.get::<Session>() {
            return Ok(s.clone());
        }
        SessionKeys::from_ref(state).from_headers(&parts.headers).ok_or(AppError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys(secret: &[u8]) -> SessionKeys {
        SessionKeys::new(secret, false, Duration::from_secs(60))
    }

    #[test]
    fn issued_tokens_verify_and_map_to_a_stable_cart() {
        let k = keys(b"0123456789abcdef0123456789abcdef");
        let s = k.issue();
        let again = k.verify(&s.token).expect("valid");
        assert_eq!(again.cart, s.cart);
        assert_eq!(s.cart.as_str().len(), 32);
        assert_ne!(k.issue().cart, s.cart, "tokens are random");
    }

    #[test]
    fn foreign_tampered_and_malformed_tokens_are_refused() {
        let k = keys(b"0123456789abcdef0123456789abcdef");
        let other = keys(b"another secret, quite different!!");
        let s = k.issue();
        assert!(other.verify(&s.token).is_none(), "another server's token");
        let mut tampered = s.token.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        assert!(k.verify(std::str::from_utf8(&tampered).unwrap()).is_none());
        for bad in ["", "x", "!!!!", &"A".repeat(43), &"A".repeat(500)] {
            assert!(k.verify(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn cookie_attributes_and_parsing() {
        let k = SessionKeys::new(b"0123456789abcdef0123456789abcdef", true, Duration::from_secs(100));
        let s = k.issue();
        let c = k.set_cookie(&s);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"));
        assert!(c.contains("Max-Age=100") && c.ends_with("; Secure"));
        let mut headers = axum::http::HeaderMap::new();
        headers
            .insert(COOKIE, format!("theme=dark; {COOKIE_NAME}=garbage; {COOKIE_NAME}={}", s.token).parse().unwrap());
        assert_eq!(k.from_headers(&headers).map(|x| x.cart), Some(s.cart.clone()));
        assert!(!format!("{s:?}").contains(&s.token), "Debug never shows the token");
    }
}
