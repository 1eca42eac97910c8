//! The embedded cart store: one SQLite file in WAL mode. [`schema`] creates and migrates it, one writer thread
//! ([`writer`]) commits every change in group commits, a small pool of read-only connections ([`readers`])
//! serves loads, and [`queries`] holds the statements both run.
//!
//! Stock and prices that changed at run time are rows of `products`, which override the catalog file's values
//! at start-up.

mod chat;
mod holds;
mod notices;
mod queries;
mod readers;
mod schema;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use std::collections::BTreeMap;

use cartwheel_core::chat::{ChatMessage, ChatSender};
use cartwheel_core::{Cart, CartLimits, Notice, Order, PostedNotice, ProductId};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use self::readers::ReaderPool;
use self::writer::{writer_loop, CatalogState, ChatDone, ChatWrite, WriteJob, WriterSettings};
use super::rules::{new_chat_id, order_of, price};
use super::{
    CartStore, Checkout, CheckoutRequest, Mutation, MutationError, MutationRequest, NoticeCursor, ProductUpdate,
    ProductUpdated, Retention, StoreError,
};
use crate::clock::now_ms;
use crate::config::defaults;
use crate::domain::{CartKey, Catalog, LiveCatalog};
use crate::sync::lock;

/// Queued changes waiting for the writer; when full, callers wait (backpressure) instead of piling up memory.
const WRITE_QUEUE: usize = 4096;

/// Carts, stock, prices, orders and idempotency keys in one SQLite file, for a single instance. Every change
/// answers only once its group commit is on disk; `close` finishes queued writes (see the store's contract).
pub struct SqliteCartStore {
    jobs: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: ReaderPool,
    catalog: Arc<LiveCatalog>,
    secret: Vec<u8>,
    retention: Retention,
}

