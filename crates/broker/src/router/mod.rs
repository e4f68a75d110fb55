//! Who is connected: principal → its live sessions. A publishing session looks up the
//! recipient here and hands the envelope straight to each of the recipient's sessions
//! through their [`SessionHandle`]; there is no central router thread in the path. This
//! module knows nothing of actix: a session is whatever implements [`SessionSink`].
//!
//! A session's mailbox may be unbounded (actix's `do_send` is), so the bound is kept here: each
//! session counts the bytes handed to it and not yet written out (or, at QoS 1, not yet
//! acknowledged). A delivery that would push a session past its budget is refused and
//! counted rather than queued without limit.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;

use crate::accounting::Counts;
use crate::metrics;
use sealrelay_wire::{Close, PrincipalId};

/// What a session does with what the router hands it. Implemented by the session module
/// (today over an actix address); the router sees only this, so sessions can move to
/// plain tokio tasks, or to another node, without touching routing.
pub trait SessionSink: Send + Sync + 'static {
    /// Queue `payload` for the session's inbox at `qos`. Its size was already added to the
    /// handle's pending budget; the session releases it once written (or acknowledged).
    fn deliver(&self, payload: Bytes, qos: u8);
    /// Ask the session to close, telling the client `why` where the protocol allows it.
    fn kick(&self, why: Close);
}

const NOT_SUBSCRIBED: u8 = u8::MAX;

/// Bytes handed to one session and not yet written out (QoS 0) or acknowledged (QoS 1),
/// and the broker-wide sum of them, both bounded: a few slow or never-reading sessions may
/// not hold more than `mqtt.outbound_queue_bytes` each, and all of them together not more
/// than `mqtt.outbound_total_bytes`.
pub struct Budget {
    held: AtomicUsize,
    /// Shared by every session's budget: the broker's total.
    total: Arc<AtomicUsize>,
}

/// Which bound refused a delivery.
enum Over {
    Session,
    Broker,
}

impl Budget {
    /// Takes `size` bytes within both bounds, or takes nothing.
    fn take(&self, size: usize, session_limit: usize, total_limit: usize) -> Result<(), Over> {
        if self.held.fetch_add(size, Ordering::AcqRel) + size > session_limit {
            self.held.fetch_sub(size, Ordering::AcqRel);
            return Err(Over::Session);
        }
        if self.total.fetch_add(size, Ordering::AcqRel) + size > total_limit {
            self.total.fetch_sub(size, Ordering::AcqRel);
            self.held.fetch_sub(size, Ordering::AcqRel);
            return Err(Over::Broker);
        }
        Ok(())
    }

    /// Gives back `size` bytes once written (QoS 0), acknowledged (QoS 1) or dropped.
    pub fn release(&self, size: usize) {
        self.held.fetch_sub(size, Ordering::AcqRel);
        self.total.fetch_sub(size, Ordering::AcqRel);
    }
}

impl Drop for Budget {
    /// A session gone with bytes still charged (frames its writer never wrote, a writer
    /// abandoned on a socket that stopped draining) gives them back to the broker's total.
    fn drop(&mut self) {
        self.total.fetch_sub(*self.held.get_mut(), Ordering::AcqRel);
    }
}

/// What the operator may see of a live session: metadata only.
pub struct Facts {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    pub ip: IpAddr,
    /// Unix seconds.
    pub since: i64,
    pub counts: Arc<Counts>,
}

/// The router's handle on one live session.
pub struct SessionHandle {
    pub id: u64,
    pub client_id: String,
    pub facts: Facts,
    sink: Box<dyn SessionSink>,
    /// Bytes handed to this session and not yet flushed (QoS 0) or acknowledged (QoS 1);
    /// the session releases them.
    pending: Arc<Budget>,
    /// Granted QoS of the inbox subscription, or `NOT_SUBSCRIBED`.
    inbox_qos: AtomicU8,
}

impl SessionHandle {
    pub fn new(
        id: u64,
        client_id: String,
        pending: Arc<Budget>,
        sink: Box<dyn SessionSink>,
        facts: Facts,
    ) -> Arc<Self> {
        Arc::new(SessionHandle {
            id,
            client_id,
            facts,
            sink,
            pending,
            inbox_qos: AtomicU8::new(NOT_SUBSCRIBED),
        })
    }

    pub fn subscribe(&self, qos: u8) {
        self.inbox_qos.store(qos, Ordering::Relaxed);
    }

    pub fn unsubscribe(&self) {
        self.inbox_qos.store(NOT_SUBSCRIBED, Ordering::Relaxed);
    }

    pub fn kick(&self, why: Close) {
        self.sink.kick(why);
    }
}

/// Outcome of handing an envelope to a principal's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// At least one session took it.
    Delivered,
    /// The principal has no session subscribed to its inbox.
    NoSubscriber,
    /// Every subscribed session was over its byte budget.
    Backpressure,
    /// No subscribed session took it, and some for the broker-wide budget: the broker is
    /// busy, not (only) the recipient.
    BrokerBusy,
}

