//! The keyring: the peer keys a principal pinned first-hand, sealed under a key derived
//! from its own private key (protocol §3.1). Client side only.

use std::collections::BTreeMap;

use crypto_box::{PublicKey, SecretKey};

use sealrelay_wire::PrincipalId;

use super::kdf::keyring_keys;
use super::CryptoError;

/// The peer public keys a principal trusts because it learned them first-hand (a console
/// made the instance's key pair; an instance's bundle names its owner's key), and the names
/// the user gave them. Stored on the server sealed under a key derived from the owner's
/// private key, bound to the owner's id, with its version inside: the server can neither
/// read, alter nor relabel it — not even learn what an instance is called — and a client
/// that remembers the last version it saw detects an older one served again.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    /// Counts every write; the server stores it beside the sealed keyring (protocol §3.1).
    pub version: u64,
    peers: BTreeMap<PrincipalId, Pin>,
}

/// One peer: its key and the name its user gave it (empty: none).
#[derive(Clone, PartialEq, Eq)]
struct Pin {
    key: [u8; 32],
    name: String,
}

/// The format every keyring is sealed in: entries carry names.
const KEYRING_FORMAT: u8 = 2;
/// The first format, pins only: still opened (as unnamed), never written.
const KEYRING_FORMAT_PINS_ONLY: u8 = 1;
const PIN_LEN: usize = 16 + 32;

/// The longest name a peer may have, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 100;

/// `name` trimmed, if it can name a peer: at most [`MAX_NAME_BYTES`] bytes, no control
/// characters (empty: no name).
pub fn check_name(name: &str) -> Result<&str, CryptoError> {
    let name = name.trim();
    if name.len() > MAX_NAME_BYTES {
        return Err(CryptoError::Name("longer than 100 bytes of UTF-8"));
    }
    if name.chars().any(char::is_control) {
        return Err(CryptoError::Name("it contains a control character"));
    }
    Ok(name)
}

impl Keyring {
    /// The key pinned for `peer`, if any.
    pub fn get(&self, peer: PrincipalId) -> Option<PublicKey> {
        self.peers.get(&peer).map(|p| PublicKey::from(p.key))
    }

