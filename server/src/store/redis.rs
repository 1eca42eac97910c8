//! The shared cart store for several instances: carts, their versions, idempotency keys, stock, prices, orders
//! and the session secret live in one Redis.
//!
//! Every change is optimistic and atomic: the instance reads the cart, its version and the catalog revision,
//! applies the change with the same code as the embedded store (`shared::CartContents::apply`, stock and
//! limits included), and commits with one Lua script ([`COMMIT`]) that first checks nothing it read has moved —
//! same cart version, same catalog revision, Idempotency-Key still unused — and then, in the same step, writes
//! the new state, bumps the version and publishes the change on the instances' channel ([`crate::bus`]).
//! Redis runs a script alone, so the check, the write and the publish are one step: two instances cannot both
//! commit version 5 of a cart, and the channel carries each cart's versions in commit order. If something
//! moved, the instance reads again and retries (bounded by [`defaults::REDIS_CONFLICT_ATTEMPTS`]). Changes to
//! one cart made through this instance wait for each other first ([`CartTurns`]), so retries only happen
//! between instances.
//!
//! The cart logic stays in `shared/` (it is not rewritten in Lua); the script only guards and applies.
//!
//! Every command is bounded by [`defaults::REDIS_COMMAND_TIMEOUT`]; when Redis is unreachable a change fails
//! with [`StoreError`] (the API answers 503 with `Retry-After`) and nothing is written. The connection
//! reconnects by itself when Redis is back.
//!
//! Keys (all under `cartwheel:`): `cart:<key>` (hash `v`, `c`), `idem:<cart key>:<Idempotency-Key>` (expires),
//! `products` (hash id → `stock price revision`, overriding the catalog file), `catalog-revision`,
//! `order:<id>`, `session-secret`. Scripts name keys in their arguments, so Redis Cluster is not supported:
//! one Redis (with replicas) serves one shop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use shared::{Cart, CartContents, CartLimits, Cents, Change, CheckoutReceipt, Order, Product, ServerMessage};

use super::{
    fingerprint, new_order_id, now_ms, plan_checkout, plan_product_update, CartStore, Checkout, CheckoutRequest,
    Mutation, MutationError, MutationRequest, ProductUpdate, StoreError, CHECKOUT_FINGERPRINT,
};
use crate::bus::{Envelope, Topic, CHANNEL};
use crate::catalog::{Catalog, LiveCatalog};
use crate::config::defaults;
use crate::metrics::Metrics;
use crate::session::CartKey;

const CATALOG_REVISION: &str = "cartwheel:catalog-revision";
const PRODUCTS: &str = "cartwheel:products";
const SESSION_SECRET: &str = "cartwheel:session-secret";

fn cart_key(cart: &CartKey) -> String {
    format!("cartwheel:cart:{}", cart.0)
}

fn idempotency_key(cart: &CartKey, key: &str) -> String {
    format!("cartwheel:idem:{}:{key}", cart.0)
}

fn order_key(id: &str) -> String {
    format!("cartwheel:order:{id}")
}

/// Check, then write: the one script every change commits with.
///
/// ARGV: 1 Idempotency-Key's Redis key or '', 2 expected catalog revision, 3 cart hash key or '',
/// 4 expected cart version, then operations: `hset key field value`, `set key value`, `setex key value secs`,
/// `publish channel message`. Answers `{'ok'}`, `{'conflict'}` or `{'replay', <remembered answer>}`.
const COMMIT: &str = r"
if ARGV[1] ~= '' then
  local earlier = redis.call('GET', ARGV[1])
  if earlier then return {'replay', earlier} end
end
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[2]) then return {'conflict'} end
if ARGV[3] ~= '' and tonumber(redis.call('HGET', ARGV[3], 'v') or '0') ~= tonumber(ARGV[4]) then
  return {'conflict'}
