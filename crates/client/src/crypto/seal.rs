//! Sealing and opening envelopes (protocol §4): kind 1 (libsodium sealed box) and kind 2
//! (crypto_box from the sender's static key, ids repeated inside), the addressing and
//! witness checks done before anything is opened, and the replay guard. Client side only.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use sealrelay_wire::envelope::{Header, Kind, Witness, HEADER_LEN, VERSION, VERSIONS};
use sealrelay_wire::PrincipalId;

use super::{CryptoError, OpenError};

const BOX_NONCE_LEN: usize = 24;
/// Version 1 inner prefix: sender id, recipient id, message id, sent-at milliseconds.
const INNER_PREFIX_V1: usize = 16 + 16 + 16 + 8;
/// Version 2 adds the id of the message this one answers (zeros: none).
const INNER_PREFIX_V2: usize = INNER_PREFIX_V1 + 16;

/// The random id every kind-2 envelope carries inside; a reply names its request's.
pub type MessageId = [u8; 16];

/// Now, in milliseconds since the Unix epoch (what a kind-2 envelope carries as `sent_at`).
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
        version: VERSION,
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
    /// A sealer from `sender` (with its private key) to `recipient` (with its public key).
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

    /// Seals `payload` in the current version, as a message that answers nothing.
    pub fn seal(&self, payload: &[u8]) -> Result<Bytes, CryptoError> {
        self.seal_message(payload, None)
            .map(|(envelope, _)| envelope)
    }

    /// Seals `payload` in the current version, as the answer to message `in_reply_to` if
    /// given; returns the envelope and the id of the message it carries.
    pub fn seal_message(
        &self,
        payload: &[u8],
        in_reply_to: Option<MessageId>,
    ) -> Result<(Bytes, MessageId), CryptoError> {
        self.seal_in(VERSION, payload, in_reply_to)
    }

    /// Seals `payload` in envelope `version` (protocol §4.3: a reply in its request's, a
    /// message to a peer in the newest it is known to open). Version 1 has no reply field:
    /// `in_reply_to` is left out of it.
    pub fn seal_in(
        &self,
        version: u8,
        payload: &[u8],
        in_reply_to: Option<MessageId>,
    ) -> Result<(Bytes, MessageId), CryptoError> {
        if !VERSIONS.contains(&version) {
            return Err(CryptoError::Version(version));
        }
        let mut inner = Zeroizing::new(Vec::with_capacity(INNER_PREFIX_V2 + payload.len()));
        inner.extend_from_slice(&self.sender.0);
        inner.extend_from_slice(&self.recipient.0);
        let mut message_id = [0u8; 16];
        OsRng.fill_bytes(&mut message_id);
        inner.extend_from_slice(&message_id);
        inner.extend_from_slice(&now_ms().to_be_bytes());
        if version >= 2 {
            inner.extend_from_slice(&in_reply_to.unwrap_or([0; 16]));
        }
        inner.extend_from_slice(payload);
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let ct = self
            .sbox
            .encrypt(&nonce, inner.as_slice())
            .map_err(|_| CryptoError::Seal)?;
        let mut body = Vec::with_capacity(BOX_NONCE_LEN + ct.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        let envelope = Header {
            version,
            kind: Kind::Authenticated,
            sender: self.sender,
            recipient: self.recipient,
            witness: self.witness,
            body_len: body.len() as u32,
        }
        .encode(&body);
        Ok((envelope, message_id))
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
    /// Whether the sender is proven (kind 2); a kind-1 sender is only the broker's word.
    pub authenticated: bool,
    /// The plaintext, wiped when dropped.
    pub payload: Zeroizing<Vec<u8>>,
    /// Kind 2: the message's id, for a reply to name.
    pub message_id: Option<MessageId>,
    /// Kind 2, version 2: the message this one answers.
    pub in_reply_to: Option<MessageId>,
    /// The envelope's version: a reply is sealed in it (protocol §4.3).
    pub version: u8,
    /// Kind 2: when the sender sealed it, in milliseconds since the Unix epoch.
    pub sent_at_ms: Option<u64>,
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
                message_id: None,
                in_reply_to: None,
                version: header.version,
                sent_at_ms: None,
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
            let prefix = if header.version == 1 {
                INNER_PREFIX_V1
            } else {
                INNER_PREFIX_V2
            };
            if inner.len() < prefix || inner[..16] != header.sender.0 || inner[16..32] != me.0 {
                return Err(OpenError::Forged(header.sender));
            }
            let message_id: MessageId = inner[32..48].try_into().expect("16 bytes");
            let sent_ms = u64::from_be_bytes(inner[48..56].try_into().expect("8 bytes"));
            replay.check(header.sender, message_id, sent_ms, now_ms())?;
            let in_reply_to = (prefix == INNER_PREFIX_V2)
                .then(|| <MessageId>::try_from(&inner[56..72]).expect("16 bytes"))
                .filter(|id| *id != [0; 16]);
            Ok(Opened {
                sender: header.sender,
                authenticated: true,
                payload: Zeroizing::new(inner[prefix..].to_vec()),
                message_id: Some(message_id),
                in_reply_to,
                version: header.version,
                sent_at_ms: Some(sent_ms),
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
    /// A guard refusing envelopes sent more than `window` from now either way (the protocol's is 5
    /// minutes: [`ReplayGuard::default`]).
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
