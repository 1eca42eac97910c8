//! The HTTP face of the server: shared request state ([`state::AppState`]), the router that merges each module's
//! own `router()`, and the middleware in the order it must run. Handlers are thin: extract (validated by the
//! extractors in [`extract`] and the [`guards`]), call the [`Shop`], answer; every failure is an
//! [`error::AppError`], mapped to a response in one place.
//!
//! Middleware order, outermost first: trace (debug-level spans per request), the origin guard (403 for a
//! foreign `Origin` on anything that changes state or opens a socket), then per route group the session guard
//! (issues a cookie when there is none; `/ws` is outside it: a socket without a session is refused, never
//! given one) and the rate limits.

pub mod assets;
pub mod cart;
pub mod chat;
pub mod client;
pub mod error;
pub mod extract;
pub mod forms;
pub mod guards;
pub mod notices;
pub mod ops;
pub mod page;
pub mod products;
pub mod serve;
pub mod service;
pub mod socket;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::extract::BodyLimit;
pub use self::state::{AppParts, AppState};

/// Every route, with the middleware in the order the module doc gives.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let shopper_api = Router::new()
        .merge(products::router())
        .merge(cart::router())
        .merge(notices::router())
        .merge(chat::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed);
    let shopper_api = guards::shopper(shopper_api, &state);
    // Services are not shoppers: no session cookie, and their own per-token limit (in the `ServiceCaller`
    // extractor) instead of the per-address one.
    let api = Router::new()
        .nest("/service", service::router().merge(chat::service_router()))
        .merge(shopper_api)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)));

    // The page gets a session like the API: its first answer sets the cookie its bundles then use.
    // The forms post like the API changes (see `forms`): the same session, limits and body cap.
    let forms = forms::router().layer(DefaultBodyLimit::max(body_limit)).layer(Extension(BodyLimit(body_limit)));
    let pages = guards::shopper(page::router().merge(forms), &state);

    let all = Router::new()
        .nest("/api", api)
        .merge(guards::rate_limited(socket::router(), &state))
        .merge(pages)
        .merge(assets::router(&state.config.images_dir))
        .merge(ops::router());
    guards::origin_checked(all, &state)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .with_state(state)
}
