//! Client-side cryptography: password and token key derivation, key wrapping, and the
//! sealing and opening of envelopes. The broker never links against these paths (no
//! broker module imports this one); `docs/protocol.md` specifies every byte of it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::envelope::{Header, HeaderError, Kind, Witness, HEADER_LEN};
use crate::protocol::{split_secret_form, KdfParams, PrincipalId};

pub const SALT_LEN: usize = 16;
const XNONCE_LEN: usize = 24;
const BOX_NONCE_LEN: usize = 24;
/// sender id, recipient id, message id, sent-at milliseconds.
const INNER_PREFIX_LEN: usize = 16 + 16 + 16 + 8;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("Argon2id rejected the KDF parameters: {0}")]
    Kdf(String),
    #[error("the wrapped key does not open with this password or token (wrong secret, or the bundle was altered)")]
    Unwrap,
    #[error("the key bundle is malformed: {0}")]
    Bundle(&'static str),
    #[error("an instance token looks like srt1.<32 hex id>.<43 base64url chars>")]
    TokenFormat,
    #[error("sealing failed")]
    Seal,
    #[error("the keyring does not open with this principal's key: the server altered it or sent another's")]
    KeyringUnreadable,
    #[error("the keyring is malformed: {0}")]
    KeyringFormat(&'static str),
}

/// Why an envelope could not be opened. Each case is specific so a user can act on it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("bad envelope header: {0}")]
    Header(#[from] HeaderError),
    #[error("envelope is addressed to {0}, not to this principal")]
    NotForMe(PrincipalId),
    #[error("envelope was sealed to a previous key of this principal (witness {sealed_to}; current key {current}); it cannot be opened by design — ask the sender to resend")]
    StaleKey {
        sealed_to: Witness,
        current: Witness,
    },
    #[error("no public key is known for sender {0}")]
    UnknownSender(PrincipalId),
    #[error("envelope does not authenticate as coming from {0}: forged or corrupted")]
    Forged(PrincipalId),
    #[error("envelope body does not open with this principal's key: forged or corrupted")]
    Undecryptable,
    #[error("envelope {0} was already received: replay refused")]
    Replayed(String),
    #[error("envelope is outside the accepted time window (sent {sent_ms} ms, now {now_ms} ms)")]
    OutOfWindow { sent_ms: u64, now_ms: u64 },
}

/// The two keys split from one secret: one wraps the private key, one logs in.
pub struct DerivedKeys {
    wrap: Zeroizing<[u8; 32]>,
    auth: Zeroizing<[u8; 32]>,
}

impl DerivedKeys {
    /// The login secret sent as MQTT password and HTTP Basic password. The server keeps
    /// only SHA-256 of it; it opens nothing.
    pub fn auth_secret(&self) -> Zeroizing<String> {
        Zeroizing::new(URL_SAFE_NO_PAD.encode(*self.auth))
    }

    /// Wraps `bundle` so only this secret opens it, bound to `owner` as associated data
    /// (a bundle moved to another principal's row does not open).
    pub fn wrap(&self, owner: PrincipalId, bundle: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(self.wrap.as_ref().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = wrap_aad(owner);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: bundle,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a bounded buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    pub fn unwrap(
        &self,
        owner: PrincipalId,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if wrapped.len() < XNONCE_LEN + 16 {
            return Err(CryptoError::Unwrap);
        }
        let (nonce, ct) = wrapped.split_at(XNONCE_LEN);
        let cipher = XChaCha20Poly1305::new(self.wrap.as_ref().into());
        cipher
            .decrypt(
                nonce.into(),
                Payload {
                    msg: ct,
                    aad: &wrap_aad(owner),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unwrap)
    }
}

fn wrap_aad(owner: PrincipalId) -> Vec<u8> {
    let mut aad = b"sealrelay/v1/bundle".to_vec();
    aad.extend_from_slice(&owner.0);
    aad
}

fn split(salt: Option<&[u8]>, ikm: &[u8]) -> DerivedKeys {
    let hk = Hkdf::<Sha256>::new(salt, ikm);
    let mut keys = DerivedKeys {
        wrap: Zeroizing::new([0u8; 32]),
        auth: Zeroizing::new([0u8; 32]),
    };
    hk.expand(b"sealrelay/v1/wrap-key", keys.wrap.as_mut())
        .expect("32 bytes is a valid HKDF output length");
    hk.expand(b"sealrelay/v1/auth-key", keys.auth.as_mut())
        .expect("32 bytes is a valid HKDF output length");
    keys
}

/// Argon2id(password, salt) then HKDF into the wrap key and the auth key.
pub fn derive_from_password(
    password: &str,
    salt: &[u8],
    params: KdfParams,
) -> Result<DerivedKeys, CryptoError> {
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(32),
        )
        .map_err(|e| CryptoError::Kdf(e.to_string()))?,
    );
    let mut master = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password.as_bytes(), salt, master.as_mut())
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(split(None, master.as_ref()))
}

/// Keys only the holder of `owner` can derive, for the owner's escrow copies of its
/// instances' bundles: they let the owner rotate an instance's token without the instance,
/// and the server can neither open nor forge them.
pub fn escrow_keys(owner: &SecretKey) -> DerivedKeys {
    split(
        Some(b"sealrelay/v1/escrow"),
        &Zeroizing::new(owner.to_bytes())[..],
    )
}

/// Keys only the holder of `owner` can derive, for its keyring (a different salt from the
/// escrow keys, so neither blob can stand in for the other).
fn keyring_keys(owner: &SecretKey) -> DerivedKeys {
    split(
        Some(b"sealrelay/v1/keyring"),
        &Zeroizing::new(owner.to_bytes())[..],
    )
}

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

pub fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    salt
}

