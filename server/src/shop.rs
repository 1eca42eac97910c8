//! The shop's operations — change a cart, check out, change a product, send a notice — and the one place where
//! "commit, then announce" happens. Handlers (REST, service API, WebSocket snapshots) call [`Shop`]; it asks
//! the [`CartStore`] to commit, counts the outcome, and hands the committed [`Event`]s to the [`Fanout`], which
//! the realtime layer implements (the in-process hub, or the hub plus the Redis bus).
//!
//! Cancellation: a client that hangs up drops its handler at whatever `.await` it was in. A change therefore
//! runs on its own task: once the store accepted it, it is committed and announced whether or not anyone is
//! still waiting for the answer, so no open tab misses a version another tab's aborted request committed.

use std::sync::{Arc, Mutex};

use cartwheel_core::chat::{ChatHistory, ChatMessage, ChatSender, ChatText};
use cartwheel_core::presence::Presence;
use cartwheel_core::protocol::NoticeList;
use cartwheel_core::version::Epoch;
use cartwheel_core::{Cart, Notice, PostedNotice, Product};
use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;

use crate::domain::{CartKey, Catalog, Event};
use crate::metrics::Metrics;
use crate::store::{
    CartStore, Checkout, CheckoutRequest, Mutation, MutationError, MutationRequest, ProductUpdate, StoreError,
};
use crate::sync::lock;

