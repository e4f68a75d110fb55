//! The broker's files on disk: the directories it creates (0700), the secrets it creates
//! (0600: operator token, prelogin key), the database created private before SQLite opens it
//! (its WAL and shared-memory files take the database's mode), a warning for any of them that
//! others or a group not the broker's own can read, and the single-node lock that keeps a
//! second broker off the same database.
//!
//! Uses std, and zeroize for the key files' secrets. Never logs a file's content: paths and modes only.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot use the {what} file {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("another broker (pid {pid}) already serves the database {database}: stop it first, or give this one its own directory.database")]
    Locked { database: String, pid: String },
}

fn file_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.display().to_string();
    move |source| DataError::File { what, path, source }
}

/// Creates the directory holding `path` (mode 0700) if it is missing, so the embedded
/// defaults can keep the broker's state under `data/`.
pub fn ensure_parent(path: &Path, what: &'static str) -> Result<(), DataError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).map_err(file_error(what, dir))
}

/// Read-write, created with mode 0600 if missing (an existing file keeps its mode:
/// `warn_if_exposed` reports it).
fn private() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
}

/// Creates the database file private (0600) before SQLite does: SQLite gives the WAL and
/// shared-memory files the database's own mode, so they are private too.
pub fn create_database(path: &Path) -> Result<(), DataError> {
    private()
        .open(path)
        .map(drop)
        .map_err(file_error("database", path))
}

/// A 32-byte secret from a key file, on the heap and wiped when dropped: moving it moves a
/// pointer, so it leaves no copy in the stack frames it passes through.
pub type KeyBytes = Zeroizing<Box<[u8]>>;

const KEY_LEN: usize = 32;

/// Reads a 32-byte secret (prelogin's fake-salt key, the operator token), creating it
/// (mode 0600) if absent.
pub fn key_file(path: &Path, what: &'static str) -> Result<KeyBytes, DataError> {
    match read_key_file(path, what) {
        Err(DataError::File { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create_key_file(path, what)
        }
        other => other,
    }
}

/// Reads a 32-byte secret the broker created; never creates one (the admin CLI must find
/// the broker's token, not make its own).
pub fn read_key_file(path: &Path, what: &'static str) -> Result<KeyBytes, DataError> {
    let key = Zeroizing::new(
        std::fs::read(path)
            .map_err(file_error(what, path))?
            .into_boxed_slice(),
    );
    if key.len() != KEY_LEN {
        return Err(file_error(what, path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "expected exactly 32 bytes",
        )));
    }
    Ok(key)
}

fn create_key_file(path: &Path, what: &'static str) -> Result<KeyBytes, DataError> {
    use rand_core::RngCore;
    let mut key = Zeroizing::new(vec![0u8; KEY_LEN].into_boxed_slice());
    rand_core::OsRng.fill_bytes(&mut key);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(&key))
        .map_err(file_error(what, path))?;
    Ok(key)
}

/// Logs one warning per file that others, or a group other than the broker's own, may read:
/// the database holds verifiers and wrapped keys (a stolen copy is an offline guessing attack
/// on every password), the key files are secrets outright.
pub fn warn_if_exposed(paths: &[PathBuf]) {
    #[cfg(unix)]
    for path in paths {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        // SAFETY: getegid only reads this process's effective group id.
        if exposed(mode, meta.gid(), unsafe { libc::getegid() }) {
            tracing::warn!(
                file = %path.display(),
                mode = %format!("{mode:o}"),
                "readable by group or others: run chmod 600 on it (it holds password verifiers, wrapped keys or secrets)"
            );
        }
    }
}

/// Whether a file of `mode` and group `gid` lets anyone but the broker read or write it. Its
/// own group (`own_gid`) is the broker: a Kubernetes Secret reaches a pod's user only through
/// the pod's group (fsGroup, mode 0440), and that group holds no one else.
fn exposed(mode: u32, gid: u32, own_gid: u32) -> bool {
    mode & 0o007 != 0 || (mode & 0o070 != 0 && gid != own_gid)
}

/// The database's single-node lock, `<database>.lock`, held for the broker's lifetime (the
/// operating system releases it when the process ends, however it ends).
pub struct DataLock {
    /// Holding the open, locked file is the lock.
    _file: File,
}

impl DataLock {
    /// Takes the lock or names the process that holds it.
    pub fn acquire(database: &Path) -> Result<DataLock, DataError> {
        let path = PathBuf::from(format!("{}.lock", database.display()));
        let mut file = private()
            .open(&path)
            .map_err(file_error("database lock", &path))?;
        match file.try_lock() {
            Ok(()) => {
                let pid = std::process::id().to_string();
                file.set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| file.write_all(pid.as_bytes()))
                    .map_err(file_error("database lock", &path))?;
                Ok(DataLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(DataError::Locked {
                    database: database.display().to_string(),
                    pid: Some(pid.trim())
                        .filter(|p| !p.is_empty())
                        .unwrap_or("unknown")
                        .to_owned(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(file_error("database lock", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_database_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sealrelay.db");
        let held = DataLock::acquire(&db).unwrap();
        let e = DataLock::acquire(&db).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "another broker (pid {}) already serves the database {}: stop it first, or give this one its own directory.database",
                std::process::id(),
                db.display()
            )
        );
        drop(held);
        DataLock::acquire(&db).unwrap();
    }

    #[test]
    fn a_file_is_exposed_to_others_or_to_a_group_that_is_not_the_brokers_own() {
        assert!(!exposed(0o600, 5, 7));
        assert!(exposed(0o604, 7, 7), "others may read");
        assert!(exposed(0o640, 5, 7), "another group may read");
        assert!(
            !exposed(0o440, 7, 7),
            "the broker's own group: a Kubernetes Secret"
        );
        assert!(exposed(0o660, 5, 7));
    }

    #[cfg(unix)]
    #[test]
    fn the_database_is_created_private_and_keeps_an_existing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sealrelay.db");
        create_database(&db).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_database(&db).unwrap();
        assert_eq!(
            mode(&db),
            0o644,
            "an existing file is reported, not silently changed"
        );
    }
}
