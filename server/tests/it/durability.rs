//! What survives: a graceful restart and a `kill -9` on the same SQLite file lose no committed change, and
//! versions continue where they stopped.

use crate::support::process::ServerProcess;
use crate::support::{set_cookie, v1_session_cookie, Shopper, TestServer};
use serde_json::Value;

async fn some_product(server_base: &str) -> String {
    let all: Vec<Value> = reqwest::get(format!("{server_base}/api/products")).await.unwrap().json().await.unwrap();
    all.iter().find(|p| p["stock"].as_u64().unwrap() >= 20).unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn restart_on_the_same_file_keeps_cart_version_and_session() {
    let mut server = TestServer::start().await;
    let dir = server.take_dir();
    let id = some_product(&server.base).await;
    let shopper = server.shopper().await;
    for _ in 0..3 {
        shopper.add(&id, 1).await;
    }
    let before = shopper.cart().await.body;
    assert_eq!(before["version"], 3);
    let db = server.db.clone();
    server.stop().await;

    let server = TestServer::start_on(&db, |_| {}).await;
    let same = Shopper { base: server.base.clone(), addr: server.addr, ..shopper };
    let after = same.cart().await;
    assert!(after.headers.get("set-cookie").is_none(), "the session secret persisted: the cookie is still valid");
    assert_eq!(after.body, before);
    assert_eq!(same.add(&id, 1).await.version(), 4, "versions continue");
    server.stop().await;
    drop(dir);
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("carts.sqlite3");
    let process = ServerProcess::start(&[], &db, &[]);
    let id = some_product(&process.base).await;
    let http = reqwest::Client::new();
    let first = http.get(format!("{}/api/cart", process.base)).send().await.unwrap();
    let cookie = first.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let body = serde_json::json!({ "product_id": id, "quantity": 1 }).to_string();
    let adds = (0..20).map(|_| {
        http.post(format!("{}/api/cart", process.base))
            .header("cookie", &cookie)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    });
    let answered = futures_util::future::join_all(adds).await;
    assert!(answered.iter().all(|r| r.as_ref().unwrap().status() == 200));
    process.kill_9();

    let process = ServerProcess::start(&[], &db, &[]);
    let cart: Value = http
        .get(format!("{}/api/cart", process.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cart["version"], 20);
    assert_eq!(cart["item_count"], 20);
    process.kill_9();
}

#[tokio::test]
async fn a_session_keeps_its_newest_idempotency_records_up_to_the_cap() {
    let server = TestServer::start_with(|c| c.idempotency_keys_per_session = 3).await;
    let s = server.shopper().await;
    let body = r#"{"product_id":"linen-notebook","quantity":1}"#;
    for n in 1..=4u64 {
        let key = format!("key-{n}");
        let answer = s.send(reqwest::Method::POST, "/api/cart", Some(body), &[("idempotency-key", &key)]).await;
        assert_eq!(answer.version(), n);
    }
    // The newest three are answered from their records; the oldest was forgotten, so it applies again.
    let replay = s.send(reqwest::Method::POST, "/api/cart", Some(body), &[("idempotency-key", "key-2")]).await;
    assert_eq!((replay.version(), replay.headers.get("idempotent-replayed").is_some()), (2, true));
    let evicted = s.send(reqwest::Method::POST, "/api/cart", Some(body), &[("idempotency-key", "key-1")]).await;
    assert_eq!((evicted.version(), evicted.headers.get("idempotent-replayed").is_some()), (5, false));
    let db = rusqlite::Connection::open(&server.db).unwrap();
    let stored: i64 = db.query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 3);
    server.stop().await;
}

const SECRET: &str = "a test secret of at least thirty-two bytes";

/// `updated_at` of every cart set `secs` into the past, as if nobody had used them since.
fn age_every_cart(db: &std::path::Path, secs: i64) {
    let db = rusqlite::Connection::open(db).unwrap();
    db.execute("UPDATE carts SET updated_at = updated_at - ?1", [secs]).unwrap();
}

fn updated_at(db: &std::path::Path) -> Vec<i64> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut rows = db.prepare("SELECT updated_at FROM carts ORDER BY updated_at").unwrap();
    rows.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// A cart untouched past `--cart-ttl-days` (plus the slack for clocks) is deleted; one a day younger stays; and a
/// session renewal — here a version 1 cookie, renewed on its first use into one with an issue time — touches
/// its cart before the renewed cookie goes out, so a cart in use never expires.
#[tokio::test]
async fn an_untouched_cart_expires_and_a_renewed_sessions_cart_is_kept() {
    let ttl_days = 2;
    let start = |db: std::path::PathBuf| async move {
        TestServer::start_on(&db, |c| {
            c.session_secret = vec![SECRET.to_owned()];
            c.session_max_age_days = ttl_days;
            c.cart_ttl_days = ttl_days;
        })
        .await
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("carts.sqlite3");
    let server = start(db.clone()).await;
    let (expired, younger) = (server.shopper().await, server.shopper().await);
    let legacy = Shopper::with_cookie(&server, &v1_session_cookie(SECRET));
    for s in [&expired, &younger, &legacy] {
        assert_eq!(s.add("linen-notebook", 2).await.version(), 1);
    }
    let expiry = i64::from(ttl_days) * 86_400 + 3_600;
    // All three untouched for just past the expiry, then: the younger one changed a day later (as if), the
    // legacy one renewed now.
    age_every_cart(&db, expiry + 5);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE carts SET updated_at = updated_at + 86400 WHERE rowid = (SELECT MIN(rowid) + 1 FROM carts)",
            [],
        )
        .unwrap();
    let renewed = legacy.cart().await;
    let cookie = set_cookie(&renewed.headers).expect("a version 1 cookie is renewed on use");
    assert_ne!(cookie, legacy.cookie);
    let now = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT CAST(strftime('%s','now') AS INTEGER)", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert!(
        updated_at(&db).last().is_some_and(|t| now - t < 60),
        "the renewal touched the cart: {:?}",
        updated_at(&db)
    );
    server.stop().await;

    // The sweep runs at start (and every ten minutes after).
    let server = start(db.clone()).await;
    let gone = Shopper { base: server.base.clone(), addr: server.addr, ..expired };
    let cart = gone.cart().await;
    assert_eq!((cart.status.as_u16(), cart.version(), cart.body["item_count"].as_u64()), (200, 0, Some(0)));
    for kept in
        [Shopper { base: server.base.clone(), addr: server.addr, ..younger }, Shopper::with_cookie(&server, &cookie)]
    {
        let cart = kept.cart().await;
        assert_eq!((cart.version(), cart.body["item_count"].as_u64()), (1, Some(2)), "{}", cart.body);
    }
    assert_eq!(updated_at(&db).len(), 2);
    server.stop().await;
}

