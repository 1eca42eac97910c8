//! The cart's forms without JavaScript (`POST /cart/…`, form-encoded): the JSON API's changes with the same
//! validation, Origin check and idempotency, answered with `303 See Other` back to the page, which shows the
//! outcome in its own words.

use crate::support::{quantity, Shopper, TestServer};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN};
use reqwest::StatusCode;

/// A browser's form post (no redirects followed): the status and the `Location`.
async fn post_form(
    shopper: &Shopper,
    server: &TestServer,
    path: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let body = serde_urlencoded::to_string(fields).unwrap();
    let response = http
        .post(server.url(path))
        .header(COOKIE, &shopper.cookie)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
    (response.status(), location)
}

async fn page(shopper: &Shopper, server: &TestServer, path: &str, language: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(server.url(path)).header(COOKIE, &shopper.cookie);
    if let Some(language) = language {
        request = request.header("accept-language", language);
    }
    request.send().await.unwrap().text().await.unwrap()
}

async fn quantity_of(shopper: &Shopper, product: &str) -> u64 {
    quantity(&shopper.cart().await.body, product)
}

#[tokio::test]
async fn every_cart_form_changes_the_cart_and_answers_303_back_to_the_page() {
    let server = TestServer::start().await;
    let shopper = Shopper::new(&server).await;
    let mug = "stoneware-mug";
    let answer = post_form(&shopper, &server, "/cart/add", &[("product_id", mug), ("quantity", "2")]).await;
    assert_eq!(answer, (StatusCode::SEE_OTHER, format!("/#product-{mug}")));
    assert_eq!(quantity_of(&shopper, mug).await, 2);

    let to_cart = (StatusCode::SEE_OTHER, "/#mfe-shopping-cart".to_owned());
    assert_eq!(post_form(&shopper, &server, "/cart/set", &[("product_id", mug), ("quantity", "5")]).await, to_cart);
    assert_eq!(quantity_of(&shopper, mug).await, 5);
    assert_eq!(post_form(&shopper, &server, "/cart/adjust", &[("product_id", mug), ("delta", "-1")]).await, to_cart);
    assert_eq!(quantity_of(&shopper, mug).await, 4);
    assert_eq!(post_form(&shopper, &server, "/cart/remove", &[("product_id", mug)]).await, to_cart);
    assert_eq!(quantity_of(&shopper, mug).await, 0);

    post_form(&shopper, &server, "/cart/add", &[("product_id", "linen-notebook"), ("quantity", "1")]).await;
    assert_eq!(post_form(&shopper, &server, "/cart/clear", &[]).await, to_cart);
    assert_eq!(shopper.cart().await.body["items"].as_array().unwrap().len(), 0);

    // Checkout: the page it redirects to shows the order, read back from the store.
    post_form(&shopper, &server, "/cart/add", &[("product_id", "glass-carafe"), ("quantity", "2")]).await;
    let total = shopper.cart().await.body["total_cents"].to_string();
    let (status, location) = post_form(&shopper, &server, "/cart/checkout", &[("expected_total_cents", &total)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let order = location.strip_prefix("/?order=").and_then(|l| l.strip_suffix("#mfe-shopping-cart")).unwrap();
    assert!(order.starts_with("ord_"), "{location}");
    let html = page(&shopper, &server, &format!("/?order={order}"), None).await;
    assert!(html.contains("Thank you! Your order is placed.") && html.contains(order), "the confirmation");
    assert!(html.contains("2 × Glass Carafe"), "its lines");
    // Another session cannot read it by its id, and an id that names nothing shows nothing.
    let stranger = Shopper::new(&server).await;
    let html = page(&stranger, &server, &format!("/?order={order}"), None).await;
    assert!(!html.contains(order) && !html.contains("2 × Glass Carafe"), "not another session's order");
    let html = page(&shopper, &server, "/?order=ord_00000000000000000000", None).await;
    assert!(!html.contains("ord_00000000000000000000"));
}

#[tokio::test]
async fn a_refusal_redirects_with_its_code_and_the_page_says_it_in_its_own_words() {
    let server = TestServer::start().await;
    let shopper = Shopper::new(&server).await;
    let (status, location) =
        post_form(&shopper, &server, "/cart/add", &[("product_id", "linen-notebook"), ("quantity", "100")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/?error=quantity_out_of_range&product=linen-notebook#product-linen-notebook");
    let html = page(&shopper, &server, &location, None).await;
    assert!(html.contains("Enter a whole number of items, from 1 to 99."), "the words on the card");

    let (_, location) =
        post_form(&shopper, &server, "/cart/add", &[("product_id", "linen-notebook"), ("quantity", "two")]).await;
    assert!(location.starts_with("/?error=quantity_out_of_range&product=linen-notebook"), "{location}");
    let (_, location) = post_form(&shopper, &server, "/cart/checkout", &[]).await;
    assert_eq!(location, "/?error=empty_cart#mfe-shopping-cart");
    // Out of stock: `brass-pen` is sold out in the built-in catalog.
    let (_, location) =
        post_form(&shopper, &server, "/cart/add", &[("product_id", "brass-pen"), ("quantity", "1")]).await;
    assert!(location.starts_with("/?error=insufficient_stock&product=brass-pen"), "{location}");
    assert_eq!(shopper.cart().await.body["items"].as_array().unwrap().len(), 0, "nothing was stored");

    // Words come from the code only: text in the URL is never shown.
    let html = page(&shopper, &server, "/?error=%3Cb%3EPay+here%3C%2Fb%3E&product=nope", None).await;
    assert!(!html.contains("Pay here") && !html.contains("<b>"), "no text from the URL");
    assert!(html.contains("The shop could not save that just now."), "an unknown code gets the general words");
}

#[tokio::test]
async fn a_form_posted_twice_with_its_key_changes_the_cart_once() {
    let server = TestServer::start().await;
    let shopper = Shopper::new(&server).await;
    // The page renders a key into every form.
    let html = page(&shopper, &server, "/", None).await;
    let marker = r#"name="idempotency_key" value=""#;
    let at = html.find(marker).expect("a key in the forms") + marker.len();
    let key = &html[at..at + html[at..].find('"').unwrap()];
    assert!(key.starts_with("form-") && key.contains("-add-"), "{key}");
    let fields = [("product_id", "glass-carafe"), ("quantity", "1"), ("idempotency_key", key)];
    for _ in 0..2 {
        assert_eq!(post_form(&shopper, &server, "/cart/add", &fields).await.0, StatusCode::SEE_OTHER);
    }
    assert_eq!(quantity_of(&shopper, "glass-carafe").await, 1, "applied once");
    // The same key for another request is refused, and said so.
    let other = [("product_id", "glass-carafe"), ("quantity", "3"), ("idempotency_key", key)];
    let (_, location) = post_form(&shopper, &server, "/cart/add", &other).await;
    assert!(location.starts_with("/?error=idempotency_key_reused"), "{location}");
    assert_eq!(quantity_of(&shopper, "glass-carafe").await, 1);
    // A fresh rendering has fresh keys.
    let again = page(&shopper, &server, "/", None).await;
    assert!(!again.contains(key));
}

#[tokio::test]
async fn forms_are_guarded_like_the_api() {
    let server = TestServer::start().await;
    let shopper = Shopper::new(&server).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = |request: reqwest::RequestBuilder| {
        request.header(COOKIE, &shopper.cookie).header(CONTENT_TYPE, "application/x-www-form-urlencoded")
    };
    // Another site's form is refused before anything runs.
    let foreign = form(http.post(server.url("/cart/add")))
        .header(ORIGIN, "https://evil.example")
        .body("product_id=glass-carafe&quantity=1")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    // The page's own origin passes.
    let own = form(http.post(server.url("/cart/add")))
        .header(ORIGIN, server.url("").trim_end_matches('/'))
        .body("product_id=glass-carafe&quantity=1")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::SEE_OTHER);
    assert_eq!(quantity_of(&shopper, "glass-carafe").await, 1);
    // Not a form: the typed JSON error, naming what to send.
    let json = http
        .post(server.url("/cart/add"))
        .header(COOKIE, &shopper.cookie)
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"product_id":"glass-carafe","quantity":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: serde_json::Value = json.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    assert!(body["error"]["message"].as_str().unwrap().contains("application/x-www-form-urlencoded"));
    // Over the body limit: 413, typed.
    let big = form(http.post(server.url("/cart/add")))
        .body(format!("product_id={}", "x".repeat(64 * 1024 + 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // An action that does not exist.
    let unknown = form(http.post(server.url("/cart/teleport"))).body("").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(quantity_of(&shopper, "glass-carafe").await, 1, "nothing else changed");
}

#[tokio::test]
async fn prices_follow_the_shoppers_language_on_the_page() {
    let server = TestServer::start().await;
    let shopper = Shopper::new(&server).await;
    // 30 pour-overs: a total past a thousand, to see the thousands separator.
    for (product, quantity) in [("ceramic-pour-over", 30)] {
        assert_eq!(shopper.add(product, quantity).await.status, StatusCode::OK);
    }
    let cents = shopper.cart().await.body["total_cents"].as_u64().unwrap();
    assert!(cents >= 100_000, "{cents}");
    let total = cartwheel_core::Cents(cents);
    for (language, locale) in [
        (Some("de-DE,de;q=0.9,en;q=0.8"), cartwheel_core::Locale::De),
        (Some("fr-CH, fr;q=0.9"), cartwheel_core::Locale::Fr),
        (Some("nl"), cartwheel_core::Locale::Nl),
        (Some("ja"), cartwheel_core::Locale::En),
        (None, cartwheel_core::Locale::En),
    ] {
        let html = page(&shopper, &server, "/", language).await;
        let shown = total.format_in("EUR", locale);
        assert!(html.contains(&shown), "{language:?}: {shown}");
        assert!(html.contains(&format!(r#""locale":"{}""#, locale.tag())), "{language:?}: embedded for the bundles");
    }
    let de = page(&shopper, &server, "/", Some("de")).await;
    assert!(de.contains("1.020,00\u{a0}€"), "German separators");
}
