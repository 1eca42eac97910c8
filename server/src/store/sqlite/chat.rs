//! The help chat in SQLite: every conversation's messages in one table (a shopper's message `pending` until a
//! service acknowledges it, and `sent_to` the service it was handed to), which service holds which
//! conversation (`chat_owners`, with a lease) and the connected services (`chat_services`, with a lease). One
//! instance: nothing of who holds what survives a restart ([`reset`]), the messages do.

use cartwheel_core::chat::{ChatMessage, ChatSender};
use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::now_ms;
use crate::store::StoreError;

use super::queries::to_sql;

fn sender_name(from: ChatSender) -> &'static str {
    match from {
        ChatSender::Shopper => "shopper",
        ChatSender::Service => "service",
    }
}

fn row_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChatMessage> {
    let sender: String = r.get(1)?;
    Ok(ChatMessage {
        id: r.get(0)?,
        from: if sender == "service" { ChatSender::Service } else { ChatSender::Shopper },
        text: r.get(2)?,
        at: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        client_id: r.get(4)?,
    })
}

/// Start-up of the one instance: no service is connected yet, so none holds a conversation.
pub(super) fn reset(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("DELETE FROM chat_owners; DELETE FROM chat_services; UPDATE chat_messages SET sent_to = NULL;")?;
    Ok(())
}

/// Append a message (see `CartStore::chat_post`); keeps the newest `cap` answered ones of the conversation.
pub(super) fn post(
    conn: &Connection,
    key: &str,
    message: &ChatMessage,
    cap: usize,
) -> Result<(ChatMessage, bool), StoreError> {
    if let Some(client_id) = &message.client_id {
        let known = conn
            .prepare_cached(
                "SELECT id, sender, text, at_ms, client_id FROM chat_messages WHERE cart_key = ?1 AND client_id = ?2",
            )?
            .query_row(params![key, client_id], row_message)
            .optional()?;
        if let Some(known) = known {
            return Ok((known, false));
        }
    }
    let pending = message.from == ChatSender::Shopper;
    conn.prepare_cached(
        "INSERT INTO chat_messages (cart_key, id, sender, text, at_ms, client_id, pending) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        key,
        message.id,
        sender_name(message.from),
        message.text,
        to_sql(message.at),
        message.client_id,
        pending
    ])?;
    conn.prepare_cached(
        "DELETE FROM chat_messages WHERE cart_key = ?1 AND pending = 0 AND seq NOT IN \
         (SELECT seq FROM chat_messages WHERE cart_key = ?1 ORDER BY seq DESC LIMIT ?2)",
    )?
    .execute(params![key, i64::try_from(cap).unwrap_or(i64::MAX)])?;
    Ok((message.clone(), true))
}

/// The conversation, oldest first, sent within `ttl_ms`, the newest `cap`.
pub(super) fn history(conn: &Connection, key: &str, ttl_ms: u64, cap: usize) -> Result<Vec<ChatMessage>, StoreError> {
    let since = to_sql(now_ms().saturating_sub(ttl_ms));
    let mut rows = conn
        .prepare_cached(
            "SELECT id, sender, text, at_ms, client_id FROM chat_messages WHERE cart_key = ?1 AND at_ms >= ?2 \
             ORDER BY seq DESC LIMIT ?3",
        )?
        .query_map(params![key, since, i64::try_from(cap).unwrap_or(i64::MAX)], row_message)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.reverse();
    Ok(rows)
}

