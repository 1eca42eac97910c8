//! The rules both stores apply inside their atomic step, written once: pricing a stored cart, planning a
//! checkout and a product change, what identifies "the same request" for an Idempotency-Key and how a
//! remembered answer is replayed, and which events a committed outcome announces. Each store only reads
//! and persists; what is decided here is the same whichever backend runs.

use cartwheel_core::version::Stamp;
use cartwheel_core::{Cart, CartContents, CartError, CartOp, Cents, Change, CheckoutReceipt, Order, Product};

use super::{Checkout, Mutation, MutationError, ProductUpdate, ProductUpdated, StoreError};
use crate::domain::{cart_epoch, CartKey, Catalog, Event};

/// What identifies "the same request" for an Idempotency-Key: a cart operation's `Debug` form, or
/// [`CHECKOUT_FINGERPRINT`]. Both stores remember it next to the answer.
pub fn fingerprint(op: &CartOp) -> String {
    format!("{op:?}")
}

pub const CHECKOUT_FINGERPRINT: &str = "Checkout";

/// The stored cart `key` priced against `catalog`, in its epoch.
pub fn price(key: &CartKey, version: u64, contents: &CartContents, catalog: &Catalog) -> Cart {
    let mut cart = Cart::priced(version, contents, catalog.currency(), |id| catalog.get(id));
    cart.epoch = cart_epoch(catalog.epoch(), key);
    cart
}

/// Refuse a change whose `If-Match` names another epoch or version than the cart's current one.
pub fn check_expected(current: &Cart, expected: Option<&Stamp>) -> Result<(), MutationError> {
    match expected {
        Some(stamp) if *stamp != Stamp::of(current) => Err(MutationError::VersionMismatch(Box::new(current.clone()))),
        _ => Ok(()),
    }
}

/// Refuse a checkout whose expected total is not what `priced` costs now.
pub fn check_total(priced: &Cart, expected: Option<Cents>) -> Result<(), MutationError> {
    match expected {
        Some(total) if total != priced.total_cents => Err(MutationError::PriceChanged(Box::new(priced.clone()))),
        _ => Ok(()),
    }
}

/// What checking out `priced` does to the catalog: refused for an empty cart or when any line no longer fits
/// the stock; otherwise every bought product with its stock lowered, at the catalog's next revision.
pub fn plan_checkout(priced: &Cart, catalog: &Catalog) -> Result<Vec<Product>, MutationError> {
    if priced.items.is_empty() {
        return Err(MutationError::EmptyCart);
    }
    let shortfalls = priced.shortfalls();
    if !shortfalls.is_empty() {
        return Err(MutationError::Shortfalls(shortfalls));
    }
    let revision = catalog.revision() + 1;
    priced
        .items
        .iter()
        .map(|line| {
            let mut product = catalog
                .get(&line.product_id)
                .cloned()
                .ok_or_else(|| CartError::UnknownProduct(line.product_id.clone()))?;
            product.stock = product.stock.checked_sub(line.quantity).ok_or_else(|| {
                StoreError::Corrupt(format!("stock of '{}' would go negative after the check", product.id))
            })?;
            product.revision = revision;
            Ok(product)
        })
        .collect()
}

/// A service's change applied to the product as `catalog` has it: the product as it would be, and whether it
/// changed (a change earns the catalog's next revision).
pub fn plan_product_update(update: &ProductUpdate, catalog: &Catalog) -> Result<(Product, Change), MutationError> {
    let current = catalog.get(&update.id).ok_or_else(|| CartError::UnknownProduct(update.id.clone()))?;
    let mut next = current.clone();
    next.stock = update.stock.unwrap_or(current.stock);
    next.price_cents = update.price_cents.unwrap_or(current.price_cents);
    if next.stock == current.stock && next.price_cents == current.price_cents {
        return Ok((next, Change::Unchanged));
    }
    next.revision = catalog.revision() + 1;
    Ok((next, Change::Changed))
}

/// A new notice's id: `ntc_` and 20 random hex digits.
pub fn new_notice_id() -> String {
    format!("ntc_{}", hex::encode(rand::random::<[u8; 10]>()))
}

/// A new help-chat message's id: `msg_` and 20 random hex digits.
pub fn new_chat_id() -> String {
    format!("msg_{}", hex::encode(rand::random::<[u8; 10]>()))
}

