//! Notices that wait for the shopper: stored, sent after the snapshot on every (re)connect until acknowledged
//! (`ACK` frame or `POST /api/notices/ack`), bounded per session and for the shop, in both stores.

use std::time::Duration;

use crate::support::process::ServerProcess;
use crate::support::redis::RedisServer;
use crate::support::{Answer, Shopper, TestServer, Ws};
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN: &str = "service-token-for-tests-0001";

async fn start(adjust: impl FnOnce(&mut cartwheel_server::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.service_tokens = vec![TOKEN.to_owned()];
        adjust(c);
    })
    .await
}

async fn notify(server: &TestServer, body: Value) -> Answer {
    notify_at(&server.base, body).await
}

async fn notify_at(base: &str, body: Value) -> Answer {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/service/notify"))
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    Answer { status, headers, body: response.json().await.unwrap() }
}

async fn session_id(shopper: &Shopper) -> String {
    shopper.send(Method::GET, "/api/session", None, &[]).await.body["session"].as_str().unwrap().to_owned()
}

/// Connect, take the snapshot, and the `NOTICE` frames that follow it (the stored ones), up to a `PONG`.
async fn connect_and_collect(shopper: &Shopper) -> (Ws, Vec<Value>) {
    let (mut ws, _) = Ws::connect_synced(shopper).await;
    ws.send_text(r#"{"type":"PING","id":1}"#).await;
    let mut notices = Vec::new();
    loop {
        let v = ws.next_json().await;
        match v["type"].as_str() {
            Some("NOTICE") => notices.push(v),
            Some("PONG") => return (ws, notices),
            _ => panic!("unexpected {v}"),
        }
    }
}

fn messages(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["data"]["message"].as_str().unwrap()).collect()
}

async fn ack(ws: &mut Ws, frame: &Value) {
    ws.send_text(&json!({"type": "ACK", "upto": frame["seq"], "epoch": frame["epoch"]}).to_string()).await;
    // A PING after it: once its PONG is back, the ACK before it was handled.
    ws.assert_quiet().await;
}

#[tokio::test]
async fn a_notice_for_a_shopper_who_is_away_is_sent_on_every_connect_until_acknowledged() {
    let server = start(|_| {}).await;
    let shopper = server.shopper().await;
    let id = session_id(&shopper).await;
    let sent = notify(&server, json!({"session": id, "kind": "restock", "message": "Back in stock"})).await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert_eq!(sent.body["delivered_now"], 0, "nobody was connected");
    assert!(sent.body["id"].as_str().is_some_and(|i| i.starts_with("ntc_")));

    let (ws, first) = connect_and_collect(&shopper).await;
    assert_eq!(messages(&first), ["Back in stock"]);
    assert_eq!(first[0]["id"], sent.body["id"]);
    assert_eq!(first[0]["seq"], sent.body["seq"]);
    assert_eq!(first[0]["epoch"].as_str().map(str::len), Some(16));
    drop(ws);
    // Not acknowledged: sent again.
    let (mut ws, again) = connect_and_collect(&shopper).await;
    assert_eq!(again, first);
    ack(&mut ws, &again[0]).await;
    drop(ws);
    let (_ws, after_ack) = connect_and_collect(&shopper).await;
    assert!(after_ack.is_empty(), "acknowledged: not sent again, {after_ack:?}");
    let listed = shopper.send(Method::GET, "/api/notices", None, &[]).await;
    assert_eq!((listed.body["cursor"].clone(), listed.body["notices"].clone()), (sent.body["seq"].clone(), json!([])));
    server.await_metric("cartwheel_notices_replayed_total 2").await;
}

#[tokio::test]
async fn a_general_notice_waits_for_shoppers_already_seen_but_not_for_new_ones() {
    let server = start(|_| {}).await;
    let regular = server.shopper().await;
    drop(connect_and_collect(&regular).await);
    let sent = notify(&server, json!({"kind": "maintenance", "message": "Back in 5 minutes"})).await;
    assert_eq!(sent.body["delivered_now"], 0);
    let (_ws, got) = connect_and_collect(&regular).await;
    assert_eq!(messages(&got), ["Back in 5 minutes"], "sent while the shopper was away");
    // Sent well before the newcomer's session was issued (tokens say the second they were issued in).
    age_general_notices(&server.db, 5_000);
    let newcomer = server.shopper().await;
    let (_ws, none) = connect_and_collect(&newcomer).await;
    assert!(none.is_empty(), "a session first seen after it is not handed old announcements: {none:?}");
}

/// Move every general notice's time `ms` back, in the SQLite file itself.
fn age_general_notices(db: &std::path::Path, ms: i64) {
    let db = rusqlite::Connection::open(db).unwrap();
    db.execute("UPDATE notices SET created_ms = created_ms - ?1 WHERE cart_key IS NULL", [ms]).unwrap();
}

