//! Recovery: invite codes, operator-issued resets (the old login killed at once) and their
//! completion, and the purge of expired codes and kept passwords. Only verifiers of codes.

use sqlx::Row;

use super::principals::{set_password, NewSecret};
use super::{id_of, key_of, login_change, unix_now, user_changes, Directory, DirectoryError};
use crate::revocation::Revoked;
use sealrelay_wire::{Close, PrincipalId, PrincipalKind};

/// A pending operator-issued reset of a user's password.
pub struct PendingReset {
    pub user: PrincipalId,
    pub verifier: [u8; 32],
    pub expires_at: i64,
}

impl Directory {
    /// Records an invite code (its verifier), usable once until `expires_at`.
    pub async fn issue_invite(
        &self,
        verifier: [u8; 32],
        expires_at: i64,
    ) -> Result<(), DirectoryError> {
        sqlx::query("INSERT INTO invites (verifier, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(&verifier[..])
            .bind(unix_now())
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets replaced password material and invites whose time is over; how many rows.
    pub async fn purge_expired_credentials(&self) -> Result<u64, DirectoryError> {
        let now = unix_now();
        let mut purged = 0;
        for table in ["previous_passwords", "invites"] {
            purged += sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= $1"))
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(purged)
    }

    /// Records a reset code (its verifier) for `user` and kills the current login at once:
    /// the verifier is replaced by one of a secret nobody holds. `false` if there is no such
    /// user.
    pub async fn issue_reset(
        &self,
        user: PrincipalId,
        code_verifier: [u8; 32],
        expires_at: i64,
    ) -> Result<Option<Revoked>, DirectoryError> {
        let _writing = self.writes.lock().await;
        let mut dead = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut dead);
        let mut tx = self.pool.begin().await?;
        let login: Option<String> = sqlx::query_scalar(
            "UPDATE principals SET verifier = $1 WHERE id = $2 AND kind = 'user' RETURNING login",
        )
        .bind(&dead[..])
        .bind(&user.0[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some(login) = login else { return Ok(None) };
        // An operator's reset is deliberate: no change of password before it may be undone.
        sqlx::query("DELETE FROM previous_passwords WHERE user_id = $1")
            .bind(&user.0[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO resets (user_id, verifier, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET verifier = excluded.verifier, expires_at = excluded.expires_at",
        )
        .bind(&user.0[..])
        .bind(&code_verifier[..])
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.applied([login_change(login, user, PrincipalKind::User, dead)]);
        Ok(Some(Revoked::one(Close::PasswordReset, user)))
    }

    /// The pending reset of user `name`, if any (expired or not).
    pub async fn pending_reset(&self, name: &str) -> Result<Option<PendingReset>, DirectoryError> {
        let row = sqlx::query(
            "SELECT r.user_id, r.verifier, r.expires_at FROM resets r JOIN principals p ON p.id = r.user_id \
             WHERE p.login = $1 AND p.kind = 'user'",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(PendingReset {
                user: id_of(&row, "user_id")?,
                verifier: key_of(&row, "verifier")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Completes a reset: consumes the pending code (once: a second use finds none), gives
    /// the user its new key pair and password material, drops its keyring (sealed under the
    /// old key) and flags its pairings, whose instances pin the old key. Returns those
    /// instances; `None` if the code was already used.
    pub async fn complete_reset(
        &self,
        user: PrincipalId,
        public_key: [u8; 32],
        new: NewSecret,
        key_verifier: Option<[u8; 32]>,
    ) -> Result<Option<(Vec<PrincipalId>, Revoked)>, DirectoryError> {
        let _writing = self.writes.lock().await;
        let mut tx = self.pool.begin().await?;
        let consumed = sqlx::query("DELETE FROM resets WHERE user_id = $1")
            .bind(&user.0[..])
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if consumed == 0 {
            return Ok(None);
        }
        let login = set_password(&mut *tx, user, &new).await?;
        sqlx::query(
            "UPDATE principals SET public_key = $1, keyring = NULL, keyring_version = 0, key_verifier = $2 WHERE id = $3",
        )
        .bind(&public_key[..])
        .bind(key_verifier.as_ref().map(|v| &v[..]))
        .bind(&user.0[..])
        .execute(&mut *tx)
        .await?;
        let stale = sqlx::query(
            "UPDATE pairings SET stale_owner_key = 1, owner_copy = NULL WHERE user_id = $1 RETURNING instance_id",
        )
        .bind(&user.0[..])
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| id_of(row, "instance_id"))
        .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        self.applied(user_changes(login, user, &new));
        Ok(Some((stale, Revoked::one(Close::PasswordReset, user))))
    }
}
