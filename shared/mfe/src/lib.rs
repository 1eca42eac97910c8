//! The wiring every micro-frontend repeats, once: a view gets a [`Link`] to its bundle's connection, the server
//! renders the view to HTML ([`render_to_html`], feature `ssr`), and the bundle hydrates it and starts its link
//! ([`hydrate`], [`unmount`], feature `hydrate`). A micro-frontend is a view and one line:
//!
//! ```ignore
//! fn root(state: PageState, link: cartwheel_mfe::Link) -> impl IntoView { /* signals, link.follow(...), view */ }
//! cartwheel_mfe::bundle!(MFE, mount::PRODUCT_LIST, root);
//! ```
//!
//! Views name only [`Link`] and `cartwheel-core` types; the browser link (`cartwheel-link`, web-sys) is linked
//! into bundles only, so the server's build of a view has no browser dependency.

use cartwheel_core::api::{ApiError, CartRequest};
use cartwheel_core::cart::Cart;
use cartwheel_core::chat::{ChatHistory, ChatMessage, ChatPosted};
use cartwheel_core::link::{Handlers, LinkReport};
use cartwheel_core::order::CheckoutReceipt;
#[cfg(any(feature = "ssr", feature = "hydrate"))]
use cartwheel_core::page::PageState;
use cartwheel_core::protocol::{ErrorCode, Notice};
#[cfg(any(feature = "ssr", feature = "hydrate"))]
use leptos::prelude::IntoView;

/// A view's small interface to its bundle's link to the server. `Copy`, so views capture it in any closure.
///
/// What a view asks for while it is built ([`Link::follow`], [`Link::on_link_reports`]) is collected, and the
/// bundle's link starts with it once hydration is over; on the server it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// In a hydrating bundle (`true`) or rendered on the server (`false`).
    live: bool,
}

impl Link {
    /// The link of a view the server renders: it follows nothing and its calls fail (event handlers do not run
    /// on the server, so they are never made).
    pub const fn server() -> Link {
        Link { live: false }
    }

    /// What this view wants to hear from the link: the bundle starts its `CartLink` with these handlers (one
    /// set per bundle; a second call replaces the first). Call it while the view is built.
    pub fn follow(&self, handlers: Handlers) {
        #[cfg(feature = "hydrate")]
        if self.live {
            browser::collect(|wanted| wanted.handlers = Some(handlers));
            return;
        }
        drop(handlers);
    }

    /// Hear every bundle's [`LinkReport`] on this page (the shell's connection summary), from when hydration is
    /// over; the bundles already running are asked to report again, so none is missed. Call it while the view
    /// is built.
    pub fn on_link_reports(&self, f: impl Fn(LinkReport) + 'static) {
        #[cfg(feature = "hydrate")]
        if self.live {
            // Started through a closure made here, so only a bundle that calls this (the shell) links the
            // listener and the reading of reports.
            let start = move || -> Box<dyn std::any::Any> { Box::new(cartwheel_link::on_link_reports(f)) };
            browser::collect(move |wanted| wanted.listeners.push(Box::new(start)));
            return;
        }
        drop(f);
    }

    /// Hear every new notice that reaches this page (any bundle's socket, or `GET /api/notices` while this
    /// bundle's own link is not live), from when hydration is over: each once, acknowledged to the server as
    /// shown. Call it while the view is built.
    pub fn on_notices(&self, f: impl Fn(Notice) + 'static) {
        #[cfg(feature = "hydrate")]
        if self.live {
            let start = move || -> Box<dyn std::any::Any> { Box::new(cartwheel_link::on_notices(f)) };
            browser::collect(move |wanted| wanted.listeners.push(Box::new(start)));
            return;
        }
        drop(f);
    }

    /// Hear every help-chat message that reaches this page (any bundle's socket), from when hydration is over.
    /// Call it while the view is built.
    pub fn on_chat(&self, f: impl Fn(ChatMessage) + 'static) {
        #[cfg(feature = "hydrate")]
        if self.live {
            let start = move || -> Box<dyn std::any::Any> { Box::new(cartwheel_link::on_chat(f)) };
            browser::collect(move |wanted| wanted.listeners.push(Box::new(start)));
            return;
        }
        drop(f);
    }

    /// The session's help-chat conversation (`GET /api/chat`), `None` when it cannot be read now.
    pub async fn chat_history(&self) -> Option<ChatHistory> {
        #[cfg(feature = "hydrate")]
        if self.live {
            return cartwheel_link::api::chat_history().await;
        }
        None
    }

    /// Send a help-chat message (see `cartwheel_link::send_chat`): `Ok(Some(posted))` when it went over REST.
    pub async fn send_chat(&self, text: &str) -> Result<Option<ChatPosted>, ApiError> {
        #[cfg(feature = "hydrate")]
        if self.live {
            return cartwheel_link::send_chat(text).await;
        }
        let _ = text;
        Err(not_connected())
    }

