//! What nodes say to each other over NATS: subjects and byte layouts, each beside its
//! constants. Subjects carry node names only; bodies carry principal ids, counts, a close
//! code and — for a delivery — the envelope exactly as the publisher sent it (sealed: no
//! node can open it). No NATS headers are used.
//!
//! Decoding returns `None` for a body of the wrong shape: it is dropped and counted, never
//! trusted in part. Std and the wire's ids only.

use bytes::{BufMut, Bytes, BytesMut};
use sealrelay_wire::{Close, Ending, PrincipalId};

use std::net::IpAddr;

use crate::rate::{Key, LoginKey};
use crate::router::parked::Moved;
use crate::router::Tally;

/// Every subject starts here.
pub const PREFIX: &str = "sr.v1";

/// News every node reads: `sr.v1.ctl.<kind>.<node>`, `<node>` the sender.
pub fn ctl(kind: &str, node: &str) -> String {
    format!("{PREFIX}.ctl.{kind}.{node}")
}

/// What every node subscribes to for news.
pub const CTL_ALL: &str = "sr.v1.ctl.>";

/// Heartbeat, every second: a 16-byte fingerprint of the prelogin key and KDF defaults,
/// which every node compares with its own.
pub const ALIVE: &str = "alive";
/// "Send me your holdings" to the node named last in the subject; empty body.
pub const WANT: &str = "want";
/// The node name in a [`WANT`] that asks every node (a starting node's first question).
pub const EVERY_NODE: &str = "all";
/// Holdings of the sender (see [`held_change`], [`held_list`]).
pub const HELD: &str = "held";
/// Principals whose directory rows the sender committed: 16-byte ids, back to back.
pub const CHANGED: &str = "changed";
/// A revocation (see [`revoked`]).
pub const REVOKED: &str = "revoked";
/// A rate-limit window counted or cleared (see [`counted`]).
pub const COUNTED: &str = "counted";
/// The sender is stopping: forget it now; empty body.
pub const BYE: &str = "bye";

/// What one node is sent: `sr.v1.node.<node>.<kind>[.<n>]`.
pub fn to_node(node: &str, kind: &str) -> String {
    format!("{PREFIX}.node.{node}.{kind}")
}

/// An envelope for a principal held on the node (see [`delivery`]); QoS 1 ones name a
/// reply subject `…<publishing node>.answer.<n>`.
pub const DELIVER: &str = "deliver";
/// An answer to a QoS 1 delivery (see [`answer`]) or a takeover (see [`state`]), `<n>`
/// the question's number.
pub const ANSWER: &str = "answer";
/// A CONNECT on the sending node for a principal held on the receiving one (see
/// [`takeover`]): the session of that client id there is taken over, its state sent back.
pub const TAKEOVER: &str = "takeover";

/// Holdings, first byte:
const HELD_CHANGE: u8 = 0;
/// the first part of a full list (replaces what the receiver knew of the sender),
const HELD_FIRST: u8 = 1;
/// a further part.
const HELD_MORE: u8 = 2;
/// Principals per part of a list: 65 KiB bodies, well under NATS's 1 MiB default.
pub const LIST_PART: usize = 4096;

/// `[0][holding: 0|1][principal: 16]`: the sender now holds (1) or no longer holds (0)
/// sessions of the principal.
pub fn held_change(principal: PrincipalId, holding: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(18);
    b.put_u8(HELD_CHANGE);
    b.put_u8(u8::from(holding));
    b.put_slice(&principal.0);
    b.freeze()
}

/// `[1 or 2][principal: 16]*`: part of the sender's full holdings, the first part `1`.
pub fn held_list(principals: &[PrincipalId], first: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + 16 * principals.len());
    b.put_u8(if first { HELD_FIRST } else { HELD_MORE });
    principals.iter().for_each(|p| b.put_slice(&p.0));
    b.freeze()
}

