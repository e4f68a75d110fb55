//! The directory: users, instances, their wrapped keys and verifiers, who is paired with
//! whom, and the metadata log of closed sessions. All SQL lives here, so another backend
//! (PostgreSQL) replaces this one module.
//!
//! Pairings and login credentials are also held in memory ([`cache`]), loaded at start and
//! changed by what each write committed (a [`Change`] list, the same kind a cluster node
//! will receive from the others): the publish path asks "may A address B?" for every envelope and every
//! CONNECT checks a verifier, and neither may cost a database round trip. Holding every
//! login also makes an unknown login cost exactly what a known one does (one hash lookup),
//! so timing does not reveal which accounts exist. The cost is memory: about 100 bytes per
//! principal.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::Row;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

mod cache;

use crate::config;
use crate::revocation::Revoked;
pub use cache::{Cache, Change};
use sealrelay_wire::api::AdminSessionRecord;
use sealrelay_wire::{Close, KdfParams, PrincipalId, PrincipalKind};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("cannot open the directory database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("another broker already serves the PostgreSQL directory {0}: stop it first (brokers cannot share a directory until they share their caches)")]
    InUse(String),
    #[error("directory schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("directory database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("directory row is corrupt: {0}")]
    Corrupt(&'static str),
    /// A registration's invite code is unknown, used or expired.
    #[error("that invite code is not valid (wrong, already used or expired): ask the operator for a new one")]
    InviteRefused,
    /// A keyring write must carry the stored version plus one.
    #[error("the keyring changed since it was read (stored version {current}): re-read it, merge and retry")]
    KeyringVersion { current: i64 },
}

/// What a login is checked against.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: PrincipalId,
    pub kind: PrincipalKind,
    pub verifier: [u8; 32],
}

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

/// A pending operator-issued reset of a user's password.
pub struct PendingReset {
    pub user: PrincipalId,
    pub verifier: [u8; 32],
    pub expires_at: i64,
}

/// One closed MQTT session, as the accounting module reports it.
pub struct SessionRecord {
    pub principal: PrincipalId,
    pub ip: String,
    pub connected_at: i64,
    pub disconnected_at: i64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub close_reason: &'static str,
}

/// Swaps a user's password material (wrapped key, verifier, salt, KDF parameters) in one
/// statement; returns the user's login.
async fn set_password<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    user: PrincipalId,
    new: &NewSecret,
) -> Result<String, DirectoryError> {
    let login: Option<String> = sqlx::query_scalar(
        "UPDATE principals SET wrapped_key = $1, verifier = $2, kdf_salt = $3, kdf_memory_kib = $4, kdf_iterations = $5, kdf_parallelism = $6 \
         WHERE id = $7 AND kind = 'user' RETURNING login",
    )
    .bind(&new.wrapped_key)
    .bind(&new.verifier[..])
    .bind(&new.salt)
    .bind(i64::from(new.kdf.memory_kib))
    .bind(i64::from(new.kdf.iterations))
    .bind(i64::from(new.kdf.parallelism))
    .bind(&user.0[..])
    .fetch_optional(db)
    .await?;
    login.ok_or(DirectoryError::Corrupt(
        "the user vanished while its password was being replaced",
    ))
}

/// Records a user's key proof verifier if none is recorded (it never changes with the
/// password); whether it was.
async fn set_key_verifier<'e>(
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