pub struct Router {
    sessions: DashMap<PrincipalId, Vec<Arc<SessionHandle>>>,
    queue_budget: usize,
    /// Bytes held for all sessions together (`mqtt.outbound_total_bytes`), and what they hold.
    total_budget: usize,
    total_held: Arc<AtomicUsize>,
    /// Live sessions one principal may hold (`mqtt.max_sessions_per_principal`): each is
    /// a delivery target, so without a bound one account multiplies every envelope.
    max_sessions: usize,
    /// Sessions detached since start: the memory trimmer's cue that many just ended.
    detached: AtomicUsize,
}

impl Router {
    pub fn new(queue_budget: usize, total_budget: usize, max_sessions: usize) -> Self {
        Router {
            sessions: DashMap::new(),
            queue_budget,
            total_budget,
            detached: AtomicUsize::new(0),
            total_held: Arc::default(),
            max_sessions,
        }
    }

    /// Registers a session that passed CONNECT, unless its principal already holds the most
    /// it may (`false`: refused). A session of the same principal with the same client id is
    /// taken over, as MQTT requires, and does not count as another; client ids are scoped
    /// per principal so one tenant cannot kick another's sessions by reusing an id.
    pub fn attach(&self, principal: PrincipalId, link: Arc<SessionHandle>) -> bool {
        let mut sessions = self.sessions.entry(principal).or_default();
        if let Some(at) = sessions.iter().position(|s| s.client_id == link.client_id) {
            let old = sessions.swap_remove(at);
            old.kick(Close::TakenOver);
        } else if sessions.len() >= self.max_sessions {
            return false;
        }
        sessions.push(link);
        true
    }

    /// Removes a session if it is still registered (a taken-over one already is not).
    pub fn detach(&self, principal: PrincipalId, session_id: u64) {
        self.detached.fetch_add(1, Ordering::Relaxed);
        if let dashmap::Entry::Occupied(mut entry) = self.sessions.entry(principal) {
            entry.get_mut().retain(|s| s.id != session_id);
            if entry.get().is_empty() {
                entry.remove();
            }
        }
    }

    /// Closes every live session of `principal` (credentials changed, access revoked);
    /// returns how many were told.
    pub fn kick_all(&self, principal: PrincipalId, why: Close) -> usize {
        self.sessions.get(&principal).map_or(0, |sessions| {
            sessions.iter().for_each(|s| s.kick(why));
            sessions.len()
        })
    }

    /// Every live session with its principal, for the operator: `f` sees each in turn (a
    /// shard is locked while it runs, so it must not call back into the router).
    pub fn each_session(&self, mut f: impl FnMut(PrincipalId, &SessionHandle)) {
        for entry in self.sessions.iter() {
            for session in entry.value() {
                f(*entry.key(), session);
            }
        }
    }

    /// Has `principal` at least one live session?
    pub fn is_online(&self, principal: PrincipalId) -> bool {
        self.sessions.contains_key(&principal)
    }

    /// An empty budget for a new session, counted in the broker's total.
    pub fn budget(&self) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            total: self.total_held.clone(),
        })
    }

    /// How many sessions have ended since the broker started.
    pub fn detached(&self) -> usize {
        self.detached.load(Ordering::Relaxed)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.iter().map(|e| e.value().len()).sum()
    }

    /// Hands `payload` to every session of `to` subscribed to its inbox, at the lower of
    /// the publish QoS and the granted QoS.
    pub fn deliver(&self, to: PrincipalId, payload: &Bytes, qos: u8) -> Delivery {
        let Some(sessions) = self.sessions.get(&to) else {
            metrics::hot().no_subscriber.increment(1);
            return Delivery::NoSubscriber;
        };
        let (mut subscribed, mut taken, mut broker_full) = (0, 0, false);
        for link in sessions.iter() {
            let granted = link.inbox_qos.load(Ordering::Relaxed);
            if granted == NOT_SUBSCRIBED {
                continue;
            }
            subscribed += 1;
            let size = payload.len();
            match link
                .pending
                .take(size, self.queue_budget, self.total_budget)
            {
                Ok(()) => {}
                Err(Over::Session) => {
                    metrics::hot().dropped_backpressure.increment(1);
                    continue;
                }
                Err(Over::Broker) => {
                    metrics::hot().dropped_broker_budget.increment(1);
                    broker_full = true;
                    continue;
                }
            }
            link.sink.deliver(payload.clone(), qos.min(granted));
            taken += 1;
        }
        match (subscribed, taken) {
            (0, _) => {
                metrics::hot().no_subscriber.increment(1);
                Delivery::NoSubscriber
            }
            (_, 0) if broker_full => Delivery::BrokerBusy,
            (_, 0) => Delivery::Backpressure,
            _ => Delivery::Delivered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that ends with bytes still charged (its writer aborted, its queue never
    /// written) must not shrink the broker's budget for good.
    #[test]
    fn a_dropped_budget_gives_its_bytes_back_to_the_total() {
        let total = Arc::new(AtomicUsize::new(0));
        let budget = Budget {
            held: AtomicUsize::new(0),
            total: total.clone(),
        };
        budget.take(700, 1000, 1000).ok().unwrap();
        budget.release(200);
        assert_eq!(total.load(Ordering::Acquire), 500);
        assert!(
            budget.take(600, 1000, 1000).is_err(),
            "over the session's limit"
        );
        drop(budget);
        assert_eq!(total.load(Ordering::Acquire), 0);
    }
}
