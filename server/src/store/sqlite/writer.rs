//! The one writer thread: it owns the only read-write connection, takes every change queued at that moment (up
//! to [`defaults::MAX_COMMIT_BATCH`]), applies each inside its own savepoint, commits them in one transaction
//! with `synchronous=FULL`, and only then answers each caller — group commit: one fsync serves many requests,
//! and no request hears "done" before its change is on disk. One writer also serializes the changes of each
//! cart, which is what makes versions strictly sequential.
//!
//! The writer is the only one changing stock and prices: it applies a batch's product changes to a staged copy
//! of the catalog and publishes that copy ([`LiveCatalog`]) only once the batch is committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cartwheel_core::chat::ChatMessage;
use cartwheel_core::{CartContents, CartLimits, Change, CheckoutReceipt, Notice, Order, PostedNotice, Product};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::queries::{
    cap_idempotency_keys, expire_carts, forget_idempotency_keys, insert_order, read_cart, remember, remembered,
    touch_cart, write_cart, write_probe, write_product,
};
use super::{chat, holds, notices};
use crate::clock::now_ms;
use crate::config::defaults;
use crate::domain::{CartKey, Catalog, LiveCatalog};
use crate::store::rules::{
    check_expected, check_total, committed_checkout, committed_mutation, committed_product_update, fingerprint,
    new_notice_id, new_order_id, plan_checkout, plan_product_update, price, remembered_answer, replay_checkout,
    replay_mutation, to_json, CHECKOUT_FINGERPRINT,
};
use crate::store::{
    Checkout, CheckoutRequest, Mutation, MutationError, MutationRequest, NoticeCursor, ProductUpdate, ProductUpdated,
    Retention, StoreError,
};

/// How often the writer forgets expired idempotency keys and deletes expired carts (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// One change for the writer, with where to send its outcome.
pub(super) enum WriteJob {
    Cart {
        request: MutationRequest,
        reply: oneshot::Sender<Result<Mutation, MutationError>>,
    },
    Product {
        update: ProductUpdate,
        reply: oneshot::Sender<Result<ProductUpdated, MutationError>>,
    },
    Checkout {
        request: CheckoutRequest,
        reply: oneshot::Sender<Result<Checkout, MutationError>>,
    },
    /// Store a notice (see [`super::notices`]).
    PostNotice {
        to: Option<CartKey>,
        notice: Notice,
        reply: oneshot::Sender<Result<PostedNotice, MutationError>>,
    },
    /// Open a session's notice cursor if it has none, and move it up to `ack` if given.
    Cursor {
        cart: CartKey,
        ack: Option<u64>,
        /// When the session's token was issued, for a cursor made now (see [`notices::open_cursor`]).
        issued_ms: Option<u64>,
        reply: oneshot::Sender<Result<NoticeCursor, MutationError>>,
    },
    /// A help-chat write (see [`super::chat`]).
    Chat {
        write: ChatWrite,
        reply: oneshot::Sender<Result<ChatDone, MutationError>>,
    },
    /// A session renewal: the cart must not expire yet.
    Touch {
        cart: CartKey,
        reply: oneshot::Sender<Result<(), MutationError>>,
    },
    /// `/healthz`: a tiny write committed like any change, proving the writer runs and the disk takes writes.
    Probe {
        reply: oneshot::Sender<Result<(), MutationError>>,
    },
}

/// The help chat's writes.
pub(super) enum ChatWrite {
    Post { cart: CartKey, message: ChatMessage },
    Claim { service: String, lease_ms: u64, take: usize },
    Ack { service: String, id: String },
    Release { service: String },
}

/// What a help-chat write answers.
pub(super) enum ChatDone {
    Posted(ChatMessage, bool),
    Handed(Vec<(String, ChatMessage)>),
    Acked(bool),
    Released,
}

/// What a job did, before it is known whether its batch commits.
enum JobOutcome {
    Cart(Mutation),
    Product(ProductUpdated),
    Checkout(Checkout),
    Notice(PostedNotice),
    Cursor(NoticeCursor),
    Chat(ChatDone),
    Done,
}

impl JobOutcome {
    /// The catalog changes this outcome makes once committed.
    fn products(&self) -> &[Product] {
        match self {
            JobOutcome::Product(u) if u.change == Change::Changed => std::slice::from_ref(&u.product),
            JobOutcome::Checkout(c) => &c.products,
            _ => &[],
        }
    }
}

