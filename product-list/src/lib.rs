//! The product list micro-frontend: a card per product with its picture, description, price, stock and an
//! "Add to cart" form. Adding more than the stock shows the server's answer next to the product.
//!
//! Built twice from this one crate: with `ssr` the server renders [`ProductList`] into the page, with
//! `hydrate` this crate is its own WASM bundle that hydrates that markup and keeps its own WebSocket (reached
//! through its [`Link`]).

use cartwheel_core::page::{mount, PageState};
use cartwheel_core::presence::Presence;
use cartwheel_core::{Cart, CartRequest, Cents, Handlers, LinkReport, Product};
use cartwheel_mfe::Link;
use leptos::prelude::*;

/// This bundle's name in connection reports.
pub const MFE: &str = "product-list";

/// The list. `products` and `cart` are as this bundle last saw them; `report` is its connection's state, and
/// `link` the way to change the cart.
#[component]
pub fn ProductList(
    products: RwSignal<Vec<Product>>,
    cart: RwSignal<Cart>,
    report: RwSignal<LinkReport>,
    presence: Presence,
    link: Link,
) -> impl IntoView {
    // The catalog's products are fixed at start-up; only their stock and price change, so the cards are made
    // once and each follows its own product.
    let initial = products.get_untracked();
    let count = initial.len();
    view! {
        <section class="product-list" aria-labelledby="products-title" data-link=move || report.with(|l| l.state.label())>
            <div class="section-head">
                <h2 id="products-title">"Products"</h2>
                <span class="section-meta">{format!("{count} items")}</span>
                <span
                    class="link-dot"
                    role="img"
                    aria-label=move || format!("Product list: {}", report.with(|l| l.state.label()))
                    title=move || format!("Product list: {}", report.with(|l| l.state.label()))
                ></span>
            </div>
            <ul class="product-grid">
                {initial
                    .into_iter()
                    .enumerate()
                    .map(|(index, product)| {
                        let in_carts = presence.in_carts_label(&product.id).unwrap_or_default();
                        view! { <ProductCard product index products cart in_carts link /> }
                    })
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
    /// "in N carts" as the server counted it; the link keeps it current (`Link::show_presence`).
    in_carts: String,
    link: Link,
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
                match link.mutate(request, move |words| error.set(Some(words.to_owned()))).await {
                    Ok(_) => {
                        quantity.try_set("1".to_owned());
                        error.try_set(None);
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
                // The count as text only in the server's rendering: hydration leaves that text alone, and the
                // link keeps it current (an empty label rendered on both sides would not hydrate).
                <p class="in-carts" data-in-carts-of=id.clone()>{cartwheel_mfe::server_only(in_carts)}</p>
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

/// The bundle's whole view, from the state the page was rendered from. In the browser its link (started once
/// hydration is over) feeds the same signals; on the server `link` follows nothing.
fn root(state: PageState, link: Link) -> impl IntoView {
    let cart = RwSignal::new(state.cart);
    let products = RwSignal::new(state.products);
    let report = RwSignal::new(LinkReport::connecting(MFE));
    link.follow(Handlers {
        on_cart: Box::new(move |c| {
            cart.try_set(c);
        }),
        on_report: Box::new(move |r| {
            report.try_set(r);
        }),
        // Only states newer than the one held arrive here (the revision rule).
        on_product: Some(Box::new(move |p: Product| {
            products.try_update(|ps| {
                if let Some(held) = ps.iter_mut().find(|held| held.id == p.id) {
                    *held = p;
                }
            });
        })),
    });
    link.show_presence();
    let presence = state.presence;
    view! { <ProductList products cart report presence link /> }
}

cartwheel_mfe::bundle!(MFE, mount::PRODUCT_LIST, root);
