//! The shopping cart micro-frontend: the session's lines with − / a quantity field / + and remove, line
//! totals, the cart total, "Clear cart", "Checkout" with its order confirmation, and an empty state. Prices and
//! stock follow `PRODUCT_UPDATE`s live: a line re-prices itself, and a line holding more than is left is
//! flagged. Remove and Clear offer "Undo" for a few seconds instead of asking first.
//!
//! Every control is a real form (`POST /cart/…`): before the bundle hydrates, or without it, the browser posts
//! it and the server answers with the page again; once hydrated the bundle sends the changes itself. Rows are
//! keyed by product, so a row's pending taps and error stay with its line when others come and go; when a
//! row leaves with the keyboard's focus in it, focus moves to the next line (or the cart's heading).
//!
//! Built twice from this one crate: with `ssr` the server renders [`ShoppingCart`] into the page, with
//! `hydrate` this crate is its own WASM bundle that hydrates that markup and keeps its own WebSocket (reached
//! through its [`Link`]).

use cartwheel_core::page::{form, mount, PageState, ViewTimings};
use cartwheel_core::{Cart, CartLimits, CartLine, CartRequest, Cents, Handlers, LinkReport, Locale, Order};
use cartwheel_mfe::{Focus, Link};
use leptos::prelude::*;

/// This bundle's name in connection reports.
pub const MFE: &str = "shopping-cart";

/// What "Undo" would put back: each line's product and quantity, with words saying what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Undo {
    words: String,
    lines: Vec<(String, u32)>,
}

/// Everything a row and the cart's own controls share. `Copy`, so every closure captures it.
#[derive(Clone, Copy)]
struct CartCtx {
    link: Link,
    cart: RwSignal<Cart>,
    undo: RwSignal<Option<Undo>>,
    /// The cart's own error (clear, checkout, undo).
    error: RwSignal<Option<String>>,
    views: ViewTimings,
    locale: Locale,
}

impl CartCtx {
    /// Offer "Undo" for `offered` for [`ViewTimings::undo_ms`]; a newer offer replaces it.
    fn offer_undo(self, offered: Undo) {
        self.undo.set(Some(offered.clone()));
        let undo = self.undo;
        set_timeout(
            move || {
                undo.try_update(|u| {
                    if u.as_ref() == Some(&offered) {
                        *u = None;
                    }
                });
            },
            std::time::Duration::from_millis(self.views.undo_ms),
        );
    }

    /// Put the offered lines back, one change each (each a new version), in their order.
    fn undo_now(self) {
        let Some(Undo { lines, .. }) = self.undo.get_untracked() else { return };
        self.undo.set(None);
        let (link, error) = (self.link, self.error);
        leptos::task::spawn_local(async move {
            for (product_id, quantity) in lines {
                let request = CartRequest::Add { product_id, quantity: i64::from(quantity) };
                if let Err(e) = link.mutate(request, move |words| error.set(Some(words.to_owned()))).await {
                    error.try_set(Some(e.message));
                    return;
                }
            }
            error.try_set(None);
        });
    }

    fn money(self, cents: Cents) -> String {
        self.cart.with(|c| cents.format_in(&c.currency, self.locale))
    }
}

/// A row's changes: one in flight at a time, and what was asked meanwhile waits as one follow-up, so no tap is
/// lost and three taps on "+" during a slow answer become one `+1` and one `+2`.
#[derive(Clone, Copy)]
struct LineChanges {
    ctx: CartCtx,
    /// One signal for both numbers: each new signal type costs a bundle several KB of reactive code.
    intent: RwSignal<Intent>,
    error: RwSignal<Option<String>>,
}

#[derive(Clone, Copy, Default)]
struct Intent {
    /// The delta in flight (`0` for a removal) and the cart version it was sent from.
    sent: Option<(i64, u64)>,
    /// Taps since: their sum, or `None` once "Remove" was asked for.
    queued: Option<i64>,
}

impl LineChanges {
    fn new(ctx: CartCtx) -> Self {
        LineChanges { ctx, intent: RwSignal::new(Intent { sent: None, queued: Some(0) }), error: RwSignal::new(None) }
    }

    fn busy(&self) -> bool {
        self.intent.with(|i| i.sent.is_some())
    }

