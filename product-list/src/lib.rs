//! The product list micro-frontend: a card per product with its picture, description, price, stock and an
//! "Add to cart" form. Adding more than the stock shows the server's answer next to the product.
//!
//! Built twice from this one crate: with `ssr` the server renders [`ProductList`] into the page, with
//! `hydrate` this crate is its own WASM bundle that hydrates that markup and keeps its own WebSocket (reached
//! through its [`Link`]).

use cartwheel_core::page::{form, mount, PageState};
use cartwheel_core::{Cart, CartRequest, Cents, Handlers, LinkReport, Locale, Product};
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
    /// Per product (by position): what its card starts with — see [`CardStart`].
    starts: Vec<CardStart>,
    locale: Locale,
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
                <cartwheel_mfe::LinkBadge report />
            </div>
            <ul class="product-grid">
                {initial
                    .into_iter()
                    .zip(starts)
                    .enumerate()
                    .map(|(index, (product, start))| {
                        view! { <ProductCard product index products cart start locale link /> }
                    })
                    .collect_view()}
            </ul>
        </section>
    }
}

/// What a card starts with besides its product.
#[derive(Debug, Clone, Default)]
pub struct CardStart {
    /// "in N carts" as the server counted it; the link keeps it current (`Link::show_presence`).
    pub in_carts: String,
    /// Its form's `Idempotency-Key` in the server's rendering (see [`PageState::form_key`]).
    pub key: Option<String>,
    /// The refusal of this card's form post (without JavaScript), in words.
    pub error: Option<String>,
}

/// The product at `index`: name, picture and description as rendered, stock and price live. "Add to cart"
/// is a real form: before the bundle hydrates, or without it, the browser posts it and the server answers with
/// the page again; once hydrated the bundle sends the change itself.
#[component]
fn ProductCard(
    product: Product,
    index: usize,
    products: RwSignal<Vec<Product>>,
    cart: RwSignal<Cart>,
    start: CardStart,
    locale: Locale,
    link: Link,
) -> impl IntoView {
    let CardStart { in_carts, key, error: posted_error } = start;
    let Product { id, name, description, currency, image, .. } = product;
    let live =
        Memo::new(move |_| products.with(|ps| ps.get(index).map_or((Cents::ZERO, 0), |p| (p.price_cents, p.stock))));
    let stock = move || live.get().1;
    let sold_out = move || stock() == 0;
    let id = id.0;
    let quantity = RwSignal::new("1".to_owned());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(posted_error);
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
    let name_id = format!("name-{id}");
    view! {
        <li class="product-card" id=format!("product-{id}") data-product-id=id.clone()>
            <img class="product-image" src=image alt="" width="240" height="180" />
            <div class="product-body">
                <h3 class="product-name" id=name_id.clone()>{name.clone()}</h3>
                <p class="product-description">{description}</p>
                <div class="product-facts">
                    <span class="price">{move || live.get().0.format_in(&currency, locale)}</span>
                    <span class="stock" class:low=move || stock() <= 3 class:out=sold_out>
                        {move || Product::stock_label_of(stock())}
                    </span>
                </div>
                <form class="add-form" method="post" action=form::ADD on:submit=submit novalidate>
                    <input type="hidden" name=form::PRODUCT value=id.clone() />
                    <input type="hidden" name=form::KEY value=key />
                    <label class="quantity-label" for=input_id.clone()>{format!("Quantity of {name}")}</label>
                    <input
                        id=input_id
                        class="quantity"
                        name=form::QUANTITY
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
                    // Named by its words ("Add to cart", "Sold out"), described by the product's name. While
                    // busy it stays enabled (`aria-disabled`), so a keyboard's focus stays on it.
                    <button
                        type="submit"
                        class="button primary"
                        aria-describedby=name_id
                        disabled=sold_out
                        aria-disabled=move || busy.get().to_string()
                    >
                        {move || if busy.get() { "Adding…" } else if sold_out() { "Sold out" } else { "Add to cart" }}
                    </button>
                </form>
                // The count as text only in the server's rendering: hydration leaves that text alone, and the
                // link keeps it current (an empty label rendered on both sides would not hydrate).
                <p class="in-carts" data-in-carts-of=id.clone()>{cartwheel_mfe::server_only(in_carts)}</p>
                // Not a live region: the cart badge announces each change once for the whole page.
                <p class="in-cart">
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
    let starts = state
        .products
        .iter()
        .map(|p| CardStart {
            in_carts: state.presence.in_carts_label(&p.id).unwrap_or_default(),
            key: state.form_key(form::ADD, p.id.as_str()),
            error: state.outcome.error_for(Some(p.id.as_str())),
        })
        .collect();
    let locale = state.locale;
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
    view! { <ProductList products cart report starts locale link /> }
}

cartwheel_mfe::bundle!(MFE, mount::PRODUCT_LIST, root);
