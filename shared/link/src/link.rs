//! [`CartLink`]: one bundle's live connection to its session's cart, and the fallbacks that keep the cart
//! right when the WebSocket is not open.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use gloo_events::EventListener;
use gloo_timers::callback::Timeout;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CloseEvent, CustomEvent, CustomEventInit, MessageEvent, VisibilityState, WebSocket};

use cartwheel_core::api::CHECKING;
use cartwheel_core::cart::Cart;
use cartwheel_core::catalog::Product;
pub use cartwheel_core::link::Handlers;
use cartwheel_core::link::{LinkReport, LinkState, LinkTimings, Liveness, LivenessCheck, LINK_EVENT, LINK_QUERY_EVENT};
use cartwheel_core::notices::NoticeInbox;
use cartwheel_core::order::CheckoutReceipt;
use cartwheel_core::presence::{in_carts_label, online_label, IN_CARTS_ATTR, ONLINE_ATTR};
use cartwheel_core::protocol::{
    ClientMessage, Notice, ServerMessage, CART_EVENT, CHAT_EVENT, CHAT_FRAME_PREFIX, NOTICE_EVENT, NOTICE_FRAME_PREFIX,
    PRESENCE_EVENT, PRESENCE_FRAME_PREFIX, WS_PATH,
};
use cartwheel_core::reconnect::{ReconnectPolicy, ReconnectSchedule};
use cartwheel_core::version::Epoch;
use cartwheel_core::version::VersionedCart;

use crate::api::{self, ApiError, CartRequest};
use crate::json;

thread_local! {
    /// The bundle's one link (each bundle has its own WASM instance, so its own copy of this).
    static INSTALLED: RefCell<Option<CartLink>> = const { RefCell::new(None) };
    /// While someone shows the reports (the shell's open connection details): every bundle is asked to
    /// report again each second, so "last heard" stays current without a report per frame.
    static REPORT_TICKER: RefCell<Option<gloo_timers::callback::Interval>> = const { RefCell::new(None) };
}

/// Ask every bundle on the page to report again now and then every second (`true`), or stop asking.
pub fn refresh_reports(on: bool) {
    let ticker = on.then(|| {
        query_reports();
        gloo_timers::callback::Interval::new(1_000, query_reports)
    });
    REPORT_TICKER.with(|t| *t.borrow_mut() = ticker);
}

fn query_reports() {
    if let (Some(window), Ok(query)) = (web_sys::window(), web_sys::Event::new(LINK_QUERY_EVENT)) {
        let _ = window.dispatch_event(&query);
    }
}

/// A cheap handle to the bundle's link; the link closes when [`CartLink::close`] is called.
#[derive(Clone)]
pub struct CartLink(Rc<Inner>);

struct Inner {
    mfe: &'static str,
    handlers: Handlers,
    state: RefCell<State>,
}

struct State {
    socket: Option<Socket>,
    /// A socket whose `onclose` is running cannot be dropped from inside it; it waits here for the next attempt.
    retired: Option<Socket>,
    schedule: ReconnectSchedule,
    shown: VersionedCart,
    report: LinkReport,
    retry: Option<Timeout>,
    /// The next `GET /api/cart` while not live (one at a time: the next is scheduled when it answered).
    poll: Option<Timeout>,
    /// Polls since the last time the link was live (the catalog is re-read on some of them).
    polls: u32,
    timings: LinkTimings,
    /// While the socket is open: what was heard on it, and the timer that checks it.
    liveness: Option<Liveness>,
    watchdog: Option<Timeout>,
    /// While the socket is opening: the attempt fails when this fires first.
    connect_deadline: Option<Timeout>,
    ping_in_flight: Option<(u64, f64)>,
    next_ping_id: u64,
    /// When the last frame from the server arrived (for the report's "last heard").
    last_heard_ms: Option<u64>,

    listeners: Vec<EventListener>,
    closed: bool,
}

