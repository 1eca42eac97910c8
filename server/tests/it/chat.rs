//! The help chat, both ways through the server: shoppers on `/ws` (and REST), services on
//! `/api/service/ws` (and REST), one service per conversation, stored and replayed, across instances through a
//! real `redis-server`.

use std::time::Instant;

use crate::support::redis::RedisServer;
use crate::support::{Shopper, TestServer, Ws};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "chat-service-token-0123456789";
const NOTIFY_ONLY: &str = "notifier:notify:notify-only-token-0123456789";

async fn server_with(adjust: impl FnOnce(&mut cartwheel_server::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.service_tokens = vec![TOKEN.to_owned(), NOTIFY_ONLY.to_owned()];
        adjust(c);
    })
    .await
}

/// A service's socket; `Err` carries the status of a refused upgrade.
async fn service(server: &TestServer, token: &str) -> Result<Ws, u16> {
    let mut request = format!("ws://{}/api/service/ws", server.addr).into_client_request().unwrap();
    request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, _)) => Ok(Ws { stream }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("service connect failed: {e}"),
    }
}

/// The session id services address a shopper by.
async fn session_of(shopper: &Shopper) -> String {
    shopper.send(reqwest::Method::GET, "/api/session", None, &[]).await.body["session"].as_str().unwrap().to_owned()
}

/// The next `CHAT` frame, skipping the others (snapshots, notices).
async fn next_chat(ws: &mut Ws) -> Value {
    loop {
        let frame = ws.next_json().await;
        if frame["type"] == "CHAT" || frame["type"] == "ERROR" {
            return frame;
        }
    }
}

/// The next `ERROR` frame, skipping messages handed meanwhile.
async fn next_error(ws: &mut Ws) -> Value {
    loop {
        let frame = ws.next_json().await;
        if frame["type"] == "ERROR" {
            return frame;
        }
    }
}

/// Nothing is queued for this service: the refusal of a frame it sends now is the very next frame.
async fn assert_quiet_service(service: &mut Ws) {
    service.send_text("probe").await;
    let next = service.next_json().await;
    assert_eq!(next["type"], "ERROR", "expected nothing queued, got {next}");
}

async fn say(ws: &mut Ws, text: &str, client_id: &str) {
    ws.send_text(&json!({"type": "CHAT", "text": text, "client_id": client_id}).to_string()).await;
}

async fn reply(service: &mut Ws, session: &str, text: &str) {
    service.send_text(&json!({"type": "REPLY", "session": session, "text": text}).to_string()).await;
}

async fn ack(service: &mut Ws, id: &str) {
    service.send_text(&json!({"type": "ACK", "id": id}).to_string()).await;
}

