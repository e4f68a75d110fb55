//! Instance tokens, `srt1.<instance id>.<secret>`: the instance's password. Client side only.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use sealrelay_wire::{split_secret_form, PrincipalId};

use super::kdf::{split, DerivedKeys};
use super::CryptoError;

/// An instance's one-time token: its id and a 256-bit secret. The secret is already
/// uniformly random, so HKDF alone derives its keys; Argon2 would add nothing.
pub struct Token {
    /// The instance the token logs in as.
    pub instance: PrincipalId,
    secret: Zeroizing<[u8; 32]>,
}

impl Token {
    /// A fresh token for `instance`: 32 random bytes behind its id.
    pub fn generate(instance: PrincipalId) -> Token {
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(secret.as_mut());
        Token { instance, secret }
    }

    /// The keys the token derives (HKDF, no Argon2id: it is already random): its wrap key and
    /// login secret.
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
