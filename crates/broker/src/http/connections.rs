//! Who may hold the HTTP listeners' connections (`http.max_connections`, shared by every
//! address): decided when a connection is accepted, before any TLS handshake, and held for
//! its whole life by a [`Ticket`].
//!
//! Three rules keep one client, or a few, from taking the API away from everyone else:
//! - an address block holds at most `http.max_connections_per_ip`;
//! - once the listener is within an eighth of full, a block takes another connection only
//!   while it holds less than a fair share of the other seven eighths (split over the blocks
//!   holding connections), so the last connections go to newcomers, not to the blocks that
//!   already hold the most;
//! - when the listener is full, a newcomer still gets in if a block holding more connections
//!   has one idle between requests: that one is closed (as nginx reuses its idle keep-alive
//!   connections), and an HTTP client reopens an idle connection the server closed.
//!
//! An over-share connection is answered 429 on its first request while a few such answers
//! are pending; past them it is closed at once, unanswered, so that answering cannot itself
//! cost descriptors. A connection refused because the listener is full, with nothing to make
//! room, is closed at once. Trusted proxies are exempt from the per-block rules (every client
//! behind them shares their address) but count in the total. Knows nothing of actix or TLS:
//! `listener` asks and obeys.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics;
use crate::mqtt::proxy::TrustedProxies;
use crate::peers::AddressBlock;
use sealrelay_wire::Close;

/// Over-share connections answered with a 429 at once; past these they are closed.
const ANSWERED_REFUSALS: usize = 64;

pub(crate) struct ConnectionCaps {
    /// Every connection held, by address block: one lock, taken when a connection opens and
    /// closes, and scanned only when the listener is full.
    held: Arc<Mutex<Held>>,
    max: usize,
    max_per_ip: usize,
    block: AddressBlock,
    refusals: Arc<Semaphore>,
    trusted_proxies: TrustedProxies,
}

#[derive(Default)]
struct Held {
    /// The connections of each block, oldest first; a block leaves with its last one, so
    /// the map has no more entries than there are connections.
    by_block: HashMap<IpAddr, Vec<Arc<Live>>>,
    /// Connections held, all blocks together (an evicted one leaves at once, though its
    /// socket closes a moment later).
    total: usize,
}

/// One held connection as the listener and the request middleware share it.
pub(crate) struct Live {
    /// The listener's transport label, so that an eviction takes the connection out of the
    /// open-connections gauge at the moment it leaves the held count.
    transport: &'static str,
    /// Requests being served on it: only an idle connection (none) may be closed for room.
    busy: AtomicUsize,
    /// Whether a request ever came, so that a connection closed without one — headers too
    /// slow (actix answers those 408 itself, before there is a request to route) or nothing
    /// sent at all — is counted.
    requested: AtomicBool,
    /// Told when the connection is closed to make room for a block holding fewer.
    evicted: Notify,
}