/// Holdings news, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    Change(PrincipalId, bool),
    List {
        principals: Vec<PrincipalId>,
        first: bool,
    },
}

pub fn read_held(body: &[u8]) -> Option<Held> {
    match body.split_first()? {
        (&HELD_CHANGE, [holding @ (0 | 1), id @ ..]) => {
            Some(Held::Change(PrincipalId::from_slice(id)?, *holding == 1))
        }
        (&(kind @ HELD_FIRST | kind @ HELD_MORE), ids) => Some(Held::List {
            principals: ids_of(ids)?,
            first: kind == HELD_FIRST,
        }),
        _ => None,
    }
}

/// 16-byte ids back to back.
pub fn ids(principals: &[PrincipalId]) -> Bytes {
    principals
        .iter()
        .flat_map(|p| p.0)
        .collect::<Vec<u8>>()
        .into()
}

pub fn ids_of(body: &[u8]) -> Option<Vec<PrincipalId>> {
    if !body.len().is_multiple_of(16) {
        return None;
    }
    body.chunks(16).map(PrincipalId::from_slice).collect()
}

/// `[close: 1][principal: 16]*`: the principals revoked and why — the close's place in
/// `Close::ALL` (append-only), one whose ending is a revocation. Not its label: two closes
/// share the label `credentials_changed` and differ in reason code.
pub fn revoked(why: Close, principals: &[PrincipalId]) -> Bytes {
    let at = Close::ALL
        .iter()
        .position(|c| *c == why)
        .unwrap_or(usize::MAX);
    let mut b = BytesMut::with_capacity(1 + 16 * principals.len());
    b.put_u8(u8::try_from(at).unwrap_or(u8::MAX));
    principals.iter().for_each(|p| b.put_slice(&p.0));
    b.freeze()
}

pub fn read_revoked(body: &[u8]) -> Option<(Close, Vec<PrincipalId>)> {
    let (&at, ids) = body.split_first()?;
    let why = *Close::ALL
        .get(usize::from(at))
        .filter(|c| c.ending() == Ending::Revoked)?;
    Some((why, ids_of(ids)?))
}

/// `[op: 0 counted, 1 cleared][kind: 1][fields]`: a rate-limit event of the sender's, for
/// every node's windows. Kinds and fields: 1 CONNECT from an address `[ip]`, 2 CONNECT as a
/// principal `[principal: 16]`, 3 registration `[ip]`, 4 prelogin `[ip]`, 5 reset try `[ip]`,
/// 6 failed login from an address `[ip]`, 7 failed login of a login from an address
/// `[login key: 16][ip]`, 8 failed login of a login `[login key: 16]`, 9 a login that
/// succeeded from an address, which trusts it `[login key: 16][ip]`; `[ip]` is `[4][4
/// bytes]` or `[6][16 bytes]`, the address's block. A login key is a keyed digest, never
/// the name.
pub fn counted(key: Key, cleared: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(36);
    b.put_u8(u8::from(cleared));
    let (kind, principal, login, address) = match key {
        Key::ConnectFrom(a) => (1, None, None, Some(a)),
        Key::ConnectAs(p) => (2, Some(p), None, None),
        Key::Registration(a) => (3, None, None, Some(a)),
        Key::Prelogin(a) => (4, None, None, Some(a)),
        Key::ResetTry(a) => (5, None, None, Some(a)),
        Key::FailureFrom(a) => (6, None, None, Some(a)),
        Key::FailureOfFrom(l, a) => (7, None, Some(l), Some(a)),
        Key::FailureOf(l) => (8, None, Some(l), None),
        Key::Trusted(l, a) => (9, None, Some(l), Some(a)),
    };
    b.put_u8(kind);
    if let Some(principal) = principal {
        b.put_slice(&principal.0);
    }
    if let Some(login) = login {
        b.put_slice(&login.0);
    }
    match address {
        Some(IpAddr::V4(v4)) => {
            b.put_u8(4);
            b.put_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            b.put_u8(6);
            b.put_slice(&v6.octets());
        }
        None => {}
    }
    b.freeze()
}

