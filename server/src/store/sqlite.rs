//! The embedded cart store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that owns the only read-write connection. It takes every change
//! queued at that moment (up to [`defaults::MAX_COMMIT_BATCH`]), applies each inside its own savepoint, commits
//! them in one transaction with `synchronous=FULL`, and only then answers each caller — group commit: one fsync
//! serves many requests, and no request hears "done" before its change is on disk. One writer also serializes
//! the changes of each cart, which is what makes versions strictly sequential.
//!
//! Reads use a small pool of read-only connections; WAL lets them proceed while the writer commits.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use shared::{Cart, CartContents, CartLimits, CartOp, Change};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{CartStore, Mutation, MutationError, MutationRequest, StoreError};
use crate::catalog::Catalog;
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
];

/// Queued changes waiting for the writer; when full, callers wait (backpressure) instead of piling up memory.
const WRITE_QUEUE: usize = 4096;
/// How often the writer forgets expired idempotency keys.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

struct WriteJob {
    request: MutationRequest,
    reply: oneshot::Sender<Result<Mutation, MutationError>>,
}

/// What the writer needs besides its connection.
struct Rules {
    catalog: Arc<Catalog>,
    limits: CartLimits,
    idempotency_ttl: Duration,
}

pub struct SqliteCartStore {
    jobs: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: ReaderPool,
    catalog: Arc<Catalog>,
    secret: Vec<u8>,
}

impl SqliteCartStore {
    /// Open (creating if needed) the database at `path`, run pending migrations and start the writer.
    /// `secret` signs session cookies; when `None`, one is generated on first start and kept in the database.
    pub fn open(
        path: &Path,
        catalog: Arc<Catalog>,
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
        let readers = ReaderPool::open(path, defaults::READ_CONNECTIONS)?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let rules = Rules { catalog: catalog.clone(), limits, idempotency_ttl: defaults::IDEMPOTENCY_TTL };
        let writer =
            std::thread::Builder::new().name("cart-writer".into()).spawn(move || writer_loop(conn, rx, rules))?;
        Ok(SqliteCartStore { jobs: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)), readers, catalog, secret })
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
            let catalog = &self.catalog;
            Ok(Cart::priced(version, &contents, catalog.currency(), |id| catalog.get(id)))
        }
        .boxed()
    }

    fn mutate(&self, request: MutationRequest) -> BoxFuture<'_, Result<Mutation, MutationError>> {
        async move {
            let sender = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(StoreError::Closed)?;
            let (reply, answer) = oneshot::channel();
            sender.send(WriteJob { request, reply }).await.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
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

/// What identifies "the same request" for an Idempotency-Key.
fn fingerprint(op: &CartOp) -> String {
    format!("{op:?}")
}

fn writer_loop(mut conn: Connection, mut jobs: mpsc::Receiver<WriteJob>, rules: Rules) {
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
        let outcomes = commit_batch(&mut conn, &batch, &rules);
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have gone away (client disconnected); the change is committed regardless.
            let _ = job.reply.send(outcome);
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
fn commit_batch(conn: &mut Connection, batch: &[WriteJob], rules: &Rules) -> Vec<Result<Mutation, MutationError>> {
    let store_failure = |e: &rusqlite::Error| -> Vec<Result<Mutation, MutationError>> {
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
                let outcome = apply_one(&sp, &job.request, rules);
                if outcome.is_ok() {
                    if let Err(e) = sp.commit() {
                        outcomes.push(Err(MutationError::Store(e.into())));
                        continue;
                    }
                } else {
                    // Refused changes leave no trace; dropping a savepoint rolls it back too, this says so.
                    let _ = sp.rollback();
                }
                outcome
            }
        };
        outcomes.push(outcome);
    }
    match tx.commit() {
        Ok(()) => outcomes,
        Err(e) => store_failure(&e),
    }
}

fn apply_one(conn: &Connection, request: &MutationRequest, rules: &Rules) -> Result<Mutation, MutationError> {
    let key = request.cart.0.as_str();
    let fp = fingerprint(&request.op);
    if let Some(idem) = &request.idempotency_key {
        let earlier: Option<(String, String)> = conn
            .prepare_cached("SELECT request, response FROM idempotency_keys WHERE cart_key = ?1 AND key = ?2")
            .and_then(|mut s| s.query_row(params![key, idem], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(StoreError::from)?;
        if let Some((earlier_fp, response)) = earlier {
            if earlier_fp != fp {
                return Err(MutationError::IdempotencyKeyReused);
            }
            let cart: Cart =
                serde_json::from_str(&response).map_err(|e| StoreError::Corrupt(format!("remembered answer: {e}")))?;
            return Ok(Mutation { cart, change: Change::Unchanged, replayed: true });
        }
    }
    let (mut version, mut contents) = read_cart(conn, key)?;
    let catalog = &rules.catalog;
    let change = contents.apply(&request.op, &rules.limits, |id| catalog.get(id))?;
    if change == Change::Changed {
        version += 1;
        let stored = serde_json::to_string(&contents).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Cached statements: parsing SQL per mutation showed up in the S4 profile.
        conn.prepare_cached(
            "INSERT INTO carts (cart_key, version, contents, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (cart_key) DO UPDATE SET version = ?2, contents = ?3, updated_at = ?4",
        )
        .and_then(|mut s| s.execute(params![key, i64::try_from(version).unwrap_or(i64::MAX), stored, now_secs()]))
        .map_err(StoreError::from)?;
    }
    let cart = Cart::priced(version, &contents, catalog.currency(), |id| catalog.get(id));
    if let Some(idem) = &request.idempotency_key {
        let response = serde_json::to_string(&cart).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (cart_key, key, request, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![key, idem, fp, response, now_secs()]))
        .map_err(StoreError::from)?;
    }
    Ok(Mutation { cart, change, replayed: false })
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
