//! The product list micro-frontend: a card per product with its picture, description, price, stock and an
//! "Add to cart" form. Adding more than the stock shows the server's answer next to the product.
//!
//! Built twice from this one crate: with `ssr` the server renders [`ProductList`] into the page, with
//! `hydrate` this crate is its own WASM bundle that hydrates that markup and keeps its own WebSocket
//! ([`shared::browser::CartLink`]).

use leptos::prelude::*;
use shared::browser::{mutate, CartRequest};
use shared::{Cart, Cents, LinkReport, Product};

/// This bundle's name in connection reports.
pub const MFE: &str = "product-list";

/// The list. `products` and `cart` are as this bundle last saw them; `link` is its connection's state.
#[component]
pub fn ProductList(
    products: RwSignal<Vec<Product>>,
    cart: RwSignal<Cart>,
    link: RwSignal<LinkReport>,
) -> impl IntoView {
    // The catalog's products are fixed at start-up; only their stock and price change, so the cards are made
    // once and each follows its own product.
    let initial = products.get_untracked();
    let count = initial.len();
    view! {
        <section class="product-list" aria-labelledby="products-title" data-link=move || link.with(|l| l.state.label())>
            <div class="section-head">
                <h2 id="products-title">"Products"</h2>
                <span class="section-meta">{format!("{count} items")}</span>
                <span
                    class="link-dot"
                    role="img"
                    aria-label=move || format!("Product list: {}", link.with(|l| l.state.label()))
                    title=move || format!("Product list: {}", link.with(|l| l.state.label()))
                ></span>
            </div>
            <ul class="product-grid">
                {initial
                    .into_iter()
                    .enumerate()
                    .map(|(index, product)| view! { <ProductCard product index products cart /> })
                    .collect_view()}
            </ul>
        </section>
    }
}

/// The product at `index`: name, picture and description as rendered, stock and price live.
#[component]
fn ProductCard(
    product: Product,
    index: usize,
    products: RwSignal<Vec<Product>>,
    cart: RwSignal<Cart>,
) -> impl IntoView {
    let Product { id, name, description, currency, image, .. } = product;
    let live =
        Memo::new(move |_| products.with(|ps| ps.get(index).map_or((Cents::ZERO, 0), |p| (p.price_cents, p.stock))));
    let stock = move || live.get().1;
    let sold_out = move || stock() == 0;
    let id = id.0;
    let quantity = RwSignal::new("1".to_owned());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let in_cart = {
        let id = id.clone();
        move || cart.with(|c| c.items.iter().find(|l| l.product_id.0 == id).map_or(0, |l| l.quantity))
    };
    let submit = {
        let id = id.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            if busy.get_untracked() {
                return;
            }
            let wanted = quantity.with_untracked(|q| q.trim().parse::<i64>());
            let Ok(wanted) = wanted else {
                error.set(Some("Enter a whole number of items, from 1 to 99.".to_owned()));
                return;
            };
            busy.set(true);
            error.set(None);
            let request = CartRequest::Add { product_id: id.clone(), quantity: wanted };
            leptos::task::spawn_local(async move {
                match mutate(request).await {
                    Ok(_) => {
                        quantity.try_set("1".to_owned());
                    }
                    Err(e) => {
                        error.try_set(Some(e.message));
                    }
                }
                busy.try_set(false);
            });
        }
    };
    let input_id = format!("qty-{id}");
    let error_id = format!("error-{id}");
    let add_label = format!("Add {name} to cart");
    view! {
        <li class="product-card" data-product-id=id.clone()>
            <img class="product-image" src=image alt="" width="240" height="180" />
            <div class="product-body">
                <h3 class="product-name">{name.clone()}</h3>
                <p class="product-description">{description}</p>
                <div class="product-facts">
                    <span class="price">{move || live.get().0.format(&currency)}</span>
                    <span class="stock" class:low=move || stock() <= 3 class:out=sold_out>
                        {move || Product::stock_label_of(stock())}
                    </span>
                </div>
                <form class="add-form" on:submit=submit novalidate>
                    <label class="quantity-label" for=input_id.clone()>{format!("Quantity of {name}")}</label>
                    <input
                        id=input_id
                        class="quantity"
                        type="number"
                        inputmode="numeric"
                        min="1"
                        max="99"
                        value="1"
                        aria-describedby=error_id.clone()
                        prop:value=move || quantity.get()
                        on:input=move |ev| quantity.set(event_target_value(&ev))
                        disabled=sold_out
                    />
                    <button
                        type="submit"
                        class="button primary"
                        aria-label=add_label
                        disabled=move || sold_out() || busy.get()
                        aria-busy=move || busy.get().to_string()
                    >
                        {move || if busy.get() { "Adding…" } else if sold_out() { "Sold out" } else { "Add to cart" }}
                    </button>
                </form>
                <p class="in-cart" aria-live="polite">
                    {move || match in_cart() {
                        0 => String::new(),
                        n => format!("{n} in your cart"),
                    }}
                </p>
                <p class="error" id=error_id role="alert">{move || error.get()}</p>
            </div>
        </li>
    }
}

/// The bundle's whole view, from the state the page was rendered from. In the browser (`connect`) it also opens
/// this bundle's link, which feeds the same signals; the server renders it without one.
fn root(state: shared::page::PageState, connect: bool) -> impl IntoView {
    let cart = RwSignal::new(state.cart.clone());
    let products = RwSignal::new(state.products.clone());
    let link = RwSignal::new(LinkReport::connecting(MFE));
    if connect {
        let handlers = shared::browser::Handlers {
            on_cart: Box::new(move |c| {
                cart.try_set(c);
            }),
            on_report: Box::new(move |r| {
                link.try_set(r);
            }),
            // Only states newer than the one held arrive here (the revision rule).
            on_product: Some(Box::new(move |p: Product| {
                products.try_update(|ps| {
                    if let Some(held) = ps.iter_mut().find(|held| held.id == p.id) {
                        *held = p;
                    }
                });
            })),
            on_notice: None,
        };
        shared::browser::CartLink::install(MFE, state.reconnect.policy(), Some(state.cart), state.products, handlers);
    }
    view! { <ProductList products cart link /> }
}

/// Server side: the list as HTML, rendered from the same view the bundle hydrates.
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
        let Some((state, element)) = boot::prepare(MFE, mount::PRODUCT_LIST) else { return };
        boot::keep_mounted(Box::new(leptos::mount::hydrate_from(element, move || root(state, true))));
    }

    /// Close this bundle's socket and timers and remove its view.
    #[wasm_bindgen]
    pub fn unmount() {
        boot::unmount();
    }
}
