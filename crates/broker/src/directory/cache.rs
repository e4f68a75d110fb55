//! What the hot paths read from memory: each login's credentials (every CONNECT and API
//! call), each user's salt and KDF parameters with their mix (prelogin, for known and unknown
//! names alike), and who is paired with whom (every envelope). It changes only through
//! [`Change`]s: those of this node's commits, applied by the directory in commit order, and
//! — in a cluster — those of the other nodes' commits, so every node's cache follows the one
//! database. Uses dashmap and std only; never the database.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use dashmap::DashMap;

use super::Credentials;
use sealrelay_wire::{KdfParams, PrincipalId, PrincipalKind};

/// One change a commit made to what the cache holds.
#[derive(Debug, Clone)]
pub enum Change {
    /// A login's credentials set or replaced: a registration, a new password or token, or
    /// the unusable verifier an operator's reset leaves.
    Login {
        login: String,
        credentials: Credentials,
    },
    /// A user's salt and KDF parameters set or replaced.
    Kdf {
        login: String,
        salt: Vec<u8>,
        params: KdfParams,
    },
    /// An instance paired with the user who added it.
    Paired {
        user: PrincipalId,
        instance: PrincipalId,
    },
    /// A principal deleted: its login, KDF parameters and pairings are forgotten.
    Removed { id: PrincipalId, login: String },
}

impl Change {
    /// The principal this change is about, when it names one (a `Kdf` change comes with
    /// its login's `Login` change, which does).
    pub fn principal(&self) -> Option<PrincipalId> {
        match self {
            Change::Login { credentials, .. } => Some(credentials.id),
            Change::Kdf { .. } => None,
            Change::Paired { instance, .. } => Some(*instance),
            Change::Removed { id, .. } => Some(*id),
        }
    }
}

/// What prelogin reveals of an account besides its salt's bytes: the salt's length and the
/// Argon2id parameters. Unknown names are answered with shapes drawn from the accounts' mix.
type KdfShape = (u32, u32, u32, u32);

#[derive(Default)]
pub struct Cache {
    /// principal → principals it may address; symmetric.
    peers: DashMap<PrincipalId, HashSet<PrincipalId>>,
    /// login → its credentials.
    logins: DashMap<String, Credentials>,
    /// user login → its salt and KDF parameters, so prelogin answers from memory for known
    /// and unknown names alike (a database read only for known ones would time apart).
    kdfs: DashMap<String, (Vec<u8>, KdfParams)>,
    /// How many users have each KDF parameter set (memory, iterations, parallelism): unknown
    /// names get parameters drawn from this mix, so an account's parameters do not tell it
    /// from a name nobody has.
    kdf_mix: Mutex<BTreeMap<KdfShape, u64>>,
}

