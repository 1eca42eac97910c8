//! The statements a change runs, on whichever connection (the writer's savepoint or a reader). Cached: parsing
//! SQL per mutation showed up in the S4 profile.

use cartwheel_core::{CartContents, Order, Product};
use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::now_secs;
use crate::store::rules::{parse_contents, to_json};
use crate::store::StoreError;

pub(super) fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A cart's version and contents (version 0 and empty if it was never changed).
pub(super) fn read_cart(conn: &Connection, key: &str) -> Result<(u64, CartContents), StoreError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT version, contents FROM carts WHERE cart_key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        None => Ok((0, CartContents::default())),
        Some((version, contents)) => {
            let contents = parse_contents(key, &contents)?;
            let version = u64::try_from(version).map_err(|_| StoreError::Corrupt("negative version".into()))?;
            Ok((version, contents))
        }
    }
}

/// The request fingerprint and answer remembered for `idem` on this cart, if any.
pub(super) fn remembered(conn: &Connection, key: &str, idem: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT request, response FROM idempotency_keys WHERE cart_key = ?1 AND key = ?2")
        .and_then(|mut s| s.query_row(params![key, idem], |r| Ok((r.get(0)?, r.get(1)?))).optional())?)
}

pub(super) fn remember(
    conn: &Connection,
    key: &str,
    idem: &str,
    fingerprint: &str,
    answer: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (cart_key, key, request, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![key, idem, fingerprint, answer, now_secs()]))?;
    Ok(())
}

/// Forget up to `batch` idempotency keys older than `ttl_secs`; returns how many went (`batch`: maybe more are
/// due). Small batches: each runs on the writer thread, between changes.
pub(super) fn forget_idempotency_keys(conn: &Connection, ttl_secs: i64, batch: usize) -> Result<usize, StoreError> {
    let cutoff = now_secs().saturating_sub(ttl_secs);
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE rowid IN \
             (SELECT rowid FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![cutoff, limit]))?)
}

/// Keep at most `cap` idempotency keys for this cart: the newest. Returns how many older ones went.
pub(super) fn cap_idempotency_keys(conn: &Connection, key: &str, cap: usize) -> Result<usize, StoreError> {
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE cart_key = ?1 AND rowid NOT IN \
             (SELECT rowid FROM idempotency_keys WHERE cart_key = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![key, cap]))?)
}