pub fn read_counted(body: &[u8]) -> Option<(Key, bool)> {
    let (&op, rest) = body.split_first()?;
    let cleared = match op {
        0 => false,
        1 => true,
        _ => return None,
    };
    let (&kind, fields) = rest.split_first()?;
    let ip = |f: &[u8]| -> Option<IpAddr> {
        match f.split_first()? {
            (4, v4) => Some(IpAddr::from(<[u8; 4]>::try_from(v4).ok()?)),
            (6, v6) => Some(IpAddr::from(<[u8; 16]>::try_from(v6).ok()?)),
            _ => None,
        }
    };
    let login = |f: &[u8]| Some(LoginKey(<[u8; 16]>::try_from(f).ok()?));
    let key = match kind {
        1 => Key::ConnectFrom(ip(fields)?),
        2 => Key::ConnectAs(PrincipalId::from_slice(fields)?),
        3 => Key::Registration(ip(fields)?),
        4 => Key::Prelogin(ip(fields)?),
        5 => Key::ResetTry(ip(fields)?),
        6 => Key::FailureFrom(ip(fields)?),
        7 => {
            let (l, a) = fields.split_at_checked(16)?;
            Key::FailureOfFrom(login(l)?, ip(a)?)
        }
        8 => Key::FailureOf(login(fields)?),
        9 => {
            let (l, a) = fields.split_at_checked(16)?;
            Key::Trusted(login(l)?, ip(a)?)
        }
        _ => return None,
    };
    Some((key, cleared))
}

/// `[qos: 1][principal: 16][envelope]`: an envelope for the principal's sessions on the
/// receiving node, already checked by the sender.
pub fn delivery(to: PrincipalId, qos: u8, envelope: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(17 + envelope.len());
    b.put_u8(qos);
    b.put_slice(&to.0);
    b.put_slice(envelope);
    b.freeze()
}

/// The bytes a delivery adds to the envelope.
pub const DELIVERY_OVERHEAD: usize = 17;

/// The recipient, QoS and envelope of a delivery (the envelope shares `body`'s memory).
pub fn read_delivery(body: &Bytes) -> Option<(PrincipalId, u8, Bytes)> {
    let qos = *body.first().filter(|q| **q <= 1)?;
    let to = PrincipalId::from_slice(body.get(1..17)?)?;
    Some((to, qos, body.slice(17..)))
}

/// `[clean start: 0|1][principal: 16][client id: UTF-8, the rest]`.
pub fn takeover(principal: PrincipalId, client_id: &str, clean_start: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(17 + client_id.len());
    b.put_u8(u8::from(clean_start));
    b.put_slice(&principal.0);
    b.put_slice(client_id.as_bytes());
    b.freeze()
}

pub fn read_takeover(body: &[u8]) -> Option<(PrincipalId, String, bool)> {
    let clean_start = match body.first()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let principal = PrincipalId::from_slice(body.get(1..17)?)?;
    let client_id = std::str::from_utf8(body.get(17..)?).ok()?.to_owned();
    Some((principal, client_id, clean_start))
}

/// No subscription, in a state's first byte.
const NO_QOS: u8 = 0xFF;

/// The bytes a state adds per envelope (a length, and a packet id or a DUP flag).
pub const STATE_PER_ENVELOPE: usize = 6;
/// The bytes of a state besides its envelopes.
pub const STATE_FIXED: usize = 14;

