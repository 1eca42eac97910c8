//! Versions that cannot regress unnoticed and changes that cannot overwrite what a tab has not seen: epochs
//! on every cart and product, `If-Match` (412 with the current cart), relative `PATCH {"delta"}`, and
//! checkout at the prices shown (409 `price_changed`).

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{Answer, Shopper, TestServer, Ws};

const TOKEN: &str = "versions-service-token-0001";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.service_tokens = vec![TOKEN.to_owned()];
        c.no_rate_limit = true;
    })
    .await
}

async fn products(server: &TestServer) -> Vec<Value> {
    reqwest::get(server.url("/api/products")).await.unwrap().json().await.unwrap()
}

async fn plenty(server: &TestServer) -> String {
    let all = products(server).await;
    all.iter().find(|p| p["stock"].as_u64().unwrap() >= 100).unwrap()["id"].as_str().unwrap().to_owned()
}

fn etag(a: &Answer) -> String {
    a.headers["etag"].to_str().unwrap().to_owned()
}

async fn delta(s: &Shopper, product: &str, delta: i64) -> Answer {
    let body = json!({ "delta": delta }).to_string();
    s.send(Method::PATCH, &format!("/api/cart/items/{product}"), Some(&body), &[]).await
}

async fn set_if(s: &Shopper, product: &str, quantity: i64, stamp: &str) -> Answer {
    let body = json!({ "quantity": quantity }).to_string();
    s.send(Method::PUT, &format!("/api/cart/items/{product}"), Some(&body), &[("if-match", stamp)]).await
}

