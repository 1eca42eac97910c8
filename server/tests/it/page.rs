//! The shop page: server-rendered for the visiting session, with every micro-frontend's real content, and the
//! bundles it loads served under content-hashed, precompressed, long-cached names.

use crate::support::TestServer;
use reqwest::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::Method;
use serde_json::Value;

/// The `<script id="cartwheel-state">` JSON of a page.
fn page_state(html: &str) -> Value {
    let start = html.find(r#"id="cartwheel-state""#).expect("a state script");
    let body = &html[start..];
    let open = body.find('>').unwrap() + 1;
    let close = body.find("</script>").unwrap();
    serde_json::from_str(&body[open..close]).expect("state JSON")
}

#[tokio::test]
async fn first_paint_shows_products_and_this_sessions_cart_without_any_script() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();

    let first = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert_eq!(first.headers()[CACHE_CONTROL], "private, no-store");
    let cookie = first.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = first.text().await.unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..60.min(html.len())]);
    let products: Vec<Value> = reqwest::get(server.url("/api/products")).await.unwrap().json().await.unwrap();
    for p in &products {
        assert!(html.contains(p["name"].as_str().unwrap()), "{} is on the page", p["name"]);
    }
    assert!(html.contains("€34.00"), "prices are formatted from cents");
    assert!(html.contains("Only 3 left") && html.contains("Out of stock"));
    assert!(html.contains(r#"<p class="cart-empty">Your cart is empty"#), "the empty state is shown");
    assert!(html.contains(r#"<div hidden class="cart-body">"#), "no lines, no total");
    assert!(html.contains(r#"data-count="0""#));
    for mount in ["cartwheel-shell", "mfe-product-list", "mfe-shopping-cart"] {
        assert!(html.contains(&format!(r#"id="{mount}""#)), "{mount}");
    }
    assert_eq!(page_state(&html)["cart"]["version"], 0);

    // The same session, after two changes: the page is rendered from its cart.
    let lamp = "walnut-desk-lamp";
    for q in [2, 1] {
        let r = http
            .post(server.url("/api/cart"))
            .header(COOKIE, &cookie)
            .header(CONTENT_TYPE, "application/json")
            .body(format!(r#"{{"product_id":"{lamp}","quantity":{q}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let again = http.get(server.url("/")).header(COOKIE, &cookie).send().await.unwrap();
    assert!(again.headers().get(SET_COOKIE).is_none(), "the session is kept");
    let html = again.text().await.unwrap();
    assert!(html.contains(r#"data-count="3""#), "badge count");
    assert!(html.contains(r#"<p hidden class="cart-empty">"#), "the empty state is hidden");
    assert!(html.contains("€387.00"), "cart total of 3 × €129.00");
    let state = page_state(&html);
    assert_eq!(state["cart"]["version"], 2);
    assert_eq!(state["cart"]["items"][0]["quantity"], 3);

    // Another session sees its own, empty cart.
    let other = http.get(server.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(other.contains(r#"data-count="0""#));
}

#[tokio::test]
async fn page_state_cannot_break_out_of_its_script() {
    let server = TestServer::start().await;
    let html = reqwest::get(server.url("/")).await.unwrap().text().await.unwrap();
    let start = html.find(r#"id="cartwheel-state""#).unwrap();
    let script = &html[start..start + html[start..].find("</script>").unwrap()];
    assert!(!script[script.find('>').unwrap() + 1..].contains('<'));
}

#[tokio::test]
async fn bundles_are_loaded_by_content_hash_compressed_and_cached_for_a_year() {
    let site = tempfile::tempdir().unwrap();
    let glue = "export default async function init() {}\nexport function hydrate() {}\n".repeat(50);
    for (dir, stem) in [("shell", "shell"), ("product-list", "product_list"), ("shopping-cart", "shopping_cart")] {
        let pkg = site.path().join(dir).join("pkg");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join(format!("{stem}.js")), format!("// {stem}\n{glue}")).unwrap();
        std::fs::write(pkg.join(format!("{stem}.wasm")), b"\0asm\x01\0\0\0").unwrap();
    }
    let site_dir = site.path().to_owned();
    let server = TestServer::start_with(move |c| c.site_dir = site_dir).await;
    let html = reqwest::get(server.url("/")).await.unwrap().text().await.unwrap();

    let mut urls = Vec::new();
    for stem in ["shell", "product_list", "shopping_cart"] {
        let at = html.find(&format!("/assets/{stem}-")).unwrap_or_else(|| panic!("{stem} is loaded"));
        let url: String = html[at..].chars().take_while(|c| *c != '"' && *c != '\\').collect();
        assert!(url.ends_with(".js"), "{url}");
        urls.push(url);
    }
    assert!(html.contains("/assets/cartwheel-"), "the stylesheet, by hash");
    let shop = crate::support::Shopper::new(&server).await;
    for url in &urls {
        for (accept, encoding) in [("br, gzip", Some("br")), ("gzip", Some("gzip")), ("identity", None)] {
            let r = shop.send(Method::GET, url, None, &[("accept-encoding", accept)]).await;
            assert_eq!(r.status, 200, "{url}");
            assert_eq!(r.headers.get(CONTENT_ENCODING).map(|v| v.to_str().unwrap()), encoding, "{url} {accept}");
            assert_eq!(r.headers[CACHE_CONTROL], "public, max-age=31536000, immutable");
            assert_eq!(r.headers["vary"], "accept-encoding");
            assert!(r.headers[CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
        }
    }
    shop.send(Method::GET, "/assets/shell-0000000000000000.js", None, &[]).await.expect_error(404, "not_found");
}