impl WriteJob {
    /// Send the final outcome; the caller may have gone away (client disconnected), the change stands regardless.
    fn answer(self, outcome: Result<JobOutcome, MutationError>) {
        let mismatch = || MutationError::Store(StoreError::Corrupt("a job got another kind's outcome".into()));
        match self {
            WriteJob::Cart { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    JobOutcome::Cart(m) => Ok(m),
                    _ => Err(mismatch()),
                }));
            }
            WriteJob::Product { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    JobOutcome::Product(u) => Ok(u),
                    _ => Err(mismatch()),
                }));
            }
            WriteJob::Checkout { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    JobOutcome::Checkout(c) => Ok(c),
                    _ => Err(mismatch()),
                }));
            }
            WriteJob::PostNotice { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    JobOutcome::Notice(n) => Ok(n),
                    _ => Err(mismatch()),
                }));
            }
            WriteJob::Cursor { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    JobOutcome::Cursor(c) => Ok(c),
                    _ => Err(mismatch()),
                }));
            }
            WriteJob::Chat { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    JobOutcome::Chat(c) => Ok(c),
                    _ => Err(mismatch()),
                }));
            }
            WriteJob::Probe { reply } | WriteJob::Touch { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    JobOutcome::Done => Ok(()),
                    _ => Err(mismatch()),
                }));
            }
        }
    }
}

/// What the writer needs besides its connection.
pub(super) struct WriterSettings {
    pub limits: CartLimits,
    pub idempotency_ttl: Duration,
    pub retention: Retention,
}

/// The writer's view of the catalog: the committed snapshot, and the copy a batch's product changes are staged
/// in until it commits.
pub(super) struct CatalogState {
    live: Arc<LiveCatalog>,
    committed: Arc<Catalog>,
    staged: Option<Catalog>,
}

impl CatalogState {
    pub(super) fn new(live: Arc<LiveCatalog>, committed: Arc<Catalog>) -> CatalogState {
        CatalogState { live, committed, staged: None }
    }

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

/// Run until every sender is gone: batch, commit, answer. `prune_backlog`: the start-up's [`prune`] left more.
pub(super) fn writer_loop(
    mut conn: Connection,
    mut jobs: mpsc::Receiver<WriteJob>,
    settings: WriterSettings,
    mut catalog: CatalogState,
    mut prune_backlog: bool,
) {
    // More expired rows than one prune batch: go on between changes, or at once while there are none.
    let mut last_prune = Instant::now();
    let mut batch = Vec::with_capacity(defaults::MAX_COMMIT_BATCH);
    loop {
        let first = if prune_backlog {
            match jobs.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    prune_backlog = prune(&conn, &settings);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match jobs.blocking_recv() {
                Some(job) => job,
                None => break,
            }
        };
        batch.push(first);
        while batch.len() < defaults::MAX_COMMIT_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = commit_batch(&mut conn, &batch, &settings, &mut catalog);
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            job.answer(outcome);
        }
        if prune_backlog || last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            prune_backlog = prune(&conn, &settings);
        }
    }
    tracing::debug!("cart writer stopped");
}

/// One batch of expired idempotency keys and one of expired carts; `true` when more may be due. Each batch is
/// its own small transaction (autocommit), between changes.
pub(super) fn prune(conn: &Connection, settings: &WriterSettings) -> bool {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let batches = [
        ("idempotency keys", forget_idempotency_keys(conn, secs(settings.idempotency_ttl), defaults::PRUNE_BATCH)),
        ("carts", expire_carts(conn, secs(settings.retention.cart_expiry), defaults::PRUNE_BATCH)),
        (
            "notices and notice cursors",
            notices::expire(
                conn,
                u64::try_from(settings.retention.notice_ttl.as_millis()).unwrap_or(u64::MAX),
                secs(settings.retention.cart_expiry),
                defaults::PRUNE_BATCH,
            ),
        ),
        (
            "chat messages",
            chat::expire(
                conn,
                u64::try_from(settings.retention.chat_ttl.as_millis()).unwrap_or(u64::MAX),
                defaults::PRUNE_BATCH,
            ),
        ),
    ];
    let mut more = false;
    for (what, outcome) in batches {
        match outcome {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(removed = n, "expired {what} deleted");
                }
                more |= n >= defaults::PRUNE_BATCH;
            }
            Err(e) => tracing::warn!(error = %e, "deleting expired {what} failed"),
        }
    }
    more
}