/// Delivers what the shop committed to the connections it concerns.
pub trait Fanout: Send + Sync + 'static {
    /// These events were committed through this instance; deliver each to the connections it concerns.
    fn announce(&self, events: &[Event]);

    /// Deliver a stored notice (of the store's `epoch`) to the connections of `session`, or to every
    /// connection. Returns how many connections of this instance it reached; fails when the notice could not be
    /// passed on to the other instances (they send it on their shoppers' next connect).
    fn notify<'a>(
        &'a self,
        session: Option<&'a CartKey>,
        epoch: &'a Epoch,
        notice: &'a PostedNotice,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Deliver a stored help-chat message to every connection of `session`, on every instance. Returns how
    /// many connections of this instance it reached.
    fn chat<'a>(&'a self, session: &'a CartKey, message: &'a ChatMessage) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Shopper messages are waiting, or a service let its conversations go: every instance's services claim.
    fn chat_waiting(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// A write probe shared by every health check that arrives while it runs.
type SharedProbe = Shared<BoxFuture<'static, Result<(), String>>>;

/// The domain operations, over one store and one fan-out. Cheap to clone (four `Arc`s).
#[derive(Clone)]
pub struct Shop {
    store: Arc<dyn CartStore>,
    fanout: Arc<dyn Fanout>,
    metrics: Arc<Metrics>,
    probe: Arc<Mutex<Option<SharedProbe>>>,
}

impl Shop {
    pub fn new(store: Arc<dyn CartStore>, fanout: Arc<dyn Fanout>, metrics: Arc<Metrics>) -> Shop {
        Shop { store, fanout, metrics, probe: Arc::default() }
    }

    /// The cart as it is now.
    pub async fn cart(&self, cart: &CartKey) -> Result<Cart, StoreError> {
        self.store.load(cart).await
    }

    /// The order `id` if `cart`'s session placed it (see [`CartStore::order`]).
    #[tracing::instrument(skip(self, cart), fields(cart = cart.short()))]
    pub async fn order(&self, cart: &CartKey, id: &str) -> Result<Option<cartwheel_core::Order>, StoreError> {
        self.store.order(cart, id).await
    }

    /// Keep `cart` from expiring (a session renewal; see [`CartStore::touch`]).
    pub async fn touch(&self, cart: &CartKey) -> Result<(), StoreError> {
        self.store.touch(cart).await
    }

    /// Whether the store's write path commits now (see [`CartStore::probe_write`]), or why not. `/healthz` is
    /// open to anyone, so checks that arrive while a probe runs share it: a flood of them, or checks against
    /// a wedged writer, queue one write, not one each.
    pub async fn probe_write(&self) -> Result<(), String> {
        let probe = {
            let mut running = lock(&self.probe);
            match running.as_ref() {
                Some(probe) if probe.peek().is_none() => probe.clone(),
                _ => {
                    let store = self.store.clone();
                    let probe = async move { store.probe_write().await.map_err(|e| e.to_string()) }.boxed().shared();
                    *running = Some(probe.clone());
                    probe
                }
            }
        };
        probe.await
    }

    /// The catalog with its committed stock and prices.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.store.catalog()
    }

    /// Apply a change to a cart and, if it changed, announce the new version to its connections.
    #[tracing::instrument(name = "shop.mutate", skip_all, fields(cart = request.cart.short(), op = ?request.op))]
    pub async fn mutate(&self, request: MutationRequest) -> Result<Mutation, MutationError> {
        let (store, fanout, metrics) = self.parts();
        detached(async move {
            let cart = request.cart.clone();
            let result = store.mutate(request).await;
            let outcome = match &result {
                Ok(m) if m.replayed => "replayed",
                Ok(m) if m.change == cartwheel_core::Change::Changed => "changed",
                Ok(_) => "unchanged",
                Err(_) => "rejected",
            };
            metrics.mutations.get_or_create(&vec![("outcome", outcome)]).inc();
            match &result {
                Ok(m) if m.replayed => reannounce(&*store, &*fanout, &cart).await,
                Ok(m) => fanout.announce(&m.events),
                Err(_) => {}
            }
            result
        })
        .await
    }

    /// Check out a cart; its connections get the emptied cart and every connection the new stock of what was
    /// bought.
    #[tracing::instrument(name = "shop.checkout", skip_all, fields(cart = request.cart.short()))]
    pub async fn checkout(&self, request: CheckoutRequest) -> Result<Checkout, MutationError> {
        let (store, fanout, metrics) = self.parts();
        detached(async move {
            let cart = request.cart.clone();
            let result = store.checkout(request).await;
            let outcome = match &result {
                Ok(c) if c.replayed => "replayed",
                Ok(_) => "ordered",
                Err(MutationError::Shortfalls(_)) => "short_of_stock",
                Err(MutationError::PriceChanged(_)) => "price_changed",
                Err(MutationError::VersionMismatch(_)) => "version_mismatch",
                Err(_) => "refused",
            };
            metrics.checkouts.get_or_create(&vec![("outcome", outcome)]).inc();
            match &result {
                Ok(c) if c.replayed => reannounce(&*store, &*fanout, &cart).await,
                Ok(c) => fanout.announce(&c.events),
                Err(_) => {}
            }
            result
        })
        .await
    }

    /// Change a product's stock or price and, if it changed, tell every connection.
    #[tracing::instrument(name = "shop.update_product", skip_all, fields(product = %update.id))]
    pub async fn update_product(&self, update: ProductUpdate) -> Result<Product, MutationError> {
        let (store, fanout, _) = self.parts();
        detached(async move {
            let updated = store.update_product(update).await?;
            fanout.announce(&updated.events);
            Ok(updated.product)
        })
        .await
    }

    /// Store a notice for one session (or everyone), then hand it to the connections open now (on every
    /// instance); the others get it when they connect. Answers it as stored, and how many connections had it at
    /// once: this instance's exactly, the others' as they last reported them.
    #[tracing::instrument(name = "shop.notify", skip_all, fields(kind = %notice.kind, targeted = session.is_some()))]
    pub async fn notify(
        &self,
        session: Option<&CartKey>,
        notice: &Notice,
    ) -> Result<(PostedNotice, usize), StoreError> {
        // Like a change, a notice once accepted is stored and sent whether or not its caller waits for the answer.
        let (store, fanout, session, notice) =
            (self.store.clone(), self.fanout.clone(), session.cloned(), notice.clone());
        let metrics = self.metrics.clone();
        let sent = tokio::spawn(async move {
            let posted = store.post_notice(session.as_ref(), &notice).await?;
            let epoch = store.catalog().epoch().clone();
            // Stored: a failed hand-over to the other instances is delivered on their shoppers' next connect.
            let here = match fanout.notify(session.as_ref(), &epoch, &posted).await {
                Ok(n) => n,
                Err(e) => {
                    metrics.notices_unpublished.inc();
                    tracing::warn!(error = %e, id = posted.id, "stored notice not passed on live; sent on reconnect");
                    return Ok((posted, 0));
                }
            };
            // The other instances' connections, as they last reported them (at most a presence interval old).
            let elsewhere = store.reach_elsewhere(session.as_ref()).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "the other instances' connections are not known");
                0
            });
            Ok((posted, here + usize::try_from(elsewhere).unwrap_or(usize::MAX)))
        });
        sent.await.unwrap_or(Err(StoreError::Closed))
    }

    /// A shopper's help-chat message: stored (once per `client_id`), sent to every connection of the session,
    /// and left waiting for a service. Answers the message as stored.
    #[tracing::instrument(skip(self, cart, text), fields(cart = cart.short()))]
    pub async fn chat_from_shopper(
        &self,
        cart: &CartKey,
        text: ChatText,
        client_id: Option<String>,
    ) -> Result<ChatMessage, StoreError> {
        let (store, fanout, metrics) = self.parts();
        let cart = cart.clone();
        // Detached like a change: a message the store took is delivered whether or not its sender waits.
        let posted = tokio::spawn(async move {
            let (message, new) =
                store.chat_post(&cart, ChatSender::Shopper, text.as_str(), client_id.as_deref()).await?;
            if new {
                metrics.chat_messages.get_or_create(&vec![("from", "shopper")]).inc();
                // Stored: what is not passed on live reaches the page on its next read and the services on
                // their next claim.
                if let Err(e) = fanout.chat(&cart, &message).await {
                    tracing::warn!(error = %e, "chat message stored, not passed on live");
                }
                if let Err(e) = fanout.chat_waiting().await {
                    tracing::warn!(error = %e, "chat message stored; services claim it on their next round");
                }
            }
            Ok(message)
        });
        posted.await.unwrap_or(Err(StoreError::Closed))
    }

    /// A service's answer in `session`'s conversation: stored and sent to every connection of the session.
    #[tracing::instrument(skip(self, session, text), fields(cart = session.short()))]
    pub async fn chat_from_service(&self, session: &CartKey, text: ChatText) -> Result<ChatMessage, StoreError> {
        let (store, fanout, metrics) = self.parts();
        let session = session.clone();
        let posted = tokio::spawn(async move {
            let (message, _) = store.chat_post(&session, ChatSender::Service, text.as_str(), None).await?;
            metrics.chat_messages.get_or_create(&vec![("from", "service")]).inc();
            if let Err(e) = fanout.chat(&session, &message).await {
                tracing::warn!(error = %e, "chat answer stored, not passed on live");
            }
            Ok(message)
        });
        posted.await.unwrap_or(Err(StoreError::Closed))
    }

    /// The session's conversation and whether a service is connected.
    pub async fn chat_history(&self, cart: &CartKey) -> Result<ChatHistory, StoreError> {
        let messages = self.store.chat_history(cart).await?;
        Ok(ChatHistory { messages, support_online: self.chat_support_online().await? })
    }

    /// Whether a help-chat service is connected on any instance.
    pub async fn chat_support_online(&self) -> Result<bool, StoreError> {
        Ok(self.store.chat_services().await? > 0)
    }

    /// See [`CartStore::chat_claim`].
    pub async fn chat_claim(
        &self,
        service: &str,
        lease: std::time::Duration,
        take: usize,
    ) -> Result<Vec<(CartKey, ChatMessage)>, StoreError> {
        self.store.chat_claim(service, lease, take).await
    }

    /// See [`CartStore::chat_ack`].
    pub async fn chat_ack(&self, service: &str, id: &str) -> Result<bool, StoreError> {
        self.store.chat_ack(service, id).await
    }

    /// A service disconnected: its conversations go to the next service that claims, on any instance.
    pub async fn chat_release(&self, service: &str) -> Result<(), StoreError> {
        let (store, fanout, _) = self.parts();
        let service = service.to_owned();
        // Detached: a release must happen even if the connection's task is being torn down.
        let released = tokio::spawn(async move {
            store.chat_release(&service).await?;
            fanout.chat_waiting().await
        });
        released.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Report this instance's sessions with an open connection (counted for `ttl`) and read the counts:
    /// shoppers online on every instance, carts holding each product.
    pub async fn presence(
        &self,
        sessions: &[(CartKey, usize)],
        ttl: std::time::Duration,
    ) -> Result<Presence, StoreError> {
        let online = self.store.report_online(sessions, ttl).await?;
        Ok(Presence { online, in_carts: self.store.holds().await? })
    }

    /// The session's stored notices after its cursor, in the store's epoch (`issued_ms`: when its token was
    /// issued, where the general notices start for a session read for the first time).
    pub async fn notices(&self, cart: &CartKey, issued_ms: Option<u64>) -> Result<NoticeList, StoreError> {
        let (cursor, notices) = self.store.notices_after(cart, issued_ms).await?;
        Ok(NoticeList { epoch: self.store.catalog().epoch().clone(), cursor: cursor.upto, notices })
    }

    /// The session showed every notice up to `upto` of `epoch`. One of another epoch (the store was reset since
    /// it was sent) changes nothing. Answers the cursor as it is now.
    pub async fn ack_notices(&self, cart: &CartKey, epoch: &Epoch, upto: u64) -> Result<u64, StoreError> {
        // Moving up to 0 changes nothing: the answer is then just the cursor as it is.
        let upto = if epoch == self.store.catalog().epoch() { upto } else { 0 };
        let store = self.store.clone();
        let cart = cart.clone();
        // Detached like a change: an acknowledgement that reached the store is kept.
        let acked = tokio::spawn(async move { store.ack_notices(&cart, upto).await });
        Ok(acked.await.unwrap_or(Err(StoreError::Closed))?.upto)
    }

    fn parts(&self) -> (Arc<dyn CartStore>, Arc<dyn Fanout>, Arc<Metrics>) {
        (self.store.clone(), self.fanout.clone(), self.metrics.clone())
    }
}

/// A replayed answer means the change was committed by an earlier request — whose announcement may have been
/// lost with it (an instance that died between commit and fan-out, in Redis mode a bus that was down). Announce
/// the cart as it is now: connections that already have it ignore it (the hub drops versions not newer).
async fn reannounce(store: &dyn CartStore, fanout: &dyn Fanout, cart: &CartKey) {
    match store.load(cart).await {
        Ok(current) => fanout.announce(&[Event::CartChanged { key: cart.clone(), cart: current }]),
        Err(e) => tracing::warn!(error = %e, "could not re-announce a replayed change"),
    }
}

/// Run `work` on its own task and wait for it: dropping the wait (the client hung up) does not cancel it.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, MutationError>> + Send + 'static,
) -> Result<T, MutationError> {
    // A join error means the task panicked or the runtime is shutting down: either way the store is gone for
    // this request.
    tokio::spawn(work).await.unwrap_or_else(|_| Err(MutationError::Store(StoreError::Closed)))
}