    /// The name the user gave `peer`, if any.
    pub fn name(&self, peer: PrincipalId) -> Option<&str> {
        self.peers
            .get(&peer)
            .map(|p| p.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Pins `key` for `peer`, replacing an earlier pin (re-enrolment) and keeping its name.
    pub fn pin(&mut self, peer: PrincipalId, key: &PublicKey) {
        self.peers
            .entry(peer)
            .and_modify(|p| p.key = *key.as_bytes())
            .or_insert_with(|| Pin {
                key: *key.as_bytes(),
                name: String::new(),
            });
    }

    /// Names a pinned `peer` (an empty name clears it).
    pub fn set_name(&mut self, peer: PrincipalId, name: &str) -> Result<(), CryptoError> {
        let name = check_name(name)?;
        let pin = self
            .peers
            .get_mut(&peer)
            .ok_or(CryptoError::Name("only a pinned peer can be named"))?;
        pin.name = name.to_owned();
        Ok(())
    }

    /// Forgets `peer`'s pin and name; whether it was pinned.
    pub fn unpin(&mut self, peer: PrincipalId) -> bool {
        self.peers.remove(&peer).is_some()
    }

    /// How many peers are pinned.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is pinned.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// `format (2) || version (u64 BE) || count (u32 BE) || count × (id 16 || key 32 ||
    /// name length (u8) || name)`, sealed like a bundle under the owner's keyring key.
    pub fn seal(&self, owner: PrincipalId, owner_key: &SecretKey) -> Vec<u8> {
        let mut plain = Vec::with_capacity(13 + self.peers.len() * (PIN_LEN + 1));
        plain.push(KEYRING_FORMAT);
        plain.extend_from_slice(&self.version.to_be_bytes());
        plain.extend_from_slice(&(self.peers.len() as u32).to_be_bytes());
        for (id, pin) in &self.peers {
            plain.extend_from_slice(&id.0);
            plain.extend_from_slice(&pin.key);
            // check_name bounds every name set to 100 bytes.
            plain.push(pin.name.len() as u8);
            plain.extend_from_slice(pin.name.as_bytes());
        }
        keyring_keys(owner_key).wrap(owner, &plain)
    }

    /// Opens a keyring sealed by `owner` (format 1 or 2); one that does not open or parse is an
    /// error, never an empty keyring.
    pub fn open(
        owner: PrincipalId,
        owner_key: &SecretKey,
        sealed: &[u8],
    ) -> Result<Keyring, CryptoError> {
        let plain = keyring_keys(owner_key)
            .unwrap(owner, sealed)
            .map_err(|_| CryptoError::KeyringUnreadable)?;
        let (Some(&format), Some(version), Some(count)) =
            (plain.first(), plain.get(1..9), plain.get(9..13))
        else {
            return Err(CryptoError::KeyringFormat("unknown format or short header"));
        };
        let named = match format {
            KEYRING_FORMAT => true,
            KEYRING_FORMAT_PINS_ONLY => false,
            _ => return Err(CryptoError::KeyringFormat("unknown format or short header")),
        };
        let count = u32::from_be_bytes(count.try_into().expect("4 bytes")) as usize;
        let short = || CryptoError::KeyringFormat("entry count does not match its length");
        let mut rest = &plain[13..];
        let mut peers = BTreeMap::new();
        for _ in 0..count {
            let (pin, after) = rest.split_at_checked(PIN_LEN).ok_or_else(short)?;
            rest = after;
            let mut name = String::new();
            if named {
                let (&len, after) = rest.split_first().ok_or_else(short)?;
                let (text, after) = after.split_at_checked(usize::from(len)).ok_or_else(short)?;
                rest = after;
                name = std::str::from_utf8(text)
                    .ok()
                    .filter(|n| check_name(n).is_ok_and(|checked| checked == *n))
                    .ok_or(CryptoError::KeyringFormat("a name is not valid"))?
                    .to_owned();
            }
            let id = PrincipalId::from_slice(&pin[..16]).expect("16 bytes");
            let key = pin[16..].try_into().expect("32 bytes");
            peers.insert(id, Pin { key, name });
        }
        if !rest.is_empty() {
            return Err(short());
        }
        Ok(Keyring {
            version: u64::from_be_bytes(version.try_into().expect("8 bytes")),
            peers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn names_are_sealed_with_the_pins_and_bounded() {
        let owner = PrincipalId::random();
        let secret = SecretKey::generate(&mut OsRng);
        let (named, unnamed) = (PrincipalId::random(), PrincipalId::random());
        let mut ring = Keyring {
            version: 3,
            ..Keyring::default()
        };
        for peer in [named, unnamed] {
            ring.pin(peer, &SecretKey::generate(&mut OsRng).public_key());
        }
        ring.set_name(named, "  Press line 7 — Zürich ").unwrap();
        let sealed = ring.seal(owner, &secret);
        assert!(
            !sealed.windows(6).any(|w| w == b"Press "),
            "names are sealed"
        );
        let opened = Keyring::open(owner, &secret, &sealed).unwrap();
        assert!(opened == ring);
        assert_eq!(opened.name(named), Some("Press line 7 — Zürich"));
        assert_eq!(opened.name(unnamed), None);
        // Re-pinning (a re-enrolment) keeps the name.
        ring.pin(named, &SecretKey::generate(&mut OsRng).public_key());
        assert_eq!(ring.name(named), Some("Press line 7 — Zürich"));
        assert!(ring.set_name(named, &"x".repeat(101)).is_err());
        assert!(ring.set_name(named, "tab\there").is_err());
        assert!(ring.set_name(PrincipalId::random(), "stranger").is_err());
        ring.set_name(named, "").unwrap();
        assert_eq!(ring.name(named), None);
    }
}
