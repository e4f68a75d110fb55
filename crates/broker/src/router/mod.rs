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
//!
//! In a cluster the router also reaches other nodes through [`Remote`] (the cluster module
//! implements it over NATS): it says which principals this node holds sessions of, passes
//! revocations on, and hands envelopes for principals held elsewhere to those nodes, whose
//! answer ([`Routed::Later`]) decides the publisher's acknowledgement.

pub mod parked;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;

use crate::accounting::Counts;
use crate::metrics;
use crate::revocation::Revoked;
pub use parked::Tally;
use parked::{Parked, Shelf};
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

/// The other nodes of a cluster, as the router sees them.
pub trait Remote: Send + Sync + 'static {
    /// This node now holds (or no longer holds) a session, live or parked, of `principal`.
    /// Called in the order the changes happen, under the router's presence lock: it must
    /// only queue the news.
    fn held(&self, principal: PrincipalId, holding: bool);
    /// A revocation made on this node, for the others to apply.
    fn revoked(&self, revoked: &Revoked);
    /// Hands an envelope for `to` to the other nodes holding its sessions.
    fn deliver(&self, to: PrincipalId, payload: &Bytes, qos: u8) -> Elsewhere;
    /// Takes over the session `client_id` of `principal` on the other nodes holding
    /// sessions of it (`None`: none does); the answer is the state of a persistent one.
    fn take_over(
        &self,
        principal: PrincipalId,
        client_id: &str,
        clean_start: bool,
    ) -> Option<Answer<Option<parked::Moved>>>;
}

/// What this node held of a session a CONNECT on another node takes over.
pub enum HandOver {
    /// No session of that client id.
    Nothing,
    /// A live persistent one, told to close: it parks here once it has.
    Closing,
    /// A parked one, out of this node's accounts: the caller sends it on.
    Parked(Parked),
}

/// A future answer of other nodes.
pub type Answer<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What other nodes did with an envelope.
pub enum Elsewhere {
    /// No other node holds a session of the recipient.
    Nowhere,
    /// Sent at QoS 0, unanswered: counted as taken, as a local QoS 0 delivery handed to a
    /// session's writer is.
    Sent,
    /// Sent at QoS 1: what the sessions there did, once they have answered.
    Pending(Answer<Tally>),
}

/// Where an envelope went, or is going.
pub enum Routed {
    /// Every recipient session is on this node, or the envelope went out unanswered.
    Now(Delivery),
    /// Some recipient sessions are on other nodes: the outcome once they have answered.
    Later(Answer<Delivery>),
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
    /// The largest delivery the client takes (MQTT 5 Maximum Packet Size), against which
    /// [`delivery_frame`] is counted.
    max_packet: Option<u32>,
}

impl SessionHandle {
    pub fn new(
        id: u64,
        client_id: String,
        pending: Arc<Budget>,
        sink: Box<dyn SessionSink>,
        facts: Facts,
        (resumes, persistent, max_packet): (bool, bool, Option<u32>),
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
            max_packet,
        })
    }

    /// Whether the delivery of a `payload`-byte envelope is within what the client takes.
    /// One that is not would be discarded "as if sent" (MQTT-3.1.2-25); the router tells the
    /// publisher instead, and a resumed session discards what it held that is too large.
    pub fn takes(&self, payload: usize) -> bool {
        self.max_packet
            .is_none_or(|max| delivery_frame(payload) <= max as usize)
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
    /// No session took it, and some because it is larger than their clients take.
    TooLargeForRecipient,
}

/// The size of the delivery of a `payload`-byte envelope, as it counts against a client's
/// Maximum Packet Size: the payload, the inbox topic, and 16 bytes of framing (more than a
/// PUBLISH's fixed header, packet id and properties take).
fn delivery_frame(payload: usize) -> usize {
    payload + INBOX_TOPIC_LEN + 16
}

