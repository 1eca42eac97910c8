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
        };
        let json = state.to_script_json();
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'), "{json}");
        assert_eq!(PageState::from_script_json(&json).unwrap(), state);
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
