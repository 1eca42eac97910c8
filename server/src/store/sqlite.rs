//! The embedded cart store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that owns the only read-write connection. It takes every change
//! queued at that moment (up to [`defaults::MAX_COMMIT_BATCH`]), applies each inside its own savepoint, commits
//! them in one transaction with `synchronous=FULL`, and only then answers each caller — group commit: one fsync
//! serves many requests, and no request hears "done" before its change is on disk. One writer also serializes
//! the changes of each cart, which is what makes versions strictly sequential.
//!
//! Reads use a small pool of read-only connections; WAL lets them proceed while the writer commits.
//!
//! Stock and prices that changed at run time are rows of `products`, which override the catalog file's values
//! at start-up. The writer is the only one changing them: it applies a batch's product changes to a staged copy
//! of the catalog and publishes that copy ([`LiveCatalog`]) only once the batch is committed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use shared::{Cart, CartContents, CartLimits, Change, CheckoutReceipt, Order, Product};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    fingerprint, new_order_id, now_ms, plan_checkout, plan_product_update, CartStore, Checkout, CheckoutRequest,
    Mutation, MutationError, MutationRequest, ProductUpdate, StoreError, CHECKOUT_FINGERPRINT,
};
use crate::catalog::{Catalog, LiveCatalog};
use crate::config::defaults;
use crate::session::CartKey;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: carts, idempotency keys, server metadata.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE carts (
        cart_key   TEXT PRIMARY KEY,
        version    INTEGER NOT NULL CHECK (version >= 0),
        contents   TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE idempotency_keys (
        cart_key   TEXT NOT NULL,
        key        TEXT NOT NULL,
        request    TEXT NOT NULL,
        response   TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (cart_key, key)
    );
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);",
    // 2: stock and prices changed at run time (they override the catalog file), and orders.
    "CREATE TABLE products (
        product_id  TEXT PRIMARY KEY,
        stock       INTEGER NOT NULL CHECK (stock >= 0),
        price_cents INTEGER NOT NULL CHECK (price_cents > 0),
        revision    INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE orders (
        id          TEXT PRIMARY KEY,
        cart_key    TEXT NOT NULL,
        total_cents INTEGER NOT NULL,
        body        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX orders_by_cart ON orders (cart_key, created_at);",
];

/// Queued changes waiting for the writer; when full, callers wait (backpressure) instead of piling up memory.
const WRITE_QUEUE: usize = 4096;
/// How often the writer forgets expired idempotency keys.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// One change for the writer, with where to send its outcome.
enum WriteJob {
    Cart { request: MutationRequest, reply: oneshot::Sender<Result<Mutation, MutationError>> },
    Product { update: ProductUpdate, reply: oneshot::Sender<Result<(Product, Change), MutationError>> },
    Checkout { request: CheckoutRequest, reply: oneshot::Sender<Result<Checkout, MutationError>> },
}

/// What a job did, before it is known whether its batch commits.
enum Done {
    Cart(Mutation),
    Product(Product, Change),
    Checkout(Checkout),
}

impl Done {
    /// The catalog changes this outcome makes once committed.
    fn products(&self) -> &[Product] {
        match self {
            Done::Product(p, Change::Changed) => std::slice::from_ref(p),
            Done::Checkout(c) => &c.products,
            _ => &[],
        }
    }
}

impl WriteJob {
    /// Send the final outcome; the caller may have gone away (client disconnected), the change stands regardless.
    fn answer(self, outcome: Result<Done, MutationError>) {
        let mismatch = || MutationError::Store(StoreError::Corrupt("a job got another kind's outcome".into()));
        match self {
            WriteJob::Cart { reply, .. } => {
                let _ = reply.send(outcome.and_then(|d| if let Done::Cart(m) = d { Ok(m) } else { Err(mismatch()) }));
            }
            WriteJob::Product { reply, .. } => {
                let _ = reply.send(outcome.and_then(|d| match d {
                    Done::Product(p, c) => Ok((p, c)),
                    _ => Err(mismatch()),
                }));
            }
            WriteJob::Checkout { reply, .. } => {
                let _ =
                    reply.send(outcome.and_then(|d| if let Done::Checkout(c) = d { Ok(c) } else { Err(mismatch()) }));
            }
        }
    }
}

/// What the writer needs besides its connection.
struct Rules {
    limits: CartLimits,
    idempotency_ttl: Duration,
}

/// The writer's view of the catalog: the committed snapshot, and the copy a batch's product changes are staged
/// in until it commits.
struct CatalogState {
    live: Arc<LiveCatalog>,
    committed: Arc<Catalog>,
    staged: Option<Catalog>,
}

impl CatalogState {
    fn get(&self) -> &Catalog {
        self.staged.as_ref().unwrap_or(&self.committed)
    }

