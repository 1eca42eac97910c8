//! The shared cart store for several instances: carts, their versions, idempotency keys, stock, prices, orders
//! and the session secret live in one Redis ([`keys`] lists the layout).
//!
//! Every change is optimistic and atomic: the instance reads the cart, its version and the catalog revision,
//! applies the change with the same code as the embedded store (`CartContents::apply` and [`super::rules`],
//! stock and limits included), and commits with one guarded Lua script ([`commit`]) that also publishes the
//! change's events on the instances' channel, so the channel carries each cart's versions in commit order. If
//! something moved, the instance reads again and retries (bounded by [`defaults::REDIS_CONFLICT_ATTEMPTS`]).
//! Changes to one cart made through this instance wait for each other first ([`turns`]), so retries only
//! happen between instances.
//!
//! What a published event looks like is not this module's business: the realtime layer gives the store an
//! [`EventFormat`] at start-up, and the store only carries its output inside the commit.
//!
//! Every command is bounded by [`defaults::REDIS_COMMAND_TIMEOUT`]; when Redis is unreachable a change fails
//! with [`StoreError`] and nothing is written. The connection reconnects by itself when Redis is back.
//! Scripts name keys in their arguments, so Redis Cluster is not supported: one Redis (with replicas) serves
//! one shop.

mod commit;
pub mod keys;
mod turns;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cartwheel_core::chat::{ChatMessage, ChatSender};
use cartwheel_core::version::Epoch;
use cartwheel_core::{
    Cart, CartContents, CartLimits, CartOp, Cents, Change, CheckoutReceipt, Notice, Order, PostedNotice, Product,
    ProductId,
};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use self::commit::{Commit, Committed};
use self::turns::CartTurns;
use super::rules::{
    check_expected, check_total, committed_checkout, committed_mutation, committed_product_update, fingerprint,
    new_chat_id, new_notice_id, new_order_id, order_of, parse_chat, parse_contents, plan_checkout, plan_product_update,
    price, remembered_answer, replay_checkout, replay_mutation, to_json, CHECKOUT_FINGERPRINT,
};
use super::{
    CartStore, Checkout, CheckoutRequest, Mutation, MutationError, MutationRequest, NoticeCursor, ProductUpdate,
    ProductUpdated, Retention, StoreError,
};
use crate::clock::now_ms;
use crate::config::defaults;
use crate::domain::{new_store_epoch, CartKey, Catalog, Event, IdempotencyKey, LiveCatalog};
use crate::metrics::Metrics;

/// How a committed event is published on the instances' channel (implemented by the realtime layer).
pub trait EventFormat: Send + Sync + 'static {
    fn encode(&self, event: &Event) -> String;
}

/// A cart as read before a change.
struct CartSnapshot {
    /// The store's epoch as Redis holds it (`None` after a flush).
    epoch: Option<String>,
    version: u64,
    contents: CartContents,
    remembered: Option<String>,
}

/// Carts, stock, prices, orders, idempotency keys and the session secret in one Redis shared by every
/// instance; see the module doc for how a change commits.
pub struct RedisCartStore {
    connection: ConnectionManager,
    client: redis::Client,
    /// The catalog file's products; Redis holds what changed since.
    base: Catalog,
    catalog: Arc<LiveCatalog>,
    limits: CartLimits,
    retention: Retention,
    commit: Script,
    notice: Script,
    presence: Script,
    reach: Script,
    /// This instance's name in the presence registry.
    instance: String,
    cursor: Script,
    chat: Script,
    turns: CartTurns,
    format: Arc<dyn EventFormat>,
    metrics: Arc<Metrics>,
    secret: Vec<u8>,
}

