//! The sealed envelope's clear header: the only part of a message the broker reads.
//!
//! The body behind it is opaque here on purpose — this module has no key material and
//! no way to open anything. Sealing and opening live in the client crate's `crypto`.
//!
//! Layout (all integers big-endian), 54 bytes then the body:
//! ```text
//! 0      1  version      = 2 (1 is still accepted: kind-2 bodies without the reply field)
//! 1      1  kind         1 = anonymous sealed box, 2 = sender-authenticated box
//! 2     16  sender       principal id
//! 18    16  recipient    principal id
//! 34    16  witness      fingerprint of the recipient public key the body is sealed to
//! 50     4  body length  must equal the bytes that follow
//! 54     …  body
//! ```

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::id::PrincipalId;

/// The version sealed now. Version 2 added the reply field inside kind-2 bodies (protocol
/// §4.2); the header's layout is the same in both.
pub const VERSION: u8 = 2;
/// The versions accepted and opened (protocol §4.3: version 1 until at least 2027-12-31).
pub const VERSIONS: [u8; 2] = [1, 2];
/// Bytes of the clear header: version, kind, sender, recipient, witness, body length.
pub const HEADER_LEN: usize = 54;

/// How the body is sealed; tells the recipient which open to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// libsodium `crypto_box_seal`: anyone may have sealed it; the sender is not proven.
    Anonymous = 1,
    /// `crypto_box_easy` from the sender's static key: proves the sender to the recipient.
    Authenticated = 2,
}

/// Fingerprint of an X25519 public key: which key an envelope was sealed to. After a
/// password reset a client compares it with its current key to say "sealed to your old
/// key" rather than fail with a generic decryption error.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Witness(pub [u8; 16]);

impl Witness {
    /// The witness of `public_key`.
    pub fn of(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"sealrelay/v1/witness")
            .chain_update(public_key)
            .finalize();
        let mut w = [0u8; 16];
        w.copy_from_slice(&digest[..16]);
        Witness(w)
    }
}

impl std::fmt::Display for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Text that is not a witness (32 hex digits).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a key witness is 32 hex characters (16 bytes)")]
pub struct BadWitness;

impl std::str::FromStr for Witness {
    type Err = BadWitness;

    fn from_str(s: &str) -> Result<Witness, BadWitness> {
        let bytes = hex::decode(s.trim()).map_err(|_| BadWitness)?;
        bytes.try_into().map(Witness).map_err(|_| BadWitness)
    }
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Witness({self})")
    }
}

/// An envelope's clear header (protocol §4): all the broker reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2; says how a kind-2 body's inner plaintext is laid out.
    pub version: u8,
    /// Anonymous (1) or sender-authenticated (2).
    pub kind: Kind,
    /// Who sent it: vouched for by the broker, and proven only by a kind-2 body.
    pub sender: PrincipalId,
    /// Whose inbox it is for.
    pub recipient: PrincipalId,
    /// The fingerprint of the recipient key it was sealed to.
    pub witness: Witness,
    /// Bytes of the body that follows.
    pub body_len: u32,
}

/// Why a header does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("envelope is {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    /// A version this side does not know.
    #[error("envelope version {0} is not supported (expected 1 or 2)")]
    Version(u8),
    /// A kind this side does not know.
    #[error("envelope kind {0} is unknown (1 = anonymous, 2 = authenticated)")]
    Kind(u8),
    /// The body is not as long as the header says.
    #[error("envelope header says the body is {declared} bytes but {actual} follow")]
    Length {
        /// What the header says.
        declared: u32,
        /// What follows it.
        actual: usize,
    },
}

impl Header {
    /// Parses the header of a whole envelope and checks the declared length against it.
    pub fn parse(envelope: &[u8]) -> Result<Header, HeaderError> {
        if envelope.len() < HEADER_LEN {
            return Err(HeaderError::TooShort(envelope.len()));
        }
        if !VERSIONS.contains(&envelope[0]) {
            return Err(HeaderError::Version(envelope[0]));
        }
        let kind = match envelope[1] {
            1 => Kind::Anonymous,
            2 => Kind::Authenticated,
            other => return Err(HeaderError::Kind(other)),
        };
        let id = |at: usize| PrincipalId(envelope[at..at + 16].try_into().expect("16 bytes"));
        let body_len = u32::from_be_bytes(envelope[50..54].try_into().expect("4 bytes"));
        let actual = envelope.len() - HEADER_LEN;
        if body_len as usize != actual {
            return Err(HeaderError::Length {
                declared: body_len,
                actual,
            });
        }
        Ok(Header {
            version: envelope[0],
            kind,
            sender: id(2),
            recipient: id(18),
            witness: Witness(envelope[34..50].try_into().expect("16 bytes")),
            body_len,
        })
    }

    /// Writes header and body as one envelope.
    pub fn encode(&self, body: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.push(self.version);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.sender.0);
        out.extend_from_slice(&self.recipient.0);
        out.extend_from_slice(&self.witness.0);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            kind: Kind::Authenticated,
            sender: PrincipalId([1; 16]),
            recipient: PrincipalId([2; 16]),
            witness: Witness([3; 16]),
            body_len: 5,
        }
    }

    #[test]
    fn encode_then_parse_is_identity() {
        let env = header().encode(b"hello");
        assert_eq!(env.len(), HEADER_LEN + 5);
        assert_eq!(Header::parse(&env).unwrap(), header());
    }

    #[test]
    fn rejects_bad_version_kind_and_length() {
        let env = header().encode(b"hello").to_vec();
        assert_eq!(Header::parse(&env[..10]), Err(HeaderError::TooShort(10)));
        let mut bad = env.clone();
        bad[0] = 9;
        assert_eq!(Header::parse(&bad), Err(HeaderError::Version(9)));
        let mut bad = env.clone();
        bad[1] = 7;
        assert_eq!(Header::parse(&bad), Err(HeaderError::Kind(7)));
        let mut bad = env.clone();
        bad.push(0);
        assert_eq!(
            Header::parse(&bad),
            Err(HeaderError::Length {
                declared: 5,
                actual: 6
            })
        );
    }
}