end
local i = 5
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'hset' then redis.call('HSET', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'set' then redis.call('SET', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 'setex' then redis.call('SET', ARGV[i + 1], ARGV[i + 2], 'EX', ARGV[i + 3]); i = i + 4
  elseif op == 'publish' then redis.call('PUBLISH', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  else return redis.error_reply('cartwheel commit: unknown operation ' .. tostring(op)) end
end
return {'ok'}
";

/// One guarded commit under construction.
struct Commit {
    idempotency: Option<String>,
    catalog_revision: u64,
    cart: Option<(String, u64)>,
    ops: Vec<String>,
}

impl Commit {
    fn new(catalog_revision: u64) -> Commit {
        Commit { idempotency: None, catalog_revision, cart: None, ops: Vec::new() }
    }

    fn hset(&mut self, key: &str, field: &str, value: impl ToString) {
        self.ops.extend(["hset".into(), key.into(), field.into(), value.to_string()]);
    }

    fn set(&mut self, key: &str, value: String) {
        self.ops.extend(["set".into(), key.into(), value]);
    }

    fn remember(&mut self, key: String, answer: String, ttl: Duration) {
        self.ops.extend(["setex".into(), key.clone(), answer, ttl.as_secs().max(1).to_string()]);
        self.idempotency = Some(key);
    }

    fn publish(&mut self, envelope: &Envelope) {
        self.ops.extend(["publish".into(), CHANNEL.into(), envelope.encode()]);
    }
}

/// What a commit found.
enum Committed {
    Done,
    Conflict,
    /// The Idempotency-Key was used meanwhile: its remembered answer.
    Replay(String),
}

/// Changes to one cart made through this instance take turns, so only other instances can conflict.
#[derive(Default)]
struct CartTurns {
    carts: Mutex<HashMap<CartKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl CartTurns {
    async fn run<T>(&self, cart: &CartKey, work: impl std::future::Future<Output = T>) -> T {
        let turn = self.carts.lock().unwrap_or_else(|p| p.into_inner()).entry(cart.clone()).or_default().clone();
        let result = {
            let _mine = turn.lock().await;
            work.await
        };
        let mut carts = self.carts.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and ours. Anyone else waiting cloned it under this same lock.
        if Arc::strong_count(&turn) == 2 {
            carts.remove(cart);
        }
        result
    }
}

/// A cart as read before a change.
struct Read {
    catalog_revision: u64,
    version: u64,
    contents: CartContents,
    remembered: Option<String>,
}

pub struct RedisCartStore {
    connection: ConnectionManager,
    client: redis::Client,
    /// The catalog file's products; Redis holds what changed since.
    base: Catalog,
    catalog: Arc<LiveCatalog>,
    limits: CartLimits,
    commit: Script,
    turns: CartTurns,
    metrics: Arc<Metrics>,
    /// This instance's id on the channel.
    origin: String,
    secret: Vec<u8>,
}

impl RedisCartStore {
    /// Connect to `url`, read (or, first of all instances, create) the session secret unless one is given,
    /// and load the shared stock and prices over `catalog`. Fails when Redis cannot be reached.
    pub async fn open(
        url: &str,
        catalog: Catalog,
        limits: CartLimits,
        secret: Option<&[u8]>,
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
            commit: Script::new(COMMIT),
            turns: CartTurns::default(),
            metrics,
            origin: hex::encode(rand::random::<[u8; 8]>()),
            secret: Vec::new(),
        };
        let secret = match secret {
            Some(s) => s.to_vec(),
            None => store.shared_secret().await?,
        };
        store.reload_catalog().await?;
        Ok(RedisCartStore { secret, ..store })
    }

    pub fn session_secret(&self) -> &[u8] {
        &self.secret
    }

    /// The client, for the instance's own pub/sub connection.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn origin(&self) -> &str {
        &self.origin
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

    /// Publish on the instances' channel (notices, which no commit carries).
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        self.call(redis::cmd("PUBLISH").arg(CHANNEL).arg(envelope.encode()).query_async::<i64>(&mut c)).await?;
        Ok(())
    }

    /// Round trip to Redis, for `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query::<(String,)>(redis::pipe().cmd("PING")).await.map(drop)
    }

    async fn shared_secret(&self) -> Result<Vec<u8>, StoreError> {
        let candidate: [u8; 32] = rand::random();
        // The first instance ever sets it; every other one, now and later, reads the same.
        let (secret,): (Vec<u8>,) = self
            .query(
                redis::pipe()
                    .cmd("SET")
                    .arg(SESSION_SECRET)
                    .arg(&candidate[..])
                    .arg("NX")
                    .ignore()
                    .cmd("GET")
                    .arg(SESSION_SECRET),
            )
            .await?;
        if secret.len() < crate::session::MIN_SECRET_LEN {
            return Err(StoreError::Corrupt("the session secret in Redis is too short".into()));
        }
        Ok(secret)
    }

    /// Read the shared stock and prices and merge them into the live catalog; returns the products that were
    /// newer here than this instance knew (to send to its connections).
    pub async fn reload_catalog(&self) -> Result<Vec<Product>, StoreError> {
        let (_revision, stored): (Option<u64>, HashMap<String, String>) =
            self.query(redis::pipe().atomic().get(CATALOG_REVISION).hgetall(PRODUCTS)).await?;
        let mut products = Vec::with_capacity(stored.len());
        for (id, state) in stored {
            let Some(mut product) = self.base.get(&id.as_str().into()).cloned() else {
                tracing::warn!(product = id, "Redis has stock and price for a product the catalog does not list");
                continue;
            };
            let corrupt = || StoreError::Corrupt(format!("stored stock and price of '{id}': '{state}'"));
            let mut fields = state.split(' ').map(str::parse::<u64>);
            let (Some(Ok(stock)), Some(Ok(price)), Some(Ok(revision)), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(corrupt());
            };
            product.stock = u32::try_from(stock).map_err(|_| corrupt())?;
            product.price_cents = Cents(price);
            product.revision = revision;
            products.push(product);
        }
        Ok(self.catalog.merge(&products))
    }

    /// The catalog at exactly `revision` (reloading it if this instance is behind); its revision is what a
    /// commit then expects.
    async fn catalog_at(&self, revision: u64) -> Result<Arc<Catalog>, StoreError> {
        let current = self.catalog.current();
        if current.revision() == revision {
            return Ok(current);
        }
        self.reload_catalog().await?;
        Ok(self.catalog.current())
    }

    async fn read(&self, cart: &CartKey, idempotency: Option<&str>) -> Result<Read, StoreError> {
        let key = cart_key(cart);
        let mut pipe = redis::pipe();
        pipe.get(CATALOG_REVISION).hget(&key, "v").hget(&key, "c");
        let (catalog_revision, version, contents, remembered) = match idempotency {
            Some(idem) => {
                pipe.get(idem);
                self.query::<(Option<u64>, Option<u64>, Option<String>, Option<String>)>(&pipe).await?
            }
            None => {
                let (r, v, c) = self.query::<(Option<u64>, Option<u64>, Option<String>)>(&pipe).await?;
                (r, v, c, None)
            }
        };
        let contents = match contents {
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("cart {}: {e}", cart.short())))?
            }
            None => CartContents::default(),
        };
        Ok(Read {
            catalog_revision: catalog_revision.unwrap_or(0),
            version: version.unwrap_or(0),
            contents,
            remembered,
        })
    }

    async fn commit(&self, commit: Commit) -> Result<Committed, StoreError> {
        let mut c = self.connection.clone();
        let mut invocation = self.commit.key(CATALOG_REVISION);
        invocation.arg(commit.idempotency.as_deref().unwrap_or("")).arg(commit.catalog_revision);
        match &commit.cart {
            Some((key, version)) => invocation.arg(key).arg(version),
            None => invocation.arg("").arg(0),
        };
        invocation.arg(&commit.ops);
        let answer: Vec<String> = self.call(invocation.invoke_async(&mut c)).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(Committed::Done),
            Some("conflict") => {
                self.metrics.redis_conflicts.inc();
                // A little jitter, so instances that collided do not collide again in lockstep.
                tokio::time::sleep(Duration::from_micros(rand::random_range(0..500))).await;
                Ok(Committed::Conflict)
            }
            Some("replay") => Ok(Committed::Replay(answer.into_iter().nth(1).unwrap_or_default())),
            _ => Err(StoreError::Corrupt(format!("unexpected commit answer {answer:?}"))),
        }
    }

    fn envelope(&self, topic: Topic, message: &ServerMessage) -> Result<Envelope, StoreError> {
        let text = serde_json::to_string(message).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Envelope::new(topic, &self.origin, text))
    }

    async fn apply_mutation(&self, request: &MutationRequest) -> Result<Mutation, MutationError> {
        let fp = fingerprint(&request.op);
        let idem = request.idempotency_key.as_deref().map(|k| idempotency_key(&request.cart, k));
        for _ in 0..defaults::REDIS_CONFLICT_ATTEMPTS {
            let read = self.read(&request.cart, idem.as_deref()).await?;
            if let Some(earlier) = read.remembered {
                return replay(&earlier, &fp);
            }
            let catalog = self.catalog_at(read.catalog_revision).await?;
            let mut contents = read.contents;
            let change = contents.apply(&request.op, &self.limits, |id| catalog.get(id))?;
            let version = if change == Change::Changed { read.version + 1 } else { read.version };
            let cart = Cart::priced(version, &contents, catalog.currency(), |id| catalog.get(id));
            if change == Change::Unchanged && idem.is_none() {
                return Ok(Mutation { cart, change, replayed: false });
            }
            let mut commit = Commit::new(catalog.revision());
            let key = cart_key(&request.cart);
            if change == Change::Changed {
                commit.hset(&key, "v", version);
                commit.hset(&key, "c", to_json(&contents)?);
                let message = ServerMessage::CartUpdate { version, data: cart.clone() };
                commit.publish(&self.envelope(Topic::Cart { key: request.cart.clone(), version }, &message)?);
            }
            commit.cart = Some((key, read.version));
            if let Some(idem) = &idem {
                commit.remember(idem.clone(), format!("{fp}\n{}", to_json(&cart)?), defaults::IDEMPOTENCY_TTL);
            }
            match self.commit(commit).await? {
                Committed::Done => return Ok(Mutation { cart, change, replayed: false }),
                Committed::Replay(earlier) => return replay(&earlier, &fp),
                Committed::Conflict => {}
            }
        }
        Err(StoreError::Contended(defaults::REDIS_CONFLICT_ATTEMPTS).into())
    }

    async fn apply_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, MutationError> {
        let idem = request.idempotency_key.as_deref().map(|k| idempotency_key(&request.cart, k));
        for _ in 0..defaults::REDIS_CONFLICT_ATTEMPTS {
            let read = self.read(&request.cart, idem.as_deref()).await?;
            if let Some(earlier) = read.remembered {
                return replay_checkout(&earlier);
            }
            let catalog = self.catalog_at(read.catalog_revision).await?;
            let priced = Cart::priced(read.version, &read.contents, catalog.currency(), |id| catalog.get(id));
            let products = plan_checkout(&priced, &catalog)?;
            let mut commit = Commit::new(catalog.revision());
            for product in &products {
                commit.hset(PRODUCTS, product.id.as_str(), product_state(product));
                let message = ServerMessage::ProductUpdate { data: product.clone() };
                commit.publish(&self.envelope(Topic::Product, &message)?);
            }
            commit.set(CATALOG_REVISION, (catalog.revision() + 1).to_string());
            let order = Order::of(new_order_id(), request.cart.0.clone(), &priced, now_ms());
            commit.set(&order_key(&order.id), to_json(&order)?);
            let key = cart_key(&request.cart);
            let emptied = CartContents::default();
            let version = read.version + 1;
            commit.hset(&key, "v", version);
            commit.hset(&key, "c", to_json(&emptied)?);
            let cart = Cart::priced(version, &emptied, catalog.currency(), |id| catalog.get(id));
            let message = ServerMessage::CartUpdate { version, data: cart.clone() };
            commit.publish(&self.envelope(Topic::Cart { key: request.cart.clone(), version }, &message)?);
            commit.cart = Some((key, read.version));
            let receipt = CheckoutReceipt { order, cart };
            if let Some(idem) = &idem {
                let answer = format!("{CHECKOUT_FINGERPRINT}\n{}", to_json(&receipt)?);
                commit.remember(idem.clone(), answer, defaults::IDEMPOTENCY_TTL);
            }
            match self.commit(commit).await? {
                Committed::Done => {
                    // Read-your-writes here; the channel brings the same states to the other instances.
                    self.catalog.merge(&products);
                    return Ok(Checkout { receipt, products, replayed: false });
                }
                Committed::Replay(earlier) => return replay_checkout(&earlier),
                Committed::Conflict => {}
            }
        }
        Err(StoreError::Contended(defaults::REDIS_CONFLICT_ATTEMPTS).into())
    }

    async fn apply_product(&self, update: &ProductUpdate) -> Result<(Product, Change), MutationError> {
        for _ in 0..defaults::REDIS_CONFLICT_ATTEMPTS {
            let (revision,): (Option<u64>,) = self.query(redis::pipe().get(CATALOG_REVISION)).await?;
            let catalog = self.catalog_at(revision.unwrap_or(0)).await?;
            let (next, change) = plan_product_update(update, &catalog)?;
            if change == Change::Unchanged {
                return Ok((next, change));
            }
            let mut commit = Commit::new(catalog.revision());
            commit.hset(PRODUCTS, next.id.as_str(), product_state(&next));
            commit.set(CATALOG_REVISION, next.revision.to_string());
            commit.publish(&self.envelope(Topic::Product, &ServerMessage::ProductUpdate { data: next.clone() })?);
            match self.commit(commit).await? {
                Committed::Done => {
                    self.catalog.merge(std::slice::from_ref(&next));
                    return Ok((next, Change::Changed));
                }
                Committed::Conflict | Committed::Replay(_) => {}
            }
        }
        Err(StoreError::Contended(defaults::REDIS_CONFLICT_ATTEMPTS).into())
    }
}

