//! The shell micro-frontend: the page around the other micro-frontends — the header with the shop's name,
//! the cart-count badge and the connection indicator — and the layout with one mount point per micro-frontend.
//!
//! The shell never imports another micro-frontend: the server passes their rendered HTML in as opaque strings
//! (`inner_html`), and in the browser their own bundles hydrate those elements. The shell keeps its own
//! WebSocket for the badge and the notices backend services send (shown as dismissible toasts and listed in the
//! header's notices panel, with an unread count), and listens to every bundle's
//! [`cartwheel_core::link::LINK_EVENT`] for the indicator and [`cartwheel_core::protocol::NOTICE_EVENT`] for the
//! notices any bundle's socket brought (through its [`Link`]).

use cartwheel_core::chat::{ChatMessage, ChatSender};
use cartwheel_core::page::{mount, PageState, ViewTimings};
use cartwheel_core::presence::Presence;
use cartwheel_core::{Cart, Handlers, LinkReport, LinkState, Locale, Notice};
use cartwheel_mfe::{Focus, Link};
use leptos::prelude::*;

/// This bundle's name in connection reports.
pub const MFE: &str = "shell";

/// The bundles whose connections the indicator lists, in order, with their names for people.
pub const BUNDLES: [(&str, &str); 3] = [("shell", "Header"), ("product-list", "Products"), ("shopping-cart", "Cart")];

/// What the server rendered into the two other micro-frontends' mount points (`None` in the browser:
/// hydration leaves the server's markup in place for their bundles).
#[derive(Debug, Clone, Default)]
pub struct Slots {
    pub product_list: Option<String>,
    pub shopping_cart: Option<String>,
}

/// Toasts shown at once; a newer notice pushes the oldest out.
pub const MAX_TOASTS: usize = 3;

/// Notices the panel lists: the newest.
pub const MAX_LISTED: usize = 20;

/// A notice on screen (a toast, or a line of the panel), with an id to dismiss it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toast {
    pub id: u64,
    pub notice: Notice,
    /// Seen in the open panel.
    pub read: bool,
}

/// Show `notice` (as toast `id`), keeping at most [`MAX_TOASTS`].
pub fn push_toast(toasts: &mut Vec<Toast>, id: u64, notice: Notice) {
    toasts.push(Toast { id, notice, read: false });
    let excess = toasts.len().saturating_sub(MAX_TOASTS);
    toasts.drain(..excess);
}

/// List `notice` in the panel, newest first, keeping at most [`MAX_LISTED`].
pub fn list_notice(listed: &mut Vec<Toast>, id: u64, notice: Notice) {
    listed.insert(0, Toast { id, notice, read: false });
    listed.truncate(MAX_LISTED);
}

/// Messages of the help chat the panel keeps: the newest.
pub const MAX_CHAT: usize = 100;

/// Add `message` to the conversation unless it is there already (the same frame comes on every bundle's
/// socket, and again in `GET /api/chat`), in the order the server stored them, keeping the newest [`MAX_CHAT`].
pub fn merge_chat(list: &mut Vec<ChatMessage>, message: ChatMessage) {
    if list.iter().any(|m| m.id == message.id) {
        return;
    }
    let at = list.partition_point(|m| m.at <= message.at);
    list.insert(at, message);
    let excess = list.len().saturating_sub(MAX_CHAT);
    list.drain(..excess);
}

/// Notices listed and not read yet (the badge's number type: its text node's code is the cart badge's).
pub fn unread(listed: &[Toast]) -> u64 {
    listed.iter().filter(|t| !t.read).count() as u64
}

/// The connection reports of every bundle, in [`BUNDLES`] order.
pub fn initial_reports() -> Vec<LinkReport> {
    BUNDLES.iter().map(|(mfe, _)| LinkReport::connecting(mfe)).collect()
}

/// Take toast `id` away after `ms`, or later while the pointer or the keyboard's focus is on the toasts
/// (someone is reading it or about to dismiss it).
fn expire_toast(toasts: RwSignal<Vec<Toast>>, id: u64, ms: u64) {
    set_timeout(
        move || {
            let held = document().query_selector(".toasts:hover, .toasts:focus-within").ok().flatten().is_some();
            if held {
                expire_toast(toasts, id, ms);
            } else {
                toasts.try_update(|t| t.retain(|t| t.id != id));
            }
        },
        std::time::Duration::from_millis(ms),
    );
}