struct Socket {
    ws: WebSocket,
    open: bool,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

impl CartLink {
    /// Start this bundle's link: connect, listen to the page's events, and call the `handlers`, starting from
    /// the state the page was rendered from (`initial` cart, `products`).
    pub fn install(
        mfe: &'static str,
        policy: ReconnectPolicy,
        timings: LinkTimings,
        initial: Option<Cart>,
        products: Vec<Product>,
        handlers: Handlers,
    ) -> CartLink {
        api::set_request_timeout(timings.request_timeout_ms);
        let mut shown = VersionedCart::new();
        for p in products {
            shown.offer_product(p);
        }
        if let Some(cart) = initial {
            shown.offer(cart);
        }
        let inner = Rc::new(Inner {
            mfe,
            handlers,
            state: RefCell::new(State {
                socket: None,
                retired: None,
                schedule: ReconnectSchedule::new(policy),
                shown,
                report: LinkReport::connecting(mfe),
                retry: None,
                poll: None,
                polls: 0,
                timings,
                liveness: None,
                watchdog: None,
                connect_deadline: None,
                ping_in_flight: None,
                next_ping_id: 1,
                last_heard_ms: None,
                listeners: Vec::new(),
                closed: false,
            }),
        });
        let listeners = page_listeners(&inner);
        inner.state.borrow_mut().listeners = listeners;
        Inner::connect(&inner);
        // Not live yet: poll from the start, so a page whose socket never opens still follows the cart.
        inner.schedule_poll();
        inner.emit();
        let link = CartLink(inner);
        // Take the previous link out first: closing it touches INSTALLED again.
        let previous = INSTALLED.with(|slot| slot.borrow_mut().replace(link.clone()));
        if let Some(previous) = previous {
            previous.close();
        }
        link
    }

    /// The link installed in this bundle, if any.
    pub fn installed() -> Option<CartLink> {
        INSTALLED.with(|slot| slot.borrow().clone())
    }

    /// A cart this bundle received from its own REST call: show it if newer and tell the other bundles.
    pub fn apply_own(&self, cart: &Cart) {
        self.0.offer(cart.clone());
        dispatch_json(CART_EVENT, cart);
    }

    /// The cart shown now.
    pub fn shown(&self) -> Option<Cart> {
        self.0.state.borrow().shown.current().cloned()
    }

    /// Close the socket, stop every timer and listener. Idempotent.
    pub fn close(&self) {
        let (socket, retired, timers, listeners) = {
            let mut s = self.0.state.borrow_mut();
            s.closed = true;
            (
                s.socket.take(),
                s.retired.take(),
                (s.retry.take(), s.poll.take(), s.watchdog.take(), s.connect_deadline.take()),
                std::mem::take(&mut s.listeners),
            )
        };
        drop((socket, retired, timers, listeners));
        drop(REPORT_TICKER.with(|t| t.borrow_mut().take()));
        INSTALLED.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().is_some_and(|l| Rc::ptr_eq(&l.0, &self.0)) {
                *slot = None;
            }
        });
    }

    /// Whether the socket is live (the server's first frame arrived and nothing since says it is gone).
    pub fn is_live(&self) -> bool {
        self.0.state.borrow().report.state == LinkState::Live
    }

    /// The connection's current report.
    pub fn report(&self) -> LinkReport {
        self.0.state.borrow().report.clone()
    }
}

/// Change the cart over REST (with an `Idempotency-Key`, retried on network errors), then show the answer at
/// once and dispatch it to the page's other bundles. `note` hears [`CHECKING`] when the outcome becomes
/// unknown (no answer in time, or a failure while it ran) and the retries go on.
pub async fn mutate(request: CartRequest, note: &dyn Fn(&str)) -> Result<Cart, ApiError> {
    let link = CartLink::installed();
    let shown = link.as_ref().and_then(CartLink::shown);
    let answer = api::send(&request, shown.as_ref(), &|| note(CHECKING)).await;
    let answer = settle(link.as_ref(), answer).await;
    show_answer(link.as_ref(), answer.as_ref().ok(), answer.as_ref().err());
    answer
}

