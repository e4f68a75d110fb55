//! Who is connected: principal → its live sessions, and its persistent sessions between
//! connections ([`parked`]). A publishing session looks up the recipient here and hands the
//! envelope straight to each of the recipient's sessions through their [`SessionHandle`], or
//! queues it (QoS 1) for a parked one; there is no central router thread in the path. This
//! module knows nothing of actix: a session is whatever implements [`SessionSink`].
//!
//! A session's mailbox may be unbounded (actix's `do_send` is), so the bound is kept here: each
//! session counts the bytes handed to it and not yet written out (or, at QoS 1, not yet
//! acknowledged). A delivery that would push a session past its budget is refused and
//! counted rather than queued without limit.

pub mod parked;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;

use crate::accounting::Counts;
use crate::metrics;
use parked::{Parked, Shelf, Tally};
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
    /// Hand over what the session it took over held when it ended (its bytes already
    /// moved to the handle's budget): resent after what is waiting now.
    fn adopt(&self, parked: Parked);
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

/// Adds `size` bytes to a counter unless that would take it past `limit`.
fn take_within(counter: &AtomicUsize, size: usize, limit: usize) -> bool {
    if counter.fetch_add(size, Ordering::AcqRel) + size > limit {
        counter.fetch_sub(size, Ordering::AcqRel);
        return false;
    }
    true
}

