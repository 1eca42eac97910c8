//! JSON in the browser through the browser's own `JSON.parse`/`JSON.stringify` and serde-wasm-bindgen, so the
//! bundles carry no JSON parser of their own (serde_json led twiggy's list of dependencies by size).

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::JsValue;

/// Parse JSON text into `T`.
pub fn parse<T: DeserializeOwned>(text: &str) -> Option<T> {
    let value = js_sys::JSON::parse(text).ok()?;
    from_js(value)
}

/// A JS value (e.g. an event's `detail` or a `fetch` body) into `T`.
pub fn from_js<T: DeserializeOwned>(value: JsValue) -> Option<T> {
    serde_wasm_bindgen::from_value(value).ok()
}

/// `T` as a plain JS object (objects for maps, numbers for integers), e.g. an event's `detail`.
pub fn to_js<T: Serialize>(value: &T) -> Option<JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).ok()
}

/// `T` as JSON text.
pub fn stringify<T: Serialize>(value: &T) -> Option<String> {
    js_sys::JSON::stringify(&to_js(value)?).ok().map(String::from)
}