/// A change whose outcome is still unknown after its last retry: read the cart, so what is shown is what the
/// shop has, and say in words that the change is not confirmed (trying it again reuses its key).
async fn settle<T>(link: Option<&CartLink>, answer: Result<T, ApiError>) -> Result<T, ApiError> {
    match answer {
        Err(e) if e.outcome_unknown() => {
            let cart = api::fetch_cart().await;
            let read = cart.is_ok();
            if let (Ok(cart), Some(link)) = (cart, link) {
                link.apply_own(&cart);
            }
            Err(ApiError::unconfirmed(read))
        }
        other => other,
    }
}

/// Show a REST answer's cart, or the current cart a refusal carried (412, 409).
fn show_answer(link: Option<&CartLink>, cart: Option<&Cart>, error: Option<&ApiError>) {
    if let Some(cart) = cart.or_else(|| error.and_then(|e| e.cart.as_deref())) {
        if let Some(link) = link {
            link.apply_own(cart);
        }
    }
}

/// Check out (with an `Idempotency-Key`, retried like a change); the emptied cart is shown and dispatched.
/// The cart checked out is the one shown: if it changed or its total did meanwhile, nothing is bought and the
/// current cart is shown instead.
pub async fn checkout(note: &dyn Fn(&str)) -> Result<CheckoutReceipt, ApiError> {
    let link = CartLink::installed();
    let shown = link.as_ref().and_then(CartLink::shown);
    let answer = api::checkout(shown.as_ref(), &|| note(CHECKING)).await;
    let answer = settle(link.as_ref(), answer).await;
    show_answer(link.as_ref(), answer.as_ref().ok().map(|r| &r.cart), answer.as_ref().err());
    answer
}

