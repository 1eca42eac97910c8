//! REST API against the real server: products, sessions, cart mutations, and every error with its JSON body —
//! each time checking that a refused request changed nothing and broadcast nothing.

use crate::support::{Shopper, TestServer, Ws};
use reqwest::header::{RETRY_AFTER, SET_COOKIE};
use reqwest::Method;
use serde_json::Value;

/// Ids from the live catalog, chosen by the property a test needs.
struct Picks {
    plenty: String,
    three_left: String,
    sold_out: String,
    all: Vec<Value>,
}

async fn picks(server: &TestServer) -> Picks {
    let all: Vec<Value> = reqwest::get(server.url("/api/products")).await.unwrap().json().await.unwrap();
    let by_stock = |f: &dyn Fn(u64) -> bool| {
        all.iter().find(|p| f(p["stock"].as_u64().unwrap())).map(|p| p["id"].as_str().unwrap().to_owned()).unwrap()
    };
    Picks { plenty: by_stock(&|s| s >= 100), three_left: by_stock(&|s| s == 3), sold_out: by_stock(&|s| s == 0), all }
}

async fn post(s: &Shopper, body: &str) -> crate::support::Answer {
    s.send(Method::POST, "/api/cart", Some(body), &[]).await
}

/// Nothing changed: same version, and the subscribed socket got no frame.
async fn assert_unchanged(shopper: &Shopper, ws: &mut Ws, version: u64) {
    assert_eq!(shopper.cart().await.version(), version, "a refused request must not change the cart");
    ws.assert_quiet().await;
}

#[tokio::test]
async fn products_are_listed_and_found() {
    let server = TestServer::start().await;
    let p = picks(&server).await;
    assert!(p.all.len() >= 12);
    for product in &p.all {
        for field in ["id", "name", "description", "price_cents", "currency", "stock", "image"] {
            assert!(!product[field].is_null(), "{field} in {product}");
        }
        assert!(product["price_cents"].is_u64(), "integer cents: {product}");
    }
    let one: Value =
        reqwest::get(server.url(&format!("/api/products/{}", p.plenty))).await.unwrap().json().await.unwrap();
    assert_eq!(one["id"], p.plenty.as_str());
    let shopper = server.shopper().await;
    shopper.send(Method::GET, "/api/products/no-such-thing", None, &[]).await.expect_error(404, "not_found");
    shopper.send(Method::GET, "/api/nowhere", None, &[]).await.expect_error(404, "not_found");
    shopper.send(Method::PATCH, "/api/cart", None, &[]).await.expect_error(405, "method_not_allowed");
    let image = reqwest::get(server.url(p.all[0]["image"].as_str().unwrap())).await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/svg+xml");
}

#[tokio::test]
async fn sessions_are_issued_once_and_isolated() {
    let server = TestServer::start().await;
    let p = picks(&server).await;
    let client = reqwest::Client::new();
    let first = client.get(server.url("/api/products")).send().await.unwrap();
    let cookie = first.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: no Secure flag");
    let pair = cookie.split(';').next().unwrap();
    let again = client.get(server.url("/api/cart")).header("cookie", pair).send().await.unwrap();
    assert!(again.headers().get(SET_COOKIE).is_none(), "a valid session keeps its cookie");
    let forged = client.get(server.url("/api/cart")).header("cookie", "cartwheel_session=AAAA").send().await.unwrap();
    assert!(forged.headers().get(SET_COOKIE).is_some(), "a forged cookie is replaced by a fresh session");

    let a = server.shopper().await;
    let b = server.shopper().await;
    assert_ne!(a.cookie, b.cookie);
    a.add(&p.plenty, 2).await;
    assert_eq!(a.cart().await.body["item_count"], 2);
    let b_cart = b.cart().await;
    assert_eq!(b_cart.body["item_count"], 0, "b never sees a's cart");
    assert_eq!(b_cart.version(), 0);
}

#[tokio::test]
async fn secure_cookies_when_configured_for_https() {
    let server = TestServer::start_with(|c| c.https = true).await;
    let response = reqwest::get(server.url("/api/cart")).await.unwrap();
    assert!(response.headers()[SET_COOKIE].to_str().unwrap().ends_with("; Secure"));
}