/// An instance's one-time token: its id and a 256-bit secret. The secret is already
/// uniformly random, so HKDF alone derives its keys; Argon2 would add nothing.
pub struct Token {
    pub instance: PrincipalId,
    secret: Zeroizing<[u8; 32]>,
}

impl Token {
    pub fn generate(instance: PrincipalId) -> Token {
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(secret.as_mut());
        Token { instance, secret }
    }

    pub fn keys(&self) -> DerivedKeys {
        split(Some(b"sealrelay/v1/token"), self.secret.as_ref())
    }

    /// The printable form `srt1.<instance id>.<secret>`; shown once, never stored.
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "srt1.{}.{}",
            self.instance,
            URL_SAFE_NO_PAD.encode(*self.secret)
        ))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}, <secret>)", self.instance)
    }
}

impl FromStr for Token {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Token, CryptoError> {
        let (instance, secret) = split_secret_form(s, "srt1").ok_or(CryptoError::TokenFormat)?;
        let mut decoded = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(secret)
                .map_err(|_| CryptoError::TokenFormat)?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::TokenFormat)?;
        decoded.zeroize();
        Ok(Token {
            instance,
            secret: Zeroizing::new(bytes),
        })
    }
}

/// What a wrapped blob holds once opened.
pub enum Bundle {
    /// A user's private key.
    User { secret: SecretKey },
    /// An instance's private key and the owner it was created by, with the owner's public
    /// key as the owner saw it — authenticated by the wrap, so the server cannot swap it.
    Instance {
        secret: SecretKey,
        owner: PrincipalId,
        owner_public: PublicKey,
    },
}

