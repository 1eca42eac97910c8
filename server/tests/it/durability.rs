//! What survives: a graceful restart and a `kill -9` on the same SQLite file lose no committed change, and
//! versions continue where they stopped.

use crate::support::process::ServerProcess;
use crate::support::{Shopper, TestServer};
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
