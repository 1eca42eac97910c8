//! The load generator's WebSocket client: the upgrade, then server frames read straight out of one buffer.
//!
//! Thousands of subscribers share the load generator's one core, so what a frame costs here sets the fan-out
//! figures of every server under test as much as the server does: with tokio-tungstenite a frame cost 8–10 µs
//! (its stream adapter, a copy into an owned message, the UTF-8 check of a whole buffer) and the last of 1,000
//! subscribers read a change about 10 ms after the first, whichever server had written it. Here a frame is a
//! `read` into the socket's buffer, a header parse and a `&str` into that buffer. Written by hand rather than
//! with a WebSocket crate because that cost is the measurement; what the client needs is small — server frames
//! are unmasked and, from both servers, never fragmented or compressed (no extension is asked for) — and
//! anything else ends the socket with an error rather than being read wrongly.

use std::fmt;
use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client's first read buffer; it grows for a larger frame (a snapshot of a big cart).
const BUFFER: usize = 4096;
/// The upgrade's answer must fit in this.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// A larger frame ends the socket (the servers' largest is a snapshot of a full cart, a few KiB).
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Any valid key will do: the bench does not check the server's accept value, only its `101`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// How long a closing client waits for the server's close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Client frames must be masked (RFC 6455 §5.3); the key need not be secret here.
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];

/// What the server sent.
#[derive(PartialEq, Eq)]
pub enum Incoming<'a> {
    Text(&'a str),
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
}

impl fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incoming::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Incoming::Close(code) => write!(f, "Close({code:?})"),
        }
    }
}

/// One frame's place in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    /// Header bytes, then payload bytes.
    header_len: usize,
    payload_len: usize,
}

/// The frame at the start of `bytes`: `Ok(None)` while its header is incomplete.
fn header(bytes: &[u8]) -> Result<Option<Header>, String> {
    let [b0, b1, ..] = *bytes else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err("a masked frame from the server".into());
    }
    let (header_len, payload_len): (usize, usize) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(n) => (4, u16::from_be_bytes([n[0], n[1]]) as usize),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(n) => {
                let n = u64::from_be_bytes(n.try_into().map_err(|_| "a length of 8 bytes")?);
                (10, usize::try_from(n).map_err(|_| format!("a frame of {n} bytes"))?)
            }
            None => return Ok(None),
        },
        n => (2, n as usize),
    };
    if payload_len > MAX_FRAME {
        return Err(format!("a frame of {payload_len} bytes"));
    }
    Ok(Some(Header { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, header_len, payload_len }))
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

pub struct Socket {
    stream: TcpStream,
    buf: Vec<u8>,
    /// What is read and not yet consumed: `buf[start..end]`.
    start: usize,
    end: usize,
    /// Control frames (pongs) not yet written whole: written before anything else.
    owed: Vec<u8>,
}

