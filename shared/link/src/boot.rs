//! What every bundle does to start: find its mount element and read the state the server rendered it from.

use wasm_bindgen::JsCast;

use cartwheel_core::page::{PageState, STATE_SCRIPT_ID};

/// The element a bundle hydrates (`None` when the page has no such element).
pub fn mount_element(id: &str) -> Option<web_sys::HtmlElement> {
    web_sys::window()?.document()?.get_element_by_id(id)?.dyn_into::<web_sys::HtmlElement>().ok()
}

/// The [`PageState`] the server embedded in the page.
pub fn page_state() -> Result<PageState, String> {
    let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let script = document.get_element_by_id(STATE_SCRIPT_ID).ok_or("the page has no state script")?;
    let text = script.text_content().unwrap_or_default();
    crate::json::parse::<PageState>(&text).ok_or_else(|| "unreadable page state".to_owned())
}

/// Report a bundle that cannot start, in the console and on its mount element (`data-failed`), so a
/// broken deploy is visible instead of silently static.
pub fn report_failure(mfe: &str, mount_id: &str, error: &str) {
    web_sys::console::error_1(&format!("cartwheel {mfe}: cannot start: {error}").into());
    if let Some(el) = mount_element(mount_id) {
        let _ = el.set_attribute("data-failed", error);
    }
}

/// Everything a bundle needs to hydrate: the page state and its mount element; failures are reported.
/// In debug builds panics are also printed to the console with their message; release bundles leave that out
/// (it links the panic formatting machinery) and a panic shows as a `RuntimeError: unreachable` trap.
pub fn prepare(mfe: &str, mount_id: &str) -> Option<(PageState, web_sys::HtmlElement)> {
    #[cfg(debug_assertions)]
    console_error_panic_hook::set_once();
    match (page_state(), mount_element(mount_id)) {
        (Ok(state), Some(element)) => Some((state, element)),
        (Err(e), _) => {
            report_failure(mfe, mount_id, &e);
            None
        }
        (_, None) => {
            report_failure(mfe, mount_id, "no mount element");
            None
        }
    }
}

thread_local! {
    static MOUNTED: std::cell::RefCell<Option<Box<dyn std::any::Any>>> = const { std::cell::RefCell::new(None) };
}

/// Keep the bundle's mounted view (its hydration handle) alive until [`unmount`].
pub fn keep_mounted(handle: Box<dyn std::any::Any>) {
    MOUNTED.with(|m| *m.borrow_mut() = Some(handle));
}

/// Close the bundle's link (socket, timers, listeners) and drop its view.
pub fn unmount() {
    if let Some(link) = crate::CartLink::installed() {
        link.close();
    }
    MOUNTED.with(|m| drop(m.borrow_mut().take()));
}
