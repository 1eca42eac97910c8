//! Behind a real load balancer (Debian's nginx with `deploy/nginx.conf.template`): the client address comes from
//! the trusted proxy's `X-Forwarded-For`, never from a header an untrusted peer sends; several instances serve
//! one shop URL round robin, WebSockets included, with no sticky sessions.

use std::net::IpAddr;

use reqwest::header::SET_COOKIE;

use crate::support::nginx::Nginx;
use crate::support::redis::RedisServer;
use crate::support::{Shopper, TestServer, Ws};

/// An HTTP client whose connections come from `local` (any 127.x address is this machine's loopback).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(local.parse::<IpAddr>().unwrap()).build().unwrap()
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn through_nginx_each_client_address_has_its_own_bucket_and_a_forged_header_changes_nothing() {
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.address_rate_per_sec = 1;
        c.address_burst = 3;
    })
    .await;
    let nginx = Nginx::start(&[server.addr]);
    let products = nginx.url("/api/products");

    // Shopper A (127.0.0.2) uses up its burst through the balancer…
    let a = client_from("127.0.0.2");
    for _ in 0..3 {
        assert_eq!(status(a.get(&products)).await, 200);
    }
    assert_eq!(status(a.get(&products)).await, 429);
    // …and naming someone else in X-Forwarded-For does not help: nginx appends the real address, the right-most.
    assert_eq!(status(a.get(&products).header("x-forwarded-for", "198.51.100.7")).await, 429);
    // Shopper B (127.0.0.3) behind the same balancer is not affected (keyed on the balancer, it would be).
    let b = client_from("127.0.0.3");
    assert_eq!(status(b.get(&products)).await, 200);

    // A direct client (127.0.0.4, not a trusted proxy) forging a new address on every request gets no new bucket.
    let direct = client_from("127.0.0.4");
    let codes: Vec<u16> =
        futures_util::future::join_all((0..5).map(|n| {
            status(direct.get(server.url("/api/products")).header("x-forwarded-for", format!("203.0.113.{n}")))
        }))
        .await;
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 3, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 429).count(), 2, "{codes:?}");
    drop(nginx);
    server.stop().await;
}

#[tokio::test]
async fn two_instances_behind_nginx_are_one_shop_url_websockets_and_changes_included() {
    let redis = RedisServer::start();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let url = redis.url();
        let server = TestServer::start_with(|c| {
            c.redis_url = Some(url);
            c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
        server.await_metric("cartwheel_redis_subscribed 1").await;
        instances.push(server);
    }
    let nginx = Nginx::start(&[instances[0].addr, instances[1].addr]);
    let http = reqwest::Client::new();
    let first = http.get(nginx.url("/api/cart")).send().await.unwrap();
    let cookie = first.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let shopper = Shopper { http, base: nginx.url(""), addr: nginx.addr, cookie };
    // Two sockets through the balancer (its own origin, as the page would open them), wherever they land.
    let (mut one, v0) = Ws::connect_synced(&shopper).await;
    let (mut two, _) = Ws::connect_synced(&shopper).await;
    for n in 1..=4u64 {
        let answer = shopper.add("linen-notebook", 1).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.version(), v0 + n);
        for ws in [&mut one, &mut two] {
            assert_eq!(ws.next_update().await["version"], v0 + n);
        }
    }
    // Round robin, no stickiness: both instances committed some of the changes.
    for server in &instances {
        let metrics = server.metrics().await;
        let committed: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("cartwheel_cart_mutations_total") && l.contains(r#"outcome="changed""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(committed > 0, "an instance served no change:\n{metrics}");
    }
    drop(nginx);
    for server in instances {
        server.stop().await;
    }
}
