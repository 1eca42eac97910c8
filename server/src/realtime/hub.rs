//! Fan-out to WebSocket connections: cart changes to the connections of that cart, product changes and
//! general notices to every connection, a targeted notice to one session's connections.
//!
//! The shop announces committed changes through its [`Fanout`] trait, which the hub implements for one
//! instance (in Redis mode the [`super::bus::Bus`] wraps it). The hub serializes and frames each frame once
//! ([`super::wire`]) and hands the same bytes to every recipient.
//!
//! **Written by the publisher.** Each connection has a [`Mailbox`]: its socket (once its opening frames are
//! out), what is queued for it, and the rest of a frame the socket took only in part. When a connection has
//! nothing queued, a cart update is written straight to its socket by whoever publishes it, and a product
//! change by the board's pass (below) — a non-blocking write of the shared bytes: no task wakes, nothing is
//! copied, and a thousand subscribers cost a thousand `write` calls. Only when a socket cannot take a frame
//! whole does the frame (or its rest) wait in the mailbox, and the connection's own task finishes it when the
//! socket is writable again.
//!
//! **Bounded per connection.** The hub remembers the newest version it delivered per cart and drops anything
//! not newer, and each mailbox the newest version it wrote, so every connection sees strictly increasing
//! versions even if two publishers race. When a connection falls `capacity` frames behind, its queued cart
//! updates are replaced by the newest one (a cart update is a full snapshot, so skipping intermediate versions
//! loses nothing), and the oldest notices make room; one stalled reader never holds memory or others hostage.
//!
//! **Product changes are state, not events.** The hub keeps one slot per product on a [`StateBoard`] holding
//! its newest `PRODUCT_UPDATE` frame, numbered by a generation that grows with every change. A connection
//! records the generation it has written up to; one that cannot take a change at once (busy, or its reader
//! slow) is sent, when it can, the slots newer than that — the newest state of each product, never a backlog:
//! a flash sale of a hundred stock changes a second costs a slow connection nothing but the newest state.
//! One pass at a time brings every connection up to the board, in rounds that begin a floor apart (250 ms by
//! default), so during such a sale every connection, fast or slow, is sent the newest state about once a round,
//! not each change. (A connection's own task also writes what the board holds when it flushes other frames.)
//! Presence counts go the same way: the pass writes what changed to every connection that has all the earlier
//! changes, and one that missed some is sent all the counts from the board.
//!
//! General notices, the other frames for everyone, go through one shared ring
//! ([`tokio::sync::broadcast`]): one serialization and one slot, whatever the number of connections. A
//! connection that falls a whole ring behind learns it (`Lagged`) and is sent the stored notices it has not
//! acknowledged, so a general notice is never silently lost.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cartwheel_core::chat::ChatMessage;
use cartwheel_core::version::Epoch;
use cartwheel_core::{Cart, CartVersion, PostedNotice, Product, ProductId, ServerMessage};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{broadcast, Notify};

use crate::domain::{CartKey, Event};
use crate::metrics::Metrics;
use crate::shop::Fanout;
use crate::store::StoreError;
use crate::sync::lock;

/// Connections a product change is written to before the publisher lets others run: a change for a hundred
/// thousand connections is written in slices, not in one blocking stretch of the runtime.
const FANOUT_SLICE: usize = 16;

/// What a frame carries, as far as queueing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A `CART_UPDATE` at this epoch (its bits) and version: a newer one supersedes it.
    Cart(CartPosition),
    /// A `PRODUCT_UPDATE`.
    Product,
    /// A `NOTICE`, with its seq.
    Notice(u64),
    /// A `PRESENCE` (counts).
    Presence,
    /// A help-chat `CHAT` message.
    Chat,
    /// The connection's own answer (`PONG`, `ERROR`, a control frame): never dropped to make room.
    Reply,
    /// The cart as the connection read it (on connect, on `RESYNC`): written even if not newer — it was asked
    /// for — and never dropped; it counts as written for the versions after it.
    Snapshot(CartPosition),
}

/// Where a cart update is in its cart's history: `(epoch bits, version)`.
pub type CartPosition = (u64, CartVersion);

/// Whether a cart update (or a board slot's state) at `incoming` should follow one at `sent`: always in another
/// epoch (a new history, see `cartwheel_core::version`), else only at a higher version.
pub fn supersedes(incoming: CartPosition, sent: Option<CartPosition>) -> bool {
    sent.is_none_or(|(epoch, version)| epoch != incoming.0 || incoming.1 > version)
}

/// One server frame, serialized and framed once, shared by all its recipients.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: FrameKind,
    /// The whole WebSocket frame: header and payload.
    pub wire: Bytes,
    /// Where the payload starts in `wire`.
    header_len: usize,
    pub published_at: Instant,
}

impl Frame {
    fn new(kind: FrameKind, message: &ServerMessage) -> Frame {
        // Serializing plain data with string keys cannot fail; an empty frame would be refused by clients anyway.
        let text = serde_json::to_string(message).unwrap_or_default();
        Frame::from_text(kind, text)
    }

    /// A frame serialized elsewhere (another instance, or the connection's own answer), framed here.
    pub fn from_text(kind: FrameKind, text: String) -> Frame {
        let wire = super::wire::text(&text);
        Frame { kind, header_len: wire.len() - text.len(), wire, published_at: Instant::now() }
    }

    /// A frame already framed (a ping, a pong, a close).
    pub fn control(wire: Bytes) -> Frame {
        Frame { kind: FrameKind::Reply, wire, header_len: 0, published_at: Instant::now() }
    }

