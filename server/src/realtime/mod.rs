//! Getting committed changes to the shoppers' open connections: [`hub`] (this instance's fan-out and each
//! connection's bounded mailbox), [`bus`] (the Redis channel between instances and the catch-up after a lost
//! subscription), [`ws`] (one WebSocket connection) and [`wire`] (its bytes), [`chat`] (the help chat's services and desk). Both fan-outs implement the shop's
//! [`crate::shop::Fanout`].

pub mod bus;
pub mod chat;
pub mod hub;
pub mod presence;
pub mod quota;
pub mod wire;
pub mod ws;
