//! Presence: shoppers online (sessions with an open connection, on every instance) and how many carts hold each
//! product, pushed as `PRESENCE` frames at most once per interval per connection.

use std::time::{Duration, Instant};

use crate::support::process::ServerProcess;
use crate::support::redis::RedisServer;
use crate::support::{Shopper, TestServer, Ws, EVENT_TIMEOUT};
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(200);
const TOKEN: &str = "service-token-for-tests-0001";

async fn notify(server: &TestServer, body: Value) -> Value {
    let answer = reqwest::Client::new()
        .post(server.url("/api/service/notify"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    answer.json().await.unwrap()
}

fn fast(c: &mut cartwheel_server::config::Config) {
    c.presence_interval = INTERVAL;
    c.presence_ttl = Duration::from_millis(1_500);
}

/// Read frames until a `PRESENCE` for which `wanted` holds (counts are applied as they come: a frame carries
/// only what changed); answers the counts then.
async fn until_presence(ws: &mut Ws, counts: &mut Value, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "presence never got to what was wanted: {counts}");
        let v = ws.next_frame().await;
        if v["type"] != "PRESENCE" {
            continue;
        }
        counts["online"] = v["online"].clone();
        for (id, n) in v["in_carts"].as_object().unwrap() {
            counts["in_carts"][id] = n.clone();
        }
        if wanted(counts) {
            return counts.clone();
        }
    }
}

fn in_carts(counts: &Value, id: &str) -> u64 {
    counts["in_carts"][id].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn in_n_carts_follows_adds_removes_and_checkout_exactly() {
    let server = TestServer::start_with(fast).await;
    let (a, b) = (server.shopper().await, server.shopper().await);
    let (mut ws, _) = Ws::connect_synced(&a).await;
    let mut counts = serde_json::json!({"online": 0, "in_carts": {}});
    until_presence(&mut ws, &mut counts, |c| c["online"] == 1).await;
    for (s, product, n) in [(&a, "linen-notebook", 2), (&b, "linen-notebook", 1), (&b, "stoneware-mug", 1)] {
        let added = s.add(product, n).await;
        assert_eq!(added.status, 200, "{}", added.body);
    }
    let c = until_presence(&mut ws, &mut counts, |c| {
        in_carts(c, "linen-notebook") == 2 && in_carts(c, "stoneware-mug") == 1
    })
    .await;
    assert_eq!(c["online"], 1, "b has no socket");
    a.add("linen-notebook", 1).await; // the same cart again: still one cart
    b.remove("linen-notebook").await;
    until_presence(&mut ws, &mut counts, |c| in_carts(c, "linen-notebook") == 1).await;
    let order = b.send(reqwest::Method::POST, "/api/cart/checkout", None, &[]).await;
    assert_eq!(order.status, 201, "{}", order.body);
    until_presence(&mut ws, &mut counts, |c| in_carts(c, "stoneware-mug") == 0).await;
    assert_eq!(in_carts(&counts, "linen-notebook"), 1);
    // And the page counts them too (the server renders the labels).
    let page = reqwest::get(server.url("/")).await.unwrap().text().await.unwrap();
    assert!(page.contains(">1 shopper here<"), "the shell's count is rendered");
    a.add("stoneware-mug", 1).await;
    b.add("stoneware-mug", 1).await;
    until_presence(&mut ws, &mut counts, |c| in_carts(c, "stoneware-mug") == 2).await;
    let page = reqwest::get(server.url("/")).await.unwrap().text().await.unwrap();
    let label = page.find(r#"data-in-carts-of="stoneware-mug""#).map(|at| &page[at..]).unwrap_or_default();
    assert!(label.split('<').next().is_some_and(|l| l.ends_with(">in 2 carts")), "the card's label is rendered");
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_changes_make_at_most_one_presence_frame_per_interval() {
    let server = TestServer::start_with(|c| {
        fast(c);
        c.no_rate_limit = true;
    })
    .await;
    let watcher = server.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&watcher).await;
    let busy = server.shopper().await;
    let started = Instant::now();
    for n in 0..1_000 {
        let product = if n % 2 == 0 { "linen-notebook" } else { "stoneware-mug" };
        let answer = if n % 4 < 2 { busy.add(product, 1).await } else { busy.remove(product).await };
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let elapsed = started.elapsed();
    ws.send_text(r#"{"type":"PING","id":9}"#).await;
    let mut frames = 0;
    loop {
        let v = ws.next_frame().await;
        match v["type"].as_str() {
            Some("PRESENCE") => frames += 1,
            Some("PONG") => break,
            _ => {}
        }
    }
    let windows = elapsed.as_millis() / INTERVAL.as_millis() + 2;
    println!("1,000 cart changes in {} ms: {frames} PRESENCE frames (at most {windows})", elapsed.as_millis());
    assert!(frames as u128 <= windows, "{frames} frames in {} windows", windows);
    server.stop().await;
}

#[tokio::test]
async fn online_counts_sessions_across_instances_and_a_killed_instances_shoppers_drop_out() {
    let redis = RedisServer::start();
    let url = redis.url();
    let one = TestServer::start_with(|c| {
        fast(c);
        c.redis_url = Some(url.clone());
        c.service_tokens = vec![TOKEN.to_owned()];
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let two = ServerProcess::start(
        &[],
        &dir.path().join("unused.sqlite3"),
        &["--redis-url", &url, "--presence-interval-ms", "200", "--presence-ttl-ms", "1500"],
    );
    let on_two = |s: &Shopper| Shopper {
        http: reqwest::Client::new(),
        base: two.base.clone(),
        addr: two.base.trim_start_matches("http://").parse().unwrap(),
        cookie: s.cookie.clone(),
    };
    let (a, b, c) = (one.shopper().await, one.shopper().await, one.shopper().await);
    let (mut watch, _) = Ws::connect_synced(&a).await;
    // b on the other instance, c on both.
    let _b = Ws::connect_synced(&on_two(&b)).await;
    let _c1 = Ws::connect_synced(&c).await;
    let _c2 = Ws::connect_synced(&on_two(&c)).await;
    let mut counts = serde_json::json!({"online": 0, "in_carts": {}});
    until_presence(&mut watch, &mut counts, |v| v["online"] == 3).await;
    // A notice counts the connections it reached at once on every instance (the others' as they last reported).
    let session = c.send(reqwest::Method::GET, "/api/session", None, &[]).await.body["session"].clone();
    let to_c = notify(&one, serde_json::json!({"session": session, "kind": "k", "message": "to c"})).await;
    assert_eq!(to_c["delivered_now"], 2, "c has a socket on each instance: {to_c}");
    let everyone = notify(&one, serde_json::json!({"kind": "k", "message": "to all"})).await;
    assert_eq!(everyone["delivered_now"], 4, "a, b and c's two: {everyone}");
    // Carts are counted in Redis, whichever instance changed them.
    a.add("glass-carafe", 1).await;
    on_two(&b).add("glass-carafe", 1).await;
    until_presence(&mut watch, &mut counts, |v| in_carts(v, "glass-carafe") == 2).await;
    on_two(&b).remove("glass-carafe").await;
    until_presence(&mut watch, &mut counts, |v| in_carts(v, "glass-carafe") == 1).await;
    drop(_c1);
    drop(_c2);
    until_presence(&mut watch, &mut counts, |v| v["online"] == 2).await;
    let killed = Instant::now();
    two.kill_9();
    until_presence(&mut watch, &mut counts, |v| v["online"] == 1).await;
    println!("a killed instance's shoppers left the count {} ms later (TTL 1.5 s)", killed.elapsed().as_millis());
    drop(dir);
    one.stop().await;
}
