//! Instances and their pairing with the user who added it: adding, removing, listing, new
//! tokens and re-enrolment. Uses the directory's pool, cache and write lock.

use sqlx::Row;

use super::keyrings::{put_keyring, KeyringWrite};
use super::{
    id_of, key_of, login_change, unique_violation, unix_now, Change, Directory, DirectoryError,
};
use crate::revocation::Revoked;
use sealrelay_wire::{Close, PrincipalId, PrincipalKind};

/// An instance's token material: its bundle wrapped under the token, and the token's
/// verifier. New at creation, rotation and re-enrolment.
pub struct InstanceSecret {
    pub wrapped_key: Vec<u8>,
    pub verifier: [u8; 32],
}

/// An instance's key pair material, as its owner's console made it: new at creation and
/// re-enrolment, with the owner's keyring pinning it (written in the same transaction).
pub struct InstanceKey {
    pub public_key: [u8; 32],
    /// The owner's escrow copy of the instance bundle (opaque here).
    pub owner_copy: Vec<u8>,
    pub keyring: Option<KeyringWrite>,
}

pub struct InstanceInfo {
    pub id: PrincipalId,
    pub public_key: [u8; 32],
    pub created_at: i64,
    pub owner_copy: Option<Vec<u8>>,
    /// The owner's key was replaced by a reset since this instance was enrolled.
    pub stale_owner_key: bool,
    /// When its last MQTT session ended (unix seconds), if it ever connected.
    pub last_seen: Option<i64>,
}

impl Directory {
    /// Stores a new instance and pairs it with its owner, in one transaction.
    pub async fn add_instance(
        &self,
        owner: PrincipalId,
        instance: PrincipalId,
        secret: InstanceSecret,
        key: InstanceKey,
    ) -> Result<(), DirectoryError> {
        let _writing = self.writes.lock().await;
        let now = unix_now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO principals (id, kind, login, public_key, wrapped_key, verifier, created_at) VALUES ($1, 'instance', $2, $3, $4, $5, $6)",
        )
        .bind(&instance.0[..])
        .bind(instance.to_string())
        .bind(&key.public_key[..])
        .bind(&secret.wrapped_key)
        .bind(&secret.verifier[..])
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                DirectoryError::Conflict("a principal with that instance id")
            } else {
                e.into()
            }
        })?;
        sqlx::query("INSERT INTO pairings (user_id, instance_id, created_at, owner_copy) VALUES ($1, $2, $3, $4)")
            .bind(&owner.0[..])
            .bind(&instance.0[..])
            .bind(now)
            .bind(&key.owner_copy)
            .execute(&mut *tx)
            .await?;
        if let Some(keyring) = &key.keyring {
            put_keyring(&mut tx, owner, keyring).await?;
        }
        tx.commit().await?;
        self.applied([
            Change::Paired {
                user: owner,
                instance,
            },
            login_change(
                instance.to_string(),
                instance,
                PrincipalKind::Instance,
                secret.verifier,
            ),
        ]);
        Ok(())
    }

    /// Deletes `instance` if `owner` owns it (its pairings go with it), and forgets its
    /// login and pairings in memory. `false` when there is no such instance of this owner.
    pub async fn remove_instance(
        &self,
        owner: PrincipalId,
        instance: PrincipalId,
    ) -> Result<Option<Revoked>, DirectoryError> {
        let _writing = self.writes.lock().await;
        let deleted = sqlx::query(
            "DELETE FROM principals WHERE id = $1 AND kind = 'instance' \
             AND EXISTS (SELECT 1 FROM pairings WHERE user_id = $2 AND instance_id = $3)",
        )
        .bind(&instance.0[..])
        .bind(&owner.0[..])
        .bind(&instance.0[..])
        .execute(&self.pool)
        .await?
        .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        self.applied([Change::Removed {
            id: instance,
            login: instance.to_string(),
        }]);
        Ok(Some(Revoked::one(Close::InstanceRemoved, instance)))
    }

    pub async fn instances_of(
        &self,
        owner: PrincipalId,
    ) -> Result<Vec<InstanceInfo>, DirectoryError> {
        sqlx::query(
            "SELECT p.id, p.public_key, p.created_at, p.last_seen, x.owner_copy, x.stale_owner_key FROM pairings x JOIN principals p ON p.id = x.instance_id \
             WHERE x.user_id = $1 ORDER BY p.created_at, p.id",
        )
        .bind(&owner.0[..])
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(InstanceInfo {
                id: id_of(row, "id")?,
                public_key: key_of(row, "public_key")?,
                created_at: row.try_get("created_at")?,
                owner_copy: row.try_get("owner_copy")?,
                stale_owner_key: row.try_get::<i64, _>("stale_owner_key")? != 0,
                last_seen: row.try_get("last_seen")?,
            })
        })
        .collect()
    }

    /// Gives an instance of `owner` a new token and, on re-enrolment, a new key pair (its
    /// stale flag cleared, the owner's keyring written in the same transaction). The old
    /// token stops working. `false` when there is no such instance of this owner.
    pub async fn rekey_instance(
        &self,
        owner: PrincipalId,
        instance: PrincipalId,
        secret: InstanceSecret,
        new_key: Option<InstanceKey>,
    ) -> Result<Option<Revoked>, DirectoryError> {
        let why = match new_key {
            Some(_) => Close::Reenrolled,
            None => Close::TokenRotated,
        };
        let _writing = self.writes.lock().await;
        let mut tx = self.pool.begin().await?;
        let login: Option<String> = sqlx::query_scalar(
            "UPDATE principals SET wrapped_key = $1, verifier = $2, public_key = COALESCE($3, public_key), \
             changed_at = $7 WHERE id = $4 AND kind = 'instance' \
             AND EXISTS (SELECT 1 FROM pairings WHERE user_id = $5 AND instance_id = $6) RETURNING login",
        )
        .bind(&secret.wrapped_key)
        .bind(&secret.verifier[..])
        .bind(new_key.as_ref().map(|k| k.public_key.to_vec()))
        .bind(&instance.0[..])
        .bind(&owner.0[..])
        .bind(&instance.0[..])
        .bind(super::unix_now())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(login) = login else { return Ok(None) };
        if let Some(new_key) = &new_key {
            sqlx::query(
                "UPDATE pairings SET owner_copy = $1, stale_owner_key = 0 WHERE user_id = $2 AND instance_id = $3",
            )
            .bind(&new_key.owner_copy)
            .bind(&owner.0[..])
            .bind(&instance.0[..])
            .execute(&mut *tx)
            .await?;
            if let Some(keyring) = &new_key.keyring {
                put_keyring(&mut tx, owner, keyring).await?;
            }
        }
        tx.commit().await?;
        self.applied([login_change(
            login,
            instance,
            PrincipalKind::Instance,
            secret.verifier,
        )]);
        Ok(Some(Revoked::one(why, instance)))
    }

    /// How many instances `owner` has.
    pub async fn instance_count(&self, owner: PrincipalId) -> Result<u64, DirectoryError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pairings WHERE user_id = $1")
            .bind(&owner.0[..])
            .fetch_one(&self.pool)
            .await?;
        Ok(count.max(0) as u64)
    }
}
