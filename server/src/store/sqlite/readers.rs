//! A fixed set of read-only connections, handed out one per blocking read; WAL lets them read while the writer
//! commits.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::store::StoreError;
use crate::sync::lock;

pub(super) struct ReaderPool {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Semaphore,
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
        Ok(ReaderPool { idle: Arc::new(Mutex::new(conns)), permits: Semaphore::new(size) })
    }

    /// Run `read` on an idle connection on the blocking pool. If the caller goes away meanwhile the read
    /// still finishes and the connection goes back to the pool.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let idle = self.idle.clone();
        let conn = lock(&idle).pop().ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let result = read(&conn);
            lock(&idle).push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)
    }
}
