//! The shopping cart micro-frontend: the session's lines with − / + and remove, line totals, the cart total,
//! "Clear cart", and an empty state.
//!
//! Built twice from this one crate: with `ssr` the server renders [`ShoppingCart`] into the page, with
//! `hydrate` this crate is its own WASM bundle that hydrates that markup and keeps its own WebSocket
//! ([`shared::browser::CartLink`]).

use leptos::prelude::*;
use shared::browser::{mutate, CartRequest};
use shared::{Cart, CartLine, Cents, LinkReport};

/// This bundle's name in connection reports.
pub const MFE: &str = "shopping-cart";

/// Run one cart change: `busy` while it is in flight, its failure in words in `error`.
fn run(request: CartRequest, busy: RwSignal<bool>, error: RwSignal<Option<String>>) {
    if busy.get_untracked() {
        return;
    }
    busy.set(true);
    error.set(None);
    leptos::task::spawn_local(async move {
        if let Err(e) = mutate(request).await {
            error.try_set(Some(e.message));
        }
        busy.try_set(false);
    });
}

/// The cart. `cart` is the session's cart as this bundle last saw it; `link` its connection's state.
#[component]
pub fn ShoppingCart(cart: RwSignal<Cart>, link: RwSignal<LinkReport>) -> impl IntoView {
    let clearing = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let empty = move || cart.with(|c| c.items.is_empty());
    view! {
        <section class="shopping-cart" aria-labelledby="cart-title" data-link=move || link.with(|l| l.state.label())>
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
                    aria-label=move || format!("Shopping cart: {}", link.with(|l| l.state.label()))
                    title=move || format!("Shopping cart: {}", link.with(|l| l.state.label()))
                ></span>
            </div>
            <Show
                when=move || !empty()
                fallback=|| {
                    view! {
                        <p class="cart-empty">"Your cart is empty. Add something from the products."</p>
                    }
                }
            >
                <ul class="cart-lines">
                    <For
                        each=move || cart.with(|c| c.items.iter().map(|l| l.product_id.0.clone()).collect::<Vec<_>>())
                        key=|id| id.clone()
                        let(id)
                    >
                        <CartLineRow id cart />
                    </For>
                </ul>
                <div class="cart-summary">
                    <span class="total-label">"Total"</span>
                    <span class="total" data-total-cents=move || cart.with(|c| c.total_cents.0.to_string())>
                        {move || cart.with(|c| c.total_cents.format(&c.currency))}
                    </span>
                </div>
                <button
                    type="button"
                    class="button secondary clear"
                    disabled=move || clearing.get()
                    aria-busy=move || clearing.get().to_string()
                    on:click=move |_| run(CartRequest::Clear, clearing, error)
                >
                    {move || if clearing.get() { "Clearing…" } else { "Clear cart" }}
                </button>
            </Show>
            <p class="error" role="alert">{move || error.get()}</p>
        </section>
    }
}

/// One line; it reads its numbers from the cart, so a new quantity updates the row in place (focus stays).
#[component]
fn CartLineRow(id: String, cart: RwSignal<Cart>) -> impl IntoView {
    let line = {
        let id = id.clone();
        Memo::new(move |_| cart.with(|c| c.items.iter().find(|l| l.product_id.0 == id).cloned()))
    };
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let get = move |f: fn(&CartLine) -> String| move || line.with(|l| l.as_ref().map(f).unwrap_or_default());
    let currency = move || cart.with(|c| c.currency.clone());
    let name = move || line.with(|l| l.as_ref().map(|l| l.name.clone()).unwrap_or_default());
    let quantity = move || line.with(|l| l.as_ref().map_or(0, |l| l.quantity));
    let cap =
        move || line.with(|l| l.as_ref().map_or(0, |l| l.stock.min(shared::CartLimits::DEFAULT_MAX_QUANTITY_PER_LINE)));
    let price = move |cents: fn(&CartLine) -> Cents| {
        move || line.with(|l| l.as_ref().map(|l| cents(l).format(&currency())).unwrap_or_default())
    };
    let set = {
        let id = id.clone();
        move |q: u32| run(CartRequest::Set { product_id: id.clone(), quantity: i64::from(q) }, busy, error)
    };
    let set_minus = set.clone();
    let remove = {
        let id = id.clone();
        move |_| run(CartRequest::Remove { product_id: id.clone() }, busy, error)
    };
    view! {
        <li class="cart-line" data-product-id=id>
            <img class="line-image" src=get(|l| l.image.clone()) alt="" width="64" height="48" />
            <div class="line-info">
                <span class="line-name">{name}</span>
                <span class="line-unit">{price(|l| l.unit_price_cents)} " each"</span>
            </div>
            <div class="stepper" role="group" aria-label=move || format!("Quantity of {}", name())>
                <button
                    type="button"
                    class="step"
                    aria-label=move || format!("One fewer {}", name())
                    disabled=move || busy.get()
                    on:click=move |_| set_minus(quantity().saturating_sub(1))
                >
                    "−"
                </button>
                <output class="line-quantity" aria-live="polite">{quantity}</output>
                <button
                    type="button"
                    class="step"
                    aria-label=move || format!("One more {}", name())
                    disabled=move || { busy.get() || quantity() >= cap() }
                    on:click=move |_| set(quantity() + 1)
                >
                    "+"
                </button>
            </div>
            <span class="line-total">{price(|l| l.line_total_cents)}</span>
            <button
                type="button"
                class="remove"
                aria-label=move || format!("Remove {} from the cart", name())
                disabled=move || busy.get()
                on:click=remove
            >
                "Remove"
            </button>
            <p class="error line-error" role="alert">{move || error.get()}</p>
        </li>
    }
}

/// The bundle's whole view, from the state the page was rendered from. In the browser (`connect`) it also opens
/// this bundle's link, which feeds the same signals; the server renders it without one.
fn root(state: shared::page::PageState, connect: bool) -> impl IntoView {
    let cart = RwSignal::new(state.cart.clone());
    let link = RwSignal::new(LinkReport::connecting(MFE));
    if connect {
        let on_cart = move |c| {
            cart.try_set(c);
        };
        let on_report = move |r| {
            link.try_set(r);
        };
        shared::browser::CartLink::install(MFE, state.reconnect.policy(), Some(state.cart.clone()), on_cart, on_report);
    }
    view! { <ShoppingCart cart link /> }
}

/// Server side: the cart as HTML, rendered from the same view the bundle hydrates.
#[cfg(feature = "ssr")]
pub fn render_to_html(state: &shared::page::PageState) -> String {
    use leptos::tachys::view::RenderHtml;
    Owner::new().with(|| root(state.clone(), false).to_html())
}

#[cfg(feature = "hydrate")]
mod bundle {
    use shared::browser::boot;
    use shared::page::mount;
    use wasm_bindgen::prelude::wasm_bindgen;

    use super::{root, MFE};

    /// Hydrate the server-rendered markup and open this bundle's link.
    #[wasm_bindgen]
    pub fn hydrate() {
        console_error_panic_hook::set_once();
        let Some((state, element)) = boot::prepare(MFE, mount::SHOPPING_CART) else { return };
        boot::keep_mounted(Box::new(leptos::mount::hydrate_from(element, move || root(state, true))));
    }

    /// Close this bundle's socket and timers and remove its view.
    #[wasm_bindgen]
    pub fn unmount() {
        boot::unmount();
    }
}
