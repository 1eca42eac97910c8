//! The WebSocket wire format (RFC 6455) of a shopper's connection, as bytes: server frames framed once, client
//! frames decoded from whatever the socket gave.
//!
//! Why not a WebSocket stream type: every server frame but a few replies is the same for all its recipients
//! (server frames are unmasked), so a broadcast is framed once here and the same bytes are written to each
//! socket, by whoever publishes it, without waking the connection's task (see [`super::hub`]). And an idle
//! connection should hold no buffers: the [`Decoder`] keeps bytes only while a frame is incomplete, and gives
//! its buffer back once it is not. The header layout itself is tungstenite's ([`FrameHeader`]).
//!
//! What a client may send is checked as the RFC says a server must: masked frames only, no reserved bits or
//! opcodes, control frames short and whole, continuations only after a started message, text in UTF-8, and no
//! message over the configured size (`--max-ws-message-bytes`) — checked from the header, before its payload
//! is read.

use std::io::Cursor;

use bytes::Bytes;
use cartwheel_core::protocol::close;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The longest control-frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// A buffer that held a large message is not kept once it is empty.
const KEEP_CAPACITY: usize = 512;

/// A whole server frame: a header for `payload` and the payload, unmasked.
fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    let length = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(length) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(length, &mut out);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A text frame carrying `text`.
pub fn text(text: &str) -> Bytes {
    frame(OpCode::Data(Data::Text), text.as_bytes())
}

/// A ping with no payload.
pub fn ping() -> Bytes {
    frame(OpCode::Control(Control::Ping), &[])
}

/// The pong answering a ping's `payload`.
pub fn pong(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Pong), payload)
}

/// A close frame with `code` and `reason` (cut to what fits a control frame).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD as usize - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OpCode::Control(Control::Close), &payload)
}

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The client closes, with its code if it gave one.
    Close(Option<u16>),
}

/// Why the client's bytes cannot be read on: the connection closes with [`WireError::close_code`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a message or frame over {limit} bytes")]
    TooBig { limit: usize },
    #[error("not valid WebSocket: {0}")]
    Protocol(&'static str),
    #[error("a text message that is not UTF-8")]
    NotUtf8,
}

impl WireError {
    pub fn close_code(&self) -> u16 {
        match self {
            WireError::TooBig { .. } => close::MESSAGE_TOO_BIG,
            WireError::Protocol(_) => close::PROTOCOL_ERROR,
            WireError::NotUtf8 => close::INVALID_PAYLOAD,
        }
    }
}