    /// What the shopper asked for and the shop has not answered yet, for the quantity shown. The delta in
    /// flight counts until a newer cart arrives (which holds it, or the answer comes right after).
    fn pending(&self) -> i64 {
        let Intent { sent, queued } = self.intent.get();
        let in_flight = match sent {
            Some((delta, version)) if self.ctx.cart.with(|c| c.version) == version => delta,
            _ => 0,
        };
        in_flight + queued.unwrap_or(0)
    }

    /// `Some(delta)`, or a removal (`None`): now, or after the change in flight.
    fn ask(self, product_id: String, change: Option<i64>) {
        let mut queued = false;
        self.intent.update(|i| {
            if i.sent.is_some() {
                i.queued = match (i.queued, change) {
                    (Some(q), Some(delta)) => Some(q + delta),
                    _ => None,
                };
                queued = true;
            }
        });
        if !queued {
            self.send(product_id, change);
        }
    }

    /// `change`; then whatever was queued meanwhile, as one change. A change that takes the line out of the
    /// cart (Remove, or "−" to zero) offers "Undo" and keeps the keyboard's focus in the cart.
    fn send(self, product_id: String, change: Option<i64>) {
        let request = match change {
            Some(0) => return,
            Some(delta) => CartRequest::Adjust { product_id: product_id.clone(), delta },
            None => CartRequest::Remove { product_id: product_id.clone() },
        };
        let cart = self.ctx.cart;
        let (version, before) = cart.with_untracked(|c| {
            let at = c.items.iter().position(|l| l.product_id.0 == product_id);
            (c.version, at.map(|i| (i, c.items[i].quantity, c.items[i].name.clone())))
        });
        self.intent.update(|i| i.sent = Some((change.unwrap_or(0), version)));
        self.error.set(None);
        let error = self.error;
        leptos::task::spawn_local(async move {
            let answer = self.ctx.link.mutate(request, move |words| error.set(Some(words.to_owned()))).await;
            let mut next = Some(0);
            self.intent.try_update(|i| {
                i.sent = None;
                next = std::mem::replace(&mut i.queued, Some(0));
            });
            match answer {
                // A refusal was decided on what is shown now; taps queued on the old numbers are dropped.
                Err(e) => {
                    error.try_set(Some(e.message));
                }
                Ok(now) => {
                    error.try_set(None);
                    let gone = !now.items.iter().any(|l| l.product_id.0 == product_id);
                    match (gone, before) {
                        (true, Some((index, quantity, name))) => {
                            self.ctx.offer_undo(Undo {
                                words: format!("Removed {name}."),
                                lines: vec![(product_id, quantity)],
                            });
                            // The next line's remove button (the one that moved up), the one before, or the heading.
                            let target =
                                now.items.get(index).or_else(|| index.checked_sub(1).and_then(|i| now.items.get(i)));
                            cartwheel_mfe::focus_later(
                                Focus::IfLost,
                                match target {
                                    Some(l) => format!(
                                        "#{} [data-product-id=\"{}\"] .remove",
                                        mount::SHOPPING_CART,
                                        l.product_id.0
                                    ),
                                    None => "#cart-title".to_owned(),
                                },
                            );
                        }
                        _ if change.is_some() => self.send(product_id, next),
                        _ => {}
                    }
                }
            }
        });
    }
}

/// What the cart starts with besides its lines.
#[derive(Debug, Clone, Default)]
pub struct CartStart {
    /// The refusal of one of the cart's form posts (without JavaScript), in words.
    pub error: Option<String>,
    /// The order a checkout form post just placed.
    pub order: Option<Order>,
    /// The rendering's form nonce (see [`form::key`]): empty in a bundle.
    pub nonce: String,
}

/// The hidden inputs every form of a row carries: the product and the form's key (`which` tells a row's two
/// forms of one action apart).
fn form_fields(nonce: &str, action: &'static str, product: &str, which: &str) -> impl IntoView {
    let key = form::key(nonce, action, &format!("{product}{which}"));
    view! {
        <input type="hidden" name=form::PRODUCT value=product.to_owned() />
        <input type="hidden" name=form::KEY value=key />
    }
}

