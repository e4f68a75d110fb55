//! Persistent sessions between connections (MQTT 3.1.1 Clean Session 0; MQTT 5 Clean Start 0
//! with a Session Expiry Interval): each keeps its inbox subscription and the QoS 1 envelopes
//! for it until it expires, is resumed, or is discarded. In memory only: the broker's disk
//! holds metadata, never an envelope, so a restart loses these and a client learns it from
//! Session Present = 0. One principal's parked sessions together are bounded
//! (`mqtt.offline_queue_bytes`, `…_messages`): a publish past a bound is refused, never
//! dropped; an envelope that waited past `mqtt.offline_queue_max_age_secs` is discarded and
//! counted. This module knows nothing of live sessions or actix; the router
//! charges what one account's parked sessions hold together, the parked share of the
//! broker's budget and the broker-wide total, and counts what is discarded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sealrelay_wire::PrincipalId;

/// A persistent session whose connection ended.
pub struct Parked {
    pub client_id: String,
    /// The account (a user, with the instances it added) whose parked bytes these count
    /// toward.
    pub account: PrincipalId,
    /// Granted QoS of the inbox subscription, if it had one.
    pub inbox_qos: Option<u8>,
    /// Written on the last connection and not acknowledged, in the order written: resent
    /// first on resumption, with DUP and their packet ids.
    pub unacked: Vec<(u16, Bytes)>,
    /// Not yet written, in the order they came.
    pub queued: VecDeque<Queued>,
    /// How long the session outlives its connection.
    pub expiry: Duration,
    expires_at: Instant,
    /// Bytes of `unacked` and `queued` together, kept as they grow: the principal's bound
    /// is checked on every publish to it, which must not sum its whole queue each time.
    bytes: usize,
}

/// A parked session's state on its way between nodes: what [`Parked::new`] takes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub inbox_qos: Option<u8>,
    pub expiry_secs: u32,
    /// Written and unacknowledged: packet id and envelope.
    pub unacked: Vec<(u16, Bytes)>,
    /// Not yet written: envelope and whether it was written before.
    pub queued: Vec<(Bytes, bool)>,
}

/// An envelope waiting for a parked session.
pub struct Queued {
    pub payload: Bytes,
    /// Written once already, on a connection that ended before acknowledging it.
    pub dup: bool,
    since: Instant,
}

/// One principal's parked sessions together may hold no more than this.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub bytes: usize,
    pub messages: usize,
    /// How long an envelope waits for a parked session at most: the router's sweep discards
    /// older ones (`aged_out`), so what a session holds drains on its own clock whatever its
    /// expiry.
    pub max_age: Duration,
}

/// Which bound a charge for a parked envelope met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The recipient's account holds what it may parked: the sender hears the recipient's
    /// queue is full.
    Account,
    /// Parked sessions together hold their share of the broker, or the broker its total.
    Broker,
}

/// What the sessions offered an envelope did with it: on this node, or (merged) on every
/// node holding the recipient's sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Sessions subscribed at a QoS that takes it.
    pub subscribed: usize,
    pub taken: usize,
    /// Some refused for the broker-wide byte budget.
    pub broker_full: bool,
    /// Some parked session refused for its principal's bounds.
    pub queue_full: bool,
    /// Some live session's client takes no packet this large.
    pub too_large: bool,
}

impl Tally {
    /// What sessions on two sets of nodes did together.
    pub fn merge(self, other: Tally) -> Tally {
        Tally {
            subscribed: self.subscribed + other.subscribed,
            taken: self.taken + other.taken,
            broker_full: self.broker_full || other.broker_full,
            queue_full: self.queue_full || other.queue_full,
            too_large: self.too_large || other.too_large,
        }
    }
}

