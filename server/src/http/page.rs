//! The shop page: one server-rendered document composed of the three micro-frontends.
//!
//! The server renders each micro-frontend's real content for *this* session — products, the cart's lines, the
//! badge count — so the shop is visible before any WASM arrives, or without JavaScript at all. The product
//! list and the cart are rendered by their own crates into strings that the shell places, unopened, into
//! their mount points; the document around the shell is rendered by leptos_axum. The page embeds the state it
//! was rendered from, and a loader that starts each bundle independently: one bundle failing to load leaves
//! the others working.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{ACCEPT_LANGUAGE, CACHE_CONTROL};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cartwheel_core::link::LinkTimings;
use cartwheel_core::page::{mount, FormOutcome, PageState, ReconnectSettings, ViewTimings, STATE_SCRIPT_ID};
use cartwheel_core::protocol::ErrorCode;
use cartwheel_core::{Locale, ProductId};
use leptos::prelude::*;
use serde::Deserialize;

use super::assets::BundleUrls;
use super::error::AppError;
use super::guards::session::Session;
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(shop))
}

/// What a form's `303` put in the page's query (see [`super::forms`]); anything else there is ignored.
#[derive(Debug, Default, Deserialize)]
struct Answered {
    error: Option<String>,
    product: Option<String>,
    order: Option<String>,
}

