//! The shopping cart micro-frontend: the session's lines with − / + and remove, line totals, the cart total,
//! "Clear cart", "Checkout" with its order confirmation, and an empty state. Prices and stock follow
//! `PRODUCT_UPDATE`s live: a line re-prices itself, and a line holding more than is left is flagged.
//!
//! Built twice from this one crate: with `ssr` the server renders [`ShoppingCart`] into the page, with
//! `hydrate` this crate is its own WASM bundle that hydrates that markup and keeps its own WebSocket (reached
//! through its [`Link`]).

use cartwheel_core::page::{mount, PageState};
use cartwheel_core::{Cart, CartLimits, CartLine, CartRequest, Cents, Handlers, LinkReport, Order};
use cartwheel_mfe::Link;
use leptos::prelude::*;

/// This bundle's name in connection reports.
pub const MFE: &str = "shopping-cart";

/// Run one cart change through `link`: `busy` while it is in flight, its failure in words in `error`.
fn run(link: Link, request: CartRequest, busy: RwSignal<bool>, error: RwSignal<Option<String>>) {
    if busy.get_untracked() {
        return;
    }
    busy.set(true);
    error.set(None);
    leptos::task::spawn_local(async move {
        let answer = link.mutate(request, move |words| error.set(Some(words.to_owned()))).await;
        error.try_set(answer.err().map(|e| e.message));
        busy.try_set(false);
    });
}

/// A row's changes: one in flight at a time, and what was asked meanwhile waits as one follow-up, so no tap is
/// lost and three taps on "+" during a slow answer become one `+1` and one `+2`.
#[derive(Clone, Copy)]
struct LineChanges {
    link: Link,
    cart: RwSignal<Cart>,
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
    fn new(link: Link, cart: RwSignal<Cart>) -> Self {
        LineChanges {
            link,
            cart,
            intent: RwSignal::new(Intent { sent: None, queued: Some(0) }),
            error: RwSignal::new(None),
        }
    }

    fn busy(&self) -> bool {
        self.intent.with(|i| i.sent.is_some())
    }

