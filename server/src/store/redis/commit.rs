//! The guarded commit: every change is written by one Lua script (`commit.lua`) that first checks nothing the
//! instance read has moved — same cart version, same catalog revision, Idempotency-Key still unused — and then,
//! in the same step, writes the new state and publishes the change's events on the instances' channel. Redis
//! runs a script alone, so the check, the write and the publish are one step.
//!
//! ARGV: 1 Idempotency-Key's Redis key or '', 2 expected catalog revision, 3 cart hash key or '',
//! 4 expected cart version, then operations: `hset key field value`, `set key value`, `setex key value secs`,
//! `publish channel message`. Answers `{'ok'}`, `{'conflict'}` or `{'replay', <remembered answer>}`.

use std::time::Duration;

use super::keys::CHANNEL;

pub(super) const SCRIPT: &str = include_str!("commit.lua");

/// One guarded commit under construction.
pub(super) struct Commit {
    pub idempotency: Option<String>,
    pub catalog_revision: u64,
    /// The cart hash key and the version read.
    pub cart: Option<(String, u64)>,
    pub ops: Vec<String>,
}

impl Commit {
    pub(super) fn new(catalog_revision: u64) -> Commit {
        Commit { idempotency: None, catalog_revision, cart: None, ops: Vec::new() }
    }

    pub(super) fn hset(&mut self, key: &str, field: &str, value: impl ToString) {
        self.ops.extend(["hset".into(), key.into(), field.into(), value.to_string()]);
    }

    pub(super) fn set(&mut self, key: &str, value: String) {
        self.ops.extend(["set".into(), key.into(), value]);
    }

    pub(super) fn remember(&mut self, key: String, answer: String, ttl: Duration) {
        self.ops.extend(["setex".into(), key.clone(), answer, ttl.as_secs().max(1).to_string()]);
        self.idempotency = Some(key);
    }

    pub(super) fn publish(&mut self, message: String) {
        self.ops.extend(["publish".into(), CHANNEL.into(), message]);
    }
}

/// What a commit found.
pub(super) enum Committed {
    Done,
    Conflict,
    /// The Idempotency-Key was used meanwhile: its remembered answer.
    Replay(String),
}