impl RedisCartStore {
    /// Connect to `url`, read (or, first of all instances, create) the session secret unless one is given,
    /// and load the shared stock and prices over `catalog`. Fails when Redis cannot be reached.
    pub async fn open(
        url: &str,
        catalog: Catalog,
        limits: CartLimits,
        retention: Retention,
        ring: &[Vec<u8>],
        format: Arc<dyn EventFormat>,
        metrics: Arc<Metrics>,
    ) -> Result<RedisCartStore, StoreError> {
        use redis::IntoConnectionInfo;
        // Without TCP_NODELAY, a command written while the previous one is unacknowledged waits for the delayed
        // ACK (40–200 ms): S3 through Redis had a fan-out p99 of 218 ms until this was set.
        let info =
            url.into_connection_info()?.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(defaults::REDIS_COMMAND_TIMEOUT))
            .set_response_timeout(Some(defaults::REDIS_COMMAND_TIMEOUT))
            // Fail a request fast while Redis is down (503); the next request starts a new attempt.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = bounded(client.get_connection_manager_with_config(config)).await?;
        let store = RedisCartStore {
            connection,
            client,
            catalog: Arc::new(LiveCatalog::new(Arc::new(catalog.clone()))),
            base: catalog,
            limits,
            retention,
            commit: Script::new(commit::SCRIPT),
            notice: Script::new(include_str!("notice.lua")),
            presence: Script::new(include_str!("presence.lua")),
            reach: Script::new(include_str!("reach.lua")),
            instance: hex::encode(rand::random::<[u8; 8]>()),
            cursor: Script::new(include_str!("cursor.lua")),
            chat: Script::new(include_str!("chat.lua")),
            turns: CartTurns::default(),
            format,
            metrics,
            secret: Vec::new(),
        };
        let secret = match ring.first() {
            Some(s) => s.clone(),
            None => store.shared_secret().await?,
        };
        store.check_signer(ring, &secret).await?;
        store.adopt_epoch().await?;
        Ok(RedisCartStore { secret, ..store })
    }

    pub fn session_secret(&self) -> &[u8] {
        &self.secret
    }

    /// The client, for the instance's own pub/sub connection.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The live catalog, which the bus also feeds with other instances' product changes.
    pub fn live_catalog(&self) -> &LiveCatalog {
        &self.catalog
    }

    /// Run one command or script, bounded in time and measured.
    async fn call<T>(&self, work: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = bounded(work).await;
        self.metrics.redis_round_trip.observe(started.elapsed().as_secs_f64());
        result
    }

    /// Run a read (or an idempotent write) as a pipeline; if the connection turns out to be gone — the first
    /// request after Redis came back finds that out — once more on the fresh connection the first attempt
    /// started. Commits are never repeated this way: whether a lost script ran is unknowable.
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        let mut c = self.connection.clone();
        match self.call(pipe.query_async(&mut c)).await {
            Err(StoreError::Redis(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                let mut c = self.connection.clone();
                self.call(pipe.query_async(&mut c)).await
            }
            other => other,
        }
    }

    /// Publish a message no commit carries (notices) on the instances' channel.
    pub async fn publish(&self, message: String) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        self.call(redis::cmd("PUBLISH").arg(keys::CHANNEL).arg(message).query_async::<i64>(&mut c)).await?;
        Ok(())
    }

    /// Refuse to run beside instances that sign cookies with a secret this one cannot verify; then record this
    /// one's signing secret (its digest) as the current one. Rotating works in steps that each pass this check:
    /// add the new secret second, then move it first, then drop the old one.
    async fn check_signer(&self, ring: &[Vec<u8>], signing: &[u8]) -> Result<(), StoreError> {
        let digest = |s: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(s));
        let verifies: Vec<String> =
            if ring.is_empty() { vec![digest(signing)] } else { ring.iter().map(|s| digest(s)).collect() };
        let (current,): (Option<String>,) = self.query(redis::pipe().cmd("GET").arg(keys::SESSION_SIGNER)).await?;
        if let Some(current) = current {
            if !verifies.contains(&current) {
                return Err(StoreError::SessionSecretMismatch);
            }
        }
        let (): () =
            self.query(redis::pipe().cmd("SET").arg(keys::SESSION_SIGNER).arg(digest(signing)).ignore()).await?;
        Ok(())
    }

    async fn shared_secret(&self) -> Result<Vec<u8>, StoreError> {
        let candidate: [u8; 32] = rand::random();
        // The first instance ever sets it; every other one, now and later, reads the same.
        let (secret,): (Vec<u8>,) = self
            .query(
                redis::pipe()
                    .cmd("SET")
                    .arg(keys::SESSION_SECRET)
                    .arg(&candidate[..])
                    .arg("NX")
                    .ignore()
                    .cmd("GET")
                    .arg(keys::SESSION_SECRET),
            )
            .await?;
        if secret.len() < defaults::MIN_SESSION_SECRET_LEN {
            return Err(StoreError::Corrupt("the session secret in Redis is too short".into()));
        }
        Ok(secret)
    }

    /// Make the store's epoch this instance's, drawing one first if the keyspace has none (the first start, or
    /// a flushed or replaced Redis); on a change the catalog starts again from the file's and Redis's states.
    async fn adopt_epoch(&self) -> Result<(), StoreError> {
        let candidate = new_store_epoch();
        let (text,): (Option<String>,) = self
            .query(
                redis::pipe().cmd("SET").arg(keys::EPOCH).arg(candidate.as_str()).arg("NX").ignore().get(keys::EPOCH),
            )
            .await?;
        let epoch = text
            .as_deref()
            .and_then(Epoch::parse)
            .ok_or_else(|| StoreError::Corrupt(format!("the epoch in Redis is not one: {text:?}")))?;
        if self.catalog.current().epoch() != &epoch {
            tracing::warn!(epoch = %epoch, "the store's epoch changed: versions and revisions start a new history");
            self.catalog.publish(Arc::new(self.base.clone().with_epoch(epoch)));
        }
        self.reload_catalog().await?;
        Ok(())
    }

    /// Whether the epoch read from Redis is not this instance's.
    fn epoch_moved(&self, read: Option<&str>) -> bool {
        read != Some(self.catalog.current().epoch().as_str())
    }

    /// Read the shared stock and prices and merge them into the live catalog; returns the products that were
    /// newer here than this instance knew (to send to its connections). Entries for products the catalog file
    /// does not list are ignored: they guard nothing and wedge nothing.
    pub async fn reload_catalog(&self) -> Result<Vec<Product>, StoreError> {
        let (stored,): (HashMap<String, String>,) = self.query(redis::pipe().hgetall(keys::PRODUCTS)).await?;
        let epoch = self.catalog.current().epoch().clone();
        let mut products = Vec::with_capacity(stored.len());
        for (id, state) in stored {
            let Some(mut product) = self.base.get(&id.as_str().into()).cloned() else {
                tracing::debug!(product = id, "Redis has stock and price for a product the catalog does not list");
                continue;
            };
            let corrupt = || StoreError::Corrupt(format!("stored stock and price of '{id}': '{state}'"));
            let (stock, price, revision) = keys::parse_product_state(&state).ok_or_else(corrupt)?;
            product.stock = stock;
            product.price_cents = Cents(price);
            product.revision = revision;
            product.epoch = epoch.clone();
            products.push(product);
        }
        Ok(self.catalog.merge(&products))
    }

    /// The cart now holds the products of `after` (each until the cart would expire) and no longer those only
    /// in `before`.
    fn hold_lines(&self, commit: &mut Commit, cart: &CartKey, before: &CartContents, after: &CartContents) {
        let until = now_ms().saturating_add(millis(self.retention.cart_expiry));
        for line in &after.lines {
            commit.hold(&line.product_id, cart.as_str(), Some(until));
        }
        for line in &before.lines {
            if !after.lines.iter().any(|l| l.product_id == line.product_id) {
                commit.hold(&line.product_id, cart.as_str(), None);
            }
        }
    }

    /// Run `cursor.lua`: open `cart`'s cursor if it has none (general notices from `issued_ms` on, or from now
    /// on), and move it up to `ack`.
    async fn run_cursor(
        &self,
        cart: &CartKey,
        ack: Option<u64>,
        issued_ms: Option<u64>,
    ) -> Result<NoticeCursor, StoreError> {
        let mut c = self.connection.clone();
        let mut invocation = self.cursor.key(keys::notice_cursor(cart));
        invocation.key(keys::NOTICE_SEQ).key(keys::NOTICES);
        invocation
            .arg(ack.map(|n| n.to_string()).unwrap_or_default())
            .arg(millis(self.retention.cart_expiry))
            .arg(issued_ms.map(|n| n.to_string()).unwrap_or_default());
        let (upto, general_from): (u64, u64) = self.call(invocation.invoke_async(&mut c)).await?;
        Ok(NoticeCursor { upto, general_from })
    }

    /// The cart, and what a client's Idempotency-Key remembers (a key made for the request cannot have been
    /// used before its own commit, so it is not read).
    async fn read(&self, cart: &CartKey, key: &CommitKey) -> Result<CartSnapshot, StoreError> {
        let hash = keys::cart(cart);
        let mut pipe = redis::pipe();
        pipe.get(keys::EPOCH).hget(&hash, "v").hget(&hash, "c");
        let (epoch, version, contents, remembered) = if key.client.is_some() {
            pipe.get(&key.key);
            self.query::<(Option<String>, Option<u64>, Option<String>, Option<String>)>(&pipe).await?
        } else {
            let (e, v, c) = self.query::<(Option<String>, Option<u64>, Option<String>)>(&pipe).await?;
            (e, v, c, None)
        };
        let contents = match contents {
            Some(text) => parse_contents(cart.as_str(), &text)?,
            None => CartContents::default(),
        };
        Ok(CartSnapshot { epoch, version: version.unwrap_or(0), contents, remembered })
    }

    async fn run_commit(&self, commit: &Commit) -> Result<Committed, StoreError> {
        let mut c = self.connection.clone();
        let mut invocation = self.commit.key(keys::EPOCH);
        invocation.key(keys::PRODUCTS);
        invocation.arg(commit.idempotency.as_deref().unwrap_or("")).arg(self.catalog.current().epoch().as_str());
        match &commit.cart {
            Some((key, version)) => invocation.arg(key).arg(version),
            None => invocation.arg("").arg(0),
        };
        invocation.arg(commit.products.len());
        for guard in &commit.products {
            invocation.arg(&guard[..]);
        }
        invocation.arg(&commit.ops);
        let answer: Vec<String> = self.call(invocation.invoke_async(&mut c)).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => {
                let mut states = answer.into_iter().skip(1);
                let mut taken = Vec::new();
                while let (Some(id), Some(state)) = (states.next(), states.next()) {
                    taken.push((id, state));
                }
                Ok(Committed::Done(taken))
            }
            Some("conflict") => {
                self.metrics.redis_conflicts.inc();
                // A little jitter, so instances that collided do not collide again in lockstep.
                tokio::time::sleep(Duration::from_micros(rand::random_range(0..500))).await;
                Ok(Committed::Conflict)
            }
            Some("epoch") => Ok(Committed::Epoch),
            Some("replay") => Ok(Committed::Replay(answer.into_iter().nth(1).unwrap_or_default())),
            _ => Err(StoreError::Corrupt(format!("unexpected commit answer {answer:?}"))),
        }
    }

    /// Run a commit; if its answer is lost (timeout, dropped connection), ask again a bounded number of times:
    /// every commit carries an Idempotency-Key (the client's, or one made for it), so a script that did run
    /// answers with its remembered answer instead of applying twice, and a 503 stays rare.
    async fn commit(&self, commit: &Commit) -> Result<Committed, StoreError> {
        let mut lost = 0;
        loop {
            match self.run_commit(commit).await {
                Err(e) if is_ambiguous(&e) && lost < defaults::REDIS_AMBIGUOUS_COMMIT_RETRIES => {
                    lost += 1;
                    tracing::warn!(error = %e, lost, "commit answer lost; asking again with the same key");
                }
                other => return other,
            }
        }
    }

    fn publish_events(&self, commit: &mut Commit, events: &[Event]) {
        for event in events {
            commit.publish(self.format.encode(event));
        }
    }

    async fn apply_mutation(&self, request: &MutationRequest) -> Result<Mutation, MutationError> {
        let fp = fingerprint(&request.op);
        let idem = CommitKey::new(&request.cart, request.idempotency_key.as_ref());
        for _ in 0..defaults::REDIS_CONFLICT_ATTEMPTS {
            let read = self.read(&request.cart, &idem).await?;
            if let Some(earlier) = &read.remembered {
                let current = || Ok(price(&request.cart, read.version, &read.contents, &self.catalog.current()));
                return replay(earlier, |fp_then, answer| replay_mutation(fp_then, &fp, answer, current));
            }
            if self.epoch_moved(read.epoch.as_deref()) {
                self.adopt_epoch().await?;
                continue;
            }
            let catalog = self.catalog.current();
            let mut contents = read.contents.clone();
            if request.expected.is_some() {
                let current = price(&request.cart, read.version, &contents, &catalog);
                check_expected(&current, request.expected.as_ref())?;
            }
            let change = contents.apply(&request.op, &self.limits, |id| catalog.get(id))?;
            let version = if change == Change::Changed { read.version + 1 } else { read.version };
            let outcome = committed_mutation(&request.cart, price(&request.cart, version, &contents, &catalog), change);
            if change == Change::Unchanged && request.idempotency_key.is_none() {
                return Ok(outcome);
            }
            let mut commit = Commit::new();
            let key = keys::cart(&request.cart);
            if change == Change::Changed {
                commit.hset(&key, "v", version);
                commit.hset(&key, "c", to_json(&contents)?);
                commit.expire(&key, self.retention.cart_expiry);
                self.hold_lines(&mut commit, &request.cart, &read.contents, &contents);
            }
            if let Some(product) = op_product(&request.op).and_then(|id| catalog.get(id)) {
                commit.guard(product, self.base.get(&product.id));
            }
            self.publish_events(&mut commit, &outcome.events);
            commit.cart = Some((key, read.version));
            idem.remember(&mut commit, self.retention.idempotency_per_cart, || {
                Ok(format!("{fp}\n{}", remembered_answer(&outcome)?))
            })?;
            match self.commit(&commit).await? {
                Committed::Done(_) => return Ok(outcome),
                // A key made for this request alone can only have been used by this request's own commit,
                // whose answer was lost: it is committed, and its script published its events.
                Committed::Replay(_) if idem.client.is_none() => return Ok(Mutation { events: Vec::new(), ..outcome }),
                // Another request with this key committed meanwhile: read again, and replay what it remembered
                // against the cart as it is now.
                Committed::Replay(_) => {}
                Committed::Conflict => {
                    self.reload_catalog().await?;
                }
                Committed::Epoch => self.adopt_epoch().await?,
            }
        }
        Err(StoreError::Contended(defaults::REDIS_CONFLICT_ATTEMPTS).into())
    }

    async fn apply_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, MutationError> {
        let idem = CommitKey::new(&request.cart, request.idempotency_key.as_ref());
        let mut reloaded = false;
        for _ in 0..defaults::REDIS_CONFLICT_ATTEMPTS {
            let read = self.read(&request.cart, &idem).await?;
            if let Some(earlier) = read.remembered {
                return replay(&earlier, replay_checkout);
            }
            if self.epoch_moved(read.epoch.as_deref()) {
                self.adopt_epoch().await?;
                continue;
            }
            let catalog = self.catalog.current();
            let priced = price(&request.cart, read.version, &read.contents, &catalog);
            let planned = check_expected(&priced, request.expected.as_ref())
                .and_then(|()| check_total(&priced, request.expected_total))
                .and_then(|()| plan_checkout(&priced, &catalog));
            let products = match planned {
                // This instance's prices or stock may lag another's change: refuse only on a fresh view.
                Err(MutationError::PriceChanged(_) | MutationError::Shortfalls(_)) if !reloaded => {
                    reloaded = true;
                    self.reload_catalog().await?;
                    continue;
                }
                other => other?,
            };
            let mut commit = Commit::new();
            for line in &priced.items {
                if let Some(held) = catalog.get(&line.product_id) {
                    commit.take(held, line.quantity, self.base.get(&line.product_id));
                }
            }
            let order = Order::of(new_order_id(), request.cart.as_str().to_owned(), &priced, now_ms());
            commit.set(&keys::order(&order.id), to_json(&order)?);
            let key = keys::cart(&request.cart);
            let emptied = CartContents::default();
            let version = read.version + 1;
            commit.hset(&key, "v", version);
            commit.hset(&key, "c", to_json(&emptied)?);
            commit.expire(&key, self.retention.cart_expiry);
            self.hold_lines(&mut commit, &request.cart, &read.contents, &emptied);
            commit.cart = Some((key, read.version));
            let receipt = CheckoutReceipt { order, cart: price(&request.cart, version, &emptied, &catalog) };
            idem.remember(&mut commit, self.retention.idempotency_per_cart, || {
                Ok(format!("{CHECKOUT_FINGERPRINT}\n{}", to_json(&receipt)?))
            })?;
            let outcome = committed_checkout(&request.cart, receipt, products);
            for event in &outcome.events {
                match event {
                    Event::ProductChanged(p) => commit.publish_taken(self.format.encode(event), p.id.as_str()),
                    Event::CartChanged { .. } => commit.publish(self.format.encode(event)),
                }
            }
            match self.commit(&commit).await? {
                Committed::Done(taken) => {
                    let outcome = with_taken_stock(outcome, &taken)?;
                    // Read-your-writes here; the channel brings the same states to the other instances.
                    self.catalog.merge(&outcome.products);
                    return Ok(outcome);
                }
                // Our own commit whose answer was lost (see `apply_mutation`): this receipt is the one committed;
                // the stock it took comes with the channel's echo.
                Committed::Replay(_) if idem.client.is_none() => {
                    return Ok(Checkout { products: Vec::new(), events: Vec::new(), ..outcome });
                }
                Committed::Replay(earlier) => return replay(&earlier, replay_checkout),
                Committed::Conflict => {
                    self.reload_catalog().await?;
                }
                Committed::Epoch => self.adopt_epoch().await?,
            }
        }
        Err(StoreError::Contended(defaults::REDIS_CONFLICT_ATTEMPTS).into())
    }

    async fn apply_product(&self, update: &ProductUpdate) -> Result<ProductUpdated, MutationError> {
        for _ in 0..defaults::REDIS_CONFLICT_ATTEMPTS {
            let (epoch,): (Option<String>,) = self.query(redis::pipe().get(keys::EPOCH)).await?;
            if self.epoch_moved(epoch.as_deref()) {
                self.adopt_epoch().await?;
                continue;
            }
            let catalog = self.catalog.current();
            let (product, change) = plan_product_update(update, &catalog)?;
            let outcome = committed_product_update(product, change);
            if change == Change::Unchanged {
                return Ok(outcome);
            }
            let mut commit = Commit::new();
            if let Some(held) = catalog.get(&update.id) {
                commit.guard(held, self.base.get(&update.id));
            }
            commit.hset(keys::PRODUCTS, outcome.product.id.as_str(), keys::product_state(&outcome.product));
            self.publish_events(&mut commit, &outcome.events);
            match self.commit(&commit).await? {
                Committed::Done(_) => {
                    self.catalog.merge(std::slice::from_ref(&outcome.product));
                    return Ok(outcome);
                }
                Committed::Conflict | Committed::Replay(_) => {
                    self.reload_catalog().await?;
                }
                Committed::Epoch => self.adopt_epoch().await?,
            }
        }
        Err(StoreError::Contended(defaults::REDIS_CONFLICT_ATTEMPTS).into())
    }
}