    /// What the shopper asked for and the shop has not answered yet, for the quantity shown. The delta in
    /// flight counts until a newer cart arrives (which holds it, or the answer comes right after).
    fn pending(&self) -> i64 {
        let Intent { sent, queued } = self.intent.get();
        let in_flight = match sent {
            Some((delta, version)) if self.cart.with(|c| c.version) == version => delta,
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

    /// `change`; then whatever was queued meanwhile, as one change.
    fn send(self, product_id: String, change: Option<i64>) {
        let request = match change {
            Some(0) => return,
            Some(delta) => CartRequest::Adjust { product_id: product_id.clone(), delta },
            None => CartRequest::Remove { product_id: product_id.clone() },
        };
        let version = self.cart.with_untracked(|c| c.version);
        self.intent.update(|i| i.sent = Some((change.unwrap_or(0), version)));
        self.error.set(None);
        let error = self.error;
        leptos::task::spawn_local(async move {
            let answer = self.link.mutate(request, move |words| error.set(Some(words.to_owned()))).await;
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
                Ok(_) => {
                    error.try_set(None);
                    if change.is_some() {
                        self.send(product_id, next);
                    }
                }
            }
        });
    }
}

/// The cart. `cart` is the session's cart as this bundle last saw it; `report` its connection's state, and
/// `link` the way to change the cart.
#[component]
pub fn ShoppingCart(cart: RwSignal<Cart>, report: RwSignal<LinkReport>, link: Link) -> impl IntoView {
    let clearing = RwSignal::new(false);
    let ordering = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let order = RwSignal::new(None::<Order>);
    let short = move || cart.with(|c| c.items.iter().any(CartLine::exceeds_stock));
    let check_out = move |_| {
        if ordering.get_untracked() {
            return;
        }
        ordering.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match link.checkout(move |words| error.set(Some(words.to_owned()))).await {
                Ok(receipt) => {
                    order.try_set(Some(receipt.order));
                    error.try_set(None);
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
            ordering.try_set(false);
        });
    };
    let ordered = move |f: fn(&Order) -> String| move || order.with(|o| o.as_ref().map(f).unwrap_or_default());
    let lines = Memo::new(move |_| cart.with(|c| c.items.len()));
    let empty = move || lines.get() == 0;
    view! {
        <section class="shopping-cart" aria-labelledby="cart-title" data-link=move || report.with(|l| l.state.label())>
            <div class="section-head">
                <h2 id="cart-title">"Your cart"</h2>
                <span class="section-meta">
                    {move || match cart.with(|c| c.item_count) {
                        1 => "1 item".to_owned(),
                        n => format!("{n} items"),
                    }}
                </span>
                <span
                    class="link-dot"
                    role="img"
                    aria-label=move || format!("Shopping cart: {}", report.with(|l| l.state.label()))
                    title=move || format!("Shopping cart: {}", report.with(|l| l.state.label()))
                ></span>
            </div>
            // Every state is always in the page and toggled with `hidden`: cheaper in the bundle than `<Show>`.
            <div class="order-confirmation" role="status" hidden=move || order.with(Option::is_none)>
                <p class="order-title">"Thank you! Your order is placed."</p>
                <p class="order-lines">
                    {ordered(|o| {
                        o.lines.iter().map(|l| format!("{} × {}", l.quantity, l.name)).collect::<Vec<_>>().join(", ")
                    })}
                </p>
                <p class="order-total">
                    "Paid " <strong>{ordered(|o| o.total_cents.format(&o.currency))}</strong> " · order "
                    <code class="order-id">{ordered(|o| o.id.clone())}</code>
                </p>
                <button type="button" class="button secondary" on:click=move |_| order.set(None)>
                    "Continue shopping"
                </button>
            </div>
            <p class="cart-empty" hidden=move || !empty() || order.with(Option::is_some)>
                "Your cart is empty. Add something from the products."
            </p>
            <div class="cart-body" hidden=empty>
                <ul class="cart-lines">
                    // Rows by position, re-listed only when the number of lines changes; each reads its line
                    // from the cart, so a new quantity updates the row in place (focus stays). An unkeyed list
                    // costs the bundle far less than `<For>` and is exact for at most 50 lines.
                    {move || (0..lines.get()).map(|index| view! { <CartLineRow index cart link /> }).collect_view()}
                </ul>
                <div class="cart-summary">
                    <span class="total-label">"Total"</span>
                    <span class="total" data-total-cents=move || cart.with(|c| c.total_cents.0.to_string())>
                        {move || cart.with(|c| c.total_cents.format(&c.currency))}
                    </span>
                </div>
                <p class="checkout-blocked" hidden=move || !short()>
                    "Some lines hold more than is left. Lower them to check out."
                </p>
                <button
                    type="button"
                    class="button primary checkout"
                    disabled=move || ordering.get() || clearing.get() || short()
                    aria-busy=move || ordering.get().to_string()
                    on:click=check_out
                >
                    {move || if ordering.get() { "Placing your order…" } else { "Checkout" }}
                </button>
                <button
                    type="button"
                    class="button secondary clear"
                    disabled=move || clearing.get() || ordering.get()
                    aria-busy=move || clearing.get().to_string()
                    on:click=move |_| run(link, CartRequest::Clear, clearing, error)
                >
                    {move || if clearing.get() { "Clearing…" } else { "Clear cart" }}
                </button>
            </div>
            <p class="error" role="alert">{move || error.get()}</p>
        </section>
    }
}

/// The line at `index`; it reads its numbers from the cart, so a new quantity updates the row in place.
#[component]
fn CartLineRow(index: usize, cart: RwSignal<Cart>, link: Link) -> impl IntoView {
    let line = Memo::new(move |_| cart.with(|c| c.items.get(index).cloned()));
    let changes = LineChanges::new(link, cart);
    let error = changes.error;
    let get = move |f: fn(&CartLine) -> String| move || line.with(|l| l.as_ref().map(f).unwrap_or_default());
    let currency = move || cart.with(|c| c.currency.clone());
    let name = get(|l| l.name.clone());
    let id = get(|l| l.product_id.0.clone());
    let stock = move || line.with(|l| l.as_ref().map_or(0, |l| l.stock));
    let over = move || line.with(|l| l.as_ref().is_some_and(CartLine::exceeds_stock));
    let cap = move || line.with(|l| l.as_ref().map_or(0, |l| l.stock.min(CartLimits::DEFAULT_MAX_QUANTITY_PER_LINE)));
    // The quantity with the taps not answered yet: what the shopper asked for, not what was last confirmed.
    let quantity =
        move || (line.with(|l| l.as_ref().map_or(0, |l| i64::from(l.quantity))) + changes.pending()).max(0) as u32;
    let price = move |cents: fn(&CartLine) -> Cents| {
        move || line.with(|l| l.as_ref().map(|l| cents(l).format(&currency())).unwrap_or_default())
    };
    // The product is read when clicked, so a row that now shows another line acts on that line.
    // "−" and "+" are relative: pressed in two tabs at once, both count (an absolute "shown + 1" would not).
    // They stay enabled while a change is in flight (taps queue; `aria-busy` says it is under way).
    let step = move |delta: i64| changes.ask(id(), Some(delta));
    let remove = move |_| changes.ask(id(), None);
    view! {
        <li class="cart-line" data-product-id=id class:over-stock=over>
            <img class="line-image" src=get(|l| l.image.clone()) alt="" width="64" height="48" />
            <div class="line-info">
                <span class="line-name">{name}</span>
                <span class="line-unit">{price(|l| l.unit_price_cents)} " each"</span>
            </div>
            <div
                class="stepper"
                role="group"
                aria-label=move || format!("Quantity of {}", name())
                aria-busy=move || changes.busy().to_string()
            >
                <button
                    type="button"
                    class="step"
                    aria-label=move || format!("One fewer {}", name())
                    disabled=move || quantity() == 0
                    on:click=move |_| step(-1)
                >
                    "−"
                </button>
                <output class="line-quantity" aria-live="polite">{quantity}</output>
                <button
                    type="button"
                    class="step"
                    aria-label=move || format!("One more {}", name())
                    disabled=move || { quantity() >= cap() }
                    on:click=move |_| step(1)
                >
                    "+"
                </button>
            </div>
            <span class="line-total">{price(|l| l.line_total_cents)}</span>
            <button
                type="button"
                class="remove"
                aria-label=move || format!("Remove {} from the cart", name())
                aria-busy=move || changes.busy().to_string()
                on:click=remove
            >
                "Remove"
            </button>
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
    view! { <ShoppingCart cart report link /> }
}

cartwheel_mfe::bundle!(MFE, mount::SHOPPING_CART, root);