    /// The text a text frame carries (empty for a control frame).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.wire[self.header_len..]).unwrap_or_default()
    }

    pub fn cart_update(cart: &Cart) -> Frame {
        Frame::new(
            FrameKind::Cart((cart.epoch.bits(), cart.version)),
            &ServerMessage::CartUpdate { version: cart.version, data: cart.clone() },
        )
    }

    pub fn product_update(product: &Product) -> Frame {
        Frame::new(FrameKind::Product, &ServerMessage::ProductUpdate { data: product.clone() })
    }

    pub fn notice(epoch: &Epoch, notice: &PostedNotice) -> Frame {
        Frame::new(
            FrameKind::Notice(notice.seq),
            &ServerMessage::Notice { epoch: epoch.clone(), notice: notice.clone() },
        )
    }

    pub fn chat(message: &ChatMessage) -> Frame {
        Frame::new(FrameKind::Chat, &ServerMessage::Chat { message: message.clone() })
    }

    pub fn presence(counts: &cartwheel_core::presence::Presence) -> Frame {
        Frame::new(FrameKind::Presence, &ServerMessage::Presence { counts: counts.clone() })
    }

    /// The cart as a connection read it for itself.
    pub fn snapshot(cart: &Cart) -> Frame {
        Frame::new(
            FrameKind::Snapshot((cart.epoch.bits(), cart.version)),
            &ServerMessage::CartUpdate { version: cart.version, data: cart.clone() },
        )
    }

    /// The connection's own answer.
    pub fn reply(message: &ServerMessage) -> Frame {
        Frame::new(FrameKind::Reply, message)
    }

    /// The cart's epoch and version, for a cart update.
    pub fn position(&self) -> Option<CartPosition> {
        match self.kind {
            FrameKind::Cart(p) => Some(p),
            _ => None,
        }
    }
}

/// Where a connection's frames are written without waiting: its socket, shared by its task and the hub.
pub trait Wire: Send + Sync {
    /// Write what the socket takes now; `WouldBlock` when it takes nothing.
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize>;
}

/// What one non-blocking write of a frame did.
enum Wrote {
    All,
    /// The socket took the first part: the rest must go before anything else.
    Part(Bytes),
    Blocked,
    Failed,
}

fn write_frame(wire: &dyn Wire, bytes: &Bytes) -> Wrote {
    let mut at = 0;
    loop {
        match wire.try_write(&bytes[at..]) {
            Ok(0) => return Wrote::Failed,
            Ok(n) => {
                at += n;
                if at >= bytes.len() {
                    return Wrote::All;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return if at == 0 { Wrote::Blocked } else { Wrote::Part(bytes.slice(at..)) };
            }
            Err(_) => return Wrote::Failed,
        }
    }
}

/// What became of a frame handed to a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// On the socket, whole.
    Written,
    /// Begun (its rest left for the connection's task, which counts it once finished), or its write failed
    /// (the connection is over).
    Taken,
    /// Waiting for the connection's task; `true` if the queue was full and made room (see the module doc).
    Queued(bool),
    /// Not newer than what the connection already has.
    Stale,
}

/// A connection's outgoing side (see the module doc).
pub struct Mailbox {
    outbox: Mutex<Outbox>,
    ready: Notify,
    capacity: usize,
}

struct Outbox {
    queue: VecDeque<Frame>,
    /// The rest of a frame the socket took only in part: nothing else may be written before it.
    partial: Option<Bytes>,
    /// The newest cart update written.
    last_cart: Option<CartPosition>,
    /// The product-board generation written up to.
    board_seen: u64,
    /// The socket, once the connection's opening frames are out: until then everything queues.
    wire: Option<Arc<dyn Wire>>,
    /// A write failed: the connection is over.
    broken: bool,
    /// The connection is closing: nothing but its close frame is written any more.
    closing: bool,
}

impl Outbox {
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.partial.is_none() && !self.broken
    }

    /// Write `frame` now if nothing is ahead of it: `None` if it must queue, else whether it went out whole.
    fn write_now(&mut self, frame: &Frame) -> Option<bool> {
        if !self.idle() {
            return None;
        }
        let wire = self.wire.clone()?;
        match write_frame(&*wire, &frame.wire) {
            Wrote::All => Some(true),
            Wrote::Part(rest) => {
                self.partial = Some(rest);
                Some(false)
            }
            Wrote::Blocked => None,
            Wrote::Failed => {
                self.broken = true;
                self.wire = None;
                Some(false)
            }
        }
    }

    /// Queue `frame`; returns `true` if the queue was full and made room.
    fn push(&mut self, frame: Frame, capacity: usize) -> bool {
        let queue = &mut self.queue;
        let overflowed = queue.len() >= capacity;
        if overflowed {
            let is_cart = |f: &Frame| matches!(f.kind, FrameKind::Cart(_));
            // Superseded cart updates go first: all of them if the new frame is one, else all but the newest.
            let keep = if is_cart(&frame) { None } else { queue.iter().rposition(is_cart) };
            let mut index = 0;
            queue.retain(|f| {
                let kept = !is_cart(f) || Some(index) == keep;
                index += 1;
                kept
            });
            // Still full of notices: the oldest make room (never the connection's own answers).
            while queue.len() >= capacity {
                let kept = |f: &Frame| matches!(f.kind, FrameKind::Reply | FrameKind::Snapshot(_));
                match queue.iter().position(|f| !is_cart(f) && !kept(f)) {
                    Some(oldest) => drop(queue.remove(oldest)),
                    None => break,
                }
            }
        }
        queue.push_back(frame);
        overflowed
    }
}

/// What [`Mailbox::flush`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is written.
    Done,
    /// The socket is full: wait until it is writable and flush again.
    Blocked,
    /// A write failed: the peer is gone.
    Failed,
}

