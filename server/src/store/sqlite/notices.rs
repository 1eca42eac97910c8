//! Stored notices in SQLite: one table for targeted (a session's inbox) and general notices (`cart_key` NULL),
//! numbered by one `AUTOINCREMENT` sequence — never reused, even after deletes — and a cursor per session: what
//! it acknowledged (`upto`) and where general notices start for it (`general_from`: just before the first one
//! sent once its token was issued, so a new shopper is not handed a week of old announcements and loses none
//! sent after its page).

use cartwheel_core::{Notice, PostedNotice};
use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::{now_ms, now_secs};
use crate::store::rules::to_json;
use crate::store::{NoticeCursor, StoreError};

use super::queries::to_sql;

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The highest sequence number given so far (0: none).
pub(super) fn last_seq(conn: &Connection) -> Result<u64, StoreError> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'notices'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(seq.map_or(0, from_sql))
}

/// Store a notice for `to` (or everyone) and keep at most `cap` of that audience, the newest.
pub(super) fn post_notice(
    conn: &Connection,
    id: &str,
    to: Option<&str>,
    notice: &Notice,
    cap: usize,
) -> Result<PostedNotice, StoreError> {
    let sent_at_ms = now_ms();
    conn.prepare_cached("INSERT INTO notices (id, cart_key, body, created_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, to, to_json(notice)?, to_sql(sent_at_ms)])?;
    let seq = from_sql(conn.last_insert_rowid());
    conn.prepare_cached(
        "DELETE FROM notices WHERE cart_key IS ?1 AND seq NOT IN \
         (SELECT seq FROM notices WHERE cart_key IS ?1 ORDER BY seq DESC LIMIT ?2)",
    )?
    .execute(params![to, i64::try_from(cap).unwrap_or(i64::MAX)])?;
    Ok(PostedNotice { id: id.to_owned(), seq, sent_at_ms, data: notice.clone() })
}

pub(super) fn cursor(conn: &Connection, key: &str) -> Result<Option<NoticeCursor>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT upto, general_from FROM notice_cursors WHERE cart_key = ?1")?
        .query_row([key], |r| Ok(NoticeCursor { upto: from_sql(r.get(0)?), general_from: from_sql(r.get(1)?) }))
        .optional()?)
}

/// The session's cursor, made if it has none — general notices from those sent at `issued_ms` on (when its
/// token was issued), or from now on when that is not known — then moved up to `ack` if given (never down,
/// never past the last notice given); returns it as it is now.
pub(super) fn open_cursor(
    conn: &Connection,
    key: &str,
    ack: Option<u64>,
    issued_ms: Option<u64>,
) -> Result<NoticeCursor, StoreError> {
    let last = to_sql(last_seq(conn)?);
    // Just before the first general notice sent at or after the issue time (none: after every one so far). The
    // first such rather than the newest older one: should the instances' clocks disagree, a notice is shown
    // once too often rather than lost.
    let from: i64 = match issued_ms {
        Some(ms) => conn
            .prepare_cached("SELECT MIN(seq) - 1 FROM notices WHERE cart_key IS NULL AND created_ms >= ?1")?
            .query_row([to_sql(ms)], |r| r.get::<_, Option<i64>>(0))?
            .unwrap_or(last),
        None => last,
    };
    conn.prepare_cached(
        "INSERT INTO notice_cursors (cart_key, upto, general_from, updated_at) VALUES (?1, 0, ?2, ?3) \
         ON CONFLICT (cart_key) DO NOTHING",
    )?
    .execute(params![key, from, now_secs()])?;
    if let Some(upto) = ack {
        conn.prepare_cached("UPDATE notice_cursors SET upto = MAX(upto, ?2), updated_at = ?3 WHERE cart_key = ?1")?
            .execute(params![key, to_sql(upto).min(last), now_secs()])?;
    }
    cursor(conn, key)?.ok_or_else(|| StoreError::Corrupt("a notice cursor just written is missing".into()))
}

/// A session renewal: its cursor lives as long as its cart.
pub(super) fn touch_cursor(conn: &Connection, key: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE notice_cursors SET updated_at = ?2 WHERE cart_key = ?1")?
        .execute(params![key, now_secs()])?;
    Ok(())
}

/// The notices for `key` after `cursor` sent within `ttl_ms`, oldest first: its own after `upto`, general
/// ones after both `upto` and `general_from`.
pub(super) fn after(
    conn: &Connection,
    key: &str,
    cursor: NoticeCursor,
    ttl_ms: u64,
    limit: usize,
) -> Result<Vec<PostedNotice>, StoreError> {
    let since = to_sql(now_ms().saturating_sub(ttl_ms));
    let general_after = to_sql(cursor.upto.max(cursor.general_from));
    let mut statement = conn.prepare_cached(
        "SELECT seq, id, body, created_ms FROM notices WHERE cart_key = ?1 AND seq > ?2 AND created_ms >= ?4 \
         UNION ALL \
         SELECT seq, id, body, created_ms FROM notices WHERE cart_key IS NULL AND seq > ?3 AND created_ms >= ?4 \
         ORDER BY seq LIMIT ?5",
    )?;
    let rows = statement.query_map(
        params![key, to_sql(cursor.upto), general_after, since, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?)),
    )?;
    let mut notices = Vec::new();
    for row in rows {
        let (seq, id, body, created) = row?;
        let data: Notice =
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("stored notice {id}: {e}")))?;
        notices.push(PostedNotice { id, seq: from_sql(seq), sent_at_ms: from_sql(created), data });
    }
    Ok(notices)
}