/// The Idempotency-Key a change commits with: the client's (remembering its answer for a day), or one made
/// for this request alone, which only tells a lost commit's second ask that the first one ran — so it remembers
/// a one-byte marker for a minute, not the answer.
struct CommitKey {
    key: String,
    /// A client's key: the session's index of records (see [`keys::idempotency_index`]).
    client: Option<String>,
}

impl CommitKey {
    fn new(cart: &CartKey, client: Option<&IdempotencyKey>) -> CommitKey {
        match client {
            Some(k) => CommitKey { key: keys::idempotency(cart, k), client: Some(keys::idempotency_index(cart)) },
            None => CommitKey { key: keys::internal_idempotency(cart), client: None },
        }
    }

    fn remember(
        &self,
        commit: &mut Commit,
        cap: usize,
        answer: impl FnOnce() -> Result<String, StoreError>,
    ) -> Result<(), StoreError> {
        if let Some(index) = &self.client {
            commit.remember_capped(self.key.clone(), answer()?, defaults::IDEMPOTENCY_TTL, index.clone(), cap);
        } else {
            commit.remember(self.key.clone(), "1".to_owned(), defaults::REDIS_INTERNAL_IDEMPOTENCY_TTL);
        }
        Ok(())
    }
}

/// A committed checkout with the stock and revision its script took for each product (the plan's figures
/// assumed this instance's view, which another instance's checkout may have moved).
fn with_taken_stock(mut outcome: Checkout, taken: &[(String, String)]) -> Result<Checkout, StoreError> {
    let apply = |p: &mut Product| -> Result<(), StoreError> {
        if let Some((_, state)) = taken.iter().find(|(id, _)| id == p.id.as_str()) {
            let (stock, _, revision) = keys::parse_product_state(state)
                .ok_or_else(|| StoreError::Corrupt(format!("checkout took '{}' to '{state}'", p.id)))?;
            p.stock = stock;
            p.revision = revision;
        }
        Ok(())
    };
    for p in &mut outcome.products {
        apply(p)?;
    }
    for event in &mut outcome.events {
        if let Event::ProductChanged(p) = event {
            apply(p)?;
        }
    }
    Ok(outcome)
}