impl Inner {
    fn connect(self: &Rc<Self>) {
        {
            let mut s = self.state.borrow_mut();
            if s.closed || s.socket.is_some() {
                return;
            }
            s.retry = None;
            s.retired = None;
        }
        let ws = match WebSocket::new(&socket_url(self.mfe)) {
            Ok(ws) => ws,
            Err(_) => {
                // Only a malformed URL fails synchronously; treat it like a failed attempt.
                self.lost(None);
                return;
            }
        };
        let weak = Rc::downgrade(self);
        let on_open = {
            let weak = weak.clone();
            Closure::<dyn FnMut()>::new(move || with(&weak, |inner| inner.opened()))
        };
        let on_message = {
            let weak = weak.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| with(&weak, |inner| inner.message(&e)))
        };
        let on_close =
            Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| with(&weak, |inner| inner.lost(Some(e.code()))));
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let mut s = self.state.borrow_mut();
        s.socket = Some(Socket { ws, open: false, _on_open: on_open, _on_message: on_message, _on_close: on_close });
        let weak = Rc::downgrade(self);
        s.connect_deadline = Some(Timeout::new(s.timings.connect_timeout_ms as u32, move || {
            with(&weak, |inner| {
                let opening = inner.state.borrow().socket.as_ref().is_some_and(|s| !s.open);
                if opening {
                    inner.drop_socket();
                }
            })
        }));
    }

    /// Give up on the socket (it never opened, or went silent): nothing closes such a socket in time, so this
    /// does, then counts a failed attempt.
    fn drop_socket(self: &Rc<Self>) {
        let socket = self.state.borrow_mut().socket.take();
        // Not inside the socket's own callbacks here, so it can go at once (its handlers go with it).
        drop(socket);
        self.lost(None);
    }

    fn opened(self: &Rc<Self>) {
        {
            let mut s = self.state.borrow_mut();
            s.schedule.opened(now_ms());
            if let Some(socket) = s.socket.as_mut() {
                socket.open = true;
            }
            s.connect_deadline = None;
            s.liveness = Some(Liveness::opened(now_ms()));
        }
        // Open is not live: a proxy or relay may accept the socket and pass nothing. The server's first frame
        // (its snapshot) is what makes it live; until then polling goes on and the deadline runs.
        self.ping();
        self.watch();
    }

    /// The first frame on an open socket: the server is really there.
    fn heard_first(self: &Rc<Self>) {
        {
            let mut s = self.state.borrow_mut();
            s.report.state = LinkState::Live;
            s.report.retry_in_ms = None;
            s.report.failures = s.schedule.failures();
            s.poll = None;
            s.polls = 0;
        }
        self.refresh_products();
        self.emit();
    }

    /// Check the open socket's liveness and act on it: PING after silence, drop it when even that went
    /// unanswered, else look again when the next check is due.
    fn watch(self: &Rc<Self>) {
        let check = {
            let s = self.state.borrow();
            match s.liveness {
                Some(l) => l.check(now_ms(), &s.timings),
                None => return,
            }
        };
        match check {
            LivenessCheck::Ping => {
                self.ping();
                self.watch();
            }
            LivenessCheck::Dead => self.drop_socket(),
            LivenessCheck::Wait(ms) => {
                let weak = Rc::downgrade(self);
                self.state.borrow_mut().watchdog =
                    Some(Timeout::new(ms as u32, move || with(&weak, |inner| inner.watch())));
            }
        }
    }

    fn message(self: &Rc<Self>, event: &MessageEvent) {
        let Some(text) = event.data().as_string() else { return };
        let first = {
            let mut s = self.state.borrow_mut();
            if let Some(l) = s.liveness.as_mut() {
                l.heard(now_ms());
            }
            s.last_heard_ms = Some(now_ms());
            s.report.state != LinkState::Live
        };
        if first {
            self.heard_first();
        }
        // Passed on as text, unread: only the shell reads notices (see `json::parse_notice`).
        if text.starts_with(NOTICE_FRAME_PREFIX) {
            dispatch_text(NOTICE_EVENT, &text);
            return;
        }
        // Likewise for the help chat, which the shell shows (see `on_chat`).
        if text.starts_with(CHAT_FRAME_PREFIX) {
            dispatch_text(CHAT_EVENT, &text);
            return;
        }
        // Likewise for the bundles that show presence (see `show_presence`).
        if text.starts_with(PRESENCE_FRAME_PREFIX) {
            dispatch_text(PRESENCE_EVENT, &text);
            return;
        }
        match json::parse_server_message(&text) {
            Some(ServerMessage::CartUpdate { version, mut data }) => {
                let skipped = cartwheel_core::version::skips_versions(
                    self.state.borrow().shown.position(),
                    (&data.epoch, version),
                );
                data.version = version;
                self.offer(data);
                if skipped {
                    self.resync();
                }
            }
            Some(ServerMessage::Pong { id, .. }) => {
                let rtt = {
                    let mut s = self.state.borrow_mut();
                    match s.ping_in_flight {
                        Some((sent_id, at)) if sent_id == id => {
                            s.ping_in_flight = None;
                            let rtt = (now_ms() as f64 - at).max(0.0) as u32;
                            s.report.rtt_ms = Some(rtt);
                            true
                        }
                        _ => false,
                    }
                };
                if rtt {
                    self.emit();
                }
            }
            Some(ServerMessage::ProductUpdate { data }) => self.offer_product(data),
            Some(ServerMessage::Notice { .. } | ServerMessage::Presence { .. } | ServerMessage::Chat { .. }) => {}
            Some(ServerMessage::Error { code, message }) => {
                // The code's name is not printed: `Debug` of every code would be linked into each bundle.
                let _ = code;
                web_sys::console::warn_2(&self.mfe.into(), &message.into());
            }
            None => {
                web_sys::console::warn_2(&self.mfe.into(), &"unreadable frame".into());
            }
        }
    }

    /// The socket closed (`code`) or could not be created (`None`): schedule the next attempt and poll meanwhile.
    fn lost(self: &Rc<Self>, code: Option<u16>) {
        {
            let mut s = self.state.borrow_mut();
            let socket = s.socket.take();
            s.retired = socket;
            s.liveness = None;
            s.watchdog = None;
            s.connect_deadline = None;
            s.ping_in_flight = None;
            if s.closed {
                return;
            }
            let delay = s.schedule.closed_with(now_ms(), code, js_sys::Math::random());
            s.report.failures = s.schedule.failures();
            if online() {
                s.report.state = LinkState::Reconnecting;
                s.report.retry_in_ms = Some(delay.as_millis() as u32);
                let weak = Rc::downgrade(self);
                s.retry = Some(Timeout::new(delay.as_millis() as u32, move || with(&weak, |inner| inner.connect())));
            } else {
                // Attempts wait for the `online` event.
                s.report.state = LinkState::Offline;
                s.report.retry_in_ms = None;
                s.retry = None;
            }
        }
        self.schedule_poll();
        self.emit();
    }

    /// Try now instead of waiting for the timer (the network came back, or the tab became visible).
    fn reconnect_now(self: &Rc<Self>) {
        let connected = self.state.borrow().socket.is_some();
        if !connected {
            self.connect();
        }
    }

    /// The browser lost the network: not live any more, whatever the socket says, and no attempts until it
    /// is back (`online`).
    fn went_offline(self: &Rc<Self>) {
        let socket = {
            let mut s = self.state.borrow_mut();
            s.retry = None;
            s.socket.take()
        };
        drop(socket);
        self.lost(None);
    }

    /// The network is back: the backoff it had reached says nothing about now, so start over and connect.
    fn came_online(self: &Rc<Self>) {
        {
            let mut s = self.state.borrow_mut();
            let policy = *s.schedule.policy();
            s.schedule = ReconnectSchedule::new(policy);
        }
        self.reconnect_now();
    }

    fn ping(self: &Rc<Self>) {
        let mut s = self.state.borrow_mut();
        let id = s.next_ping_id;
        // The deadline runs from the first unanswered PING, sent or not (a socket that cannot send is as dead).
        if let Some(l) = s.liveness.as_mut() {
            l.pinged(now_ms());
        }
        let Some(socket) = s.socket.as_ref().filter(|s| s.open) else { return };
        let frame = json::stringify(&ClientMessage::Ping { id }).unwrap_or_default();
        if socket.ws.send_with_str(&frame).is_ok() {
            s.next_ping_id += 1;
            s.ping_in_flight = Some((id, now_ms() as f64));
        }
    }

    fn resync(self: &Rc<Self>) {
        let s = self.state.borrow();
        if let Some(socket) = s.socket.as_ref().filter(|s| s.open) {
            let frame = json::stringify(&ClientMessage::Resync).unwrap_or_default();
            let _ = socket.ws.send_with_str(&frame);
        }
    }

    /// Poll once after a jittered wait, unless already scheduled or live.
    fn schedule_poll(self: &Rc<Self>) {
        let wait = {
            let s = self.state.borrow();
            s.timings.poll_delay_ms(js_sys::Math::random())
        };
        self.schedule_poll_in(wait);
    }

    fn schedule_poll_in(self: &Rc<Self>, wait_ms: u64) {
        let mut s = self.state.borrow_mut();
        if s.closed || s.poll.is_some() || s.report.state == LinkState::Live {
            return;
        }
        let weak = Rc::downgrade(self);
        s.poll = Some(Timeout::new(wait_ms as u32, move || with(&weak, |inner| inner.poll())));
    }

    fn poll(self: &Rc<Self>) {
        let catalog = {
            let mut s = self.state.borrow_mut();
            let due = LinkTimings::catalog_due(s.polls);
            s.polls = s.polls.wrapping_add(1);
            due
        };
        let weak = Rc::downgrade(self);
        wasm_bindgen_futures::spawn_local(async move {
            let cart = api::fetch_cart().await;
            with(&weak, |inner| {
                // A busy server (429/503) is polled less often, and never sooner than its Retry-After.
                let (status, retry_after) = match &cart {
                    Ok(_) => (Some(200), None),
                    Err(e) => (e.status, e.retry_after_ms),
                };
                if let Ok(cart) = cart {
                    inner.offer(cart);
                }
                // The next one only now: one request in flight at most, however slow the answers.
                let wait = {
                    let mut s = inner.state.borrow_mut();
                    s.poll = None;
                    s.timings.poll_after_ms(status, retry_after, js_sys::Math::random())
                };
                inner.schedule_poll_in(wait);
            });
        });
        if catalog {
            self.refresh_products();
        }
    }

    /// Every product as it is now, for bundles that follow products (see [`Handlers::on_product`]).
    fn refresh_products(self: &Rc<Self>) {
        if self.handlers.on_product.is_none() {
            return;
        }
        let weak = Rc::downgrade(self);
        wasm_bindgen_futures::spawn_local(async move {
            if let Ok(products) = api::fetch_products().await {
                with(&weak, |inner| products.into_iter().for_each(|p| inner.offer_product(p)));
            }
        });
    }

    /// Show `cart` if it is newer than what is shown (the version rule); never call back while borrowed.
    fn offer(&self, cart: Cart) {
        let taken = {
            let mut s = self.state.borrow_mut();
            if s.shown.offer(cart) {
                s.shown.current().cloned()
            } else {
                None
            }
        };
        if let Some(cart) = taken {
            (self.handlers.on_cart)(cart);
        }
    }

    /// Keep `product` if it is newer than the state held (the revision rule) and re-price the cart with it.
    fn offer_product(&self, product: Product) {
        let Some(on_product) = &self.handlers.on_product else { return };
        let (offer, repriced) = {
            let mut s = self.state.borrow_mut();
            let offer = s.shown.offer_product(product.clone());
            let repriced = if offer.cart_changed { s.shown.current().cloned() } else { None };
            (offer, repriced)
        };
        if offer.newer {
            on_product(product);
        }
        if let Some(cart) = repriced {
            (self.handlers.on_cart)(cart);
        }
    }

    fn emit(&self) {
        let report = {
            let mut s = self.state.borrow_mut();
            s.report.heard_ago_ms =
                s.last_heard_ms.map(|at| now_ms().saturating_sub(at).min(u64::from(u32::MAX)) as u32);
            s.report.clone()
        };
        (self.handlers.on_report)(report.clone());
        dispatch_json(LINK_EVENT, &report);
    }
}

