//! Key derivation and wrapping: a password (Argon2id, then HKDF) or a token (HKDF alone)
//! becomes a wrap key and an auth key; the wrap key seals a private-key bundle under
//! XChaCha20-Poly1305 bound to the owner's 16-byte id. Client side only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use crypto_box::SecretKey;
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use sealrelay_wire::{KdfParams, PrincipalId};

use super::CryptoError;

/// Bytes of a KDF salt.
pub const SALT_LEN: usize = 16;
const XNONCE_LEN: usize = 24;

/// The two keys split from one secret: one wraps the private key, one logs in.
pub struct DerivedKeys {
    pub(super) wrap: Zeroizing<[u8; 32]>,
    pub(super) auth: Zeroizing<[u8; 32]>,
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

    /// Opens `wrapped` (a bundle sealed under these keys' wrap key); wrong keys or an altered
    /// blob are [`CryptoError::Unwrap`].
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

pub(super) fn split(salt: Option<&[u8]>, ikm: &[u8]) -> DerivedKeys {
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

/// Argon2id(password, salt) then HKDF into the wrap key and the auth key. Parameters
/// outside the client bounds (protocol §2.1) are refused before any work: whatever a server
/// advertises, every path from a password to a login secret goes through here.
pub fn derive_from_password(
    password: &str,
    salt: &[u8],
    params: KdfParams,
) -> Result<DerivedKeys, CryptoError> {
    let params = params.within_client_bounds()?;
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
pub(super) fn keyring_keys(owner: &SecretKey) -> DerivedKeys {
    split(
        Some(b"sealrelay/v1/keyring"),
        &Zeroizing::new(owner.to_bytes())[..],
    )
}

/// The key proof (protocol §2.4): a login-secret-shaped string only the holder of `owner`
/// can derive. The server keeps a verifier of it, so a change of password, which swaps the
/// wrap of this key, needs the key and not only a captured login secret.
pub fn key_proof(owner: &SecretKey) -> Zeroizing<String> {
    split(
        Some(b"sealrelay/v1/key-proof"),
        &Zeroizing::new(owner.to_bytes())[..],
    )
    .auth_secret()
}

/// A fresh random salt, for a registration or a change of password.
pub fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    salt
}
