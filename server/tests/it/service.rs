//! The service API (bearer tokens, product changes, notices) and checkout, against the real server over real
//! sockets: who may call it, what it refuses, which connections hear about it, and that checkouts racing for the
//! last units never oversell.

use std::sync::Arc;

use crate::support::{Answer, Shopper, TestServer, Ws};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN: &str = "service-token-for-tests-0001";
const OTHER_TOKEN: &str = "another-service-token-0002";

async fn server() -> TestServer {
    TestServer::start_with(|c| c.service_tokens = vec![TOKEN.to_owned(), OTHER_TOKEN.to_owned()]).await
}

/// A service call with `token` (none: no Authorization header).
async fn call(server: &TestServer, method: Method, path: &str, token: Option<&str>, body: Value) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

async fn patch_product(server: &TestServer, id: &str, body: Value) -> Answer {
    call(server, Method::PATCH, &format!("/api/service/products/{id}"), Some(TOKEN), body).await
}

async fn notify(server: &TestServer, body: Value) -> Answer {
    call(server, Method::POST, "/api/service/notify", Some(TOKEN), body).await
}

async fn product(server: &TestServer, id: &str) -> Value {
    reqwest::get(server.url(&format!("/api/products/{id}"))).await.unwrap().json().await.unwrap()
}

async fn session_id(shopper: &Shopper) -> String {
    let a = shopper.send(Method::GET, "/api/session", None, &[]).await;
    assert_eq!(a.status, 200);
    a.body["session"].as_str().unwrap().to_owned()
}

async fn checkout(shopper: &Shopper, key: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = key.map(|k| vec![("idempotency-key", k)]).unwrap_or_default();
    shopper.send(Method::POST, "/api/cart/checkout", None, &headers).await
}

/// Next frame of `kind`, which must be the next frame on the socket.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    let v = ws.next_json().await;
    assert_eq!(v["type"], kind, "{v}");
    v
}

#[tokio::test]
async fn without_a_configured_token_the_service_api_does_not_exist() {
    let server = TestServer::start().await;
    let a = call(&server, Method::PATCH, "/api/service/products/glass-carafe", Some(TOKEN), json!({"stock": 1})).await;
    a.expect_error(404, "not_found");
    assert_eq!(product(&server, "glass-carafe").await["stock"], 40, "nothing changed");
}

