//! Client-side cryptography, one file per concern: key derivation and wrapping
//! ([`derive_from_password`], [`DerivedKeys`]), key bundles ([`Bundle`]), the pinned keyring
//! ([`Keyring`]), instance tokens ([`Token`]), and sealing, opening and replay protection
//! ([`Sealer`], [`open`], [`ReplayGuard`]). `docs/protocol.md` specifies
//! every byte. The broker crate cannot link against any of it: it does not depend on this
//! crate or on the primitives used here (`.ci/run` checks with `cargo tree`).

mod bundle;
mod kdf;
mod keyring;
mod seal;
mod token;

pub use bundle::Bundle;
pub use kdf::{derive_from_password, escrow_keys, key_proof, random_salt, DerivedKeys, SALT_LEN};
pub use keyring::{check_name, Keyring, MAX_NAME_BYTES};
pub use seal::{
    addressed_to, now_ms, open, seal_anonymous, seal_authenticated, MessageId, Opened, ReplayGuard,
    Sealer,
};
pub use token::Token;

use sealrelay_wire::envelope::{HeaderError, Witness};
use sealrelay_wire::PrincipalId;

/// What went wrong deriving, wrapping, sealing or parsing on this side.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Argon2id refused the parameters it was given.
    #[error("Argon2id rejected the KDF parameters: {0}")]
    Kdf(String),
    /// The server asked for parameters outside the client bounds: nothing was derived.
    #[error(transparent)]
    KdfRefused(#[from] sealrelay_wire::KdfRefused),
    /// The wrapped key did not open: a wrong password or token, or an altered bundle.
    #[error("the wrapped key does not open with this password or token (wrong secret, or the bundle was altered)")]
    Unwrap,
    /// The bundle's bytes do not parse.
    #[error("the key bundle is malformed: {0}")]
    Bundle(&'static str),
    /// The text is not an instance token.
    #[error("an instance token looks like srt1.<32 hex id>.<43 base64url chars>")]
    TokenFormat,
    /// The box could not be sealed.
    #[error("sealing failed")]
    Seal,
    /// An envelope version that does not exist was asked for.
    #[error("envelope version {0} cannot be sealed: the versions are 1 and 2")]
    Version(u8),
    /// The keyring did not open with this principal's key.
    #[error("the keyring does not open with this principal's key: the server altered it or sent another's")]
    KeyringUnreadable,
    /// The keyring opened but does not parse.
    #[error("the keyring is malformed: {0}")]
    KeyringFormat(&'static str),
    /// An instance name that cannot be kept (too long, or a control character).
    #[error("that name cannot be used: {0}")]
    Name(&'static str),
}

/// Why an envelope could not be opened. Each case is specific so a user can act on it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The header does not parse (length, version, kind).
    #[error("bad envelope header: {0}")]
    Header(#[from] HeaderError),
    /// Addressed to someone else.
    #[error("envelope is addressed to {0}, not to this principal")]
    NotForMe(PrincipalId),
    /// Sealed to a previous key of this principal (after a password reset): unreadable by
    /// design.
    #[error("envelope was sealed to a previous key of this principal (witness {sealed_to}; current key {current}); it cannot be opened by design — ask the sender to resend")]
    StaleKey {
        /// The witness of the key it was sealed to.
        sealed_to: Witness,
        /// The witness of this principal's current key.
        current: Witness,
    },
    /// A kind-2 envelope from a sender whose key this client does not have.
    #[error("no public key is known for sender {0}")]
    UnknownSender(PrincipalId),
    /// Does not authenticate as coming from its header's sender.
    #[error("envelope does not authenticate as coming from {0}: forged or corrupted")]
    Forged(PrincipalId),
    /// A kind-1 body that does not open with this principal's key.
    #[error("envelope body does not open with this principal's key: forged or corrupted")]
    Undecryptable,
    /// Seen before within the window (hex message id): a replay.
    #[error("envelope {0} was already received: replay refused")]
    Replayed(String),
    #[error("envelope is outside the accepted time window (sent {sent_ms} ms, now {now_ms} ms)")]
    /// Sent outside the window of the replay guard (5 minutes either way): a replay, or a
    /// clock far off.
    OutOfWindow {
        /// When the sender says it sealed it (Unix milliseconds).
        sent_ms: u64,
        /// This client's clock then.
        now_ms: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_box::SecretKey;
    use rand_core::OsRng;
    use sealrelay_wire::KdfParams;

    const FAST: KdfParams = sealrelay_wire::CLIENT_FLOOR;

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

    #[test]
    fn version_1_envelopes_still_open_without_a_reply_field() {
        use chacha20poly1305::aead::{Aead, AeadCore};
        use crypto_box::SalsaBox;
        use sealrelay_wire::envelope::{Header, Kind};
        let (a, b) = (
            SecretKey::generate(&mut OsRng),
            SecretKey::generate(&mut OsRng),
        );
        let (ida, idb) = (PrincipalId([1; 16]), PrincipalId([2; 16]));
        let mut inner = Vec::new();
        inner.extend_from_slice(&ida.0);
        inner.extend_from_slice(&idb.0);
        inner.extend_from_slice(&[9; 16]);
        inner.extend_from_slice(&now_ms().to_be_bytes());
        inner.extend_from_slice(b"old");
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let sealed = SalsaBox::new(&b.public_key(), &a)
            .encrypt(&nonce, inner.as_slice())
            .unwrap();
        let body = [nonce.as_slice(), &sealed].concat();
        let envelope = Header {
            version: 1,
            kind: Kind::Authenticated,
            sender: ida,
            recipient: idb,
            witness: Witness::of(b.public_key().as_bytes()),
            body_len: body.len() as u32,
        }
        .encode(&body);
        let opened = open(
            idb,
            &b,
            &envelope,
            Some(&a.public_key()),
            &mut ReplayGuard::default(),
        )
        .unwrap();
        assert_eq!(opened.payload.as_slice(), b"old");
        assert_eq!(
            (opened.message_id, opened.in_reply_to),
            (Some([9; 16]), None)
        );
    }
}
