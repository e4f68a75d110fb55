//! The directory: users, instances, their wrapped keys and verifiers, and who is paired
//! with whom, in a SQLite file or a PostgreSQL database (`directory.url`). One module per
//! aggregate — `principals`, `pairings`, `recovery`, `keyrings` — each an `impl Directory`
//! over the same pool, in the subset of SQL both engines speak (sqlx's Any driver, `$n`
//! placeholders); only the schema migrations differ per engine. The session log lives on
//! the same database but belongs to accounting (`accounting::log`), which is handed the pool.
//!
//! Pairings and login credentials are also held in memory (`cache`), loaded at start and
//! changed by what each write committed (a [`Change`] list, the same kind a cluster node
//! receives from the others, as principal ids it re-reads): the publish path asks "may A address B?" for every
//! envelope and every CONNECT checks a verifier, and neither may cost a database round
//! trip. Holding every login also makes an unknown login cost exactly what a known one does
//! (one hash lookup), so timing does not reveal which accounts exist. The cost is memory: about 100 bytes per
//! principal.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::Row;
use sqlx::{AnyConnection, AnyPool, Executor};

mod cache;
mod held;
mod keyrings;
mod pairings;
mod principals;
mod recovery;

pub use keyrings::{KeyBundle, KeyringWrite};
pub use pairings::{InstanceInfo, InstanceKey, InstanceSecret};
pub use principals::{NewSecret, NewUser, PreviousPassword, UserInfo};
pub use recovery::PendingReset;

use crate::config;
pub use cache::{Cache, Change};
use sealrelay_wire::{KdfParams, PrincipalId, PrincipalKind};

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
    /// and pairings, blind to this one's changes, so it is refused at start. A restart of the
    /// database drops the lock with the connection: [`Directory::keep_claim`] takes it again.
    claim: Option<tokio::sync::Mutex<AnyConnection>>,
    /// In a cluster, told the principals each commit changed (set once at start): the
    /// other nodes re-read them, so their caches follow this node's writes.
    changed: OnceLock<Box<dyn Fn(Vec<PrincipalId>) + Send + Sync>>,
}

/// The advisory lock key a broker holds on its PostgreSQL directory ("sealrela").
const CLAIM_KEY: i64 = 0x7365_616c_7265_6c61;

/// A connection of its own holding the directory's lock, or `None` if another broker holds it.
async fn take_claim(pool: &AnyPool) -> Result<Option<AnyConnection>, sqlx::Error> {
    let mut claim = pool.acquire().await?.detach();
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(CLAIM_KEY)
        .fetch_one(&mut claim)
        .await?;
    Ok(held.then_some(claim))
}

/// Where a single broker stands with its PostgreSQL directory's lock.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Held, as since start (or no lock to hold: SQLite, a cluster).
    Held,
    /// The database came back from a restart and the lock is this broker's again.
    Retaken,
    /// The database came back and another broker took the lock meanwhile.
    Lost,
    /// The database does not answer: tried again at the next check.
    Unreachable,
}

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

/// What the cache holds of a principal's row (read by [`principal_changes`]).
const CACHED_PRINCIPAL: &str = "SELECT login, id, kind, verifier, kdf_salt, kdf_memory_kib, \
     kdf_iterations, kdf_parallelism";
/// What the cache holds of a pairing's row (read by [`pairing_change`]).
const CACHED_PAIRING: &str = "SELECT user_id, instance_id";

/// The cache's changes for a principal's row: a user's salt and KDF parameters, then the
/// login's credentials. At start for every row, and for a row another node changed.
fn principal_changes(row: &AnyRow) -> Result<Vec<Change>, DirectoryError> {
    let (login, kind): (String, _) = (row.try_get("login")?, kind_of(row)?);
    let mut changes = Vec::with_capacity(2);
    if kind == PrincipalKind::User {
        let (salt, params) = kdf_spec_of(row)?;
        changes.push(Change::Kdf {
            login: login.clone(),
            salt,
            params,
        });
    }
    changes.push(login_change(
        login,
        id_of(row, "id")?,
        kind,
        key_of(row, "verifier")?,
    ));
    Ok(changes)
}

