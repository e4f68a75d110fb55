//! Argon2id parameters as they travel in the JSON API, and the bounds every client holds
//! them to. The wire only carries parameters; clients run the KDF, the broker checks a
//! registration against its own minimum and against the clients' ceiling.
//!
//! The bounds live here, in the crate both sides share, because a server is not trusted to
//! choose them: prelogin tells a client which parameters to derive its login secret with,
//! and a lying server that advertised `m = 8 KiB, t = 1` would receive a secret one cheap
//! Argon2 call from the password (an offline guessing attack at millions of tries a
//! second), while one that advertised terabytes would make the client exhaust its memory.

use serde::{Deserialize, Serialize};

use crate::b64;

/// Argon2id cost parameters, stored per account and returned by prelogin. The broker only
/// stores and checks them against its minimum; clients run the KDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB (Argon2id m).
    pub memory_kib: u32,
    /// Passes (Argon2id t).
    pub iterations: u32,
    /// Lanes (Argon2id p).
    pub parallelism: u32,
}

/// The weakest parameters a client derives a password's keys with, whatever a server asks
/// (OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane). Protocol §2.1.
pub const CLIENT_FLOOR: KdfParams = KdfParams {
    memory_kib: 19_456,
    iterations: 2,
    parallelism: 1,
};

/// The most a client spends on one derivation, whatever a server asks: 1 GiB, 10 passes,
/// 16 lanes (the bounds Bitwarden's clients hold its server to). At the ceiling a
/// derivation takes tens of seconds; beyond it a server could exhaust a phone's or a
/// browser tab's memory. The broker refuses registrations above it, since no client could
/// log in to such an account. Protocol §2.1.
pub const CLIENT_CEILING: KdfParams = KdfParams {
    memory_kib: 1_048_576,
    iterations: 10,
    parallelism: 16,
};

/// Parameters a client refuses to derive with; nothing has been derived or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KdfRefused {
    /// Below the client floor (too weak).
    #[error("the server asked for weaker key derivation (Argon2id m = {} KiB, t = {}, p = {}) than this client accepts (at least m = {} KiB, t = {}, p = {}): refused, and the password was not used. A server that asks this is misconfigured or hostile; tell its operator", .0.memory_kib, .0.iterations, .0.parallelism, CLIENT_FLOOR.memory_kib, CLIENT_FLOOR.iterations, CLIENT_FLOOR.parallelism)]
    BelowFloor(KdfParams),
    /// Above the client ceiling (too costly: a denial of service on the client).
    #[error("the server asked for costlier key derivation (Argon2id m = {} KiB, t = {}, p = {}) than this client spends (at most m = {} KiB, t = {}, p = {}): refused, and the password was not used. A server that asks this is misconfigured or hostile; tell its operator", .0.memory_kib, .0.iterations, .0.parallelism, CLIENT_CEILING.memory_kib, CLIENT_CEILING.iterations, CLIENT_CEILING.parallelism)]
    AboveCeiling(KdfParams),
}

impl KdfParams {
    /// These parameters, if a client may derive with them: from [`CLIENT_FLOOR`] to
    /// [`CLIENT_CEILING`], member by member.
    pub fn within_client_bounds(self) -> Result<KdfParams, KdfRefused> {
        let members = |p: KdfParams| [p.memory_kib, p.iterations, p.parallelism];
        let (asked, floor, ceiling) = (
            members(self),
            members(CLIENT_FLOOR),
            members(CLIENT_CEILING),
        );
        if asked.iter().zip(floor).any(|(a, f)| *a < f) {
            return Err(KdfRefused::BelowFloor(self));
        }
        if asked.iter().zip(ceiling).any(|(a, c)| *a > c) {
            return Err(KdfRefused::AboveCeiling(self));
        }
        Ok(self)
    }

    /// Each member at its largest among `self` and `other`, never below the floor: the
    /// parameters for a new wrap when a server recommends some and an account has others.
    /// The result may exceed the ceiling, which [`KdfParams::within_client_bounds`] refuses.
    pub fn strongest(self, other: KdfParams) -> KdfParams {
        KdfParams {
            memory_kib: self
                .memory_kib
                .max(other.memory_kib)
                .max(CLIENT_FLOOR.memory_kib),
            iterations: self
                .iterations
                .max(other.iterations)
                .max(CLIENT_FLOOR.iterations),
            parallelism: self
                .parallelism
                .max(other.parallelism)
                .max(CLIENT_FLOOR.parallelism),
        }
    }
}

/// A salt with its KDF parameters: the prelogin answer and part of a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KdfSpec {
    /// The salt (16 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// The Argon2id parameters.
    #[serde(flatten)]
    pub params: KdfParams,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_each_member_below_the_floor_or_above_the_ceiling() {
        assert_eq!(CLIENT_FLOOR.within_client_bounds(), Ok(CLIENT_FLOOR));
        assert_eq!(CLIENT_CEILING.within_client_bounds(), Ok(CLIENT_CEILING));
        let p = |memory_kib, iterations, parallelism| KdfParams {
            memory_kib,
            iterations,
            parallelism,
        };
        for weak in [
            p(8, 1, 1),
            p(19_455, 2, 1),
            p(65_536, 1, 1),
            p(65_536, 3, 0),
        ] {
            assert_eq!(
                weak.within_client_bounds(),
                Err(KdfRefused::BelowFloor(weak))
            );
        }
        for costly in [
            p(1_048_577, 2, 1),
            p(65_536, 11, 1),
            p(65_536, 3, 17),
            p(u32::MAX, 1, 1),
        ] {
            let refused = costly.within_client_bounds();
            assert!(refused.is_err(), "{costly:?}");
            if costly.iterations >= 2 {
                assert_eq!(refused, Err(KdfRefused::AboveCeiling(costly)));
            }
        }
        let text = p(8, 1, 1).within_client_bounds().unwrap_err().to_string();
        assert!(
            text.contains("m = 8 KiB, t = 1") && text.contains("weaker"),
            "{text}"
        );
    }

    #[test]
    fn strongest_takes_each_member_at_its_largest_and_never_below_the_floor() {
        let a = KdfParams {
            memory_kib: 65_536,
            iterations: 2,
            parallelism: 1,
        };
        let b = KdfParams {
            memory_kib: 24_576,
            iterations: 4,
            parallelism: 0,
        };
        assert_eq!(
            a.strongest(b),
            KdfParams {
                memory_kib: 65_536,
                iterations: 4,
                parallelism: 1
            }
        );
        let weak = KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        assert_eq!(weak.strongest(weak), CLIENT_FLOOR);
    }
}
