//! Wire vocabulary shared by the broker and the client SDK: principal ids, the topic
//! scheme, and the MQTT reason codes sealrelay answers with. `docs/protocol.md` is the
//! normative description; this module is its executable form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Prefix of every inbox topic. The version segment lets a future scheme live beside it.
pub const INBOX_PREFIX: &str = "sr/v1/inbox/";

/// A principal (a user or an instance) is named by 16 random bytes, chosen by the client
/// that creates it so the wrapped key can bind the id before the server ever sees it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(pub [u8; 16]);

impl PrincipalId {
    pub const LEN: usize = 16;

    pub fn random() -> Self {
        use rand_core::RngCore;
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        PrincipalId(id)
    }

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

/// Splits the printable form of a principal's secret, `<prefix>.<principal id>.<secret>`
/// (instance tokens, reset codes), returning the id and the secret part as written.
pub fn split_secret_form<'s>(s: &'s str, prefix: &str) -> Option<(PrincipalId, &'s str)> {
    let mut parts = s.trim().split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(id), Some(secret), None) if p == prefix => Some((id.parse().ok()?, secret)),
        _ => None,
    }
}

/// An operator-issued, one-time code that lets a user who forgot their password replace
/// their key pair: `srr1.<user id>.<secret>`, the secret 32 random bytes in base64url. The
/// server keeps only a verifier of the secret; the id lets the client bind its new wrapped
/// key to the account before it can log in.
pub struct ResetCode {
    pub user: PrincipalId,
    secret: zeroize::Zeroizing<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a reset code looks like srr1.<32 hex id>.<43 base64url chars>")]
pub struct BadResetCode;

impl ResetCode {
    pub fn generate(user: PrincipalId) -> ResetCode {
        use rand_core::RngCore;
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(secret.as_mut());
        ResetCode {
            user,
            secret: zeroize::Zeroizing::new(b64::encode_url(secret.as_ref())),
        }
    }

    /// The part the server verifies.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The printable form; shown once to the operator, never stored.
    pub fn reveal(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!("srr1.{}.{}", self.user, &*self.secret))
    }
}

impl FromStr for ResetCode {
    type Err = BadResetCode;

    fn from_str(s: &str) -> Result<ResetCode, BadResetCode> {
        let (user, secret) = split_secret_form(s, "srr1").ok_or(BadResetCode)?;
        let well_formed = secret.len() == 43
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(BadResetCode);
        }
        Ok(ResetCode {
            user,
            secret: zeroize::Zeroizing::new(secret.to_owned()),
        })
    }
}

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

/// The principal whose inbox `topic` is, or `None` for any other topic (wildcards included).
pub fn inbox_owner(topic: &str) -> Option<PrincipalId> {
    topic.strip_prefix(INBOX_PREFIX)?.parse().ok()
}

/// What kind of principal a login names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    User,
    Instance,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Instance => "instance",
        }
    }
}

/// Argon2id cost parameters, stored per account and returned by prelogin. The broker only
/// stores and checks them against its minimum; clients run the KDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// A salt with its KDF parameters: the prelogin answer and part of a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KdfSpec {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(flatten)]
    pub params: KdfParams,
}

/// Byte strings in the JSON API: standard base64 (RFC 4648 section 4, padded).
pub mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        STANDARD.decode(text.as_bytes()).ok()
    }

    /// URL-safe, unpadded: for secrets printed into commands and tokens.
    pub fn encode_url(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("expected standard base64"))
    }
}

/// MQTT 5 reason codes the broker sends, with their MQTT 3.1.1 equivalents where 3.1.1
/// has one. Listed in `docs/protocol.md` with when each is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    Success = 0x00,
    NoMatchingSubscribers = 0x10,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    UnsupportedProtocolVersion = 0x84,
    ClientIdNotValid = 0x85,
    NotAuthorized = 0x87,
    ServerShuttingDown = 0x8B,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicNameInvalid = 0x90,
    ReceiveMaximumExceeded = 0x93,
    PacketTooLarge = 0x95,
    QuotaExceeded = 0x97,
    AdministrativeAction = 0x98,
    PayloadFormatInvalid = 0x99,
    RetainNotSupported = 0x9A,
    ConnectionRateExceeded = 0x9F,
}

impl Reason {
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_code_round_trips_and_rejects_malformed_ones() {
        let code = ResetCode::generate(PrincipalId::random());
        let parsed: ResetCode = code.reveal().parse().unwrap();
        assert_eq!((parsed.user, parsed.secret()), (code.user, code.secret()));
        let text = code.reveal();
        for bad in [
            text.replacen("srr1", "srt1", 1),
            format!("{}=", &*text),
            text[..text.len() - 1].to_owned(),
            format!("{}.x", &*text),
        ] {
            assert!(bad.parse::<ResetCode>().is_err(), "{bad}");
        }
    }

    #[test]
    fn inbox_topic_round_trips_and_rejects_everything_else() {
        let id = PrincipalId::random();
        assert_eq!(inbox_owner(&id.inbox_topic()), Some(id));
        assert_eq!(inbox_owner("sr/v1/inbox/#"), None);
        assert_eq!(inbox_owner("sr/v1/inbox/+"), None);
        assert_eq!(inbox_owner("#"), None);
        let upper = format!("{INBOX_PREFIX}{}", "AB".repeat(16));
        assert_eq!(
            inbox_owner(&upper),
            None,
            "ids have one spelling: lowercase"
        );
        assert_eq!(inbox_owner(&format!("{}/x", id.inbox_topic())), None);
    }
}
