//! Who is connected: principal → its live sessions. A publishing session looks up the
//! recipient here and hands the envelope straight to each of the recipient's session
//! actors; there is no central router thread in the path.
//!
//! actix's `do_send` ignores mailbox capacity, so the bound is kept here instead: each
//! session counts the bytes handed to it and not yet written out (or, at QoS 1, not yet
//! acknowledged). A delivery that would push a session past its budget is refused and
//! counted rather than queued without limit.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Message, Recipient};
use bytes::Bytes;
use dashmap::DashMap;

use crate::metrics;
use crate::protocol::{PrincipalId, Reason};

/// An envelope for a session's own inbox. The payload is shared, not copied, across all
/// sessions of the recipient.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub payload: Bytes,
    pub qos: u8,
}

/// Asks a session to close with a reason code and a static label saying why (taken over,
/// credentials changed, shutting down); MQTT 5 clients get the label as Reason String.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Kick(pub Reason, pub &'static str);

const NOT_SUBSCRIBED: u8 = u8::MAX;

/// What the router knows of one live session.
pub struct SessionLink {
    pub id: u64,
    pub client_id: String,
    deliver: Recipient<Deliver>,
    kick: Recipient<Kick>,
    /// Bytes handed to this session and not yet flushed (QoS 0) or acknowledged (QoS 1);
    /// the session releases them.
    pending: Arc<AtomicUsize>,
    /// Granted QoS of the inbox subscription, or `NOT_SUBSCRIBED`.
    inbox_qos: AtomicU8,
}

impl SessionLink {
    pub fn new(
        id: u64,
        client_id: String,
        pending: Arc<AtomicUsize>,
        deliver: Recipient<Deliver>,
        kick: Recipient<Kick>,
    ) -> Arc<Self> {
        Arc::new(SessionLink {
            id,
            client_id,
            deliver,
            kick,
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

    pub fn kick(&self, kick: Kick) {
        // A full mailbox means the session is already stuck; it still sees the kick
        // when it next runs, because do_send does not drop.
        self.kick.do_send(kick);
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
}

pub struct Router {
    sessions: DashMap<PrincipalId, Vec<Arc<SessionLink>>>,
    queue_budget: usize,
}

impl Router {
    pub fn new(queue_budget: usize) -> Self {
        Router {
            sessions: DashMap::new(),
            queue_budget,
        }
    }

    /// Registers a session that passed CONNECT. A session of the same principal with the
    /// same client id is taken over, as MQTT requires; client ids are scoped per
    /// principal so one tenant cannot kick another's sessions by reusing an id.
    pub fn attach(&self, principal: PrincipalId, link: Arc<SessionLink>) {
        let mut sessions = self.sessions.entry(principal).or_default();
        if let Some(at) = sessions.iter().position(|s| s.client_id == link.client_id) {
            let old = sessions.swap_remove(at);
            old.kick(Kick(Reason::SessionTakenOver, "taken_over"));
        }
        sessions.push(link);
    }

    /// Removes a session if it is still registered (a taken-over one already is not).
    pub fn detach(&self, principal: PrincipalId, session_id: u64) {
        if let dashmap::Entry::Occupied(mut entry) = self.sessions.entry(principal) {
            entry.get_mut().retain(|s| s.id != session_id);
            if entry.get().is_empty() {
                entry.remove();
            }
        }
    }

    /// Closes every live session of `principal` (credentials changed, access revoked).
    pub fn kick_all(&self, principal: PrincipalId, kick: Kick) {
        if let Some(sessions) = self.sessions.get(&principal) {
            sessions.iter().for_each(|s| s.kick(kick));
        }
    }

    pub fn kick_everyone(&self, kick: Kick) {
        self.sessions
            .iter()
            .for_each(|entry| entry.value().iter().for_each(|s| s.kick(kick)));
    }

    /// Has `principal` at least one live session?
    pub fn is_online(&self, principal: PrincipalId) -> bool {
        self.sessions.contains_key(&principal)
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
        let (mut subscribed, mut taken) = (0, 0);
        for link in sessions.iter() {
            let granted = link.inbox_qos.load(Ordering::Relaxed);
            if granted == NOT_SUBSCRIBED {
                continue;
            }
            subscribed += 1;
            let size = payload.len();
            let before = link.pending.fetch_add(size, Ordering::AcqRel);
            if before + size > self.queue_budget {
                link.pending.fetch_sub(size, Ordering::AcqRel);
                metrics::hot().dropped_backpressure.increment(1);
                continue;
            }
            link.deliver.do_send(Deliver {
                payload: payload.clone(),
                qos: qos.min(granted),
            });
            taken += 1;
        }
        match (subscribed, taken) {
            (0, _) => {
                metrics::hot().no_subscriber.increment(1);
                Delivery::NoSubscriber
            }
            (_, 0) => Delivery::Backpressure,
            _ => Delivery::Delivered,
        }
    }
}