#[component]
pub fn Shell(
    cart: RwSignal<Cart>,
    links: RwSignal<Vec<LinkReport>>,
    toasts: RwSignal<Vec<Toast>>,
    listed: RwSignal<Vec<Toast>>,
    slots: Slots,
    /// "N shoppers here" as the server counted it; the link keeps it current (`Link::show_presence`).
    online: String,
    locale: Locale,
    chat: RwSignal<Vec<ChatMessage>>,
    support: RwSignal<Option<bool>>,
    link: Link,
) -> impl IntoView {
    let count = move || cart.with(|c| c.item_count);
    let items = move || match count() {
        1 => "1 item".to_owned(),
        n => format!("{n} items"),
    };
    // The phone's cart drawer. Without JavaScript "View cart" is a link to the cart further down the page.
    let open = RwSignal::new(false);
    let show_cart = move |ev: leptos::ev::MouseEvent| {
        ev.prevent_default();
        open.set(true);
        cartwheel_mfe::focus_later(Focus::Always, ".drawer-close".to_owned());
    };
    let close = move || {
        open.set(false);
        cartwheel_mfe::focus_later(Focus::Always, ".cart-bar .button".to_owned());
    };
    let cart_href = format!("#{}", mount::SHOPPING_CART);
    view! {
        <div class="page" class:drawer-open=move || open.get()>
            // While the drawer is open everything else is `inert`: focus stays in the drawer, as in a modal.
            <header class="site-header" inert=move || open.get()>
                <h1 class="brand">
                    <a href="/">
                        <span class="brand-mark" aria-hidden="true"></span>
                        <span class="brand-name">"Cartwheel"</span>
                    </a>
                </h1>
                <span class="tagline">"Goods for a calm desk"</span>
                <span class="online" data-online="">{cartwheel_mfe::server_only(online)}</span>
                <ConnectionIndicator links link />
                <NoticesPanel listed />
                <HelpPanel chat support link />
                // The page's one live announcement of a cart change: the count, with its words.
                <a class="cart-badge" href=cart_href.clone()>
                    <span class="cart-badge-label">"Cart"</span>
                    " "
                    <span class="cart-badge-count" aria-live="polite" aria-atomic="true">
                        <span class="cart-count" data-count=move || count().to_string()>{count}</span>
                        <span class="visually-hidden">{move || if count() == 1 { " item" } else { " items" }}</span>
                    </span>
                </a>
            </header>
            <main class="layout">
                <div
                    id=mount::PRODUCT_LIST
                    class="mfe mfe-products"
                    inert=move || open.get()
                    inner_html=slots.product_list
                ></div>
                // A plain box (not `<aside>`, whose role a dialog may not take): the cart inside is its own
                // named region.
                <div
                    class="cart-frame"
                    class:open=move || open.get()
                    role=move || open.get().then_some("dialog")
                    aria-modal=move || open.get().then_some("true")
                    aria-label=move || open.get().then_some("Your cart")
                    on:keydown=move |ev| {
                        if open.get_untracked() && ev.key() == "Escape" {
                            close();
                        }
                    }
                >
                    <button type="button" class="button secondary drawer-close" on:click=move |_| close()>
                        "Close"
                    </button>
                    <div id=mount::SHOPPING_CART class="mfe mfe-cart" inner_html=slots.shopping_cart></div>
                </div>
            </main>
            <div class="cart-bar" inert=move || open.get()>
                <span class="cart-bar-count">{items}</span>
                <span class="cart-bar-total">
                    {move || cart.with(|c| c.total_cents.format_in(&c.currency, locale))}
                </span>
                <a class="button primary" href=cart_href on:click=show_cart>
                    "View cart"
                </a>
            </div>
            <div class="toasts" role="region" aria-label="Notices" aria-live="polite">
                {move || toasts.get().into_iter().map(|t| notice_item(t, toasts)).collect_view()}
            </div>
            <footer class="site-footer" inert=move || open.get()>
                <p>"Prices include VAT. Carts are kept for you on this device."</p>
            </footer>
        </div>
    }
}