/// The cache's change for a pairing's row.
fn pairing_change(row: &AnyRow) -> Result<Change, DirectoryError> {
    Ok(Change::Paired {
        user: id_of(row, "user_id")?,
        instance: id_of(row, "instance_id")?,
    })
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
    /// A node of a cluster (`shared`) shares its PostgreSQL database with the other nodes;
    /// any other broker claims the database for itself.
    pub async fn open(
        config: &config::Directory,
        shared: bool,
    ) -> Result<Directory, DirectoryError> {
        sqlx::any::install_default_drivers();
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
        let claim = if config.url.is_empty() || shared {
            None
        } else {
            let claim = take_claim(&pool)
                .await?
                .ok_or_else(|| DirectoryError::InUse(config.url.clone()))?;
            Some(tokio::sync::Mutex::new(claim))
        };
        // The cache starts as the changes that would rebuild it, applied like any others.
        let mut changes = Vec::new();
        for row in sqlx::query(&format!("{CACHED_PRINCIPAL} FROM principals"))
            .fetch_all(&pool)
            .await?
        {
            changes.extend(principal_changes(&row)?);
        }
        for row in sqlx::query(&format!("{CACHED_PAIRING} FROM pairings"))
            .fetch_all(&pool)
            .await?
        {
            changes.push(pairing_change(&row)?);
        }
        let cache = Cache::default();
        cache.apply(changes);
        Ok(Directory {
            pool,
            cache,
            writes: tokio::sync::Mutex::new(()),
            claim,
            changed: OnceLock::new(),
        })
    }

    /// Has `tell` named the principals of every commit from now on (once; a cluster sets it).
    pub fn on_change(&self, tell: impl Fn(Vec<PrincipalId>) + Send + Sync + 'static) {
        let _ = self.changed.set(Box::new(tell));
    }

    /// Applies a commit's changes to the cache and names the principals they touched to
    /// whoever listens (ids only: the other nodes read the rest from the database).
    fn applied(&self, changes: impl IntoIterator<Item = Change>) {
        let changes: Vec<Change> = changes.into_iter().collect();
        let ids: Vec<PrincipalId> = changes.iter().filter_map(Change::principal).collect();
        self.cache.apply(changes);
        if let Some(tell) = self.changed.get() {
            tell(ids);
        }
    }

    /// Re-reads what the cache holds of `ids` after another node's commit: their
    /// credentials, KDF parameters and pairings, or their removal. Under the write lock, so a
    /// commit of this node's cannot fall between the read and the cache.
    pub async fn refresh(&self, ids: &[PrincipalId]) -> Result<(), DirectoryError> {
        let _writes = self.writes.lock().await;
        let mut changes = Vec::new();
        for id in ids {
            let row = sqlx::query(&format!("{CACHED_PRINCIPAL} FROM principals WHERE id = $1"))
                .bind(&id.0[..])
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else {
                if let Some(login) = self.cache.login_of(*id) {
                    changes.push(Change::Removed { id: *id, login });
                }
                continue;
            };
            changes.extend(principal_changes(&row)?);
            for row in sqlx::query(&format!(
                "{CACHED_PAIRING} FROM pairings WHERE user_id = $1 OR instance_id = $1"
            ))
            .bind(&id.0[..])
            .fetch_all(&self.pool)
            .await?
            {
                changes.push(pairing_change(&row)?);
            }
        }
        self.cache.apply(changes);
        Ok(())
    }

    /// Forgets what the cache holds of `ids` until they can be re-read: another node changed
    /// them and the database cannot be reached, so the old credentials must not keep working.
    pub fn forget(&self, ids: &[PrincipalId]) {
        let removed = ids.iter().filter_map(|id| {
            self.cache
                .login_of(*id)
                .map(|login| Change::Removed { id: *id, login })
        });
        self.cache.apply(removed.collect::<Vec<_>>());
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

    /// The database's pool, for the session log that shares it (`accounting::log`).
    pub fn pool(&self) -> sqlx::AnyPool {
        self.pool.clone()
    }

    /// Checks, on a single broker's PostgreSQL directory, that this broker still holds the
    /// directory's lock; after the database restarted (which dropped the lock with its
    /// connection) takes it again on a new connection. Nothing to do on SQLite or in a
    /// cluster.
    pub async fn keep_claim(&self) -> Claim {
        let Some(claim) = &self.claim else {
            return Claim::Held;
        };
        let mut held = claim.lock().await;
        let alive = sqlx::query("SELECT 1").execute(&mut *held);
        if matches!(
            tokio::time::timeout(Duration::from_secs(2), alive).await,
            Ok(Ok(_))
        ) {
            return Claim::Held;
        }
        match tokio::time::timeout(Duration::from_secs(5), take_claim(&self.pool)).await {
            Ok(Ok(Some(fresh))) => {
                *held = fresh;
                Claim::Retaken
            }
            Ok(Ok(None)) => Claim::Lost,
            Ok(Err(_)) | Err(_) => Claim::Unreachable,
        }
    }

    /// Writes a consistent copy of the SQLite database to `file` (which must not exist) while
    /// the broker keeps serving: `VACUUM INTO` reads one snapshot, so writes committed during
    /// the copy are simply not in it.
    pub async fn backup_into(&self, file: &std::path::Path) -> Result<(), DirectoryError> {
        sqlx::query("VACUUM INTO ?")
            .bind(file.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the database answers a trivial query within `wait` (`/readyz`).
    pub async fn answers(&self, wait: std::time::Duration) -> bool {
        let asked = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(tokio::time::timeout(wait, asked).await, Ok(Ok(_)))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::Revoked;
    use sealrelay_wire::Close;
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
        Directory::open(&config, false).await.unwrap()
    }

    async fn register_alice(directory: &Directory) {
        let alice = NewUser {
            id: ALICE,
            name: "alice".into(),
            public_key: [2; 32],
            secret: secret(4),
            key_verifier: None,
            invite: None,
        };
        directory.register_user(alice).await.unwrap();
    }

    /// A directory in a fresh SQLite file with one user, alice.
    async fn with_alice() -> (tempfile::TempDir, Arc<Directory>) {
        let dir = tempfile::tempdir().unwrap();
        let directory = Arc::new(open(&dir.path().join("d.db")).await);
        register_alice(&directory).await;
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
        register_alice(&directory).await;
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
