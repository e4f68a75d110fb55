//! Which other nodes hold sessions (live or parked) of which principals, as their own news
//! tells this node: a list of holdings when this node asks, changes after it, a heartbeat
//! every second. A node unheard for [`SILENCE`] is forgotten with all it held, as if it had
//! stopped; if it had not, its next heartbeat makes this node ask it again.
//!
//! Pure bookkeeping over std and dashmap: no NATS, no router.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sealrelay_wire::PrincipalId;

/// How long a node may be silent before it is taken for gone: three heartbeats.
pub const SILENCE: Duration = Duration::from_secs(3);

/// A node's name on NATS: 16 hex digits drawn at start, so a restarted node is a new one.
pub type NodeId = Arc<str>;

struct Node {
    heard: Instant,
    held: HashSet<PrincipalId>,
}

/// What a piece of news about a node means for this one.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// A node already known.
    Known,
    /// A node this one did not know (new, or forgotten): ask it for its holdings.
    Unknown,
}

#[derive(Default)]
pub struct Presence {
    /// principal → the other nodes holding sessions of it: read on every publish.
    holders: DashMap<PrincipalId, Vec<NodeId>>,
    /// Every node heard from, with what it holds; written by the one task reading news.
    nodes: Mutex<HashMap<NodeId, Node>>,
}

impl Presence {
    /// The other nodes holding sessions of `principal`.
    pub fn holders(&self, principal: PrincipalId) -> Vec<NodeId> {
        self.holders
            .get(&principal)
            .map_or_else(Vec::new, |nodes| nodes.clone())
    }

    /// `node` is alive (a heartbeat, or any news from it).
    pub fn heard(&self, node: &str) -> Heard {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match nodes.get_mut(node) {
            Some(known) => {
                known.heard = Instant::now();
                Heard::Known
            }
            None => {
                nodes.insert(
                    node.into(),
                    Node {
                        heard: Instant::now(),
                        held: HashSet::new(),
                    },
                );
                Heard::Unknown
            }
        }
    }

    /// `node` now holds (or no longer holds) sessions of `principal`.
    pub fn changed(&self, node: &str, principal: PrincipalId, holding: bool) -> Heard {
        let heard = self.heard(node);
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(id) = nodes.get_key_value(node).map(|(id, _)| id.clone()) else {
            return heard;
        };
        let Some(known) = nodes.get_mut(node) else {
            return heard;
        };
        if holding {
            if known.held.insert(principal) {
                self.holders.entry(principal).or_default().push(id);
            }
        } else if known.held.remove(&principal) {
            self.release(principal, node);
        }
        heard
    }

    /// `node`'s full holdings (the first part of its list, `fresh`, replaces what it held;
    /// the following parts add to it).
    pub fn listed(&self, node: &str, principals: &[PrincipalId], fresh: bool) {
        self.heard(node);
        if fresh {
            self.forget_holdings(node);
        }
        for principal in principals {
            self.changed(node, *principal, true);
        }
    }

    /// Forgets `node` with all it held: it said goodbye, stopped answering, or this node
    /// lost its own link and must relearn everyone.
    pub fn forget(&self, node: &str) {
        self.forget_holdings(node);
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.remove(node);
    }

    /// Forgets every node.
    pub fn forget_all(&self) {
        let known: Vec<NodeId> = {
            let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            nodes.keys().cloned().collect()
        };
        for node in known {
            self.forget(&node);
        }
    }

    /// Forgets the nodes silent for longer than `silence`; returns them.
    pub fn expire(&self, silence: Duration) -> Vec<NodeId> {
        let silent: Vec<NodeId> = {
            let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            nodes
                .iter()
                .filter(|(_, n)| n.heard.elapsed() > silence)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for node in &silent {
            self.forget(node);
        }
        silent
    }

    /// How many other nodes are known.
    pub fn nodes(&self) -> usize {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn forget_holdings(&self, node: &str) {
        let held = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            match nodes.get_mut(node) {
                Some(known) => std::mem::take(&mut known.held),
                None => return,
            }
        };
        for principal in held {
            self.release(principal, node);
        }
    }

    fn release(&self, principal: PrincipalId, node: &str) {
        if let Some(mut nodes) = self.holders.get_mut(&principal) {
            nodes.retain(|n| &**n != node);
        }
        self.holders
            .remove_if(&principal, |_, nodes| nodes.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PrincipalId = PrincipalId([1; 16]);
    const Q: PrincipalId = PrincipalId([2; 16]);

    #[test]
    fn changes_and_lists_say_who_holds_whom() {
        let presence = Presence::default();
        assert_eq!(presence.heard("a"), Heard::Unknown);
        assert_eq!(presence.heard("a"), Heard::Known);
        assert_eq!(
            presence.changed("b", P, true),
            Heard::Unknown,
            "news from a stranger"
        );
        presence.changed("a", P, true);
        presence.changed("a", P, true);
        assert_eq!(presence.holders(P).len(), 2, "a and b, each once");
        presence.changed("b", P, false);
        assert_eq!(&*presence.holders(P)[0], "a");
        // A list replaces what the node held: P is gone, Q is new.
        presence.listed("a", &[Q], true);
        assert!(presence.holders(P).is_empty());
        presence.listed("a", &[P], false);
        assert_eq!(presence.holders(P).len(), 1, "a later part adds");
        assert_eq!(presence.holders(Q).len(), 1);
    }

    #[test]
    fn a_silent_or_departed_node_is_forgotten_with_its_holdings() {
        let presence = Presence::default();
        presence.changed("a", P, true);
        presence.changed("b", Q, true);
        assert!(presence.expire(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(20));
        presence.heard("b");
        let gone = presence.expire(Duration::from_millis(10));
        assert_eq!(gone.len(), 1);
        assert!(presence.holders(P).is_empty());
        assert_eq!(presence.nodes(), 1);
        presence.forget("b");
        assert!(presence.holders(Q).is_empty());
        assert_eq!(
            presence.heard("b"),
            Heard::Unknown,
            "asked again when heard"
        );
    }
}
