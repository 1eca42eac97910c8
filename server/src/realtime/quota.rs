//! [`SocketQuota`]: how many WebSockets one session and one client address may hold open at once.
//!
//! Every open socket costs a descriptor, two buffers and a mailbox the hub walks on each delivery to its cart:
//! one session with hundreds of sockets slows every delivery to that cart, and one address with thousands
//! takes the room of everyone else. A permit is taken *before* the upgrade (the next one is refused with 429
//! and a JSON error while it is still plain HTTP) and given back when the socket's task ends, however it ends.
//!
//! IPv6 clients are counted per /64: one host is routinely given a whole /64, so counting single addresses
//! would let it open sockets without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::domain::keys::CartKey;

/// The caps and the current counts.
pub struct SocketQuota {
    per_session: usize,
    per_address: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    sessions: HashMap<CartKey, usize>,
    addresses: HashMap<IpAddr, usize>,
}

/// Which cap a refused socket hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("this session already has the most WebSockets open it may have ({0})")]
    Session(usize),
    #[error("this address already has the most WebSockets open it may have ({0})")]
    Address(usize),
}

/// One open socket's place in the counts; dropping it gives the place back.
pub struct SocketPermit {
    quota: Arc<SocketQuota>,
    session: CartKey,
    address: IpAddr,
}

impl SocketQuota {
    pub fn new(per_session: usize, per_address: usize) -> Arc<SocketQuota> {
        Arc::new(SocketQuota { per_session, per_address, open: Mutex::new(Open::default()) })
    }

    /// A place for one more socket of `session` from `peer`, or which cap it would exceed.
    pub fn try_open(self: &Arc<Self>, session: &CartKey, peer: IpAddr) -> Result<SocketPermit, QuotaExceeded> {
        let address = address_bucket(peer);
        let mut open = self.lock();
        if open.sessions.get(session).copied().unwrap_or(0) >= self.per_session {
            return Err(QuotaExceeded::Session(self.per_session));
        }
        if open.addresses.get(&address).copied().unwrap_or(0) >= self.per_address {
            return Err(QuotaExceeded::Address(self.per_address));
        }
        *open.sessions.entry(session.clone()).or_default() += 1;
        *open.addresses.entry(address).or_default() += 1;
        Ok(SocketPermit { quota: self.clone(), session: session.clone(), address })
    }

    /// Open sockets of `session` (for tests and diagnostics).
    pub fn open_for(&self, session: &CartKey) -> usize {
        self.lock().sessions.get(session).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // The counts stay consistent under a panic elsewhere (each update is one statement).
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        let mut open = self.quota.lock();
        release(&mut open.sessions, &self.session);
        release(&mut open.addresses, &self.address);
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// The address a client is counted under: IPv4 as is (also when written as IPv4-mapped IPv6), IPv6 by /64.
pub fn address_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CartKey {
        CartKey::parse(&format!("{:0>32}", n)).unwrap()
    }

    #[test]
    fn each_cap_holds_at_its_edge_and_a_closed_socket_frees_its_place() {
        let quota = SocketQuota::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = quota.try_open(&key(1), a).unwrap();
        let _second = quota.try_open(&key(1), a).unwrap();
        assert_eq!(quota.try_open(&key(1), a).err(), Some(QuotaExceeded::Session(2)));
        let _third = quota.try_open(&key(2), a).unwrap();
        assert_eq!(quota.try_open(&key(3), a).err(), Some(QuotaExceeded::Address(3)));
        drop(first);
        assert_eq!(quota.open_for(&key(1)), 1);
        assert!(quota.try_open(&key(1), a).is_ok());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let next: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_bucket(one), address_bucket(other));
        assert_ne!(address_bucket(one), address_bucket(next));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_bucket(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let quota = SocketQuota::new(10, 1);
        let _held = quota.try_open(&key(1), one).unwrap();
        assert_eq!(quota.try_open(&key(2), other).err(), Some(QuotaExceeded::Address(1)));
        assert!(quota.try_open(&key(2), next).is_ok());
    }
}