/// One notice, with a button that takes it out of `list`: the same view for a toast and for a line of the
/// panel (one view type, so the bundle carries its code once).
fn notice_item(Toast { id, notice, .. }: Toast, list: RwSignal<Vec<Toast>>) -> impl IntoView {
    view! {
        <div class="toast" data-kind=notice.kind>
            <p class="toast-message">{notice.message}</p>
            <button
                type="button"
                class="toast-close"
                aria-label="Dismiss notice"
                on:click=move |_| list.update(|l| l.retain(|t| t.id != id))
            >
                "×"
            </button>
        </div>
    }
}

/// The help chat: the session's conversation with the shop's services (read when opened, then live from any
/// bundle's socket), and a field to write in, sent on the shell's socket or, while it is down, over REST.
#[component]
fn HelpPanel(chat: RwSignal<Vec<ChatMessage>>, support: RwSignal<Option<bool>>, link: Link) -> impl IntoView {
    let draft = RwSignal::new(String::new());
    let sending = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let opened = move |ev: leptos::ev::Event| {
        if !event_target::<leptos::web_sys::Element>(&ev).has_attribute("open") {
            return;
        }
        leptos::task::spawn_local(async move {
            if let Some(history) = link.chat_history().await {
                chat.try_update(|list| history.messages.into_iter().for_each(|m| merge_chat(list, m)));
                support.try_set(Some(history.support_online));
            }
        });
        cartwheel_mfe::focus_later(Focus::Always, "#help-text".to_owned());
    };
    let send = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = draft.get_untracked();
        if text.trim().is_empty() || sending.get_untracked() {
            return;
        }
        sending.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match link.send_chat(&text).await {
                Ok(posted) => {
                    draft.try_set(String::new());
                    if let Some(posted) = posted {
                        chat.try_update(|list| merge_chat(list, posted.message));
                        support.try_set(Some(posted.support_online));
                    }
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
            sending.try_set(false);
        });
    };
    // The newest answer, read out once (the list itself is not a live region: it is re-rendered whole).
    let latest_answer = move || {
        chat.with(|l| {
            l.iter().rev().find(|m| m.from == ChatSender::Service).map(|m| m.text.clone()).unwrap_or_default()
        })
    };
    view! {
        <details class="help" on:toggle=opened>
            <summary>
                <span class="help-label">"Help"</span>
            </summary>
            <div class="help-panel">
                <p class="help-status" hidden=move || support.get() != Some(false)>
                    "Support is offline — we will answer here."
                </p>
                <ol class="help-messages">
                    {move || {
                        chat.get()
                            .into_iter()
                            .map(|m| {
                                let from = if m.from == ChatSender::Service { "service" } else { "shopper" };
                                view! {
                                    <li class="help-message" data-from=from>
                                        <span class="visually-hidden">
                                            {if from == "service" { "Support: " } else { "You: " }}
                                        </span>
                                        {m.text}
                                    </li>
                                }
                            })
                            .collect_view()
                    }}
                </ol>
                <p class="visually-hidden" aria-live="polite">{latest_answer}</p>
                <form class="help-form" on:submit=send>
                    <label class="visually-hidden" for="help-text">"Your question"</label>
                    <input
                        id="help-text"
                        class="help-text"
                        name="text"
                        type="text"
                        maxlength="2000"
                        autocomplete="off"
                        placeholder="Ask about a product, an order…"
                        prop:value=move || draft.get()
                        on:input=move |ev| draft.set(event_target_value(&ev))
                    />
                    <button type="submit" class="button primary" aria-disabled=move || sending.get().to_string()>
                        "Send"
                    </button>
                </form>
                <p class="error" role="alert">{move || error.get()}</p>
            </div>
        </details>
    }
}