#[tokio::test]
async fn cart_mutations_compute_the_right_numbers() {
    let server = TestServer::start().await;
    let p = picks(&server).await;
    let s = server.shopper().await;
    let price = |id: &str| p.all.iter().find(|x| x["id"] == id).unwrap()["price_cents"].as_u64().unwrap();

    let body = serde_json::json!({ "product_id": p.plenty }).to_string();
    let a = s.send(Method::POST, "/api/cart", Some(&body), &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.version(), 1);
    assert_eq!(a.body["items"][0]["quantity"], 1, "quantity defaults to 1");

    let a = s.add(&p.plenty, 2).await;
    assert_eq!(a.version(), 2);
    assert_eq!(a.body["items"][0]["quantity"], 3);
    assert_eq!(a.body["items"][0]["line_total_cents"], 3 * price(&p.plenty));
    let a = s.add(&p.three_left, 3).await;
    assert_eq!(a.version(), 3);
    assert_eq!(a.body["item_count"], 6);
    assert_eq!(a.body["total_cents"], 3 * price(&p.plenty) + 3 * price(&p.three_left));
    assert_eq!(a.body["items"][1]["name"].as_str().map(|n| !n.is_empty()), Some(true));
    assert_eq!(a.body["items"][1]["unit_price_cents"], price(&p.three_left));

    let a = s.set(&p.plenty, 5).await;
    assert_eq!((a.version(), a.body["items"][0]["quantity"].as_u64()), (4, Some(5)));
    let a = s.set(&p.plenty, 0).await;
    assert_eq!(a.version(), 5);
    assert_eq!(a.body["items"].as_array().unwrap().len(), 1, "0 removes the line");
    let a = s.remove(&p.three_left).await;
    assert_eq!((a.version(), a.body["item_count"].as_u64()), (6, Some(0)));

    // No-ops answer 200 with the unchanged cart and keep the version.
    let a = s.remove(&p.three_left).await;
    assert_eq!((a.status.as_u16(), a.version()), (200, 6));
    let a = s.clear().await;
    assert_eq!((a.status.as_u16(), a.version()), (200, 6));

    s.add(&p.plenty, 1).await;
    let a = s.clear().await;
    assert_eq!(a.version(), 8);
    assert_eq!(a.body["items"], serde_json::json!([]));
    assert_eq!(a.body["total_cents"], 0);
    assert_eq!(s.cart().await.body, a.body, "GET shows what the mutation answered");
}