impl Socket {
    /// Upgrade `stream` to a WebSocket at `url` (`ws://host:port/path?query`) with `cookie`. An answer other
    /// than `101` is an error naming its status line (callers look for `401`).
    pub async fn upgrade(mut stream: TcpStream, url: &str, cookie: &str) -> Result<Socket, String> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| format!("not a ws:// URL: {url}"))?;
        let (host, path) = rest.find('/').map_or((rest, "/"), |at| (&rest[..at], &rest[at..]));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nCookie: {cookie}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("upgrade request: {e}"))?;
        let mut socket = Socket { stream, buf: vec![0; BUFFER], start: 0, end: 0, owed: Vec::new() };
        let head_len = loop {
            if let Some(at) = socket.buf[..socket.end].windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if socket.end >= MAX_RESPONSE_HEAD {
                return Err("the upgrade's answer has no end".into());
            }
            socket.fill(0).await.map_err(|e| format!("upgrade answer: {e}"))?;
        };
        let head = String::from_utf8_lossy(&socket.buf[..head_len]);
        let status = head.lines().next().unwrap_or_default();
        if status.split(' ').nth(1) != Some("101") {
            return Err(format!("HTTP {status}"));
        }
        // Frames that came with the answer stay in the buffer.
        socket.start = head_len;
        Ok(socket)
    }

    /// Read more into the buffer (making room first, growing it to `at_least` bytes if needed). Cancel-safe:
    /// making room keeps `buf[start..end]` as it was, and `end` moves only once a read has completed.
    async fn fill(&mut self, at_least: usize) -> io::Result<()> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 && (self.buf.len() - self.end < BUFFER / 4 || self.buf.len() < at_least + self.start) {
            self.buf.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        if self.buf.len() < at_least {
            self.buf.resize(at_least, 0);
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match self.stream.read(&mut self.buf[self.end..]).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Write what is owed (a pong), however often this is cancelled: `write` either took bytes or did not.
    async fn pay(&mut self) -> io::Result<()> {
        while !self.owed.is_empty() {
            let n = self.stream.write(&self.owed).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.owed.drain(..n);
        }
        Ok(())
    }

    /// The next text or close frame; a ping is answered on the way (the servers' heartbeats). `None`: the
    /// connection ended or broke a rule this client does not read (see the module doc). Cancel-safe (it is
    /// raced against a stop signal): what a frame changes is recorded before the next `.await`.
    pub async fn next(&mut self) -> Option<Incoming<'_>> {
        let (header, at) = loop {
            self.pay().await.ok()?;
            let waiting = &self.buf[self.start..self.end];
            match header(waiting) {
                Ok(Some(h)) if waiting.len() >= h.header_len + h.payload_len => {
                    let at = self.start + h.header_len;
                    self.start = at + h.payload_len;
                    if !h.fin || h.opcode == 0 {
                        return None; // fragments: never sent by the servers measured
                    }
                    if h.opcode == 0x9 {
                        let pong = client_frame(0xA, &self.buf[at..at + h.payload_len]);
                        self.owed.extend_from_slice(&pong);
                        continue;
                    }
                    if h.opcode == 0x1 || h.opcode == 0x8 {
                        break (h, at);
                    }
                    // A pong or binary frame: not for this client.
                }
                Ok(Some(h)) => self.fill(h.header_len + h.payload_len).await.ok()?,
                Ok(None) => self.fill(0).await.ok()?,
                Err(_) => return None,
            }
        };
        let payload = &self.buf[at..at + header.payload_len];
        if header.opcode == 0x8 {
            return Some(Incoming::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))));
        }
        std::str::from_utf8(payload).ok().map(Incoming::Text)
    }

    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.pay().await?;
        self.stream.write_all(&client_frame(0x1, text.as_bytes())).await
    }

    /// Say goodbye (close 1000) and wait, a second at most, for the server to answer and hang up (RFC 6455
    /// §7.1.1: the server closes the TCP connection first): a socket let go with the answer unread is reset
    /// by the kernel instead of closed.
    pub async fn close(mut self) {
        let _ = self.pay().await;
        let _ = self.stream.write_all(&client_frame(0x8, &1000u16.to_be_bytes())).await;
        let _ = self.stream.shutdown().await;
        let drain = async {
            let mut sink = [0u8; 512];
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 65_535 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn headers_of_every_length_form_are_read_and_an_incomplete_one_asks_for_more() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let frame = server_frame(0x1, &vec![b'x'; len]);
            let h = header(&frame).unwrap().unwrap();
            assert_eq!((h.fin, h.opcode, h.payload_len), (true, 1, len));
            assert_eq!(h.header_len + h.payload_len, frame.len());
            for cut in 0..h.header_len {
                assert_eq!(header(&frame[..cut]), Ok(None), "{len}: header cut at {cut}");
            }
        }
        assert!(header(&[0x81, 0x81, 0, 0, 0, 0, b'x']).is_err(), "a masked server frame is refused");
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(header(&huge).is_err(), "a length past the largest frame is refused, not added up");
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_their_payload() {
        for len in [0, 5, 125, 126, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(0x1, &payload);
            assert_eq!(frame[0], 0x81);
            assert_ne!(frame[1] & 0x80, 0, "masked");
            let mut unmasked = frame.clone();
            unmasked[1] &= 0x7f;
            let h = header(&unmasked).unwrap().unwrap();
            assert_eq!(h.payload_len, len);
            let key = &frame[h.header_len..h.header_len + 4];
            let body: Vec<u8> = frame[h.header_len + 4..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            assert_eq!(body, payload);
        }
    }

    /// Over a real loopback socket: the answer and the first frames in one write, the rest split at every
    /// byte, a ping answered with its payload, a frame larger than the buffer, then a close with its code.
    #[tokio::test]
    async fn frames_split_anywhere_are_read_whole_pings_are_answered_and_a_close_gives_its_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let big = "y".repeat(3 * BUFFER);
        let server = {
            let big = big.clone();
            tokio::spawn(async move {
                let (mut peer, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    peer.read_exact(&mut b).await.unwrap();
                    head.push(b[0]);
                }
                let head = String::from_utf8(head).unwrap();
                assert!(head.starts_with("GET /ws?mfe=bench HTTP/1.1\r\n"), "{head}");
                assert!(head.contains("\r\nCookie: s=1\r\n"), "{head}");
                let mut first = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
                first.extend(server_frame(0x1, b"snapshot"));
                peer.write_all(&first).await.unwrap();
                let mut rest = server_frame(0x9, b"hb");
                rest.extend(server_frame(0x1, b"after the ping"));
                rest.extend(server_frame(0x1, big.as_bytes()));
                rest.extend(server_frame(0x8, &1001u16.to_be_bytes()));
                for b in rest {
                    peer.write_all(&[b]).await.unwrap();
                    peer.flush().await.unwrap();
                }
                let mut pong = [0u8; 8];
                peer.read_exact(&mut pong).await.unwrap();
                assert_eq!(&pong[..2], &[0x8A, 0x82]);
                let unmasked: Vec<u8> = pong[6..].iter().enumerate().map(|(i, b)| b ^ pong[2 + i]).collect();
                assert_eq!(unmasked, b"hb");
            })
        };
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut socket = Socket::upgrade(stream, &format!("ws://{addr}/ws?mfe=bench"), "s=1").await.unwrap();
        assert_eq!(socket.next().await, Some(Incoming::Text("snapshot")));
        assert_eq!(socket.next().await, Some(Incoming::Text("after the ping")));
        assert_eq!(socket.next().await, Some(Incoming::Text(big.as_str())));
        assert_eq!(socket.next().await, Some(Incoming::Close(Some(1001))));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_upgrade_refused_names_its_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 512];
            let _ = peer.read(&mut b).await;
            peer.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let refused = Socket::upgrade(stream, &format!("ws://{addr}/ws"), "s=1").await.err().unwrap();
        assert!(refused.contains("401"), "{refused}");
    }
}