/// `[0]`: no session of that client id was held; or `[1][inbox QoS: 1, 0xFF none]
/// [expiry: u32 BE s][unacked: u32 BE]([packet id: u16 BE][length: u32 BE][envelope])*
/// [queued: u32 BE]([dup: 0|1][length: u32 BE][envelope])*`.
pub fn state(state: Option<&Moved>) -> Bytes {
    let Some(state) = state else {
        return Bytes::from_static(&[0]);
    };
    let size: usize = state.unacked.iter().map(|(_, p)| p.len()).sum::<usize>()
        + state.queued.iter().map(|(p, _)| p.len()).sum::<usize>();
    let count = state.unacked.len() + state.queued.len();
    let mut b = BytesMut::with_capacity(STATE_FIXED + STATE_PER_ENVELOPE * count + size);
    b.put_u8(1);
    b.put_u8(state.inbox_qos.unwrap_or(NO_QOS));
    b.put_u32(state.expiry_secs);
    b.put_u32(state.unacked.len() as u32);
    for (pkid, payload) in &state.unacked {
        b.put_u16(*pkid);
        b.put_u32(payload.len() as u32);
        b.put_slice(payload);
    }
    b.put_u32(state.queued.len() as u32);
    for (payload, dup) in &state.queued {
        b.put_u8(u8::from(*dup));
        b.put_u32(payload.len() as u32);
        b.put_slice(payload);
    }
    b.freeze()
}

/// The state in `body` (`Some(None)`: none was held); the envelopes share `body`'s memory.
pub fn read_state(body: &Bytes) -> Option<Option<Moved>> {
    let mut at: usize = 0;
    let mut take = |n: usize| -> Option<Bytes> {
        let part = body.get(at..at.checked_add(n)?)?;
        let part = body.slice_ref(part);
        at += n;
        Some(part)
    };
    let u32_of = |b: Bytes| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    match take(1)?[0] {
        0 => return Some(None),
        1 => {}
        _ => return None,
    }
    let inbox_qos = match take(1)?[0] {
        NO_QOS => None,
        qos @ 0..=2 => Some(qos),
        _ => return None,
    };
    let expiry_secs = u32_of(take(4)?);
    let mut state = Moved {
        inbox_qos,
        expiry_secs,
        ..Moved::default()
    };
    for _ in 0..u32_of(take(4)?) {
        let pkid = take(2)?;
        let len = u32_of(take(4)?) as usize;
        state
            .unacked
            .push((u16::from_be_bytes([pkid[0], pkid[1]]), take(len)?));
    }
    for _ in 0..u32_of(take(4)?) {
        let dup = match take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let len = u32_of(take(4)?) as usize;
        state.queued.push((take(len)?, dup));
    }
    (at == body.len()).then_some(Some(state))
}

/// Answer flags:
const BROKER_FULL: u8 = 1;
const QUEUE_FULL: u8 = 2;
const TOO_LARGE: u8 = 4;

/// `[subscribed: u32 BE][taken: u32 BE][flags: 1]`: what the receiving node's sessions did
/// with a QoS 1 delivery (flags: 1 broker budget full, 2 a parked queue full, 4 larger than
/// a client takes).
pub fn answer(tally: Tally) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u32(u32::try_from(tally.subscribed).unwrap_or(u32::MAX));
    b.put_u32(u32::try_from(tally.taken).unwrap_or(u32::MAX));
    b.put_u8(
        (if tally.broker_full { BROKER_FULL } else { 0 })
            | (if tally.queue_full { QUEUE_FULL } else { 0 })
            | (if tally.too_large { TOO_LARGE } else { 0 }),
    );
    b.freeze()
}