/// Delete up to `batch` carts neither changed nor touched within `expiry_secs` (and their products' holds);
/// returns how many went.
pub(super) fn expire_carts(conn: &Connection, expiry_secs: i64, batch: usize) -> Result<usize, StoreError> {
    let cutoff = now_secs().saturating_sub(expiry_secs);
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let expired: Vec<(i64, String, String)> = conn
        .prepare_cached("SELECT rowid, cart_key, contents FROM carts WHERE updated_at < ?1 LIMIT ?2")?
        .query_map(params![cutoff, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let empty = CartContents::default();
    for (rowid, key, contents) in &expired {
        // An unreadable cart still goes; its holds cannot be counted down.
        if let Ok(contents) = parse_contents(key, contents) {
            super::holds::adjust(conn, &contents, &empty)?;
        }
        conn.prepare_cached("DELETE FROM carts WHERE rowid = ?1")?.execute([rowid])?;
    }
    Ok(expired.len())
}

/// Mark a cart as used now, so it does not expire (nothing if it does not exist).
pub(super) fn touch_cart(conn: &Connection, key: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE carts SET updated_at = ?2 WHERE cart_key = ?1")
        .and_then(|mut s| s.execute(params![key, now_secs()]))?;
    Ok(())
}

pub(super) fn write_cart(
    conn: &Connection,
    key: &str,
    version: u64,
    contents: &CartContents,
) -> Result<(), StoreError> {
    let stored = to_json(contents)?;
    conn.prepare_cached(
        "INSERT INTO carts (cart_key, version, contents, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (cart_key) DO UPDATE SET version = ?2, contents = ?3, updated_at = ?4",
    )
    .and_then(|mut s| s.execute(params![key, to_sql(version), stored, now_secs()]))?;
    Ok(())
}

pub(super) fn write_product(conn: &Connection, p: &Product) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO products (product_id, stock, price_cents, revision, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (product_id) DO UPDATE SET stock = ?2, price_cents = ?3, revision = ?4, updated_at = ?5",
    )
    .and_then(|mut s| {
        s.execute(params![p.id.as_str(), i64::from(p.stock), to_sql(p.price_cents.0), to_sql(p.revision), now_secs()])
    })?;
    Ok(())
}

pub(super) fn insert_order(conn: &Connection, key: &str, order: &Order) -> Result<(), StoreError> {
    let body = to_json(order)?;
    conn.prepare_cached("INSERT INTO orders (id, cart_key, total_cents, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| s.execute(params![order.id, key, to_sql(order.total_cents.0), body, now_secs()]))?;
    Ok(())
}

/// The body of order `id`, if `key`'s session placed it.
pub(super) fn read_order(conn: &Connection, key: &str, id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT body FROM orders WHERE id = ?1 AND cart_key = ?2")
        .and_then(|mut s| s.query_row(params![id, key], |r| r.get(0)).optional())?)
}

/// The health probe's write: one row of `meta`, overwritten each time.
pub(super) fn write_probe(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('health_probe', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
    )
    .and_then(|mut s| s.execute([now_secs()]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        super::super::schema::migrated_in_memory()
    }

    fn count(conn: &Connection, key: &str) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM idempotency_keys WHERE cart_key = ?1", [key], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_cart_keeps_its_newest_keys_up_to_the_cap_and_other_carts_are_untouched() {
        let conn = store();
        remember(&conn, "other", "k", "fp", "{}").unwrap();
        for n in 0..5 {
            remember(&conn, "cart", &format!("k{n}"), "fp", "{}").unwrap();
            cap_idempotency_keys(&conn, "cart", 3).unwrap();
        }
        assert_eq!(count(&conn, "cart"), 3);
        assert!(remembered(&conn, "cart", "k0").unwrap().is_none(), "the oldest went first");
        assert!(remembered(&conn, "cart", "k4").unwrap().is_some());
        assert_eq!(count(&conn, "other"), 1);
    }

    #[test]
    fn carts_untouched_past_the_expiry_go_in_batches_and_a_touch_keeps_one() {
        let conn = store();
        for n in 0..7 {
            write_cart(&conn, &format!("old{n}"), 3, &CartContents::default()).unwrap();
        }
        write_cart(&conn, "fresh", 1, &CartContents::default()).unwrap();
        conn.execute("UPDATE carts SET updated_at = updated_at - 1000 WHERE cart_key LIKE 'old%'", []).unwrap();
        touch_cart(&conn, "old0").unwrap();
        touch_cart(&conn, "never-made").unwrap();
        let batches: Vec<usize> = (0..3).map(|_| expire_carts(&conn, 999, 4).unwrap()).collect();
        assert_eq!(batches, [4, 2, 0]);
        assert_eq!(read_cart(&conn, "old1").unwrap().0, 0, "an expired cart is gone: version 0, empty");
        assert_eq!(read_cart(&conn, "old0").unwrap().0, 3, "the touched one stays");
        assert_eq!(read_cart(&conn, "fresh").unwrap().0, 1);
        assert_eq!(expire_carts(&conn, 1001, 10).unwrap(), 0, "nothing is older than 1001 s");
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM carts", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2, "touching a cart that does not exist made none");
    }

    #[test]
    fn expired_keys_go_in_batches_of_at_most_the_batch_size() {
        let conn = store();
        let old = now_secs() - 100;
        for n in 0..1_200 {
            conn.execute(
                "INSERT INTO idempotency_keys (cart_key, key, request, response, created_at) VALUES ('c', ?1, '', '', ?2)",
                params![format!("k{n}"), old],
            )
            .unwrap();
        }
        remember(&conn, "c", "fresh", "fp", "{}").unwrap();
        let batches: Vec<usize> = (0..4).map(|_| forget_idempotency_keys(&conn, 10, 500).unwrap()).collect();
        assert_eq!(batches, [500, 500, 200, 0]);
        assert_eq!(count(&conn, "c"), 1, "the fresh key stays");
    }
}