/// `sr/v1/inbox/` and 32 hex digits.
const INBOX_TOPIC_LEN: usize = sealrelay_wire::INBOX_PREFIX.len() + 32;

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
    /// Bytes parked sessions hold, broker-wide, and their share of `total_budget`
    /// (`mqtt.offline_total_bytes`): the rest of the total is live deliveries' reserve, which
    /// no amount of parked envelopes can take.
    parked_held: AtomicUsize,
    parked_share: usize,
    /// Bytes held parked per account (a user and the instances it added), and the most one
    /// account may hold (`mqtt.offline_account_bytes`): one account's many instances cannot
    /// take the whole share.
    accounts: DashMap<PrincipalId, usize>,
    account_share: usize,
    queue_budget: usize,
    /// Bytes held for all sessions together (`mqtt.outbound_total_bytes`), and what they hold.
    total_budget: usize,
    total_held: Arc<AtomicUsize>,
    /// Live sessions one principal may hold (`mqtt.max_sessions_per_principal`): each is
    /// a delivery target, so without a bound one account multiplies every envelope.
    max_sessions: usize,
    /// Sessions detached since start: the memory trimmer's cue that many just ended.
    detached: AtomicUsize,
    /// The other nodes, set once when the broker joins a cluster; unset on a single node.
    remote: OnceLock<Arc<dyn Remote>>,
    /// The principals other nodes were last told this node holds.
    announced: DashMap<PrincipalId, ()>,
    /// Orders what other nodes are told: changes of one principal's holding take it shared,
    /// a full list of holdings takes it alone, so no change is sent before a list that
    /// does not include it.
    presence: RwLock<()>,
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
            parked_held: AtomicUsize::new(0),
            parked_share: mqtt.offline_total_bytes,
            accounts: DashMap::new(),
            account_share: mqtt.offline_account_bytes,
            queue_budget: mqtt.outbound_queue_bytes,
            total_budget: mqtt.outbound_total_bytes,
            detached: AtomicUsize::new(0),
            total_held: Arc::default(),
            max_sessions: mqtt.max_sessions_per_principal,
            remote: OnceLock::new(),
            announced: DashMap::new(),
            presence: RwLock::new(()),
        }
    }

    /// Joins the router to the other nodes of a cluster (once; later calls are ignored).
    pub fn connect(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }

    /// Tells the other nodes whether this node holds `principal` now, if that changed since
    /// they were last told. Called after every change of `principal`'s sessions, holding no
    /// guard of the router's maps: under the announced entry's lock, the last caller reads
    /// the last state.
    fn touched(&self, principal: PrincipalId) {
        let Some(remote) = self.remote.get() else {
            return;
        };
        let _order = self.presence.read().unwrap_or_else(|e| e.into_inner());
        let entry = self.announced.entry(principal);
        let holding =
            self.sessions.contains_key(&principal) || self.parked.contains_key(&principal);
        match entry {
            dashmap::Entry::Vacant(vacant) if holding => {
                vacant.insert(());
                remote.held(principal, true);
            }
            dashmap::Entry::Occupied(occupied) if !holding => {
                occupied.remove();
                remote.held(principal, false);
            }
            _ => {}
        }
    }

    /// Every principal this node holds sessions of, handed to `send` with no change of
    /// holding in between: what a node that lost track of this one is sent.
    pub fn holdings(&self, send: impl FnOnce(Vec<PrincipalId>)) {
        let _alone = self.presence.write().unwrap_or_else(|e| e.into_inner());
        send(self.announced.iter().map(|e| *e.key()).collect());
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
        if let Some(resumed) = &resumed {
            // Live again: its bytes stay in the broker's total, no longer in the parked share.
            self.unpark_bytes(resumed.account, resumed.bytes());
        }
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
        drop(sessions);
        self.touched(principal);
        Some(Attached {
            present: !clean_start && (took_over || parked.is_some()),
            parked,
        })
    }

    /// Takes over what this node holds of session `client_id` of `principal` for a CONNECT
    /// on another node: a live session is closed (taken over), a parked one handed over, or
    /// discarded if the CONNECT asked for a clean start.
    pub fn hand_over(
        &self,
        principal: PrincipalId,
        client_id: &str,
        clean_start: bool,
    ) -> HandOver {
        let mut handed = HandOver::Nothing;
        if let Some(mut sessions) = self.sessions.get_mut(&principal) {
            if let Some(at) = sessions.iter().position(|s| s.client_id == client_id) {
                let old = sessions.swap_remove(at);
                old.kick(Close::TakenOver);
                if old.persistent {
                    handed = HandOver::Closing;
                }
            }
        }
        self.sessions.remove_if(&principal, |_, s| s.is_empty());
        let (resumed, expired) = match self.parked.get_mut(&principal) {
            Some(mut shelf) => shelf.take(client_id),
            None => (None, None),
        };
        self.forget_empty_shelf(principal);
        if let Some(expired) = expired {
            self.discard(expired, "session_expired");
        }
        match resumed {
            Some(parked) if clean_start => self.discard(parked, "clean_start"),
            Some(parked) => {
                // It leaves this node: neither parked nor held here any more.
                self.unpark_bytes(parked.account, parked.bytes());
                self.total_held.fetch_sub(parked.bytes(), Ordering::AcqRel);
                handed = HandOver::Parked(parked);
            }
            None => {}
        }
        self.touched(principal);
        handed
    }

    /// Whether a parked session `client_id` of `principal` is here (a session being taken
    /// over from another node parks once its connection has closed).
    pub fn holds_parked(&self, principal: PrincipalId, client_id: &str) -> bool {
        self.parked
            .get(&principal)
            .is_some_and(|shelf| shelf.holds(client_id))
    }

    /// Takes over session `client_id` of `principal` on the other nodes, if any holds it.
    pub fn take_over_elsewhere(
        &self,
        principal: PrincipalId,
        client_id: &str,
        clean_start: bool,
    ) -> Option<Answer<Option<parked::Moved>>> {
        self.remote
            .get()?
            .take_over(principal, client_id, clean_start)
    }

    /// Takes in a session moved here from another node: its bytes join this node's total,
    /// less its newest envelopes past the room left (discarded and counted `broker_budget`).
    pub fn arrived(&self, mut parked: Parked) -> Parked {
        let room = self
            .total_budget
            .saturating_sub(self.total_held.load(Ordering::Acquire));
        let (_, dropped) = parked.trim_to(room);
        metrics::offline_discarded("broker_budget", dropped);
        self.total_held.fetch_add(parked.bytes(), Ordering::AcqRel);
        parked
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
                    let parked = self.within_shares(parked);
                    self.park_bytes(parked.account, parked.bytes());
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
        self.touched(principal);
    }

    /// Drops a parked session with what it holds, counting its envelopes under `why`.
    fn discard(&self, parked: Parked, why: &'static str) {
        self.discard_envelopes(parked.account, parked.bytes(), parked.messages(), why);
    }

    /// Gives back what `messages` parked envelopes of `account` held (`bytes`), counting
    /// them under `why`.
    fn discard_envelopes(
        &self,
        account: PrincipalId,
        bytes: usize,
        messages: usize,
        why: &'static str,
    ) {
        self.total_held.fetch_sub(bytes, Ordering::AcqRel);
        self.unpark_bytes(account, bytes);
        metrics::offline_discarded(why, messages);
    }

    /// A session about to be parked, less its newest envelopes past what its account and the
    /// parked share have room for (what a live session held when it ended is not yet parked
    /// bytes, and parking may not take live deliveries' reserve): those are discarded and
    /// counted under `offline_share`.
    fn within_shares(&self, mut parked: Parked) -> Parked {
        let account = self.accounts.get(&parked.account).map_or(0, |held| *held);
        let room = self.account_share.saturating_sub(account).min(
            self.parked_share
                .saturating_sub(self.parked_held.load(Ordering::Acquire)),
        );
        let (freed, dropped) = parked.trim_to(room);
        if dropped > 0 {
            self.total_held.fetch_sub(freed, Ordering::AcqRel);
            metrics::offline_discarded("offline_share", dropped);
        }
        parked
    }

    /// Counts `bytes` as parked, for `account` and broker-wide.
    fn park_bytes(&self, account: PrincipalId, bytes: usize) {
        self.parked_held.fetch_add(bytes, Ordering::AcqRel);
        *self.accounts.entry(account).or_default() += bytes;
    }

    /// Counts `bytes` as no longer parked.
    fn unpark_bytes(&self, account: PrincipalId, bytes: usize) {
        self.parked_held.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(mut held) = self.accounts.get_mut(&account) {
            *held = held.saturating_sub(bytes);
        }
        self.accounts.remove_if(&account, |_, held| *held == 0);
    }

    /// Takes `size` bytes for an envelope queued for a parked session of `account`: within
    /// the account's share, the parked share and the broker's total, or not at all.
    fn charge_parked(&self, account: PrincipalId, size: usize) -> Result<(), parked::Refused> {
        {
            let mut held = self.accounts.entry(account).or_default();
            if *held + size > self.account_share {
                return Err(parked::Refused::Account);
            }
            *held += size;
        }
        let refund = |router: &Router| {
            if let Some(mut held) = router.accounts.get_mut(&account) {
                *held -= size;
            }
        };
        if !take_within(&self.parked_held, size, self.parked_share) {
            refund(self);
            return Err(parked::Refused::Broker);
        }
        if !take_within(&self.total_held, size, self.total_budget) {
            self.parked_held.fetch_sub(size, Ordering::AcqRel);
            refund(self);
            return Err(parked::Refused::Broker);
        }
        Ok(())
    }

    fn forget_empty_shelf(&self, principal: PrincipalId) {
        self.parked
            .remove_if(&principal, |_, shelf| shelf.is_empty());
    }

    /// Envelope bytes held now: (queued for live sessions, parked with persistent ones).
    pub fn held_bytes(&self) -> (usize, usize) {
        let parked = self.parked_held.load(Ordering::Acquire);
        let total = self.total_held.load(Ordering::Acquire);
        (total.saturating_sub(parked), parked)
    }

    /// Persistent sessions parked here now.
    pub fn parked_sessions(&self) -> usize {
        self.parked.iter().map(|shelf| shelf.len()).sum()
    }

    /// Discards the parked sessions whose expiry has passed, and the envelopes that waited
    /// longer than `mqtt.offline_queue_max_age_secs`; returns how many sessions remain.
    pub fn expire_parked(&self) -> usize {
        let now = Instant::now();
        let before = now.checked_sub(self.offline.max_age);
        let (mut gone, mut aged, mut emptied) = (Vec::new(), Vec::new(), Vec::new());
        self.parked.retain(|principal, shelf| {
            gone.extend(shelf.expire(now));
            if let Some(before) = before {
                aged.extend(shelf.age_out(before));
            }
            if shelf.is_empty() {
                emptied.push(*principal);
            }
            !shelf.is_empty()
        });
        for principal in emptied {
            self.touched(principal);
        }
        for parked in gone {
            self.discard(parked, "session_expired");
        }
        for (account, bytes, messages) in aged {
            self.discard_envelopes(account, bytes, messages, "aged_out");
        }
        self.parked_sessions()
    }

    /// Removes a session if it is still registered (a taken-over one already is not),
    /// parking `parked`, its state, if it is a persistent session.
    pub fn detach(&self, principal: PrincipalId, session_id: u64, parked: Option<Parked>) {
        self.detached.fetch_add(1, Ordering::Relaxed);
        self.place(principal, Some(session_id), parked);
    }

    /// Publishes a revocation to every node: every live session of each revoked principal
    /// is closed and its parked ones are discarded with what they hold; returns how many
    /// live ones on this node were told.
    pub fn revoke(&self, revoked: Revoked) -> usize {
        if let Some(remote) = self.remote.get() {
            remote.revoked(&revoked);
        }
        self.revoke_here(revoked)
    }

    /// Applies a revocation on this node only: one another node made and published.
    pub fn revoke_here(&self, revoked: Revoked) -> usize {
        let why = revoked.why();
        revoked
            .principals()
            .iter()
            .map(|principal| self.kick_all(*principal, why))
            .sum()
    }

    fn kick_all(&self, principal: PrincipalId, why: Close) -> usize {
        let told = self.sessions.get(&principal).map_or(0, |sessions| {
            sessions.iter().for_each(|s| s.kick(why));
            sessions.len()
        });
        if let Some((_, mut shelf)) = self.parked.remove(&principal) {
            for parked in shelf.drain() {
                self.discard(parked, why.label());
            }
        }
        self.touched(principal);
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

    /// Hands `payload` to every session of `to`, on this node and on the others holding
    /// some (already checked by this node: they deliver without asking again).
    pub fn route(&self, to: PrincipalId, payload: &Bytes, qos: u8) -> Routed {
        let here = self.deliver_here(to, payload, qos);
        let elsewhere = match self.remote.get() {
            Some(remote) => remote.deliver(to, payload, qos),
            None => Elsewhere::Nowhere,
        };
        match elsewhere {
            Elsewhere::Nowhere => Routed::Now(outcome(here)),
            Elsewhere::Sent => Routed::Now(outcome(here.merge(Tally {
                subscribed: 1,
                taken: 1,
                ..Tally::default()
            }))),
            Elsewhere::Pending(there) => {
                Routed::Later(Box::pin(async move { outcome(here.merge(there.await)) }))
            }
        }
    }

    /// Hands `payload` to every session of `to` on this node subscribed to its inbox, at
    /// the lower of the publish QoS and the granted QoS, and queues it (QoS 1) for every
    /// parked one.
    pub fn deliver_here(&self, to: PrincipalId, payload: &Bytes, qos: u8) -> Tally {
        let mut tally = Tally::default();
        let sessions = self.sessions.get(&to);
        for link in sessions.iter().flat_map(|s| s.iter()) {
            let granted = link.inbox_qos.load(Ordering::Relaxed);
            if granted == NOT_SUBSCRIBED {
                continue;
            }
            tally.subscribed += 1;
            let size = payload.len();
            if !link.takes(size) {
                metrics::refused("client_max_packet");
                tally.too_large = true;
                continue;
            }
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
                let charge = |account, size| {
                    let charged = self.charge_parked(account, size);
                    if charged == Err(parked::Refused::Broker) {
                        metrics::hot().dropped_broker_budget.increment(1);
                    }
                    charged
                };
                shelf.queue(payload, self.offline, charge, &mut tally);
            }
        }
        drop(sessions);
        tally
    }
}

