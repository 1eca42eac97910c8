//! Changes to one cart made through this instance take turns, so only other instances can conflict with a
//! commit (and retries stay rare). The per-cart lock is dropped when nobody holds or waits for it, so the map
//! holds only carts with a change in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::CartKey;
use crate::sync::lock;

#[derive(Default)]
pub(super) struct CartTurns {
    carts: Mutex<HashMap<CartKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl CartTurns {
    pub(super) async fn run<T>(&self, cart: &CartKey, work: impl std::future::Future<Output = T>) -> T {
        let turn = lock(&self.carts).entry(cart.clone()).or_default().clone();
        let result = {
            let _mine = turn.lock().await;
            work.await
        };
        let mut carts = lock(&self.carts);
        // Two references: the map's and ours. Anyone else waiting cloned it under this same lock.
        if Arc::strong_count(&turn) == 2 {
            carts.remove(cart);
        }
        result
    }
}
