//! Printable secret forms, `<prefix>.<principal id>.<secret>`: instance tokens (`srt1`)
//! and operator-issued reset codes (`srr1`). The broker sees only verifiers of the secret
//! part; the id lets a client bind its key material to the principal before it can log in.

use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::b64;
use crate::id::PrincipalId;

/// What the server stores of a login secret (protocol §2.3):
/// `SHA-256("sealrelay/v1/verifier" || secret as ASCII)`. The secret is high-entropy, so a
/// fast hash suffices; clients use it to check test vectors, never to log in.
pub fn verifier(secret: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"sealrelay/v1/verifier")
        .chain_update(secret.as_bytes())
        .finalize()
        .into()
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
    /// The user the code resets.
    pub user: PrincipalId,
    secret: zeroize::Zeroizing<String>,
}

/// Text that is not a reset code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a reset code looks like srr1.<32 hex id>.<43 base64url chars>")]
pub struct BadResetCode;

impl ResetCode {
    /// A fresh code for `user`.
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
}