pub fn read_answer(body: &[u8]) -> Option<Tally> {
    let body: &[u8; 9] = body.try_into().ok()?;
    let count =
        |at: usize| u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let flags = body[8];
    Some(Tally {
        subscribed: count(0) as usize,
        taken: count(4) as usize,
        broker_full: flags & BROKER_FULL != 0,
        queue_full: flags & QUEUE_FULL != 0,
        too_large: flags & TOO_LARGE != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PrincipalId = PrincipalId([7; 16]);

    #[test]
    fn every_body_reads_back_as_written() {
        assert_eq!(
            read_held(&held_change(P, true)),
            Some(Held::Change(P, true))
        );
        assert_eq!(
            read_held(&held_list(&[P, P], false)),
            Some(Held::List {
                principals: vec![P, P],
                first: false
            })
        );
        assert_eq!(
            read_revoked(&revoked(Close::CredentialsChanged, &[P])),
            Some((Close::CredentialsChanged, vec![P]))
        );
        let body = delivery(P, 1, b"sealed");
        assert_eq!(
            read_delivery(&body),
            Some((P, 1, Bytes::from_static(b"sealed")))
        );
        assert_eq!(body.len(), DELIVERY_OVERHEAD + 6);
        let tally = Tally {
            subscribed: 3,
            taken: 1,
            broker_full: false,
            queue_full: true,
            too_large: true,
        };
        assert_eq!(read_answer(&answer(tally)), Some(tally));
        assert_eq!(ids_of(&ids(&[P, P])), Some(vec![P, P]));
        let v4 = IpAddr::from([192, 0, 2, 7]);
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        for key in [
            Key::ConnectFrom(v4),
            Key::ConnectAs(P),
            Key::Registration(v6),
            Key::Prelogin(v4),
            Key::ResetTry(v6),
            Key::FailureFrom(v4),
            Key::FailureOfFrom(LoginKey([3; 16]), v6),
            Key::FailureOf(LoginKey([4; 16])),
            Key::Trusted(LoginKey([5; 16]), v4),
        ] {
            for cleared in [false, true] {
                assert_eq!(read_counted(&counted(key, cleared)), Some((key, cleared)));
            }
        }
        assert_eq!(
            read_takeover(&takeover(P, "console-1", true)),
            Some((P, "console-1".to_owned(), true))
        );
        let held = Moved {
            inbox_qos: Some(1),
            expiry_secs: 3600,
            unacked: vec![(9, Bytes::from_static(b"first"))],
            queued: vec![
                (Bytes::from_static(b"second"), true),
                (Bytes::from_static(b""), false),
            ],
        };
        let body = state(Some(&held));
        assert!(
            body.len() <= STATE_FIXED + 3 * STATE_PER_ENVELOPE + 11,
            "within the size a sender trims to"
        );
        assert_eq!(read_state(&body), Some(Some(held)));
        assert_eq!(read_state(&state(None)), Some(None));
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_refused_whole() {
        assert_eq!(read_held(&[0, 2]), None);
        assert_eq!(read_held(&[1, 0, 0]), None, "not whole ids");
        assert_eq!(read_held(&[9]), None);
        assert_eq!(
            read_revoked(&revoked(Close::TakenOver, &[P])),
            None,
            "not a revocation"
        );
        assert_eq!(read_revoked(&[200]), None);
        assert_eq!(read_revoked(&[34, 1]), None, "not whole ids");
        assert_eq!(read_delivery(&Bytes::from_static(&[2; 20])), None, "QoS 2");
        assert_eq!(read_delivery(&Bytes::from_static(&[1; 5])), None);
        assert_eq!(read_answer(&[0; 8]), None);
        assert_eq!(read_takeover(&[2; 20]), None);
        assert_eq!(read_counted(&[0, 9, 4, 1, 2, 3, 4]), None, "kind 9");
        assert_eq!(read_counted(&[0, 1, 4, 1, 2, 3]), None, "a short address");
        assert_eq!(read_counted(&[2, 1, 4, 1, 2, 3, 4]), None, "op 2");
        assert_eq!(read_takeover(&[0; 10]), None);
        let mut body = state(Some(&Moved {
            queued: vec![(Bytes::from_static(b"sealed"), false)],
            ..Moved::default()
        }))
        .to_vec();
        body.pop();
        assert_eq!(read_state(&Bytes::from(body.clone())), None, "cut short");
        body.extend([b'd', b'x']);
        assert_eq!(read_state(&Bytes::from(body)), None, "trailing bytes");
        assert_eq!(read_state(&Bytes::from_static(&[1, 7])), None, "QoS 7");
    }
}