impl Cache {
    /// Applies `changes` in order.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            match change {
                Change::Login { login, credentials } => {
                    self.logins.insert(login, credentials);
                }
                Change::Kdf {
                    login,
                    salt,
                    params,
                } => self.set_kdf(&login, Some((salt, params))),
                Change::Paired { user, instance } => {
                    self.peers.entry(user).or_default().insert(instance);
                    self.peers.entry(instance).or_default().insert(user);
                }
                Change::Removed { id, login } => {
                    self.logins.remove(&login);
                    self.set_kdf(&login, None);
                    if let Some((_, peers)) = self.peers.remove(&id) {
                        for peer in peers {
                            if let Some(mut theirs) = self.peers.get_mut(&peer) {
                                theirs.remove(&id);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sets (or with `None` forgets) a user's salt and parameters, keeping the mix counted.
    fn set_kdf(&self, login: &str, spec: Option<(Vec<u8>, KdfParams)>) {
        let shape = |(salt, p): &(Vec<u8>, KdfParams)| {
            let salt_len = u32::try_from(salt.len()).unwrap_or(u32::MAX);
            (salt_len, p.memory_kib, p.iterations, p.parallelism)
        };
        let mut mix = self.kdf_mix.lock().unwrap_or_else(|p| p.into_inner());
        let old = match spec {
            Some(spec) => {
                *mix.entry(shape(&spec)).or_default() += 1;
                self.kdfs.insert(login.to_owned(), spec)
            }
            None => self.kdfs.remove(login).map(|(_, spec)| spec),
        };
        if let Some(old) = old {
            if let Some(n) = mix.get_mut(&shape(&old)) {
                *n -= 1;
                if *n == 0 {
                    mix.remove(&shape(&old));
                }
            }
        }
    }

    /// May `from` address `to`?
    pub fn is_paired(&self, from: PrincipalId, to: PrincipalId) -> bool {
        self.peers
            .get(&from)
            .is_some_and(|peers| peers.contains(&to))
    }

    /// The account `id` belongs to: a user is its own; an instance belongs to the user who
    /// added it, its one pairing.
    pub fn account_of(&self, id: PrincipalId, kind: PrincipalKind) -> PrincipalId {
        match kind {
            PrincipalKind::User => id,
            PrincipalKind::Instance => self
                .peers
                .get(&id)
                .and_then(|peers| peers.iter().next().copied())
                .unwrap_or(id),
        }
    }

    pub fn peers_of(&self, id: PrincipalId) -> Vec<PrincipalId> {
        self.peers
            .get(&id)
            .map(|peers| peers.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Salt and KDF parameters of a user, if the name exists.
    pub fn kdf_of(&self, name: &str) -> Option<(Vec<u8>, KdfParams)> {
        self.kdfs.get(name).map(|spec| spec.clone())
    }

    /// A salt length and KDF parameters drawn from those users have, weighted by how many
    /// have each: `pick` (derived from a name) chooses. `None` while there are no users.
    pub fn kdf_drawn(&self, pick: u64) -> Option<(usize, KdfParams)> {
        let mix = self.kdf_mix.lock().unwrap_or_else(|p| p.into_inner());
        let total: u64 = mix.values().sum();
        let mut at = pick.checked_rem(total)?;
        for (&(salt_len, memory_kib, iterations, parallelism), &n) in mix.iter() {
            if at < n {
                let params = KdfParams {
                    memory_kib,
                    iterations,
                    parallelism,
                };
                return Some((salt_len as usize, params));
            }
            at -= n;
        }
        None
    }

    /// The login's id, kind and verifier.
    /// The login of principal `id`, if the cache holds one (a scan: for the rare removal
    /// another node made, which names the id only).
    pub fn login_of(&self, id: PrincipalId) -> Option<String> {
        self.logins
            .iter()
            .find(|entry| entry.value().id == id)
            .map(|entry| entry.key().clone())
    }

    pub fn credentials(&self, login: &str) -> Option<Credentials> {
        self.logins.get(login).map(|c| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(memory_kib: u32) -> KdfParams {
        KdfParams {
            memory_kib,
            iterations: 2,
            parallelism: 1,
        }
    }

    #[test]
    fn changes_set_replace_and_forget_what_the_hot_paths_read() {
        let cache = Cache::default();
        let (user, instance) = (PrincipalId([1; 16]), PrincipalId([2; 16]));
        let login = |id, kind, verifier| Change::Login {
            login: if kind == PrincipalKind::User {
                "alice".into()
            } else {
                instance.to_string()
            },
            credentials: Credentials { id, kind, verifier },
        };
        let kdf = |memory_kib| Change::Kdf {
            login: "alice".into(),
            salt: vec![0; 16],
            params: params(memory_kib),
        };
        cache.apply([
            login(user, PrincipalKind::User, [1; 32]),
            kdf(19_456),
            login(instance, PrincipalKind::Instance, [2; 32]),
            Change::Paired { user, instance },
        ]);
        assert!(cache.is_paired(user, instance) && cache.is_paired(instance, user));
        assert_eq!(cache.account_of(instance, PrincipalKind::Instance), user);
        assert_eq!(cache.kdf_drawn(5), Some((16, params(19_456))));
        cache.apply([login(user, PrincipalKind::User, [3; 32]), kdf(65_536)]);
        assert_eq!(cache.credentials("alice").unwrap().verifier, [3; 32]);
        assert_eq!(
            cache.kdf_drawn(5),
            Some((16, params(65_536))),
            "replaced, not added"
        );
        cache.apply([Change::Removed {
            id: instance,
            login: instance.to_string(),
        }]);
        assert!(!cache.is_paired(user, instance));
        assert!(cache.credentials(&instance.to_string()).is_none());
        cache.apply([Change::Removed {
            id: user,
            login: "alice".into(),
        }]);
        assert!(cache.credentials("alice").is_none() && cache.kdf_of("alice").is_none());
        assert_eq!(cache.kdf_drawn(5), None);
    }
}