fn with(weak: &Weak<Inner>, f: impl FnOnce(&Rc<Inner>)) {
    if let Some(inner) = weak.upgrade() {
        f(&inner);
    }
}

fn page_listeners(inner: &Rc<Inner>) -> Vec<EventListener> {
    let Some(window) = web_sys::window() else { return Vec::new() };
    let mut listeners = Vec::new();
    let weak = Rc::downgrade(inner);
    listeners.push(EventListener::new(&window, "online", move |_| with(&weak, |i| i.came_online())));
    let weak = Rc::downgrade(inner);
    listeners.push(EventListener::new(&window, "offline", move |_| with(&weak, |i| i.went_offline())));
    if let Some(document) = window.document() {
        let weak = Rc::downgrade(inner);
        let doc = document.clone();
        listeners.push(EventListener::new(&document, "visibilitychange", move |_| {
            if doc.visibility_state() == VisibilityState::Visible {
                with(&weak, |i| {
                    i.reconnect_now();
                    i.resync();
                    // Hidden tabs' timers are throttled: check liveness now, with a deadline.
                    i.ping();
                    i.watch();
                });
            }
        }));
    }
    let weak = Rc::downgrade(inner);
    listeners.push(EventListener::new(&window, CART_EVENT, move |event| {
        if let Some(cart) = event.dyn_ref::<CustomEvent>().and_then(|e| from_detail::<Cart>(&e.detail())) {
            with(&weak, |i| i.offer(cart));
        }
    }));
    let weak = Rc::downgrade(inner);
    listeners.push(EventListener::new(&window, LINK_QUERY_EVENT, move |_| with(&weak, |i| i.emit())));
    listeners
}