/// A change that changes nothing, under a fresh Idempotency-Key each time, stores a marker, not a priced cart;
/// replayed, it answers the cart as it is by then.
#[tokio::test]
async fn a_no_op_change_remembers_a_marker_and_its_replay_answers_the_cart_as_it_is() {
    let server = TestServer::start().await;
    let s = server.shopper().await;
    assert_eq!(s.add("linen-notebook", 1).await.version(), 1);
    let noop = r#"{"quantity":1}"#;
    let first = s
        .send(reqwest::Method::PUT, "/api/cart/items/linen-notebook", Some(noop), &[("idempotency-key", "noop-1")])
        .await;
    assert_eq!((first.status.as_u16(), first.version()), (200, 1));
    assert_eq!(s.add("linen-notebook", 1).await.version(), 2);
    let replay = s
        .send(reqwest::Method::PUT, "/api/cart/items/linen-notebook", Some(noop), &[("idempotency-key", "noop-1")])
        .await;
    assert!(replay.headers.get("idempotent-replayed").is_some(), "{:?}", replay.headers);
    assert_eq!((replay.version(), replay.body["item_count"].as_u64()), (2, Some(2)), "the cart as it is now");
    let db = rusqlite::Connection::open(&server.db).unwrap();
    let stored: String =
        db.query_row("SELECT response FROM idempotency_keys WHERE key = 'noop-1'", [], |r| r.get(0)).unwrap();
    assert!(stored.len() < 8, "a marker, not a cart: {stored}");
    server.stop().await;
}

/// A tab that only keeps its sockets open (no REST call) still renews its session: the upgrade's `101` sets
/// the renewed cookie (after touching the cart), so a cart in use by such a tab never expires either.
#[tokio::test]
async fn the_websocket_upgrade_renews_a_session_that_is_due() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start_with(|c| c.session_secret = vec![SECRET.to_owned()]).await;
    let legacy = v1_session_cookie(SECRET);
    let upgrade = |cookie: String| {
        let addr = server.addr;
        async move {
            let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
            request.headers_mut().insert("cookie", cookie.parse().unwrap());
            request.headers_mut().insert("origin", format!("http://{addr}").parse().unwrap());
            let (_, response) = tokio_tungstenite::connect_async(request).await.expect("upgraded");
            set_cookie(response.headers())
        }
    };
    let renewed = upgrade(legacy.clone()).await.expect("a version 1 cookie is renewed on the upgrade");
    assert_ne!(renewed, legacy);
    assert_eq!(upgrade(renewed.clone()).await, None, "a fresh one is not renewed again");
    let same = Shopper::with_cookie(&server, &renewed).cart().await;
    let before = Shopper::with_cookie(&server, &legacy).cart().await;
    assert_eq!(same.body["epoch"], before.body["epoch"], "the same cart");
    server.stop().await;
}