/// Client frames from a byte stream, reassembled into messages of at most `max_message` bytes.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// Bytes of an incomplete frame (empty, and usually without capacity, between frames).
    pending: Vec<u8>,
    /// A fragmented data message so far: whether it is text, and its payload.
    message: Option<(bool, Vec<u8>)>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder { max_message, pending: Vec::new(), message: None }
    }

    /// Take `bytes` read from the socket; complete messages are pushed onto `out` in order. After an error
    /// nothing more should be fed.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Incoming>) -> Result<(), WireError> {
        if self.pending.is_empty() {
            // The usual case: whole frames in one read, parsed in place; only a tail is kept.
            let used = self.parse(bytes, out)?;
            self.pending.extend_from_slice(&bytes[used..]);
        } else {
            self.pending.extend_from_slice(bytes);
            let buffer = std::mem::take(&mut self.pending);
            let used = self.parse(&buffer, out)?;
            self.pending = buffer;
            self.pending.drain(..used);
        }
        if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// Parse every whole frame at the start of `bytes`; returns how many bytes they took.
    fn parse(&mut self, bytes: &[u8], out: &mut Vec<Incoming>) -> Result<usize, WireError> {
        let mut used = 0;
        loop {
            let mut cursor = Cursor::new(&bytes[used..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(used),
                Err(_) => return Err(WireError::Protocol("bad frame header")),
            };
            self.check(&header, length)?;
            let start = used + cursor.position() as usize;
            let length = length as usize; // at most max_message, checked above
            if bytes.len() - start < length {
                return Ok(used);
            }
            let mut payload = bytes[start..start + length].to_vec();
            if let Some(mask) = header.mask {
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= mask[i & 3];
                }
            }
            used = start + length;
            if let Some(message) = self.take(&header, payload)? {
                let closing = matches!(message, Incoming::Close(_));
                out.push(message);
                if closing {
                    return Ok(used);
                }
            }
        }
    }

    /// What a header may not be, checked before its payload is read.
    fn check(&self, header: &FrameHeader, length: u64) -> Result<(), WireError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(WireError::Protocol("reserved bits set"));
        }
        if header.mask.is_none() {
            return Err(WireError::Protocol("client frames must be masked"));
        }
        match header.opcode {
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Err(WireError::Protocol("reserved opcode"))
            }
            OpCode::Control(_) if !header.is_final || length > MAX_CONTROL_PAYLOAD => {
                Err(WireError::Protocol("control frames are short and whole"))
            }
            OpCode::Data(_) => {
                let so_far = self.message.as_ref().map_or(0, |(_, m)| m.len());
                if length.saturating_add(so_far as u64) > self.max_message as u64 {
                    Err(WireError::TooBig { limit: self.max_message })
                } else {
                    Ok(())
                }
            }
            OpCode::Control(_) => Ok(()),
        }
    }

    fn take(&mut self, header: &FrameHeader, payload: Vec<u8>) -> Result<Option<Incoming>, WireError> {
        let data = match header.opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Incoming::Ping(payload))),
            OpCode::Control(Control::Pong) => return Ok(Some(Incoming::Pong)),
            OpCode::Control(Control::Close) => {
                let code = match payload.as_slice() {
                    [] => None,
                    [_] => return Err(WireError::Protocol("a close frame's code is two bytes")),
                    [high, low, reason @ ..] => {
                        let code = u16::from_be_bytes([*high, *low]);
                        // Codes a peer may not send (1005, 1006, 1015, unassigned ones), or a reason that is not
                        // UTF-8: a protocol error, not a code to echo back (RFC 6455 §7.4, §5.5.1).
                        if !CloseCode::from(code).is_allowed() {
                            return Err(WireError::Protocol("a close code a peer may not send"));
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return Err(WireError::Protocol("a close reason that is not UTF-8"));
                        }
                        Some(code)
                    }
                };
                return Ok(Some(Incoming::Close(code)));
            }
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(WireError::Protocol("reserved opcode"));
            }
            OpCode::Data(data) => data,
        };
        let (is_text, payload) = match (data, self.message.take()) {
            (Data::Continue, None) => return Err(WireError::Protocol("a continuation without a message")),
            (Data::Continue, Some((is_text, mut so_far))) => {
                so_far.extend_from_slice(&payload);
                (is_text, so_far)
            }
            (_, Some(_)) => return Err(WireError::Protocol("a new message inside a fragmented one")),
            (Data::Text, None) => (true, payload),
            (_, None) => (false, payload),
        };
        if !header.is_final {
            self.message = Some((is_text, payload));
            return Ok(None);
        }
        if !is_text {
            return Ok(Some(Incoming::Binary));
        }
        String::from_utf8(payload).map(|t| Some(Incoming::Text(t))).map_err(|_| WireError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser sends it (masked).
    fn client(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn decode(max: usize, bytes: &[u8]) -> Result<Vec<Incoming>, WireError> {
        let mut out = Vec::new();
        Decoder::new(max).feed(bytes, &mut out).map(|()| out)
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        assert_eq!(&text("hi")[..], &[0x81, 2, b'h', b'i']);
        let long = "x".repeat(300);
        let framed = text(&long);
        assert_eq!(&framed[..4], &[0x81, 126, 1, 44]);
        assert_eq!(framed.len(), 304);
        assert_eq!(&ping()[..], &[0x89, 0]);
        assert_eq!(&pong(b"ab")[..], &[0x8a, 2, b'a', b'b']);
        assert_eq!(&close_frame(1001, "bye")[..], &[0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']);
        assert_eq!(close_frame(1000, &"é".repeat(100)).len(), 2 + 2 + 122, "cut at a character boundary");
    }

    #[test]
    fn messages_in_one_read_or_split_anywhere_decode_the_same() {
        let mut bytes = client(0x1, true, br#"{"type":"PING","id":1}"#);
        bytes.extend(client(0x9, true, b"p"));
        bytes.extend(client(0x1, false, b"frag"));
        bytes.extend(client(0x0, true, b"mented"));
        bytes.extend(client(0x8, true, &1000u16.to_be_bytes()));
        let expected = vec![
            Incoming::Text(r#"{"type":"PING","id":1}"#.into()),
            Incoming::Ping(b"p".to_vec()),
            Incoming::Text("fragmented".into()),
            Incoming::Close(Some(1000)),
        ];
        assert_eq!(decode(1024, &bytes).unwrap(), expected);
        for split in 1..bytes.len() {
            let mut decoder = Decoder::new(1024);
            let mut out = Vec::new();
            decoder.feed(&bytes[..split], &mut out).unwrap();
            decoder.feed(&bytes[split..], &mut out).unwrap();
            assert_eq!(out, expected, "split at {split}");
        }
    }

    #[test]
    fn the_size_limit_is_inclusive_and_checked_from_the_header() {
        assert_eq!(decode(10, &client(0x1, true, &[b'a'; 10])).unwrap(), [Incoming::Text("a".repeat(10))]);
        // Only the header of an 11-byte message: refused before its payload arrives.
        let eleven = client(0x1, true, &[b'a'; 11]);
        assert_eq!(decode(10, &eleven[..6]), Err(WireError::TooBig { limit: 10 }));
        // Fragments count together.
        let mut two = client(0x1, false, &[b'a'; 6]);
        two.extend(client(0x0, true, &[b'a'; 5]));
        assert_eq!(decode(10, &two), Err(WireError::TooBig { limit: 10 }));
        assert_eq!(WireError::TooBig { limit: 10 }.close_code(), close::MESSAGE_TOO_BIG);
        let big = client(0x2, true, &vec![0; 70_000]);
        assert_eq!(decode(100_000, &big).unwrap(), [Incoming::Binary]);
    }

    #[test]
    fn what_a_server_must_refuse_is_refused() {
        let unmasked = [0x81, 1, b'a'];
        assert_eq!(decode(100, &unmasked), Err(WireError::Protocol("client frames must be masked")));
        let mut reserved = client(0x1, true, b"a");
        reserved[0] |= 0x40;
        assert!(matches!(decode(100, &reserved), Err(WireError::Protocol(_))));
        assert!(matches!(decode(100, &client(0x3, true, b"a")), Err(WireError::Protocol(_))), "reserved opcode");
        assert!(matches!(decode(100, &client(0x9, false, b"a")), Err(WireError::Protocol(_))), "fragmented ping");
        assert!(matches!(decode(1000, &client(0x9, true, &[0; 126])), Err(WireError::Protocol(_))), "long ping");
        assert!(matches!(decode(100, &client(0x0, true, b"a")), Err(WireError::Protocol(_))), "lone continuation");
        let mut nested = client(0x1, false, b"a");
        nested.extend(client(0x1, true, b"b"));
        assert!(matches!(decode(100, &nested), Err(WireError::Protocol(_))));
        assert_eq!(decode(100, &client(0x1, true, &[0xff, 0xfe])), Err(WireError::NotUtf8));
        assert_eq!(WireError::NotUtf8.close_code(), close::INVALID_PAYLOAD);
        // A close frame: a code a peer may send, with a UTF-8 reason, or no code at all.
        assert_eq!(decode(100, &client(0x8, true, b"")).unwrap(), [Incoming::Close(None)]);
        let mut bye = 4000u16.to_be_bytes().to_vec();
        bye.extend_from_slice("tschüss".as_bytes());
        assert_eq!(decode(100, &client(0x8, true, &bye)).unwrap(), [Incoming::Close(Some(4000))]);
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let refused = decode(100, &client(0x8, true, &code.to_be_bytes()));
            assert!(matches!(refused, Err(WireError::Protocol(_))), "close code {code}: {refused:?}");
        }
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xff]);
        assert!(matches!(decode(100, &client(0x8, true, &bad_reason)), Err(WireError::Protocol(_))));
        assert!(matches!(decode(100, &client(0x8, true, &[3])), Err(WireError::Protocol(_))), "one byte");
    }

    #[test]
    fn an_idle_decoder_gives_its_buffer_back() {
        let mut decoder = Decoder::new(100_000);
        let mut out = Vec::new();
        let big = client(0x1, true, &[b'a'; 50_000]);
        decoder.feed(&big[..20_000], &mut out).unwrap();
        assert!(decoder.pending.capacity() >= 20_000);
        decoder.feed(&big[20_000..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(decoder.pending.capacity(), 0);
    }
}