impl SqliteCartStore {
    /// Open (creating if needed) the database at `path`, run pending migrations, apply the stored stock and
    /// prices to `catalog` and start the writer.
    /// `secret` signs session cookies; when `None`, one is generated on first start and kept in the database.
    pub fn open(
        path: &Path,
        mut catalog: Catalog,
        limits: CartLimits,
        retention: Retention,
        secret: Option<&[u8]>,
    ) -> Result<SqliteCartStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = Connection::open(path)?;
        // First: switching to WAL needs the file's lock, which another process (a backup, an operator's
        // `sqlite3` shell) may hold for a moment; wait for it rather than fail to start.
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn)?;
        holds::count_once(&mut conn)?;
        chat::reset(&conn)?;
        let secret = match secret {
            Some(s) => s.to_vec(),
            None => schema::stored_secret(&conn)?,
        };
        let epoch = schema::stored_epoch(&conn)?;
        catalog = catalog.with_epoch(epoch);
        schema::apply_stored_products(&conn, &mut catalog)?;
        let committed = Arc::new(catalog);
        let live = Arc::new(LiveCatalog::new(committed.clone()));
        let readers = ReaderPool::open(path, defaults::READ_CONNECTIONS)?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let settings = WriterSettings { limits, idempotency_ttl: defaults::IDEMPOTENCY_TTL, retention };
        let state = CatalogState::new(live.clone(), committed);
        // Expired carts are gone before the first request is read (one batch; the writer does the rest).
        let backlog = writer::prune(&conn, &settings);
        let writer = std::thread::Builder::new()
            .name("cart-writer".into())
            .spawn(move || writer_loop(conn, rx, settings, state, backlog))?;
        Ok(SqliteCartStore {
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers,
            catalog: live,
            secret,
            retention,
        })
    }

    /// Queue a job for the writer and wait for its committed outcome.
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, MutationError>>) -> WriteJob,
    ) -> Result<T, MutationError> {
        let sender = lock(&self.jobs).clone().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender.send(job(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub fn session_secret(&self) -> &[u8] {
        &self.secret
    }

    /// Finish queued writes and stop the writer. Later mutations fail with [`StoreError::Closed`].
    pub fn close(&self) {
        drop(lock(&self.jobs).take());
        if let Some(handle) = lock(&self.writer).take() {
            if handle.join().is_err() {
                tracing::error!("cart writer thread panicked");
            }
        }
    }
}

impl Drop for SqliteCartStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl CartStore for SqliteCartStore {
    fn load<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Cart, StoreError>> {
        async move {
            let key = cart.as_str().to_owned();
            let (version, contents) = self.readers.run(move |conn| queries::read_cart(conn, &key)).await??;
            Ok(price(cart, version, &contents, &self.catalog.current()))
        }
        .boxed()
    }

    fn mutate(&self, request: MutationRequest) -> BoxFuture<'_, Result<Mutation, MutationError>> {
        self.submit(|reply| WriteJob::Cart { request, reply }).boxed()
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.current()
    }

    fn update_product(&self, update: ProductUpdate) -> BoxFuture<'_, Result<ProductUpdated, MutationError>> {
        self.submit(|reply| WriteJob::Product { update, reply }).boxed()
    }

    fn checkout(&self, request: CheckoutRequest) -> BoxFuture<'_, Result<Checkout, MutationError>> {
        self.submit(|reply| WriteJob::Checkout { request, reply }).boxed()
    }

    fn post_notice<'a>(
        &'a self,
        to: Option<&'a CartKey>,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<PostedNotice, StoreError>> {
        let (to, notice) = (to.cloned(), notice.clone());
        async move { self.submit(|reply| WriteJob::PostNotice { to, notice, reply }).await.map_err(only_store_errors) }
            .boxed()
    }

    fn notices_after<'a>(
        &'a self,
        cart: &'a CartKey,
        issued_ms: Option<u64>,
    ) -> BoxFuture<'a, Result<(NoticeCursor, Vec<PostedNotice>), StoreError>> {
        async move {
            let key = cart.as_str().to_owned();
            let stored = self.readers.run(move |conn| notices::cursor(conn, &key)).await??;
            let cursor = match stored {
                Some(cursor) => cursor,
                None => {
                    let cart = cart.clone();
                    self.submit(|reply| WriteJob::Cursor { cart, ack: None, issued_ms, reply })
                        .await
                        .map_err(only_store_errors)?
                }
            };
            let (key, ttl, limit) =
                (cart.as_str().to_owned(), self.retention.notice_ttl, self.retention.notices_per_session());
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let list = self.readers.run(move |conn| notices::after(conn, &key, cursor, ttl_ms, limit)).await??;
            Ok((cursor, list))
        }
        .boxed()
    }

    fn ack_notices<'a>(&'a self, cart: &'a CartKey, upto: u64) -> BoxFuture<'a, Result<NoticeCursor, StoreError>> {
        let cart = cart.clone();
        async move {
            self.submit(|reply| WriteJob::Cursor { cart, ack: Some(upto), issued_ms: None, reply })
                .await
                .map_err(only_store_errors)
        }
        .boxed()
    }

    fn order<'a>(&'a self, cart: &'a CartKey, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, StoreError>> {
        async move {
            let (key, wanted) = (cart.as_str().to_owned(), id.to_owned());
            let body = self.readers.run(move |conn| queries::read_order(conn, &key, &wanted)).await??;
            order_of(cart, body.as_deref())
        }
        .boxed()
    }

    fn chat_post<'a>(
        &'a self,
        cart: &'a CartKey,
        from: ChatSender,
        text: &'a str,
        client_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(ChatMessage, bool), StoreError>> {
        let message = ChatMessage {
            id: new_chat_id(),
            from,
            text: text.to_owned(),
            at: now_ms(),
            client_id: client_id.map(Into::into),
        };
        let write = ChatWrite::Post { cart: cart.clone(), message };
        async move {
            match self.submit(|reply| WriteJob::Chat { write, reply }).await.map_err(only_store_errors)? {
                ChatDone::Posted(message, new) => Ok((message, new)),
                _ => Err(StoreError::Corrupt("a chat post got another answer".into())),
            }
        }
        .boxed()
    }

    fn chat_history<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Vec<ChatMessage>, StoreError>> {
        let key = cart.as_str().to_owned();
        let (ttl, cap) =
            (u64::try_from(self.retention.chat_ttl.as_millis()).unwrap_or(u64::MAX), self.retention.chat_history);
        async move { self.readers.run(move |conn| chat::history(conn, &key, ttl, cap)).await? }.boxed()
    }

    fn chat_claim<'a>(
        &'a self,
        service: &'a str,
        lease: Duration,
        take: usize,
    ) -> BoxFuture<'a, Result<Vec<(CartKey, ChatMessage)>, StoreError>> {
        let write = ChatWrite::Claim {
            service: service.to_owned(),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            take,
        };
        async move {
            match self.submit(|reply| WriteJob::Chat { write, reply }).await.map_err(only_store_errors)? {
                ChatDone::Handed(handed) => handed
                    .into_iter()
                    .map(|(cart, message)| {
                        Ok((CartKey::parse(&cart).map_err(|e| StoreError::Corrupt(e.to_string()))?, message))
                    })
                    .collect(),
                _ => Err(StoreError::Corrupt("a chat claim got another answer".into())),
            }
        }
        .boxed()
    }

    fn chat_ack<'a>(&'a self, service: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let write = ChatWrite::Ack { service: service.to_owned(), id: id.to_owned() };
        async move {
            match self.submit(|reply| WriteJob::Chat { write, reply }).await.map_err(only_store_errors)? {
                ChatDone::Acked(was) => Ok(was),
                _ => Err(StoreError::Corrupt("a chat ack got another answer".into())),
            }
        }
        .boxed()
    }

    fn chat_release<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let write = ChatWrite::Release { service: service.to_owned() };
        async move { self.submit(|reply| WriteJob::Chat { write, reply }).await.map_err(only_store_errors).map(|_| ()) }
            .boxed()
    }

    fn chat_services(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move { self.readers.run(chat::services).await? }.boxed()
    }

    fn holds(&self) -> BoxFuture<'_, Result<BTreeMap<ProductId, u64>, StoreError>> {
        async move { self.readers.run(holds::read).await? }.boxed()
    }

    /// One instance: its own sessions are everyone's.
    fn report_online<'a>(
        &'a self,
        sessions: &'a [(CartKey, usize)],
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        futures_util::future::ready(Ok(u64::try_from(sessions.len()).unwrap_or(u64::MAX))).boxed()
    }

    fn reach_elsewhere<'a>(&'a self, _session: Option<&'a CartKey>) -> BoxFuture<'a, Result<u64, StoreError>> {
        futures_util::future::ready(Ok(0)).boxed()
    }

    fn touch<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<(), StoreError>> {
        let cart = cart.clone();
        async move { self.submit(|reply| WriteJob::Touch { cart, reply }).await.map_err(only_store_errors) }.boxed()
    }

    fn probe_write(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move { self.submit(|reply| WriteJob::Probe { reply }).await.map_err(only_store_errors) }.boxed()
    }
}

/// A write that cannot be refused fails only in the store.
fn only_store_errors(e: MutationError) -> StoreError {
    match e {
        MutationError::Store(e) => e,
        other => StoreError::Corrupt(other.to_string()),
    }
}