#[tokio::test]
async fn a_shopper_asks_a_service_answers_and_every_tab_sees_both_only_that_shoppers() {
    let server = server_with(|_| {}).await;
    let shopper = Shopper::new(&server).await;
    let stranger = Shopper::new(&server).await;
    let session = session_of(&shopper).await;
    let mut bot = service(&server, TOKEN).await.expect("a chat-scoped token connects");
    let (mut tab1, _) = Ws::connect_synced(&shopper).await;
    let (mut tab2, _) = Ws::connect_synced(&shopper).await;
    let (mut other, _) = Ws::connect_synced(&stranger).await;

    let asked = Instant::now();
    say(&mut tab1, "Is the walnut lamp in stock?", "c-1").await;
    // Every tab of the session gets the shopper's own message.
    for tab in [&mut tab1, &mut tab2] {
        let mine = next_chat(tab).await;
        assert_eq!(
            (mine["from"].as_str(), mine["text"].as_str()),
            (Some("shopper"), Some("Is the walnut lamp in stock?"))
        );
        assert_eq!(mine["client_id"], "c-1");
        assert!(mine["id"].as_str().unwrap().starts_with("msg_"));
    }
    let handed = next_chat(&mut bot).await;
    assert_eq!(handed["session"], session.as_str());
    assert_eq!(handed["text"], "Is the walnut lamp in stock?");
    reply(&mut bot, &session, "Yes, 3 left.").await;
    ack(&mut bot, handed["id"].as_str().unwrap()).await;
    for tab in [&mut tab1, &mut tab2] {
        let answer = next_chat(tab).await;
        assert_eq!((answer["from"].as_str(), answer["text"].as_str()), (Some("service"), Some("Yes, 3 left.")));
    }
    println!("help chat round trip, one instance: {} ms", asked.elapsed().as_millis());
    // The other shopper saw none of it.
    other.assert_quiet().await;
    let theirs = stranger.send(reqwest::Method::GET, "/api/chat", None, &[]).await;
    assert_eq!(theirs.body["messages"], json!([]));
    // Stored: a reload reads the conversation.
    let history = shopper.send(reqwest::Method::GET, "/api/chat", None, &[]).await;
    assert_eq!(history.status, StatusCode::OK);
    let texts: Vec<&str> =
        history.body["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Is the walnut lamp in stock?", "Yes, 3 left."]);
    assert_eq!(history.body["support_online"], true);
    // A retry of the same client id is the same message, not a second one.
    say(&mut tab1, "Is the walnut lamp in stock?", "c-1").await;
    tab1.assert_quiet().await;
    assert_eq!(
        shopper.send(reqwest::Method::GET, "/api/chat", None, &[]).await.body["messages"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn messages_written_while_no_service_is_connected_wait_and_go_in_order_to_the_first_that_connects() {
    let server = server_with(|_| {}).await;
    let shopper = Shopper::new(&server).await;
    let (mut tab, _) = Ws::connect_synced(&shopper).await;
    for (i, text) in ["first", "second", "third"].iter().enumerate() {
        say(&mut tab, text, &format!("c-{i}")).await;
        assert_eq!(next_chat(&mut tab).await["text"], *text);
    }
    let history = shopper.send(reqwest::Method::GET, "/api/chat", None, &[]).await;
    assert_eq!(history.body["support_online"], false, "the page says support is offline");
    // Over REST too, when the socket is down: the Idempotency-Key makes a retry count once.
    let body = json!({"text": "fourth"}).to_string();
    for _ in 0..2 {
        let posted =
            shopper.send(reqwest::Method::POST, "/api/chat", Some(&body), &[("idempotency-key", "rest-4")]).await;
        assert_eq!(posted.status, StatusCode::CREATED, "{}", posted.body);
        assert_eq!(posted.body["support_online"], false);
    }
    let mut bot = service(&server, TOKEN).await.unwrap();
    for text in ["first", "second", "third", "fourth"] {
        let handed = next_chat(&mut bot).await;
        assert_eq!(handed["text"], text, "in order, each once");
        ack(&mut bot, handed["id"].as_str().unwrap()).await;
    }
    assert_quiet_service(&mut bot).await;
}

#[tokio::test]
async fn a_service_that_goes_away_mid_conversation_hands_its_unanswered_messages_to_another() {
    let server = server_with(|_| {}).await;
    let shopper = Shopper::new(&server).await;
    let session = session_of(&shopper).await;
    let (mut tab, _) = Ws::connect_synced(&shopper).await;
    let mut first = service(&server, TOKEN).await.unwrap();
    say(&mut tab, "hello?", "c-1").await;
    let handed = next_chat(&mut first).await;
    assert_eq!(handed["text"], "hello?");
    // A second service connects: the conversation stays with the first while it is connected.
    let mut second = service(&server, TOKEN).await.unwrap();
    say(&mut tab, "anyone?", "c-2").await;
    assert_eq!(next_chat(&mut first).await["text"], "anyone?");
    assert_quiet_service(&mut second).await;
    // The first dies without acknowledging: both go to the second, in order.
    drop(first);
    let again = next_chat(&mut second).await;
    assert_eq!((again["text"].as_str(), again["session"].as_str()), (Some("hello?"), Some(session.as_str())));
    assert_eq!(next_chat(&mut second).await["text"], "anyone?");
}

#[tokio::test]
async fn several_services_share_the_waiting_conversations() {
    let server = server_with(|_| {}).await;
    let mut one = service(&server, TOKEN).await.unwrap();
    let mut two = service(&server, TOKEN).await.unwrap();
    // Both seated before anyone writes (the `101` comes before the server has taken the seat).
    server.await_metric("cartwheel_chat_services_open 2").await;
    let mut tabs = Vec::new();
    // Least busy first: one question at a time, each handed out before the next is asked, so every claim
    // sees which service holds more; none gets all four.
    let mut got = [0, 0];
    for i in 0..4 {
        let shopper = Shopper::new(&server).await;
        let (mut tab, _) = Ws::connect_synced(&shopper).await;
        say(&mut tab, &format!("question {i}"), "c").await;
        tabs.push(tab);
        tokio::select! {
            frame = next_chat(&mut one) => { assert_eq!(frame["type"], "CHAT"); got[0] += 1; }
            frame = next_chat(&mut two) => { assert_eq!(frame["type"], "CHAT"); got[1] += 1; }
        }
    }
    assert_eq!(got, [2, 2], "each took one while the other held more");
}

#[tokio::test]
async fn the_limits_hold_at_their_edges_with_an_error_frame_and_the_socket_open() {
    let server = server_with(|c| {
        c.chat_per_minute = 3;
    })
    .await;
    let shopper = Shopper::new(&server).await;
    let (mut tab, _) = Ws::connect_synced(&shopper).await;
    let at = "x".repeat(cartwheel_core::chat::ChatLimits::DEFAULT_MAX_CHARS);
    say(&mut tab, &at, "c-1").await;
    assert_eq!(next_chat(&mut tab).await["text"].as_str().map(str::len), Some(2_000), "2,000 characters pass");
    say(&mut tab, &format!("{at}x"), "c-2").await;
    let refused = next_chat(&mut tab).await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("ERROR"), Some("invalid_field")));
    say(&mut tab, "   ", "c-3").await;
    assert_eq!(next_chat(&mut tab).await["code"], "invalid_field", "empty");
    // Three a minute here: the third passes, the fourth is refused, and the socket stays open.
    say(&mut tab, "two", "c-4").await;
    assert_eq!(next_chat(&mut tab).await["text"], "two");
    say(&mut tab, "three", "c-5").await;
    assert_eq!(next_chat(&mut tab).await["text"], "three");
    say(&mut tab, "four", "c-6").await;
    let limited = next_chat(&mut tab).await;
    assert_eq!((limited["type"].as_str(), limited["code"].as_str()), (Some("ERROR"), Some("rate_limited")));
    tab.assert_quiet().await;
    let over = shopper.send(reqwest::Method::POST, "/api/chat", Some(r#"{"text":"five"}"#), &[]).await;
    over.expect_error(429, "rate_limited");
    // A service without the chat scope is refused before the upgrade; a reply's text has the same limits.
    assert_eq!(service(&server, "notify-only-token-0123456789").await.err(), Some(403));
    assert_eq!(service(&server, "wrong-token").await.err(), Some(401));
    let session = session_of(&shopper).await;
    let http = reqwest::Client::new();
    let answer = |token: &'static str, text: String| {
        http.post(server.url(&format!("/api/service/chat/{session}")))
            .bearer_auth(token)
            .json(&json!({"text": text}))
            .send()
    };
    assert_eq!(answer("notify-only-token-0123456789", "hi".into()).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(answer(TOKEN, "y".repeat(2_001)).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let ok = answer(TOKEN, "Over REST.".into()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    let answer_frame = next_chat(&mut tab).await;
    assert_eq!((answer_frame["from"].as_str(), answer_frame["text"].as_str()), (Some("service"), Some("Over REST.")));
    // A service's malformed frame is an ERROR frame back, not a closed socket.
    let mut bot = service(&server, TOKEN).await.unwrap();
    bot.stream.send(Message::text(r#"{"type":"REPLY","session":"nope","text":"x"}"#)).await.unwrap();
    assert_eq!(next_error(&mut bot).await["code"], "invalid_field");
    bot.stream.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_error(&mut bot).await["code"], "invalid_message");
}

#[tokio::test]
async fn the_history_keeps_the_newest_messages() {
    let server = server_with(|c| {
        c.chat_history = 3;
    })
    .await;
    let shopper = Shopper::new(&server).await;
    let session = session_of(&shopper).await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        let r = http
            .post(server.url(&format!("/api/service/chat/{session}")))
            .bearer_auth(TOKEN)
            .json(&json!({"text": format!("answer {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let history = shopper.send(reqwest::Method::GET, "/api/chat", None, &[]).await;
    let texts: Vec<&str> =
        history.body["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["answer 2", "answer 3", "answer 4"]);
}

async fn redis_instance(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    server_with(|c| {
        c.redis_url = Some(url);
        c.no_rate_limit = true;
    })
    .await
}

#[tokio::test]
async fn across_instances_the_shopper_and_the_service_meet_through_redis() {
    let redis = RedisServer::start();
    let (shop_side, service_side) = (redis_instance(&redis).await, redis_instance(&redis).await);
    for s in [&shop_side, &service_side] {
        s.await_metric("cartwheel_redis_subscribed 1").await;
    }
    let shopper = Shopper::new(&shop_side).await;
    let session = session_of(&shopper).await;
    let (mut tab, _) = Ws::connect_synced(&shopper).await;
    let (mut tab_elsewhere, _) = Ws::connect_synced(&shopper.on(&service_side)).await;
    let mut bot = service(&service_side, TOKEN).await.unwrap();
    // Connected on the other instance: the shopper's instance learns that support is online. It is counted
    // everywhere once its instance's desk has claimed for it (its lease in Redis), a moment after the `101`.
    let deadline = tokio::time::Instant::now() + crate::support::EVENT_TIMEOUT;
    loop {
        let history = shopper.send(reqwest::Method::GET, "/api/chat", None, &[]).await;
        if history.body["support_online"] == true {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "support never online on the shop side: {}", history.body);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let asked = Instant::now();
    say(&mut tab, "Do you ship to Ghent?", "c-1").await;
    let handed = next_chat(&mut bot).await;
    assert_eq!(
        (handed["text"].as_str(), handed["session"].as_str()),
        (Some("Do you ship to Ghent?"), Some(session.as_str()))
    );
    reply(&mut bot, &session, "We do.").await;
    ack(&mut bot, handed["id"].as_str().unwrap()).await;
    assert_eq!(next_chat(&mut tab).await["text"], "Do you ship to Ghent?");
    assert_eq!(next_chat(&mut tab).await["text"], "We do.");
    println!("help chat round trip across two instances: {} ms", asked.elapsed().as_millis());
    assert_eq!(next_chat(&mut tab_elsewhere).await["text"], "Do you ship to Ghent?");
    assert_eq!(next_chat(&mut tab_elsewhere).await["text"], "We do.");

    // With no service anywhere the message waits in Redis; a service on the shopper's own instance gets it.
    drop(bot);
    service_side.await_metric("cartwheel_chat_services_open 0").await;
    say(&mut tab, "Still there?", "c-2").await;
    assert_eq!(next_chat(&mut tab).await["text"], "Still there?");
    let mut late = service(&shop_side, TOKEN).await.unwrap();
    let waited = next_chat(&mut late).await;
    assert_eq!(waited["text"], "Still there?");
}

#[tokio::test]
async fn a_shopper_who_hangs_up_right_after_writing_still_reaches_a_service() {
    let server = server_with(|_| {}).await;
    let shopper = Shopper::new(&server).await;
    let mut bot = service(&server, TOKEN).await.unwrap();
    let (mut tab, _) = Ws::connect_synced(&shopper).await;
    say(&mut tab, "Gone already", "c-1").await;
    drop(tab);
    assert_eq!(next_chat(&mut bot).await["text"], "Gone already");
    let history = shopper.send(reqwest::Method::GET, "/api/chat", None, &[]).await;
    assert_eq!(history.body["messages"][0]["text"], "Gone already", "stored");
}

#[tokio::test]
async fn a_message_handed_out_but_unanswered_when_the_server_restarts_goes_to_the_next_service() {
    let mut server = server_with(|_| {}).await;
    let dir = server.take_dir();
    let db = server.db.clone();
    let shopper = Shopper::new(&server).await;
    let cookie = shopper.cookie.clone();
    let mut bot = service(&server, TOKEN).await.unwrap();
    let (mut tab, _) = Ws::connect_synced(&shopper).await;
    say(&mut tab, "Before the restart", "c-1").await;
    assert_eq!(next_chat(&mut bot).await["text"], "Before the restart");
    // The service had it and had not acknowledged it when the server went down.
    drop((tab, bot));
    server.stop().await;
    let server = TestServer::start_on(&db, |c| c.service_tokens = vec![TOKEN.to_owned()]).await;
    let mut after = service(&server, TOKEN).await.unwrap();
    assert_eq!(next_chat(&mut after).await["text"], "Before the restart");
    let history = Shopper::with_cookie(&server, &cookie).send(reqwest::Method::GET, "/api/chat", None, &[]).await;
    assert_eq!(history.body["messages"].as_array().map(Vec::len), Some(1));
    drop(dir);
}
