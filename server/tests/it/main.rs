//! The server's integration tests: one test binary (one link on a 2-core machine), each module a concern,
//! all against the real server on a loopback port — real HTTP, real WebSocket clients, SQLite in a temp dir,
//! the real binary killed with `kill -9`, and several instances sharing a real `redis-server`.

mod support;

mod api;
mod chat;
mod durability;
mod faults;
mod forms;
mod limits;
mod notices;
mod page;
mod presence;
mod proxy;
mod realtime;
mod scale_out;
mod service;
mod versions;