#[tokio::test]
async fn every_error_has_its_status_and_json_body_and_changes_nothing() {
    let server = TestServer::start().await;
    let p = picks(&server).await;
    let s = server.shopper().await;
    s.add(&p.three_left, 1).await;
    let (mut ws, v) = Ws::connect_synced(&s).await;
    assert_eq!(v, 1);

    post(&s, "{not json").await.expect_error(400, "invalid_json");
    assert_unchanged(&s, &mut ws, 1).await;
    post(&s, r#"{"product_id": 5, "quantity": 1}"#).await.expect_error(400, "invalid_json");
    post(&s, r#"{"product_id": "x", "quantity": "two"}"#).await.expect_error(400, "invalid_json");
    post(&s, r#"{"product_id": "x", "quantity": 1.5}"#).await.expect_error(400, "invalid_json");
    post(&s, r#"{"quantity": 1}"#).await.expect_error(400, "invalid_json");
    assert_unchanged(&s, &mut ws, 1).await;

    let no_type =
        s.http.post(format!("{}/api/cart", s.base)).header("cookie", &s.cookie).body("{}").send().await.unwrap();
    assert_eq!(no_type.status(), 415);
    assert_eq!(no_type.json::<Value>().await.unwrap()["error"]["code"], "unsupported_media_type");

    s.add("no-such-product", 1).await.expect_error(404, "unknown_product");
    s.set("no-such-product", 1).await.expect_error(404, "unknown_product");
    s.remove("no-such-product").await.expect_error(404, "unknown_product");
    assert_unchanged(&s, &mut ws, 1).await;

    let e = s.add(&p.three_left, 3).await;
    e.expect_error(409, "insufficient_stock");
    assert!(e.body["error"]["message"].as_str().unwrap().contains("only 3"), "{}", e.body);
    s.add(&p.sold_out, 1).await.expect_error(409, "insufficient_stock");
    s.set(&p.three_left, 4).await.expect_error(409, "insufficient_stock");
    assert_unchanged(&s, &mut ws, 1).await;

    // Exactly at the body limit is read (and fails as JSON); one byte over is refused unread.
    let limit = cartwheel_server::config::defaults::MAX_BODY_BYTES;
    let at_limit =
        format!("{{\"product_id\":\"{}\",\"pad\":\"{}\"}}", p.plenty, "x".repeat(limit - 35 - p.plenty.len()));
    let at_limit = format!("{at_limit}{}", " ".repeat(limit - at_limit.len()));
    assert_eq!(at_limit.len(), limit);
    assert_eq!(post(&s, &at_limit).await.status, 200, "a body of exactly the limit is accepted");
    assert_eq!(ws.next_update().await["version"], 2, "the accepted add is broadcast");
    post(&s, &format!("{at_limit} ")).await.expect_error(413, "payload_too_large");
    assert_unchanged(&s, &mut ws, 2).await;

    for q in [0, -1, 100, 1_000_000_000_000] {
        s.add(&p.plenty, q).await.expect_error(422, "quantity_out_of_range");
    }
    for q in [-1, 100] {
        s.set(&p.plenty, q).await.expect_error(422, "quantity_out_of_range");
    }
    assert_eq!(s.set(&p.plenty, 99).await.status, 200, "99 is the largest line");
    assert_eq!(ws.next_update().await["version"], 3);
    s.add(&p.plenty, 1).await.expect_error(422, "quantity_out_of_range");
    assert_unchanged(&s, &mut ws, 3).await;

    let foreign = [("origin", "http://evil.example")];
    s.send(Method::POST, "/api/cart", Some(r#"{"product_id":"x"}"#), &foreign)
        .await
        .expect_error(403, "forbidden_origin");
    s.send(Method::DELETE, "/api/cart", None, &foreign).await.expect_error(403, "forbidden_origin");
    s.send(Method::PUT, &format!("/api/cart/items/{}", p.plenty), Some(r#"{"quantity":1}"#), &foreign)
        .await
        .expect_error(403, "forbidden_origin");
    assert_unchanged(&s, &mut ws, 3).await;
    server.await_metric("cartwheel_origin_refused_total 3").await;
    let own = format!("http://{}", s.addr);
    let ok = s.send(Method::DELETE, &format!("/api/cart/items/{}", p.plenty), None, &[("origin", &own)]).await;
    assert_eq!(ok.status, 200, "the server's own origin may mutate");
    assert_eq!(s.send(Method::GET, "/api/cart", None, &foreign).await.status, 200, "reads are not origin-checked");

    s.send(Method::POST, "/api/cart", Some("{}"), &[("idempotency-key", "")])
        .await
        .expect_error(400, "invalid_idempotency_key");
    let long = "k".repeat(256);
    s.send(Method::DELETE, "/api/cart", None, &[("idempotency-key", &long)])
        .await
        .expect_error(400, "invalid_idempotency_key");
}

#[tokio::test]
async fn line_count_limit_is_configurable_and_enforced_at_its_edge() {
    let server = TestServer::start_with(|c| c.max_lines = 2).await;
    let p = picks(&server).await;
    let s = server.shopper().await;
    let ids: Vec<&str> =
        p.all.iter().filter(|x| x["stock"].as_u64().unwrap() >= 5).map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(s.add(ids[0], 1).await.status, 200);
    assert_eq!(s.add(ids[1], 1).await.status, 200);
    s.add(ids[2], 1).await.expect_error(422, "too_many_lines");
    assert_eq!(s.cart().await.version(), 2);
    assert_eq!(s.add(ids[0], 1).await.status, 200, "raising an existing line is not a new line");
}

#[tokio::test]
async fn configured_extra_origin_is_allowed() {
    let server = TestServer::start_with(|c| c.allowed_origins = vec!["https://shop.example".into()]).await;
    let p = picks(&server).await;
    let s = server.shopper().await;
    let body = serde_json::json!({ "product_id": p.plenty }).to_string();
    let ok = s.send(Method::POST, "/api/cart", Some(&body), &[("origin", "https://shop.example")]).await;
    assert_eq!(ok.status, 200);
    s.send(Method::POST, "/api/cart", Some(&body), &[("origin", "https://other.example")])
        .await
        .expect_error(403, "forbidden_origin");
}

#[tokio::test]
async fn rate_limit_refuses_past_the_burst_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.session_burst = 5;
        c.session_rate_per_sec = 1;
    })
    .await;
    let p = picks(&server).await;
    let s = server.shopper().await; // request 1 of the burst
    for _ in 0..3 {
        assert_eq!(s.cart().await.status, 200);
    }
    assert_eq!(s.add(&p.plenty, 1).await.status, 200, "the 5th request is still within the burst");
    let refused = s.add(&p.plenty, 1).await;
    refused.expect_error(429, "rate_limited");
    let retry: u64 = refused.headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let other = server.shopper().await;
    assert_eq!(other.cart().await.status, 200, "another session has its own bucket");
    assert!(server.metrics().await.contains("cartwheel_http_rate_limited_total 1"));
    // Nothing was applied by the refused request.
    let mut fresh = s.cart().await;
    while fresh.status == 429 {
        // Wait out the bucket as a client would, per Retry-After.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        fresh = s.cart().await;
    }
    assert_eq!(fresh.version(), 1);
}

#[tokio::test]
async fn rate_limits_can_be_switched_off() {
    let server = TestServer::start_with(|c| {
        c.session_burst = 2;
        c.session_rate_per_sec = 1;
        c.no_rate_limit = true;
    })
    .await;
    let s = server.shopper().await;
    for _ in 0..20 {
        assert_eq!(s.cart().await.status, 200);
    }
}

#[tokio::test]
async fn idempotent_retry_is_applied_once() {
    let server = TestServer::start().await;
    let p = picks(&server).await;
    let s = server.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&s).await;
    let body = serde_json::json!({ "product_id": p.plenty, "quantity": 2 }).to_string();
    let key = [("idempotency-key", "add-7f3a")];
    let first = s.send(Method::POST, "/api/cart", Some(&body), &key).await;
    assert_eq!(first.version(), 1);
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(ws.next_update().await["version"], 1);
    let retry = s.send(Method::POST, "/api/cart", Some(&body), &key).await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body, first.body, "the retry gets the first answer");
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(s.cart().await.body["items"][0]["quantity"], 2, "applied once");
    ws.assert_quiet().await;

    let other = serde_json::json!({ "product_id": p.plenty, "quantity": 1 }).to_string();
    s.send(Method::POST, "/api/cart", Some(&other), &key).await.expect_error(422, "idempotency_key_reused");
    // The same key in another session is another key.
    let t = server.shopper().await;
    assert_eq!(t.send(Method::POST, "/api/cart", Some(&body), &key).await.version(), 1);

    // Concurrent duplicates (a double click racing itself): exactly one applies.
    let key2 = [("idempotency-key", "double-click")];
    let (a, b) = tokio::join!(
        s.send(Method::POST, "/api/cart", Some(&body), &key2),
        s.send(Method::POST, "/api/cart", Some(&body), &key2)
    );
    assert_eq!(a.body, b.body);
    assert_eq!(s.cart().await.body["items"][0]["quantity"], 4);
    assert_eq!(s.cart().await.version(), 2);
}

#[tokio::test]
async fn health_and_metrics() {
    let server = TestServer::start().await;
    let health: Value = reqwest::get(server.url("/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let p = picks(&server).await;
    let s = server.shopper().await;
    let (_ws, _) = Ws::connect_synced(&s).await;
    s.add(&p.plenty, 1).await;
    s.add("no-such-product", 1).await;
    let text = server.metrics().await;
    for line in [
        "cartwheel_ws_connections_open 1",
        "cartwheel_ws_connections_total 1",
        r#"cartwheel_cart_mutations_total{outcome="changed"} 1"#,
        r#"cartwheel_cart_mutations_total{outcome="rejected"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} in
{text}"
        );
    }
    for name in [
        "cartwheel_broadcast_latency_seconds_bucket",
        "cartwheel_ws_slow_consumer_events_total",
        "cartwheel_ws_messages_sent_total",
    ] {
        assert!(text.contains(name), "{name} in\n{text}");
    }
}
