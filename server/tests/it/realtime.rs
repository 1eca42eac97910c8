//! The WebSocket side against the real server: who receives which update, the protocol's frames, its limits,
//! ordering under concurrency, slow consumers, heartbeats and shutdown.

use std::collections::BTreeSet;

use crate::support::{TestServer, Ws};
use cartwheel_core::protocol::close;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

async fn product_with_stock_at_least(server: &TestServer, n: u64) -> Vec<String> {
    let all: Vec<Value> = reqwest::get(server.url("/api/products")).await.unwrap().json().await.unwrap();
    all.iter().filter(|p| p["stock"].as_u64().unwrap() >= n).map(|p| p["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_mutation_reaches_exactly_the_sessions_sockets_with_its_version() {
    let server = TestServer::start().await;
    let id = &product_with_stock_at_least(&server, 10).await[0];
    let alice = server.shopper().await;
    let bob = server.shopper().await;
    let (mut a1, v1) = Ws::connect_synced(&alice).await;
    let (mut a2, v2) = Ws::connect_synced(&alice).await;
    let (mut b1, vb) = Ws::connect_synced(&bob).await;
    assert_eq!((v1, v2, vb), (0, 0, 0));

    let posted = alice.add(id, 2).await;
    assert_eq!(posted.status, 200);
    for ws in [&mut a1, &mut a2] {
        let update = ws.next_update().await;
        assert_eq!(update["version"], posted.version());
        assert_eq!(update["data"], posted.body, "the broadcast carries the same cart the POST answered");
    }
    b1.assert_quiet().await;
    a1.assert_quiet().await;

    let bob_posted = bob.add(id, 1).await;
    assert_eq!(b1.next_update().await["version"], bob_posted.version());
    a1.assert_quiet().await;
    a2.assert_quiet().await;
}

#[tokio::test]
async fn upgrade_requires_a_session_and_an_allowed_origin() {
    let server = TestServer::start().await;
    let s = server.shopper().await;
    let own = format!("http://{}", server.addr);
    assert_eq!(Ws::connect(server.addr, None, Some(&own)).await.err(), Some(401), "no cookie");
    assert_eq!(Ws::connect(server.addr, Some("cartwheel_session=forged"), Some(&own)).await.err(), Some(401));
    assert_eq!(Ws::connect(server.addr, Some(&s.cookie), Some("http://evil.example")).await.err(), Some(403));
    assert_eq!(Ws::connect(server.addr, Some(&s.cookie), Some("null")).await.err(), Some(403));
    assert!(Ws::connect(server.addr, Some(&s.cookie), None).await.is_ok(), "non-browser clients send no Origin");
    assert!(Ws::connect(server.addr, Some(&s.cookie), Some(&own)).await.is_ok());
    // A plain GET without the upgrade headers gets a JSON error, not a hang.
    let plain = s.send(reqwest::Method::GET, "/ws", None, &[]).await;
    assert_eq!(plain.status.as_u16() / 100, 4, "{}", plain.body);
}

#[tokio::test]
async fn ping_pong_resync_and_bad_frames() {
    let server = TestServer::start().await;
    let id = &product_with_stock_at_least(&server, 10).await[0];
    let s = server.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&s).await;

    ws.send_text(r#"{"type":"PING","id":7}"#).await;
    let pong = ws.next_json().await;
    assert_eq!((pong["type"].as_str(), pong["id"].as_u64()), (Some("PONG"), Some(7)));
    assert!(pong["server_time_ms"].as_u64().unwrap() > 1_700_000_000_000);

    s.add(id, 1).await;
    assert_eq!(ws.next_update().await["version"], 1);
    ws.send_text(r#"{"type":"RESYNC"}"#).await;
    let snapshot = ws.next_update().await;
    assert_eq!(snapshot["version"], 1, "RESYNC answers with the current cart even if already seen");
    assert_eq!(snapshot["data"]["items"][0]["product_id"], id.as_str());

    for bad in ["not json", r#"{"type":"DANCE"}"#, r#"{"type":"PING","id":"seven"}"#, "{}"] {
        ws.send_text(bad).await;
        let e = ws.next_json().await;
        assert_eq!(e["type"], "ERROR", "{bad} → {e}");
        assert_eq!(e["code"], "invalid_message");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    ws.stream.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(ws.next_json().await["code"], "invalid_message");
    ws.assert_quiet().await; // still open and working
}

#[tokio::test]
async fn oversized_frame_closes_with_1009_and_the_limit_is_inclusive() {
    let server = TestServer::start().await;
    let s = server.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&s).await;
    let limit = cartwheel_core::protocol::MAX_WS_MESSAGE_BYTES;
    let padded = format!(r#"{{"type":"PING","id":1,"pad":"{}"}}"#, "x".repeat(limit - 31));
    assert_eq!(padded.len(), limit);
    ws.send_text(&padded).await;
    assert_eq!(ws.next_json().await["type"], "PONG", "exactly the limit is accepted");
    ws.send_text(&format!("{padded} ")).await;
    assert_eq!(ws.expect_close().await, close::MESSAGE_TOO_BIG);
    server.await_metric(r#"cartwheel_ws_disconnects_total{reason="message_too_big"} 1"#).await;
}

#[tokio::test]
async fn flooding_client_gets_an_error_then_1008() {
    let server = TestServer::start_with(|c| {
        c.ws_frame_burst = 5;
        c.ws_frames_per_sec = 1;
    })
    .await;
    let s = server.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&s).await;
    for i in 0..6 {
        ws.send_text(&format!(r#"{{"type":"PING","id":{i}}}"#)).await;
    }
    for i in 0..5 {
        assert_eq!(ws.next_json().await["id"], i, "the burst is answered");
    }
    let e = ws.next_json().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("ERROR"), Some("rate_limited")));
    assert_eq!(ws.expect_close().await, close::POLICY_VIOLATION);
}

#[tokio::test]
async fn websocket_ping_frames_count_against_the_frame_rate_too() {
    let server = TestServer::start_with(|c| {
        c.ws_frame_burst = 5;
        c.ws_frames_per_sec = 1;
    })
    .await;
    let s = server.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&s).await;
    // Five control-frame Pings are within the burst (each answered with a Pong by the library); the sixth is not.
    for _ in 0..6 {
        ws.stream.send(Message::Ping(Default::default())).await.unwrap();
    }
    assert_eq!(ws.expect_close().await, close::POLICY_VIOLATION);
    server.await_metric(r#"cartwheel_ws_disconnects_total{reason="flooding"} 1"#).await;
}

#[tokio::test]
async fn fifty_concurrent_mutations_get_versions_one_to_fifty_in_order_everywhere() {
    let server = TestServer::start().await;
    let ids = product_with_stock_at_least(&server, 50).await;
    let s = server.shopper().await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(Ws::connect_synced(&s).await.0);
    }
    let requests = (0..50).map(|i| s.add(&ids[i % ids.len()], 1));
    let answers = futures_util::future::join_all(requests).await;
    let versions: BTreeSet<u64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{}", a.body);
            a.version()
        })
        .collect();
    assert_eq!(versions, (1..=50).collect(), "each version exactly once");
    assert_eq!(s.cart().await.body["item_count"], 50);
    for ws in &mut sockets {
        let mut last = 0;
        while last < 50 {
            let v = ws.next_update().await["version"].as_u64().unwrap();
            assert!(v > last, "strictly increasing: {v} after {last}");
            last = v;
        }
        ws.assert_quiet().await;
    }
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_delay_others_and_ends_on_the_latest() {
    let server = TestServer::start_with(|c| {
        c.ws_queue_capacity = 4;
        c.no_rate_limit = true; // 1,500 sequential changes on one session are far above a human's rate
    })
    .await;
    let ids = product_with_stock_at_least(&server, 3).await;
    assert!(ids.len() >= 8, "enough products for a big cart");
    let s = server.shopper().await;
    // Big carts make big frames, so the stalled socket's TCP buffers fill and the server must coalesce.
    for id in ids.iter().take(8) {
        s.add(id, 1).await;
    }
    let mut stalled = s.ws_with_small_receive_buffer().await;
    let v0 = stalled.next_update().await["version"].as_u64().unwrap();
    let (mut live, _) = Ws::connect_synced(&s).await;
    let rounds = 1500u64;
    for i in 0..rounds {
        let q = 2 + i64::try_from(i % 2).unwrap();
        let answer = s.set(&ids[0], q).await;
        assert_eq!(answer.status, 200);
        // The live subscriber sees each change before the next is made: the stalled one never holds it up.
        assert_eq!(live.next_update().await["version"], v0 + i + 1);
    }
    let last = v0 + rounds;
    // Now the stalled subscriber reads: strictly increasing versions, ending on the latest snapshot.
    let mut seen = Vec::new();
    loop {
        let v = stalled.next_update().await["version"].as_u64().unwrap();
        assert!(seen.last().is_none_or(|&p| v > p));
        seen.push(v);
        if v == last {
            break;
        }
    }
    assert!(
        (seen.len() as u64) < rounds,
        "the stalled socket skipped stale versions ({} frames for {rounds} changes)",
        seen.len()
    );
    let slow = server.metric_value("cartwheel_ws_slow_consumer_events_total").await;
    assert!(slow > 0, "the overflow was counted");
}

#[tokio::test]
async fn unresponsive_peer_is_closed_by_the_heartbeat() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = std::time::Duration::from_millis(200);
        c.heartbeat_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let s = server.shopper().await;
    let (mut silent, _) = Ws::connect_synced(&s).await;
    let (mut healthy, _) = Ws::connect_synced(&s).await;
    // `silent` is never polled, so it never answers the server's Pings; `healthy` is read throughout
    // (tungstenite answers Pings while reading), and must outlive the timeout.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(async move {
        loop {
            healthy.assert_quiet().await;
            tokio::select! {
                _ = &mut stopped => return healthy,
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
    });
    server.await_metric(r#"cartwheel_ws_disconnects_total{reason="heartbeat_timeout"} 1"#).await;
    server.await_metric("cartwheel_ws_connections_open 1").await;
    let ending = silent.expect_end().await;
    assert!(matches!(ending, Some(close::GOING_AWAY) | None), "closed with 1001 or reset, got {ending:?}");
    stop.send(()).unwrap();
    let mut healthy = watch.await.unwrap();
    healthy.assert_quiet().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let server = TestServer::start().await;
    let s = server.shopper().await;
    let (mut ws, _) = Ws::connect_synced(&s).await;
    let reader = tokio::spawn(async move { ws.expect_close().await });
    server.stop().await;
    assert_eq!(reader.await.unwrap(), close::GOING_AWAY);
}

/// Cancellation is a fault like any other: a client that sends a change and hangs up at once drops its handler
/// wherever it was, yet the change is committed by the store all the same — and then every open tab of that
/// shopper must hear of it, or the page shows a cart older than the stored one until something else changes.
#[tokio::test]
async fn a_change_whose_client_hangs_up_right_after_sending_still_reaches_every_open_tab() {
    use tokio::io::AsyncWriteExt;

    let server = TestServer::start().await;
    let id = &product_with_stock_at_least(&server, 10).await[0];
    let shopper = server.shopper().await;
    let (mut tab, v0) = Ws::connect_synced(&shopper).await;
    assert_eq!(v0, 0);

    let body = format!(r#"{{"product_id":"{id}","quantity":1}}"#);
    let request = format!(
        "POST /api/cart HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        server.addr,
        shopper.cookie,
        body.len()
    );
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(request.as_bytes()).await.unwrap();
    // Hang up without reading the answer: the server sees EOF while the change is in flight.
    drop(raw);

    let update = tab.next_update().await;
    assert_eq!(update["version"], 1, "{update}");
    assert_eq!(update["data"]["items"][0]["product_id"], id.as_str(), "{update}");
    assert_eq!(shopper.cart().await.version(), 1, "what the tab shows is what is stored");
}

/// A WebSocket opened by hand over raw TCP (the handshake written out), with its first frames unread.
async fn raw_socket(server: &TestServer, cookie: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nCookie: {cookie}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        addr = server.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // The answer's head, byte by byte, so no frame after it is read here.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "the RFC's accept key: {head}");
    tcp
}

/// A client frame as a browser sends it: masked.
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7, 1, 9, 3];
    assert!(payload.len() < 126);
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Server frames until a close frame: its code (`None` if the connection ended without one, or the close
/// frame carried none), and the texts before it.
async fn close_code_of(tcp: &mut (impl tokio::io::AsyncRead + Unpin)) -> (Option<u16>, Vec<String>) {
    use tokio::io::AsyncReadExt;
    let mut texts = Vec::new();
    loop {
        let Ok(first) = tcp.read_u8().await else { return (None, texts) };
        let Ok(second) = tcp.read_u8().await else { return (None, texts) };
        assert_eq!(second & 0x80, 0, "server frames are never masked");
        let len = match second & 0x7f {
            126 => tcp.read_u16().await.map(usize::from),
            127 => tcp.read_u64().await.map(|n| usize::try_from(n).unwrap()),
            n => Ok(usize::from(n)),
        };
        let Ok(len) = len else { return (None, texts) };
        let mut payload = vec![0; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return (None, texts);
        }
        match first & 0x0f {
            0x8 => return (payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])), texts),
            0x1 => texts.push(String::from_utf8(payload).unwrap()),
            _ => {}
        }
    }
}

