//! Keyrings and key bundles: a principal's own key material as stored, and its sealed
//! keyring under compare-and-swap. Opaque blobs only.

use sqlx::{AnyConnection, Row};

use super::{id_of, key_of, kind_of, Directory, DirectoryError};
use sealrelay_wire::{PrincipalId, PrincipalKind};

/// A sealed keyring and the version it claims; the write succeeds only if `version` is the
/// stored version plus one.
pub struct KeyringWrite {
    pub version: i64,
    pub blob: Vec<u8>,
}

/// A principal's own key material as stored: public key, the blob only it can open and
/// its sealed keyring.
pub struct KeyBundle {
    pub id: PrincipalId,
    pub kind: PrincipalKind,
    pub public_key: [u8; 32],
    pub wrapped_key: Vec<u8>,
    pub keyring: Option<Vec<u8>>,
    pub keyring_version: i64,
    /// Whether the user's key proof verifier is recorded (always false for instances).
    pub key_proof_recorded: bool,
}

/// Writes a keyring inside `tx` if its version is the stored one plus one.
pub(super) async fn put_keyring(
    tx: &mut AnyConnection,
    id: PrincipalId,
    keyring: &KeyringWrite,
) -> Result<(), DirectoryError> {
    let written = sqlx::query(
        "UPDATE principals SET keyring = $1, keyring_version = $2 WHERE id = $3 AND keyring_version = $4 - 1",
    )
    .bind(&keyring.blob)
    .bind(keyring.version)
    .bind(&id.0[..])
    .bind(keyring.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if written == 0 {
        let current: Option<i64> =
            sqlx::query_scalar("SELECT keyring_version FROM principals WHERE id = $1")
                .bind(&id.0[..])
                .fetch_optional(&mut *tx)
                .await?;
        return Err(DirectoryError::KeyringVersion {
            current: current.unwrap_or(0),
        });
    }
    Ok(())
}

impl Directory {
    pub async fn key_bundle(&self, id: PrincipalId) -> Result<Option<KeyBundle>, DirectoryError> {
        let row = sqlx::query(
            "SELECT id, kind, public_key, wrapped_key, keyring, keyring_version, key_verifier FROM principals WHERE id = $1",
        )
        .bind(&id.0[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(KeyBundle {
                id: id_of(&row, "id")?,
                kind: kind_of(&row)?,
                public_key: key_of(&row, "public_key")?,
                wrapped_key: row.try_get("wrapped_key")?,
                keyring: row.try_get("keyring")?,
                keyring_version: row.try_get("keyring_version")?,
                key_proof_recorded: row.try_get::<Option<Vec<u8>>, _>("key_verifier")?.is_some(),
            })
        })
        .transpose()
    }

    /// Stores a principal's sealed keyring if `keyring.version` follows the stored one.
    pub async fn write_keyring(
        &self,
        id: PrincipalId,
        keyring: &KeyringWrite,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await?;
        put_keyring(&mut tx, id, keyring).await?;
        tx.commit().await?;
        Ok(())
    }
}