/// The notices this page received, newest first; opening it marks them read.
#[component]
fn NoticesPanel(listed: RwSignal<Vec<Toast>>) -> impl IntoView {
    let count = move || listed.with(|l| unread(l));
    view! {
        <details
            class="notices"
            on:toggle=move |ev| {
                if event_target::<leptos::web_sys::Element>(&ev).has_attribute("open") {
                    listed.update(|l| l.iter_mut().for_each(|t| t.read = true));
                }
            }
        >
            <summary>
                <span class="notices-label">"Notices"</span>
                <span class="notices-unread" data-count=move || count().to_string()>
                    {count}
                    <span class="visually-hidden">" unread"</span>
                </span>
            </summary>
            <div class="notices-panel">
                <p class="notices-empty">"No notices yet."</p>
                <div class="notices-list">
                    {move || listed.get().into_iter().map(|t| notice_item(t, listed)).collect_view()}
                </div>
            </div>
        </details>
    }
}

/// One word for the whole page, and a details view with each bundle's state and round-trip time.
#[component]
fn ConnectionIndicator(links: RwSignal<Vec<LinkReport>>, link: Link) -> impl IntoView {
    let summary = move || links.with(|l| LinkState::worst(l.iter().map(|r| r.state)).unwrap_or(LinkState::Connecting));
    let words = move || match summary() {
        LinkState::Live => "Live",
        LinkState::Connecting => "Connecting…",
        LinkState::Reconnecting => "Reconnecting… changes still save",
        LinkState::Offline => "Offline",
        LinkState::Failed => "Part of the page did not load",
    };
    view! {
        // While open, every part reports each second, so "last heard" counts up.
        <details
            class="connection"
            data-state=move || summary().label()
            on:toggle=move |ev| {
                link.refresh_reports(event_target::<leptos::web_sys::Element>(&ev).has_attribute("open"))
            }
        >
            <summary>
                <span class="status-dot" aria-hidden="true"></span>
                <span class="status-text">{words}</span>
            </summary>
            <div class="connection-details">
                <p class="connection-note">
                    "Each part of the page keeps its own live connection. Changes still save while one is down."
                </p>
                <table>
                    <thead>
                        <tr>
                            <th scope="col">"Part"</th>
                            <th scope="col">"State"</th>
                            <th scope="col">"Round trip"</th>
                            <th scope="col">"Last heard"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {BUNDLES
                            .iter()
                            .enumerate()
                            .map(|(i, (mfe, title))| {
                                let report = move || links.with(|l| l.get(i).cloned());
                                view! {
                                    <tr data-mfe=*mfe data-state=move || report().map(|r| r.state.label()).unwrap_or("connecting")>
                                        <th scope="row">{*title}</th>
                                        <td>{move || report().map(|r| r.describe()).unwrap_or_default()}</td>
                                        <td>
                                            {move || {
                                                report()
                                                    .and_then(|r| r.rtt_ms)
                                                    .map(|ms| format!("{ms} ms"))
                                                    .unwrap_or_else(|| "—".to_owned())
                                            }}
                                        </td>
                                        <td class="heard">{move || report().map(|r| r.heard()).unwrap_or_default()}</td>
                                    </tr>
                                }
                            })
                            .collect_view()}
                    </tbody>
                </table>
            </div>
        </details>
    }
}

/// Record `report` in the list (by bundle name; unknown bundles are ignored).
pub fn record(links: &mut [LinkReport], report: LinkReport) {
    if let Some(slot) = links.iter_mut().find(|r| r.mfe == report.mfe) {
        *slot = report;
    }
}

/// The shell from `cart`, with `slots` in the mount points. Through `link` (in the browser) the badge follows
/// the cart, notices become toasts and the indicator hears every bundle's report; on the server it is static.
fn compose(
    cart: Cart,
    locale: Locale,
    views: ViewTimings,
    slots: Slots,
    presence: &Presence,
    link: Link,
) -> impl IntoView {
    let cart = RwSignal::new(cart);
    let links = RwSignal::new(initial_reports());
    let toasts = RwSignal::new(Vec::new());
    let listed = RwSignal::new(Vec::new());
    let next_toast = std::cell::Cell::new(0);
    link.on_notices(move |notice| {
        next_toast.set(next_toast.get() + 1);
        toasts.try_update(|t| push_toast(t, next_toast.get(), notice.clone()));
        listed.try_update(|l| list_notice(l, next_toast.get(), notice));
        expire_toast(toasts, next_toast.get(), views.toast_ms);
    });
    link.follow(Handlers {
        on_cart: Box::new(move |c| {
            cart.try_set(c);
        }),
        // The shell's own report also arrives through the page event, like every other bundle's.
        on_report: Box::new(|_| {}),
        on_product: None,
    });
    link.on_link_reports(move |report| {
        links.try_update(|l| record(l, report));
    });
    link.show_presence();
    let chat = RwSignal::new(Vec::new());
    let support = RwSignal::new(None);
    link.on_chat(move |message| {
        if message.from == ChatSender::Service {
            support.try_set(Some(true));
        }
        chat.try_update(|list| merge_chat(list, message));
    });
    let online = presence.online_label().unwrap_or_default();
    view! { <Shell cart links toasts listed slots online locale chat support link /> }
}