    fn stage(&mut self, products: &[Product]) {
        if products.is_empty() {
            return;
        }
        let staged = self.staged.get_or_insert_with(|| (*self.committed).clone());
        for p in products {
            staged.replace(p.clone());
        }
    }

    fn commit(&mut self) {
        if let Some(staged) = self.staged.take() {
            self.committed = Arc::new(staged);
            self.live.publish(self.committed.clone());
        }
    }

    fn roll_back(&mut self) {
        self.staged = None;
    }
}

pub struct SqliteCartStore {
    jobs: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: ReaderPool,
    catalog: Arc<LiveCatalog>,
    secret: Vec<u8>,
}

impl SqliteCartStore {
    /// Open (creating if needed) the database at `path`, run pending migrations, apply the stored stock and
    /// prices to `catalog` and start the writer.
    /// `secret` signs session cookies; when `None`, one is generated on first start and kept in the database.
    pub fn open(
        path: &Path,
        mut catalog: Catalog,
        limits: CartLimits,
        secret: Option<&[u8]>,
    ) -> Result<SqliteCartStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let secret = match secret {
            Some(s) => s.to_vec(),
            None => stored_secret(&conn)?,
        };
        apply_stored_products(&conn, &mut catalog)?;
        let committed = Arc::new(catalog);
        let live = Arc::new(LiveCatalog::new(committed.clone()));
        let readers = ReaderPool::open(path, defaults::READ_CONNECTIONS)?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let rules = Rules { limits, idempotency_ttl: defaults::IDEMPOTENCY_TTL };
        let state = CatalogState { live: live.clone(), committed, staged: None };
        let writer = std::thread::Builder::new()
            .name("cart-writer".into())
            .spawn(move || writer_loop(conn, rx, rules, state))?;
        Ok(SqliteCartStore {
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers,
            catalog: live,
            secret,
        })
    }

    /// Queue a job for the writer and wait for its committed outcome.
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, MutationError>>) -> WriteJob,
    ) -> Result<T, MutationError> {
        let sender = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender.send(job(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub fn session_secret(&self) -> &[u8] {
        &self.secret
    }

    /// Finish queued writes and stop the writer. Later mutations fail with [`StoreError::Closed`].
    pub fn close(&self) {
        drop(self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
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
            let key = cart.0.clone();
            let (version, contents) = self.readers.run(move |conn| read_cart(conn, &key)).await??;
            let catalog = self.catalog.current();
            Ok(Cart::priced(version, &contents, catalog.currency(), |id| catalog.get(id)))
        }
        .boxed()
    }

    fn mutate(&self, request: MutationRequest) -> BoxFuture<'_, Result<Mutation, MutationError>> {
        self.submit(|reply| WriteJob::Cart { request, reply }).boxed()
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.current()
    }

    fn update_product(&self, update: ProductUpdate) -> BoxFuture<'_, Result<(Product, Change), MutationError>> {
        self.submit(|reply| WriteJob::Product { update, reply }).boxed()
    }

    fn checkout(&self, request: CheckoutRequest) -> BoxFuture<'_, Result<Checkout, MutationError>> {
        self.submit(|reply| WriteJob::Checkout { request, reply }).boxed()
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let applied = usize::try_from(applied).map_err(|_| StoreError::Corrupt("negative schema version".into()))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {applied} is newer than this server knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX))?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    Ok(())
}

fn stored_secret(conn: &Connection) -> Result<Vec<u8>, StoreError> {
    let existing: Option<Vec<u8>> =
        conn.query_row("SELECT value FROM meta WHERE key = 'session_secret'", [], |r| r.get(0)).optional()?;
    if let Some(secret) = existing {
        return Ok(secret);
    }
    let secret: [u8; 32] = rand::random();
    conn.execute("INSERT INTO meta (key, value) VALUES ('session_secret', ?1)", [&secret[..]])?;
    Ok(secret.to_vec())
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Put the stock and prices changed at run time in place of the catalog file's.
fn apply_stored_products(conn: &Connection, catalog: &mut Catalog) -> Result<(), StoreError> {
    let mut statement = conn.prepare("SELECT product_id, stock, price_cents, revision FROM products")?;
    let rows = statement.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
    })?;
    for row in rows {
        let (id, stock, price, revision) = row?;
        let Some(mut product) = catalog.get(&id.as_str().into()).cloned() else {
            tracing::warn!(product = id, "stored stock and price for a product the catalog no longer lists");
            continue;
        };
        let corrupt = || StoreError::Corrupt(format!("stored stock or price of '{id}' is out of range"));
        product.stock = u32::try_from(stock).map_err(|_| corrupt())?;
        product.price_cents = shared::Cents(u64::try_from(price).map_err(|_| corrupt())?);
        product.revision = u64::try_from(revision).map_err(|_| corrupt())?;
        catalog.replace(product);
    }
    Ok(())
}