/// The product whose stock a cart change checks, if any.
fn op_product(op: &CartOp) -> Option<&ProductId> {
    match op {
        CartOp::Add { product_id, .. } | CartOp::Set { product_id, .. } | CartOp::Adjust { product_id, .. } => {
            Some(product_id)
        }
        CartOp::Remove { .. } | CartOp::Clear => None,
    }
}

/// A failure after which whether the script ran is unknown.
fn is_ambiguous(e: &StoreError) -> bool {
    match e {
        StoreError::Timeout(_) => true,
        StoreError::Redis(e) => e.is_io_error() || e.is_connection_dropped() || e.is_timeout(),
        _ => false,
    }
}

impl CartStore for RedisCartStore {
    fn load<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Cart, StoreError>> {
        async move {
            let key = keys::cart(cart);
            let (epoch, version, contents): (Option<String>, Option<u64>, Option<String>) =
                self.query(redis::pipe().get(keys::EPOCH).hget(&key, "v").hget(&key, "c")).await?;
            if self.epoch_moved(epoch.as_deref()) {
                // Answer in the store's epoch as it is now, never a low version under the old one.
                self.adopt_epoch().await?;
            }
            let contents = match contents {
                Some(text) => parse_contents(cart.as_str(), &text)?,
                None => CartContents::default(),
            };
            Ok(price(cart, version.unwrap_or(0), &contents, &self.catalog.current()))
        }
        .boxed()
    }