impl Live {
    /// Marks a request in progress until the returned guard drops.
    pub(crate) fn serving(self: &Arc<Self>) -> Serving {
        self.requested.store(true, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }

    /// Resolves when the connection is chosen to make room.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

/// A request being served: its connection is not idle.
pub(crate) struct Serving(Arc<Live>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an accepted connection may do.
pub(crate) enum Admission {
    Admitted(Ticket),
    /// Over its block's share: answered 429 while this answer's permit is held.
    OverShare(OwnedSemaphorePermit),
    /// Closed at once: over its share past the answered refusals, or the listener full with
    /// no idle connection of a bigger block to close.
    Refused,
}

/// A connection's place among those held; gives it back when dropped (the connection's end).
pub(crate) struct Ticket {
    held: Arc<Mutex<Held>>,
    block: IpAddr,
    pub(crate) live: Arc<Live>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.live.requested.load(Ordering::Relaxed) {
            metrics::connection(self.live.transport, "closed_before_request");
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Held { by_block, total } = &mut *held;
        if let Some(lives) = by_block.get_mut(&self.block) {
            // Absent if evicted: it left the count and the gauge then.
            if let Some(at) = lives.iter().position(|l| Arc::ptr_eq(l, &self.live)) {
                lives.remove(at);
                *total -= 1;
                metrics::http_connections(self.live.transport, -1.0);
            }
            if lives.is_empty() {
                by_block.remove(&self.block);
            }
        }
    }
}

impl Held {
    /// Closes an idle connection of the block holding the most, if it holds more than
    /// `than`; whether one was.
    fn evict_idle_above(&mut self, than: usize) -> bool {
        let heaviest = self
            .by_block
            .iter_mut()
            .filter(|(_, lives)| lives.len() > than)
            .filter_map(|(_, lives)| {
                let idle = lives
                    .iter()
                    .position(|l| l.busy.load(Ordering::Relaxed) == 0)?;
                Some((lives.len(), lives, idle))
            })
            .max_by_key(|(len, _, _)| *len);
        let Some((_, lives, idle)) = heaviest else {
            return false;
        };
        let evicted = lives.remove(idle);
        evicted.evicted.notify_one();
        self.total -= 1;
        metrics::http_connections(evicted.transport, -1.0);
        true
    }
}

impl ConnectionCaps {
    pub(crate) fn new(
        max: usize,
        max_per_ip: usize,
        block: AddressBlock,
        trusted_proxies: TrustedProxies,
    ) -> ConnectionCaps {
        ConnectionCaps {
            held: Arc::default(),
            max: max.max(1),
            max_per_ip,
            block,
            refusals: Arc::new(Semaphore::new(ANSWERED_REFUSALS)),
            trusted_proxies,
        }
    }

    /// The most connections open at once: those held and the answered refusals.
    pub(crate) fn most_open(&self) -> usize {
        self.max + ANSWERED_REFUSALS
    }

    /// Decides on a connection from `peer` accepted by the `transport` listener; counted.
    pub(crate) fn admit(&self, peer: IpAddr, transport: &'static str) -> Admission {
        let block = self.block.of(peer);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.by_block.get(&block).map_or(0, Vec::len);
        if !self.trusted_proxies.trusts(peer) && self.over_share(&held, mine) {
            drop(held);
            metrics::connection(transport, Close::RefusedIpCapacity.label());
            return match self.refusals.clone().try_acquire_owned() {
                Ok(permit) => Admission::OverShare(permit),
                Err(_) => Admission::Refused,
            };
        }
        if held.total >= self.max && !held.evict_idle_above(mine + 1) {
            drop(held);
            metrics::connection(transport, Close::RefusedCapacity.label());
            return Admission::Refused;
        }
        let live = Arc::new(Live {
            transport,
            busy: AtomicUsize::new(0),
            requested: AtomicBool::new(false),
            evicted: Notify::new(),
        });
        held.by_block.entry(block).or_default().push(live.clone());
        held.total += 1;
        drop(held);
        metrics::http_connections(transport, 1.0);
        Admission::Admitted(Ticket {
            held: self.held.clone(),
            block,
            live,
        })
    }

    /// Whether a block holding `mine` connections may take no more: its own cap, or, within
    /// the last eighth of the listener, its fair share of the rest.
    fn over_share(&self, held: &Held, mine: usize) -> bool {
        if mine >= self.max_per_ip {
            return true;
        }
        let reserve = self.max / 8;
        if held.total < self.max - reserve {
            return false;
        }
        let blocks = held.by_block.len() + usize::from(mine == 0);
        mine >= ((self.max - reserve) / blocks).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn caps_of(max: usize, per_ip: usize) -> ConnectionCaps {
        ConnectionCaps::new(
            max,
            per_ip,
            AddressBlock::new(64),
            TrustedProxies::default(),
        )
    }

    fn ticket(admission: Admission) -> Ticket {
        match admission {
            Admission::Admitted(ticket) => ticket,
            Admission::OverShare(_) => panic!("over share"),
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn a_block_holds_at_most_its_share_and_gets_it_back_when_a_connection_ends() {
        let caps = caps_of(100, 2);
        let first = ticket(caps.admit(ip(1), "http"));
        let _second = ticket(caps.admit(ip(1), "http"));
        assert!(matches!(caps.admit(ip(1), "http"), Admission::OverShare(_)));
        let _other = ticket(caps.admit(ip(2), "http"));
        drop(first);
        let _again = ticket(caps.admit(ip(1), "http"));
        assert_eq!(caps.held.lock().unwrap().total, 3);
    }

    #[test]
    fn past_the_answered_refusals_an_over_share_connection_is_closed() {
        let caps = caps_of(100, 1);
        let _held = ticket(caps.admit(ip(1), "http"));
        let answered: Vec<_> = (0..ANSWERED_REFUSALS)
            .map(|_| caps.admit(ip(1), "http"))
            .collect();
        assert!(answered
            .iter()
            .all(|a| matches!(a, Admission::OverShare(_))));
        assert!(matches!(caps.admit(ip(1), "http"), Admission::Refused));
    }

    #[test]
    fn near_full_the_last_connections_go_to_blocks_holding_fewer() {
        // 16 connections: the last eighth (2) is kept for blocks under a fair share of 14.
        let caps = caps_of(16, 16);
        let mut held: Vec<_> = (0..14).map(|_| ticket(caps.admit(ip(1), "http"))).collect();
        assert!(matches!(caps.admit(ip(1), "http"), Admission::OverShare(_)));
        held.push(ticket(caps.admit(ip(2), "http")));
        // Two blocks now: a fair share is 7, and the second holds 1.
        held.push(ticket(caps.admit(ip(2), "http")));
        assert_eq!(caps.held.lock().unwrap().total, 16);
        // Full: a newcomer takes the place of an idle connection of the biggest block.
        let busy: Vec<_> = held[..13].iter().map(|t| t.live.serving()).collect();
        let newcomer = ticket(caps.admit(ip(3), "http"));
        assert_eq!(caps.held.lock().unwrap().by_block[&ip(1)].len(), 13);
        assert_eq!(caps.held.lock().unwrap().total, 16);
        // The evicted connection's ticket, dropped when its socket closes, counts nothing twice.
        drop(held.remove(13));
        assert_eq!(caps.held.lock().unwrap().total, 16);
        drop((busy, newcomer));
        assert_eq!(caps.held.lock().unwrap().total, 15);
    }

    #[test]
    fn the_open_gauge_counts_what_the_cap_counts_an_evicted_connection_leaves_it_at_once() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let open = || {
            let scrape = handle.render();
            scrape
                .lines()
                .find_map(|l| {
                    l.strip_prefix("sealrelay_http_connections_open{transport=\"http\"} ")
                })
                .map(|v| v.parse::<f64>().unwrap())
        };
        ::metrics::with_local_recorder(&recorder, || {
            let caps = caps_of(2, 2);
            let evicted = ticket(caps.admit(ip(1), "http"));
            let busy = ticket(caps.admit(ip(1), "http"));
            let _serving = busy.live.serving();
            let newcomer = ticket(caps.admit(ip(2), "http"));
            // Its socket has not closed yet, but it no longer counts against the cap.
            assert_eq!(open(), Some(2.0));
            drop(evicted);
            assert_eq!(open(), Some(2.0));
            drop(newcomer);
            assert_eq!(open(), Some(1.0));
        });
    }

    #[test]
    fn full_of_busy_connections_or_of_equal_blocks_a_newcomer_is_refused() {
        let caps = caps_of(8, 8);
        let held: Vec<_> = (0..7).map(|_| ticket(caps.admit(ip(1), "http"))).collect();
        let _last = ticket(caps.admit(ip(2), "http"));
        let busy: Vec<_> = held.iter().map(|t| t.live.serving()).collect();
        assert!(matches!(caps.admit(ip(3), "http"), Admission::Refused));
        drop(busy);
        // Idle now, but a block holding one more than the newcomer would gains nothing.
        let caps = caps_of(4, 4);
        let _singles: Vec<_> = (0..4).map(|i| ticket(caps.admit(ip(i), "http"))).collect();
        assert!(matches!(caps.admit(ip(9), "http"), Admission::Refused));
    }

    #[tokio::test]
    async fn the_evicted_connection_is_told() {
        let caps = caps_of(2, 2);
        let idle = ticket(caps.admit(ip(1), "http"));
        let busy = ticket(caps.admit(ip(1), "http"));
        let _serving = busy.live.serving();
        let _newcomer = ticket(caps.admit(ip(2), "http"));
        let told =
            tokio::time::timeout(std::time::Duration::from_millis(100), idle.live.evicted()).await;
        assert!(told.is_ok());
    }
}
