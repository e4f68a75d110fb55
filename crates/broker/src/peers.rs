//! Per-address connection shares: how many connections one client address holds at once on
//! the MQTT listeners (`mqtt.max_connections_per_ip`; the HTTP listeners keep theirs with
//! their fair share, in `http::connections`). An [`AddressSlot`] is held by each admitted
//! connection for its whole life and gives its place back when dropped. It knows nothing of
//! the protocols: the listeners decide how an over-share connection is answered.
//!
//! What counts as one address for every per-address budget of the broker (these shares,
//! connect rates, failed logins, registrations, prelogins, resets) is an [`AddressBlock`].

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use dashmap::DashMap;

/// How client addresses are grouped for per-address budgets (`server.ipv6_prefix_bits`). An
/// IPv4 address is one client. An IPv6 client is routinely given a whole /64 and may use any
/// address in it (privacy addresses), so counting IPv6 addresses one by one would let one
/// client multiply every budget by 2^64: IPv6 addresses count per prefix. An IPv4-mapped IPv6
/// address counts as its IPv4 address. Logs and accounting keep the full address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBlock {
    ipv6_prefix_bits: u8,
}

impl AddressBlock {
    /// `ipv6_prefix_bits` from 1 to 128 (the config checks it).
    pub fn new(ipv6_prefix_bits: u8) -> AddressBlock {
        AddressBlock { ipv6_prefix_bits }
    }

    /// The key `ip` is counted under.
    pub fn of(self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u32::from(self.ipv6_prefix_bits.clamp(1, 128));
                    let mask = u128::MAX << (128 - bits);
                    IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
                }
            },
        }
    }
}

/// Open connections per client address, under a cap.
pub struct PerAddress {
    /// Live connections per address; an address leaves the map with its last connection,
    /// so the map holds no more entries than there are connections.
    counts: Arc<DashMap<IpAddr, usize>>,
    max: usize,
    block: AddressBlock,
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
    pub fn new(max: usize, block: AddressBlock) -> PerAddress {
        PerAddress {
            counts: Arc::new(DashMap::new()),
            max,
            block,
        }
    }

    /// A place for one more connection from `ip`, or `None` when its address block holds
    /// its whole share already.
    pub fn admit(&self, ip: IpAddr) -> Option<AddressSlot> {
        let ip = self.block.of(ip);
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
        let shares = PerAddress::new(2, AddressBlock::new(64));
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
        let shares = PerAddress::new(1, AddressBlock::new(64));
        let slot = shares.admit("192.0.2.1".parse().unwrap()).unwrap();
        drop(slot);
        assert!(shares.counts.is_empty());
    }

    #[test]
    fn ipv6_addresses_count_per_prefix_and_mapped_ones_as_ipv4() {
        let block = AddressBlock::new(64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(block.of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            block.of(ip("2001:db8:1:2:ffff:1:2:3")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(block.of(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(block.of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(block.of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            AddressBlock::new(128).of(ip("2001:db8::1")),
            ip("2001:db8::1")
        );
        assert_eq!(
            AddressBlock::new(48).of(ip("2001:db8:1:2::1")),
            ip("2001:db8:1::")
        );
        let shares = PerAddress::new(1, block);
        let _held = shares.admit(ip("2001:db8::1")).unwrap();
        assert!(shares.admit(ip("2001:db8::2")).is_none(), "same /64");
        assert!(shares.admit(ip("2001:db8:0:1::2")).is_some(), "another /64");
    }
}
