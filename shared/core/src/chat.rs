//! The help chat: a shopper's conversation with the shop's backend services, which the server carries both
//! ways (no service ever opens a socket to a browser). The same types on every side of the wire: the browser,
//! the server, and the services (the example bot in `examples/help-bot`).
//!
//! Shopper ↔ server: `{"type":"CHAT","text","client_id"}` from the shopper (on a WebSocket, or the body of
//! `POST /api/chat`), and [`ChatMessage`] frames `{"type":"CHAT","id","from","text","at"}` to every connection of
//! that session, for both sides' messages. Server ↔ service: [`ToService`] and [`FromService`] on
//! `GET /api/service/ws`.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatSender {
    Shopper,
    Service,
}

/// One message of a conversation, as stored and as shoppers receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `msg_` and 20 hex digits.
    pub id: String,
    pub from: ChatSender,
    pub text: String,
    /// Milliseconds since the Unix epoch, when the server stored it.
    pub at: u64,
    /// The id the shopper's page gave its message (so it can tell its own message when it comes back, and a
    /// retry is stored once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Answer of `GET /api/chat`: the session's conversation, oldest first, and whether a service is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatHistory {
    pub messages: Vec<ChatMessage>,
    pub support_online: bool,
}

/// Body of `POST /api/chat` (and the fields of the shopper's `CHAT` frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatPost {
    pub text: String,
    /// 1–64 visible ASCII characters, chosen by the page per message.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// Answer of `POST /api/chat`: the message as stored, and whether a service is connected to answer it (if not,
/// it waits for the first one that connects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatPosted {
    pub message: ChatMessage,
    pub support_online: bool,
}

/// What the server sends a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ToService {
    /// A shopper's message: answer with a `REPLY` to its `session`, and `ACK` its `id` once handled (until then
    /// it is this service's, and goes to another service if this one disconnects).
    Chat { session: String, id: String, text: String, at: u64 },
    /// A frame was refused (the socket stays open).
    Error { code: crate::protocol::ErrorCode, message: String },
}

/// What a service sends the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FromService {
    /// An answer in `session`'s conversation.
    Reply { session: String, text: String },
    /// The shopper's message `id` is handled: not sent to any service again.
    Ack { id: String },
}

/// The chat's limits (the server's defaults; each is a flag there).
pub struct ChatLimits;

impl ChatLimits {
    /// Characters in one message (after trimming), at least 1.
    pub const DEFAULT_MAX_CHARS: usize = 2_000;
    /// Messages one session may write per minute.
    pub const DEFAULT_PER_MINUTE: u32 = 100;
    /// Messages kept per conversation (the newest).
    pub const DEFAULT_HISTORY: usize = 100;
    /// Days a conversation is kept after its last message.
    pub const DEFAULT_TTL_DAYS: u64 = 7;
    /// Length of a page's `client_id`.
    pub const CLIENT_ID_MAX_LEN: usize = 64;
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTextError {
    Empty,
    TooLong { max: usize, got: usize },
}

impl std::fmt::Display for ChatTextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatTextError::Empty => f.write_str("a message needs some text"),
            ChatTextError::TooLong { max, got } => write!(f, "a message has at most {max} characters (this one {got})"),
        }
    }
}

/// A message's text, trimmed, within `max` characters (parse, don't validate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatText(String);

impl ChatText {
    pub fn parse(text: &str, max: usize) -> Result<ChatText, ChatTextError> {
        let text = text.trim();
        let got = text.chars().count();
        match got {
            0 => Err(ChatTextError::Empty),
            n if n > max => Err(ChatTextError::TooLong { max, got: n }),
            _ => Ok(ChatText(text.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A page's `client_id`, if it is one (1–64 visible ASCII characters).
pub fn valid_client_id(id: &str) -> bool {
    (1..=ChatLimits::CLIENT_ID_MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded_in_characters_not_bytes() {
        assert_eq!(ChatText::parse("  hi  ", 10).unwrap().as_str(), "hi");
        assert_eq!(ChatText::parse("   ", 10), Err(ChatTextError::Empty));
        let at = "é".repeat(ChatLimits::DEFAULT_MAX_CHARS);
        assert!(ChatText::parse(&at, ChatLimits::DEFAULT_MAX_CHARS).is_ok(), "2,000 two-byte characters pass");
        let past = format!("{at}é");
        assert_eq!(
            ChatText::parse(&past, ChatLimits::DEFAULT_MAX_CHARS),
            Err(ChatTextError::TooLong { max: 2_000, got: 2_001 })
        );
    }

    #[test]
    fn frames_both_ways_have_the_documented_shapes() {
        let message =
            ChatMessage { id: "msg_1".into(), from: ChatSender::Service, text: "Yes".into(), at: 5, client_id: None };
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            serde_json::json!({"id":"msg_1","from":"service","text":"Yes","at":5})
        );
        let to = ToService::Chat { session: "s".into(), id: "msg_2".into(), text: "hi".into(), at: 7 };
        assert_eq!(
            serde_json::to_value(&to).unwrap(),
            serde_json::json!({"type":"CHAT","session":"s","id":"msg_2","text":"hi","at":7})
        );
        let reply: FromService = serde_json::from_str(r#"{"type":"REPLY","session":"s","text":"ok"}"#).unwrap();
        assert_eq!(reply, FromService::Reply { session: "s".into(), text: "ok".into() });
        let ack: FromService = serde_json::from_str(r#"{"type":"ACK","id":"msg_2"}"#).unwrap();
        assert_eq!(ack, FromService::Ack { id: "msg_2".into() });
        assert!(valid_client_id("c-1") && !valid_client_id("") && !valid_client_id("has space"));
        assert!(!valid_client_id(&"x".repeat(65)));
    }
}
