//! The contract between the server-rendered page and the bundles that hydrate it: which element each
//! micro-frontend owns, and the JSON the server embeds so a bundle starts from exactly what was rendered.

use serde::{Deserialize, Serialize};

use crate::cart::Cart;
use crate::catalog::Product;
use crate::reconnect::ReconnectPolicy;
use std::time::Duration;

/// Id of the `<script type="application/json">` that holds the [`PageState`].
pub const STATE_SCRIPT_ID: &str = "cartwheel-state";

/// Every bundle: its name (cargo-leptos project, site folder, connection reports) and cargo-leptos's
/// `output-name` (the stem of its `.js` and `.wasm`), in the order the page starts them.
pub const BUNDLES: [(&str, &str); 3] =
    [("shell", "shell"), ("product-list", "product_list"), ("shopping-cart", "shopping_cart")];

/// The element each bundle hydrates: the server renders a bundle's view as this element's only content.
pub mod mount {
    pub const SHELL: &str = "cartwheel-shell";
    pub const PRODUCT_LIST: &str = "mfe-product-list";
    pub const SHOPPING_CART: &str = "mfe-shopping-cart";

    /// The mount element of bundle `name` (as in [`super::BUNDLES`]).
    pub fn of(name: &str) -> Option<&'static str> {
        match name {
            "shell" => Some(SHELL),
            "product-list" => Some(PRODUCT_LIST),
            "shopping-cart" => Some(SHOPPING_CART),
            _ => None,
        }
    }
}

/// What the server rendered the page from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageState {
    pub products: Vec<Product>,
    pub cart: Cart,
    /// How the bundles retry a lost WebSocket (the operator may tune it; tests shorten it).
    pub reconnect: ReconnectSettings,
    /// How the bundles notice a dead one and poll meanwhile.
    #[serde(default)]
    pub timings: crate::link::LinkTimings,
    /// Shoppers here and carts holding each product, as the server last counted: for the server's rendering
    /// only (not embedded: the bundles keep the rendered labels current from `PRESENCE` frames, and reading it
    /// would link a map deserializer into each).
    #[serde(skip)]
    pub presence: crate::presence::Presence,
    /// The locale prices are written in (from the request's `Accept-Language`).
    #[serde(default)]
    pub locale: crate::money::Locale,
    /// How long the views' transient offers stay.
    #[serde(default)]
    pub views: ViewTimings,
    /// What the form this page answers (a `303` after a form post without JavaScript) did, to show on it.
    #[serde(default, skip_serializing_if = "FormOutcome::is_empty")]
    pub outcome: FormOutcome,
    /// A fresh value per rendering that the forms' `Idempotency-Key`s derive from ([`PageState::form_key`]):
    /// the same form posted twice (a double click, the back button) changes the cart once. The server's
    /// rendering only: a bundle's own calls make their own keys.
    #[serde(skip)]
    pub form_nonce: String,
}

/// How long the views' transient offers stay, in milliseconds (tunable; the tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewTimings {
    /// "Undo" after Remove or "Clear cart".
    pub undo_ms: u64,
    /// A notice's toast (its timer waits while the pointer or focus is on the toasts).
    pub toast_ms: u64,
}

impl ViewTimings {
    pub const DEFAULT_UNDO_MS: u64 = 5_000;
    pub const DEFAULT_TOAST_MS: u64 = 8_000;
}

impl Default for ViewTimings {
    fn default() -> Self {
        ViewTimings { undo_ms: Self::DEFAULT_UNDO_MS, toast_ms: Self::DEFAULT_TOAST_MS }
    }
}

/// A form post's result, shown on the page it was redirected to (`GET /?error=…&product=…` or `?order=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormOutcome {
    /// Why the change was refused, in words (from its error code: words from a URL are never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The product whose form it was (its card shows the error), or `None` for the cart's forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The order just placed, read back from the store (an id that is not this session's shows nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<crate::order::Order>,
}

impl FormOutcome {
    pub fn is_empty(&self) -> bool {
        self.error.is_none() && self.order.is_none()
    }

    /// The error to show on `product`'s card (`Some`) or in the cart (`None`).
    pub fn error_for(&self, product: Option<&str>) -> Option<String> {
        self.error.clone().filter(|_| self.product.as_deref() == product)
    }
}

/// The form actions (`POST /cart/<action>`, `application/x-www-form-urlencoded`) that work without JavaScript.
pub mod form {
    pub const ADD: &str = "/cart/add";
    pub const SET: &str = "/cart/set";
    pub const ADJUST: &str = "/cart/adjust";
    pub const REMOVE: &str = "/cart/remove";
    pub const CLEAR: &str = "/cart/clear";
    pub const CHECKOUT: &str = "/cart/checkout";
    /// The inputs' names.
    pub const PRODUCT: &str = "product_id";
    pub const QUANTITY: &str = "quantity";
    pub const DELTA: &str = "delta";
    pub const KEY: &str = "idempotency_key";
    pub const EXPECTED_TOTAL: &str = "expected_total_cents";

    /// The `Idempotency-Key` of the form for `action` (one of the paths above) and `product` (`""` for the
    /// cart's own forms) on the rendering with `nonce`; `None` without a nonce (in a bundle).
    pub fn key(nonce: &str, action: &str, product: &str) -> Option<String> {
        let action = action.rsplit('/').next().unwrap_or(action);
        (!nonce.is_empty()).then(|| format!("form-{nonce}-{action}-{product}"))
    }
}