/// Server side: the shell as HTML, with the other micro-frontends' HTML in their mount points.
#[cfg(feature = "ssr")]
pub fn view_for_server(state: &PageState, slots: Slots) -> impl IntoView {
    compose(state.cart.clone(), state.locale, state.views, slots, &state.presence, Link::server())
}

/// The bundle's view: the mount points stay empty, hydration leaves the server's markup in them for the other
/// bundles.
fn root(state: PageState, link: Link) -> impl IntoView {
    compose(state.cart, state.locale, state.views, Slots::default(), &state.presence, link)
}

// The server renders the shell with `view_for_server` inside its document, so no `render_to_html`.
cartwheel_mfe::bundle!(hydrate_only: MFE, mount::SHELL, root);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toasts_keep_the_newest_few() {
        let notice = |m: &str| Notice { kind: "k".into(), message: m.into(), product_id: None };
        let mut toasts = Vec::new();
        for id in 1..=MAX_TOASTS as u64 + 2 {
            push_toast(&mut toasts, id, notice(&format!("n{id}")));
        }
        assert_eq!(toasts.len(), MAX_TOASTS);
        assert_eq!(toasts.first().map(|t| t.id), Some(3));
        assert_eq!(toasts.last().map(|t| t.notice.message.as_str()), Some("n5"));
    }

    #[test]
    fn the_panel_lists_the_newest_first_and_counts_what_is_unread() {
        let notice = |m: &str| Notice { kind: "k".into(), message: m.into(), product_id: None };
        let mut listed = Vec::new();
        for id in 1..=MAX_LISTED as u64 + 1 {
            list_notice(&mut listed, id, notice(&format!("n{id}")));
        }
        assert_eq!(listed.len(), MAX_LISTED);
        assert_eq!(listed[0].notice.message, format!("n{}", MAX_LISTED + 1));
        assert_eq!(unread(&listed), MAX_LISTED as u64);
        listed.iter_mut().take(5).for_each(|t| t.read = true);
        assert_eq!(unread(&listed), MAX_LISTED as u64 - 5);
    }

    #[test]
    fn the_conversation_drops_repeats_keeps_the_stored_order_and_the_newest() {
        let message = |id: &str, at: u64| ChatMessage {
            id: id.into(),
            from: ChatSender::Shopper,
            text: id.into(),
            at,
            client_id: None,
        };
        let mut list = Vec::new();
        merge_chat(&mut list, message("b", 2));
        merge_chat(&mut list, message("a", 1));
        merge_chat(&mut list, message("b", 2));
        merge_chat(&mut list, message("c", 2));
        assert_eq!(list.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        for i in 0..MAX_CHAT as u64 {
            merge_chat(&mut list, message(&format!("n{i}"), 10 + i));
        }
        assert_eq!(list.len(), MAX_CHAT);
        assert_eq!(list[0].id, "n0");
    }

    #[test]
    fn reports_land_in_their_bundles_row() {
        let mut links = initial_reports();
        let mut live = LinkReport::connecting("product-list");
        live.state = LinkState::Live;
        live.rtt_ms = Some(3);
        record(&mut links, live.clone());
        record(&mut links, LinkReport::connecting("someone-else"));
        assert_eq!(links[1], live);
        assert_eq!(links.len(), 3);
        assert_eq!(LinkState::worst(links.iter().map(|r| r.state)), Some(LinkState::Connecting));
    }
}