/// The cart. `cart` is the session's cart as this bundle last saw it; `report` its connection's state, and
/// `link` the way to change the cart.
#[component]
pub fn ShoppingCart(
    cart: RwSignal<Cart>,
    report: RwSignal<LinkReport>,
    start: CartStart,
    locale: Locale,
    views: ViewTimings,
    link: Link,
) -> impl IntoView {
    let CartStart { error: posted_error, order: posted_order, nonce } = start;
    let ctx = CartCtx { link, cart, undo: RwSignal::new(None), error: RwSignal::new(posted_error), views, locale };
    let error = ctx.error;
    let clearing = RwSignal::new(false);
    let ordering = RwSignal::new(false);
    let order = RwSignal::new(posted_order);
    let short = move || cart.with(|c| c.items.iter().any(CartLine::exceeds_stock));
    let busy = move || ordering.get() || clearing.get();
    let check_out = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy() || short() {
            return;
        }
        ordering.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match link.checkout(move |words| error.set(Some(words.to_owned()))).await {
                Ok(receipt) => {
                    order.try_set(Some(receipt.order));
                    error.try_set(None);
                    cartwheel_mfe::focus_later(Focus::IfLost, "#order-title".to_owned());
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
            ordering.try_set(false);
        });
    };
    let clear = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy() {
            return;
        }
        let lines = cart.with_untracked(|c| c.items.iter().map(|l| (l.product_id.0.clone(), l.quantity)).collect());
        clearing.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match link.mutate(CartRequest::Clear, move |words| error.set(Some(words.to_owned()))).await {
                Ok(_) => {
                    error.try_set(None);
                    ctx.offer_undo(Undo { words: "Cart cleared.".to_owned(), lines });
                    cartwheel_mfe::focus_later(Focus::IfLost, "#cart-title".to_owned());
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
            clearing.try_set(false);
        });
    };
    let ordered = move |f: fn(&Order) -> String| move || order.with(|o| o.as_ref().map(f).unwrap_or_default());
    let empty = move || cart.with(|c| c.items.is_empty());
    let (checkout_key, clear_key) = (form::key(&nonce, form::CHECKOUT, ""), form::key(&nonce, form::CLEAR, ""));
    view! {
        <section class="shopping-cart" aria-labelledby="cart-title" data-link=move || report.with(|l| l.state.label())>
            <div class="section-head">
                <h2 id="cart-title" tabindex="-1">"Your cart"</h2>
                <span class="section-meta">
                    {move || match cart.with(|c| c.item_count) {
                        1 => "1 item".to_owned(),
                        n => format!("{n} items"),
                    }}
                </span>
                <cartwheel_mfe::LinkBadge report />
            </div>
            <div class="undo" hidden=move || ctx.undo.with(Option::is_none)>
                <span>{move || ctx.undo.with(|u| u.as_ref().map(|u| u.words.clone()).unwrap_or_default())}</span>
                <button type="button" class="button secondary undo-button" on:click=move |_| ctx.undo_now()>
                    "Undo"
                </button>
            </div>
            // Every state is always in the page and toggled with `hidden`: cheaper in the bundle than `<Show>`.
            // Not a live region: focus moves to its heading, which says it.
            <div class="order-confirmation" hidden=move || order.with(Option::is_none)>
                <h3 class="order-title" id="order-title" tabindex="-1">"Thank you! Your order is placed."</h3>
                <p class="order-lines">
                    {ordered(|o| {
                        o.lines.iter().map(|l| format!("{} × {}", l.quantity, l.name)).collect::<Vec<_>>().join(", ")
                    })}
                </p>
                <p class="order-total">
                    "Paid " <strong>{ordered(move |o| o.total_cents.format_in(&o.currency, Locale::En))}</strong>
                    " · order " <code class="order-id">{ordered(|o| o.id.clone())}</code>
                </p>
                <a
                    class="button secondary"
                    href="/"
                    on:click=move |ev| {
                        ev.prevent_default();
                        order.set(None);
                    }
                >
                    "Continue shopping"
                </a>
            </div>
            <p class="cart-empty" hidden=move || !empty() || order.with(Option::is_some)>
                "Your cart is empty. Add something from the products."
            </p>
            <div class="cart-body" hidden=empty>
                <ul class="cart-lines">
                    <For
                        each=move || cart.with(|c| c.items.iter().map(|l| l.product_id.0.clone()).collect::<Vec<_>>())
                        key=|id| id.clone()
                        children=move |id| view! { <CartLineRow id ctx nonce=nonce.clone() /> }
                    />
                </ul>
                <div class="cart-summary">
                    <span class="total-label">"Total"</span>
                    <span class="total" data-total-cents=move || cart.with(|c| c.total_cents.0.to_string())>
                        {move || ctx.money(cart.with(|c| c.total_cents))}
                    </span>
                </div>
                <p class="checkout-blocked" hidden=move || !short()>
                    "Some lines hold more than is left. Lower them to check out."
                </p>
                <div class="cart-actions">
                    <form method="post" action=form::CHECKOUT on:submit=check_out>
                        <input type="hidden" name=form::KEY value=checkout_key />
                        <input
                            type="hidden"
                            name=form::EXPECTED_TOTAL
                            value=move || cart.with(|c| c.total_cents.0.to_string())
                        />
                        // Busy: `aria-disabled`, so the keyboard's focus stays; short of stock: disabled.
                        <button
                            type="submit"
                            class="button primary checkout"
                            disabled=short
                            aria-disabled=move || ordering.get().to_string()
                        >
                            {move || if ordering.get() { "Placing your order…" } else { "Checkout" }}
                        </button>
                    </form>
                    <form method="post" action=form::CLEAR on:submit=clear>
                        <input type="hidden" name=form::KEY value=clear_key />
                        <button
                            type="submit"
                            class="button secondary clear"
                            aria-disabled=move || clearing.get().to_string()
                        >
                            {move || if clearing.get() { "Clearing…" } else { "Clear cart" }}
                        </button>
                    </form>
                </div>
            </div>
            <p class="error" role="alert">{move || error.get()}</p>
        </section>
    }
}

