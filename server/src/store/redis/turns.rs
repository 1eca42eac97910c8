//! Changes to one cart made through this instance take turns, so only other instances can conflict with a
//! commit (and retries stay rare). The per-cart lock is dropped when nobody holds or waits for it, so the map
//! holds only carts with a change in flight — also when a waiter is cancelled (its client hung up): the
//! bookkeeping is a guard's `Drop`, not code after an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::CartKey;
use crate::sync::lock;

type Turn = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub(super) struct CartTurns {
    carts: Mutex<HashMap<CartKey, Turn>>,
}

/// One caller's place in a cart's queue: removes the cart's entry when the last one leaves.
struct Place<'a> {
    turns: &'a CartTurns,
    cart: &'a CartKey,
    turn: Turn,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut carts = lock(&self.turns.carts);
        // Two references: the map's and ours. Anyone else waiting cloned it under this same lock.
        if Arc::strong_count(&self.turn) == 2 {
            carts.remove(self.cart);
        }
    }
}

impl CartTurns {
    pub(super) async fn run<T>(&self, cart: &CartKey, work: impl std::future::Future<Output = T>) -> T {
        let turn = lock(&self.carts).entry(cart.clone()).or_default().clone();
        let place = Place { turns: self, cart, turn };
        let _mine = place.turn.lock().await;
        work.await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.carts).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelled_turns_leave_no_entry_behind() {
        let turns = Arc::new(CartTurns::default());
        let cart = CartKey::from_digest(&[7; 16]);
        // One holds the turn and never finishes; another waits behind it; both are cancelled.
        let (held, is_held) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::spawn({
            let (turns, cart) = (turns.clone(), cart.clone());
            async move {
                turns
                    .run(&cart, async move {
                        let _ = held.send(());
                        std::future::pending::<()>().await
                    })
                    .await
            }
        });
        is_held.await.unwrap();
        let waiter = tokio::spawn({
            let (turns, cart) = (turns.clone(), cart.clone());
            async move { turns.run(&cart, async {}).await }
        });
        tokio::task::yield_now().await;
        waiter.abort();
        holder.abort();
        assert!(holder.await.unwrap_err().is_cancelled());
        let _ = waiter.await;
        assert_eq!(turns.len(), 0, "no entry outlives its last caller");
        // And the cart still takes turns afterwards.
        assert_eq!(turns.run(&cart, async { 5 }).await, 5);
        assert_eq!(turns.len(), 0);
    }
}