/// The publisher's answer for what every recipient session did, counted once.
fn outcome(tally: Tally) -> Delivery {
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
            too_large: true,
            ..
        } => Delivery::TooLargeForRecipient,
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

    /// One account's parked sessions hold at most its share, all parked sessions at most
    /// theirs, and what a session parks with is trimmed to the room left.
    #[test]
    fn parked_bytes_are_bounded_per_account_and_broker_wide() {
        let mqtt = crate::config::Mqtt {
            outbound_total_bytes: 100,
            offline_total_bytes: 50,
            offline_account_bytes: 30,
            offline_queue_bytes: 20,
            ..crate::config::Config::default().mqtt
        };
        let router = Router::new(&mqtt);
        let (account_a, account_b) = (PrincipalId([0xA; 16]), PrincipalId([0xB; 16]));
        let park = |principal: PrincipalId, account, queued: &[&'static [u8]]| {
            let waiting = queued.iter().map(|q| (Bytes::from_static(q), false));
            // Its bytes are in the broker's total already, as a live session's would be.
            let held: usize = queued.iter().map(|q| q.len()).sum();
            router.total_held.fetch_add(held, Ordering::AcqRel);
            let parked = Parked::new(
                "c".into(),
                account,
                Some(1),
                Vec::new(),
                waiting,
                Duration::from_secs(60),
            );
            router.park(principal, parked);
        };
        let (a1, a2, b1, b2, b3) = (
            PrincipalId([1; 16]),
            PrincipalId([2; 16]),
            PrincipalId([3; 16]),
            PrincipalId([4; 16]),
            PrincipalId([5; 16]),
        );
        for (principal, account) in [
            (a1, account_a),
            (a2, account_a),
            (b1, account_b),
            (b2, account_b),
        ] {
            park(principal, account, &[]);
        }
        let ten = Bytes::from_static(&[0; 10]);
        for _ in 0..2 {
            assert_eq!(
                outcome(router.deliver_here(a1, &ten, 1)),
                Delivery::Delivered
            );
        }
        assert_eq!(
            outcome(router.deliver_here(a2, &ten, 1)),
            Delivery::Delivered
        );
        assert_eq!(
            outcome(router.deliver_here(a2, &ten, 1)),
            Delivery::QueueFull,
            "account A holds 30"
        );
        assert_eq!(
            outcome(router.deliver_here(b1, &ten, 1)),
            Delivery::Delivered
        );
        assert_eq!(
            outcome(router.deliver_here(b2, &ten, 1)),
            Delivery::Delivered
        );
        assert_eq!(
            outcome(router.deliver_here(b2, &ten, 1)),
            Delivery::BrokerBusy,
            "parked hold 50"
        );
        assert_eq!(router.parked_held.load(Ordering::Acquire), 50);
        // A session parking with 20 bytes finds no room: its newest go.
        park(b3, account_b, &[b"0123456789", b"abcdefghij"]);
        assert_eq!(router.parked_held.load(Ordering::Acquire), 50);
        assert_eq!(router.total_held.load(Ordering::Acquire), 50);
        // Discarding gives everything back.
        let _ = router.revoke(Revoked::new(Close::KickedByOperator, vec![a1, a2]));
        assert_eq!(router.parked_held.load(Ordering::Acquire), 20);
        assert!(router.accounts.get(&account_a).is_none());
        assert_eq!(
            outcome(router.deliver_here(b2, &ten, 1)),
            Delivery::Delivered,
            "room again"
        );
    }
}
