//! What differs between our server and the peer for a load generator: paths, ids and bodies. Everything a
//! scenario measures goes through these, so both are driven by the same code and compared in one run.
//!
//! | | ours | node-ws |
//! |---|---|---|
//! | a cart change | `PUT /api/cart/items/linen-notebook {"quantity":1 or 2}` (sets) | `POST /api/cart {"product_id":1,"quantity":1}` (adds) |
//! | the socket | `/ws?mfe=bench` | `/ws` |
//! | the stormed product | `glass-carafe` | `1` |
//! | liveness | `GET /healthz` | `GET /api/products` (it has no health route) |
//!
//! Both change the cart's version by exactly one per request, both answer `PATCH /api/service/products/{id}
//! {"stock"}` with the product and its new catalog revision, and both send `PRODUCT_UPDATE` frames carrying
//! `"revision"`.

use crate::process::{Flavor, SERVICE_TOKEN};

impl Flavor {
    /// A cart change whose version is `version` (1, 2, …) of its cart.
    pub fn mutation(self, http: &reqwest::Client, base: &str, cookie: &str, version: usize) -> reqwest::RequestBuilder {
        let (request, body) = match self {
            Flavor::Ours => {
                let quantity = if version % 2 == 1 { 1 } else { 2 };
                (http.put(format!("{base}/api/cart/items/linen-notebook")), format!(r#"{{"quantity":{quantity}}}"#))
            }
            Flavor::NodeWs => (http.post(format!("{base}/api/cart")), r#"{"product_id":1,"quantity":1}"#.to_owned()),
        };
        request.header("cookie", cookie).header("content-type", "application/json").body(body)
    }

    /// The WebSocket URL at `addr` (`host:port`).
    pub fn socket_url(self, addr: &str) -> String {
        match self {
            Flavor::Ours => format!("ws://{addr}/ws?mfe=bench"),
            Flavor::NodeWs => format!("ws://{addr}/ws"),
        }
    }

    /// The product the storm and broadcast scenarios change.
    pub fn stormed_product(self) -> &'static str {
        match self {
            Flavor::Ours => "glass-carafe",
            Flavor::NodeWs => "1",
        }
    }

    /// Whether a `PRODUCT_UPDATE` frame is about the stormed product (read without parsing the frame).
    pub fn is_stormed_product(self, frame: &str) -> bool {
        match self {
            Flavor::Ours => frame.contains(r#""id":"glass-carafe""#),
            Flavor::NodeWs => frame.contains(r#""data":{"id":1,"#),
        }
    }

    /// Set the stormed product's stock; the answer carries its new revision.
    pub fn set_stock(self, http: &reqwest::Client, base: &str, stock: u32) -> reqwest::RequestBuilder {
        http.patch(format!("{base}/api/service/products/{}", self.stormed_product()))
            .header("authorization", format!("Bearer {SERVICE_TOKEN}"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"stock":{stock}}}"#))
    }

    /// The cheapest request that proves the server's loop answers.
    pub fn liveness_url(self, base: &str) -> String {
        match self {
            Flavor::Ours => format!("{base}/healthz"),
            Flavor::NodeWs => format!("{base}/api/products"),
        }
    }
}

/// The first number after `"field":` in `text`, read without parsing the frame.
pub fn number_after(text: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let rest = &text[text.find(&key)? + key.len()..];
    let digits = &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())];
    digits.parse().ok()
}

/// The version of a `CART_UPDATE` frame (both servers put `"version"` right after the type).
pub fn cart_version(text: &str) -> Option<u64> {
    text.starts_with(r#"{"type":"CART_UPDATE""#).then(|| number_after(text, "version")).flatten()
}

/// The revision of a `PRODUCT_UPDATE` frame.
pub fn product_revision(text: &str) -> Option<u64> {
    text.starts_with(r#"{"type":"PRODUCT_UPDATE""#).then(|| number_after(text, "revision")).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions_and_revisions_of_both_servers() {
        assert_eq!(cart_version(r#"{"type":"CART_UPDATE","version":42,"data":{"version":42}}"#), Some(42));
        assert_eq!(cart_version(r#"{"type":"PONG","id":1,"server_time_ms":5}"#), None);
        let ours =
            r#"{"type":"PRODUCT_UPDATE","data":{"id":"glass-carafe","name":"x","stock":9,"revision":17,"epoch":"ab"}}"#;
        let peer = r#"{"type":"PRODUCT_UPDATE","data":{"id":1,"name":"x","price_cents":2490,"stock":9,"revision":17}}"#;
        assert_eq!(product_revision(ours), Some(17));
        assert_eq!(product_revision(peer), Some(17));
        assert!(Flavor::Ours.is_stormed_product(ours) && Flavor::NodeWs.is_stormed_product(peer));
        assert!(!Flavor::NodeWs.is_stormed_product(&peer.replace(r#""id":1,"#, r#""id":12,"#)));
    }
}
