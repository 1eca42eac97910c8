//! Presence: every interval, this instance reports its sessions with an open connection and reads the counts
//! (shoppers online on every instance, carts holding each product) through the shop, and hands what changed to
//! every connection here as one `PRESENCE` frame — so each connection gets at most one per interval, however
//! much happens (written by this task to every idle socket: see [`super::hub`]). A new connection gets all the
//! counts at once ([`PresenceBoard::current`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cartwheel_core::presence::Presence;
use tokio_util::sync::CancellationToken;

use super::hub::{CartHub, Frame};
use crate::shop::Shop;
use crate::sync::lock;

/// The counts as last read, for connections that open between two reads.
#[derive(Default)]
pub struct PresenceBoard {
    current: Mutex<Presence>,
}

impl PresenceBoard {
    /// The counts as last read (all zero before the first read).
    pub fn current(&self) -> Presence {
        lock(&self.current).clone()
    }
}

/// How often presence is read and pushed, and how long one report of this instance's sessions counts.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTiming {
    pub interval: Duration,
    pub ttl: Duration,
}

/// Read and push presence every interval until `shutdown`. A failed read (Redis down) is skipped: the counts
/// stay as they were and the next interval tries again.
pub async fn run(
    board: Arc<PresenceBoard>,
    shop: Shop,
    hub: Arc<CartHub>,
    timing: PresenceTiming,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(timing.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let sessions = hub.subscriptions();
        let read = match shop.presence(&sessions, timing.ttl).await {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(error = %e, "presence not read this time");
                continue;
            }
        };
        let (changes, all) = {
            let mut current = lock(&board.current);
            // Whole counts (sent to a connection that missed a change) name the products gone to 0.
            let next = read.with_gone_as_zero(&current);
            let changes = next.changes_since(&current);
            let all = changes.is_some().then(|| Frame::presence(&next));
            *current = next;
            (changes, all)
        };
        if let (Some(changes), Some(all)) = (changes, all) {
            published += 1;
            hub.publish_presence(Frame::presence(&changes), all, published);
        }
    }
}
