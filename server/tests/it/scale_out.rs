//! Several instances sharing one real `redis-server`: changes made through one instance reach the connections
//! of every other with the right version; sessions, stock and notices are shared; Redis going away and coming
//! back, or an instance dying, loses nothing.

use crate::support::process::ServerProcess;
use crate::support::redis::RedisServer;
use crate::support::{quantity, set_cookie, v1_session_cookie, Shopper, TestServer, Ws};
use futures_util::future::join_all;
use reqwest::header::SET_COOKIE;
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN: &str = "scale-out-service-token";

async fn instance(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::start_with(|c| {
        c.redis_url = Some(url);
        c.service_tokens = vec![TOKEN.to_owned()];
        c.no_rate_limit = true;
    })
    .await
}

/// Wait until an instance reports its subscription up again (an event only `/metrics` shows).
async fn subscribed(server: &TestServer) {
    server.await_metric("cartwheel_redis_subscribed 1").await;
}

async fn service(server: &TestServer, method: Method, path: &str, body: Value) -> (u16, Value) {
    let response =
        reqwest::Client::new().request(method, server.url(path)).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Next frame of `kind`, skipping others (product updates and carts travel on different queues).
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = ws.next_json().await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_change_through_one_instance_reaches_the_connections_of_another_with_its_version() {
    let redis = RedisServer::start();
    let (one, two) = (instance(&redis).await, instance(&redis).await);
    subscribed(&one).await;
    subscribed(&two).await;
    let alice = one.shopper().await;
    // The cookie instance one issued is valid on instance two: same cart, no new session.
    let alice_on_two = alice.on(&two);
    let answer = alice_on_two.http.get(two.url("/api/cart")).header("cookie", &alice.cookie).send().await.unwrap();
    assert!(answer.headers().get(SET_COOKIE).is_none(), "instance two accepted instance one's cookie");
    let (mut ws_two, v0) = Ws::connect_synced(&alice_on_two).await;
    let (mut ws_one, _) = Ws::connect_synced(&alice).await;
    assert_eq!(v0, 0);

    let added = alice.add("linen-notebook", 2).await;
    assert_eq!(added.version(), 1);
    for ws in [&mut ws_two, &mut ws_one] {
        let update = ws.next_update().await;
        assert_eq!(update["version"], 1);
        assert_eq!(quantity(&update["data"], "linen-notebook"), 2);
    }
    // And back: a change through instance two reaches the connection on instance one.
    assert_eq!(alice_on_two.set("linen-notebook", 5).await.version(), 2);
    assert_eq!(ws_one.next_update().await["version"], 2);
    assert_eq!(ws_two.next_update().await["version"], 2);
    assert_eq!(alice.cart().await.version(), 2);
    ws_one.assert_quiet().await;
    ws_two.assert_quiet().await;
}

#[tokio::test]
async fn a_hundred_concurrent_changes_over_three_instances_get_versions_one_to_a_hundred_exactly_once() {
    let redis = RedisServer::start();
    let instances = [instance(&redis).await, instance(&redis).await, instance(&redis).await];
    for i in &instances {
        subscribed(i).await;
    }
    let shopper = instances[0].shopper().await;
    let shoppers: Vec<Shopper> = instances.iter().map(|i| shopper.on(i)).collect();
    let mut sockets = Vec::new();
    for s in &shoppers {
        for _ in 0..2 {
            sockets.push(Ws::connect_synced(s).await.0);
        }
    }

    let changes = (0..100).map(|i| {
        let s = &shoppers[i % 3];
        async move { s.add(if i % 2 == 0 { "ceramic-pour-over" } else { "linen-notebook" }, 1).await }
    });
    let mut versions: Vec<u64> = join_all(changes)
        .await
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{}", a.body);
            a.version()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=100).collect::<Vec<_>>(), "each version exactly once");

    for ws in &mut sockets {
        let mut last = 0;
        while last < 100 {
            let update = ws.next_update().await;
            let v = update["version"].as_u64().unwrap();
            assert!(v > last, "versions strictly increase on every connection: {v} after {last}");
            last = v;
        }
        ws.assert_quiet().await;
    }
    let cart = shopper.cart().await;
    assert_eq!(quantity(&cart.body, "ceramic-pour-over") + quantity(&cart.body, "linen-notebook"), 100);
}