    /// Keep this bundle's presence labels current (elements with `data-in-carts-of` / `data-online` inside
    /// its mount element; see `cartwheel_link::show_presence`). Call it while the view is built.
    pub fn show_presence(&self) {
        #[cfg(feature = "hydrate")]
        if self.live {
            browser::collect(|wanted| {
                let mount = wanted.mount.clone();
                let start = move || -> Box<dyn std::any::Any> { Box::new(cartwheel_link::show_presence(mount)) };
                wanted.listeners.push(Box::new(start));
            });
        }
    }

    /// While `on`, every bundle on the page reports again each second (for a view that shows how long ago
    /// each last heard from the server). Call it from an event handler.
    pub fn refresh_reports(&self, on: bool) {
        #[cfg(feature = "hydrate")]
        if self.live {
            cartwheel_link::refresh_reports(on);
        }
        let _ = on;
    }

    /// Change the cart over REST (with an `Idempotency-Key`, retried on network errors); the answer is shown at
    /// once and dispatched to the page's other bundles. `note` hears words to show while it is still under
    /// way, e.g. that its outcome is not confirmed yet and being checked.
    pub async fn mutate(&self, request: CartRequest, note: impl Fn(&str)) -> Result<Cart, ApiError> {
        #[cfg(feature = "hydrate")]
        if self.live {
            return cartwheel_link::mutate(request, &note).await;
        }
        drop((request, note));
        Err(not_connected())
    }

    /// Check out (with an `Idempotency-Key`, retried like a change); the emptied cart is shown and dispatched.
    /// `note` as for [`Link::mutate`].
    pub async fn checkout(&self, note: impl Fn(&str)) -> Result<CheckoutReceipt, ApiError> {
        #[cfg(feature = "hydrate")]
        if self.live {
            return cartwheel_link::checkout(&note).await;
        }
        drop(note);
        Err(not_connected())
    }
}

/// When [`focus_later`] moves the keyboard's focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Always (the view opened something the focus belongs in).
    Always,
    /// Only if it was lost meanwhile (its element left the page): never taken from where the shopper moved it.
    IfLost,
}

/// Focus the element `selector` finds once the view has caught up with the latest change (the next task: a
/// signal's effects run first). For event handlers: it reaches the browser's document.
pub fn focus_later(when: Focus, selector: String) {
    use leptos::prelude::{document, set_timeout};
    set_timeout(
        move || {
            let doc = document();
            let lost = doc.active_element().is_none_or(|a| doc.body().is_some_and(|b| *b == a));
            if when == Focus::IfLost && !lost {
                return;
            }
            if let Ok(Some(el)) = doc.query_selector(&selector) {
                if let Ok(el) = leptos::wasm_bindgen::JsCast::dyn_into::<leptos::web_sys::HtmlElement>(el) {
                    let _ = el.focus();
                }
            }
        },
        std::time::Duration::ZERO,
    );
}

/// A part's connection state, in a word beside its coloured dot (colour alone says nothing to many people,
/// nor in forced-colours mode).
#[leptos::component]
pub fn LinkBadge(report: leptos::prelude::RwSignal<LinkReport>) -> impl leptos::prelude::IntoView {
    use leptos::prelude::*;
    let state = move || report.with(|r| r.state);
    view! {
        <span class="link-state" data-state=move || state().label()>
            <span class="link-dot" aria-hidden="true"></span>
            {move || state().word()}
        </span>
    }
}

/// `text` in the server's rendering, nothing in the bundle's: for a label the bundle's link keeps current by
/// itself (presence). Hydration leaves the server's text node alone; an empty text rendered on both sides
/// would leave no node to hydrate.
#[cfg(feature = "ssr")]
pub fn server_only(text: String) -> String {
    text
}

/// `text` in the server's rendering, nothing in the bundle's (see the `ssr` build's).
#[cfg(not(feature = "ssr"))]
pub fn server_only(_: String) {}

/// What a call through a server-side [`Link`] answers.
fn not_connected() -> ApiError {
    ApiError {
        status: None,
        code: ErrorCode::ServiceUnavailable,
        message: "This part of the page is not connected yet. Try again in a moment.".to_owned(),
        cart: None,
        retry_after_ms: None,
    }
}

/// Server side: `root`'s view as HTML, with a server [`Link`], in a fresh reactive owner.
#[cfg(feature = "ssr")]
pub fn render_to_html<V: IntoView>(state: &PageState, root: impl FnOnce(PageState, Link) -> V) -> String {
    // `to_html` comes with `IntoView` (its supertrait `RenderHtml`).
    leptos::prelude::Owner::new().with(|| root(state.clone(), Link::server()).to_html())
}

