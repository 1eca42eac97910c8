//! Shopper sessions: who a request belongs to, and therefore which cart it may read and change.
//!
//! A session token is a version byte, 16 random bytes, its issue time and a 16-byte HMAC-SHA256 tag over them,
//! base64url-encoded into an `HttpOnly; SameSite=Lax` cookie. Validating a token needs no storage round-trip, and
//! a token the server did not issue (guessed, truncated, tampered) or issued longer ago than the maximum age is
//! simply not a session. The cart belongs to the [`CartKey`], a hash of the random bytes: neither the database
//! nor the logs ever hold a usable cookie. A session in use is renewed (same cart, new issue time), and the
//! renewal touches the cart, so a cart only expires once no valid cookie names it.
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
use crate::shop::Shop;

pub const COOKIE_NAME: &str = "cartwheel_session";
/// The name over https: browsers only accept a `__Host-` cookie that is `Secure`, `Path=/` and has no
/// `Domain`, so no other host under the same domain (and no plain-http page) can set or shadow it.
pub const SECURE_COOKIE_NAME: &str = "__Host-cartwheel_session";
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Version 2 tokens: a version byte, the nonce, the issue time (seconds since the Unix epoch, big endian) and the
/// tag over all of them. Version 3 is the same with the cart's key in place of the nonce: what a version 1
/// token (nonce and tag only, no issue time, cart = a hash of the whole token; still accepted) is renewed into,
/// so it keeps its cart and gains an expiry.
const V2: u8 = 2;
const V3: u8 = 3;
const V2_LEN: usize = 1 + NONCE_LEN + 8 + TAG_LEN;

/// A validated session.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    token: String,
    pub cart: CartKey,
    /// What a renewed token keeps, so it names the same cart.
    seed: Seed,
    /// When the token was issued (`None`: a version 1 token, which does not say).
    issued: Option<u64>,
}

/// Where a session's cart comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seed {
    /// Version 2: the cart is derived from this nonce.
    Nonce([u8; NONCE_LEN]),
    /// Version 3: the cart's key itself (a renewed version 1 session).
    Cart([u8; NONCE_LEN]),
}

impl Seed {
    fn cart(&self) -> CartKey {
        match self {
            Seed::Nonce(nonce) => v2_cart(nonce),
            Seed::Cart(key) => CartKey::from_digest(key),
        }
    }
}

impl Session {
    /// When the token was issued, in milliseconds since the Unix epoch (`None`: a version 1 token). General
    /// notices start there for a session the notice store has not seen yet.
    pub fn issued_ms(&self) -> Option<u64> {
        self.issued.map(|secs| secs.saturating_mul(1_000))
    }
}

impl fmt::Debug for Session {
    // Never print the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("cart", &self.cart).finish_non_exhaustive()
    }
}

/// Issues and checks session tokens. Several secrets (a key ring): the first signs, every one verifies, so a
/// secret is rotated by putting the new one first and dropping the old one once its cookies have aged out.
#[derive(Clone)]
pub struct SessionKeys {
    secrets: Arc<[Arc<[u8]>]>,
    secure: bool,
    max_age_secs: u64,
}

impl SessionKeys {
    /// `secrets`: the signing secret first. `max_age`: a session unused this long is over; each use within it
    /// slides it (the cookie is renewed once it is a tenth of the way old).
    pub fn new(secrets: &[Vec<u8>], secure: bool, max_age: std::time::Duration) -> SessionKeys {
        let secrets: Vec<Arc<[u8]>> = secrets.iter().map(|s| Arc::from(s.as_slice())).collect();
        SessionKeys { secrets: secrets.into(), secure, max_age_secs: max_age.as_secs().max(1) }
    }

    fn mac(secret: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
    }

    fn signer(&self) -> &[u8] {
        self.secrets.first().map_or(&[][..], |s| s)
    }

    /// A new session, issued now.
    pub fn issue(&self) -> Session {
        self.issue_at(Seed::Nonce(rand::random()), now_secs())
    }

    /// A token for `seed` issued at `issued`: a new session, or the same one renewed (same seed, same cart).
    fn issue_at(&self, seed: Seed, issued: u64) -> Session {
        let (version, bytes) = match &seed {
            Seed::Nonce(b) => (V2, b),
            Seed::Cart(b) => (V3, b),
        };
        let mut raw = Vec::with_capacity(V2_LEN);
        raw.push(version);
        raw.extend_from_slice(bytes);
        raw.extend_from_slice(&issued.to_be_bytes());
        let mut mac = Self::mac(self.signer());
        mac.update(&raw);
        raw.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        Session { cart: seed.cart(), token: URL_SAFE_NO_PAD.encode(raw), seed, issued: Some(issued) }
    }