impl Budget {
    /// Takes `size` bytes within both bounds, or takes nothing.
    fn take(&self, size: usize, session_limit: usize, total_limit: usize) -> Result<(), Over> {
        if !take_within(&self.held, size, session_limit) {
            return Err(Over::Session);
        }
        if !take_within(&self.total, size, total_limit) {
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

    /// Hands `size` bytes to a parked session: no longer this session's, still the broker's.
    pub fn relinquish(&self, size: usize) {
        self.held.fetch_sub(size, Ordering::AcqRel);
    }

    /// Takes `size` bytes a parked session held (already in the broker's total).
    pub fn adopt(&self, size: usize) {
        self.held.fetch_add(size, Ordering::AcqRel);
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
    /// Connected with Clean Start 0: what the session it took over held is handed to it.
    resumes: bool,
    /// Outlives its connection (a Session Expiry above 0): a takeover finds state to resume.
    persistent: bool,
}

impl SessionHandle {
    pub fn new(
        id: u64,
        client_id: String,
        pending: Arc<Budget>,
        sink: Box<dyn SessionSink>,
        facts: Facts,
        (resumes, persistent): (bool, bool),
    ) -> Arc<Self> {
        Arc::new(SessionHandle {
            id,
            client_id,
            facts,
            sink,
            pending,
            inbox_qos: AtomicU8::new(NOT_SUBSCRIBED),
            resumes,
            persistent,
        })
    }

    /// Granted QoS of the inbox subscription, if any.
    pub fn inbox_qos(&self) -> Option<u8> {
        Some(self.inbox_qos.load(Ordering::Relaxed)).filter(|q| *q != NOT_SUBSCRIBED)
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
    /// Nobody took it, and a parked session refused it for its principal's queue bounds.
    QueueFull,
    /// No subscribed session took it, and some for the broker-wide budget: the broker is
    /// busy, not (only) the recipient.
    BrokerBusy,
}

/// What [`Router::attach`] found for a new session.
pub struct Attached {
    /// A session with this client id existed (parked, or live and persistent) and is
    /// resumed: CONNACK's Session Present.
    pub present: bool,
    /// The parked session resumed, its bytes to be taken into the new session's budget.
    pub parked: Option<Parked>,
}

pub struct Router {
    sessions: DashMap<PrincipalId, Vec<Arc<SessionHandle>>>,
    /// Persistent sessions between connections. Locked after `sessions` whenever both are,
    /// so the two maps never wait on each other in opposite orders.
    parked: DashMap<PrincipalId, Shelf>,
    /// One principal's parked sessions together (`mqtt.offline_queue_*`).
    offline: parked::Limits,
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
    pub fn new(mqtt: &crate::config::Mqtt) -> Self {
        Router {
            sessions: DashMap::new(),
            parked: DashMap::new(),
            offline: parked::Limits {
                bytes: mqtt.offline_queue_bytes,
                messages: mqtt.offline_queue_messages,
                max_age: Duration::from_secs(mqtt.offline_queue_max_age_secs),
            },
            queue_budget: mqtt.outbound_queue_bytes,
            total_budget: mqtt.outbound_total_bytes,
            detached: AtomicUsize::new(0),
            total_held: Arc::default(),
            max_sessions: mqtt.max_sessions_per_principal,
        }
    }

    /// Registers a session that passed CONNECT, unless its principal already holds the most
    /// it may (`None`: refused). A session of the same principal with the same client id is
    /// taken over, as MQTT requires, and does not count as another; client ids are scoped
    /// per principal so one tenant cannot kick another's sessions by reusing an id. With
    /// `clean_start` off, a parked session of that client id is resumed (and one taken over
    /// hands its state over when it ends); with it on, any is discarded.
    pub fn attach(
        &self,
        principal: PrincipalId,
        link: Arc<SessionHandle>,
        clean_start: bool,
    ) -> Option<Attached> {
        let mut sessions = self.sessions.entry(principal).or_default();
        // A live session taken over has state to resume only if it outlives its connection.
        let took_over = match sessions.iter().position(|s| s.client_id == link.client_id) {
            Some(at) => {
                let old = sessions.swap_remove(at);
                old.kick(Close::TakenOver);
                old.persistent
            }
            None if sessions.len() >= self.max_sessions => return None,
            None => false,
        };
        sessions.push(link.clone());
        let (resumed, expired) = match self.parked.get_mut(&principal) {
            Some(mut shelf) => shelf.take(&link.client_id),
            None => (None, None),
        };
        self.forget_empty_shelf(principal);
        if let Some(expired) = expired {
            self.discard(expired, "session_expired");
        }
        let parked = match resumed {
            Some(parked) if clean_start => {
                self.discard(parked, "clean_start");
                None
            }
            resumed => resumed,
        };
        Some(Attached {
            present: !clean_start && (took_over || parked.is_some()),
            parked,
        })
    }

    /// Keeps a persistent session whose connection ended (its bytes relinquished by its
    /// budget, still counted in the broker's total) until it expires or is resumed: what a
    /// session that was closing when it received a takeover's state does with it.
    pub fn park(&self, principal: PrincipalId, parked: Parked) {
        self.place(principal, None, Some(parked));
    }

    /// Removes `session` from `principal`'s live sessions (a taken-over one already is not
    /// there) and, for a persistent session, parks its state in the same step, so a delivery
    /// finds the session either live or parked. If the session that took it over is live, it
    /// gets the state at once — or, having asked for a clean start, the state is discarded.
    fn place(&self, principal: PrincipalId, session: Option<u64>, parked: Option<Parked>) {
        let (mut successor, mut discarded) = (None, None);
        let mut sessions = self.sessions.get_mut(&principal);
        if let Some(sessions) = sessions.as_mut() {
            sessions.retain(|s| Some(s.id) != session);
        }
        if let Some(parked) = parked {
            let same = sessions
                .as_ref()
                .and_then(|s| s.iter().find(|l| l.client_id == parked.client_id).cloned());
            match same {
                Some(link) if link.resumes => successor = Some((link, parked)),
                Some(_) => discarded = Some((parked, "clean_start")),
                None => {
                    let mut shelf = self.parked.entry(principal).or_default();
                    let pushed_off = shelf.put(parked, self.max_sessions);
                    discarded = pushed_off.map(|p| (p, "parked_sessions_cap"));
                }
            }
        }
        let now_empty = sessions.as_ref().is_some_and(|s| s.is_empty());
        drop(sessions);
        if now_empty {
            self.sessions.remove_if(&principal, |_, s| s.is_empty());
        }
        if let Some((link, parked)) = successor {
            link.pending.adopt(parked.bytes());
            link.sink.adopt(parked);
        }
        if let Some((parked, why)) = discarded {
            self.discard(parked, why);
        }
    }

    /// Drops a parked session with what it holds, counting its envelopes under `why`.
    fn discard(&self, parked: Parked, why: &'static str) {
        self.total_held.fetch_sub(parked.bytes(), Ordering::AcqRel);
        metrics::offline_discarded(why, parked.messages());
    }

    fn forget_empty_shelf(&self, principal: PrincipalId) {
        self.parked
            .remove_if(&principal, |_, shelf| shelf.is_empty());
    }

    /// Discards the parked sessions whose expiry has passed; returns how many remain.
    pub fn expire_parked(&self) -> usize {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.parked.retain(|_, shelf| {
            gone.extend(shelf.expire(now));
            !shelf.is_empty()
        });
        for parked in gone {
            self.discard(parked, "session_expired");
        }
        self.parked.iter().map(|shelf| shelf.len()).sum()
    }

    /// Removes a session if it is still registered (a taken-over one already is not),
    /// parking `parked`, its state, if it is a persistent session.
    pub fn detach(&self, principal: PrincipalId, session_id: u64, parked: Option<Parked>) {
        self.detached.fetch_add(1, Ordering::Relaxed);
        self.place(principal, Some(session_id), parked);
    }

    /// Closes every live session of `principal` (credentials changed, access revoked) and
    /// discards its parked ones with what they hold; returns how many live ones were told.
    pub fn kick_all(&self, principal: PrincipalId, why: Close) -> usize {
        let told = self.sessions.get(&principal).map_or(0, |sessions| {
            sessions.iter().for_each(|s| s.kick(why));
            sessions.len()
        });
        if let Some((_, mut shelf)) = self.parked.remove(&principal) {
            for parked in shelf.drain() {
                self.discard(parked, why.label());
            }
        }
        told
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
    /// the publish QoS and the granted QoS, and queues it (QoS 1) for every parked one.
    pub fn deliver(&self, to: PrincipalId, payload: &Bytes, qos: u8) -> Delivery {
        let mut tally = Tally::default();
        let sessions = self.sessions.get(&to);
        for link in sessions.iter().flat_map(|s| s.iter()) {
            let granted = link.inbox_qos.load(Ordering::Relaxed);
            if granted == NOT_SUBSCRIBED {
                continue;
            }
            tally.subscribed += 1;
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
                    tally.broker_full = true;
                    continue;
                }
            }
            link.sink.deliver(payload.clone(), qos.min(granted));
            tally.taken += 1;
        }
        if qos >= 1 {
            if let Some(mut shelf) = self.parked.get_mut(&to) {
                let charge = |size: usize| {
                    let taken = take_within(&self.total_held, size, self.total_budget);
                    if !taken {
                        metrics::hot().dropped_broker_budget.increment(1);
                    }
                    taken
                };
                shelf.queue(payload, self.offline, charge, &mut tally);
            }
        }
        drop(sessions);
        match tally {
            Tally { subscribed: 0, .. } => {
                metrics::hot().no_subscriber.increment(1);
                Delivery::NoSubscriber
            }
            Tally {
                taken: 0,
                broker_full: true,
                ..
            } => Delivery::BrokerBusy,
            Tally {
                taken: 0,
                queue_full: true,
                ..
            } => {
                metrics::hot().dropped_offline_full.increment(1);
                Delivery::QueueFull
            }
            Tally { taken: 0, .. } => Delivery::Backpressure,
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