impl Parked {
    /// `waiting` are the envelopes not yet written, each with whether it was written before.
    pub fn new(
        client_id: String,
        account: PrincipalId,
        inbox_qos: Option<u8>,
        unacked: Vec<(u16, Bytes)>,
        waiting: impl IntoIterator<Item = (Bytes, bool)>,
        expiry: Duration,
    ) -> Parked {
        let now = Instant::now();
        let queued: VecDeque<Queued> = waiting
            .into_iter()
            .map(|(payload, dup)| Queued {
                payload,
                dup,
                since: now,
            })
            .collect();
        let bytes = unacked.iter().map(|(_, p)| p.len()).sum::<usize>()
            + queued.iter().map(|q| q.payload.len()).sum::<usize>();
        Parked {
            client_id,
            account,
            inbox_qos,
            unacked,
            queued,
            expiry,
            expires_at: now + expiry,
            bytes,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn messages(&self) -> usize {
        self.unacked.len() + self.queued.len()
    }

    /// Drops the newest envelopes until at most `bytes` are held; returns how many bytes
    /// and envelopes went.
    pub fn trim_to(&mut self, bytes: usize) -> (usize, usize) {
        let (mut freed, mut dropped) = (0, 0);
        while self.bytes > bytes {
            let size = match self.queued.pop_back() {
                Some(q) => q.payload.len(),
                None => match self.unacked.pop() {
                    Some((_, payload)) => payload.len(),
                    None => break,
                },
            };
            self.bytes -= size;
            freed += size;
            dropped += 1;
        }
        (freed, dropped)
    }

    /// What moves to another node when a CONNECT there takes this session over.
    pub fn moved(self) -> Moved {
        Moved {
            inbox_qos: self.inbox_qos,
            expiry_secs: u32::try_from(self.expiry.as_secs()).unwrap_or(u32::MAX),
            unacked: self.unacked,
            queued: self
                .queued
                .into_iter()
                .map(|q| (q.payload, q.dup))
                .collect(),
        }
    }

    /// A session moved here from another node, for `client_id` of `account`.
    pub fn arrived(moved: Moved, client_id: String, account: PrincipalId) -> Parked {
        Parked::new(
            client_id,
            account,
            moved.inbox_qos,
            moved.unacked,
            moved.queued,
            Duration::from_secs(u64::from(moved.expiry_secs)),
        )
    }

    /// Takes in what `later` (the same session, parked again after a takeover, or found on
    /// another node) holds: its unacknowledged envelopes as redeliveries, then its queue;
    /// its subscription and expiry.
    pub fn absorb(&mut self, later: Parked) {
        let now = Instant::now();
        self.bytes += later.bytes;
        self.queued
            .extend(later.unacked.into_iter().map(|(_, payload)| Queued {
                payload,
                dup: true,
                since: now,
            }));
        self.queued.extend(later.queued);
        self.inbox_qos = later.inbox_qos;
        self.expiry = later.expiry;
        self.expires_at = later.expires_at;
    }

    fn takes_qos1(&self) -> bool {
        self.inbox_qos.is_some_and(|q| q >= 1)
    }
}

/// One principal's parked sessions.
#[derive(Default)]
pub struct Shelf {
    sessions: Vec<Parked>,
}

impl Shelf {
    /// Queues `payload` (QoS 1) for every parked session subscribed at QoS 1, within
    /// `limits` for all of them together; `charge` takes the bytes for the session's
    /// account, from the parked share and the broker's total, or says which bound refused.
    pub fn queue(
        &mut self,
        payload: &Bytes,
        limits: Limits,
        mut charge: impl FnMut(PrincipalId, usize) -> Result<(), Refused>,
        tally: &mut Tally,
    ) {
        let now = Instant::now();
        let mut bytes: usize = self.sessions.iter().map(Parked::bytes).sum();
        let mut messages: usize = self.sessions.iter().map(Parked::messages).sum();
        for parked in &mut self.sessions {
            if !parked.takes_qos1() || now >= parked.expires_at {
                continue;
            }
            tally.subscribed += 1;
            let size = payload.len();
            if bytes + size > limits.bytes || messages + 1 > limits.messages {
                tally.queue_full = true;
                continue;
            }
            match charge(parked.account, size) {
                Ok(()) => {}
                Err(Refused::Account) => {
                    tally.queue_full = true;
                    continue;
                }
                Err(Refused::Broker) => {
                    tally.broker_full = true;
                    continue;
                }
            }
            parked.queued.push_back(Queued {
                payload: payload.clone(),
                dup: false,
                since: now,
            });
            parked.bytes += size;
            (bytes, messages) = (bytes + size, messages + 1);
            tally.taken += 1;
        }
    }

    /// Whether the parked session `client_id` is here.
    pub fn holds(&self, client_id: &str) -> bool {
        self.sessions.iter().any(|p| p.client_id == client_id)
    }

    /// The parked session `client_id`, taken off the shelf; an expired one is returned as
    /// discarded instead.
    pub fn take(&mut self, client_id: &str) -> (Option<Parked>, Option<Parked>) {
        let Some(at) = self.sessions.iter().position(|p| p.client_id == client_id) else {
            return (None, None);
        };
        let parked = self.sessions.swap_remove(at);
        if Instant::now() >= parked.expires_at {
            (None, Some(parked))
        } else {
            (Some(parked), None)
        }
    }

    /// Shelves `parked`, merged into the same session's entry if one is there; returns
    /// the session pushed off to keep at most `cap` (the oldest to expire).
    pub fn put(&mut self, parked: Parked, cap: usize) -> Option<Parked> {
        if let Some(same) = self
            .sessions
            .iter_mut()
            .find(|p| p.client_id == parked.client_id)
        {
            same.absorb(parked);
            return None;
        }
        self.sessions.push(parked);
        if self.sessions.len() <= cap {
            return None;
        }
        let first = (0..self.sessions.len()).min_by_key(|&i| self.sessions[i].expires_at)?;
        Some(self.sessions.swap_remove(first))
    }

    /// Discards the waiting envelopes queued before `before`; returns, per session that lost
    /// some, its account, the bytes and the number of envelopes.
    pub fn age_out(&mut self, before: Instant) -> Vec<(PrincipalId, usize, usize)> {
        let mut aged = Vec::new();
        for parked in &mut self.sessions {
            let (count, held) = (parked.queued.len(), parked.bytes);
            parked.queued.retain(|q| {
                let keep = q.since >= before;
                if !keep {
                    parked.bytes -= q.payload.len();
                }
                keep
            });
            if parked.queued.len() < count {
                aged.push((
                    parked.account,
                    held - parked.bytes,
                    count - parked.queued.len(),
                ));
            }
        }
        aged
    }

    /// Takes off the sessions whose expiry has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<Parked> {
        let (gone, kept) = std::mem::take(&mut self.sessions)
            .into_iter()
            .partition(|p| now >= p.expires_at);
        self.sessions = kept;
        gone
    }

    pub fn drain(&mut self) -> Vec<Parked> {
        std::mem::take(&mut self.sessions)
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: PrincipalId = PrincipalId([1; 16]);

    const LIMITS: Limits = Limits {
        bytes: 10,
        messages: 3,
        max_age: Duration::from_secs(60),
    };

    fn parked(id: &str, qos: Option<u8>) -> Parked {
        Parked::new(
            id.into(),
            ACCOUNT,
            qos,
            Vec::new(),
            [],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_principals_queues_together_refuse_past_their_bounds() {
        let mut shelf = Shelf::default();
        shelf.put(parked("a", Some(1)), 8);
        shelf.put(parked("b", Some(1)), 8);
        shelf.put(parked("zero", Some(0)), 8);
        let mut tally = Tally::default();
        shelf.queue(
            &Bytes::from_static(b"1234"),
            LIMITS,
            |_, _| Ok(()),
            &mut tally,
        );
        assert_eq!(
            (tally.subscribed, tally.taken, tally.queue_full),
            (2, 2, false)
        );
        // 8 bytes and 2 messages held: another 4 bytes fit neither session.
        let mut tally = Tally::default();
        shelf.queue(
            &Bytes::from_static(b"1234"),
            LIMITS,
            |_, _| Ok(()),
            &mut tally,
        );
        assert_eq!((tally.taken, tally.queue_full), (0, true));
        let mut tally = Tally::default();
        let broker = |_, _| Err(Refused::Broker);
        shelf.queue(&Bytes::from_static(b"1"), LIMITS, broker, &mut tally);
        assert!(tally.broker_full && !tally.queue_full && tally.taken == 0);
        let mut tally = Tally::default();
        let account = |a, _| {
            if a == ACCOUNT {
                Err(Refused::Account)
            } else {
                Ok(())
            }
        };
        shelf.queue(&Bytes::from_static(b"1"), LIMITS, account, &mut tally);
        assert!(tally.queue_full && !tally.broker_full && tally.taken == 0);
    }

    #[test]
    fn a_session_parked_again_is_merged_and_the_cap_pushes_off_the_soonest_to_expire() {
        let mut shelf = Shelf::default();
        let first = Parked::new(
            "a".into(),
            ACCOUNT,
            Some(1),
            vec![(7, Bytes::from_static(b"x"))],
            [(Bytes::from_static(b"y"), false)],
            Duration::from_secs(60),
        );
        shelf.put(first, 2);
        let again = Parked::new(
            "a".into(),
            ACCOUNT,
            Some(1),
            vec![(1, Bytes::from_static(b"z"))],
            [],
            Duration::from_secs(90),
        );
        assert!(shelf.put(again, 2).is_none());
        let (merged, _) = shelf.take("a");
        let merged = merged.unwrap();
        assert_eq!(merged.bytes(), 3, "x, y and z");
        assert_eq!(merged.unacked, vec![(7, Bytes::from_static(b"x"))]);
        let queued: Vec<_> = merged
            .queued
            .iter()
            .map(|q| (&q.payload[..], q.dup))
            .collect();
        assert_eq!(queued, vec![(&b"y"[..], false), (&b"z"[..], true)]);
        shelf.put(parked("short", Some(1)), 2);
        shelf.put(merged, 2);
        let pushed = shelf.put(parked("late", Some(1)), 2).unwrap();
        assert_eq!(pushed.client_id, "short");
    }

    #[test]
    fn an_expired_session_is_not_resumed() {
        let mut shelf = Shelf::default();
        shelf.put(
            Parked::new("a".into(), ACCOUNT, Some(1), Vec::new(), [], Duration::ZERO),
            8,
        );
        let (resumed, expired) = shelf.take("a");
        assert!(resumed.is_none() && expired.is_some());
    }

    #[test]
    fn trimming_drops_the_newest_first() {
        let mut parked = Parked::new(
            "a".into(),
            ACCOUNT,
            Some(1),
            vec![(1, Bytes::from_static(b"aaaa"))],
            [
                (Bytes::from_static(b"bb"), false),
                (Bytes::from_static(b"ccc"), false),
            ],
            Duration::from_secs(60),
        );
        assert_eq!(parked.trim_to(6), (3, 1), "ccc goes");
        assert_eq!(parked.trim_to(0), (6, 2), "then bb, then aaaa");
        assert_eq!((parked.bytes(), parked.messages()), (0, 0));
    }

    #[test]
    fn envelopes_older_than_the_age_are_discarded_and_the_rest_kept() {
        let mut shelf = Shelf::default();
        shelf.put(parked("a", Some(1)), 8);
        let mut tally = Tally::default();
        shelf.queue(
            &Bytes::from_static(b"old"),
            LIMITS,
            |_, _| Ok(()),
            &mut tally,
        );
        let between = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        shelf.queue(
            &Bytes::from_static(b"new!"),
            LIMITS,
            |_, _| Ok(()),
            &mut tally,
        );
        assert_eq!(shelf.age_out(between), vec![(ACCOUNT, 3, 1)]);
        assert!(shelf.age_out(between).is_empty(), "once");
        let (kept, _) = shelf.take("a");
        let kept = kept.unwrap();
        assert_eq!((kept.bytes(), kept.messages()), (4, 1));
    }
}