#[tokio::test]
async fn redis_restarting_under_connected_clients_refuses_changes_meanwhile_and_loses_nothing_after() {
    let mut redis = RedisServer::start();
    let (one, two) = (instance(&redis).await, instance(&redis).await);
    subscribed(&one).await;
    subscribed(&two).await;
    let bob = one.shopper().await;
    assert_eq!(bob.add("glass-carafe", 1).await.version(), 1);
    let (mut ws_one, _) = Ws::connect_synced(&bob).await;
    let (mut ws_two, _) = Ws::connect_synced(&bob.on(&two)).await;

    redis.kill();
    let refused = bob.add("stoneware-mug", 3).await;
    refused.expect_error(503, "service_unavailable");
    assert!(refused.headers.get("retry-after").is_some(), "a 503 says when to retry");
    let health = reqwest::get(one.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "degraded");
    // The sockets stay open and answer.
    ws_one.assert_quiet().await;
    ws_two.assert_quiet().await;

    redis.restart();
    subscribed(&one).await;
    subscribed(&two).await;
    let after = bob.on(&two).add("cork-coasters", 2).await;
    assert_eq!(after.version(), 2, "the refused change took no version");
    for ws in [&mut ws_one, &mut ws_two] {
        let update = ws.next_update().await;
        assert_eq!(update["version"], 2);
        assert_eq!(quantity(&update["data"], "stoneware-mug"), 0, "the refused change changed nothing");
        assert_eq!(quantity(&update["data"], "glass-carafe"), 1, "what was committed before survived");
        ws.assert_quiet().await;
    }
    assert_eq!(reqwest::get(one.url("/healthz")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_change_committed_around_a_redis_restart_reaches_the_connection() {
    let mut redis = RedisServer::start();
    let one = instance(&redis).await;
    subscribed(&one).await;
    let carol = one.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&carol).await;
    redis.kill();
    redis.restart();
    // Usually committed before instance one has subscribed again (it waits at least 50 ms), so only the
    // catch-up after subscribing can deliver it; if the subscription was quicker, the channel does.
    let committed = carol.add("beeswax-candle", 1).await;
    assert_eq!(committed.status, 200, "{}", committed.body);
    let update = ws.next_update().await;
    assert_eq!(update["version"], committed.version());
    subscribed(&one).await;
    one.await_metric("cartwheel_redis_resubscriptions_total 1").await;
    ws.assert_quiet().await;
}

#[tokio::test]
async fn stock_and_notices_are_shared_by_every_instance() {
    let redis = RedisServer::start();
    let (one, two) = (instance(&redis).await, instance(&redis).await);
    subscribed(&one).await;
    subscribed(&two).await;
    let dave = two.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&dave).await;

    let (status, product) =
        service(&one, Method::PATCH, "/api/service/products/copper-planter", json!({"stock": 4})).await;
    assert_eq!(status, 200, "{product}");
    let update = next_of(&mut ws, "PRODUCT_UPDATE").await;
    assert_eq!(update["data"]["stock"], 4);
    assert_eq!(update["data"]["revision"], product["revision"]);
    let listed: Value = reqwest::get(two.url("/api/products/copper-planter")).await.unwrap().json().await.unwrap();
    assert_eq!(listed["stock"], 4, "instance two sells from the same stock");
    // Instance two checks against that stock too.
    dave.add("copper-planter", 5).await.expect_error(409, "insufficient_stock");

    let session: Value = dave.send(Method::GET, "/api/session", None, &[]).await.body;
    let (status, _) = service(
        &one,
        Method::POST,
        "/api/service/notify",
        json!({"session": session["id"], "kind": "hello", "message": "Hi from instance one"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(next_of(&mut ws, "NOTICE").await["data"]["message"], "Hi from instance one");
}

#[tokio::test]
async fn checkouts_racing_on_two_instances_for_the_last_units_sell_each_unit_once() {
    let redis = RedisServer::start();
    let (one, two) = (instance(&redis).await, instance(&redis).await);
    subscribed(&one).await;
    subscribed(&two).await;
    let mut shoppers = Vec::new();
    for i in 0..6 {
        let s = if i % 2 == 0 { one.shopper().await } else { two.shopper().await };
        // oak-monitor-stand: 2 in stock.
        assert_eq!(s.add("oak-monitor-stand", 1).await.status, 200);
        shoppers.push(s);
    }
    let answers = join_all(shoppers.iter().map(|s| s.send(Method::POST, "/api/cart/checkout", None, &[]))).await;
    let ordered = answers.iter().filter(|a| a.status == 201).count();
    assert_eq!(ordered, 2, "{:?}", answers.iter().map(|a| a.body.to_string()).collect::<Vec<_>>());
    for a in answers.iter().filter(|a| a.status != 201) {
        a.expect_error(409, "insufficient_stock");
    }
    for server in [&one, &two] {
        let listed: Value =
            reqwest::get(server.url("/api/products/oak-monitor-stand")).await.unwrap().json().await.unwrap();
        assert_eq!(listed["stock"], 0);
    }
}

/// An instance as a process of our own binary, so it can be killed for real.
fn process(redis: &RedisServer) -> ServerProcess {
    // Redis mode: the database path is never opened.
    ServerProcess::start(&[], std::path::Path::new("/nonexistent/unused.sqlite3"), &["--redis-url", &redis.url()])
}

#[tokio::test]
async fn clients_of_an_instance_killed_with_kill_9_reconnect_to_another_and_see_the_current_cart() {
    let redis = RedisServer::start();
    let mut doomed = process(&redis);
    let survivor = instance(&redis).await;
    subscribed(&survivor).await;
    let addr: std::net::SocketAddr = doomed.base.trim_start_matches("http://").parse().unwrap();
    let http = reqwest::Client::new();
    let first = http.get(format!("{}/api/cart", doomed.base)).send().await.unwrap();
    let cookie = first.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let erin = Shopper { http, base: doomed.base.clone(), addr, cookie };
    assert_eq!(erin.add("stoneware-mug", 2).await.version(), 1);
    let (mut ws, _) = Ws::connect_synced(&erin).await;

    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    assert_ne!(ws.expect_end().await, Some(1001), "killed, not shut down: no going-away close");
    // Meanwhile someone else in the same session changes the cart through the survivor.
    let erin_on_survivor = erin.on(&survivor);
    assert_eq!(erin_on_survivor.add("stoneware-mug", 1).await.version(), 2);
    // The client reconnects to the survivor (what the load balancer does) and gets the current cart.
    let mut again = erin_on_survivor.ws().await;
    let snapshot = again.next_update().await;
    assert_eq!(snapshot["version"], 2);
    assert_eq!(quantity(&snapshot["data"], "stoneware-mug"), 3);
}

#[tokio::test]
async fn a_socket_opened_while_redis_is_down_stays_open_and_gets_its_snapshot_when_redis_is_back() {
    let mut redis = RedisServer::start();
    let one = instance(&redis).await;
    subscribed(&one).await;
    let frank = one.shopper().await;
    assert_eq!(frank.add("bamboo-organizer", 2).await.version(), 1);
    redis.kill();
    let mut ws = frank.ws().await;
    let error = ws.next_json().await;
    assert_eq!(error["type"], "ERROR", "{error}");
    assert_eq!(error["code"], "service_unavailable");
    redis.restart();
    // Retried every second by the connection itself (or delivered by the catch-up), without another ERROR
    // for each failed retry: the committed cart is the next frame.
    let snapshot = ws.next_update().await;
    assert_eq!(snapshot["version"], 1);
    assert_eq!(quantity(&snapshot["data"], "bamboo-organizer"), 2);
}

/// A plain Redis client, as an operator's `redis-cli` would poke the keyspace.
async fn redis_cli(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// What used to wedge Redis mode for good: a stale shop-wide catalog revision and a product entry the catalog
/// file no longer lists (a service PATCHed it, a deploy removed it), or a catalog file carrying revisions
/// against an empty Redis. Products are guarded one by one now, so changes go through.
#[tokio::test]
async fn leftover_catalog_state_in_redis_and_revisions_in_the_catalog_file_wedge_nothing() {
    let redis = RedisServer::start();
    let mut cli = redis_cli(&redis).await;
    let _: () = redis::pipe()
        .set("cartwheel:catalog-revision", 5)
        .hset("cartwheel:products", "discontinued-thing", "3 1000 5")
        .query_async(&mut cli)
        .await
        .unwrap();
    let one = instance(&redis).await;
    let s = one.shopper().await;
    assert_eq!(s.add("stoneware-mug", 1).await.status, 200);
    drop(one);

    // A catalog file whose products carry revisions, against a Redis that has never seen them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.json");
    let mut catalog: Vec<Value> = serde_json::from_str(include_str!("../../catalog/products.json")).unwrap();
    for (i, p) in catalog.iter_mut().enumerate() {
        p["revision"] = json!(3 + i);
    }
    std::fs::write(&path, serde_json::to_string(&catalog).unwrap()).unwrap();
    let fresh = RedisServer::start();
    let url = fresh.url();
    let two = TestServer::start_with(|c| {
        c.redis_url = Some(url);
        c.catalog = Some(path.clone());
        c.service_tokens = vec![TOKEN.to_owned()];
        c.no_rate_limit = true;
    })
    .await;
    let t = two.shopper().await;
    let added = t.add("stoneware-mug", 1).await;
    assert_eq!(added.status, 200, "{}", added.body);
    let (status, product) =
        service(&two, Method::PATCH, "/api/service/products/stoneware-mug", json!({"stock": 40})).await;
    assert_eq!(status, 200, "{product}");
    assert!(product["revision"].as_u64().unwrap() > 3, "revisions keep growing from the file's: {product}");
    assert_eq!(t.send(Method::POST, "/api/cart/checkout", None, &[]).await.status, 201);
}

/// A flushed (or replaced) Redis starts every cart again at version 0: in a new epoch, which the instance
/// adopts and which its connections are sent although the version is lower than the one they hold.
#[tokio::test]
async fn a_flushed_redis_starts_a_new_epoch_that_open_connections_are_sent() {
    let redis = RedisServer::start();
    let one = instance(&redis).await;
    let s = one.shopper().await;
    for _ in 0..3 {
        s.add("stoneware-mug", 1).await;
    }
    let before = s.cart().await.body;
    let (mut ws, v) = Ws::connect_synced(&s).await;
    assert_eq!(v, 3);
    let mut cli = redis_cli(&redis).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut cli).await.unwrap();
    let after = s.add("stoneware-mug", 1).await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.version(), 1, "the cart starts again");
    assert_ne!(after.body["epoch"], before["epoch"], "in another history");
    let update = next_of(&mut ws, "CART_UPDATE").await;
    assert_eq!((update["version"].as_u64(), &update["data"]["epoch"]), (Some(1), &after.body["epoch"]));
}

/// Checkouts take stock inside the commit script, so two hundred shoppers buying the same product at once
/// over two instances all succeed while stock lasts — none is refused because others committed first.
#[tokio::test]
async fn two_hundred_concurrent_checkouts_of_one_product_over_two_instances_all_succeed() {
    let redis = RedisServer::start();
    let (one, two) = (instance(&redis).await, instance(&redis).await);
    let (status, _) = service(&one, Method::PATCH, "/api/service/products/stoneware-mug", json!({"stock": 1000})).await;
    assert_eq!(status, 200);
    let mut shoppers = Vec::new();
    for i in 0..200 {
        let s = if i % 2 == 0 { one.shopper().await } else { two.shopper().await };
        assert_eq!(s.add("stoneware-mug", 1).await.status, 200);
        shoppers.push(s);
    }
    let answers = join_all(shoppers.iter().map(|s| s.send(Method::POST, "/api/cart/checkout", None, &[]))).await;
    let refused: Vec<_> = answers.iter().filter(|a| a.status != 201).map(|a| (a.status, a.body.clone())).collect();
    assert!(refused.is_empty(), "{} of 200 refused, e.g. {:?}", refused.len(), refused.first());
    for server in [&one, &two] {
        let product: Value =
            reqwest::get(server.url("/api/products/stoneware-mug")).await.unwrap().json().await.unwrap();
        assert_eq!(product["stock"], 800, "every unit bought is counted once, on both instances");
    }
}

/// Redis stops answering writes for a while (`CLIENT PAUSE … WRITE`, as during a failover): the commit runs
/// once Redis resumes, after the instance has given up waiting. The instance asks again with the change's
/// Idempotency-Key, so the shopper gets the committed answer instead of an ambiguous 503; and when even that
/// times out, the client's retry with the same key is answered once.
#[tokio::test]
async fn a_commit_whose_answer_times_out_is_applied_once() {
    let redis = RedisServer::start();
    let one = instance(&redis).await;
    let s = one.shopper().await;
    s.add("stoneware-mug", 1).await;
    let mut cli = redis_cli(&redis).await;

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(2500).arg("WRITE").query_async(&mut cli).await.unwrap();
    let answered = s.add("stoneware-mug", 1).await;
    assert_eq!(answered.status, 200, "asked again, not 503: {}", answered.body);
    assert_eq!(s.cart().await.version(), 2);
    assert_eq!(quantity(&s.cart().await.body, "stoneware-mug"), 2, "applied once");

    // Longer than every attempt: 503, and nothing can say whether it was applied — the key can.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(7000).arg("WRITE").query_async(&mut cli).await.unwrap();
    let body = json!({ "product_id": "stoneware-mug", "quantity": 1 }).to_string();
    let key = [("idempotency-key", "retry-after-timeout-1")];
    let first = s.send(Method::POST, "/api/cart", Some(&body), &key).await;
    assert_eq!(first.status, 503, "{}", first.body);
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query_async(&mut cli).await.unwrap();
    let retried = s.send(Method::POST, "/api/cart", Some(&body), &key).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.version(), 3);
    assert_eq!(quantity(&s.cart().await.body, "stoneware-mug"), 3, "the timed-out change and its retry: once");
}

#[tokio::test]
async fn an_instance_with_another_session_secret_refuses_to_start_and_a_rotation_keeps_cookies() {
    const OLD: &str = "the-old-session-secret-0123456789abc";
    const NEW: &str = "the-new-session-secret-0123456789abc";
    const STRANGER: &str = "a-secret-nobody-else-has-0123456789";
    let redis = RedisServer::start();
    let with = |ring: &[&str]| {
        let mut config = crate::support::test_config(std::path::Path::new("/nonexistent/unused.sqlite3"));
        config.redis_url = Some(redis.url());
        config.session_secret = ring.iter().map(|s| s.to_string()).collect();
        config
    };
    let one = TestServer::start_with(|c| {
        *c = with(&[OLD]);
    })
    .await;
    let alice = one.shopper().await;
    assert_eq!(alice.add("linen-notebook", 1).await.version(), 1);
    // A stranger's secret would split sessions: it does not start.
    let refused = cartwheel_server::Server::bind(with(&[STRANGER])).await.err().expect("refused");
    assert!(
        refused.to_string().contains("session") || format!("{refused:?}").contains("SessionSecretMismatch"),
        "{refused:?}"
    );
    // Rotation, step 2: the new secret signs, the old one still verifies. Alice's cookie is still her cart.
    let two = TestServer::start_with(|c| {
        *c = with(&[NEW, OLD]);
    })
    .await;
    let on_two = alice.on(&two);
    let cart = on_two.cart().await;
    assert_eq!((cart.status.as_u16(), cart.version()), (200, 1));
    assert!(cart.headers.get(SET_COOKIE).is_none(), "no new session");
    // The old secret alone cannot verify what two now signs: an instance started with only it is refused.
    assert!(cartwheel_server::Server::bind(with(&[OLD])).await.is_err());
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn in_redis_mode_a_session_keeps_its_newest_idempotency_records_up_to_the_cap() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = TestServer::start_with(|c| {
        c.redis_url = Some(url);
        c.idempotency_keys_per_session = 3;
    })
    .await;
    let s = server.shopper().await;
    let body = r#"{"product_id":"linen-notebook","quantity":1}"#;
    for n in 1..=4u64 {
        let key = format!("key-{n}");
        assert_eq!(s.send(Method::POST, "/api/cart", Some(body), &[("idempotency-key", &key)]).await.version(), n);
    }
    let replay = s.send(Method::POST, "/api/cart", Some(body), &[("idempotency-key", "key-2")]).await;
    assert_eq!((replay.version(), replay.headers.get("idempotent-replayed").is_some()), (2, true));
    let evicted = s.send(Method::POST, "/api/cart", Some(body), &[("idempotency-key", "key-1")]).await;
    assert_eq!((evicted.version(), evicted.headers.get("idempotent-replayed").is_some()), (5, false));
    // In Redis itself: three client records for the session (key-1's new one evicted key-2), and their index.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let records: Vec<String> = redis::cmd("KEYS").arg("cartwheel:idem:*").query_async(&mut c).await.unwrap();
    let client_records = records.iter().filter(|k| !k.contains(":internal:")).count();
    assert_eq!(client_records, 3, "{records:?}");
    server.stop().await;
}

/// In Redis a cart expires by itself: each change sets its TTL to the cart expiry, and a session renewal (a
/// version 1 cookie is renewed on first use) sets it again — here after an operator's `PERSIST` took it off.
#[tokio::test]
async fn in_redis_mode_a_cart_expires_by_itself_and_a_session_renewal_refreshes_it() {
    const SECRET: &str = "a test secret of at least thirty-two bytes";
    let redis = RedisServer::start();
    let url = redis.url();
    let server = TestServer::start_with(|c| {
        c.redis_url = Some(url);
        c.session_secret = vec![SECRET.to_owned()];
        c.session_max_age_days = 3;
        c.cart_ttl_days = 3;
    })
    .await;
    let legacy = Shopper::with_cookie(&server, &v1_session_cookie(SECRET));
    assert_eq!(legacy.add("linen-notebook", 1).await.version(), 1);
    let mut cli = redis_cli(&redis).await;
    let carts: Vec<String> = redis::cmd("KEYS").arg("cartwheel:cart:*").query_async(&mut cli).await.unwrap();
    assert_eq!(carts.len(), 1, "{carts:?}");
    let ttl = |mut cli: redis::aio::MultiplexedConnection, key: String| async move {
        redis::cmd("TTL").arg(key).query_async::<i64>(&mut cli).await.unwrap()
    };
    let expiry = 3 * 86_400 + 3_600;
    let after_change = ttl(cli.clone(), carts[0].clone()).await;
    assert!((expiry - 60..=expiry).contains(&after_change), "TTL {after_change} after a change");
    let _: () = redis::cmd("PERSIST").arg(&carts[0]).query_async(&mut cli).await.unwrap();
    assert_eq!(ttl(cli.clone(), carts[0].clone()).await, -1);
    assert!(set_cookie(&legacy.cart().await.headers).is_some(), "renewed");
    let after_renewal = ttl(cli.clone(), carts[0].clone()).await;
    assert!((expiry - 60..=expiry).contains(&after_renewal), "TTL {after_renewal} after a renewal");
    server.stop().await;
}