/// Browser side: hydrate the server-rendered markup in `mount_id` with `root`'s view, from the state the page
/// embeds; then, with hydration over (no signal changes during it), start this bundle's `CartLink` with what
/// the view asked for and listen to the page's link reports. A bundle that cannot start says so in the console
/// and on its mount element (`data-failed`).
#[cfg(feature = "hydrate")]
pub fn hydrate<V>(mfe: &'static str, mount_id: &str, root: impl FnOnce(PageState, Link) -> V + 'static)
where
    V: IntoView + 'static,
    <V as leptos::tachys::view::Render>::State: 'static,
{
    use cartwheel_link::{boot, CartLink};

    let Some((state, element)) = boot::prepare(mfe, mount_id) else { return };
    let policy = state.reconnect.policy();
    let timings = state.timings;
    let initial = state.cart.clone();
    let products = state.products.clone();
    browser::start_collecting(mount_id);
    let handle = leptos::mount::hydrate_from(element, move || root(state, Link { live: true }));
    let wanted = browser::take();
    if let Some(handlers) = wanted.handlers {
        // The products only matter to a link that follows them (see `Handlers::on_product`).
        let products = if handlers.on_product.is_some() { products } else { Vec::new() };
        CartLink::install(mfe, policy, timings, Some(initial), products, handlers);
    }
    let listeners: Vec<Box<dyn std::any::Any>> = wanted.listeners.into_iter().map(|start| start()).collect();
    boot::keep_mounted(Box::new((handle, listeners)));
}

/// Browser side: close this bundle's link (socket, timers, listeners) and drop its view.
#[cfg(feature = "hydrate")]
pub fn unmount() {
    cartwheel_link::boot::unmount();
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::RefCell;

    use cartwheel_core::link::Handlers;

    /// What the view asked of the link while it was built.
    #[derive(Default)]
    pub(crate) struct Wanted {
        pub(crate) handlers: Option<Handlers>,
        /// Each starts one listener to the page's events — link reports, notices, presence — kept for as long
        /// as the bundle is mounted.
        pub(crate) listeners: Vec<Box<dyn FnOnce() -> Box<dyn std::any::Any>>>,
        /// The bundle's mount element's id.
        pub(crate) mount: String,
    }

    thread_local! {
        /// `Some` while [`crate::hydrate`] builds the view (each bundle is its own WASM instance).
        static WANTED: RefCell<Option<Wanted>> = const { RefCell::new(None) };
    }

    pub(crate) fn start_collecting(mount: &str) {
        WANTED.with(|w| *w.borrow_mut() = Some(Wanted { mount: mount.to_owned(), ..Wanted::default() }));
    }

    pub(crate) fn take() -> Wanted {
        WANTED.with(|w| w.borrow_mut().take()).unwrap_or_default()
    }

    pub(crate) fn collect(f: impl FnOnce(&mut Wanted)) {
        let collected = WANTED.with(|w| w.borrow_mut().as_mut().map(f).is_some());
        if !collected {
            leptos::logging::warn!("cartwheel: a view asked its link for something after the bundle started; ignored");
        }
    }
}

#[doc(hidden)]
pub mod __private {
    pub use cartwheel_core::page::PageState;
}

/// A micro-frontend's entry points, from its `root(state: PageState, link: Link) -> impl IntoView`:
///
/// - feature `hydrate`: `#[wasm_bindgen] pub fn hydrate()` and `pub fn unmount()` (what the page's loader
///   calls), through [`hydrate`] and [`unmount`];
/// - feature `ssr`: `pub fn render_to_html(state: &PageState) -> String`, through [`render_to_html`] (left out
///   with `hydrate_only:`, for a view the server renders another way, like the shell).
///
/// The calling crate has features `hydrate` (enabling `cartwheel-mfe/hydrate` and its own optional
/// `wasm-bindgen`) and `ssr` (enabling `cartwheel-mfe/ssr`).
///
/// ```ignore
/// cartwheel_mfe::bundle!(MFE, mount::PRODUCT_LIST, root);
/// cartwheel_mfe::bundle!(hydrate_only: MFE, mount::SHELL, root);
/// ```
#[macro_export]
macro_rules! bundle {
    (hydrate_only: $mfe:expr, $mount_id:expr, $root:expr $(,)?) => {
        /// Hydrate the server-rendered markup and open this bundle's link.
        #[cfg(feature = "hydrate")]
        #[::wasm_bindgen::prelude::wasm_bindgen]
        pub fn hydrate() {
            $crate::hydrate($mfe, $mount_id, $root);
        }

        /// Close this bundle's socket and timers and remove its view.
        #[cfg(feature = "hydrate")]
        #[::wasm_bindgen::prelude::wasm_bindgen]
        pub fn unmount() {
            $crate::unmount();
        }

        // Used in every build, also the one with neither feature (`cargo check`).
        const _: () = {
            let _ = ($mfe, $mount_id, $root);
        };
    };
    ($mfe:expr, $mount_id:expr, $root:expr $(,)?) => {
        $crate::bundle!(hydrate_only: $mfe, $mount_id, $root);

        /// Server side: this micro-frontend as HTML, rendered from the same view the bundle hydrates.
        #[cfg(feature = "ssr")]
        pub fn render_to_html(state: &$crate::__private::PageState) -> ::std::string::String {
            $crate::render_to_html(state, $root)
        }
    };
}
