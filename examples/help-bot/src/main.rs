//! An example backend service for the help chat. It connects to the shop as a service (`GET /api/service/ws`
//! with a token that has the `chat` scope), answers questions about stock and prices from `GET /api/products`
//! ("is the walnut lamp in stock?", "how much is the carafe?"), says it will pass anything else on, and
//! acknowledges every message it handled. It never talks to a browser: the shop carries both ways.
//!
//! ```text
//! help-bot --shop http://127.0.0.1:3000 --token <token>     (or CARTWHEEL_SHOP, CARTWHEEL_BOT_TOKEN)
//! ```
//!
//! A lost connection is retried for ever on the shop's own reconnect schedule (full jitter, capped); what was
//! handed to it and not acknowledged goes to another service meanwhile, or back to it once it is connected.

mod answer;

use std::time::Duration;

use cartwheel_core::chat::{FromService, ToService};
use cartwheel_core::{Product, ReconnectPolicy, ReconnectSchedule};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// What the bot is told on its command line.
struct Settings {
    shop: String,
    token: String,
}

fn settings() -> Result<Settings, String> {
    let mut shop = std::env::var("CARTWHEEL_SHOP").unwrap_or_else(|_| "http://127.0.0.1:3000".to_owned());
    let mut token = std::env::var("CARTWHEEL_BOT_TOKEN").ok();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--shop" => shop = args.next().ok_or("--shop needs a URL")?,
            "--token" => token = Some(args.next().ok_or("--token needs a value")?),
            "--help" | "-h" => {
                return Err(
                    "usage: help-bot --shop <http://host:port> --token <service token with the chat scope>".into()
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let token = token.ok_or("give the service token: --token <token> or CARTWHEEL_BOT_TOKEN")?;
    Ok(Settings { shop: shop.trim_end_matches('/').to_owned(), token })
}

#[tokio::main]
async fn main() {
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("help-bot: {e}");
            std::process::exit(2);
        }
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
    let mut schedule = ReconnectSchedule::new(ReconnectPolicy::default());
    loop {
        match serve(&settings, &http, &mut schedule).await {
            Ok(()) => eprintln!("help-bot: the shop closed the connection"),
            Err(e) => eprintln!("help-bot: {e}"),
        }
        let wait = schedule.closed(now_ms(), rand_unit());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}

/// One connection: answer every message handed to it until the connection ends.
async fn serve(settings: &Settings, http: &reqwest::Client, schedule: &mut ReconnectSchedule) -> Result<(), String> {
    let ws_url = format!("{}/api/service/ws", settings.shop.replacen("http", "ws", 1));
    let mut request = ws_url.as_str().into_client_request().map_err(|e| format!("bad shop URL: {e}"))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", settings.token))
        .map_err(|_| "the token is not valid in a header")?;
    request.headers_mut().insert("authorization", bearer);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| format!("cannot connect: {e}"))?;
    schedule.opened(now_ms());
    println!("help-bot: connected to {ws_url}");
    let (mut sink, mut stream) = socket.split();
    while let Some(frame) = stream.next().await {
        let text = match frame.map_err(|e| format!("connection lost: {e}"))? {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(()),
            _ => continue,
        };
        match serde_json::from_str::<ToService>(text.as_str()) {
            Ok(ToService::Chat { session, id, text, .. }) => {
                let products = products(settings, http).await;
                let reply = answer::answer(&text, products.as_deref());
                for frame in [FromService::Reply { session, text: reply }, FromService::Ack { id }] {
                    let json = serde_json::to_string(&frame).map_err(|e| e.to_string())?;
                    sink.send(Message::text(json)).await.map_err(|e| format!("connection lost: {e}"))?;
                }
            }
            Ok(ToService::Error { code, message }) => {
                eprintln!("help-bot: the shop refused a frame: {code:?}: {message}")
            }
            Err(_) => {} // A frame of a newer shop: not ours to read.
        }
    }
    Ok(())
}

/// The catalog as it is now (stock and prices change), or `None` when the shop cannot say.
async fn products(settings: &Settings, http: &reqwest::Client) -> Option<Vec<Product>> {
    let response = http.get(format!("{}/api/products", settings.shop)).send().await.ok()?;
    response.json().await.ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A uniform number in [0, 1) for the reconnect jitter (no RNG crate for one number a minute).
fn rand_unit() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}