impl CartStore for RedisCartStore {
    fn load<'a>(&'a self, cart: &'a CartKey) -> BoxFuture<'a, Result<Cart, StoreError>> {
        async move {
            let key = cart_key(cart);
            let (version, contents): (Option<u64>, Option<String>) =
                self.query(redis::pipe().hget(&key, "v").hget(&key, "c")).await?;
            let contents = match contents {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("cart {}: {e}", cart.short())))?,
                None => CartContents::default(),
            };
            let catalog = self.catalog.current();
            Ok(Cart::priced(version.unwrap_or(0), &contents, catalog.currency(), |id| catalog.get(id)))
        }
        .boxed()
    }

    fn mutate(&self, request: MutationRequest) -> BoxFuture<'_, Result<Mutation, MutationError>> {
        async move { self.turns.run(&request.cart, self.apply_mutation(&request)).await }.boxed()
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.current()
    }

    fn update_product(&self, update: ProductUpdate) -> BoxFuture<'_, Result<(Product, Change), MutationError>> {
        async move { self.apply_product(&update).await }.boxed()
    }

    fn checkout(&self, request: CheckoutRequest) -> BoxFuture<'_, Result<Checkout, MutationError>> {
        async move { self.turns.run(&request.cart, self.apply_checkout(&request)).await }.boxed()
    }
}

