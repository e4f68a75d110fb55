//! Principals and their credentials: users' registration, password material (change,
//! the previous one kept for a rollback, the key proof's verifier), account deletion, the
//! operator's listing, and any principal's public key. Uses the directory's pool, cache and
//! write lock; the SQL is the subset both backends speak.

use sqlx::{Any, Row};

use super::{
    id_of, kdf_spec_of, key_of, kind_of, unique_violation, unix_now, user_changes, Change,
    Directory, DirectoryError,
};
use crate::revocation::Revoked;
use sealrelay_wire::{Close, KdfParams, PrincipalId, PrincipalKind};

pub struct NewUser {
    pub id: PrincipalId,
    pub name: String,
    pub public_key: [u8; 32],
    pub secret: NewSecret,
    /// The verifier of the key proof (protocol §2.4), if the client sent one.
    pub key_verifier: Option<[u8; 32]>,
    /// The verifier of the invite code this registration consumes, when invites are required.
    pub invite: Option<[u8; 32]>,
}

/// A user's new password-derived material; the key pair stays.
pub struct NewSecret {
    pub wrapped_key: Vec<u8>,
    pub verifier: [u8; 32],
    pub salt: Vec<u8>,
    pub kdf: KdfParams,
}

/// A user account as the operator lists it.
pub struct UserInfo {
    pub id: PrincipalId,
    pub name: String,
    pub created_at: i64,
    pub last_seen: Option<i64>,
    pub instances: u64,
}

/// The password material a change of password replaced, still within its grace period.
pub struct PreviousPassword {
    pub user: PrincipalId,
    pub public_key: [u8; 32],
    pub secret: NewSecret,
    pub changed_at: i64,
    pub expires_at: i64,
}

/// Swaps a user's password material (wrapped key, verifier, salt, KDF parameters) in one
/// statement; returns the user's login.
pub(super) async fn set_password<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    user: PrincipalId,
    new: &NewSecret,
) -> Result<String, DirectoryError> {
    let login: Option<String> = sqlx::query_scalar(
        "UPDATE principals SET wrapped_key = $1, verifier = $2, kdf_salt = $3, kdf_memory_kib = $4, kdf_iterations = $5, kdf_parallelism = $6, \
         changed_at = $8 WHERE id = $7 AND kind = 'user' RETURNING login",
    )
    .bind(&new.wrapped_key)
    .bind(&new.verifier[..])
    .bind(&new.salt)
    .bind(i64::from(new.kdf.memory_kib))
    .bind(i64::from(new.kdf.iterations))
    .bind(i64::from(new.kdf.parallelism))
    .bind(&user.0[..])
    .bind(super::unix_now())
    .fetch_optional(db)
    .await?;
    login.ok_or(DirectoryError::Corrupt(
        "the user vanished while its password was being replaced",
    ))
}

/// Records a user's key proof verifier if none is recorded (it never changes with the
/// password); whether it was.
pub(super) async fn set_key_verifier<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    user: PrincipalId,
    key_verifier: [u8; 32],
) -> Result<bool, DirectoryError> {
    let written = sqlx::query(
        "UPDATE principals SET key_verifier = $1 WHERE id = $2 AND kind = 'user' AND key_verifier IS NULL",
    )
    .bind(&key_verifier[..])
    .bind(&user.0[..])
    .execute(db)
    .await?
    .rows_affected();
    Ok(written == 1)
}