fn read_cart(conn: &Connection, key: &str) -> Result<(u64, CartContents), StoreError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT version, contents FROM carts WHERE cart_key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        None => Ok((0, CartContents::default())),
        Some((version, contents)) => {
            let contents = serde_json::from_str(&contents)
                .map_err(|e| StoreError::Corrupt(format!("cart {}: {e}", &key[..8.min(key.len())])))?;
            let version = u64::try_from(version).map_err(|_| StoreError::Corrupt("negative version".into()))?;
            Ok((version, contents))
        }
    }
}

fn writer_loop(mut conn: Connection, mut jobs: mpsc::Receiver<WriteJob>, rules: Rules, mut catalog: CatalogState) {
    let mut last_prune = std::time::Instant::now();
    let mut batch = Vec::with_capacity(defaults::MAX_COMMIT_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < defaults::MAX_COMMIT_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = commit_batch(&mut conn, &batch, &rules, &mut catalog);
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            job.answer(outcome);
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = std::time::Instant::now();
            prune_idempotency_keys(&conn, &rules);
        }
    }
    tracing::debug!("cart writer stopped");
}

fn prune_idempotency_keys(conn: &Connection, rules: &Rules) {
    let ttl = i64::try_from(rules.idempotency_ttl.as_secs()).unwrap_or(i64::MAX);
    match conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?1", [now_secs().saturating_sub(ttl)]) {
        Ok(n) if n > 0 => tracing::debug!(removed = n, "pruned idempotency keys"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed"),
    }
}

/// Apply every job in one transaction; each job's outcome is final only if the commit succeeds.
fn commit_batch(
    conn: &mut Connection,
    batch: &[WriteJob],
    rules: &Rules,
    catalog: &mut CatalogState,
) -> Vec<Result<Done, MutationError>> {
    let store_failure = |e: &rusqlite::Error| -> Vec<Result<Done, MutationError>> {
        tracing::error!(error = %e, jobs = batch.len(), "cart batch failed");
        batch.iter().map(|_| Err(MutationError::Store(StoreError::Batch(e.to_string())))).collect()
    };
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return store_failure(&e),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        let outcome = match tx.savepoint() {
            Err(e) => Err(MutationError::Store(e.into())),
            Ok(mut sp) => {
                let outcome = apply_job(&sp, job, rules, catalog.get());
                match &outcome {
                    Ok(done) => {
                        if let Err(e) = sp.commit() {
                            outcomes.push(Err(MutationError::Store(e.into())));
                            continue;
                        }
                        // Later jobs of this batch see this job's stock and prices.
                        catalog.stage(done.products());
                    }
                    // Refused changes leave no trace; dropping a savepoint rolls it back too, this says so.
                    Err(_) => {
                        let _ = sp.rollback();
                    }
                }
                outcome
            }
        };
        outcomes.push(outcome);
    }
    match tx.commit() {
        Ok(()) => {
            catalog.commit();
            outcomes
        }
        Err(e) => {
            catalog.roll_back();
            store_failure(&e)
        }
    }
}

fn apply_job(conn: &Connection, job: &WriteJob, rules: &Rules, catalog: &Catalog) -> Result<Done, MutationError> {
    match job {
        WriteJob::Cart { request, .. } => apply_one(conn, request, rules, catalog).map(Done::Cart),
        WriteJob::Product { update, .. } => apply_product(conn, update, catalog).map(|(p, c)| Done::Product(p, c)),
        WriteJob::Checkout { request, .. } => apply_checkout(conn, request, catalog).map(Done::Checkout),
    }
}

/// The request and answer remembered for `idem` on this cart, if any.
fn remembered(conn: &Connection, key: &str, idem: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT request, response FROM idempotency_keys WHERE cart_key = ?1 AND key = ?2")
        .and_then(|mut s| s.query_row(params![key, idem], |r| Ok((r.get(0)?, r.get(1)?))).optional())?)
}

fn remember(conn: &Connection, key: &str, idem: &str, fingerprint: &str, answer: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (cart_key, key, request, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![key, idem, fingerprint, answer, now_secs()]))?;
    Ok(())
}

fn write_cart(conn: &Connection, key: &str, version: u64, contents: &CartContents) -> Result<(), StoreError> {
    let stored = serde_json::to_string(contents).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // Cached statements: parsing SQL per mutation showed up in the S4 profile.
    conn.prepare_cached(
        "INSERT INTO carts (cart_key, version, contents, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (cart_key) DO UPDATE SET version = ?2, contents = ?3, updated_at = ?4",
    )
    .and_then(|mut s| s.execute(params![key, to_sql(version), stored, now_secs()]))?;
    Ok(())
}