/// Listen to every bundle's [`LinkReport`] (the shell's connection summary). Asks the bundles already running
/// to report again, so a late listener misses none.
pub fn on_link_reports(f: impl Fn(LinkReport) + 'static) -> Option<EventListener> {
    let window = web_sys::window()?;
    let listener = EventListener::new(&window, LINK_EVENT, move |event| {
        if let Some(report) = event.dyn_ref::<CustomEvent>().and_then(|e| from_detail::<LinkReport>(&e.detail())) {
            f(report);
        }
    });
    query_reports();
    Some(listener)
}

/// Call `f` with every new notice that reaches the page (the shell): from any bundle's socket, and while this
/// bundle's own link is not live, from `GET /api/notices` each poll interval. Each is passed on once (by its seq,
/// [`NoticeInbox`]) and acknowledged once shown: on this bundle's socket when it is live, else over REST; a lost
/// acknowledgement is sent again with the next notice that arrives (the server re-sends unacknowledged ones on
/// every connect).
pub fn on_notices(f: impl Fn(Notice) + 'static) -> Option<(EventListener, gloo_timers::callback::Interval)> {
    let window = web_sys::window()?;
    let inbox = Rc::new(RefCell::new(NoticeInbox::default()));
    let take = Rc::new(move |epoch: Epoch, (seq, notice): (u64, Notice)| {
        let (new, due) = {
            let mut inbox = inbox.borrow_mut();
            let new = inbox.offer(&epoch, seq);
            (new, inbox.ack_due())
        };
        if new {
            f(notice);
        }
        if let Some((epoch, upto)) = due {
            let inbox = inbox.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if !acknowledge(&epoch, upto).await {
                    inbox.borrow_mut().retry_ack(upto);
                }
            });
        }
    });
    let heard = take.clone();
    let listener = EventListener::new(&window, NOTICE_EVENT, move |event| {
        let text = event.dyn_ref::<CustomEvent>().and_then(|e| e.detail().as_string());
        if let Some((epoch, notice)) = text.as_deref().and_then(json::parse_notice) {
            heard(epoch, notice);
        }
    });
    let poll = gloo_timers::callback::Interval::new(LinkTimings::DEFAULT_POLL_MS as u32, move || {
        if CartLink::installed().is_some_and(|l| l.is_live()) {
            return;
        }
        let take = take.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Some((epoch, notices)) = api::fetch_notices().await {
                notices.into_iter().for_each(|n| take(epoch.clone(), n));
            }
        });
    });
    Some((listener, poll))
}