#[tokio::test]
async fn only_a_configured_bearer_token_is_let_in() {
    let server = server().await;
    let path = "/api/service/products/glass-carafe";
    for token in [None, Some("wrong-token-but-long-enough"), Some(&TOKEN[..TOKEN.len() - 1]), Some("")] {
        let a = call(&server, Method::PATCH, path, token, json!({"stock": 1})).await;
        a.expect_error(401, "unauthorized");
        assert_eq!(a.headers[WWW_AUTHENTICATE], "Bearer");
    }
    // A shopper's session cookie is not a service credential.
    let shopper = server.shopper().await;
    let a = shopper.send(Method::PATCH, path, Some(r#"{"stock":1}"#), &[]).await;
    a.expect_error(401, "unauthorized");
    assert_eq!(product(&server, "glass-carafe").await["stock"], 40, "nothing changed");
    // Each configured token works.
    for token in [TOKEN, OTHER_TOKEN] {
        let a = call(&server, Method::PATCH, path, Some(token), json!({"stock": 7})).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert!(server.metrics().await.contains(r#"cartwheel_service_requests_total{outcome="unauthorized"} 5"#));
}

#[tokio::test]
async fn a_short_service_token_is_refused_at_start_up() {
    let mut config = crate::support::test_config(&std::env::temp_dir().join("never-opened.sqlite3"));
    config.service_tokens = vec!["short".into()];
    assert!(matches!(
        cartwheel_server::Server::bind(config).await,
        Err(cartwheel_server::StartupError::Config(cartwheel_server::config::ConfigError::WeakServiceToken))
    ));
}

#[tokio::test]
async fn product_changes_are_validated_and_change_nothing_when_refused() {
    let server = server().await;
    let refused = [
        (json!({"stock": -1}), 400, "invalid_field"),
        (json!({"stock": 1_000_001}), 400, "invalid_field"),
        (json!({"price_cents": 0}), 400, "invalid_field"),
        (json!({"price_cents": -100}), 400, "invalid_field"),
        (json!({"price_cents": 100_000_001}), 400, "invalid_field"),
        (json!({}), 400, "invalid_field"),
        (json!({"stock": "many"}), 400, "invalid_json"),
    ];
    for (body, status, code) in refused {
        patch_product(&server, "glass-carafe", body).await.expect_error(status, code);
    }
    patch_product(&server, "no-such-thing", json!({"stock": 1})).await.expect_error(404, "unknown_product");
    let unchanged = product(&server, "glass-carafe").await;
    assert_eq!((unchanged["stock"].as_u64(), unchanged["price_cents"].as_u64()), (Some(40), Some(2600)));
    assert_eq!(unchanged["revision"], 0);

    // The edges are allowed.
    let a = patch_product(&server, "glass-carafe", json!({"stock": 1_000_000, "price_cents": 100_000_000})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = patch_product(&server, "glass-carafe", json!({"stock": 0, "price_cents": 1})).await;
    assert_eq!((a.body["stock"].as_u64(), a.body["price_cents"].as_u64()), (Some(0), Some(1)));
    assert_eq!(a.body["revision"], 2, "each change raises the revision");
    let same = patch_product(&server, "glass-carafe", json!({"stock": 0})).await;
    assert_eq!(same.body["revision"], 2, "a patch that changes nothing keeps the revision");
}

#[tokio::test]
async fn a_product_change_reaches_every_session_and_reprices_carts() {
    let server = server().await;
    let (alice, bob) = (server.shopper().await, server.shopper().await);
    alice.add("glass-carafe", 2).await;
    let (mut alice_ws, _) = Ws::connect_synced(&alice).await;
    let (mut bob_ws, _) = Ws::connect_synced(&bob).await;
    let (mut bob_second_tab, _) = Ws::connect_synced(&bob).await;

    let a = patch_product(&server, "glass-carafe", json!({"price_cents": 2000, "stock": 1})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    for ws in [&mut alice_ws, &mut bob_ws, &mut bob_second_tab] {
        let frame = next_of(ws, "PRODUCT_UPDATE").await;
        assert_eq!(frame["data"]["id"], "glass-carafe");
        assert_eq!((frame["data"]["price_cents"].as_u64(), frame["data"]["stock"].as_u64()), (Some(2000), Some(1)));
        assert_eq!(frame["data"]["revision"], 1);
        ws.assert_quiet().await;
    }
    // Alice's cart is priced at the new price, its line flagged by its stock; its version did not change.
    let cart = alice.cart().await;
    assert_eq!(cart.version(), 1);
    assert_eq!(cart.body["items"][0]["unit_price_cents"], 2000);
    assert_eq!(cart.body["items"][0]["product_revision"], 1);
    assert_eq!(cart.body["items"][0]["stock"], 1);
    assert_eq!(cart.body["total_cents"], 4000);
    // Catalog reads agree, and the page renders the new price.
    assert_eq!(product(&server, "glass-carafe").await["price_cents"], 2000);
    let page = alice.send(Method::GET, "/", None, &[]).await;
    assert!(page.body.as_str().unwrap().contains("€20.00"));
}

#[tokio::test]
async fn stock_and_prices_set_by_a_service_survive_a_restart() {
    let mut server = server().await;
    patch_product(&server, "copper-planter", json!({"stock": 4, "price_cents": 3100})).await;
    let dir = server.take_dir();
    let db = server.db.clone();
    server.stop().await;
    let server = TestServer::start_on(&db, |c| c.service_tokens = vec![TOKEN.to_owned()]).await;
    let p = product(&server, "copper-planter").await;
    assert_eq!(
        (p["stock"].as_u64(), p["price_cents"].as_u64(), p["revision"].as_u64()),
        (Some(4), Some(3100), Some(1))
    );
    let next = patch_product(&server, "copper-planter", json!({"stock": 5})).await;
    assert_eq!(next.body["revision"], 2, "revisions keep growing across restarts");
    drop(dir);
}

#[tokio::test]
async fn a_targeted_notice_reaches_one_sessions_connections_only() {
    let server = server().await;
    let (alice, bob) = (server.shopper().await, server.shopper().await);
    let (mut alice_tab1, _) = Ws::connect_synced(&alice).await;
    let (mut alice_tab2, _) = Ws::connect_synced(&alice).await;
    let (mut bob_ws, _) = Ws::connect_synced(&bob).await;
    let alice_id = session_id(&alice).await;
    assert_eq!(alice_id.len(), 32);
    assert_ne!(alice_id, session_id(&bob).await);

    let notice = json!({"session": alice_id, "kind": "price_drop", "message": "The carafe is cheaper now",
        "product_id": "glass-carafe"});
    let a = notify(&server, notice).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.body["delivered_now"], 2);
    for ws in [&mut alice_tab1, &mut alice_tab2] {
        let frame = next_of(ws, "NOTICE").await;
        assert_eq!(
            frame["data"],
            json!({"kind":"price_drop","message":"The carafe is cheaper now",
            "product_id":"glass-carafe"})
        );
    }
    // Bob's next frame is his own notice, not Alice's: per-session frames share one ordered queue.
    let bob_id = session_id(&bob).await;
    notify(&server, json!({"session": bob_id, "kind": "hello", "message": "Hi Bob"})).await;
    assert_eq!(next_of(&mut bob_ws, "NOTICE").await["data"]["message"], "Hi Bob");
    bob_ws.assert_quiet().await;

    // Without a session: everyone.
    let a = notify(&server, json!({"kind": "maintenance", "message": "Back in 5 minutes"})).await;
    assert_eq!(a.body["delivered_now"], 3);
    for ws in [&mut alice_tab1, &mut alice_tab2, &mut bob_ws] {
        assert_eq!(next_of(ws, "NOTICE").await["data"]["kind"], "maintenance");
    }
}

#[tokio::test]
async fn notices_are_validated_at_their_limits() {
    let server = server().await;
    let max = cartwheel_core::Notice::MAX_MESSAGE_CHARS;
    let ok = notify(&server, json!({"kind": "k".repeat(32), "message": "é".repeat(max)})).await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    notify(&server, json!({"kind": "k", "message": "é".repeat(max + 1)})).await.expect_error(400, "invalid_field");
    notify(&server, json!({"kind": "k".repeat(33), "message": "m"})).await.expect_error(400, "invalid_field");
    notify(&server, json!({"kind": "Not A Kind", "message": "m"})).await.expect_error(400, "invalid_field");
    notify(&server, json!({"kind": "k", "message": ""})).await.expect_error(400, "invalid_field");
    notify(&server, json!({"session": "nope", "kind": "k", "message": "m"})).await.expect_error(400, "invalid_field");
    notify(&server, json!({"message": "m"})).await.expect_error(400, "invalid_json");
}

#[tokio::test]
async fn each_token_has_its_own_rate_limit() {
    let server = TestServer::start_with(|c| {
        c.service_tokens = vec![TOKEN.to_owned(), OTHER_TOKEN.to_owned()];
        c.service_rate_per_sec = 1;
        c.service_burst = 3;
    })
    .await;
    let body = json!({"kind": "k", "message": "m"});
    for _ in 0..3 {
        assert_eq!(notify(&server, body.clone()).await.status, 202);
    }
    let refused = notify(&server, body.clone()).await;
    refused.expect_error(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    let other = call(&server, Method::POST, "/api/service/notify", Some(OTHER_TOKEN), body).await;
    assert_eq!(other.status, 202, "another token has its own bucket");
}

#[tokio::test]
async fn checkout_records_the_order_decrements_stock_and_empties_the_cart_everywhere() {
    let server = server().await;
    let (alice, bob) = (server.shopper().await, server.shopper().await);
    alice.add("glass-carafe", 2).await;
    alice.add("cork-coasters", 3).await;
    let (mut alice_ws, v) = Ws::connect_synced(&alice).await;
    assert_eq!(v, 2);
    let (mut bob_ws, _) = Ws::connect_synced(&bob).await;

    let a = checkout(&alice, Some("order-1")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let order = &a.body["order"];
    assert!(order["id"].as_str().unwrap().starts_with("ord_"));
    assert_eq!(order["session"], session_id(&alice).await);
    assert_eq!(order["total_cents"], 2 * 2600 + 3 * 950);
    assert_eq!(order["item_count"], 5);
    assert_eq!(order["lines"].as_array().unwrap().len(), 2);
    assert_eq!(a.body["cart"]["version"], 3);
    assert_eq!(a.body["cart"]["items"], json!([]));

    // The emptied cart and the two new stocks arrive by two queues (this cart's, everyone's): in either order.
    let mut stocks = std::collections::BTreeMap::new();
    let mut carts = Vec::new();
    for _ in 0..3 {
        let frame = alice_ws.next_json().await;
        match frame["type"].as_str() {
            Some("CART_UPDATE") => carts.push((frame["version"].as_u64(), frame["data"]["item_count"].as_u64())),
            Some("PRODUCT_UPDATE") => {
                stocks.insert(frame["data"]["id"].as_str().unwrap().to_owned(), frame["data"]["stock"].as_u64());
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(carts, [(Some(3), Some(0))]);
    assert_eq!(stocks, [("cork-coasters".to_owned(), Some(57)), ("glass-carafe".to_owned(), Some(38))].into());
    alice_ws.assert_quiet().await;
    for _ in 0..2 {
        next_of(&mut bob_ws, "PRODUCT_UPDATE").await;
    }
    bob_ws.assert_quiet().await;
    assert_eq!(product(&server, "glass-carafe").await["stock"], 38);

    // An empty cart cannot be checked out.
    checkout(&alice, None).await.expect_error(409, "empty_cart");
}

#[tokio::test]
async fn a_retried_checkout_answers_the_same_order_and_buys_once() {
    let server = server().await;
    let alice = server.shopper().await;
    alice.add("copper-planter", 2).await;
    let first = checkout(&alice, Some("retry-me")).await;
    assert_eq!(first.status, 201);
    let again = checkout(&alice, Some("retry-me")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body, "the very same order");
    assert_eq!(product(&server, "copper-planter").await["stock"], 7, "9 − 2, once");
    // The key belongs to that checkout: a cart change may not reuse it.
    let reused = alice
        .send(
            Method::POST,
            "/api/cart",
            Some(r#"{"product_id":"copper-planter","quantity":1}"#),
            &[("idempotency-key", "retry-me")],
        )
        .await;
    reused.expect_error(422, "idempotency_key_reused");
}

#[tokio::test]
async fn a_checkout_that_no_longer_fits_names_the_lines_and_changes_nothing() {
    let server = server().await;
    let alice = server.shopper().await;
    alice.add("copper-planter", 5).await;
    alice.add("glass-carafe", 1).await;
    patch_product(&server, "copper-planter", json!({"stock": 3})).await;
    let a = checkout(&alice, Some("too-many")).await;
    a.expect_error(409, "insufficient_stock");
    assert_eq!(
        a.body["error"]["shortfalls"],
        json!([{"product_id":"copper-planter","name":"Copper Planter","requested":5,"available":3}])
    );
    assert!(a.body["error"]["message"].as_str().unwrap().contains("Copper Planter"), "{}", a.body);
    assert_eq!(alice.cart().await.version(), 2, "the cart is untouched");
    assert_eq!(product(&server, "copper-planter").await["stock"], 3);
    assert_eq!(product(&server, "glass-carafe").await["stock"], 40);
    // Lowering the line (allowed even above stock) makes it fit.
    alice.set("copper-planter", 3).await;
    assert_eq!(checkout(&alice, Some("fits-now")).await.status, 201);
    assert_eq!(product(&server, "copper-planter").await["stock"], 0);
}

#[tokio::test]
async fn shoppers_racing_for_the_last_units_never_oversell() {
    const SHOPPERS: usize = 12;
    const LEFT: u64 = 3;
    let server = Arc::new(server().await);
    patch_product(&server, "bamboo-organizer", json!({"stock": LEFT})).await;
    let mut shoppers = Vec::new();
    for _ in 0..SHOPPERS {
        let s = server.shopper().await;
        assert_eq!(s.add("bamboo-organizer", 1).await.status, 200);
        shoppers.push(Arc::new(s));
    }
    let attempts: Vec<_> = shoppers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.clone();
            tokio::spawn(async move { checkout(&s, Some(&format!("race-{i}"))).await })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        let a = attempt.await.unwrap();
        match a.status.as_u16() {
            201 => won += 1,
            409 => assert_eq!(a.error_code(), "insufficient_stock", "{}", a.body),
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    assert_eq!(won, LEFT as usize, "exactly as many orders as units");
    assert_eq!(product(&server, "bamboo-organizer").await["stock"], 0, "never negative");
    assert!(server.metrics().await.contains(&format!(r#"cartwheel_checkouts_total{{outcome="ordered"}} {LEFT}"#)));
}

#[tokio::test]
async fn a_connection_that_falls_behind_the_broadcast_ring_still_gets_every_product_change() {
    const RING: usize = 16;
    let server = TestServer::start_with(|c| {
        c.service_tokens = vec![TOKEN.to_owned()];
        c.broadcast_capacity = RING;
        c.no_rate_limit = true;
        // The stalled reader must outlast the flood, however slow the machine.
        c.send_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let shopper = server.shopper().await;
    let mut ws = shopper.ws_with_small_receive_buffer().await;
    let long = "x".repeat(cartwheel_core::Notice::MAX_MESSAGE_CHARS);
    let flood = |n: usize| {
        let server = &server;
        let long = long.clone();
        async move {
            for _ in 0..n {
                notify(server, json!({"kind": "flood", "message": long})).await;
            }
        }
    };
    // The reader does not read: after ~100 KiB the server's writes back up (within the send timeout) and the
    // ring overtakes this connection …
    flood(400).await;
    patch_product(&server, "beeswax-candle", json!({"stock": 29})).await;
    flood(2 * RING).await;
    // … which, once it reads again, still learns the candle's new stock: product changes do not travel in the
    // ring (the board holds the newest state of each), so falling behind it loses none.
    loop {
        let v = ws.next_json().await;
        if v["type"] == "PRODUCT_UPDATE" && v["data"]["id"] == "beeswax-candle" {
            assert_eq!(v["data"]["stock"], 29);
            break;
        }
        assert!(v["type"] == "NOTICE" || v["type"] == "PRODUCT_UPDATE" || v["type"] == "CART_UPDATE", "{v}");
    }
    // Once or more, as the machine's speed has it (counted when the connection reads the ring again, which may
    // come after the product's frame).
    server.await_metric_at_least("cartwheel_ws_broadcast_lagged_total", 1).await;
}

/// Product changes are state: a connection whose reader cannot keep up with a flash sale is sent the newest
/// stock, not every change queued behind the ones it has not read (which is what a queue per connection, or a
/// ring it reads in order, would do).
#[tokio::test]
async fn a_connection_that_cannot_keep_up_is_sent_the_newest_state_of_a_product_not_every_change() {
    const CHANGES: u64 = 300;
    let server = TestServer::start_with(|c| {
        c.service_tokens = vec![TOKEN.to_owned()];
        c.no_rate_limit = true;
        // Small kernel buffers on both sides, so the connection backs up after a few dozen frames; the stalled
        // reader must outlast the storm, however slow the machine.
        c.socket_send_buffer_bytes = 4096;
        c.send_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let shopper = server.shopper().await;
    let mut ws = shopper.ws_with_small_receive_buffer().await;
    assert_eq!(ws.next_json().await["type"], "CART_UPDATE");
    // The reader does not read while a service changes the stock 300 times …
    for stock in 1..=CHANGES {
        assert_eq!(patch_product(&server, "beeswax-candle", json!({ "stock": stock })).await.status, 200);
    }
    // … then reads: it ends on the last change, in order, having been sent a fraction of them.
    let mut received = Vec::new();
    while received.last() != Some(&CHANGES) {
        let v = ws.next_json().await;
        assert_eq!(v["type"], "PRODUCT_UPDATE", "{v}");
        assert_eq!(v["data"]["id"], "beeswax-candle");
        received.push(v["data"]["stock"].as_u64().unwrap());
    }
    assert!(received.windows(2).all(|w| w[0] < w[1]), "never an older stock after a newer one: {received:?}");
    assert!(received.len() < (CHANGES / 2) as usize, "{} of {CHANGES} changes were sent", received.len());
    ws.assert_quiet().await;
}

/// Many connections (more than one slice of the fan-out pass) and changes faster than the pass goes round:
/// every connection ends on the last stock, never sees an older one after a newer one, and is sent no more
/// frames than there were changes.
#[tokio::test]
async fn a_storm_of_product_changes_reaches_every_connection_in_order_ending_on_the_last() {
    const CONNECTIONS: usize = 40;
    const CHANGES: u64 = 100;
    let server = TestServer::start_with(|c| {
        c.service_tokens = vec![TOKEN.to_owned()];
        c.no_rate_limit = true;
    })
    .await;
    let mut sockets = Vec::new();
    for _ in 0..CONNECTIONS / 4 {
        let shopper = server.shopper().await;
        for _ in 0..4 {
            let (ws, _) = Ws::connect_synced(&shopper).await;
            sockets.push(ws);
        }
    }
    let storm = async {
        let calls = (1..=CHANGES).map(|stock| patch_product(&server, "beeswax-candle", json!({ "stock": stock })));
        for answer in futures_util::future::join_all(calls).await {
            assert_eq!(answer.status, 200);
        }
        product(&server, "beeswax-candle").await["stock"].as_u64().unwrap()
    };
    let last = storm.await;
    for ws in &mut sockets {
        let mut received = Vec::new();
        loop {
            let v = ws.next_json().await;
            assert_eq!(v["type"], "PRODUCT_UPDATE", "{v}");
            received.push(v["data"]["revision"].as_u64().unwrap());
            if v["data"]["stock"].as_u64() == Some(last) {
                break;
            }
        }
        assert!(received.windows(2).all(|w| w[0] < w[1]), "revisions only grow: {received:?}");
        assert!(received.len() as u64 <= CHANGES);
    }
}

/// The edge of `--board-round-interval-ms`: rounds that bring connections up to the product board begin at least
/// that far apart. A change after a quiet spell is sent at once; the changes within the interval after it wait
/// for the next round and go as one frame, the newest.
#[tokio::test]
async fn product_frames_come_a_round_interval_apart_as_the_newest_and_at_once_after_a_quiet_spell() {
    use std::time::{Duration, Instant};
    const FLOOR: Duration = Duration::from_millis(1_500);
    let server = TestServer::start_with(|c| {
        c.service_tokens = vec![TOKEN.to_owned()];
        c.no_rate_limit = true;
        c.board_round_interval = FLOOR;
        // No presence round on the board during the test (the counts are read once, at the start).
        c.presence_interval = Duration::from_secs(3_600);
    })
    .await;
    let shopper = server.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&shopper).await;
    let stock = |n: u64| json!({ "stock": n });

    let sent = Instant::now();
    assert_eq!(patch_product(&server, "beeswax-candle", stock(1)).await.status, 200);
    assert_eq!(next_of(&mut ws, "PRODUCT_UPDATE").await["data"]["stock"], 1);
    let first = Instant::now();
    assert!(first - sent < FLOOR, "the first change waited {:?}", first - sent);

    for n in 2..=5 {
        assert_eq!(patch_product(&server, "beeswax-candle", stock(n)).await.status, 200);
    }
    assert_eq!(next_of(&mut ws, "PRODUCT_UPDATE").await["data"]["stock"], 5, "one frame, the newest");
    let second = Instant::now();
    // Timers never fire early; a little for the clock reads on either side.
    assert!(second - first >= FLOOR - Duration::from_millis(50), "{:?} apart", second - first);

    // A quiet spell of a whole interval: the next change goes at once again.
    tokio::time::sleep(FLOOR).await;
    let sent = Instant::now();
    assert_eq!(patch_product(&server, "beeswax-candle", stock(6)).await.status, 200);
    assert_eq!(next_of(&mut ws, "PRODUCT_UPDATE").await["data"]["stock"], 6);
    assert!(sent.elapsed() < FLOOR, "after a quiet spell the change waited {:?}", sent.elapsed());
    ws.assert_quiet().await;
}

#[tokio::test]
async fn a_token_may_do_only_what_its_scopes_name_and_its_changes_are_counted_by_name() {
    const INVENTORY: &str = "inventory-token-000000001";
    const SUPPORT: &str = "support-token-00000000002";
    let server = TestServer::start_with(|c| {
        c.service_tokens = vec![format!("inventory:stock:{INVENTORY}"), format!("support:notify:{SUPPORT}")];
    })
    .await;
    let product = |token, body| call(&server, Method::PATCH, "/api/service/products/linen-notebook", Some(token), body);
    // Stock is inventory's; the price is not.
    assert_eq!(product(INVENTORY, json!({ "stock": 7 })).await.status, 200);
    product(INVENTORY, json!({ "price_cents": 1 })).await.expect_error(403, "insufficient_scope");
    product(INVENTORY, json!({ "stock": 8, "price_cents": 1 })).await.expect_error(403, "insufficient_scope");
    let notice = json!({ "kind": "info", "message": "hello" });
    call(&server, Method::POST, "/api/service/notify", Some(INVENTORY), notice.clone())
        .await
        .expect_error(403, "insufficient_scope");
    // Support may send notices and nothing else.
    assert_eq!(call(&server, Method::POST, "/api/service/notify", Some(SUPPORT), notice).await.status, 202);
    product(SUPPORT, json!({ "stock": 1 })).await.expect_error(403, "insufficient_scope");
    // Nothing refused changed anything: the price is as it was, the stock is inventory's 7.
    let products: Value = reqwest::get(server.url("/api/products")).await.unwrap().json().await.unwrap();
    let notebook = products.as_array().unwrap().iter().find(|p| p["id"] == "linen-notebook").unwrap().clone();
    assert_eq!(notebook["stock"], 7);
    assert_ne!(notebook["price_cents"], 1);
    server.await_metric(r#"cartwheel_service_changes_total{token="inventory",kind="product"} 1"#).await;
    server.await_metric(r#"cartwheel_service_changes_total{token="support",kind="notice"} 1"#).await;
    // The scheme is case-insensitive.
    let lower = reqwest::Client::new()
        .patch(server.url("/api/service/products/linen-notebook"))
        .header(AUTHORIZATION, format!("bearer {INVENTORY}"))
        .json(&json!({ "stock": 9 }))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn guessing_tokens_is_rate_limited_per_client_address() {
    let server = server().await;
    let burst = cartwheel_server::config::defaults::SERVICE_AUTH_FAILURE_BURST;
    for n in 0..burst {
        call(&server, Method::POST, "/api/service/notify", Some(&format!("guess-{n:020}")), json!({}))
            .await
            .expect_error(401, "unauthorized");
    }
    call(&server, Method::POST, "/api/service/notify", Some("guess-one-too-many-000"), json!({}))
        .await
        .expect_error(429, "rate_limited");
    // The right token still works from there: only failures are limited.
    let notice = json!({ "kind": "info", "message": "hello" });
    assert_eq!(notify(&server, notice).await.status, 202);
    server.stop().await;
}