impl Directory {
    /// Creates a user, consuming its invite (if one is given) in the same transaction: an
    /// invite that does not match refuses before the name is looked at, and a name taken
    /// leaves the invite unused.
    pub async fn register_user(&self, user: NewUser) -> Result<(), DirectoryError> {
        let _writing = self.writes.lock().await;
        let now = unix_now();
        let mut tx = self.pool.begin().await?;
        if let Some(invite) = user.invite {
            let used = sqlx::query("DELETE FROM invites WHERE verifier = $1 AND expires_at > $2")
                .bind(&invite[..])
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if used == 0 {
                return Err(DirectoryError::InviteRefused);
            }
        }
        sqlx::query(
            "INSERT INTO principals (id, kind, login, public_key, wrapped_key, verifier, kdf_salt, kdf_memory_kib, kdf_iterations, kdf_parallelism, created_at, key_verifier) \
             VALUES ($1, 'user', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&user.id.0[..])
        .bind(&user.name)
        .bind(&user.public_key[..])
        .bind(&user.secret.wrapped_key)
        .bind(&user.secret.verifier[..])
        .bind(&user.secret.salt)
        .bind(i64::from(user.secret.kdf.memory_kib))
        .bind(i64::from(user.secret.kdf.iterations))
        .bind(i64::from(user.secret.kdf.parallelism))
        .bind(now)
        .bind(user.key_verifier.as_ref().map(|v| &v[..]))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                DirectoryError::Conflict("a user with that name or id")
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        self.applied(user_changes(user.name, user.id, &user.secret));
        Ok(())
    }

    /// Replaces a user's wrapped key, verifier, salt and KDF parameters in one transaction,
    /// and the login's verifier in memory right after. With `keep_until`, what is replaced
    /// is kept until then for [`Directory::roll_back`] — unless an earlier change's material
    /// is still kept: the first change of a grace period is the one worth undoing.
    pub async fn change_password(
        &self,
        user: PrincipalId,
        new: NewSecret,
        keep_until: Option<i64>,
    ) -> Result<Revoked, DirectoryError> {
        let _writing = self.writes.lock().await;
        let now = unix_now();
        let mut tx = self.pool.begin().await?;
        if let Some(expires_at) = keep_until {
            // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
            sqlx::query(
                "INSERT INTO previous_passwords (user_id, wrapped_key, verifier, kdf_salt, kdf_memory_kib, kdf_iterations, kdf_parallelism, changed_at, expires_at) \
                 SELECT id, wrapped_key, verifier, kdf_salt, kdf_memory_kib, kdf_iterations, kdf_parallelism, $1, $2 FROM principals WHERE id = $3 AND kind = 'user' AND true \
                 ON CONFLICT (user_id) DO UPDATE SET wrapped_key = excluded.wrapped_key, verifier = excluded.verifier, kdf_salt = excluded.kdf_salt, \
                 kdf_memory_kib = excluded.kdf_memory_kib, kdf_iterations = excluded.kdf_iterations, kdf_parallelism = excluded.kdf_parallelism, \
                 changed_at = excluded.changed_at, expires_at = excluded.expires_at WHERE previous_passwords.expires_at <= $4",
            )
            .bind(now)
            .bind(expires_at)
            .bind(&user.0[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let login = set_password(&mut *tx, user, &new).await?;
        tx.commit().await?;
        self.applied(user_changes(login, user, &new));
        Ok(Revoked::one(Close::CredentialsChanged, user))
    }

    /// The verifier of `user`'s key proof, if one was recorded.
    pub async fn key_verifier(
        &self,
        user: PrincipalId,
    ) -> Result<Option<[u8; 32]>, DirectoryError> {
        let row = sqlx::query("SELECT key_verifier FROM principals WHERE id = $1")
            .bind(&user.0[..])
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) if row.try_get::<Option<Vec<u8>>, _>("key_verifier")?.is_some() => {
                Ok(Some(key_of(&row, "key_verifier")?))
            }
            _ => Ok(None),
        }
    }

    /// Records `user`'s key proof verifier if none is recorded yet; whether it was.
    pub async fn record_key_verifier(
        &self,
        user: PrincipalId,
        key_verifier: [u8; 32],
    ) -> Result<bool, DirectoryError> {
        let _writing = self.writes.lock().await;
        set_key_verifier(&self.pool, user, key_verifier).await
    }

    /// The password material user `name`'s last change of password replaced, if it is
    /// still within its grace period.
    pub async fn previous_password(
        &self,
        name: &str,
    ) -> Result<Option<PreviousPassword>, DirectoryError> {
        let row = sqlx::query(
            "SELECT v.user_id, p.public_key, v.wrapped_key, v.verifier, v.kdf_salt, v.kdf_memory_kib, v.kdf_iterations, v.kdf_parallelism, v.changed_at, v.expires_at \
             FROM previous_passwords v JOIN principals p ON p.id = v.user_id \
             WHERE p.login = $1 AND p.kind = 'user' AND v.expires_at > $2",
        )
        .bind(name)
        .bind(unix_now())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let (salt, kdf) = kdf_spec_of(&row)?;
            Ok(PreviousPassword {
                user: id_of(&row, "user_id")?,
                public_key: key_of(&row, "public_key")?,
                secret: NewSecret {
                    wrapped_key: row.try_get("wrapped_key")?,
                    verifier: key_of(&row, "verifier")?,
                    salt,
                    kdf,
                },
                changed_at: row.try_get("changed_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Puts `previous` back as `previous.user`'s password material and forgets it, in one
    /// transaction; `false` if it is no longer kept (used, expired or replaced meanwhile).
    /// With `key_verifier`, records it if none was recorded.
    pub async fn roll_back(
        &self,
        previous: &PreviousPassword,
        key_verifier: Option<[u8; 32]>,
    ) -> Result<Option<Revoked>, DirectoryError> {
        let _writing = self.writes.lock().await;
        let user = previous.user;
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query(
            "DELETE FROM previous_passwords WHERE user_id = $1 AND verifier = $2 AND changed_at = $3 AND expires_at > $4",
        )
        .bind(&user.0[..])
        .bind(&previous.secret.verifier[..])
        .bind(previous.changed_at)
        .bind(unix_now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 0 {
            return Ok(None);
        }
        let login = set_password(&mut *tx, user, &previous.secret).await?;
        if let Some(v) = key_verifier {
            set_key_verifier(&mut *tx, user, v).await?;
        }
        tx.commit().await?;
        self.applied(user_changes(login, user, &previous.secret));
        Ok(Some(Revoked::one(Close::PasswordRolledBack, user)))
    }

    /// Deletes a user and every instance it owns (their pairings go with them) in one
    /// transaction, and forgets their logins and pairings in memory. Session metadata stays
    /// until the accounting retention purges it. Returns the deleted instances' ids.
    pub async fn delete_user(
        &self,
        user: PrincipalId,
    ) -> Result<(Vec<PrincipalId>, Revoked), DirectoryError> {
        let _writing = self.writes.lock().await;
        let mut tx = self.pool.begin().await?;
        let instances = sqlx::query("SELECT instance_id FROM pairings WHERE user_id = $1")
            .bind(&user.0[..])
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| id_of(row, "instance_id"))
            .collect::<Result<Vec<_>, _>>()?;
        for instance in &instances {
            sqlx::query("DELETE FROM principals WHERE id = $1 AND kind = 'instance'")
                .bind(&instance.0[..])
                .execute(&mut *tx)
                .await?;
        }
        let login: Option<String> = sqlx::query_scalar(
            "DELETE FROM principals WHERE id = $1 AND kind = 'user' RETURNING login",
        )
        .bind(&user.0[..])
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let removed = instances.iter().map(|id| Change::Removed {
            id: *id,
            login: id.to_string(),
        });
        self.applied(removed.chain(login.map(|login| Change::Removed { id: user, login })));
        let revoked = instances.iter().copied().chain([user]).collect();
        Ok((instances, Revoked::new(Close::AccountDeleted, revoked)))
    }

    /// Every user account with its instance count, by name (the operator's listing).
    pub async fn users(&self) -> Result<Vec<UserInfo>, DirectoryError> {
        sqlx::query(
            "SELECT p.id, p.login, p.created_at, p.last_seen, \
             (SELECT COUNT(*) FROM pairings x WHERE x.user_id = p.id) AS instances \
             FROM principals p WHERE p.kind = 'user' ORDER BY p.login",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(UserInfo {
                id: id_of(row, "id")?,
                name: row.try_get("login")?,
                created_at: row.try_get("created_at")?,
                last_seen: row.try_get("last_seen")?,
                instances: row.try_get::<i64, _>("instances")?.max(0) as u64,
            })
        })
        .collect()
    }

    pub async fn public_key(
        &self,
        id: PrincipalId,
    ) -> Result<Option<(PrincipalKind, [u8; 32])>, DirectoryError> {
        let row = sqlx::query("SELECT kind, public_key FROM principals WHERE id = $1")
            .bind(&id.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((kind_of(&row)?, key_of(&row, "public_key")?)))
            .transpose()
    }
}
