//! The SQLite schema and what is read once at start-up: migrations (`PRAGMA user_version` counts how many
//! ran), the session secret, and the stock and prices that changed at run time.

use cartwheel_core::Cents;
use rusqlite::{Connection, OptionalExtension};

use cartwheel_core::version::Epoch;

use crate::domain::{new_store_epoch, Catalog};
use crate::store::StoreError;

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
    // 3: carts expire when untouched (the sweep walks them by age).
    "CREATE INDEX carts_by_age ON carts (updated_at);",
    // 4: stored notices (targeted: `cart_key`; general: NULL) and each session's cursor.
    "CREATE TABLE notices (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,
        cart_key   TEXT,
        body       TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX notices_by_audience ON notices (cart_key, seq);
    CREATE INDEX notices_by_age ON notices (created_ms);
    CREATE TABLE notice_cursors (
        cart_key     TEXT PRIMARY KEY,
        upto         INTEGER NOT NULL,
        general_from INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL
    );
    CREATE INDEX notice_cursors_by_age ON notice_cursors (updated_at);",
    // 5: how many carts hold each product (see `holds`).
    "CREATE TABLE product_holds (
        product_id TEXT PRIMARY KEY,
        carts      INTEGER NOT NULL CHECK (carts >= 0)
    );",
    // 6: the help chat (see `chat`).
    "CREATE TABLE chat_messages (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        cart_key  TEXT NOT NULL,
        id        TEXT NOT NULL UNIQUE,
        sender    TEXT NOT NULL,
        text      TEXT NOT NULL,
        at_ms     INTEGER NOT NULL,
        client_id TEXT,
        pending   INTEGER NOT NULL DEFAULT 0,
        sent_to   TEXT
    );
    CREATE INDEX chat_by_cart ON chat_messages (cart_key, seq);
    CREATE UNIQUE INDEX chat_by_client ON chat_messages (cart_key, client_id) WHERE client_id IS NOT NULL;
    CREATE INDEX chat_waiting ON chat_messages (seq) WHERE pending = 1;
    CREATE INDEX chat_by_age ON chat_messages (at_ms);
    CREATE TABLE chat_owners (
        cart_key       TEXT PRIMARY KEY,
        service        TEXT NOT NULL,
        lease_until_ms INTEGER NOT NULL
    );
    CREATE TABLE chat_services (
        service        TEXT PRIMARY KEY,
        lease_until_ms INTEGER NOT NULL
    );",
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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

/// A fresh in-memory database with every migration applied (for the statements' unit tests).
#[cfg(test)]
pub(super) fn migrated_in_memory() -> Connection {
    let mut conn = Connection::open_in_memory().expect("an in-memory database");
    migrate(&mut conn).expect("the migrations apply");
    conn
}

/// The secret that signs session cookies: generated on first start and kept, so cookies survive restarts.
pub(super) fn stored_secret(conn: &Connection) -> Result<Vec<u8>, StoreError> {
    let existing: Option<Vec<u8>> =
        conn.query_row("SELECT value FROM meta WHERE key = 'session_secret'", [], |r| r.get(0)).optional()?;
    if let Some(secret) = existing {
        return Ok(secret);
    }
    let secret: [u8; 32] = rand::random();
    conn.execute("INSERT INTO meta (key, value) VALUES ('session_secret', ?1)", [&secret[..]])?;
    Ok(secret.to_vec())
}

/// The database's epoch: drawn when the database is made and kept, so versions stay comparable across
/// restarts; a new database (or one whose `epoch` row was deleted, as after restoring a backup) gets a new one.
pub(super) fn stored_epoch(conn: &Connection) -> Result<Epoch, StoreError> {
    let existing: Option<String> =
        conn.query_row("SELECT CAST(value AS TEXT) FROM meta WHERE key = 'epoch'", [], |r| r.get(0)).optional()?;
    if let Some(text) = existing {
        return Epoch::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("stored epoch '{text}'")));
    }
    let epoch = new_store_epoch();
    conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?1)", [epoch.as_str()])?;
    tracing::info!(epoch = %epoch, "new store epoch");
    Ok(epoch)
}

/// Put the stock and prices changed at run time in place of the catalog file's.
pub(super) fn apply_stored_products(conn: &Connection, catalog: &mut Catalog) -> Result<(), StoreError> {
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
        product.price_cents = Cents(u64::try_from(price).map_err(|_| corrupt())?);
        product.revision = u64::try_from(revision).map_err(|_| corrupt())?;
        catalog.replace(product);
    }
    Ok(())
}
