//! Per-address connection shares: how many connections one client address holds at once,
//! for the MQTT listeners (`mqtt.max_connections_per_ip`) and the HTTP ones
//! (`http.max_connections_per_ip`) alike. An [`AddressSlot`] is held by each admitted
//! connection for its whole life and gives its place back when dropped. It knows nothing of
//! the protocols: the listeners decide how an over-share connection is answered.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

/// Open connections per client address, under a cap.
pub struct PerAddress {
    /// Live connections per address; an address leaves the map with its last connection,
    /// so the map holds no more entries than there are connections.
    counts: Arc<DashMap<IpAddr, usize>>,
    max: usize,
}

/// One connection's place in its address's share.
pub struct AddressSlot {
    ip: IpAddr,
    counts: Arc<DashMap<IpAddr, usize>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut entry) = self.counts.entry(self.ip) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

impl PerAddress {
    pub fn new(max: usize) -> PerAddress {
        PerAddress {
            counts: Arc::new(DashMap::new()),
            max,
        }
    }

    /// A place for one more connection from `ip`, or `None` when the address holds its
    /// whole share already.
    pub fn admit(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut count = self.counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            ip,
            counts: self.counts.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_per_address_and_comes_back_when_a_connection_ends() {
        let shares = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = shares.admit(a).unwrap();
        let _second = shares.admit(a).unwrap();
        assert!(shares.admit(a).is_none());
        assert!(shares.admit(b).is_some());
        drop(first);
        assert!(shares.admit(a).is_some());
    }

    #[test]
    fn an_address_leaves_the_map_with_its_last_connection() {
        let shares = PerAddress::new(1);
        let slot = shares.admit("192.0.2.1".parse().unwrap()).unwrap();
        drop(slot);
        assert!(shares.counts.is_empty());
    }
}