/// The line of product `id`, for as long as the cart holds it; it reads its numbers from the cart, so a new
/// quantity updates the row in place (focus stays).
#[component]
fn CartLineRow(id: String, ctx: CartCtx, nonce: String) -> impl IntoView {
    let cart = ctx.cart;
    let line = {
        let id = id.clone();
        Memo::new(move |_| cart.with(|c| c.items.iter().find(|l| l.product_id.0 == id).cloned()))
    };
    let changes = LineChanges::new(ctx);
    let error = changes.error;
    // A row is one product for its whole life: its name and picture never change.
    let (name, image) =
        line.with_untracked(|l| l.as_ref().map(|l| (l.name.clone(), l.image.clone())).unwrap_or_default());
    let stock = move || line.with(|l| l.as_ref().map_or(0, |l| l.stock));
    let over = move || line.with(|l| l.as_ref().is_some_and(CartLine::exceeds_stock));
    let cap = move || line.with(|l| l.as_ref().map_or(0, |l| l.stock.min(CartLimits::DEFAULT_MAX_QUANTITY_PER_LINE)));
    // The quantity with the taps not answered yet: what the shopper asked for, not what was last confirmed.
    let quantity =
        move || (line.with(|l| l.as_ref().map_or(0, |l| i64::from(l.quantity))) + changes.pending()).max(0) as u32;
    let price = move |cents: fn(&CartLine) -> Cents| {
        move || line.with(|l| l.as_ref().map(|l| ctx.money(cents(l))).unwrap_or_default())
    };
    // "−" and "+" are relative: pressed in two tabs at once, both count (an absolute "shown + 1" would not).
    // They stay enabled while a change is in flight (taps queue; `aria-busy` says it is under way).
    let step = {
        let id = id.clone();
        move |delta: i64| changes.ask(id.clone(), Some(delta))
    };
    let remove = {
        let id = id.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            changes.ask(id.clone(), None);
        }
    };
    // The quantity field commits on change and Enter, as the difference from what it showed: relative like
    // the steppers, so a change made meanwhile in another tab is kept.
    let commit = {
        let id = id.clone();
        move |text: String| match text.trim().parse::<i64>() {
            Ok(0) => changes.ask(id.clone(), None),
            Ok(wanted) if (1..=i64::from(CartLimits::DEFAULT_MAX_QUANTITY_PER_LINE)).contains(&wanted) => {
                changes.ask(id.clone(), Some(wanted - i64::from(quantity())))
            }
            _ => error.set(Some("Enter a whole number of items, from 0 to 99.".to_owned())),
        }
    };
    let quantity_id = format!("qty-line-{id}");
    let name_id = format!("line-name-{id}");
    view! {
        <li class="cart-line" data-product-id=id.clone() class:over-stock=over>
            <img class="line-image" src=image alt="" width="64" height="48" />
            <div class="line-info">
                <span class="line-name" id=name_id.clone()>{name.clone()}</span>
                <span class="line-unit">{price(|l| l.unit_price_cents)} " each"</span>
            </div>
            <div class="stepper" role="group" aria-labelledby=name_id aria-busy=move || changes.busy().to_string()>
                <form
                    method="post"
                    action=form::ADJUST
                    on:submit={
                        let step = step.clone();
                        move |ev: leptos::ev::SubmitEvent| {
                            ev.prevent_default();
                            step(-1);
                        }
                    }
                >
                    {form_fields(&nonce, form::ADJUST, &id, "-down")}
                    <input type="hidden" name=form::DELTA value="-1" />
                    <button type="submit" class="step">
                        <span aria-hidden="true">"−"</span>
                        <span class="visually-hidden">{format!("One fewer {name}")}</span>
                    </button>
                </form>
                // Enter commits through `change` (which the browser fires first); the submit only stays here.
                <form method="post" action=form::SET on:submit=|ev: leptos::ev::SubmitEvent| ev.prevent_default()>
                    {form_fields(&nonce, form::SET, &id, "")}
                    <label class="visually-hidden" for=quantity_id.clone()>{format!("Quantity of {name}")}</label>
                    <input
                        id=quantity_id
                        class="line-quantity"
                        name=form::QUANTITY
                        type="number"
                        inputmode="numeric"
                        min="0"
                        max=move || cap().to_string()
                        value=quantity
                        prop:value=move || quantity().to_string()
                        on:change=move |ev| commit(event_target_value(&ev))
                    />
                </form>
                <form
                    method="post"
                    action=form::ADJUST
                    on:submit=move |ev: leptos::ev::SubmitEvent| {
                        ev.prevent_default();
                        step(1);
                    }
                >
                    {form_fields(&nonce, form::ADJUST, &id, "-up")}
                    <input type="hidden" name=form::DELTA value="1" />
                    <button type="submit" class="step" disabled=move || { quantity() >= cap() }>
                        <span aria-hidden="true">"+"</span>
                        <span class="visually-hidden">{format!("One more {name}")}</span>
                    </button>
                </form>
            </div>
            <span class="line-total">{price(|l| l.line_total_cents)}</span>
            <form method="post" action=form::REMOVE class="remove-form" on:submit=remove>
                {form_fields(&nonce, form::REMOVE, &id, "")}
                <button type="submit" class="remove" aria-busy=move || changes.busy().to_string()>
                    "Remove" <span class="visually-hidden">{format!(" {name}")}</span>
                </button>
            </form>
            <p class="line-warning" role="alert" hidden=move || !over()>
                {move || match stock() {
                    0 => "Sold out since you added it: remove it to check out.".to_owned(),
                    n => format!("Only {n} left: lower the quantity to check out."),
                }}
            </p>
            <p class="error line-error" role="alert">{move || error.get()}</p>
        </li>
    }
}

/// The bundle's whole view, from the state the page was rendered from. In the browser its link (started once
/// hydration is over) feeds the same signals; on the server `link` follows nothing.
fn root(state: PageState, link: Link) -> impl IntoView {
    let start = CartStart {
        error: state.outcome.error_for(None),
        order: state.outcome.order.clone(),
        nonce: state.form_nonce.clone(),
    };
    let (locale, views) = (state.locale, state.views);
    let cart = RwSignal::new(state.cart);
    let report = RwSignal::new(LinkReport::connecting(MFE));
    link.follow(Handlers {
        on_cart: Box::new(move |c| {
            cart.try_set(c);
        }),
        on_report: Box::new(move |r| {
            report.try_set(r);
        }),
        // The link re-prices the cart with each newer product state and hands over the result as a cart.
        on_product: Some(Box::new(|_| {})),
    });
    view! { <ShoppingCart cart report start locale views link /> }
}

cartwheel_mfe::bundle!(MFE, mount::SHOPPING_CART, root);
