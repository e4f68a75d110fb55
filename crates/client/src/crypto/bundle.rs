//! What a wrapped blob holds once opened: a user's private key, or an instance's private
//! key with its owner's id and public key pinned (protocol §3). Client side only.

use crypto_box::{PublicKey, SecretKey};
use zeroize::Zeroizing;

use sealrelay_wire::PrincipalId;

use super::CryptoError;

/// What a wrapped blob holds once opened.
pub enum Bundle {
    /// A user's private key.
    User {
        /// The user's private key.
        secret: SecretKey,
    },
    /// An instance's private key and the owner it was created by, with the owner's public
    /// key as the owner saw it — authenticated by the wrap, so the server cannot swap it.
    Instance {
        /// The instance's private key.
        secret: SecretKey,
        /// The user who added it.
        owner: PrincipalId,
        /// That user's public key, as the instance pins it (protocol §6).
        owner_public: PublicKey,
    },
}

impl Bundle {
    /// The bundle's bytes (protocol §3), wiped when dropped.
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

    /// Parses a bundle's bytes; a malformed one is [`CryptoError::Bundle`].
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