    fn mutate(&self, request: MutationRequest) -> BoxFuture<'_, Result<Mutation, MutationError>> {
        async move { self.turns.run(&request.cart, self.apply_mutation(&request)).await }.boxed()
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.current()
    }

    fn update_product(&self, update: ProductUpdate) -> BoxFuture<'_, Result<ProductUpdated, MutationError>> {
        async move { self.apply_product(&update).await }.boxed()
    }

    fn checkout(&self, request: CheckoutRequest) -> BoxFuture<'_, Result<Checkout, MutationError>> {
        async move { self.turns.run(&request.cart, self.apply_checkout(&request)).await }.boxed()
    }

    fn touch<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let ttl = millis(self.retention.cart_expiry);
            // PEXPIRE on a missing key does nothing; setting it again is harmless, so the query may retry.
            let touch = redis::pipe()
                .cmd("PEXPIRE")
                .arg(keys::cart(cart))
                .arg(ttl)
                .ignore()
                .cmd("PEXPIRE")
                .arg(keys::notice_cursor(cart))
                .arg(ttl)
                .ignore()
                .clone();
            self.query::<()>(&touch).await?;
            // The products it holds count for as long again (only those still held: `XX`).
            let (contents,): (Option<String>,) = self.query(redis::pipe().hget(keys::cart(cart), "c")).await?;
            if let Some(text) = contents {
                let until = now_ms().saturating_add(ttl);
                let mut pipe = redis::pipe();
                for line in parse_contents(cart.as_str(), &text)?.lines {
                    pipe.cmd("ZADD")
                        .arg(keys::holders(&line.product_id))
                        .arg("XX")
                        .arg(until)
                        .arg(cart.as_str())
                        .ignore();
                }
                self.query::<()>(&pipe).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn order<'a>(&'a self, cart: &'a CartKey, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, StoreError>> {
        async move {
            let (body,): (Option<String>,) = self.query(redis::pipe().cmd("GET").arg(keys::order(id))).await?;
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
        async move {
            let message = ChatMessage {
                id: new_chat_id(),
                from,
                text: text.to_owned(),
                at: now_ms(),
                client_id: client_id.map(Into::into),
            };
            let mut invocation = self.chat.arg("post");
            invocation
                .arg(keys::PREFIX)
                .arg(now_ms())
                .arg(cart.as_str())
                .arg(&message.id)
                .arg(to_json(&message)?)
                .arg(client_id.unwrap_or(""))
                .arg(if from == ChatSender::Shopper { "1" } else { "0" })
                .arg(self.retention.chat_history.max(1))
                .arg(millis(self.retention.chat_ttl));
            let mut c = self.connection.clone();
            // Asked once: a lost answer is settled by the page's retry with the same client id.
            let (body, new): (String, String) = self.call(invocation.invoke_async(&mut c)).await?;
            Ok((parse_chat(&body)?, new == "1"))
        }
        .boxed()
    }

    fn chat_history<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Vec<ChatMessage>, StoreError>> {
        async move {
            let (bodies,): (Vec<String>,) =
                self.query(redis::pipe().cmd("LRANGE").arg(keys::chat(cart)).arg(0).arg(-1)).await?;
            let since = now_ms().saturating_sub(millis(self.retention.chat_ttl));
            let messages = bodies.iter().map(|b| parse_chat(b)).collect::<Result<Vec<_>, _>>()?;
            Ok(messages.into_iter().filter(|m| m.at >= since).collect())
        }
        .boxed()
    }

    fn chat_claim<'a>(
        &'a self,
        service: &'a str,
        lease: Duration,
        take: usize,
    ) -> BoxFuture<'a, Result<Vec<(CartKey, ChatMessage)>, StoreError>> {
        async move {
            let mut invocation = self.chat.arg("claim");
            invocation
                .arg(keys::PREFIX)
                .arg(now_ms())
                .arg(service)
                .arg(millis(lease).max(1))
                .arg(take)
                .arg(defaults::CHAT_SCAN);
            let mut c = self.connection.clone();
            let flat: Vec<String> = self.call(invocation.invoke_async(&mut c)).await?;
            flat.chunks(2)
                .filter_map(|pair| match pair {
                    [cart, body] => Some((cart, body)),
                    _ => None,
                })
                .map(|(cart, body)| {
                    let cart = CartKey::parse(cart).map_err(|e| StoreError::Corrupt(format!("chat: {e}")))?;
                    Ok((cart, parse_chat(body)?))
                })
                .collect()
        }
        .boxed()
    }

    fn chat_ack<'a>(&'a self, service: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let mut invocation = self.chat.arg("ack");
            invocation.arg(keys::PREFIX).arg(now_ms()).arg(service).arg(id);
            let mut c = self.connection.clone();
            let was: i64 = self.call(invocation.invoke_async(&mut c)).await?;
            Ok(was == 1)
        }
        .boxed()
    }

    fn chat_release<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let mut invocation = self.chat.arg("release");
            invocation.arg(keys::PREFIX).arg(now_ms()).arg(service);
            let mut c = self.connection.clone();
            let _: i64 = self.call(invocation.invoke_async(&mut c)).await?;
            Ok(())
        }
        .boxed()
    }

    fn chat_services(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            let mut invocation = self.chat.arg("services");
            invocation.arg(keys::PREFIX).arg(now_ms());
            let mut c = self.connection.clone();
            self.call(invocation.invoke_async(&mut c)).await
        }
        .boxed()
    }

    fn holds(&self) -> BoxFuture<'_, Result<BTreeMap<ProductId, u64>, StoreError>> {
        async move {
            let now = now_ms();
            let mut pipe = redis::pipe();
            let products = self.base.products();
            for p in products {
                let key = keys::holders(&p.id);
                pipe.cmd("ZREMRANGEBYSCORE").arg(&key).arg("-inf").arg(now).ignore().cmd("ZCARD").arg(&key);
            }
            let counts: Vec<u64> = self.query(&pipe).await?;
            Ok(products.iter().zip(counts).filter(|(_, n)| *n > 0).map(|(p, n)| (p.id.clone(), n)).collect())
        }
        .boxed()
    }

    fn report_online<'a>(
        &'a self,
        sessions: &'a [(CartKey, usize)],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let mine = keys::presence_of(&self.instance);
            let all: usize = sessions.iter().map(|(_, n)| n).sum();
            let mut c = self.connection.clone();
            let mut invocation = self.presence.key(keys::PRESENCE);
            invocation.key(&mine).arg(now_ms()).arg(millis(ttl)).arg(&mine).arg(all);
            for (session, connections) in sessions {
                invocation.arg(session.as_str()).arg(*connections);
            }
            self.call(invocation.invoke_async(&mut c)).await
        }
        .boxed()
    }

    fn reach_elsewhere<'a>(&'a self, session: Option<&'a CartKey>) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let mut c = self.connection.clone();
            let mut invocation = self.reach.key(keys::PRESENCE);
            invocation.arg(now_ms()).arg(keys::presence_of(&self.instance)).arg(session.map_or("*", CartKey::as_str));
            self.call(invocation.invoke_async(&mut c)).await
        }
        .boxed()
    }

    fn post_notice<'a>(
        &'a self,
        to: Option<&'a CartKey>,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<PostedNotice, StoreError>> {
        async move {
            let (audience, cap) = match to {
                Some(cart) => (keys::inbox(cart), self.retention.inbox_cap),
                None => (keys::NOTICES.to_owned(), self.retention.shop_notices_cap),
            };
            let id = new_notice_id();
            let sent_at_ms = now_ms();
            // The member is the notice's JSON; the script puts the seq it draws in the middle.
            let before = format!("{{\"id\":{},\"seq\":", to_json(&id)?);
            let after = format!(",\"sent_at_ms\":{sent_at_ms},\"data\":{}}}", to_json(notice)?);
            for _ in 0..2 {
                let mut c = self.connection.clone();
                let mut invocation = self.notice.key(keys::EPOCH);
                invocation.key(keys::NOTICE_SEQ).key(&audience);
                invocation
                    .arg(self.catalog.current().epoch().as_str())
                    .arg(&before)
                    .arg(&after)
                    .arg(cap.max(1))
                    .arg(millis(self.retention.notice_ttl));
                // Not asked again when the answer is lost: a second ask would store it twice (under two seqs).
                let seq: i64 = self.call(invocation.invoke_async(&mut c)).await?;
                match u64::try_from(seq) {
                    Ok(seq) => return Ok(PostedNotice { id, seq, sent_at_ms, data: notice.clone() }),
                    Err(_) => self.adopt_epoch().await?,
                }
            }
            Err(StoreError::Corrupt("the store's epoch kept moving while a notice was stored".into()))
        }
        .boxed()
    }

    fn notices_after<'a>(
        &'a self,
        cart: &'a CartKey,
        issued_ms: Option<u64>,
    ) -> BoxFuture<'a, Result<(NoticeCursor, Vec<PostedNotice>), StoreError>> {
        async move {
            let cursor = self.run_cursor(cart, None, issued_ms).await?;
            let after = |seq: u64| format!("({seq}");
            let (own, general): (Vec<String>, Vec<String>) = self
                .query(
                    redis::pipe()
                        .cmd("ZRANGEBYSCORE")
                        .arg(keys::inbox(cart))
                        .arg(after(cursor.upto))
                        .arg("+inf")
                        .cmd("ZRANGEBYSCORE")
                        .arg(keys::NOTICES)
                        .arg(after(cursor.upto.max(cursor.general_from)))
                        .arg("+inf"),
                )
                .await?;
            let since = now_ms().saturating_sub(millis(self.retention.notice_ttl));
            let mut list = Vec::with_capacity(own.len() + general.len());
            for member in own.iter().chain(&general) {
                let notice: PostedNotice =
                    serde_json::from_str(member).map_err(|e| StoreError::Corrupt(format!("stored notice: {e}")))?;
                if notice.sent_at_ms >= since {
                    list.push(notice);
                }
            }
            list.sort_by_key(|n| n.seq);
            list.truncate(self.retention.notices_per_session());
            Ok((cursor, list))
        }
        .boxed()
    }

    fn ack_notices<'a>(&'a self, cart: &'a CartKey, upto: u64) -> BoxFuture<'a, Result<NoticeCursor, StoreError>> {
        async move { self.run_cursor(cart, Some(upto), None).await }.boxed()
    }

    fn probe_write(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let probe =
                redis::pipe().cmd("SET").arg(keys::HEALTH_PROBE).arg(now_ms()).arg("PX").arg(60_000).ignore().clone();
            self.query::<()>(&probe).await
        }
        .boxed()
    }
}

/// A duration as whole milliseconds, for `PX` and `PEXPIRE`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Bound a Redis call by [`defaults::REDIS_COMMAND_TIMEOUT`].
pub async fn bounded<T>(work: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(defaults::REDIS_COMMAND_TIMEOUT, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout(defaults::REDIS_COMMAND_TIMEOUT)),
    }
}

/// A remembered answer is stored as `<fingerprint>\n<answer>`.
fn replay<T>(
    remembered: &str,
    decode: impl FnOnce(&str, &str) -> Result<T, MutationError>,
) -> Result<T, MutationError> {
    let (earlier, answer) = remembered.split_once('\n').unwrap_or(("", remembered));
    decode(earlier, answer)
}