/// Keep the presence labels inside the element `mount` current, from every bundle's `PRESENCE` frames: the text
/// of each `[data-in-carts-of=<product>]` ("in N carts") and `[data-online]` ("N shoppers here"). Plain text the
/// view rendered once (the server counted it into the page), rewritten in place from each frame (a frame
/// carries the new count of whatever changed): no reactive state and no map, so a bundle pays little for it.
pub fn show_presence(mount: String) -> Option<EventListener> {
    let window = web_sys::window()?;
    Some(EventListener::new(&window, PRESENCE_EVENT, move |event| {
        let text = event.dyn_ref::<CustomEvent>().and_then(|e| e.detail().as_string());
        let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id(&mount)) else {
            return;
        };
        let Some((online, in_carts)) = text.as_deref().and_then(json::parse_presence) else { return };
        if let Ok(Some(label)) = root.query_selector(&format!("[{ONLINE_ATTR}]")) {
            label.set_text_content(online_label(online).as_deref());
        }
        for (id, n) in in_carts {
            // Ids are slugs (a-z, 0-9, '-'): nothing to escape in the selector.
            if let Ok(Some(label)) = root.query_selector(&format!("[{IN_CARTS_ATTR}=\"{id}\"]")) {
                label.set_text_content(in_carts_label(n).as_deref());
            }
        }
    }))
}