/// Delete up to `batch` notices older than `ttl_ms`, and up to `batch` cursors untouched for `cursor_secs`.
pub(super) fn expire(conn: &Connection, ttl_ms: u64, cursor_secs: i64, batch: usize) -> Result<usize, StoreError> {
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let notices = conn
        .prepare_cached(
            "DELETE FROM notices WHERE rowid IN (SELECT rowid FROM notices WHERE created_ms < ?1 LIMIT ?2)",
        )?
        .execute(params![to_sql(now_ms().saturating_sub(ttl_ms)), limit])?;
    let cursors = conn
        .prepare_cached(
            "DELETE FROM notice_cursors WHERE rowid IN \
             (SELECT rowid FROM notice_cursors WHERE updated_at < ?1 LIMIT ?2)",
        )?
        .execute(params![now_secs().saturating_sub(cursor_secs), limit])?;
    Ok(notices.max(cursors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        super::super::schema::migrated_in_memory()
    }

    fn notice(m: &str) -> Notice {
        Notice { kind: "k".into(), message: m.into(), product_id: None }
    }

    fn messages(list: &[PostedNotice]) -> Vec<&str> {
        list.iter().map(|n| n.data.message.as_str()).collect()
    }

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn a_session_gets_its_own_and_the_general_notices_after_its_cursor_in_order() {
        let conn = store();
        post_notice(&conn, "n1", None, &notice("before the session"), 10).unwrap();
        let fresh = open_cursor(&conn, "a", None, None).unwrap();
        assert_eq!(fresh, NoticeCursor { upto: 0, general_from: 1 });
        post_notice(&conn, "n2", Some("a"), &notice("for a"), 10).unwrap();
        post_notice(&conn, "n3", Some("b"), &notice("for b"), 10).unwrap();
        post_notice(&conn, "n4", None, &notice("for all"), 10).unwrap();
        let list = after(&conn, "a", fresh, DAY_MS, 100).unwrap();
        assert_eq!(messages(&list), ["for a", "for all"], "not b's, not the one from before the session");
        assert_eq!(list.iter().map(|n| n.seq).collect::<Vec<_>>(), [2, 4]);
        let acked = open_cursor(&conn, "a", Some(2), None).unwrap();
        assert_eq!(messages(&after(&conn, "a", acked, DAY_MS, 100).unwrap()), ["for all"]);
        assert_eq!(open_cursor(&conn, "a", Some(1), None).unwrap().upto, 2, "never down");
        assert_eq!(open_cursor(&conn, "a", Some(99), None).unwrap().upto, 4, "never past the last notice");
        assert!(after(&conn, "a", cursor(&conn, "a").unwrap().unwrap(), DAY_MS, 100).unwrap().is_empty());
    }

    #[test]
    fn a_session_first_seen_later_gets_the_general_notices_from_when_it_was_issued() {
        let conn = store();
        for id in ["g1", "g2", "g3"] {
            post_notice(&conn, id, None, &notice(id), 10).unwrap();
        }
        post_notice(&conn, "own", Some("a"), &notice("own"), 10).unwrap();
        // Sent a second apart, the last one a few seconds ago.
        let base = now_ms() - 10_000;
        let stamp = |id: &str, at: u64| {
            conn.execute("UPDATE notices SET created_ms = ?2 WHERE id = ?1", params![id, at as i64]).unwrap();
        };
        for (i, id) in ["g1", "g2", "g3"].into_iter().enumerate() {
            stamp(id, base + 1_000 * i as u64);
        }
        // Issued between g2 and g3: g3 is for it, not the two before.
        let c = open_cursor(&conn, "a", None, Some(base + 1_500)).unwrap();
        assert_eq!(c, NoticeCursor { upto: 0, general_from: 2 });
        assert_eq!(messages(&after(&conn, "a", c, DAY_MS, 100).unwrap()), ["g3", "own"]);
        // Made once: a later read with another issue time (a renewed token) does not move it.
        assert_eq!(open_cursor(&conn, "a", None, Some(0)).unwrap(), c);
        // Issued before every notice kept: all of them; after the newest: none.
        assert_eq!(open_cursor(&conn, "b", None, Some(0)).unwrap().general_from, 0);
        assert_eq!(open_cursor(&conn, "c", None, Some(base + 60_000)).unwrap().general_from, 4);
        // Times out of order (g3 stamped by an instance whose clock is behind): issued at g2, both g2 and g3
        // are for it, g3 is not lost.
        stamp("g3", base + 500);
        assert_eq!(open_cursor(&conn, "d", None, Some(base + 1_000)).unwrap().general_from, 1);
    }

    #[test]
    fn an_audience_keeps_its_newest_up_to_the_cap_and_old_ones_expire() {
        let conn = store();
        let c = open_cursor(&conn, "a", None, None).unwrap();
        for n in 0..5 {
            post_notice(&conn, &format!("t{n}"), Some("a"), &notice(&format!("t{n}")), 3).unwrap();
            post_notice(&conn, &format!("g{n}"), None, &notice(&format!("g{n}")), 2).unwrap();
        }
        assert_eq!(messages(&after(&conn, "a", c, DAY_MS, 100).unwrap()), ["t2", "t3", "g3", "t4", "g4"]);
        conn.execute("UPDATE notices SET created_ms = created_ms - ?1 WHERE id IN ('t2', 'g3')", [2 * DAY_MS as i64])
            .unwrap();
        assert_eq!(messages(&after(&conn, "a", c, DAY_MS, 100).unwrap()), ["t3", "t4", "g4"], "expired: not sent");
        assert_eq!(expire(&conn, DAY_MS, 1_000, 500).unwrap(), 2);
        let left: i64 = conn.query_row("SELECT COUNT(*) FROM notices", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 3);
        assert_eq!(last_seq(&conn).unwrap(), 10, "the sequence is not reused");
    }
}