/// See `CartStore::chat_claim`.
pub(super) fn claim(
    conn: &Connection,
    service: &str,
    lease_ms: u64,
    take: usize,
) -> Result<Vec<(String, ChatMessage)>, StoreError> {
    let now = to_sql(now_ms());
    let until = to_sql(now_ms().saturating_add(lease_ms));
    conn.prepare_cached(
        "INSERT INTO chat_services (service, lease_until_ms) VALUES (?1, ?2) \
         ON CONFLICT (service) DO UPDATE SET lease_until_ms = ?2",
    )?
    .execute(params![service, until])?;
    conn.prepare_cached("UPDATE chat_owners SET lease_until_ms = ?2 WHERE service = ?1")?
        .execute(params![service, until])?;
    let unheld: Vec<String> = conn
        .prepare_cached(
            "SELECT m.cart_key FROM chat_messages m WHERE m.pending = 1 AND NOT EXISTS \
             (SELECT 1 FROM chat_owners o WHERE o.cart_key = m.cart_key AND o.lease_until_ms > ?1) \
             GROUP BY m.cart_key ORDER BY MIN(m.seq) LIMIT ?2",
        )?
        .query_map(params![now, i64::try_from(take).unwrap_or(i64::MAX)], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for cart in &unheld {
        conn.prepare_cached(
            "INSERT INTO chat_owners (cart_key, service, lease_until_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (cart_key) DO UPDATE SET service = ?2, lease_until_ms = ?3",
        )?
        .execute(params![cart, service, until])?;
    }
    let handed: Vec<(String, ChatMessage)> = conn
        .prepare_cached(
            "SELECT m.id, m.sender, m.text, m.at_ms, m.client_id, m.cart_key FROM chat_messages m \
             JOIN chat_owners o ON o.cart_key = m.cart_key \
             WHERE o.service = ?1 AND m.pending = 1 AND m.sent_to IS NOT ?1 ORDER BY m.seq",
        )?
        .query_map(params![service], |r| Ok((r.get(5)?, row_message(r)?)))?
        .collect::<Result<_, _>>()?;
    for (_, message) in &handed {
        conn.prepare_cached("UPDATE chat_messages SET sent_to = ?2 WHERE id = ?1")?
            .execute(params![message.id, service])?;
    }
    Ok(handed)
}

/// See `CartStore::chat_ack`.
pub(super) fn ack(conn: &Connection, service: &str, id: &str) -> Result<bool, StoreError> {
    let cart: Option<String> = conn
        .prepare_cached("SELECT cart_key FROM chat_messages WHERE id = ?1 AND pending = 1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let Some(cart) = cart else { return Ok(false) };
    conn.prepare_cached("UPDATE chat_messages SET pending = 0, sent_to = NULL WHERE id = ?1")?.execute([id])?;
    // Answered in full: the conversation is nobody's until the shopper writes again.
    conn.prepare_cached(
        "DELETE FROM chat_owners WHERE cart_key = ?1 AND service = ?2 AND NOT EXISTS \
         (SELECT 1 FROM chat_messages WHERE cart_key = ?1 AND pending = 1)",
    )?
    .execute(params![cart, service])?;
    Ok(true)
}

/// See `CartStore::chat_release`.
pub(super) fn release(conn: &Connection, service: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM chat_owners WHERE service = ?1")?.execute([service])?;
    conn.prepare_cached("UPDATE chat_messages SET sent_to = NULL WHERE sent_to = ?1")?.execute([service])?;
    conn.prepare_cached("DELETE FROM chat_services WHERE service = ?1")?.execute([service])?;
    Ok(())
}

/// Services with an unexpired lease.
pub(super) fn services(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM chat_services WHERE lease_until_ms > ?1")?
        .query_row([to_sql(now_ms())], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Delete conversations' messages older than `ttl_ms`, at most `batch` of them; answers how many went.
pub(super) fn expire(conn: &Connection, ttl_ms: u64, batch: usize) -> Result<usize, StoreError> {
    let before = to_sql(now_ms().saturating_sub(ttl_ms));
    Ok(conn
        .prepare_cached(
            "DELETE FROM chat_messages WHERE seq IN (SELECT seq FROM chat_messages WHERE at_ms < ?1 LIMIT ?2)",
        )?
        .execute(params![before, i64::try_from(batch).unwrap_or(i64::MAX)])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::schema::migrated_in_memory;

    fn message(id: &str, from: ChatSender, client: Option<&str>) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            from,
            text: format!("text of {id}"),
            at: now_ms(),
            client_id: client.map(Into::into),
        }
    }

    #[test]
    fn a_conversation_goes_to_one_service_in_order_until_answered_and_moves_when_released() {
        let conn = migrated_in_memory();
        post(&conn, "cart-a", &message("a1", ChatSender::Shopper, Some("c1")), 100).unwrap();
        post(&conn, "cart-a", &message("a2", ChatSender::Shopper, None), 100).unwrap();
        post(&conn, "cart-b", &message("b1", ChatSender::Shopper, None), 100).unwrap();
        // A retry with the same client id is the same message.
        let (again, new) = post(&conn, "cart-a", &message("a9", ChatSender::Shopper, Some("c1")), 100).unwrap();
        assert_eq!((again.id.as_str(), new), ("a1", false));

        let ids = |handed: Vec<(String, ChatMessage)>| handed.into_iter().map(|(_, m)| m.id).collect::<Vec<_>>();
        assert_eq!(ids(claim(&conn, "s1", 10_000, 1).unwrap()), ["a1", "a2"], "the oldest conversation, in order");
        assert_eq!(ids(claim(&conn, "s2", 10_000, 1).unwrap()), ["b1"], "another service takes the next one");
        assert!(claim(&conn, "s1", 10_000, 0).unwrap().is_empty(), "nothing handed twice");
        assert_eq!(services(&conn).unwrap(), 2);
        // A new message of a held conversation goes to its holder.
        post(&conn, "cart-b", &message("b2", ChatSender::Shopper, None), 100).unwrap();
        assert!(claim(&conn, "s1", 10_000, 5).unwrap().is_empty());
        assert_eq!(ids(claim(&conn, "s2", 10_000, 5).unwrap()), ["b2"]);
        // s1 answers a1 and goes away before a2: a2 goes to the next service that claims.
        assert!(ack(&conn, "s1", "a1").unwrap());
        assert!(!ack(&conn, "s1", "a1").unwrap(), "once");
        release(&conn, "s1").unwrap();
        assert_eq!(services(&conn).unwrap(), 1);
        assert_eq!(ids(claim(&conn, "s2", 10_000, 5).unwrap()), ["a2"]);
        // A service's reply is history, never waiting.
        post(&conn, "cart-a", &message("r1", ChatSender::Service, None), 100).unwrap();
        let history = history(&conn, "cart-a", 60_000, 100).unwrap();
        assert_eq!(history.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["a1", "a2", "r1"]);
        assert_eq!(history[2].from, ChatSender::Service);
    }

    #[test]
    fn an_expired_lease_frees_the_conversation_and_history_keeps_the_newest() {
        let conn = migrated_in_memory();
        post(&conn, "cart-a", &message("a1", ChatSender::Shopper, None), 100).unwrap();
        assert_eq!(claim(&conn, "dead", 0, 1).unwrap().len(), 1, "held by a lease that is already over");
        assert_eq!(claim(&conn, "alive", 10_000, 1).unwrap().len(), 1, "so another service takes it");
        for i in 0..5 {
            let id = format!("r{i}");
            post(&conn, "cart-b", &message(&id, ChatSender::Service, None), 3).unwrap();
        }
        let kept = history(&conn, "cart-b", 60_000, 100).unwrap();
        assert_eq!(kept.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["r2", "r3", "r4"]);
        assert_eq!(expire(&conn, 60_000, 500).unwrap(), 0, "nothing is a minute old");
    }
}