/// Apply every job in one transaction; each job's outcome is final only if the commit succeeds.
fn commit_batch(
    conn: &mut Connection,
    batch: &[WriteJob],
    settings: &WriterSettings,
    catalog: &mut CatalogState,
) -> Vec<Result<JobOutcome, MutationError>> {
    let store_failure = |e: &rusqlite::Error| -> Vec<Result<JobOutcome, MutationError>> {
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
                let outcome = apply_job(&sp, job, settings, catalog.get());
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

fn apply_job(
    conn: &Connection,
    job: &WriteJob,
    settings: &WriterSettings,
    catalog: &Catalog,
) -> Result<JobOutcome, MutationError> {
    match job {
        WriteJob::Cart { request, .. } => apply_cart_change(conn, request, settings, catalog).map(JobOutcome::Cart),
        WriteJob::Product { update, .. } => apply_product_update(conn, update, catalog).map(JobOutcome::Product),
        WriteJob::Checkout { request, .. } => {
            apply_checkout(conn, request, settings, catalog).map(JobOutcome::Checkout)
        }
        WriteJob::Touch { cart, .. } => {
            touch_cart(conn, cart.as_str())?;
            notices::touch_cursor(conn, cart.as_str())?;
            Ok(JobOutcome::Done)
        }
        WriteJob::PostNotice { to, notice, .. } => {
            let cap = if to.is_some() { settings.retention.inbox_cap } else { settings.retention.shop_notices_cap };
            let to = to.as_ref().map(CartKey::as_str);
            Ok(JobOutcome::Notice(notices::post_notice(conn, &new_notice_id(), to, notice, cap)?))
        }
        WriteJob::Cursor { cart, ack, issued_ms, .. } => {
            Ok(JobOutcome::Cursor(notices::open_cursor(conn, cart.as_str(), *ack, *issued_ms)?))
        }
        WriteJob::Chat { write, .. } => Ok(JobOutcome::Chat(match write {
            ChatWrite::Post { cart, message } => {
                let (message, new) = chat::post(conn, cart.as_str(), message, settings.retention.chat_history)?;
                ChatDone::Posted(message, new)
            }
            ChatWrite::Claim { service, lease_ms, take } => {
                ChatDone::Handed(chat::claim(conn, service, *lease_ms, *take)?)
            }
            ChatWrite::Ack { service, id } => ChatDone::Acked(chat::ack(conn, service, id)?),
            ChatWrite::Release { service } => {
                chat::release(conn, service)?;
                ChatDone::Released
            }
        })),
        WriteJob::Probe { .. } => {
            write_probe(conn)?;
            Ok(JobOutcome::Done)
        }
    }
}

fn apply_cart_change(
    conn: &Connection,
    request: &MutationRequest,
    settings: &WriterSettings,
    catalog: &Catalog,
) -> Result<Mutation, MutationError> {
    let key = request.cart.as_str();
    let fp = fingerprint(&request.op);
    let idem = request.idempotency_key.as_ref().map(|k| k.as_str());
    if let Some(idem) = idem {
        if let Some((earlier, answer)) = remembered(conn, key, idem)? {
            return replay_mutation(&earlier, &fp, &answer, || {
                let (version, contents) = read_cart(conn, key)?;
                Ok(price(&request.cart, version, &contents, catalog))
            });
        }
    }
    let (mut version, mut contents) = read_cart(conn, key)?;
    if request.expected.is_some() {
        check_expected(&price(&request.cart, version, &contents, catalog), request.expected.as_ref())?;
    }
    let before = contents.clone();
    let change = contents.apply(&request.op, &settings.limits, |id| catalog.get(id))?;
    if change == Change::Changed {
        version += 1;
        write_cart(conn, key, version, &contents)?;
        holds::adjust(conn, &before, &contents)?;
    }
    let outcome = committed_mutation(&request.cart, price(&request.cart, version, &contents, catalog), change);
    if let Some(idem) = idem {
        remember(conn, key, idem, &fp, &remembered_answer(&outcome)?)?;
        cap_idempotency_keys(conn, key, settings.retention.idempotency_per_cart)?;
    }
    Ok(outcome)
}

fn apply_product_update(
    conn: &Connection,
    update: &ProductUpdate,
    catalog: &Catalog,
) -> Result<ProductUpdated, MutationError> {
    let (product, change) = plan_product_update(update, catalog)?;
    if change == Change::Changed {
        write_product(conn, &product)?;
    }
    Ok(committed_product_update(product, change))
}

fn apply_checkout(
    conn: &Connection,
    request: &CheckoutRequest,
    settings: &WriterSettings,
    catalog: &Catalog,
) -> Result<Checkout, MutationError> {
    let key = request.cart.as_str();
    let idem = request.idempotency_key.as_ref().map(|k| k.as_str());
    if let Some(idem) = idem {
        if let Some((earlier, answer)) = remembered(conn, key, idem)? {
            return replay_checkout(&earlier, &answer);
        }
    }
    let (version, contents) = read_cart(conn, key)?;
    let priced = price(&request.cart, version, &contents, catalog);
    check_expected(&priced, request.expected.as_ref())?;
    check_total(&priced, request.expected_total)?;
    let products = plan_checkout(&priced, catalog)?;
    for product in &products {
        write_product(conn, product)?;
    }
    let order = Order::of(new_order_id(), key.to_owned(), &priced, now_ms());
    insert_order(conn, key, &order)?;
    let emptied = CartContents::default();
    write_cart(conn, key, version + 1, &emptied)?;
    holds::adjust(conn, &contents, &emptied)?;
    let receipt = CheckoutReceipt { order, cart: price(&request.cart, version + 1, &emptied, catalog) };
    if let Some(idem) = idem {
        remember(conn, key, idem, CHECKOUT_FINGERPRINT, &to_json(&receipt)?)?;
        cap_idempotency_keys(conn, key, settings.retention.idempotency_per_cart)?;
    }
    Ok(committed_checkout(&request.cart, receipt, products))
}
