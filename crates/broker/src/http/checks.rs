//! Validation of request bodies before anything reaches the directory: sizes of keys and
//! wrapped blobs, secrets, names, KDF policy, ids in paths. Each refusal names the field.

use sealrelay_wire::api::{Enrolment, KeyringBody, PasswordWrap};
use sealrelay_wire::{KdfParams, KdfRefused, KdfSpec, PrincipalId, CLIENT_CEILING};

use super::{ApiError, Result};
use crate::auth::verifier;
use crate::config::Config;
use crate::directory::{InstanceKey, InstanceSecret, KeyringWrite, NewSecret};

const MAX_WRAPPED_KEY: usize = 1024;
/// About 2,700 pinned peers; the JSON body limit below leaves room for its base64.
const MAX_KEYRING: usize = 128 * 1024;
const MAX_NAME_LEN: usize = 64;

/// A key pair and token the owner's console made for an instance, on creation and on
/// re-enrolment alike.
pub(super) fn check_enrolment(e: Enrolment) -> Result<(InstanceSecret, InstanceKey)> {
    check_wrapped(&e.owner_copy)?;
    let secret = instance_secret(e.wrapped_key, e.auth_secret.expose())?;
    let key = InstanceKey {
        public_key: key32(&e.public_key, "public_key")?,
        owner_copy: e.owner_copy,
        keyring: e.keyring.map(check_keyring).transpose()?,
    };
    Ok((secret, key))
}

pub(super) fn key32(bytes: &[u8], field: &str) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| ApiError::BadRequest(format!("{field} must be 32 bytes of base64")))
}

pub(super) fn check_wrapped(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() || bytes.len() > MAX_WRAPPED_KEY {
        return Err(ApiError::BadRequest(format!(
            "wrapped_key must be 1..={MAX_WRAPPED_KEY} bytes"
        )));
    }
    Ok(())
}

pub(super) fn check_keyring(body: KeyringBody) -> Result<KeyringWrite> {
    let version = i64::try_from(body.version).unwrap_or(0);
    if body.keyring.is_empty() || body.keyring.len() > MAX_KEYRING || version < 1 {
        return Err(ApiError::BadRequest(format!(
            "keyring must be 1..={MAX_KEYRING} bytes with a version of at least 1"
        )));
    }
    Ok(KeyringWrite {
        version,
        blob: body.keyring,
    })
}

/// A user's key wrapped under a password, with its login secret and KDF, validated; and
/// the verifier of its key proof, if it carries one.
pub(super) fn check_password_wrap(
    config: &Config,
    wrap: PasswordWrap,
) -> Result<(NewSecret, Option<[u8; 32]>)> {
    check_wrapped(&wrap.wrapped_key)?;
    let kdf = check_kdf(config, &wrap.kdf)?;
    let key_verifier = wrap
        .key_proof
        .map(|proof| secret_verifier(proof.expose(), "key_proof"))
        .transpose()?;
    let secret = NewSecret {
        verifier: check_secret(wrap.auth_secret.expose())?,
        wrapped_key: wrap.wrapped_key,
        salt: wrap.kdf.salt,
        kdf,
    };
    Ok((secret, key_verifier))
}

/// A token's wrapped bundle and login secret, validated.
pub(super) fn instance_secret(wrapped_key: Vec<u8>, auth_secret: &str) -> Result<InstanceSecret> {
    check_wrapped(&wrapped_key)?;
    Ok(InstanceSecret {
        wrapped_key,
        verifier: check_secret(auth_secret)?,
    })
}

pub(super) fn check_secret(secret: &str) -> Result<[u8; 32]> {
    secret_verifier(secret, "auth_secret")
}

/// The verifier of a client-derived secret sent as `field` (a login secret, a key proof).
pub(super) fn secret_verifier(secret: &str, field: &str) -> Result<[u8; 32]> {
    if secret.len() < 32 || secret.len() > 128 {
        return Err(ApiError::BadRequest(format!(
            "{field} must be 32..=128 characters"
        )));
    }
    Ok(verifier(secret))
}

/// User names: 1..=64 of `[A-Za-z0-9._@-]`, and never a principal id (instances log in
/// by their id, and the login namespace is shared).
pub(super) fn check_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !ok_chars
        || name.parse::<PrincipalId>().is_ok()
    {
        return Err(ApiError::BadRequest(format!(
            "name must be 1..={MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ @ - and not a 32-hex-digit id"
        )));
    }
    Ok(())
}

/// The server's policy for a user's KDF: at least its minimum (so a weak client cannot
/// make a weak account), at most what clients can run, and a salt of sane length.
pub(super) fn check_kdf(config: &Config, spec: &KdfSpec) -> Result<KdfParams> {
    let (kdf, min) = (spec.params, &config.kdf);
    if kdf.memory_kib < min.min_memory_kib
        || kdf.iterations < min.min_iterations
        || kdf.parallelism == 0
    {
        return Err(ApiError::BadRequest(format!(
            "KDF parameters are below this server's minimum (memory_kib >= {}, iterations >= {}, parallelism >= 1)",
            min.min_memory_kib, min.min_iterations
        )));
    }
    // Clients refuse to derive above their ceiling (protocol §2.1): such an account could
    // never log in again.
    if let Err(KdfRefused::AboveCeiling(_)) = kdf.within_client_bounds() {
        return Err(ApiError::BadRequest(format!(
            "KDF parameters are beyond what clients run (memory_kib <= {}, iterations <= {}, parallelism <= {})",
            CLIENT_CEILING.memory_kib, CLIENT_CEILING.iterations, CLIENT_CEILING.parallelism
        )));
    }
    if !(16..=64).contains(&spec.salt.len()) {
        return Err(ApiError::BadRequest(
            "kdf.salt must be 16..=64 bytes".into(),
        ));
    }
    Ok(kdf)
}

/// A principal id from a URL path segment.
pub(crate) fn id_param(path: &str) -> Result<PrincipalId> {
    path.parse()
        .map_err(|_| ApiError::BadRequest("the id must be 32 lowercase hex characters".into()))
}

/// `?since=<unix seconds>` of a report; `None` when absent.
pub(crate) fn since_param(query: &str) -> Result<Option<i64>> {
    let mut since = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "since" {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {key:?}: the one parameter is since=<unix seconds>"
            )));
        }
        since = Some(value.parse().map_err(|_| {
            ApiError::BadRequest("since must be unix seconds, e.g. since=1767225600".into())
        })?);
    }
    Ok(since)
}