/// Call `f` with every help-chat message that reaches the page, from any bundle's socket (the shell keeps the
/// conversation; repeats by id are its to drop).
pub fn on_chat(f: impl Fn(cartwheel_core::chat::ChatMessage) + 'static) -> Option<EventListener> {
    let window = web_sys::window()?;
    Some(EventListener::new(&window, CHAT_EVENT, move |event| {
        let text = event.dyn_ref::<CustomEvent>().and_then(|e| e.detail().as_string());
        if let Some(message) = text.as_deref().and_then(|t| js_sys::JSON::parse(t).ok()).and_then(json::from_js) {
            f(message);
        }
    }))
}

/// Send a help-chat message: on this bundle's socket if it is live (`Ok(None)`: the server's `CHAT` frame
/// brings it back, to every tab), else over REST (`Ok(Some(posted))`). A fresh `client_id` per message, so a
/// message sent again after a lost answer is stored once.
pub async fn send_chat(text: &str) -> Result<Option<cartwheel_core::chat::ChatPosted>, ApiError> {
    let client_id = format!("c{}", (js_sys::Math::random() * 1e15) as u64);
    let quoted = js_sys::JSON::stringify(&JsValue::from_str(text)).ok().map(String::from).unwrap_or_default();
    let body = format!(r#"{{"text":{quoted},"client_id":"{client_id}"}}"#);
    let frame = format!(r#"{{"type":"CHAT",{}"#, &body[1..]);
    let sent = CartLink::installed().is_some_and(|link| {
        link.is_live()
            && link.0.state.borrow().socket.as_ref().is_some_and(|s| s.open && s.ws.send_with_str(&frame).is_ok())
    });
    if sent {
        return Ok(None);
    }
    api::post_chat(&body, &client_id).await.map(Some)
}

/// `ACK` every notice up to `upto` of `epoch`: on this bundle's socket if it is live, else over REST. Written
/// by hand (the same JSON for both): no serializer is linked for it.
async fn acknowledge(epoch: &Epoch, upto: u64) -> bool {
    let body = format!(r#"{{"upto":{upto},"epoch":"{epoch}"}}"#);
    let frame = format!(r#"{{"type":"ACK",{}"#, &body[1..]);
    let sent = CartLink::installed().is_some_and(|link| {
        link.is_live()
            && link.0.state.borrow().socket.as_ref().is_some_and(|s| s.open && s.ws.send_with_str(&frame).is_ok())
    });
    sent || api::ack_notices(&body).await
}

fn dispatch_text(name: &str, text: &str) {
    let Some(window) = web_sys::window() else { return };
    let init = CustomEventInit::new();
    init.set_detail(&JsValue::from_str(text));
    if let Ok(event) = CustomEvent::new_with_event_init_dict(name, &init) {
        let _ = window.dispatch_event(&event);
    }
}

fn dispatch_json<T: serde::Serialize>(name: &str, value: &T) {
    let Some(window) = web_sys::window() else { return };
    let Some(detail) = json::to_js(value) else { return };
    let init = CustomEventInit::new();
    init.set_detail(&detail);
    if let Ok(event) = CustomEvent::new_with_event_init_dict(name, &init) {
        let _ = window.dispatch_event(&event);
    }
}

fn from_detail<T: serde::de::DeserializeOwned>(detail: &JsValue) -> Option<T> {
    json::from_js(detail.clone())
}

/// `/ws?mfe=<bundle>`: the server ignores the query; it tells the bundles' sockets apart in logs and tests.
fn socket_url(mfe: &str) -> String {
    let location = web_sys::window().map(|w| w.location());
    let protocol = location.as_ref().and_then(|l| l.protocol().ok()).unwrap_or_default();
    let host = location.as_ref().and_then(|l| l.host().ok()).unwrap_or_default();
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{host}{WS_PATH}?mfe={mfe}")
}

fn online() -> bool {
    web_sys::window().is_none_or(|w| w.navigator().on_line())
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}
