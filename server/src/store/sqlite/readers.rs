//! A fixed set of read-only connections, handed out one per blocking read; WAL lets them read while the writer
//! commits.
//!
//! A read's permit and its connection travel together: both are taken before the read starts and both go
//! back when the blocking read ends, not when the caller stops waiting. A caller that is cancelled (its
//! client hung up) therefore cannot return a permit whose connection is still in use, which used to let the
//! next read find no idle connection and fail with "store shut down".

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::StoreError;
use crate::sync::lock;

pub(super) struct ReaderPool {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

/// A connection on loan with the permit that entitles the holder to it; dropping it returns both.
struct Loan {
    conn: Option<Connection>,
    idle: Arc<Mutex<Vec<Connection>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Loan {
    fn drop(&mut self) {
        // The connection goes back before the permit (fields drop after this body), so whoever gets the
        // permit next finds it idle.
        if let Some(conn) = self.conn.take() {
            lock(&self.idle).push(conn);
        }
    }
}

impl ReaderPool {
    pub(super) fn open(path: &Path, size: usize) -> Result<ReaderPool, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conns = (0..size)
            .map(|_| {
                let c = Connection::open_with_flags(path, flags)?;
                c.busy_timeout(Duration::from_secs(5))?;
                Ok(c)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ReaderPool { idle: Arc::new(Mutex::new(conns)), permits: Arc::new(Semaphore::new(size)) })
    }

    /// Run `read` on an idle connection on the blocking pool. If the caller goes away meanwhile the read
    /// still finishes, and only then do its connection and permit go back to the pool.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let conn = lock(&self.idle).pop().ok_or(StoreError::Closed)?;
        let loan = Loan { conn: Some(conn), idle: self.idle.clone(), _permit: permit };
        tokio::task::spawn_blocking(move || {
            let result = loan.conn.as_ref().map(read);
            drop(loan);
            result.ok_or(StoreError::Closed)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read whose caller was cancelled keeps its connection until it ends; a read started meanwhile waits
    /// for it instead of failing with "store shut down".
    #[tokio::test]
    async fn a_cancelled_read_keeps_its_permit_until_its_connection_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite3");
        drop(Connection::open(&path).unwrap());
        let pool = Arc::new(ReaderPool::open(&path, 1).unwrap());

        let (started, is_started) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move |_| {
                    let _ = started.send(());
                    let _ = released.recv();
                })
                .await
            }
        });
        is_started.await.unwrap();
        first.abort(); // the client hung up while its read runs
        assert!(first.await.unwrap_err().is_cancelled());

        let second = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|c| c.query_row("SELECT 41 + 1", [], |r| r.get::<_, i64>(0))).await }
        });
        release.send(()).unwrap();
        assert_eq!(second.await.unwrap().unwrap().unwrap(), 42);
    }
}
