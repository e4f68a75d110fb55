//! Revocation as one event: what a directory write (or an operator's kick) ended — the
//! principals whose sessions, live and parked, must close, and why. The directory returns a
//! [`Revoked`] from every write that takes credentials or pairings away, and whoever made
//! the write publishes it once: today to this node's router (`Router::revoke`), in a cluster
//! to the other nodes too. Dropping one unpublished would leave sessions running on dead
//! credentials, so the type must be used.
//!
//! Knows only the wire's ids and close labels: neither the database nor the router.

use sealrelay_wire::{Close, Ending, PrincipalId};

/// Principals whose sessions a write ended, all for one reason.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "publish it (Router::revoke): the revoked principals' sessions are still running"]
pub struct Revoked {
    why: Close,
    principals: Vec<PrincipalId>,
}

impl Revoked {
    /// `principals` revoked for `why`, a close whose [`Ending`] is a revocation (the
    /// sessions are discarded with what they hold, not kept for a reconnect).
    pub fn new(why: Close, principals: Vec<PrincipalId>) -> Revoked {
        debug_assert_eq!(why.ending(), Ending::Revoked, "{why:?} revokes nothing");
        Revoked { why, principals }
    }

    pub fn one(why: Close, principal: PrincipalId) -> Revoked {
        Revoked::new(why, vec![principal])
    }

    pub fn why(&self) -> Close {
        self.why
    }

    pub fn principals(&self) -> &[PrincipalId] {
        &self.principals
    }
}
