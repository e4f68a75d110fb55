//! The keyring: the peer keys a principal pinned first-hand, sealed under a key derived
//! from its own private key (protocol §3.1). Client side only.

use std::collections::BTreeMap;

use crypto_box::{PublicKey, SecretKey};

use sealrelay_wire::PrincipalId;

use super::kdf::keyring_keys;
use super::CryptoError;

/// The peer public keys a principal trusts because it learned them first-hand (a console
/// made the instance's key pair; an instance's bundle names its owner's key). Stored on the
/// server sealed under a key derived from the owner's private key, bound to the owner's id,
/// with its version inside: the server can neither read, alter nor relabel it, and a client
/// that remembers the last version it saw detects an older one served again.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    pub version: u64,
    peers: BTreeMap<PrincipalId, [u8; 32]>,
}

const KEYRING_FORMAT: u8 = 1;
const KEYRING_ENTRY_LEN: usize = 16 + 32;

impl Keyring {
    pub fn get(&self, peer: PrincipalId) -> Option<PublicKey> {
        self.peers.get(&peer).map(|k| PublicKey::from(*k))
    }

    /// Pins `key` for `peer`, replacing an earlier pin (re-enrolment).
    pub fn pin(&mut self, peer: PrincipalId, key: &PublicKey) {
        self.peers.insert(peer, *key.as_bytes());
    }

    pub fn unpin(&mut self, peer: PrincipalId) -> bool {
        self.peers.remove(&peer).is_some()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// `format (1) || version (u64 BE) || count (u32 BE) || count × (id 16 || key 32)`,
    /// sealed like a bundle under the owner's keyring key.
    pub fn seal(&self, owner: PrincipalId, owner_key: &SecretKey) -> Vec<u8> {
        let mut plain = Vec::with_capacity(13 + self.peers.len() * KEYRING_ENTRY_LEN);
        plain.push(KEYRING_FORMAT);
        plain.extend_from_slice(&self.version.to_be_bytes());
        plain.extend_from_slice(&(self.peers.len() as u32).to_be_bytes());
        for (id, key) in &self.peers {
            plain.extend_from_slice(&id.0);
            plain.extend_from_slice(key);
        }
        keyring_keys(owner_key).wrap(owner, &plain)
    }

    pub fn open(
        owner: PrincipalId,
        owner_key: &SecretKey,
        sealed: &[u8],
    ) -> Result<Keyring, CryptoError> {
        let plain = keyring_keys(owner_key)
            .unwrap(owner, sealed)
            .map_err(|_| CryptoError::KeyringUnreadable)?;
        let (Some(&KEYRING_FORMAT), Some(version), Some(count)) =
            (plain.first(), plain.get(1..9), plain.get(9..13))
        else {
            return Err(CryptoError::KeyringFormat("unknown format or short header"));
        };
        let count = u32::from_be_bytes(count.try_into().expect("4 bytes")) as usize;
        let entries = &plain[13..];
        if entries.len() != count * KEYRING_ENTRY_LEN {
            return Err(CryptoError::KeyringFormat(
                "entry count does not match its length",
            ));
        }
        let peers = entries
            .chunks_exact(KEYRING_ENTRY_LEN)
            .map(|e| {
                let id = PrincipalId::from_slice(&e[..16]).expect("16 bytes");
                (id, e[16..].try_into().expect("32 bytes"))
            })
            .collect();
        Ok(Keyring {
            version: u64::from_be_bytes(version.try_into().expect("8 bytes")),
            peers,
        })
    }
}
