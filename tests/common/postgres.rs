//! A throwaway PostgreSQL server for tests: Debian's binaries, a cluster in a temp dir, on
//! a free loopback port, its socket in that dir, stopped (and the dir removed) when dropped.
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the
//! Debian package creates.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    /// The cluster and the socket; owned by the server's user.
    dir: tempfile::TempDir,
    pub port: u16,
    server: Child,
}

/// The directory of Debian's PostgreSQL binaries (`/usr/lib/postgresql/<version>/bin`).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (.ci/run installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

/// Whether the tests run as root, where PostgreSQL will not.
fn as_root() -> bool {
    let id = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

/// `program` from the PostgreSQL binaries, as the user the server runs as.
fn as_server_user(program: &str) -> Command {
    let path = bin_dir().join(program);
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

/// The server on the cluster in `dir`, on `port`, its socket in `dir`.
fn launch(dir: &std::path::Path, port: u16) -> Child {
    as_server_user("postgres")
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Postgres {
    /// Creates a cluster (user `sealrelay`, trusted on loopback, no fsync) and starts it.
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        if as_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let data = dir.path().join("data");
        let initdb = as_server_user("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "sealrelay", "-N"])
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = launch(dir.path(), port);
        let postgres = Postgres { dir, port, server };
        postgres.wait_until_up();
        postgres
    }

    /// Starts the server again on its cluster and port, after [`Postgres::kill`].
    pub fn start_again(&mut self) {
        self.server = launch(self.dir.path(), self.port);
        self.wait_until_up();
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.psql("postgres", "SELECT 1").status.success() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn psql(&self, database: &str, sql: &str) -> std::process::Output {
        self.psql_with(database, sql, &[])
    }

    fn psql_with(&self, database: &str, sql: &str, flags: &[&str]) -> std::process::Output {
        as_server_user("psql")
            .args(flags)
            .args(["-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "sealrelay",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap()
    }

    /// The unaligned, headerless answer to `sql` in `database`.
    pub fn query(&self, database: &str, sql: &str) -> String {
        let out = self.psql_with(database, sql, &["-tA"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new, empty database: the URL a broker's `directory.url` takes.
    pub fn database(&self) -> String {
        fresh_database(&format!(
            "postgres://sealrelay@127.0.0.1:{}/postgres",
            self.port
        ))
    }

    /// Turns TLS on (a certificate for 127.0.0.1 that is its own CA, made here; loaded by
    /// a configuration reload) and returns the certificate's path, for `sslrootcert`.
    pub fn enable_tls(&self) -> PathBuf {
        let data = self.dir.path().join("data");
        let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
        let owner = if as_root() { "postgres" } else { "" };
        for file in [&cert, &key] {
            if !owner.is_empty() {
                assert!(Command::new("chown")
                    .arg(owner)
                    .arg(file)
                    .status()
                    .unwrap()
                    .success());
            }
        }
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        for sql in [
            "ALTER SYSTEM SET ssl = on",
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "SELECT pg_reload_conf()",
        ] {
            let out = self.psql("postgres", sql);
            assert!(
                out.status.success(),
                "{sql}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ca = self.dir.path().join("ca.pem");
        std::fs::write(&ca, issued.cert.pem()).unwrap();
        ca
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn kill(&mut self) {
        let _ = as_server_user("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.server.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A new, empty database on the server `server` (an admin URL): the URL a broker's
/// `directory.url` takes.
pub fn fresh_database(server: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (admin_url, create) = (server.to_owned(), name.clone());
    // Its own thread and runtime: callers may be inside a runtime or not.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                sqlx::any::install_default_drivers();
                let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap();
                // The simple protocol: CREATE DATABASE runs outside any transaction.
                sqlx::Executor::execute(&admin, format!("CREATE DATABASE {create}").as_str())
                    .await
                    .unwrap();
                admin.close().await;
            })
    })
    .join()
    .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}