/// A stored help-chat message, or why it is unreadable.
pub fn parse_chat(text: &str) -> Result<cartwheel_core::chat::ChatMessage, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored chat message: {e}")))
}

/// A new order's id: `ord_` and 20 random hex digits.
pub fn new_order_id() -> String {
    format!("ord_{}", hex::encode(rand::random::<[u8; 10]>()))
}

/// A change as committed: the events it announces follow from whether it changed the cart.
pub fn committed_mutation(key: &CartKey, cart: Cart, change: Change) -> Mutation {
    let events = match change {
        Change::Changed => vec![Event::CartChanged { key: key.clone(), cart: cart.clone() }],
        Change::Unchanged => Vec::new(),
    };
    Mutation { cart, change, replayed: false, events }
}

/// A product change as planned and (if it changed anything) committed: its event, if it changed.
pub fn committed_product_update(product: Product, change: Change) -> ProductUpdated {
    let events = match change {
        Change::Changed => vec![Event::ProductChanged(product.clone())],
        Change::Unchanged => Vec::new(),
    };
    ProductUpdated { product, change, events }
}

/// A checkout as committed: the emptied cart, then every product whose stock it lowered.
pub fn committed_checkout(key: &CartKey, receipt: CheckoutReceipt, products: Vec<Product>) -> Checkout {
    let mut events = vec![Event::CartChanged { key: key.clone(), cart: receipt.cart.clone() }];
    events.extend(products.iter().cloned().map(Event::ProductChanged));
    Checkout { receipt, products, replayed: false, events }
}

/// What a change that changed nothing remembers in place of its answer (a few bytes, not a priced cart):
/// replayed, it answers the cart as it is by then — what the same no-op answers when it runs again — so a
/// flood of no-ops with fresh keys stores next to nothing.
pub const UNCHANGED_ANSWER: &str = "=";

/// What to remember for a committed change: its answer, or [`UNCHANGED_ANSWER`] for a no-op.
pub fn remembered_answer(outcome: &Mutation) -> Result<String, StoreError> {
    match outcome.change {
        Change::Changed => to_json(&outcome.cart),
        Change::Unchanged => Ok(UNCHANGED_ANSWER.to_owned()),
    }
}

/// The answer remembered for a cart change, if it was for the same request (`earlier` fingerprint); `current`
/// gives the cart as it is now, for a remembered no-op.
pub fn replay_mutation(
    earlier: &str,
    fingerprint: &str,
    answer: &str,
    current: impl FnOnce() -> Result<Cart, MutationError>,
) -> Result<Mutation, MutationError> {
    if earlier != fingerprint {
        return Err(MutationError::IdempotencyKeyReused);
    }
    let cart: Cart = if answer == UNCHANGED_ANSWER {
        current()?
    } else {
        serde_json::from_str(answer).map_err(|e| StoreError::Corrupt(format!("remembered answer: {e}")))?
    };
    Ok(Mutation { cart, change: Change::Unchanged, replayed: true, events: Vec::new() })
}

/// The answer remembered for a checkout, if the key was used for a checkout.
pub fn replay_checkout(earlier: &str, answer: &str) -> Result<Checkout, MutationError> {
    if earlier != CHECKOUT_FINGERPRINT {
        return Err(MutationError::IdempotencyKeyReused);
    }
    let receipt: CheckoutReceipt =
        serde_json::from_str(answer).map_err(|e| StoreError::Corrupt(format!("remembered order: {e}")))?;
    Ok(Checkout { receipt, products: Vec::new(), replayed: true, events: Vec::new() })
}

/// A stored order, if it was placed by `cart`'s session.
pub fn order_of(cart: &CartKey, body: Option<&str>) -> Result<Option<Order>, StoreError> {
    let Some(body) = body else { return Ok(None) };
    let order: Order = serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("stored order: {e}")))?;
    Ok((order.session == cart.as_str()).then_some(order))
}

/// JSON for a stored value; our types serialize infallibly, but a failure is a store error, not a panic.
pub fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A stored cart's contents, or why it is unreadable (`cart` names it in the error by its short prefix).
pub fn parse_contents(cart: &str, text: &str) -> Result<CartContents, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("cart {}: {e}", &cart[..8.min(cart.len())])))
}