/// A shopper's page is served (the session issued), and a general notice goes out before its first socket
/// opens: it is not lost for want of a cursor. One sent well before the session is not handed to it.
#[tokio::test]
async fn a_general_notice_sent_between_the_page_and_the_first_socket_reaches_the_newcomer_in_either_store() {
    // SQLite: the older notice's row aged in the file.
    let server = start(|_| {}).await;
    assert_eq!(notify(&server, json!({"kind": "k", "message": "before the page"})).await.status, 202);
    age_general_notices(&server.db, 5_000);
    let newcomer = server.shopper().await;
    assert_eq!(notify(&server, json!({"kind": "k", "message": "after the page"})).await.status, 202);
    assert_eq!(messages(&connect_and_collect(&newcomer).await.1), ["after the page"]);
    let rest = newcomer.send(Method::GET, "/api/notices", None, &[]).await;
    assert_eq!(rest.body["notices"].as_array().map(Vec::len), Some(1), "REST the same: {}", rest.body);
    server.stop().await;

    // Redis: the older notice's member rewritten as sent five seconds earlier.
    let redis = RedisServer::start();
    let url = redis.url();
    let server = start(move |c| c.redis_url = Some(url)).await;
    assert_eq!(notify(&server, json!({"kind": "k", "message": "before the page"})).await.status, 202);
    let mut cli = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let kept: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg("cartwheel:notices")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut cli)
        .await
        .unwrap();
    let [(member, seq)] = kept.as_slice() else { panic!("one general notice kept: {kept:?}") };
    let mut aged: Value = serde_json::from_str(member).unwrap();
    aged["sent_at_ms"] = json!(aged["sent_at_ms"].as_u64().unwrap() - 5_000);
    let _: () = redis::pipe()
        .cmd("ZREM")
        .arg("cartwheel:notices")
        .arg(member)
        .cmd("ZADD")
        .arg("cartwheel:notices")
        .arg(*seq)
        .arg(aged.to_string())
        .query_async(&mut cli)
        .await
        .unwrap();
    let newcomer = server.shopper().await;
    assert_eq!(notify(&server, json!({"kind": "k", "message": "after the page"})).await.status, 202);
    assert_eq!(messages(&connect_and_collect(&newcomer).await.1), ["after the page"]);
    server.stop().await;
}

#[tokio::test]
async fn a_session_keeps_its_newest_notices_up_to_the_inbox_cap_in_order() {
    let server = start(|c| c.notice_inbox_cap = 3).await;
    let shopper = server.shopper().await;
    let id = session_id(&shopper).await;
    for n in 1..=5 {
        notify(&server, json!({"session": id, "kind": "k", "message": format!("n{n}")})).await;
    }
    let (_ws, got) = connect_and_collect(&shopper).await;
    assert_eq!(messages(&got), ["n3", "n4", "n5"]);
    let seqs: Vec<u64> = got.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first: {seqs:?}");
}

#[tokio::test]
async fn rest_lists_and_acknowledges_and_an_acknowledgement_of_another_epoch_changes_nothing() {
    let server = start(|_| {}).await;
    let shopper = server.shopper().await;
    let id = session_id(&shopper).await;
    for m in ["one", "two"] {
        notify(&server, json!({"session": id, "kind": "k", "message": m})).await;
    }
    let listed = shopper.send(Method::GET, "/api/notices", None, &[]).await;
    assert_eq!(listed.status, 200);
    let notices = listed.body["notices"].as_array().unwrap().clone();
    assert_eq!(notices.iter().map(|n| n["data"]["message"].as_str().unwrap()).collect::<Vec<_>>(), ["one", "two"]);
    let epoch = listed.body["epoch"].as_str().unwrap().to_owned();
    let ack = |upto: Value, epoch: &str| {
        let body = json!({"upto": upto, "epoch": epoch}).to_string();
        let shopper = &shopper;
        async move { shopper.send(Method::POST, "/api/notices/ack", Some(&body), &[]).await }
    };
    let foreign = ack(notices[1]["seq"].clone(), "00000000000000aa").await;
    assert_eq!((foreign.status.as_u16(), foreign.body["cursor"].as_u64()), (200, Some(0)), "another epoch: ignored");
    let first = ack(notices[0]["seq"].clone(), &epoch).await;
    assert_eq!(first.body["cursor"], notices[0]["seq"]);
    let left = shopper.send(Method::GET, "/api/notices", None, &[]).await;
    assert_eq!(left.body["notices"].as_array().map(Vec::len), Some(1));
    let beyond = ack(json!(1_000_000), &epoch).await;
    assert_eq!(beyond.body["cursor"], notices[1]["seq"], "never past the last notice given");
    ack(json!(-1), &epoch).await.expect_error(400, "invalid_json");
}