/// The tunable part of [`crate::ReconnectPolicy`], in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconnectSettings {
    pub base_ms: u64,
    pub max_ms: u64,
    /// See [`ReconnectPolicy::restart_spread`].
    #[serde(default = "ReconnectSettings::default_restart_spread_ms")]
    pub restart_spread_ms: u64,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        let p = ReconnectPolicy::default();
        ReconnectSettings {
            base_ms: p.base.as_millis() as u64,
            max_ms: p.max.as_millis() as u64,
            restart_spread_ms: Self::default_restart_spread_ms(),
        }
    }
}

impl ReconnectSettings {
    fn default_restart_spread_ms() -> u64 {
        ReconnectPolicy::DEFAULT_RESTART_SPREAD.as_millis() as u64
    }

    /// The policy, with the default minimum delay and healthy period; a base above the cap is capped.
    pub fn policy(self) -> ReconnectPolicy {
        let max = Duration::from_millis(self.max_ms.max(1));
        let base = Duration::from_millis(self.base_ms.max(1)).min(max);
        ReconnectPolicy {
            base,
            max,
            min_delay: ReconnectPolicy::DEFAULT_MIN_DELAY.min(base),
            restart_spread: Duration::from_millis(self.restart_spread_ms),
            ..ReconnectPolicy::default()
        }
    }
}

impl PageState {
    /// JSON safe to place inside a `<script>` element: `<`, `>` and `&` are escaped, so no `</script>` or
    /// `<!--` in a product text can end or change the element.
    pub fn to_script_json(&self) -> String {
        // Plain data with string keys always serialises.
        let json = serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned());
        json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
    }

    /// The `Idempotency-Key` of the form for `action` (and `product`) on this rendering; `None` in a bundle,
    /// whose own calls make their own keys (hydration keeps the server's value in place).
    pub fn form_key(&self, action: &str, product: &str) -> Option<String> {
        form::key(&self.form_nonce, action, product)
    }

    /// Read it back (what a bundle does with the script element's text).
    pub fn from_script_json(text: &str) -> Result<PageState, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ProductId;
    use crate::money::Cents;

    #[test]
    fn script_json_cannot_close_its_element_and_round_trips() {
        let product = Product {
            id: ProductId::from("mug"),
            name: "Mug </script><script>alert(1)</script> & co".into(),
            description: "<!-- x -->".into(),
            price_cents: Cents(900),
            currency: "EUR".into(),
            stock: 3,
            image: "/images/mug.svg".into(),
            revision: 0,
            epoch: Default::default(),
        };
        let state = PageState {
            products: vec![product],
            cart: Cart::empty("EUR"),
            reconnect: ReconnectSettings::default(),
            timings: Default::default(),
            presence: Default::default(),
            locale: crate::money::Locale::De,
            views: ViewTimings::default(),
            outcome: FormOutcome { error: Some("<b>".into()), product: None, order: None },
            form_nonce: String::new(),
        };
        let json = state.to_script_json();
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'), "{json}");
        assert_eq!(PageState::from_script_json(&json).unwrap(), state);
    }

    #[test]
    fn form_keys_are_per_rendering_action_and_product_and_absent_in_a_bundle() {
        let key = |nonce, action, product| form::key(nonce, action, product);
        assert_eq!(key("ab12", form::ADD, "mug").as_deref(), Some("form-ab12-add-mug"));
        assert_ne!(key("ab12", form::ADD, "mug"), key("ab12", form::SET, "mug"));
        assert_ne!(key("ab12", form::ADD, "mug"), key("cd34", form::ADD, "mug"));
        assert_eq!(key("", form::ADD, "mug"), None, "a bundle makes its own keys");
        let long = "p".repeat(64);
        assert!(key("0123456789abcdef", form::CHECKOUT, &long).is_some_and(|k| k.len() <= 255), "fits the key limit");
    }

    #[test]
    fn a_form_outcome_shows_its_error_where_its_form_was() {
        let on_card = FormOutcome { error: Some("No.".into()), product: Some("mug".into()), order: None };
        assert_eq!(on_card.error_for(Some("mug")).as_deref(), Some("No."));
        assert_eq!(on_card.error_for(Some("pen")), None);
        assert_eq!(on_card.error_for(None), None, "not in the cart");
        let in_cart = FormOutcome { product: None, ..on_card.clone() };
        assert_eq!(in_cart.error_for(None).as_deref(), Some("No."));
        assert!(FormOutcome::default().is_empty() && !in_cart.is_empty());
        assert_eq!(mount::of("shopping-cart"), Some(mount::SHOPPING_CART));
        assert_eq!(mount::of("other"), None);
    }

    #[test]
    fn reconnect_settings_make_a_sane_policy() {
        let p = ReconnectSettings { base_ms: 100, max_ms: 800, ..ReconnectSettings::default() }.policy();
        assert_eq!(
            (p.base, p.max, p.min_delay),
            (Duration::from_millis(100), Duration::from_millis(800), Duration::from_millis(100))
        );
        let inverted = ReconnectSettings { base_ms: 5000, max_ms: 1000, ..ReconnectSettings::default() }.policy();
        assert_eq!(inverted.base, inverted.max, "a base above the cap is capped");
        assert_eq!(ReconnectSettings::default().policy(), ReconnectPolicy::default());
    }
}
