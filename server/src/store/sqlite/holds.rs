//! How many carts hold each product, kept in `product_holds` by the writer as it commits each cart change (a
//! product newly in a cart +1, gone from it −1; a checkout and an expired cart take all of theirs), so the count
//! is read, never scanned for. Counted from the carts once, when the table is new.

use std::collections::{BTreeMap, HashSet};

use cartwheel_core::{CartContents, ProductId};
use rusqlite::{Connection, OptionalExtension};

use crate::store::rules::parse_contents;
use crate::store::StoreError;

fn products(contents: &CartContents) -> HashSet<&str> {
    contents.lines.iter().map(|l| l.product_id.as_str()).collect()
}

/// A cart went from `before` to `after`: count the products it newly holds and those it let go.
pub(super) fn adjust(conn: &Connection, before: &CartContents, after: &CartContents) -> Result<(), StoreError> {
    let (was, is) = (products(before), products(after));
    for id in is.difference(&was) {
        conn.prepare_cached(
            "INSERT INTO product_holds (product_id, carts) VALUES (?1, 1) \
             ON CONFLICT (product_id) DO UPDATE SET carts = carts + 1",
        )?
        .execute([id])?;
    }
    for id in was.difference(&is) {
        conn.prepare_cached("UPDATE product_holds SET carts = MAX(carts - 1, 0) WHERE product_id = ?1")?
            .execute([id])?;
    }
    Ok(())
}

/// Carts holding each product (only products some cart holds).
pub(super) fn read(conn: &Connection) -> Result<BTreeMap<ProductId, u64>, StoreError> {
    let mut statement = conn.prepare_cached("SELECT product_id, carts FROM product_holds WHERE carts > 0")?;
    let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut holds = BTreeMap::new();
    for row in rows {
        let (id, n) = row?;
        holds.insert(ProductId(id), u64::try_from(n).unwrap_or(0));
    }
    Ok(holds)
}

/// Count the carts once, when `product_holds` was just made (a database from before it): afterwards every
/// commit keeps it.
pub(super) fn count_once(conn: &mut Connection) -> Result<(), StoreError> {
    let done: Option<i64> =
        conn.query_row("SELECT 1 FROM meta WHERE key = 'holds_counted'", [], |r| r.get(0)).optional()?;
    if done.is_some() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut carts = tx.prepare("SELECT cart_key, contents FROM carts")?;
        let rows = carts.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let empty = CartContents::default();
        for row in rows {
            let (key, text) = row?;
            adjust(&tx, &empty, &parse_contents(&key, &text)?)?;
        }
    }
    tx.execute("INSERT INTO meta (key, value) VALUES ('holds_counted', 1)", [])?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cartwheel_core::LineItem;

    fn cart(ids: &[&str]) -> CartContents {
        CartContents { lines: ids.iter().map(|id| LineItem { product_id: (*id).into(), quantity: 3 }).collect() }
    }

    #[test]
    fn each_cart_counts_once_per_product_and_letting_go_uncounts_it() {
        let conn = super::super::schema::migrated_in_memory();
        adjust(&conn, &cart(&[]), &cart(&["mug"])).unwrap();
        adjust(&conn, &cart(&[]), &cart(&["mug", "pen"])).unwrap();
        adjust(&conn, &cart(&["mug"]), &cart(&["mug"])).unwrap();
        let holds = read(&conn).unwrap();
        assert_eq!((holds.get(&"mug".into()), holds.get(&"pen".into())), (Some(&2), Some(&1)));
        adjust(&conn, &cart(&["mug", "pen"]), &cart(&[])).unwrap();
        adjust(&conn, &cart(&["pen"]), &cart(&[])).unwrap();
        assert_eq!(read(&conn).unwrap().into_iter().collect::<Vec<_>>(), [("mug".into(), 1)], "never below 0");
    }
}