fn write_product(conn: &Connection, p: &Product) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO products (product_id, stock, price_cents, revision, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (product_id) DO UPDATE SET stock = ?2, price_cents = ?3, revision = ?4, updated_at = ?5",
    )
    .and_then(|mut s| {
        s.execute(params![p.id.as_str(), i64::from(p.stock), to_sql(p.price_cents.0), to_sql(p.revision), now_secs()])
    })?;
    Ok(())
}

fn apply_one(
    conn: &Connection,
    request: &MutationRequest,
    rules: &Rules,
    catalog: &Catalog,
) -> Result<Mutation, MutationError> {
    let key = request.cart.0.as_str();
    let fp = fingerprint(&request.op);
    if let Some(idem) = &request.idempotency_key {
        if let Some((earlier_fp, response)) = remembered(conn, key, idem)? {
            if earlier_fp != fp {
                return Err(MutationError::IdempotencyKeyReused);
            }
            let cart: Cart =
                serde_json::from_str(&response).map_err(|e| StoreError::Corrupt(format!("remembered answer: {e}")))?;
            return Ok(Mutation { cart, change: Change::Unchanged, replayed: true });
        }
    }
    let (mut version, mut contents) = read_cart(conn, key)?;
    let change = contents.apply(&request.op, &rules.limits, |id| catalog.get(id))?;
    if change == Change::Changed {
        version += 1;
        write_cart(conn, key, version, &contents)?;
    }
    let cart = Cart::priced(version, &contents, catalog.currency(), |id| catalog.get(id));
    if let Some(idem) = &request.idempotency_key {
        let response = serde_json::to_string(&cart).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        remember(conn, key, idem, &fp, &response)?;
    }
    Ok(Mutation { cart, change, replayed: false })
}

fn apply_product(
    conn: &Connection,
    update: &ProductUpdate,
    catalog: &Catalog,
) -> Result<(Product, Change), MutationError> {
    let (next, change) = plan_product_update(update, catalog)?;
    if change == Change::Changed {
        write_product(conn, &next)?;
    }
    Ok((next, change))
}

fn apply_checkout(conn: &Connection, request: &CheckoutRequest, catalog: &Catalog) -> Result<Checkout, MutationError> {
    let key = request.cart.0.as_str();
    if let Some(idem) = &request.idempotency_key {
        if let Some((earlier_fp, response)) = remembered(conn, key, idem)? {
            if earlier_fp != CHECKOUT_FINGERPRINT {
                return Err(MutationError::IdempotencyKeyReused);
            }
            let receipt: CheckoutReceipt =
                serde_json::from_str(&response).map_err(|e| StoreError::Corrupt(format!("remembered order: {e}")))?;
            return Ok(Checkout { receipt, products: Vec::new(), replayed: true });
        }
    }
    let (version, contents) = read_cart(conn, key)?;
    let priced = Cart::priced(version, &contents, catalog.currency(), |id| catalog.get(id));
    let products = plan_checkout(&priced, catalog)?;
    for product in &products {
        write_product(conn, product)?;
    }
    let order = Order::of(new_order_id(), key.to_owned(), &priced, now_ms());
    let body = serde_json::to_string(&order).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached("INSERT INTO orders (id, cart_key, total_cents, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| s.execute(params![order.id, key, to_sql(order.total_cents.0), body, now_secs()]))
        .map_err(StoreError::from)?;
    let emptied = CartContents::default();
    write_cart(conn, key, version + 1, &emptied)?;
    let cart = Cart::priced(version + 1, &emptied, catalog.currency(), |id| catalog.get(id));
    let receipt = CheckoutReceipt { order, cart };
    if let Some(idem) = &request.idempotency_key {
        let answer = serde_json::to_string(&receipt).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        remember(conn, key, idem, CHECKOUT_FINGERPRINT, &answer)?;
    }
    Ok(Checkout { receipt, products, replayed: false })
}

/// A fixed set of read-only connections handed out one per blocking read.
struct ReaderPool {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Semaphore,
}

impl ReaderPool {
    fn open(path: &Path, size: usize) -> Result<ReaderPool, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conns = (0..size)
            .map(|_| {
                let c = Connection::open_with_flags(path, flags)?;
                c.busy_timeout(Duration::from_secs(5))?;
                Ok(c)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ReaderPool { idle: Arc::new(Mutex::new(conns)), permits: Semaphore::new(size) })
    }

    async fn run<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let idle = self.idle.clone();
        let conn = idle.lock().unwrap_or_else(|p| p.into_inner()).pop().ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let result = read(&conn);
            idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)
    }
}