async fn set_price(server: &TestServer, product: &str, cents: u64) {
    let response = reqwest::Client::new()
        .patch(server.url(&format!("/api/service/products/{product}")))
        .bearer_auth(TOKEN)
        .json(&json!({ "price_cents": cents }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn carts_and_products_carry_their_epoch_and_a_cart_answers_its_stamp_as_etag() {
    let server = server().await;
    let id = plenty(&server).await;
    let (alice, bob) = (server.shopper().await, server.shopper().await);
    let a = alice.add(&id, 1).await;
    let epoch = a.body["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 16, "{}", a.body);
    assert!(epoch.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(etag(&a), format!("\"{epoch}.1\""));
    assert_eq!(etag(&alice.cart().await), format!("\"{epoch}.1\""), "GET answers the same stamp");
    let b = bob.cart().await;
    assert_ne!(b.body["epoch"], a.body["epoch"], "another session's cart is another history");
    let (mut ws, _) = Ws::connect_synced(&alice).await;
    alice.add(&id, 1).await;
    let update = ws.next_update().await;
    assert_eq!(update["data"]["epoch"], epoch.as_str(), "frames carry it too");
    let store_epoch = products(&server).await[0]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(store_epoch.len(), 16);
    assert!(products(&server).await.iter().all(|p| p["epoch"] == store_epoch.as_str()));
}

#[tokio::test]
async fn a_restart_keeps_the_epoch_and_a_fresh_database_has_a_new_one() {
    let mut first = server().await;
    let id = plenty(&first).await;
    let shopper = first.shopper().await;
    let before = shopper.add(&id, 1).await.body["epoch"].clone();
    let store_before = products(&first).await[0]["epoch"].clone();
    let dir = first.take_dir();
    let db = first.db.clone();
    first.stop().await;

    let again = TestServer::start_on(&db, |_| {}).await;
    let same = shopper.on(&again).cart().await;
    assert_eq!(same.body["epoch"], before, "same database: same history");
    assert_eq!(same.version(), 1);
    assert_eq!(products(&again).await[0]["epoch"], store_before);
    again.stop().await;
    drop(dir);

    // A restored or replaced database: the same cookie now sees version 0 — in a new epoch, which clients
    // take whatever the version they showed.
    let fresh = TestServer::start_with(|c| c.session_secret = Vec::new()).await;
    assert_ne!(products(&fresh).await[0]["epoch"], store_before, "a fresh database starts a new history");
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_the_current_cart_and_changes_nothing() {
    let server = server().await;
    let id = plenty(&server).await;
    let (tab1, tab2) = {
        let s = server.shopper().await;
        let other = s.on(&server);
        (s, other)
    };
    let seen = tab1.add(&id, 1).await;
    let stale = etag(&seen);
    tab2.add(&id, 1).await; // another tab moves the cart on: version 2, quantity 2
    let (mut ws, v) = Ws::connect_synced(&tab1).await;
    assert_eq!(v, 2);

    let refused = set_if(&tab1, &id, 5, &stale).await;
    refused.expect_error(412, "version_mismatch");
    assert_eq!(refused.body["error"]["cart"]["version"], 2, "the current cart comes with it: {}", refused.body);
    assert_eq!(refused.body["error"]["cart"]["items"][0]["quantity"], 2);
    for (method, path) in [(Method::DELETE, format!("/api/cart/items/{id}")), (Method::DELETE, "/api/cart".into())] {
        tab1.send(method, &path, None, &[("if-match", &stale)]).await.expect_error(412, "version_mismatch");
    }
    tab1.send(Method::POST, "/api/cart/checkout", None, &[("if-match", &stale)])
        .await
        .expect_error(412, "version_mismatch");
    assert_eq!(tab1.cart().await.version(), 2, "nothing changed");
    ws.assert_quiet().await;

    let current = etag(&tab1.cart().await);
    let ok = set_if(&tab1, &id, 5, &current).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["items"][0]["quantity"], 5);
    assert_eq!(ws.next_update().await["version"], 3);

    for junk in ["*", "\"abc.1\"", "3", "\"0123456789abcdef.1\", \"0123456789abcdef.2\""] {
        set_if(&tab1, &id, 6, junk).await.expect_error(400, "invalid_field");
    }
    assert_eq!(tab1.cart().await.version(), 3);
}

#[tokio::test]
async fn relative_changes_from_two_tabs_both_count_and_deltas_have_inclusive_limits() {
    let server = server().await;
    let id = plenty(&server).await;
    let s = server.shopper().await;
    let other_tab = s.on(&server);
    s.add(&id, 1).await;
    // Both tabs show quantity 1 and press "+" at the same moment.
    let (a, b) = tokio::join!(delta(&s, &id, 1), delta(&other_tab, &id, 1));
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    let cart = s.cart().await;
    assert_eq!(cart.body["items"][0]["quantity"], 3, "both count: {}", cart.body);
    assert_eq!(cart.version(), 3);

    for refused in [0, 100, -100, i64::MIN, i64::MAX] {
        delta(&s, &id, refused).await.expect_error(422, "quantity_out_of_range");
    }
    assert_eq!(s.cart().await.version(), 3, "refused deltas change nothing");
    assert_eq!(delta(&s, &id, 96).await.body["items"][0]["quantity"], 99, "+96 reaches the line limit exactly");
    delta(&s, &id, 1).await.expect_error(422, "quantity_out_of_range");
    assert_eq!(delta(&s, &id, -99).await.body["items"], json!([]), "−99 from 99: the line goes");
    s.add(&id, 2).await;
    assert_eq!(delta(&s, &id, -5).await.body["items"], json!([]), "below zero clamps to 0, which removes");
    let unchanged = delta(&s, &id, -1).await;
    assert_eq!(unchanged.status, 200, "lowering an absent line changes nothing");
    delta(&s, "no-such-product", 1).await.expect_error(404, "unknown_product");
}

#[tokio::test]
async fn checkout_at_a_price_the_shopper_did_not_see_is_refused_and_buys_nothing() {
    let server = server().await;
    let id = plenty(&server).await;
    let s = server.shopper().await;
    let shown = s.add(&id, 2).await;
    let total = shown.body["total_cents"].as_u64().unwrap();
    let stock = |all: Vec<Value>| all.iter().find(|p| p["id"] == id.as_str()).unwrap()["stock"].as_u64().unwrap();
    let stock_before = stock(products(&server).await);
    let unit = total / 2;
    set_price(&server, &id, unit + 100).await;

    let body = json!({ "expected_total_cents": total }).to_string();
    let refused = s.send(Method::POST, "/api/cart/checkout", Some(&body), &[]).await;
    refused.expect_error(409, "price_changed");
    assert_eq!(refused.body["error"]["cart"]["total_cents"], total + 200, "re-priced: {}", refused.body);
    assert_eq!(stock(products(&server).await), stock_before, "nothing decremented");
    assert_eq!(s.cart().await.body["items"][0]["quantity"], 2, "nothing bought");

    let body = json!({ "expected_total_cents": total + 200 }).to_string();
    let bought = s.send(Method::POST, "/api/cart/checkout", Some(&body), &[]).await;
    assert_eq!(bought.status, 201, "{}", bought.body);
    assert_eq!(bought.body["order"]["total_cents"], total + 200);
    assert_eq!(stock(products(&server).await), stock_before - 2);
    s.send(Method::POST, "/api/cart/checkout", Some("{\"expected_total_cents\":\"x\"}"), &[])
        .await
        .expect_error(400, "invalid_json");
}
