//! Principal ids and kinds. An id is 16 random bytes chosen by the client that creates the
//! principal; its text form is 32 lowercase hex characters, and wherever an id enters a
//! MAC, an AAD or an envelope header it is the 16 raw bytes. Uses only serde, hex and the
//! OS random source; no key material lives here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::topic::INBOX_PREFIX;

/// A principal (a user or an instance) is named by 16 random bytes, chosen by the client
/// that creates it so the wrapped key can bind the id before the server ever sees it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(pub [u8; 16]);

impl PrincipalId {
    /// Bytes of an id.
    pub const LEN: usize = 16;

    /// A fresh random id.
    pub fn random() -> Self {
        use rand_core::RngCore;
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        PrincipalId(id)
    }

    /// The id in 16 bytes; `None` for another length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(PrincipalId)
    }

    /// The topic this principal's sessions subscribe to and its peers publish to.
    pub fn inbox_topic(&self) -> String {
        format!("{INBOX_PREFIX}{self}")
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrincipalId({self})")
    }
}

/// Text that is not an id (32 lowercase hex digits).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a principal id is 32 lowercase hex characters (16 bytes)")]
pub struct BadPrincipalId;

impl FromStr for PrincipalId {
    type Err = BadPrincipalId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Lowercase only, so each id has exactly one spelling in topics and logins.
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(BadPrincipalId);
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).map_err(|_| BadPrincipalId)?;
        Ok(PrincipalId(id))
    }
}

impl Serialize for PrincipalId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PrincipalId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What kind of principal a login names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A person, with a password.
    User,
    /// A factory instance, with a token.
    Instance,
}

impl PrincipalKind {
    /// `user` or `instance`, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Instance => "instance",
        }
    }
}