/// Bound a Redis call by [`defaults::REDIS_COMMAND_TIMEOUT`].
pub(crate) async fn bounded<T>(
    work: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(defaults::REDIS_COMMAND_TIMEOUT, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout(defaults::REDIS_COMMAND_TIMEOUT)),
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn product_state(p: &Product) -> String {
    format!("{} {} {}", p.stock, p.price_cents.0, p.revision)
}

/// The remembered answer to a cart change, if it was for the same request.
fn replay(remembered: &str, fingerprint: &str) -> Result<Mutation, MutationError> {
    let (earlier, answer) = remembered.split_once('\n').unwrap_or(("", remembered));
    if earlier != fingerprint {
        return Err(MutationError::IdempotencyKeyReused);
    }
    let cart: Cart =
        serde_json::from_str(answer).map_err(|e| StoreError::Corrupt(format!("remembered answer: {e}")))?;
    Ok(Mutation { cart, change: Change::Unchanged, replayed: true })
}

fn replay_checkout(remembered: &str) -> Result<Checkout, MutationError> {
    let (earlier, answer) = remembered.split_once('\n').unwrap_or(("", remembered));
    if earlier != CHECKOUT_FINGERPRINT {
        return Err(MutationError::IdempotencyKeyReused);
    }
    let receipt: CheckoutReceipt =
        serde_json::from_str(answer).map_err(|e| StoreError::Corrupt(format!("remembered order: {e}")))?;
    Ok(Checkout { receipt, products: Vec::new(), replayed: true })
}