/// Writes a keyring inside `tx` if its version is the stored one plus one.
async fn put_keyring(
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

pub struct Directory {
    pool: AnyPool,
    /// Credentials, KDF parameters and pairings, changed only by `cache.apply` with what
    /// each commit changed.
    cache: Cache,
    /// Held across every write that changes credentials or pairings, from the SQL until
    /// the cache has the change: commits and cache changes then happen in the same order, so
    /// memory and SQLite agree after any interleaving. SQLite serialises writers anyway, so
    /// this costs nothing it did not already cost.
    writes: tokio::sync::Mutex<()>,
    /// On PostgreSQL, the connection holding the directory's advisory lock for the broker's
    /// life: a second broker on the same database would keep its own cache of credentials
    /// and pairings, blind to this one's changes, so it is refused at start.
    _claim: Option<std::sync::Mutex<AnyConnection>>,
}

/// The advisory lock key a broker holds on its PostgreSQL directory ("sealrela").
const CLAIM_KEY: i64 = 0x7365_616c_7265_6c61;

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The cache's change for a login's new credentials.
fn login_change(login: String, id: PrincipalId, kind: PrincipalKind, verifier: [u8; 32]) -> Change {
    Change::Login {
        login,
        credentials: Credentials { id, kind, verifier },
    }
}

/// The cache's changes for a user's new password material: its salt and parameters, then
/// its verifier.
fn user_changes(login: String, id: PrincipalId, secret: &NewSecret) -> [Change; 2] {
    [
        Change::Kdf {
            login: login.clone(),
            salt: secret.salt.clone(),
            params: secret.kdf,
        },
        login_change(login, id, PrincipalKind::User, secret.verifier),
    ]
}

fn id_of(row: &AnyRow, column: &str) -> Result<PrincipalId, DirectoryError> {
    let bytes: Vec<u8> = row.try_get(column)?;
    PrincipalId::from_slice(&bytes).ok_or(DirectoryError::Corrupt("principal id is not 16 bytes"))
}

fn key_of(row: &AnyRow, column: &str) -> Result<[u8; 32], DirectoryError> {
    let bytes: Vec<u8> = row.try_get(column)?;
    bytes
        .try_into()
        .map_err(|_| DirectoryError::Corrupt("32-byte column has another length"))
}

fn kdf_spec_of(row: &AnyRow) -> Result<(Vec<u8>, KdfParams), DirectoryError> {
    // Stored as integers of whatever width the backend has; read as i64, kept as u32.
    let param = |column| {
        u32::try_from(row.try_get::<i64, _>(column)?)
            .map_err(|_| DirectoryError::Corrupt("a KDF parameter is out of range"))
    };
    Ok((
        row.try_get("kdf_salt")?,
        KdfParams {
            memory_kib: param("kdf_memory_kib")?,
            iterations: param("kdf_iterations")?,
            parallelism: param("kdf_parallelism")?,
        },
    ))
}

fn kind_of(row: &AnyRow) -> Result<PrincipalKind, DirectoryError> {
    match row.try_get::<&str, _>("kind")? {
        "user" => Ok(PrincipalKind::User),
        "instance" => Ok(PrincipalKind::Instance),
        _ => Err(DirectoryError::Corrupt("unknown principal kind")),
    }
}

/// The pool on the SQLite file at `path` (created if missing): write-ahead log, fsync at
/// checkpoints, foreign keys on, writers waiting 5 s for each other. Reached through sqlx's
/// Any driver, so that the same statements serve another backend.
async fn sqlite_pool(path: &Path) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    // The path travels in a URL: every byte that is not plainly safe is escaped.
    let escaped = percent_encoding::utf8_percent_encode(
        &path.to_string_lossy(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string()
    .replace("%2F", "/");
    AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                )
                .await
                .map(drop)
            })
        })
        .connect(&format!("sqlite://{escaped}?mode=rwc"))
        .await
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Directory {
    /// Opens the directory — the SQLite file `directory.database` (created if needed), or
    /// the PostgreSQL database `directory.url` names — and brings its schema up to date.
    pub async fn open(config: &config::Directory) -> Result<Directory, DirectoryError> {
        let opened = |place: String| {
            move |source| DirectoryError::Open {
                path: place,
                source,
            }
        };
        let pool = if config.url.is_empty() {
            let place = config.database.display().to_string();
            let pool = sqlite_pool(&config.database).await.map_err(opened(place))?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            pool
        } else {
            sqlx::any::install_default_drivers();
            // The URL carries no password (the config refuses one): PGPASSWORD or
            // ~/.pgpass give it, so naming the URL in an error reveals nothing.
            // Waiting on a database that is down would hold each request for sqlx's 30 s:
            // past 3 s without a connection the request fails (503) and the client retries.
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(3))
                .connect(&config.url)
                .await
                .map_err(opened(config.url.clone()))?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            pool
        };
        let claim = if config.url.is_empty() {
            None
        } else {
            let mut claim = pool.acquire().await?.detach();
            let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(CLAIM_KEY)
                .fetch_one(&mut claim)
                .await?;
            if !held {
                return Err(DirectoryError::InUse(config.url.clone()));
            }
            Some(std::sync::Mutex::new(claim))
        };
        // The cache starts as the changes that would rebuild it, applied like any others.
        let mut changes = Vec::new();
        for row in sqlx::query("SELECT login, id, kind, verifier FROM principals")
            .fetch_all(&pool)
            .await?
        {
            changes.push(login_change(
                row.try_get("login")?,
                id_of(&row, "id")?,
                kind_of(&row)?,
                key_of(&row, "verifier")?,
            ));
        }
        for row in sqlx::query(
            "SELECT login, kdf_salt, kdf_memory_kib, kdf_iterations, kdf_parallelism FROM principals WHERE kind = 'user'",
        )
        .fetch_all(&pool)
        .await?
        {
            let (salt, params) = kdf_spec_of(&row)?;
            changes.push(Change::Kdf {
                login: row.try_get("login")?,
                salt,
                params,
            });
        }
        for row in sqlx::query("SELECT user_id, instance_id FROM pairings")
            .fetch_all(&pool)
            .await?
        {
            changes.push(Change::Paired {
                user: id_of(&row, "user_id")?,
                instance: id_of(&row, "instance_id")?,
            });
        }
        let cache = Cache::default();
        cache.apply(changes);
        Ok(Directory {
            pool,
            cache,
            writes: tokio::sync::Mutex::new(()),
            _claim: claim,
        })
    }

    /// May `from` address `to`? Answered from memory.
    pub fn is_paired(&self, from: PrincipalId, to: PrincipalId) -> bool {
        self.cache.is_paired(from, to)
    }

    /// The account `id` belongs to (a user is its own; an instance, its owner's). From memory.
    pub fn account_of(&self, id: PrincipalId, kind: PrincipalKind) -> PrincipalId {
        self.cache.account_of(id, kind)
    }

    pub fn peers_of(&self, id: PrincipalId) -> Vec<PrincipalId> {
        self.cache.peers_of(id)
    }

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
        self.cache
            .apply(user_changes(user.name, user.id, &user.secret));
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
        self.cache.apply(user_changes(login, user, &new));
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
        self.cache
            .apply(user_changes(login, user, &previous.secret));
        Ok(Some(Revoked::one(Close::PasswordRolledBack, user)))
    }

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

    /// Salt and KDF parameters of a user, if the name exists (from memory).
    pub fn kdf_of(&self, name: &str) -> Option<(Vec<u8>, KdfParams)> {
        self.cache.kdf_of(name)
    }

    /// A salt length and KDF parameters drawn from the users' mix (see [`Cache::kdf_drawn`]).
    pub fn kdf_drawn(&self, pick: u64) -> Option<(usize, KdfParams)> {
        self.cache.kdf_drawn(pick)
    }

    /// The login's id, kind and verifier, from memory.
    pub fn credentials(&self, login: &str) -> Option<Credentials> {
        self.cache.credentials(login)
    }

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
        self.cache.apply([
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
        self.cache.apply([Change::Removed {
            id: instance,
            login: instance.to_string(),
        }]);
        Ok(Some(Revoked::one(Close::InstanceRemoved, instance)))
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
        self.cache
            .apply(removed.chain(login.map(|login| Change::Removed { id: user, login })));
        let revoked = instances.iter().copied().chain([user]).collect();
        Ok((instances, Revoked::new(Close::AccountDeleted, revoked)))
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
            "UPDATE principals SET wrapped_key = $1, verifier = $2, public_key = COALESCE($3, public_key) \
             WHERE id = $4 AND kind = 'instance' \
             AND EXISTS (SELECT 1 FROM pairings WHERE user_id = $5 AND instance_id = $6) RETURNING login",
        )
        .bind(&secret.wrapped_key)
        .bind(&secret.verifier[..])
        .bind(new_key.as_ref().map(|k| k.public_key.to_vec()))
        .bind(&instance.0[..])
        .bind(&owner.0[..])
        .bind(&instance.0[..])
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
        self.cache.apply([login_change(
            login,
            instance,
            PrincipalKind::Instance,
            secret.verifier,
        )]);
        Ok(Some(Revoked::one(why, instance)))
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
        self.cache
            .apply([login_change(login, user, PrincipalKind::User, dead)]);
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
        self.cache.apply(user_changes(login, user, &new));
        Ok(Some((stale, Revoked::one(Close::PasswordReset, user))))
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

    /// Writes a closed session's metadata and moves its principal's `last_seen`, in one
    /// transaction. A session shorter than `aggregate_below_secs` is added into the row of
    /// its principal, address and close reason for the hour, so a reconnect loop cannot add a
    /// row per connection.
    pub async fn record_session(
        &self,
        r: &SessionRecord,
        aggregate_below_secs: u64,
    ) -> Result<(), DirectoryError> {
        let short = r.disconnected_at.saturating_sub(r.connected_at) < aggregate_below_secs as i64;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO session_log (principal_id, ip, connected_at, disconnected_at, bytes_in, bytes_out, messages_in, messages_out, close_reason, hour) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (principal_id, ip, close_reason, hour) WHERE hour IS NOT NULL DO UPDATE SET \
             sessions = session_log.sessions + 1, \
             disconnected_at = CASE WHEN session_log.disconnected_at > excluded.disconnected_at \
                 THEN session_log.disconnected_at ELSE excluded.disconnected_at END, \
             bytes_in = session_log.bytes_in + excluded.bytes_in, bytes_out = session_log.bytes_out + excluded.bytes_out, \
             messages_in = session_log.messages_in + excluded.messages_in, \
             messages_out = session_log.messages_out + excluded.messages_out",
        )
        .bind(&r.principal.0[..])
        .bind(&r.ip)
        .bind(r.connected_at)
        .bind(r.disconnected_at)
        .bind(r.bytes_in as i64)
        .bind(r.bytes_out as i64)
        .bind(r.messages_in as i64)
        .bind(r.messages_out as i64)
        .bind(r.close_reason)
        .bind(short.then_some(r.connected_at / 3600))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE principals SET last_seen = $1 WHERE id = $2 AND (last_seen IS NULL OR last_seen < $1)",
        )
        .bind(r.disconnected_at)
        .bind(&r.principal.0[..])
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many instances `owner` has.
    pub async fn instance_count(&self, owner: PrincipalId) -> Result<u64, DirectoryError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pairings WHERE user_id = $1")
            .bind(&owner.0[..])
            .fetch_one(&self.pool)
            .await?;
        Ok(count.max(0) as u64)
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

    /// `principal`'s closed sessions since `since` (unix seconds), newest first, at most
    /// `limit`.
    pub async fn sessions_of(
        &self,
        principal: PrincipalId,
        since: i64,
        limit: u32,
    ) -> Result<Vec<AdminSessionRecord>, DirectoryError> {
        sqlx::query(
            "SELECT ip, connected_at, disconnected_at, bytes_in, bytes_out, messages_in, messages_out, close_reason, sessions \
             FROM session_log WHERE principal_id = $1 AND disconnected_at >= $2 \
             ORDER BY disconnected_at DESC LIMIT $3",
        )
        .bind(&principal.0[..])
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let count = |column| row.try_get::<i64, _>(column).map(|n| n.max(0) as u64);
            Ok(AdminSessionRecord {
                ip: row.try_get("ip")?,
                connected_at: row.try_get("connected_at")?,
                disconnected_at: row.try_get("disconnected_at")?,
                bytes_in: count("bytes_in")?,
                bytes_out: count("bytes_out")?,
                messages_in: count("messages_in")?,
                messages_out: count("messages_out")?,
                close_reason: row.try_get("close_reason")?,
                sessions: count("sessions")?,
            })
        })
        .collect()
    }

    /// Deletes session metadata that closed before `cutoff` (unix seconds).
    pub async fn purge_sessions_before(&self, cutoff: i64) -> Result<u64, DirectoryError> {
        Ok(
            sqlx::query("DELETE FROM session_log WHERE disconnected_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const KDF: KdfParams = KdfParams {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    fn secret(verifier: u8) -> NewSecret {
        NewSecret {
            wrapped_key: vec![verifier; 80],
            verifier: [verifier; 32],
            salt: vec![verifier; 16],
            kdf: KDF,
        }
    }

    const ALICE: PrincipalId = PrincipalId([1; 16]);

    /// The directory in the SQLite file at `path`.
    async fn open(path: &Path) -> Directory {
        let config = config::Directory {
            database: path.to_owned(),
            ..crate::config::Config::default().directory
        };
        Directory::open(&config).await.unwrap()
    }

    /// A directory in a fresh SQLite file with one user, alice.
    async fn with_alice() -> (tempfile::TempDir, Arc<Directory>) {
        let dir = tempfile::tempdir().unwrap();
        let directory = Arc::new(open(&dir.path().join("d.db")).await);
        directory
            .register_user(NewUser {
                id: ALICE,
                name: "alice".into(),
                public_key: [2; 32],
                secret: secret(4),
                key_verifier: None,
                invite: None,
            })
            .await
            .unwrap();
        (dir, directory)
    }

    /// The file's path travels in a URL to the driver: whatever it holds opens that file,
    /// a reopened directory holds what the first one wrote, and every connection has the
    /// settings the broker relies on.
    #[tokio::test]
    async fn a_path_with_url_characters_opens_that_very_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a dir?#%20").join("d b#?.db");
        std::fs::create_dir(path.parent().unwrap()).unwrap();
        let directory = open(&path).await;
        directory
            .register_user(NewUser {
                id: ALICE,
                name: "alice".into(),
                public_key: [2; 32],
                secret: secret(4),
                key_verifier: None,
                invite: None,
            })
            .await
            .unwrap();
        directory.close().await;
        assert!(path.exists(), "{}", path.display());
        let reopened = open(&path).await;
        assert_eq!(reopened.credentials("alice").unwrap().id, ALICE);
        let pragma =
            |name: &'static str| sqlx::query_scalar::<_, i64>(name).fetch_one(&reopened.pool);
        assert_eq!(pragma("PRAGMA foreign_keys").await.unwrap(), 1);
        assert_eq!(pragma("PRAGMA synchronous").await.unwrap(), 1, "NORMAL");
        assert_eq!(pragma("PRAGMA busy_timeout").await.unwrap(), 5000);
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&reopened.pool)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing beside it"
        );
    }

    async fn stored_verifier(directory: &Directory, login: &str) -> [u8; 32] {
        let row = sqlx::query("SELECT verifier FROM principals WHERE login = $1")
            .bind(login)
            .fetch_one(&directory.pool)
            .await
            .unwrap();
        key_of(&row, "verifier").unwrap()
    }

    /// The login map is what CONNECT checks; SQLite is what survives a restart. After any
    /// interleaving of credential writes they must hold the same verifier, or a reset
    /// could leave the old password working until the next restart (or the reverse).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn login_map_and_database_agree_after_racing_credential_writes() {
        let (_dir, directory) = with_alice().await;
        let user = ALICE;
        let mut disagreements = 0;
        for round in 0..300u32 {
            let v = (round % 50) as u8 * 4 + 10;
            let racers: Vec<_> = (0..8u8)
                .map(|i| {
                    let d = directory.clone();
                    tokio::spawn(async move {
                        match i % 4 {
                            0 => {
                                let keep = Some(unix_now() + 60);
                                d.change_password(user, secret(v + i), keep).await.map(drop)
                            }
                            1 => d.issue_reset(user, [9; 32], 0).await.map(drop),
                            2 => match d.previous_password("alice").await? {
                                Some(previous) => d.roll_back(&previous, None).await.map(drop),
                                None => Ok(()),
                            },
                            _ => d
                                .complete_reset(user, [2; 32], secret(v + i), None)
                                .await
                                .map(drop),
                        }
                    })
                })
                .collect();
            for racer in racers {
                racer.await.unwrap().unwrap();
            }
            let in_memory = directory.credentials("alice").unwrap().verifier;
            if in_memory != stored_verifier(&directory, "alice").await {
                disagreements += 1;
            }
        }
        assert_eq!(disagreements, 0, "rounds where memory and SQLite disagreed");
    }

    /// Two changes within the grace period keep the material from before the first: an
    /// attacker's second change cannot push the owner's wrap out. A rollback works once.
    #[tokio::test]
    async fn the_first_change_of_a_grace_period_is_kept_and_rolls_back_once() {
        let (_dir, directory) = with_alice().await;
        let change = |verifier: u8, keep: Option<i64>| {
            let directory = directory.clone();
            async move {
                let revoked = directory.change_password(ALICE, secret(verifier), keep);
                assert_eq!(
                    revoked.await.unwrap(),
                    Revoked::one(Close::CredentialsChanged, ALICE)
                );
                directory.previous_password("alice").await.unwrap()
            }
        };
        let keep = Some(unix_now() + 60);
        change(20, keep).await;
        let previous = change(40, keep).await.unwrap();
        assert_eq!(previous.secret.verifier, secret(4).verifier);
        assert_eq!(
            directory.roll_back(&previous, Some([7; 32])).await.unwrap(),
            Some(Revoked::one(Close::PasswordRolledBack, ALICE))
        );
        assert_eq!(
            stored_verifier(&directory, "alice").await,
            secret(4).verifier
        );
        assert_eq!(
            directory.credentials("alice").unwrap().verifier,
            secret(4).verifier
        );
        assert_eq!(directory.key_verifier(ALICE).await.unwrap(), Some([7; 32]));
        assert!(
            directory
                .roll_back(&previous, None)
                .await
                .unwrap()
                .is_none(),
            "used once"
        );
        assert!(directory
            .previous_password("alice")
            .await
            .unwrap()
            .is_none());
        // Without a grace period nothing is kept; an expired row is purged.
        assert!(change(60, None).await.is_none());
        assert!(change(80, Some(unix_now() - 1)).await.is_none());
        assert_eq!(directory.purge_expired_credentials().await.unwrap(), 1);
    }

    /// The same for an instance: token rotations, re-enrolments and its removal racing
    /// leave it either present with one verifier in both places, or gone from both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instance_logins_agree_after_racing_rotation_reenrolment_and_removal() {
        let (_dir, directory) = with_alice().await;
        let owner = ALICE;
        let token = |v: u8| InstanceSecret {
            wrapped_key: vec![v; 80],
            verifier: [v; 32],
        };
        let key = || InstanceKey {
            public_key: [6; 32],
            owner_copy: vec![7; 80],
            keyring: None,
        };
        let mut disagreements = 0;
        for round in 0..100u8 {
            let instance = PrincipalId([round.wrapping_add(100); 16]);
            directory
                .add_instance(owner, instance, token(10), key())
                .await
                .unwrap();
            let racers: Vec<_> = (0..6u8)
                .map(|i| {
                    let d = directory.clone();
                    tokio::spawn(async move {
                        match i {
                            5 => d.remove_instance(owner, instance).await,
                            i if i % 2 == 0 => {
                                d.rekey_instance(owner, instance, token(20 + i), None).await
                            }
                            _ => {
                                d.rekey_instance(owner, instance, token(20 + i), Some(key()))
                                    .await
                            }
                        }
                    })
                })
                .collect();
            for racer in racers {
                racer.await.unwrap().unwrap();
            }
            let login = instance.to_string();
            let in_memory = directory.credentials(&login).map(|c| c.verifier);
            let stored = sqlx::query("SELECT verifier FROM principals WHERE login = $1")
                .bind(&login)
                .fetch_optional(&directory.pool)
                .await
                .unwrap()
                .map(|row| key_of(&row, "verifier").unwrap());
            if in_memory != stored || directory.is_paired(owner, instance) != stored.is_some() {
                disagreements += 1;
            }
        }
        assert_eq!(disagreements, 0, "rounds where memory and SQLite disagreed");
    }
}