    /// Whether any secret of the ring made `tag` over `signed`. Every secret is tried (no early exit).
    fn signed_here(&self, signed: &[u8], tag: &[u8]) -> bool {
        let mut ok = false;
        for secret in self.secrets.iter() {
            let mut mac = Self::mac(secret);
            mac.update(signed);
            ok |= mac.verify_truncated_left(tag).is_ok();
        }
        ok
    }

    /// The session a token stands for, if this server issued it and it has not expired by `now`.
    pub fn verify_at(&self, token: &str, now: u64) -> Option<Session> {
        if token.len() > 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        match raw.len() {
            V2_LEN if raw[0] == V2 || raw[0] == V3 => {
                let (signed, tag) = raw.split_at(V2_LEN - TAG_LEN);
                if !self.signed_here(signed, tag) {
                    return None;
                }
                let bytes: [u8; NONCE_LEN] = signed[1..1 + NONCE_LEN].try_into().ok()?;
                let seed = if raw[0] == V2 { Seed::Nonce(bytes) } else { Seed::Cart(bytes) };
                let issued = u64::from_be_bytes(signed[1 + NONCE_LEN..].try_into().ok()?);
                // Too old, or from the future (a clock far off, or a forged time under a leaked secret).
                if now.saturating_sub(issued) >= self.max_age_secs || issued > now.saturating_add(300) {
                    return None;
                }
                Some(Session { cart: seed.cart(), token: token.to_owned(), seed, issued: Some(issued) })
            }
            // Version 1: nonce and tag; the cart is the token's hash, as it always was.
            len if len == NONCE_LEN + TAG_LEN => {
                let (nonce, tag) = raw.split_at(NONCE_LEN);
                if !self.signed_here(nonce, tag) {
                    return None;
                }
                let digest = Sha256::digest(token.as_bytes());
                let mut first = [0u8; 16];
                first.copy_from_slice(&digest[..16]);
                let seed = Seed::Cart(first);
                Some(Session { cart: seed.cart(), token: token.to_owned(), seed, issued: None })
            }
            _ => None,
        }
    }

    pub fn verify(&self, token: &str) -> Option<Session> {
        self.verify_at(token, now_secs())
    }

    /// The same session with a fresh issue time, when it is old enough to renew (a tenth of the maximum age):
    /// each use slides the expiry without setting a cookie on every answer. A version 1 token is renewed at once,
    /// into a version 3 token for the same cart.
    fn renewed(&self, session: &Session, now: u64) -> Option<Session> {
        if session.issued.is_some_and(|issued| now.saturating_sub(issued) < self.max_age_secs / 10) {
            return None;
        }
        Some(self.issue_at(session.seed, now))
    }

    /// The `Set-Cookie` renewing `session`, when it is due and its cart could be kept from expiring first: a
    /// cart must outlive every cookie that names it (see `store::Retention`). If touching the cart fails, the
    /// next request renews.
    pub async fn renewal(&self, session: &Session, shop: &Shop) -> Option<String> {
        let renewed = self.renewed(session, now_secs())?;
        match shop.touch(&session.cart).await {
            Ok(()) => Some(self.set_cookie(&renewed)),
            Err(e) => {
                tracing::warn!(error = %e, "session not renewed: its cart could not be kept from expiring");
                None
            }
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_COOKIE_NAME
        } else {
            COOKIE_NAME
        }
    }

    /// The `Set-Cookie` value for a session.
    pub fn set_cookie(&self, session: &Session) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            self.cookie_name(),
            session.token,
            self.max_age_secs
        )
    }

    /// The valid session named by a request's cookies, if any (either cookie name: a site that moved to https
    /// keeps its sessions).
    pub fn from_headers(&self, headers: &axum::http::HeaderMap) -> Option<Session> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE_NAME || *name == SECURE_COOKIE_NAME)
            .find_map(|(_, value)| self.verify(value))
    }
}