#[tokio::test]
async fn a_connection_that_falls_behind_the_ring_still_gets_the_general_notices_it_missed() {
    const RING: usize = 8;
    let server = start(|c| {
        c.broadcast_capacity = RING;
        c.no_rate_limit = true;
        // The stalled reader must outlast the flood, however slow the machine.
        c.send_timeout = Duration::from_secs(60);
    })
    .await;
    let shopper = server.shopper().await;
    let mut ws = shopper.ws_with_small_receive_buffer().await;
    // 2-byte characters, the longest message: ~1 KB a frame. Sixteen at a time (they share group commits), so
    // the flood is over well within the send timeout the stalled reader is closed after.
    let long = "é".repeat(cartwheel_core::Notice::MAX_MESSAGE_CHARS - 8);
    const FLOOD: usize = 600;
    futures_util::stream::iter(0..FLOOD)
        .for_each_concurrent(16, |n| {
            let (server, long) = (&server, &long);
            async move {
                let sent = notify(server, json!({"kind": "flood", "message": format!("{n} {long}")})).await;
                assert_eq!(sent.status, 202);
            }
        })
        .await;
    // Reading again: whatever fell out of the ring comes again from the store, so every one arrives.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < FLOOD {
        let v = ws.next_json().await;
        if v["type"] == "NOTICE" {
            seen.insert(v["seq"].as_u64().unwrap());
        }
    }
    // It did fall behind (the ring holds 8), and found out once it could write again: once or more, as the
    // machine's speed has it.
    let lagged = server.metric_value("cartwheel_ws_broadcast_lagged_total").await;
    assert!(lagged >= 1, "the connection never fell behind the ring");
}

#[tokio::test]
async fn in_redis_mode_notices_and_cursors_outlive_an_instance_and_a_reset_store_starts_over() {
    let redis = RedisServer::start();
    let url = redis.url();
    let with = |url: String| move |c: &mut cartwheel_server::config::Config| c.redis_url = Some(url);
    // Instance one is a process of its own, so it can be killed outright.
    let dir = tempfile::tempdir().unwrap();
    let one =
        ServerProcess::start(&[], &dir.path().join("unused.sqlite3"), &["--redis-url", &url, "--service-token", TOKEN]);
    let two = start(with(url.clone())).await;
    let shopper = two.shopper().await;
    let id = session_id(&shopper).await;
    let sent = notify_at(&one.base, json!({"session": id, "kind": "k", "message": "stored in Redis"})).await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    one.kill_9();
    let on_two = shopper;
    let (mut ws, got) = connect_and_collect(&on_two).await;
    assert_eq!(messages(&got), ["stored in Redis"]);
    assert_eq!(got[0]["id"], sent.body["id"]);
    ack(&mut ws, &got[0]).await;
    drop(ws);
    assert!(connect_and_collect(&on_two).await.1.is_empty(), "the cursor is in Redis");
    let old_epoch = got[0]["epoch"].clone();

    let mut cli = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut cli).await.unwrap();
    let fresh = notify(&two, json!({"session": id, "kind": "k", "message": "after the reset"})).await;
    assert_eq!(fresh.body["seq"], 1, "a new store's sequence starts again");
    let (_ws, got) = connect_and_collect(&on_two).await;
    assert_eq!(messages(&got), ["after the reset"], "an old cursor does not hold back the new sequence");
    assert_ne!(got[0]["epoch"], old_epoch);
    two.stop().await;
}

/// A stored notice older than `--notice-ttl-days` is not sent, in either store (aged here in the store itself).
#[tokio::test]
async fn an_expired_notice_is_not_sent_in_either_store() {
    const WEEK_AND_A_DAY_MS: i64 = 8 * 86_400_000;
    // SQLite: the row's time moved back.
    let server = start(|_| {}).await;
    let shopper = server.shopper().await;
    let id = session_id(&shopper).await;
    for m in ["old", "new"] {
        notify(&server, json!({"session": id, "kind": "k", "message": m})).await;
    }
    let db = rusqlite::Connection::open(&server.db).unwrap();
    db.execute("UPDATE notices SET created_ms = created_ms - ?1 WHERE body LIKE '%\"old\"%'", [WEEK_AND_A_DAY_MS])
        .unwrap();
    assert_eq!(messages(&connect_and_collect(&shopper).await.1), ["new"]);
    server.stop().await;

    // Redis: a member as the store writes it, sent eight days ago.
    let redis = RedisServer::start();
    let url = redis.url();
    let server = start(move |c| c.redis_url = Some(url)).await;
    let shopper = server.shopper().await;
    let id = session_id(&shopper).await;
    notify(&server, json!({"session": id, "kind": "k", "message": "new"})).await;
    let mut cli = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    // Numbered after every real one, so only its age keeps it back.
    let old = json!({"id": "ntc_old", "seq": 1_000, "sent_at_ms": 1_000, "data": {"kind": "k", "message": "old"}});
    let _: () = redis::cmd("ZADD")
        .arg(format!("cartwheel:inbox:{id}"))
        .arg(1_000)
        .arg(old.to_string())
        .query_async(&mut cli)
        .await
        .unwrap();
    assert_eq!(messages(&connect_and_collect(&shopper).await.1), ["new"]);
    server.stop().await;
}