impl Mailbox {
    fn new(capacity: usize, board_seen: u64) -> Mailbox {
        Mailbox {
            outbox: Mutex::new(Outbox {
                queue: VecDeque::new(),
                partial: None,
                last_cart: None,
                board_seen,
                wire: None,
                broken: false,
                closing: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Hand `frame` to this connection: a cart update is written at once when nothing is ahead of it, anything
    /// else queued. (A session's notice may come again after a replay of the stored ones; clients drop a
    /// notice whose id they have shown.)
    fn offer(&self, frame: Frame) -> Offered {
        let mut outbox = lock(&self.outbox);
        if outbox.closing {
            return Offered::Stale;
        }
        if let Some(position) = frame.position() {
            if !supersedes(position, outbox.last_cart) {
                return Offered::Stale;
            }
            if let Some(whole) = outbox.write_now(&frame) {
                outbox.last_cart = Some(position);
                drop(outbox);
                if !whole {
                    self.ready.notify_one();
                    return Offered::Taken;
                }
                return Offered::Written;
            }
        }
        let overflowed = outbox.push(frame, self.capacity);
        drop(outbox);
        self.ready.notify_one();
        Offered::Queued(overflowed)
    }

    /// Bring this connection up to the board: when nothing is ahead of it, write the newest state of every
    /// slot changed since it last had them (usually one frame); otherwise wake its task, which does the same
    /// when its socket can take it. Returns the frames written.
    fn catch_up(&self, board: &StateBoard, metrics: &Metrics) -> u64 {
        let mut outbox = lock(&self.outbox);
        if outbox.closing || outbox.board_seen >= board.generation() {
            return 0;
        }
        let wire = match outbox.wire.clone() {
            Some(wire) if outbox.idle() => wire,
            _ => {
                drop(outbox);
                self.ready.notify_one();
                return 0;
            }
        };
        let (written, flushed) = write_board(&mut outbox, &*wire, board, metrics);
        if flushed == Flushed::Failed {
            outbox.wire = None;
        }
        drop(outbox);
        if flushed != Flushed::Done {
            self.ready.notify_one();
        }
        written
    }

    /// Queue one of the connection's own frames (an answer, its snapshot, a replayed notice); the connection
    /// writes it with its next [`Mailbox::flush`].
    pub fn push_own(&self, frame: Frame) {
        let mut outbox = lock(&self.outbox);
        outbox.push(frame, usize::MAX);
    }

    /// Start writing straight to `wire` (the connection's opening frames are queued or out).
    pub fn attach(&self, wire: Arc<dyn Wire>) {
        lock(&self.outbox).wire = Some(wire);
    }

    /// Stop writing: the connection is closing. Queued updates are dropped; its own answers (the `ERROR` that
    /// says why it closes) and the rest of a frame begun on the socket stay, so the close frame follows them.
    pub fn detach(&self) {
        let mut outbox = lock(&self.outbox);
        outbox.wire = None;
        outbox.queue.retain(|f| f.kind == FrameKind::Reply);
        outbox.closing = true;
    }

    /// Wait until there is something to write. Cancel-safe.
    pub async fn wanted(&self) {
        self.ready.notified().await;
    }

    /// Write to `wire`, without waiting, whatever is owed: the rest of a partial frame, the queue (cart updates
    /// not newer than what was written are skipped), then the newest state of every product changed since the
    /// last one written. Returns the frames written whole and what is left.
    pub fn flush(&self, wire: &dyn Wire, hub: &CartHub) -> (u64, Flushed) {
        let mut outbox = lock(&self.outbox);
        let mut written = 0;
        loop {
            if outbox.broken {
                return (written, Flushed::Failed);
            }
            if let Some(rest) = outbox.partial.take() {
                match write_frame(wire, &rest) {
                    Wrote::All => written += 1,
                    Wrote::Part(rest) => {
                        outbox.partial = Some(rest);
                        return (written, Flushed::Blocked);
                    }
                    Wrote::Blocked => {
                        outbox.partial = Some(rest);
                        return (written, Flushed::Blocked);
                    }
                    Wrote::Failed => {
                        outbox.broken = true;
                        return (written, Flushed::Failed);
                    }
                }
                continue;
            }
            let Some(frame) = outbox.queue.pop_front() else {
                // An idle connection keeps no queue's worth of memory.
                if outbox.queue.capacity() > 0 {
                    outbox.queue = VecDeque::new();
                }
                if outbox.closing {
                    return (written, Flushed::Done);
                }
                let (n, flushed) = write_board(&mut outbox, wire, &hub.board, &hub.metrics);
                return (written + n, flushed);
            };
            let position = frame.position();
            if position.is_some_and(|p| !supersedes(p, outbox.last_cart)) {
                continue;
            }
            match write_frame(wire, &frame.wire) {
                Wrote::All => {
                    written += 1;
                    observe_latency(&frame, &hub.metrics);
                }
                Wrote::Part(rest) => outbox.partial = Some(rest),
                Wrote::Blocked => {
                    // Not written after all: it goes first next time.
                    outbox.queue.push_front(frame);
                    return (written, Flushed::Blocked);
                }
                Wrote::Failed => {
                    outbox.broken = true;
                    return (written, Flushed::Failed);
                }
            }
            let shown = match frame.kind {
                FrameKind::Snapshot(at) => Some(at).filter(|at| supersedes(*at, outbox.last_cart)),
                _ => position,
            };
            if shown.is_some() {
                outbox.last_cart = shown;
            }
        }
    }
}

/// The newest state of every product changed since the last one `outbox` wrote, oldest change first. Its
/// mark moves past each frame written, so a frame the socket could not take is read from the board again
/// next time — by then perhaps a newer state of that product.
fn write_board(outbox: &mut Outbox, wire: &dyn Wire, board: &StateBoard, metrics: &Metrics) -> (u64, Flushed) {
    let mut written = 0;
    for (generation, frame) in board.since(outbox.board_seen) {
        match write_frame(wire, &frame.wire) {
            Wrote::All => {
                written += 1;
                outbox.board_seen = generation;
                observe_latency(&frame, metrics);
            }
            Wrote::Part(rest) => {
                outbox.board_seen = generation;
                outbox.partial = Some(rest);
                return (written, Flushed::Blocked);
            }
            Wrote::Blocked => return (written, Flushed::Blocked),
            Wrote::Failed => {
                outbox.broken = true;
                return (written, Flushed::Failed);
            }
        }
    }
    (written, Flushed::Done)
}

/// Count a frame the publisher wrote itself.
fn written(frame: &Frame, metrics: &Metrics) {
    metrics.ws_messages_sent.inc();
    observe_latency(frame, metrics);
}

/// Commit → written, for what a connection was sent because something changed: not its own answers, nor the
/// presence counts it is sent on a timer.
fn observe_latency(frame: &Frame, metrics: &Metrics) {
    if !matches!(frame.kind, FrameKind::Reply | FrameKind::Snapshot(_) | FrameKind::Presence) {
        metrics.broadcast_latency.observe(frame.published_at.elapsed().as_secs_f64());
    }
}

/// The newest `PRODUCT_UPDATE` frame of every product that changed, one slot each, and the presence counts
/// (see the module doc).
pub struct StateBoard {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    slots: Vec<StateSlot>,
    /// The generation of the newest slot.
    generation: u64,
}

/// What a board slot holds the newest state of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Topic {
    Product(ProductId),
    /// The presence counts (one slot: a connection that missed changes is sent all the counts).
    Presence,
}

struct StateSlot {
    id: Topic,
    /// `(epoch bits, revision)`: a newer revision of the same epoch, or any revision of another, replaces it.
    position: (u64, u64),
    generation: u64,
    frame: Frame,
    /// What changed from the generation before (the presence counts): sent instead of `frame` to a connection
    /// that has every earlier change.
    delta: Option<Frame>,
}

impl StateBoard {
    fn new() -> StateBoard {
        StateBoard { slots: Mutex::new(Slots::default()) }
    }

    /// Put `frame` (the state of `topic` at `position`; `delta`, if any, what changed since the slot's last
    /// one) in the topic's slot unless the slot holds the same or a newer state; returns its generation if it
    /// did.
    fn publish(&self, topic: Topic, position: (u64, u64), frame: Frame, delta: Option<Frame>) -> Option<u64> {
        let mut slots = lock(&self.slots);
        let generation = slots.generation + 1;
        match slots.slots.iter_mut().find(|slot| slot.id == topic) {
            Some(slot) => {
                if !supersedes(position, Some(slot.position)) {
                    return None;
                }
                slot.position = position;
                slot.generation = generation;
                slot.frame = frame;
                slot.delta = delta;
            }
            None => slots.slots.push(StateSlot { id: topic, position, generation, frame, delta }),
        }
        slots.generation = generation;
        Some(generation)
    }

    fn generation(&self) -> u64 {
        lock(&self.slots).generation
    }

    /// The slots changed after `seen`, oldest change first, with their generations.
    fn since(&self, seen: u64) -> Vec<(u64, Frame)> {
        let slots = lock(&self.slots);
        if slots.generation <= seen {
            return Vec::new();
        }
        let mut fresh: Vec<(u64, Frame)> = slots
            .slots
            .iter()
            .filter(|slot| slot.generation > seen)
            .map(|slot| {
                let frame = match &slot.delta {
                    Some(delta) if slot.generation == seen + 1 => delta,
                    _ => &slot.frame,
                };
                (slot.generation, frame.clone())
            })
            .collect();
        fresh.sort_by_key(|(generation, _)| *generation);
        fresh
    }
}

struct CartTopic {
    newest: Option<CartPosition>,
    mailboxes: Vec<Arc<Mailbox>>,
}

type Topics = Mutex<HashMap<CartKey, CartTopic>>;

/// Whether a pass bringing every connection up to the board is running, and when its latest round began: one
/// pass at a time. A round covers the board as it was when the round began; the pass goes round again while the
/// board has moved since, its rounds at least the floor apart.
///
/// "Moved since" is the board's generation, read under the board's lock, not a flag a publisher sets and a
/// round clears: a flag cleared at a round's start could swallow a change published before the round listed
/// its connections but after the flag was read.
#[derive(Default)]
struct Pass {
    running: AtomicBool,
    last_round: Mutex<Option<Instant>>,
}

impl Pass {
    /// The board moved: `true` if the caller is to run the pass (none was running).
    fn start(&self) -> bool {
        !self.running.swap(true, Ordering::AcqRel)
    }

    /// A round begins now; it covers the board up to the generation returned.
    fn begin_round(&self, board: &StateBoard, now: Instant) -> u64 {
        *lock(&self.last_round) = Some(now);
        board.generation()
    }

    /// When the next round may begin: `floor` after the last one began (`None`: at once).
    fn next_round_at(&self, floor: Duration) -> Option<Instant> {
        lock(&self.last_round).and_then(|began| began.checked_add(floor))
    }

    /// A round that covered generation `covered` ended: `true` if the board has moved since and this pass is to
    /// go round again (else it has stopped, and the next change starts one).
    fn round_again(&self, board: &StateBoard, covered: u64) -> bool {
        if board.generation() > covered {
            return true;
        }
        // A swap, not a store: it is ordered with the publisher's swap in `start`. If the publisher's came
        // first it saw this pass running, and this swap sees its change on the board (below) and goes on;
        // otherwise the publisher started a pass itself. (A plain store could be overtaken by the load below,
        // and both sides would leave the change to the other.)
        self.running.swap(false, Ordering::AcqRel);
        board.generation() > covered && !self.running.swap(true, Ordering::AcqRel)
    }
}

/// How many connections are here.
fn mailbox_count(topics: &Topics) -> usize {
    lock(topics).values().map(|topic| topic.mailboxes.len()).sum()
}

/// Every connection here.
fn all_mailboxes(topics: &Topics) -> Vec<Arc<Mailbox>> {
    lock(topics).values().flat_map(|topic| topic.mailboxes.iter().cloned()).collect()
}

/// What a pass needs to bring every connection up to the board (see [`CartHub::fan_out_state`]).
struct Round {
    topics: Arc<Topics>,
    board: Arc<StateBoard>,
    pass: Arc<Pass>,
    metrics: Arc<Metrics>,
    floor: Duration,
}

impl Round {
    fn bring_up(&self, mailboxes: &[Arc<Mailbox>]) {
        for mailbox in mailboxes {
            self.metrics.ws_messages_sent.inc_by(mailbox.catch_up(&self.board, &self.metrics));
        }
    }

    /// The pass as a task: each round (the first at `at`, if given) lists the connections after it began,
    /// so one that subscribed later and missed a change is in the next round, which that change brings about.
    async fn run(self, mut at: Option<Instant>) {
        loop {
            if let Some(at) = at {
                tokio::time::sleep_until(at.into()).await;
            }
            let covered = self.pass.begin_round(&self.board, Instant::now());
            for slice in all_mailboxes(&self.topics).chunks(FANOUT_SLICE) {
                self.bring_up(slice);
                tokio::task::yield_now().await;
            }
            if !self.pass.round_again(&self.board, covered) {
                return;
            }
            at = self.pass.next_round_at(self.floor).filter(|at| *at > Instant::now());
        }
    }
}

/// The subscriptions of this process, by cart, and the ring of frames for everyone.
pub struct CartHub {
    topics: Arc<Topics>,
    mailbox_capacity: usize,
    everyone: broadcast::Sender<Frame>,
    board: Arc<StateBoard>,
    pass: Arc<Pass>,
    /// Rounds of the pass begin at least this far apart (see [`CartHub::fan_out_state`]).
    round_floor: Duration,
    /// Rung when shopper messages wait or a service let go: this instance's chat desk claims again.
    chat_waiting: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl CartHub {
    /// `mailbox_capacity` frames per connection; `broadcast_capacity` frames in the shared ring for everyone;
    /// rounds bringing every connection up to the board at least `round_floor` apart.
    pub fn new(
        mailbox_capacity: usize,
        broadcast_capacity: usize,
        round_floor: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<CartHub> {
        let (everyone, _) = broadcast::channel(broadcast_capacity.max(1));
        Arc::new(CartHub {
            topics: Arc::new(Mutex::new(HashMap::new())),
            mailbox_capacity,
            everyone,
            board: Arc::new(StateBoard::new()),
            pass: Arc::default(),
            round_floor,
            chat_waiting: Arc::new(Notify::new()),
            metrics,
        })
    }

    /// What rings when shopper messages wait for a service (see [`super::chat::ChatDesk`]).
    pub fn chat_waiting(&self) -> Arc<Notify> {
        self.chat_waiting.clone()
    }

    /// Start receiving the general notices (product changes and presence go through the board).
    pub fn everyone(&self) -> broadcast::Receiver<Frame> {
        self.everyone.subscribe()
    }

    /// Publish a product's new state to every connection here (see [`StateBoard`]); `false` if the board
    /// already held it or a newer one.
    pub fn publish_product(&self, product: &Product, frame: Frame) -> bool {
        let position = (product.epoch.bits(), product.revision);
        let published = self.board.publish(Topic::Product(product.id.clone()), position, frame, None).is_some();
        if published {
            self.fan_out_state();
        }
        published
    }

    /// Publish presence counts to every connection here: `changes` goes to connections that have every earlier
    /// change, `all` the counts to one that missed some. `number` orders the publications (the presence loop's).
    pub fn publish_presence(&self, changes: Frame, all: Frame, number: u64) {
        if self.board.publish(Topic::Presence, (0, number), all, Some(changes)).is_some() {
            self.fan_out_state();
        }
    }

    /// Bring every connection here up to the board. One pass at a time, over the connections in slices with a
    /// yield between them (a change for a hundred thousand connections is not one blocking stretch of the
    /// runtime); a change published during a pass makes it go round again, and each connection is then
    /// written only the newest state of what changed — so a flash sale costs a pass per round, not a pass
    /// and a wake-up of every connection per change.
    ///
    /// Rounds begin at least `round_floor` apart: a change within it of the last round's start waits for the
    /// rest of it, and whatever else changed meanwhile goes in the same round. Without the floor a storm on one
    /// core runs rounds back to back, each a frame for every connection: 10,000 connections were sent 120,000
    /// frames a second, which their readers (and the server's cart traffic) had to get through first. A change
    /// after a quiet spell goes at once.
    fn fan_out_state(&self) {
        if !self.pass.start() {
            return; // the running pass goes round again
        }
        let round = Round {
            topics: self.topics.clone(),
            board: self.board.clone(),
            pass: self.pass.clone(),
            metrics: self.metrics.clone(),
            floor: self.round_floor,
        };
        let runtime = tokio::runtime::Handle::try_current().ok();
        loop {
            let later = round.pass.next_round_at(round.floor).filter(|at| *at > Instant::now());
            match &runtime {
                Some(runtime) if later.is_some() || mailbox_count(&round.topics) > FANOUT_SLICE => {
                    runtime.spawn(round.run(later));
                    return;
                }
                // A few connections and no round within the floor (or no runtime to wait in): here and now.
                _ => {
                    let covered = round.pass.begin_round(&round.board, Instant::now());
                    round.bring_up(&all_mailboxes(&round.topics));
                    if !round.pass.round_again(&round.board, covered) {
                        return;
                    }
                }
            }
        }
    }

    /// Start receiving updates of `key`; they stop when the subscription is dropped.
    pub fn subscribe(self: &Arc<Self>, key: &CartKey) -> Subscription {
        let mailbox = Arc::new(Mailbox::new(self.mailbox_capacity, self.board.generation()));
        let mut topics = lock(&self.topics);
        topics
            .entry(key.clone())
            .or_insert_with(|| CartTopic { newest: None, mailboxes: Vec::new() })
            .mailboxes
            .push(mailbox.clone());
        Subscription { hub: Arc::downgrade(self), key: key.clone(), mailbox }
    }

    /// Deliver an already-serialized frame to the local subscribers of `key`; returns how many it reached.
    pub fn deliver(&self, key: &CartKey, frame: Frame) -> usize {
        let mailboxes = {
            let mut topics = lock(&self.topics);
            let Some(topic) = topics.get_mut(key) else {
                return 0;
            };
            if let Some(position) = frame.position() {
                if !supersedes(position, topic.newest) {
                    return 0;
                }
                topic.newest = Some(position);
            }
            topic.mailboxes.clone()
        };
        // Outside the topics' lock: writing to a thousand sockets must not hold up other carts.
        for mailbox in &mailboxes {
            match mailbox.offer(frame.clone()) {
                Offered::Written => written(&frame, &self.metrics),
                Offered::Queued(true) => {
                    self.metrics.slow_consumer_events.inc();
                }
                Offered::Queued(false) | Offered::Taken | Offered::Stale => {}
            }
        }
        mailboxes.len()
    }

    /// Hand `frame` to every connection through the shared ring; returns how many receivers it reached.
    pub fn broadcast(&self, frame: Frame) -> usize {
        // Err only means nobody is connected.
        self.everyone.send(frame).unwrap_or(0)
    }

    /// The carts with at least one subscriber here.
    pub fn subscribed_keys(&self) -> Vec<CartKey> {
        lock(&self.topics).keys().cloned().collect()
    }

    /// The carts with at least one subscriber here, with how many each has.
    pub fn subscriptions(&self) -> Vec<(CartKey, usize)> {
        lock(&self.topics).iter().map(|(key, topic)| (key.clone(), topic.mailboxes.len())).collect()
    }

    /// Carts with at least one subscriber here (for metrics and tests).
    pub fn subscribed_carts(&self) -> usize {
        lock(&self.topics).len()
    }

    fn unsubscribe(&self, key: &CartKey, mailbox: &Arc<Mailbox>) {
        let mut topics = lock(&self.topics);
        if let Some(topic) = topics.get_mut(key) {
            topic.mailboxes.retain(|m| !Arc::ptr_eq(m, mailbox));
            if topic.mailboxes.is_empty() {
                topics.remove(key);
            }
        }
    }
}

impl CartHub {
    /// Deliver a committed event to the connections of this instance it concerns.
    pub fn deliver_event(&self, event: &Event) {
        match event {
            Event::CartChanged { key, cart } => {
                self.deliver(key, Frame::cart_update(cart));
            }
            Event::ProductChanged(product) => {
                self.publish_product(product, Frame::product_update(product));
            }
        }
    }

    /// Deliver a notice to `session`'s connections here, or to every connection here.
    pub fn deliver_notice(&self, session: Option<&CartKey>, frame: Frame) -> usize {
        match session {
            Some(key) => self.deliver(key, frame),
            None => self.broadcast(frame),
        }
    }
}

/// One instance: everything committed here is delivered here, and that is everyone.
impl Fanout for CartHub {
    fn announce(&self, events: &[Event]) {
        for event in events {
            self.deliver_event(event);
        }
    }

    fn notify<'a>(
        &'a self,
        session: Option<&'a CartKey>,
        epoch: &'a Epoch,
        notice: &'a PostedNotice,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        futures_util::future::ready(Ok(self.deliver_notice(session, Frame::notice(epoch, notice)))).boxed()
    }

    fn chat<'a>(&'a self, session: &'a CartKey, message: &'a ChatMessage) -> BoxFuture<'a, Result<usize, StoreError>> {
        futures_util::future::ready(Ok(self.deliver(session, Frame::chat(message)))).boxed()
    }

    fn chat_waiting(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.chat_waiting.notify_one();
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// A connection's subscription to one cart.
pub struct Subscription {
    hub: Weak<CartHub>,
    key: CartKey,
    mailbox: Arc<Mailbox>,
}

impl Subscription {
    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(&self.key, &self.mailbox);
        }
    }
}

#[cfg(test)]
impl Mailbox {
    fn kinds(&self) -> Vec<FrameKind> {
        lock(&self.outbox).queue.iter().map(|f| f.kind).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cartwheel_core::Notice;

    #[test]
    fn rounds_of_the_pass_begin_the_floor_apart_and_go_again_while_the_board_moved_since_one_began() {
        let (pass, board, floor) = (Pass::default(), StateBoard::new(), Duration::from_millis(250));
        let change = |stock: u32| {
            let p = product("candle", u64::from(stock), stock);
            board.publish(Topic::Product(p.id.clone()), (p.epoch.bits(), p.revision), Frame::product_update(&p), None)
        };
        assert_eq!(pass.next_round_at(floor), None, "no round yet: at once");
        assert!(pass.start(), "the first change starts the pass");
        assert!(!pass.start(), "one pass at a time");
        let t0 = Instant::now();
        change(1);
        let covered = pass.begin_round(&board, t0);
        assert_eq!(pass.next_round_at(floor), Some(t0 + floor));
        change(2); // during the round
        assert!(pass.round_again(&board, covered), "the board moved since the round began");
        let covered = pass.begin_round(&board, t0 + floor);
        assert!(!pass.round_again(&board, covered), "nothing moved: the pass stops");
        assert!(pass.start(), "and the next change starts one");
        assert_eq!(Pass::default().next_round_at(Duration::MAX), None);
        pass.begin_round(&board, t0);
        assert_eq!(pass.next_round_at(Duration::MAX), None, "a floor past the clock's end: no wait");
    }

    /// A socket that takes `room` bytes, then would block; it keeps what it took.
    #[derive(Default)]
    struct Socket {
        taken: Mutex<Vec<u8>>,
        room: Mutex<usize>,
    }

    impl Socket {
        fn with_room(room: usize) -> Arc<Socket> {
            let socket = Arc::new(Socket::default());
            *socket.room.lock().unwrap() = room;
            socket
        }

        fn give(&self, room: usize) {
            *self.room.lock().unwrap() = room;
        }

        /// The texts of the whole frames taken so far (server frames: unmasked, as `wire` writes them).
        fn texts(&self) -> Vec<String> {
            let bytes = self.taken.lock().unwrap().clone();
            let (mut texts, mut at) = (Vec::new(), 0);
            while at + 2 <= bytes.len() {
                let (len, start) = match bytes[at + 1] {
                    126 => (u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize, at + 4),
                    n => (n as usize, at + 2),
                };
                assert!(start + len <= bytes.len(), "a frame cut short");
                texts.push(String::from_utf8(bytes[start..start + len].to_vec()).unwrap());
                at = start + len;
            }
            texts
        }

        fn versions(&self) -> Vec<u64> {
            self.texts()
                .iter()
                .filter_map(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                .filter_map(|v| v["version"].as_u64())
                .collect()
        }
    }

    impl Wire for Socket {
        fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(*room);
            *room -= n;
            self.taken.lock().unwrap().extend_from_slice(&bytes[..n]);
            Ok(n)
        }
    }

    /// Flush `s`'s mailbox into a socket with room for everything; what it got.
    fn flushed(hub: &CartHub, s: &Subscription) -> Arc<Socket> {
        let socket = Socket::with_room(usize::MAX);
        assert_eq!(s.mailbox().flush(&*socket, hub).1, Flushed::Done);
        socket
    }

    fn cart(v: CartVersion) -> Cart {
        let mut c = Cart::empty("EUR");
        c.version = v;
        c
    }

    fn key(name: &str) -> CartKey {
        CartKey::parse(&name.repeat(32)).unwrap()
    }

    fn cart_event(key: &CartKey, v: CartVersion) -> Vec<Event> {
        vec![Event::CartChanged { key: key.clone(), cart: cart(v) }]
    }

    fn hub(capacity: usize) -> Arc<CartHub> {
        CartHub::new(capacity, 8, Duration::ZERO, Arc::new(Metrics::new()))
    }

    fn notice(message: &str) -> PostedNotice {
        let data = Notice { kind: "test".into(), message: message.into(), product_id: None };
        PostedNotice { id: format!("ntc_{message}"), seq: 1, sent_at_ms: 0, data }
    }

    #[tokio::test]
    async fn delivers_to_the_carts_subscribers_only() {
        let hub = hub(8);
        let a = key("a");
        let (s1, s2, other) = (hub.subscribe(&a), hub.subscribe(&a), hub.subscribe(&key("b")));
        hub.announce(&cart_event(&a, 1));
        assert_eq!(flushed(&hub, &s1).versions(), [1]);
        assert_eq!(flushed(&hub, &s2).versions(), [1]);
        assert!(flushed(&hub, &other).texts().is_empty());
    }

    #[tokio::test]
    async fn stale_versions_are_dropped() {
        let hub = hub(8);
        let a = key("a");
        let s = hub.subscribe(&a);
        hub.announce(&cart_event(&a, 2));
        hub.announce(&cart_event(&a, 1));
        hub.announce(&cart_event(&a, 2));
        hub.announce(&cart_event(&a, 3));
        assert_eq!(flushed(&hub, &s).versions(), [2, 3]);
    }

    /// A restored database or a flushed Redis starts the cart again at a low version in another epoch: the
    /// hub must deliver it (and then only newer versions of that epoch), or the page stays stale for ever.
    #[tokio::test]
    async fn a_lower_version_of_another_epoch_is_delivered() {
        let hub = hub(8);
        let a = key("a");
        let s = hub.subscribe(&a);
        hub.announce(&cart_event(&a, 7));
        let mut fresh = cart(1);
        fresh.epoch = cartwheel_core::version::Epoch::from_bits(0xb);
        let event = |c: &Cart| vec![Event::CartChanged { key: a.clone(), cart: c.clone() }];
        hub.announce(&event(&fresh));
        hub.announce(&event(&fresh));
        assert_eq!(s.mailbox().kinds(), [FrameKind::Cart((0, 7)), FrameKind::Cart((0xb, 1))], "the repeat is dropped");
        assert_eq!(flushed(&hub, &s).versions(), [7, 1], "version 1 of epoch B follows version 7 of A");
    }

    #[tokio::test]
    async fn overflow_keeps_only_the_newest() {
        let metrics = Arc::new(Metrics::new());
        let hub = CartHub::new(4, 8, Duration::ZERO, metrics.clone());
        let a = key("a");
        let s = hub.subscribe(&a);
        for v in 1..=5 {
            hub.announce(&cart_event(&a, v));
        }
        assert_eq!(s.mailbox().kinds().len(), 1, "bounded: the fifth push replaced the queue");
        assert_eq!(flushed(&hub, &s).versions(), [5]);
        assert_eq!(metrics.slow_consumer_events.get(), 1);
    }

    #[tokio::test]
    async fn overflow_keeps_notices_and_the_newest_cart_update() {
        let hub = hub(4);
        let a = key("a");
        let s = hub.subscribe(&a);
        hub.announce(&cart_event(&a, 1));
        hub.notify(Some(&a), &Epoch::default(), &notice("first")).await.unwrap();
        hub.announce(&cart_event(&a, 2));
        hub.notify(Some(&a), &Epoch::default(), &notice("second")).await.unwrap();
        // Full: a notice makes the older snapshot (version 1) go, not a notice.
        assert_eq!(hub.notify(Some(&a), &Epoch::default(), &notice("third")).await.unwrap(), 1);
        let kinds = s.mailbox().kinds();
        assert_eq!(kinds, [FrameKind::Notice(1), FrameKind::Cart((0, 2)), FrameKind::Notice(1), FrameKind::Notice(1)]);
        // Full of notices and one snapshot: a newer snapshot replaces the old one.
        hub.announce(&cart_event(&a, 3));
        let kinds = s.mailbox().kinds();
        assert_eq!(kinds, [FrameKind::Notice(1), FrameKind::Notice(1), FrameKind::Notice(1), FrameKind::Cart((0, 3))]);
        // Notices only: the oldest makes room.
        let only_notices = hub.subscribe(&key("b"));
        for i in 0..5 {
            hub.notify(Some(&key("b")), &Epoch::default(), &notice(&format!("n{i}"))).await.unwrap();
        }
        let texts = flushed(&hub, &only_notices).texts();
        assert_eq!(texts.len(), 4);
        assert!(texts[0].contains("n1") && texts[3].contains("n4"), "{texts:?}");
    }

    /// Once attached, a connection with nothing queued is written by the publisher itself; a frame the socket
    /// takes only in part is finished first, whole, by the connection's flush, and what came meanwhile follows.
    #[tokio::test]
    async fn the_publisher_writes_to_an_idle_socket_and_a_partial_frame_stays_whole() {
        let hub = hub(8);
        let a = key("a");
        let s = hub.subscribe(&a);
        let socket = Socket::with_room(usize::MAX);
        s.mailbox().attach(socket.clone());
        hub.announce(&cart_event(&a, 1));
        assert_eq!(socket.versions(), [1], "written without a flush");
        assert!(s.mailbox().kinds().is_empty());
        socket.give(10);
        hub.announce(&cart_event(&a, 2));
        hub.announce(&cart_event(&a, 3));
        assert_eq!(s.mailbox().kinds(), [FrameKind::Cart((0, 3))], "queued behind the rest of version 2");
        assert_eq!(hub.metrics.ws_messages_sent.get(), 1, "a begun frame is counted once it is finished");
        socket.give(usize::MAX);
        assert_eq!(s.mailbox().flush(&*socket, &hub), (2, Flushed::Done), "the rest of 2, then 3");
        assert_eq!(socket.versions(), [1, 2, 3]);
        // Detached (closing): nothing more is written or queued.
        s.mailbox().detach();
        hub.announce(&cart_event(&a, 4));
        assert_eq!(socket.versions(), [1, 2, 3]);
        assert!(s.mailbox().kinds().is_empty());
    }

    #[tokio::test]
    async fn frames_for_everyone_reach_every_receiver_and_a_lagging_one_learns_it() {
        let hub = hub(4);
        let mut one = hub.everyone();
        let mut two = hub.everyone();
        assert_eq!(hub.notify(None, &Epoch::default(), &notice("hello")).await.unwrap(), 2);
        assert_eq!(one.recv().await.unwrap().kind, FrameKind::Notice(1));
        assert_eq!(two.recv().await.unwrap().kind, FrameKind::Notice(1));
        for i in 0..9 {
            hub.notify(None, &Epoch::default(), &notice(&format!("{i}"))).await.unwrap();
        }
        assert!(matches!(one.recv().await, Err(broadcast::error::RecvError::Lagged(1))), "ring of 8, 9 sent");
    }

    fn product(id: &str, revision: u64, stock: u32) -> Product {
        let mut p = crate::domain::catalog::Catalog::built_in().unwrap().products()[0].clone();
        p.id = ProductId(id.to_owned());
        p.revision = revision;
        p.stock = stock;
        p
    }

    fn publish(hub: &CartHub, p: &Product) -> bool {
        hub.publish_product(p, Frame::product_update(p))
    }

    fn stocks(socket: &Socket) -> Vec<(String, u64)> {
        socket
            .texts()
            .iter()
            .map(|t| match serde_json::from_str(t).unwrap() {
                ServerMessage::ProductUpdate { data } => (data.id.0, u64::from(data.stock)),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// A connection whose socket is full while a product changes a hundred times is then sent its newest state
    /// once, not a hundred frames: product changes are state, latest wins, one slot per product.
    #[tokio::test]
    async fn product_changes_are_conflated_per_product_latest_wins() {
        let hub = hub(4);
        let s = hub.subscribe(&key("a"));
        let socket = Socket::with_room(0);
        s.mailbox().attach(socket.clone());
        for revision in 1..=100 {
            assert!(publish(&hub, &product("a", revision, revision as u32)));
        }
        assert!(publish(&hub, &product("b", 101, 7)));
        assert!(stocks(&socket).is_empty(), "the socket took nothing");
        socket.give(usize::MAX);
        assert_eq!(s.mailbox().flush(&*socket, &hub).1, Flushed::Done);
        assert_eq!(stocks(&socket), [("a".to_owned(), 100), ("b".to_owned(), 7)]);
        // Idle again: the next change is written by the publisher.
        assert!(publish(&hub, &product("b", 102, 8)));
        assert_eq!(stocks(&socket).last(), Some(&("b".to_owned(), 8)));
        // A stale or repeated revision (two publishers racing) is not news; another epoch is.
        assert!(!publish(&hub, &product("a", 99, 1)));
        assert!(!publish(&hub, &product("a", 100, 1)));
        let mut other_epoch = product("a", 1, 3);
        other_epoch.epoch = Epoch::from_bits(0xb);
        assert!(publish(&hub, &other_epoch));
        assert_eq!(stocks(&socket).last(), Some(&("a".to_owned(), 3)));
        assert_eq!(stocks(&socket).len(), 4);
    }

    #[tokio::test]
    async fn a_new_connection_gets_only_later_product_changes() {
        let hub = hub(4);
        publish(&hub, &product("a", 1, 1));
        let s = hub.subscribe(&key("a"));
        assert!(flushed(&hub, &s).texts().is_empty());
        publish(&hub, &product("b", 2, 2));
        assert_eq!(stocks(&flushed(&hub, &s)), [("b".to_owned(), 2)]);
    }

    #[test]
    fn dropping_the_last_subscription_forgets_the_cart() {
        let hub = hub(4);
        let a = key("a");
        let s1 = hub.subscribe(&a);
        let s2 = hub.subscribe(&a);
        assert_eq!(hub.subscribed_carts(), 1);
        drop(s1);
        assert_eq!(hub.subscribed_carts(), 1);
        drop(s2);
        assert_eq!(hub.subscribed_carts(), 0);
    }
}