/// What a server must refuse, sent over raw TCP: an unmasked frame closes with 1002, text that is not UTF-8
/// with 1007; a frame after a valid one is still answered first.
#[tokio::test]
async fn bytes_that_are_not_websocket_close_with_the_rfcs_codes() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let shopper = server.shopper().await;

    let mut tcp = raw_socket(&server, &shopper.cookie).await;
    let mut bytes = masked(0x1, br#"{"type":"PING","id":7}"#);
    bytes.extend_from_slice(&[0x81, 2, b'h', b'i']); // unmasked
    tcp.write_all(&bytes).await.unwrap();
    let (code, texts) = close_code_of(&mut tcp).await;
    assert_eq!(code, Some(close::PROTOCOL_ERROR));
    assert!(texts.iter().any(|t| t.contains(r#""type":"PONG","id":7"#)), "the valid frame first: {texts:?}");

    let mut tcp = raw_socket(&server, &shopper.cookie).await;
    tcp.write_all(&masked(0x1, &[0xff, 0xfe, 0xfd])).await.unwrap();
    assert_eq!(close_code_of(&mut tcp).await.0, Some(close::INVALID_PAYLOAD));

    // The client's own close is answered with its code; a code no peer may send (1005: "no status") is a
    // protocol error, not echoed.
    let mut tcp = raw_socket(&server, &shopper.cookie).await;
    tcp.write_all(&masked(0x8, &4321u16.to_be_bytes())).await.unwrap();
    assert_eq!(close_code_of(&mut tcp).await.0, Some(4321));
    let mut tcp = raw_socket(&server, &shopper.cookie).await;
    tcp.write_all(&masked(0x8, &1005u16.to_be_bytes())).await.unwrap();
    assert_eq!(close_code_of(&mut tcp).await.0, Some(close::PROTOCOL_ERROR));
    server.await_metric(r#"cartwheel_ws_disconnects_total{reason="read_error"} 3"#).await;
    server.await_metric(r#"cartwheel_ws_disconnects_total{reason="client_closed"} 1"#).await;
}

/// What is not a WebSocket upgrade the server can take is refused before it, as JSON: a version other than 13
/// with 426 and the version it speaks (RFC 6455 §4.4), a key that is not 16 bytes in base64 with 400.
#[tokio::test]
async fn an_upgrade_of_another_version_or_with_a_malformed_key_is_refused_in_json() {
    let server = TestServer::start().await;
    let shopper = server.shopper().await;
    let upgrade = |version: &'static str, key: &'static str| {
        shopper
            .http
            .get(server.url("/ws"))
            .header("cookie", &shopper.cookie)
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", version)
            .header("sec-websocket-key", key)
            .send()
    };
    let old = upgrade("8", "dGhlIHNhbXBsZSBub25jZQ==").await.unwrap();
    assert_eq!(old.status(), 426);
    assert_eq!(old.headers().get("sec-websocket-version").map(|v| v.as_bytes()), Some(&b"13"[..]));
    assert_eq!(old.json::<serde_json::Value>().await.unwrap()["error"]["code"], "invalid_message");
    for key in ["not base64!", "c2hvcnQ=", "dGhlIHNhbXBsZSBub25jZSBhbmQgbW9yZQ=="] {
        let refused = upgrade("13", key).await.unwrap();
        assert_eq!(refused.status(), 400, "key {key}");
        assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"]["code"], "invalid_message");
    }
    // (Those got past `Connection: keep-alive, Upgrade`: a token list, in any case.) The RFC's own key is taken.
    let _ = raw_socket(&server, &shopper.cookie).await;
}

/// A message larger than the limit, still arriving when it is refused (from its header): the client gets the
/// 1009 close frame, not a reset that could swallow it — the rest of its bytes are read and thrown away.
#[tokio::test]
async fn an_oversized_message_still_arriving_is_answered_with_1009_not_a_reset() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let shopper = server.shopper().await;
    let tcp = raw_socket(&server, &shopper.cookie).await;
    let (mut read, mut write) = tcp.into_split();
    let size = 4 * cartwheel_core::protocol::MAX_WS_MESSAGE_BYTES;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(size as u64).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    // The payload goes on being written while the server answers (the writes fail once it has let go).
    let writer = tokio::spawn(async move {
        if write.write_all(&header).await.is_ok() {
            for _ in 0..size / 4096 {
                if write.write_all(&[b'x'; 4096]).await.is_err() {
                    break;
                }
            }
        }
        write
    });
    assert_eq!(close_code_of(&mut read).await.0, Some(close::MESSAGE_TOO_BIG));
    // Every byte was taken: the writer finishes, hangs up, and the server's end is an orderly one.
    let write = writer.await.unwrap();
    drop(write);
    let mut rest = [0u8; 64];
    let end = tokio::io::AsyncReadExt::read(&mut read, &mut rest).await;
    assert!(matches!(end, Ok(0)), "a clean end after the close frame, not a reset: {end:?}");
    server.await_metric(r#"cartwheel_ws_disconnects_total{reason="message_too_big"} 1"#).await;
}

/// A client that sends a message and hangs up at once: the server handles what it read, sees the end, and
/// lets the connection go (no task, slot or quota left behind).
#[tokio::test]
async fn a_client_that_hangs_up_right_after_sending_is_let_go() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let shopper = server.shopper().await;
    let mut tcp = raw_socket(&server, &shopper.cookie).await;
    tcp.write_all(&masked(0x1, br#"{"type":"RESYNC"}"#)).await.unwrap();
    drop(tcp);
    server.await_metric(r#"cartwheel_ws_disconnects_total{reason="client_gone"} 1"#).await;
    server.await_metric("cartwheel_ws_connections_open 0").await;
}
