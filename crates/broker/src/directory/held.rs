//! What the directory holds about a principal, every column of it, for the principal's own
//! transparency report (`GET /v1/me/activity`) and the operator's export of it: its row,
//! its pairings, replaced password material and a pending reset. Stored blobs (wrapped keys,
//! verifiers, sealed keyrings, salts) are shown by size and SHA-256, never their bytes.
//! Reads only; accounting's rows are accounting's to read.

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{id_of, key_of, kind_of, Directory, DirectoryError};
use sealrelay_wire::api::{HeldUntil, PairingActivity, PrincipalActivity, StoredBlob};
use sealrelay_wire::envelope::Witness;
use sealrelay_wire::kdf::KdfParams;
use sealrelay_wire::PrincipalId;

/// A principal's row, its pairings and what is kept about it for a while; its sessions,
/// usage and failed logins are left empty for accounting to fill.
pub struct Held {
    pub principal: PrincipalActivity,
    pub pairings: Vec<PairingActivity>,
    pub held: Vec<HeldUntil>,
}

/// The blob in `column` of `row`, if not NULL.
fn blob(row: &AnyRow, column: &str) -> Result<Option<StoredBlob>, DirectoryError> {
    let bytes: Option<Vec<u8>> = row.try_get(column)?;
    Ok(bytes.map(|bytes| StoredBlob {
        column: column.to_owned(),
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
    }))
}

fn blobs(row: &AnyRow, columns: &[&str]) -> Result<Vec<StoredBlob>, DirectoryError> {
    Ok(columns
        .iter()
        .map(|c| blob(row, c))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}

/// KDF parameters of a row that has them all.
fn kdf(row: &AnyRow) -> Result<Option<KdfParams>, DirectoryError> {
    let param = |c| row.try_get::<Option<i64>, _>(c);
    Ok(
        match (
            param("kdf_memory_kib")?,
            param("kdf_iterations")?,
            param("kdf_parallelism")?,
        ) {
            (Some(m), Some(i), Some(p)) => Some(KdfParams {
                memory_kib: u32::try_from(m).unwrap_or(0),
                iterations: u32::try_from(i).unwrap_or(0),
                parallelism: u32::try_from(p).unwrap_or(0),
            }),
            _ => None,
        },
    )
}

impl Directory {
    /// Every column of `id`'s row (its records left empty); `None` if it does not exist.
    pub async fn principal_held(
        &self,
        id: PrincipalId,
    ) -> Result<Option<PrincipalActivity>, DirectoryError> {
        let Some(row) = sqlx::query(
            "SELECT id, kind, login, public_key, wrapped_key, verifier, kdf_salt, kdf_memory_kib, kdf_iterations, \
             kdf_parallelism, created_at, keyring, keyring_version, last_seen, key_verifier, changed_at \
             FROM principals WHERE id = $1",
        )
        .bind(&id.0[..])
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let public_key = key_of(&row, "public_key")?;
        let principal = PrincipalActivity {
            id: id_of(&row, "id")?,
            kind: kind_of(&row)?,
            login: row.try_get("login")?,
            public_key: public_key.to_vec(),
            witness: Witness::of(&public_key).to_string(),
            kdf: kdf(&row)?,
            stored: blobs(
                &row,
                &[
                    "wrapped_key",
                    "verifier",
                    "kdf_salt",
                    "keyring",
                    "key_verifier",
                ],
            )?,
            keyring_version: u64::try_from(row.try_get::<i64, _>("keyring_version")?).unwrap_or(0),
            created_at: row.try_get("created_at")?,
            changed_at: row.try_get("changed_at")?,
            last_seen: row.try_get("last_seen")?,
            sessions: Vec::new(),
            usage: Vec::new(),
            login_failures: Vec::new(),
        };
        Ok(Some(principal))
    }

    /// Everything the directory holds about `id`: its row, its pairings and what is kept
    /// about it for a while; `None` if it does not exist.
    pub async fn held_about(&self, id: PrincipalId) -> Result<Option<Held>, DirectoryError> {
        let Some(principal) = self.principal_held(id).await? else {
            return Ok(None);
        };
        let pairings = sqlx::query(
            "SELECT user_id, instance_id, created_at, owner_copy, stale_owner_key FROM pairings \
             WHERE user_id = $1 OR instance_id = $1 ORDER BY created_at",
        )
        .bind(&id.0[..])
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(PairingActivity {
                user: id_of(row, "user_id")?,
                instance: id_of(row, "instance_id")?,
                created_at: row.try_get("created_at")?,
                owner_copy: blob(row, "owner_copy")?,
                stale_owner_key: row.try_get::<i64, _>("stale_owner_key")? != 0,
            })
        })
        .collect::<Result<Vec<_>, DirectoryError>>()?;
        let mut held = Vec::new();
        for (what, sql, columns) in [
            (
                "previous_password",
                "SELECT wrapped_key, verifier, kdf_salt, expires_at FROM previous_passwords WHERE user_id = $1",
                &["wrapped_key", "verifier", "kdf_salt"][..],
            ),
            (
                "pending_reset",
                "SELECT verifier, expires_at FROM resets WHERE user_id = $1",
                &["verifier"][..],
            ),
        ] {
            if let Some(row) = sqlx::query(sql)
                .bind(&id.0[..])
                .fetch_optional(&self.pool)
                .await?
            {
                held.push(HeldUntil {
                    what: what.to_owned(),
                    stored: blobs(&row, columns)?,
                    expires_at: row.try_get("expires_at")?,
                });
            }
        }
        Ok(Some(Held {
            principal,
            pairings,
            held,
        }))
    }
}