impl Bundle {
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(81));
        match self {
            Bundle::User { secret } => {
                out.push(1);
                out.extend_from_slice(&Zeroizing::new(secret.to_bytes())[..]);
            }
            Bundle::Instance {
                secret,
                owner,
                owner_public,
            } => {
                out.push(2);
                out.extend_from_slice(&Zeroizing::new(secret.to_bytes())[..]);
                out.extend_from_slice(&owner.0);
                out.extend_from_slice(owner_public.as_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Bundle, CryptoError> {
        let secret = |b: &[u8]| -> Result<SecretKey, CryptoError> {
            let raw: Zeroizing<[u8; 32]> =
                Zeroizing::new(b.try_into().map_err(|_| CryptoError::Bundle("short key"))?);
            Ok(SecretKey::from_bytes(*raw))
        };
        match bytes.split_first() {
            Some((1, rest)) if rest.len() == 32 => Ok(Bundle::User {
                secret: secret(rest)?,
            }),
            Some((2, rest)) if rest.len() == 32 + 16 + 32 => Ok(Bundle::Instance {
                secret: secret(&rest[..32])?,
                owner: PrincipalId::from_slice(&rest[32..48])
                    .ok_or(CryptoError::Bundle("owner id"))?,
                owner_public: PublicKey::from_slice(&rest[48..])
                    .map_err(|_| CryptoError::Bundle("owner key"))?,
            }),
            Some((1 | 2, _)) => Err(CryptoError::Bundle("wrong length for its version")),
            _ => Err(CryptoError::Bundle("unknown bundle version")),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// libsodium `crypto_box_seal` to the recipient; anyone could have sent it.
pub fn seal_anonymous(
    sender: PrincipalId,
    recipient: PrincipalId,
    recipient_key: &PublicKey,
    payload: &[u8],
) -> Result<Bytes, CryptoError> {
    let body = recipient_key
        .seal(&mut OsRng, payload)
        .map_err(|_| CryptoError::Seal)?;
    Ok(Header {
        kind: Kind::Anonymous,
        sender,
        recipient,
        witness: Witness::of(recipient_key.as_bytes()),
        body_len: body.len() as u32,
    }
    .encode(&body))
}

/// Seals sender-authenticated envelopes from one principal to one peer. The X25519
/// exchange is done once here rather than per envelope.
///
/// libsodium `crypto_box_easy` from the sender's static key. The inner plaintext repeats
/// sender and recipient: the box key is symmetric between two parties, so without them
/// a server could reflect A's envelope back to A as if B had sent it.
pub struct Sealer {
    sender: PrincipalId,
    recipient: PrincipalId,
    witness: Witness,
    sbox: SalsaBox,
}

impl Sealer {
    pub fn new(
        sender: PrincipalId,
        sender_key: &SecretKey,
        recipient: PrincipalId,
        recipient_key: &PublicKey,
    ) -> Sealer {
        Sealer {
            sender,
            recipient,
            witness: Witness::of(recipient_key.as_bytes()),
            sbox: SalsaBox::new(recipient_key, sender_key),
        }
    }

    pub fn seal(&self, payload: &[u8]) -> Result<Bytes, CryptoError> {
        let mut inner = Zeroizing::new(Vec::with_capacity(INNER_PREFIX_LEN + payload.len()));
        inner.extend_from_slice(&self.sender.0);
        inner.extend_from_slice(&self.recipient.0);
        let mut message_id = [0u8; 16];
        OsRng.fill_bytes(&mut message_id);
        inner.extend_from_slice(&message_id);
        inner.extend_from_slice(&now_ms().to_be_bytes());
        inner.extend_from_slice(payload);
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let ct = self
            .sbox
            .encrypt(&nonce, inner.as_slice())
            .map_err(|_| CryptoError::Seal)?;
        let mut body = Vec::with_capacity(BOX_NONCE_LEN + ct.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        Ok(Header {
            kind: Kind::Authenticated,
            sender: self.sender,
            recipient: self.recipient,
            witness: self.witness,
            body_len: body.len() as u32,
        }
        .encode(&body))
    }
}

/// One sender-authenticated envelope; see [`Sealer`] for many to the same peer.
pub fn seal_authenticated(
    sender: PrincipalId,
    sender_key: &SecretKey,
    recipient: PrincipalId,
    recipient_key: &PublicKey,
    payload: &[u8],
) -> Result<Bytes, CryptoError> {
    Sealer::new(sender, sender_key, recipient, recipient_key).seal(payload)
}

/// An opened envelope.
#[derive(Debug)]
pub struct Opened {
    /// The header's sender; proven only when `authenticated`.
    pub sender: PrincipalId,
    pub authenticated: bool,
    pub payload: Zeroizing<Vec<u8>>,
}

/// The envelope's header, if it is addressed to `me` and sealed to `my_key` (its witness):
/// checked before anything else, so a client can say "sealed to your previous key" rather
/// than fail on the sender or the body.
pub fn addressed_to(
    me: PrincipalId,
    my_key: &SecretKey,
    envelope: &[u8],
) -> Result<Header, OpenError> {
    let header = Header::parse(envelope)?;
    if header.recipient != me {
        return Err(OpenError::NotForMe(header.recipient));
    }
    let current = Witness::of(my_key.public_key().as_bytes());
    if header.witness != current {
        return Err(OpenError::StaleKey {
            sealed_to: header.witness,
            current,
        });
    }
    Ok(header)
}

/// Opens an envelope addressed to `me`. `sender_key` is the public key this client trusts
/// for the header's sender (needed for authenticated envelopes only).
pub fn open(
    me: PrincipalId,
    my_key: &SecretKey,
    envelope: &[u8],
    sender_key: Option<&PublicKey>,
    replay: &mut ReplayGuard,
) -> Result<Opened, OpenError> {
    let header = addressed_to(me, my_key, envelope)?;
    let body = &envelope[HEADER_LEN..];
    match header.kind {
        Kind::Anonymous => {
            let payload = my_key.unseal(body).map_err(|_| OpenError::Undecryptable)?;
            Ok(Opened {
                sender: header.sender,
                authenticated: false,
                payload: Zeroizing::new(payload),
            })
        }
        Kind::Authenticated => {
            let sender_key = sender_key.ok_or(OpenError::UnknownSender(header.sender))?;
            if body.len() < BOX_NONCE_LEN {
                return Err(OpenError::Forged(header.sender));
            }
            let (nonce, ct) = body.split_at(BOX_NONCE_LEN);
            let sbox = SalsaBox::new(sender_key, my_key);
            let inner = Zeroizing::new(
                sbox.decrypt(nonce.into(), ct)
                    .map_err(|_| OpenError::Forged(header.sender))?,
            );
            if inner.len() < INNER_PREFIX_LEN
                || inner[..16] != header.sender.0
                || inner[16..32] != me.0
            {
                return Err(OpenError::Forged(header.sender));
            }
            let message_id: [u8; 16] = inner[32..48].try_into().expect("16 bytes");
            let sent_ms = u64::from_be_bytes(inner[48..56].try_into().expect("8 bytes"));
            replay.check(header.sender, message_id, sent_ms, now_ms())?;
            Ok(Opened {
                sender: header.sender,
                authenticated: true,
                payload: Zeroizing::new(inner[INNER_PREFIX_LEN..].to_vec()),
            })
        }
    }
}

/// Refuses an authenticated envelope seen before, or sent outside the time window. Ids
/// are remembered for the window only: anything older is refused by its timestamp.
pub struct ReplayGuard {
    window_ms: u64,
    seen: HashMap<(PrincipalId, [u8; 16]), u64>,
}

impl ReplayGuard {
    pub fn new(window: Duration) -> Self {
        ReplayGuard {
            window_ms: window.as_millis() as u64,
            seen: HashMap::new(),
        }
    }

    fn check(
        &mut self,
        sender: PrincipalId,
        id: [u8; 16],
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<(), OpenError> {
        if sent_ms + self.window_ms < now_ms || sent_ms > now_ms + self.window_ms {
            return Err(OpenError::OutOfWindow { sent_ms, now_ms });
        }
        if self.seen.len() >= 4096 {
            let horizon = now_ms.saturating_sub(self.window_ms);
            self.seen.retain(|_, sent| *sent >= horizon);
        }
        if self.seen.insert((sender, id), sent_ms).is_some() {
            return Err(OpenError::Replayed(hex::encode(id)));
        }
        Ok(())
    }
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn password_keys_are_deterministic_and_salted() {
        let salt = random_salt();
        let a = derive_from_password("pw", &salt, FAST).unwrap();
        let b = derive_from_password("pw", &salt, FAST).unwrap();
        let c = derive_from_password("pw", &random_salt(), FAST).unwrap();
        assert_eq!(*a.auth_secret(), *b.auth_secret());
        assert_ne!(*a.auth_secret(), *c.auth_secret());
        assert_ne!(
            a.wrap.as_ref(),
            a.auth.as_ref(),
            "wrap and auth keys differ"
        );
    }

    #[test]
    fn wrap_binds_owner_and_secret() {
        let keys = derive_from_password("pw", &random_salt(), FAST).unwrap();
        let owner = PrincipalId::random();
        let wrapped = keys.wrap(owner, b"bundle");
        assert_eq!(keys.unwrap(owner, &wrapped).unwrap().as_slice(), b"bundle");
        assert!(keys.unwrap(PrincipalId::random(), &wrapped).is_err());
        let other = derive_from_password("other", &random_salt(), FAST).unwrap();
        assert!(other.unwrap(owner, &wrapped).is_err());
    }

    #[test]
    fn token_round_trips_through_its_text_form() {
        let token = Token::generate(PrincipalId::random());
        let parsed: Token = token.reveal().parse().unwrap();
        assert_eq!(parsed.instance, token.instance);
        assert_eq!(*parsed.keys().auth_secret(), *token.keys().auth_secret());
        assert!("srt1.nothex.abc".parse::<Token>().is_err());
        assert!(!format!("{token:?}").contains(&token.reveal()[40..]));
    }

    #[test]
    fn authenticated_envelope_opens_once_and_only_from_its_sender() {
        let (a, b) = (PrincipalId::random(), PrincipalId::random());
        let (ka, kb) = (
            SecretKey::generate(&mut OsRng),
            SecretKey::generate(&mut OsRng),
        );
        let env = seal_authenticated(a, &ka, b, &kb.public_key(), b"hi").unwrap();
        let mut guard = ReplayGuard::default();
        let opened = open(b, &kb, &env, Some(&ka.public_key()), &mut guard).unwrap();
        assert!(opened.authenticated);
        assert_eq!(opened.payload.as_slice(), b"hi");
        assert!(matches!(
            open(b, &kb, &env, Some(&ka.public_key()), &mut guard),
            Err(OpenError::Replayed(_))
        ));

        // A server that claims the envelope came from someone else is caught.
        let mallory = SecretKey::generate(&mut OsRng);
        let mut fresh = ReplayGuard::default();
        assert!(matches!(
            open(b, &kb, &env, Some(&mallory.public_key()), &mut fresh),
            Err(OpenError::Forged(_))
        ));

        // Reflection: A's envelope to B, relabelled as B -> A, does not open for A.
        let mut reflected = env.to_vec();
        reflected[2..18].copy_from_slice(&b.0);
        reflected[18..34].copy_from_slice(&a.0);
        reflected[34..50].copy_from_slice(&Witness::of(ka.public_key().as_bytes()).0);
        assert!(matches!(
            open(a, &ka, &reflected, Some(&kb.public_key()), &mut fresh),
            Err(OpenError::Forged(_))
        ));
    }

    #[test]
    fn envelope_to_a_replaced_key_reports_the_witness() {
        let (a, b) = (PrincipalId::random(), PrincipalId::random());
        let old = SecretKey::generate(&mut OsRng);
        let new = SecretKey::generate(&mut OsRng);
        let env = seal_anonymous(a, b, &old.public_key(), b"x").unwrap();
        let err = open(b, &new, &env, None, &mut ReplayGuard::default()).unwrap_err();
        assert!(matches!(err, OpenError::StaleKey { .. }), "{err}");
        let opened = open(b, &old, &env, None, &mut ReplayGuard::default()).unwrap();
        assert!(!opened.authenticated);
    }

    #[test]
    fn keyring_opens_only_for_its_owner_and_keeps_its_version() {
        let (me, other) = (PrincipalId::random(), PrincipalId::random());
        let key = SecretKey::generate(&mut OsRng);
        let peer = SecretKey::generate(&mut OsRng).public_key();
        let mut ring = Keyring::default();
        ring.pin(other, &peer);
        ring.version = 7;
        let sealed = ring.seal(me, &key);
        let opened = Keyring::open(me, &key, &sealed).unwrap();
        assert!(opened == ring && opened.get(other) == Some(peer));
        // Another principal's id, another key, or one flipped bit: refused.
        assert!(Keyring::open(other, &key, &sealed).is_err());
        let stranger = SecretKey::generate(&mut OsRng);
        assert!(Keyring::open(me, &stranger, &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(Keyring::open(me, &key, &flipped).is_err());
        // An escrow copy (same owner, same id, other purpose) is not a keyring.
        let escrow = escrow_keys(&key).wrap(me, &[1; 13]);
        assert!(Keyring::open(me, &key, &escrow).is_err());
    }

    #[test]
    fn bundles_round_trip() {
        let k = SecretKey::generate(&mut OsRng);
        let owner_key = SecretKey::generate(&mut OsRng).public_key();
        let owner = PrincipalId::random();
        let encoded = Bundle::Instance {
            secret: k.clone(),
            owner,
            owner_public: owner_key.clone(),
        }
        .encode();
        let Bundle::Instance {
            secret,
            owner: o,
            owner_public,
        } = Bundle::decode(&encoded).unwrap()
        else {
            panic!("instance bundle decoded as user");
        };
        assert_eq!(
            (secret.to_bytes(), o, owner_public),
            (k.to_bytes(), owner, owner_key)
        );
        assert!(Bundle::decode(&[9, 1, 2]).is_err());
    }
}
