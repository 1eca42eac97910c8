//! What travels on the instances' channel: an [`Envelope`] is the WebSocket frame exactly as clients receive
//! it, behind a one-line header saying whom it is for, who sent it and when. The committing instance serializes
//! a change once (inside its commit, through [`EnvelopeFormat`]); receiving instances only slice the frame out.

use cartwheel_core::{CartVersion, ServerMessage};

use crate::clock::now_us;
use crate::domain::{CartKey, Event};
use crate::store::redis::EventFormat;

/// Whom a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// A `CART_UPDATE` of this cart at this epoch (its bits) and version.
    Cart { key: CartKey, epoch: u64, version: CartVersion },
    /// A `PRODUCT_UPDATE`, for every connection.
    Product,
    /// A `NOTICE` for one session's connections, or for every connection.
    Notice(Option<CartKey>),
    /// A help-chat `CHAT` for one session's connections.
    Chat(CartKey),
    /// Shopper messages wait for a service (no frame): every instance's services claim.
    ChatWaiting,
}

/// One message on the channel: `<kind> <origin> <sent µs> [<cart key> [<version> <epoch hex>]]\n<frame>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub audience: Audience,
    /// The publishing instance.
    pub origin: String,
    /// When it was published, in µs since the Unix epoch (for the lag metric; instances' clocks are assumed
    /// close, as NTP keeps them).
    pub sent_us: u64,
    /// The frame as clients receive it.
    pub frame: String,
}

impl Envelope {
    pub fn new(audience: Audience, origin: &str, frame: String) -> Envelope {
        Envelope { audience, origin: origin.to_owned(), sent_us: now_us(), frame }
    }

    pub fn encode(&self) -> String {
        let (origin, sent) = (&self.origin, self.sent_us);
        let header = match &self.audience {
            Audience::Cart { key, epoch, version } => format!("cart {origin} {sent} {key} {version} {epoch:016x}"),
            Audience::Product => format!("product {origin} {sent}"),
            Audience::Notice(Some(key)) => format!("notice {origin} {sent} {key}"),
            Audience::Notice(None) => format!("notice {origin} {sent} *"),
            Audience::Chat(key) => format!("chat {origin} {sent} {key}"),
            Audience::ChatWaiting => format!("chat-waiting {origin} {sent}"),
        };
        format!("{header}\n{}", self.frame)
    }

    /// `None` for anything that is not an envelope (another program on the channel, a newer format).
    pub fn decode(payload: &[u8]) -> Option<Envelope> {
        let text = std::str::from_utf8(payload).ok()?;
        let (header, frame) = text.split_once('\n')?;
        let mut fields = header.split(' ');
        let (kind, origin, sent_us) = (fields.next()?, fields.next()?, fields.next()?.parse().ok()?);
        let audience = match kind {
            "cart" => {
                let key = CartKey::parse(fields.next()?).ok()?;
                let version = fields.next()?.parse().ok()?;
                let epoch = u64::from_str_radix(fields.next()?, 16).ok()?;
                Audience::Cart { key, epoch, version }
            }
            "product" => Audience::Product,
            "chat" => Audience::Chat(CartKey::parse(fields.next()?).ok()?),
            "chat-waiting" => Audience::ChatWaiting,
            "notice" => match fields.next()? {
                "*" => Audience::Notice(None),
                key => Audience::Notice(Some(CartKey::parse(key).ok()?)),
            },
            _ => return None,
        };
        if fields.next().is_some() {
            return None;
        }
        Some(Envelope { audience, origin: origin.to_owned(), sent_us, frame: frame.to_owned() })
    }
}

/// This instance's way of writing envelopes: committed events go out as the frames clients receive, marked
/// with this instance's id so it can tell its own messages when they come back.
pub struct EnvelopeFormat {
    origin: String,
}

impl EnvelopeFormat {
    pub fn new() -> EnvelopeFormat {
        EnvelopeFormat { origin: hex::encode(rand::random::<[u8; 8]>()) }
    }

    /// This instance's id on the channel.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl Default for EnvelopeFormat {
    fn default() -> Self {
        EnvelopeFormat::new()
    }
}

impl EventFormat for EnvelopeFormat {
    fn encode(&self, event: &Event) -> String {
        let (audience, message) = match event {
            Event::CartChanged { key, cart } => (
                Audience::Cart { key: key.clone(), epoch: cart.epoch.bits(), version: cart.version },
                ServerMessage::CartUpdate { version: cart.version, data: cart.clone() },
            ),
            Event::ProductChanged(product) => {
                (Audience::Product, ServerMessage::ProductUpdate { data: product.clone() })
            }
        };
        // Serializing plain data with string keys cannot fail; receivers ignore an empty frame.
        let frame = serde_json::to_string(&message).unwrap_or_default();
        Envelope::new(audience, &self.origin, frame).encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_carry_the_frame_verbatim() {
        let frame = r#"{"type":"CART_UPDATE","version":7,"data":{"note":"a\nb c"}}"#.to_owned();
        for audience in [
            Audience::Cart { key: CartKey::parse(&"ab12".repeat(8)).unwrap(), epoch: u64::MAX, version: 7 },
            Audience::Product,
            Audience::Notice(Some(CartKey::parse(&"ab12".repeat(8)).unwrap())),
            Audience::Notice(None),
            Audience::Chat(CartKey::parse(&"cd34".repeat(8)).unwrap()),
            Audience::ChatWaiting,
        ] {
            let envelope = Envelope::new(audience, "0011aabb", frame.clone());
            assert_eq!(Envelope::decode(envelope.encode().as_bytes()), Some(envelope));
        }
    }

    #[test]
    fn anything_else_on_the_channel_is_not_an_envelope() {
        for junk in [
            &b"hello"[..],
            b"cart o 1 0123456789abcdef0123456789abcdef\n{}",
            b"cart o 1 0123456789abcdef0123456789abcdef seven\n{}",
            b"cart o 1 not-a-key 7\n{}",
            b"product o 1 extra\n{}",
            b"refund o 1\n{}",
            b"product o x\n{}",
            b"\xff\xfe\n{}",
        ] {
            assert_eq!(Envelope::decode(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }
}
