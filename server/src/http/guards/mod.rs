//! Request guards, run as middleware before any handler: [`session`] (signed cookie → cart key), [`origin`]
//! (foreign `Origin` → 403), [`rate_limit`] (per session and address → 429). The helpers below apply them
//! in the one order that works: the session first, so the rate limit can key on it.

pub mod origin;
pub mod rate_limit;
pub mod session;

use axum::{middleware, Router};

use super::state::AppState;

/// Routes for shoppers: a session (issued when missing), then the rate limits.
pub fn shopper(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    rate_limited(routes, state).layer(middleware::from_fn_with_state(state.clone(), session::ensure_session))
}

/// Routes under the per-address (and, when a session is attached, per-session) rate limit.
pub fn rate_limited(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.layer(middleware::from_fn_with_state(state.clone(), rate_limit::limit))
}

/// Routes behind the origin check.
pub fn origin_checked(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.layer(middleware::from_fn_with_state(state.clone(), origin::guard))
}