/// A version 2 session's cart: from its nonce only, so renewing the token keeps the cart.
fn v2_cart(nonce: &[u8; NONCE_LEN]) -> CartKey {
    let digest = Sha256::new().chain_update(b"cartwheel cart v2").chain_update(nonce).finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    CartKey::from_digest(&first)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Middleware: make sure the request has a session, issuing one (and its cookie) when it has none, and renewing
/// it when it is due.
pub async fn ensure_session(
    State(keys): State<SessionKeys>,
    State(shop): State<Shop>,
    mut request: Request,
    next: Next,
) -> Response {
    let (session, cookie) = match keys.from_headers(request.headers()) {
        Some(s) => {
            let renewed = keys.renewal(&s, &shop).await;
            (s, renewed)
        }
        None => {
            let s = keys.issue();
            let cookie = keys.set_cookie(&s);
            (s, Some(cookie))
        }
    };
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
        SessionKeys::new(&[secret.to_vec()], false, Duration::from_secs(1_000))
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_tokens_verify_and_map_to_a_stable_cart() {
        let k = keys(SECRET);
        let s = k.issue();
        let again = k.verify(&s.token).expect("valid");
        assert_eq!(again.cart, s.cart);
        assert_eq!(s.cart.as_str().len(), 32);
        assert_ne!(k.issue().cart, s.cart, "tokens are random");
    }

    #[test]
    fn foreign_tampered_and_malformed_tokens_are_refused() {
        let k = keys(SECRET);
        let other = keys(b"another secret, quite different!!");
        let s = k.issue();
        assert!(other.verify(&s.token).is_none(), "another server's token");
        let mut tampered = s.token.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        assert!(k.verify(std::str::from_utf8(&tampered).unwrap()).is_none());
        for bad in ["", "x", "!!!!", &"A".repeat(43), &"A".repeat(55), &"A".repeat(500)] {
            assert!(k.verify(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_session_expires_at_its_maximum_age_and_renewing_keeps_its_cart() {
        let k = keys(SECRET);
        let t0 = 1_000_000;
        let s = k.issue_at(Seed::Nonce([7; NONCE_LEN]), t0);
        assert!(k.verify_at(&s.token, t0 + 999).is_some());
        assert!(k.verify_at(&s.token, t0 + 1_000).is_none(), "expired at the maximum age");
        assert!(k.verify_at(&s.token, t0 - 301).is_none(), "issued in the future");
        assert!(k.renewed(&s, t0 + 99).is_none(), "too fresh to renew");
        let renewed = k.renewed(&s, t0 + 600).unwrap();
        assert_eq!(renewed.cart, s.cart);
        assert_ne!(renewed.token, s.token);
        assert!(k.verify_at(&renewed.token, t0 + 1_500).is_some(), "the renewed one slides the expiry");
    }

    #[test]
    fn a_rotated_ring_keeps_old_cookies_valid_and_signs_with_the_new_secret() {
        let old = keys(SECRET);
        let cookie = old.issue();
        let new_secret = b"the new secret, thirty-two bytes!".to_vec();
        let ring = SessionKeys::new(&[new_secret.clone(), SECRET.to_vec()], false, Duration::from_secs(1_000));
        assert_eq!(ring.verify(&cookie.token).map(|s| s.cart), Some(cookie.cart), "old cookies stay valid");
        let fresh = ring.issue();
        assert!(keys(&new_secret).verify(&fresh.token).is_some(), "signed with the first secret");
        assert!(old.verify(&fresh.token).is_none());
    }

    #[test]
    fn version_1_tokens_are_still_sessions_with_their_old_cart() {
        let k = keys(SECRET);
        let nonce = [9u8; NONCE_LEN];
        let mut mac = SessionKeys::mac(SECRET);
        mac.update(&nonce);
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        let token = URL_SAFE_NO_PAD.encode(raw);
        let s = k.verify(&token).expect("a v1 token");
        let digest = Sha256::digest(token.as_bytes());
        assert_eq!(s.cart, CartKey::from_digest(&digest[..16].try_into().unwrap()));
        let renewed = k.renewed(&s, now_secs()).expect("renewed at once: it has no issue time");
        assert_eq!(renewed.cart, s.cart, "renewed into a token for the same cart");
        let again = k.verify(&renewed.token).expect("the version 3 token is a session");
        assert_eq!((&again.cart, again.issued), (&s.cart, renewed.issued));
        assert!(k.verify_at(&renewed.token, now_secs() + 1_000).is_none(), "and it expires like any other");
        assert!(k.renewed(&again, now_secs()).is_none(), "not renewed again while fresh");
    }

    #[test]
    fn cookie_attributes_and_parsing() {
        let k = SessionKeys::new(&[SECRET.to_vec()], true, Duration::from_secs(100));
        let s = k.issue();
        let c = k.set_cookie(&s);
        assert!(c.starts_with("__Host-cartwheel_session="), "{c}");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"));
        assert!(c.contains("Max-Age=100") && c.ends_with("; Secure") && !c.contains("Domain"));
        assert!(keys(SECRET).set_cookie(&s).starts_with("cartwheel_session="), "no prefix over plain http");
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            COOKIE,
            format!("theme=dark; {COOKIE_NAME}=garbage; {SECURE_COOKIE_NAME}={}", s.token).parse().unwrap(),
        );
        assert_eq!(k.from_headers(&headers).map(|x| x.cart), Some(s.cart.clone()));
        assert!(!format!("{s:?}").contains(&s.token), "Debug never shows the token");
    }
}
