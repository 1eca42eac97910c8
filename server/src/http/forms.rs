//! The cart's forms without JavaScript: `POST /cart/{add,set,adjust,remove,clear,checkout}` with an
//! `application/x-www-form-urlencoded` body, what the page's `<form method="post">`s send before their bundle
//! has hydrated (a slow network), when it failed to load, or with scripts off.
//!
//! Each form is the JSON API's change in another encoding: the same [`Shop`] call, so the same validation,
//! the same Origin guard (every POST passes it), the same rate limits and idempotency — each rendered form
//! carries its own `idempotency_key`, so a double click or a resubmission after "Back" changes the cart once.
//! The answer is `303 See Other` back to the page: on success to the part that changed, on a refusal with the
//! error's code (`?error=insufficient_stock&product=…`), which the page turns into words of its own
//! ([`cartwheel_core::protocol::ErrorCode::in_words`]); after a checkout with the order's id (`?order=…`),
//! which the page reads back from the store before showing it. A body that is not a form at all gets the
//! usual typed JSON error: that is not a browser's form.

use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cartwheel_core::page::mount;
use cartwheel_core::protocol::ErrorCode;
use cartwheel_core::{CartOp, Cents, ProductId};
use serde::Deserialize;

use super::error::AppError;
use super::extract::FormBody;
use super::guards::session::Session;
use super::state::AppState;
use crate::domain::IdempotencyKey;
use crate::store::{CheckoutRequest, MutationRequest};

/// `/cart/{action}` (outside `/api`: these answer pages, not JSON).
pub fn router() -> Router<AppState> {
    Router::new().route("/cart/{action}", post(submit))
}

/// Every field any of the forms sends; each action reads the ones it needs. Text, so a malformed number is
/// the shopper's mistake shown on the page, not a refused body.
#[derive(Debug, Default, Deserialize)]
struct CartForm {
    product_id: Option<String>,
    quantity: Option<String>,
    delta: Option<String>,
    idempotency_key: Option<String>,
    expected_total_cents: Option<String>,
}

/// `POST /cart/{action}`.
#[tracing::instrument(skip(app, session, form), fields(cart = session.cart.short()))]
async fn submit(
    State(app): State<AppState>,
    session: Session,
    Path(action): Path<String>,
    FormBody(form): FormBody<CartForm>,
) -> Result<Response, AppError> {
    // A refusal shows on the product's card for "Add to cart", in the cart for the cart's own forms.
    let product = form.product_id.clone().filter(|p| !p.is_empty() && action == "add");
    let target = match apply(&app, &session, &action, form).await? {
        Ok(Done::Changed) => match (action.as_str(), &product) {
            ("add", Some(id)) => format!("/{}", anchor_of(id)),
            _ => format!("/#{}", mount::SHOPPING_CART),
        },
        Ok(Done::Ordered(id)) => format!("/?{}#{}", query(&[("order", &id)]), mount::SHOPPING_CART),
        Err(code) => {
            tracing::debug!(code = code.name(), "form refused");
            let name = code.name();
            match product {
                Some(id) => format!("/?{}{}", query(&[("error", &name), ("product", &id)]), anchor_of(&id)),
                None => format!("/?{}#{}", query(&[("error", &name)]), mount::SHOPPING_CART),
            }
        }
    };
    let location = HeaderValue::from_str(&target).map_err(|_| AppError::InvalidField("product_id".into()))?;
    Ok((StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response())
}

enum Done {
    Changed,
    Ordered(String),
}

/// Run the form's change. The outer error is for what is not the shopper's doing (an unknown action: 404;
/// storage down: 503, like the JSON API); the inner one is a refusal to show on the page, by its code.
async fn apply(
    app: &AppState,
    session: &Session,
    action: &str,
    form: CartForm,
) -> Result<Result<Done, ErrorCode>, AppError> {
    let product = form.product_id.filter(|p| !p.is_empty());
    let refuse = |code| Ok(Err(code));
    let idempotency_key = match form.idempotency_key.as_deref().filter(|k| !k.is_empty()).map(IdempotencyKey::parse) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => return refuse(ErrorCode::InvalidIdempotencyKey),
    };
    let number = |text: Option<&str>| text.and_then(|t| t.trim().parse::<i64>().ok());
    let id = || product.clone().map(ProductId);
    let op = match action {
        "checkout" => {
            let expected_total = match form.expected_total_cents.as_deref().filter(|t| !t.is_empty()) {
                None => None,
                Some(text) => match text.trim().parse::<u64>() {
                    Ok(cents) => Some(Cents(cents)),
                    Err(_) => return refuse(ErrorCode::InvalidField),
                },
            };
            let request =
                CheckoutRequest { cart: session.cart.clone(), idempotency_key, expected: None, expected_total };
            return match app.shop.checkout(request).await.map_err(AppError::from) {
                Ok(done) => Ok(Ok(Done::Ordered(done.receipt.order.id))),
                Err(AppError::Store(e)) => Err(AppError::Store(e)),
                Err(e) => refuse(e.code()),
            };
        }
        "clear" => CartOp::Clear,
        "add" | "set" | "adjust" | "remove" => {
            let Some(product_id) = id() else { return refuse(ErrorCode::UnknownProduct) };
            match action {
                "remove" => CartOp::Remove { product_id },
                "adjust" => match number(form.delta.as_deref()) {
                    Some(delta) => CartOp::Adjust { product_id, delta },
                    None => return refuse(ErrorCode::InvalidField),
                },
                _ => {
                    let Some(quantity) = number(form.quantity.as_deref()) else {
                        return refuse(ErrorCode::QuantityOutOfRange);
                    };
                    if action == "add" {
                        CartOp::Add { product_id, quantity }
                    } else {
                        CartOp::Set { product_id, quantity }
                    }
                }
            }
        }
        _ => return Err(AppError::NotFound(format!("no form action {action:?}"))),
    };
    let request = MutationRequest { cart: session.cart.clone(), op, idempotency_key, expected: None };
    match app.shop.mutate(request).await.map_err(AppError::from) {
        Ok(_) => Ok(Ok(Done::Changed)),
        Err(AppError::Store(e)) => Err(AppError::Store(e)),
        Err(e) => refuse(e.code()),
    }
}

/// `#product-<id>` for ids that are safe in a URL as they are (every catalog id is); nothing for others.
fn anchor_of(id: &str) -> String {
    let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("#product-{id}")
    } else {
        String::new()
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}