/// `GET /`.
async fn shop(State(app): State<AppState>, session: Session, request: Request<Body>) -> Result<Response, AppError> {
    let answered: Answered = request.uri().query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let locale =
        request.headers().get(ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).map_or(Locale::En, Locale::negotiate);
    let cart = app.shop.cart(&session.cart).await?;
    let order = match answered.order.as_deref() {
        // Order ids are short; anything longer is not one and is not looked up.
        Some(id) if id.len() <= 64 => app.shop.order(&session.cart, id).await?,
        _ => None,
    };
    let outcome = FormOutcome {
        error: answered.error.map(|code| ErrorCode::from_name(&code).in_words().to_owned()),
        product: answered.product.filter(|p| app.shop.catalog().get(&ProductId(p.clone())).is_some()),
        order,
    };
    let c = &app.config;
    let reconnect = ReconnectSettings {
        base_ms: c.reconnect_base_ms,
        max_ms: c.reconnect_max_ms,
        restart_spread_ms: c.reconnect_restart_spread_ms,
    };
    let timings = LinkTimings {
        ping_ms: c.link_ping_ms,
        deadline_ms: c.link_deadline_ms,
        connect_timeout_ms: c.link_connect_timeout_ms,
        poll_ms: c.link_poll_ms,
        request_timeout_ms: c.link_request_timeout_ms,
    };
    let presence = app.sockets.presence.current();
    let views = ViewTimings { undo_ms: c.view_undo_ms, toast_ms: c.view_toast_ms };
    let state = PageState {
        products: app.shop.catalog().products().to_vec(),
        cart,
        reconnect,
        timings,
        presence,
        locale,
        views,
        outcome,
        form_nonce: hex::encode(rand::random::<[u8; 8]>()),
    };
    let slots = shell::Slots {
        product_list: Some(product_list::render_to_html(&state)),
        shopping_cart: Some(shopping_cart::render_to_html(&state)),
    };
    let assets = app.assets.current();
    let document = Document {
        state_json: state.to_script_json(),
        state,
        slots,
        stylesheet: assets.stylesheet().map(str::to_owned),
        icon: assets.icon().map(str::to_owned),
        bundles: assets.bundles().to_vec(),
    };
    let render = leptos_axum::render_app_to_stream_with_context(|| {}, move || document.clone().view());
    let mut response = render(request).await.into_response();
    // The page holds this session's cart: never cache it in a shared cache, always revalidate.
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

#[derive(Clone)]
struct Document {
    state_json: String,
    state: PageState,
    slots: shell::Slots,
    stylesheet: Option<String>,
    icon: Option<String>,
    bundles: Vec<BundleUrls>,
}

impl Document {
    fn view(self) -> impl IntoView {
        let preloads = self
            .bundles
            .iter()
            .map(|b| {
                view! {
                    <link rel="modulepreload" href=b.js.clone() />
                    <link rel="preload" href=b.wasm.clone() r#as="fetch" crossorigin="anonymous" />
                }
            })
            .collect_view();
        let loader = loader_script(&self.bundles);
        view! {
            <!DOCTYPE html>
            <html lang="en">
                <head>
                    <meta charset="utf-8" />
                    <meta name="viewport" content="width=device-width, initial-scale=1" />
                    <meta name="description" content="Cartwheel: a small shop of well-made things for your desk and home." />
                    <title>"Cartwheel — goods for a calm desk"</title>
                    {self.stylesheet.map(|href| view! { <link rel="stylesheet" href=href /> })}
                    {self.icon.map(|href| view! { <link rel="icon" type="image/svg+xml" href=href /> })}
                    {preloads}
                    <script type="module" inner_html=loader></script>
                </head>
                <body>
                    <div id=mount::SHELL>{shell::view_for_server(&self.state, self.slots)}</div>
                    <script type="application/json" id=STATE_SCRIPT_ID inner_html=self.state_json></script>
                </body>
            </html>
        }
    }
}

/// What a part whose bundle did not start says at its top.
pub const FAILED_PART: &str = "This part could not load — the page still works.";

/// Start every bundle on its own: import its glue, instantiate its module, hydrate. A failure is logged,
/// marked on the `<html>` element (`data-failed-bundles`) and on the bundle's mount element (`data-failed`,
/// which the stylesheet turns into words: the part still shows what the server rendered, and its forms still
/// post), and reported like a link's state (`failed`, also again whenever the shell asks for reports), so the
/// connection indicator does not say "Connecting…" for ever. A form's outcome in the address (`?error=`,
/// `?order=`) is taken out of it once shown, so a reload does not show it again.
fn loader_script(bundles: &[BundleUrls]) -> String {
    let list = bundles
        .iter()
        .map(|b| format!("[{:?},{:?},{:?},{:?}]", b.name, b.js, b.wasm, mount::of(&b.name).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "window.__RESOLVED_RESOURCES=window.__RESOLVED_RESOURCES||[];\
         window.__SERIALIZED_ERRORS=window.__SERIALIZED_ERRORS||[];\
         window.__INCOMPLETE_CHUNKS=window.__INCOMPLETE_CHUNKS||[];\
         if (/[?&](error|order)=/.test(location.search)) history.replaceState(null, '', location.pathname + location.hash);\
         const failed = [];\
         const report = (mfe) => window.dispatchEvent(new CustomEvent({link_event:?}, {{ detail: \
           {{ mfe, state: 'failed', rtt_ms: null, retry_in_ms: null, failures: 0, heard_ago_ms: null }} }}));\
         window.addEventListener({query_event:?}, () => failed.forEach(report));\
         for (const [name, js, wasm, mountId] of [{list}]) {{\
           import(js).then(async (m) => {{ await m.default({{ module_or_path: wasm }}); m.hydrate(); }})\
             .catch((e) => {{\
               console.error(`cartwheel: the ${{name}} bundle failed to start`, e);\
               const root = document.documentElement;\
               root.dataset.failedBundles = ((root.dataset.failedBundles || '') + ' ' + name).trim();\
               const mount = document.getElementById(mountId);\
               if (mount) {{\
                 mount.dataset.failed = '';\
                 const note = document.createElement('p');\
                 note.className = 'mfe-failed';\
                 note.textContent = {failed_words:?};\
                 mount.prepend(note);\
               }}\
               failed.push(name);\
               report(name);\
             }});\
         }}",
        link_event = cartwheel_core::link::LINK_EVENT,
        query_event = cartwheel_core::link::LINK_QUERY_EVENT,
        failed_words = FAILED_PART,
    )
}
