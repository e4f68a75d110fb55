//! Shared harness: starts the real `sealrelay` binary on ephemeral ports in a temporary
//! directory (its database, key file and log all land there, so tests can read every
//! byte it wrote), and drives it with the SDK, rumqttc probes and raw sockets.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod nats;
pub mod postgres;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sealrelay_client::{Api, Client, Identity, MqttVersion};
use sealrelay_wire::{KdfParams, PrincipalId};
use tokio::sync::mpsc;

/// The server's floor (OWASP's Argon2id minimum), so tests stay quick.
pub const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 19_456,
    iterations: 2,
    parallelism: 1,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_sealrelay");

pub struct Broker {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// MQTT over TLS, WebSocket, WebSocket over TLS, and the API over TLS.
    pub mqtts: SocketAddr,
    pub ws: SocketAddr,
    pub wss: SocketAddr,
    pub https: SocketAddr,
    log_path: PathBuf,
    /// A command the broker is started through (`prlimit …`), or empty.
    launcher: Vec<String>,
}

/// An address a listener that is off (or not yet up) has.
const UNSET: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// The address the start line gives for `key`, in the text format (` mqtt=…`) or JSON
/// (`"mqtt":"…"`).
fn find_addr(log: &str, key: &str) -> Option<SocketAddr> {
    if let Some(at) = log.find(&format!("\"{key}\":\"")) {
        let rest = &log[at + key.len() + 4..];
        return rest[..rest.find('"')?].parse().ok();
    }
    let at = log.find(&format!(" {key}="))? + key.len() + 2;
    log[at..].split_whitespace().next()?.parse().ok()
}

/// Every broker a test starts runs on this configuration (and what the test adds to it):
/// every listener on port 0, logs at debug, the KDF floor, the rate limits a test would trip
/// by accident lifted. It ends in `[admin]`, so a test's extra TOML may go on with that
/// section's keys before its own sections.
const TEST_CONFIG: &str = "[mqtt]\nlisten = \"127.0.0.1:0\"\n\
             connects_per_ip_per_minute = 100000\nconnects_per_principal_per_minute = 100000\n\
             [http]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
             [mqtts]\nlisten = \"127.0.0.1:0\"\n[ws]\nlisten = \"127.0.0.1:0\"\n\
             [wss]\nlisten = \"127.0.0.1:0\"\n[https]\nlisten = \"127.0.0.1:0\"\n\
             [kdf]\nmemory_kib = 19456\niterations = 2\n[log]\nlevel = \"debug\"\n\
             [auth]\nregistrations_per_ip_per_hour = 100000\nprelogins_per_ip_per_minute = 100000\n\
             resets_per_ip_per_hour = 100000\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n";

/// Runs `sealrelay serve` on the test configuration and `extra` (TOML) with `env`, in a
/// directory of its own, expecting it to refuse to start; what it said on stderr.
pub fn refused_start(extra: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broker.toml"),
        TEST_CONFIG.to_owned() + extra,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", "broker.toml"])
        .current_dir(dir.path())
        .env("NATS_PASSWORD", nats::PASSWORD)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "it started:\n{said}");
    said
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts a broker with extra `SEALRELAY_*` environment overrides.
    pub fn start_with(env: &[(&str, &str)]) -> Broker {
        Broker::start_through(&[], env)
    }

    /// Starts a broker through `launcher` (a command that runs the one after it, such as
    /// `prlimit --nofile=512`), with extra `SEALRELAY_*` environment overrides.
    pub fn start_through(launcher: &[&str], env: &[(&str, &str)]) -> Broker {
        Broker::start_configured(launcher, env, "")
    }

    /// Starts a broker whose directory is the PostgreSQL database `url` names (in its
    /// config file, so that restarts keep it).
    pub fn start_on_postgres(url: &str) -> Broker {
        Broker::start_configured(&[], &[], &format!("[directory]\nurl = \"{url}\"\n"))
    }

    /// Starts a node of a cluster: its directory the PostgreSQL database `url` names, its
    /// NATS the server(s) `nats` names (as the test user), its prelogin key the file
    /// `prelogin_key` (every node's the same) or one of its own, with `env` overrides.
    pub fn start_in_cluster(
        url: &str,
        nats: &str,
        prelogin_key: Option<&std::path::Path>,
        env: &[(&str, &str)],
    ) -> Broker {
        let mut extra = format!("[directory]\nurl = \"{url}\"\n");
        if let Some(key) = prelogin_key {
            extra += &format!("prelogin_key_file = \"{}\"\n", key.display());
        }
        extra += &format!(
            "[cluster]\nnats_url = \"{nats}\"\nnats_user = \"{}\"\n",
            nats::USER
        );
        Broker::start_configured(&[], env, &extra)
    }

    /// Starts a broker with the test configuration and `extra` (TOML) appended to it. With
    /// `SRTEST_POSTGRES` set (the admin URL of a PostgreSQL server, as `.ci/run`'s
    /// second pass sets it), a broker given no directory gets a fresh database there.
    pub fn start_configured(launcher: &[&str], env: &[(&str, &str)], extra: &str) -> Broker {
        let extra = match std::env::var("SRTEST_POSTGRES") {
            Ok(server) if extra.is_empty() => {
                format!(
                    "[directory]\nurl = \"{}\"\n",
                    postgres::fresh_database(&server)
                )
            }
            _ => extra.to_owned(),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("broker.toml"),
            TEST_CONFIG.to_owned() + &extra,
        )
        .unwrap();
        let mut broker = Broker {
            child: None,
            log_path: dir.path().join("broker.log"),
            dir,
            mqtt: UNSET,
            http: UNSET,
            admin: UNSET,
            mqtts: UNSET,
            ws: UNSET,
            wss: UNSET,
            https: UNSET,
            launcher: launcher.iter().map(|arg| arg.to_string()).collect(),
        };
        broker.spawn(env);
        broker
    }

    /// Starts the broker process in this directory (again, after `stop`) with these overrides.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let before = self.log().len();
        self.child = Some(
            Command::new(self.launcher.first().map_or(BIN, String::as_str))
                .args(self.launcher.iter().skip(1).map(String::as_str))
                .args((!self.launcher.is_empty()).then_some(BIN))
                .args(["serve", "--config", "broker.toml"])
                .current_dir(self.dir.path())
                // What a cluster node logs in to the test NATS servers with; unread otherwise.
                .env("NATS_PASSWORD", nats::PASSWORD)
                .envs(env.iter().copied())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn sealrelay"),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log();
            let fresh = &log[before..];
            if fresh.contains("sealrelay listening") {
                let addr = |key| find_addr(fresh, key).unwrap_or(UNSET);
                self.mqtt = addr("mqtt");
                self.http = addr("http");
                self.admin = addr("admin");
                self.mqtts = addr("mqtts");
                self.ws = addr("ws");
                self.wss = addr("wss");
                self.https = addr("https");
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited with {status} before listening:\n{log}");
            }
            assert!(Instant::now() < deadline, "broker did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker and starts it again on the same ports, database and key file.
    pub fn restart(&mut self) {
        self.stop();
        self.respawn();
    }

    /// Starts the stopped broker again on the same ports, database and key file.
    pub fn respawn(&mut self) {
        let keep: Vec<(String, String)> = [
            ("MQTT", self.mqtt),
            ("HTTP", self.http),
            ("ADMIN", self.admin),
            ("MQTTS", self.mqtts),
            ("WS", self.ws),
            ("WSS", self.wss),
            ("HTTPS", self.https),
        ]
        .iter()
        .map(|(section, addr)| (format!("SEALRELAY_{section}_LISTEN"), addr.to_string()))
        .collect();
        let env: Vec<(&str, &str)> = keep.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.spawn(&env);
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log_path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .unwrap();
        text
    }

    pub fn api(&self) -> Api {
        Api::new(&format!("http://{}", self.http))
    }

    pub fn broker_addr(&self) -> String {
        self.mqtt.to_string()
    }

    /// The development CA that signed the broker's TLS certificate: what a client trusts.
    pub fn dev_cert(&self) -> PathBuf {
        self.dir.path().join("data").join("tls-dev-ca.pem")
    }

    /// The CLI over the given API and MQTT URLs, trusting the development certificate.
    pub fn cli_via(&self, server: &str, broker: &str) -> Command {
        let mut cmd = self.cli();
        cmd.env("SEALRELAY_SERVER", server)
            .env("SEALRELAY_BROKER", broker)
            .env("SEALRELAY_CA_FILE", self.dev_cert());
        cmd
    }

    /// The CLI, pointed at this broker.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("SEALRELAY_SERVER", format!("http://{}", self.http))
            .env("SEALRELAY_BROKER", self.broker_addr())
            .env("SEALRELAY_STATE_DIR", self.dir.path().join("cli-state"))
            .env_remove("SEALRELAY_PASSWORD")
            .env_remove("SEALRELAY_NEW_PASSWORD")
            .env_remove("SEALRELAY_RESET_CODE")
            .env_remove("SEALRELAY_TOKEN")
            .stdin(Stdio::null());
        cmd
    }

    /// The value of one counter series, `name{labels}` exactly as the page prints it; 0 if
    /// the series does not exist yet.
    pub fn counter(&self, series: &str) -> u64 {
        let prefix = format!("{series} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `GET /readyz`: its status and JSON body.
    pub fn readyz(&self) -> (u16, serde_json::Value) {
        let mut answer = ureq::get(&format!("http://{}/readyz", self.http))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let body = answer.body_mut().read_to_string().unwrap();
        (
            answer.status().as_u16(),
            serde_json::from_str(&body).unwrap(),
        )
    }

    /// Waits (`within` at most) until `/readyz` answers `status`; its body then.
    pub fn until_readyz(&self, status: u16, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let (now, body) = self.readyz();
            if now == status {
                return body;
            }
            assert!(Instant::now() < deadline, "/readyz still {now}: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Prometheus page, as a scraper reads it.
    pub fn metrics(&self) -> String {
        ureq::get(&format!("http://{}/metrics", self.http))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// `sealrelay admin reset-user --name <name>` as the operator on the broker's machine:
    /// its config and token file, and the operator API's ephemeral port.
    /// A one-time invite code from the operator (`sealrelay admin invite`).
    pub fn invite(&self) -> String {
        let out = self.admin(&["invite"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.strip_prefix("invite ").unwrap().trim().to_owned()
    }

    pub fn admin_reset(&self, name: &str) -> std::process::Output {
        self.admin(&["reset-user", "--name", name])
    }

    /// The broker's own database, opened beside it: how the malicious-server tests become
    /// the server that rewrites what the directory answers.
    /// The broker's SQLite file, where the embedded defaults put it (under `data/`).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data").join("sealrelay.db")
    }

    /// The broker's `directory.url`, if its directory is on PostgreSQL.
    pub fn directory_url(&self) -> Option<String> {
        let config = std::fs::read_to_string(self.dir.path().join("broker.toml")).unwrap();
        let line = config.lines().find(|l| l.starts_with("url = \"postgres"))?;
        Some(
            line.trim_start_matches("url = ")
                .trim_matches('"')
                .to_owned(),
        )
    }

    /// The broker's directory database, SQLite or PostgreSQL (statements with `$1`
    /// placeholders run on both).
    pub async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = self
            .directory_url()
            .unwrap_or_else(|| format!("sqlite://{}", self.db_path().display()));
        sqlx::AnyPool::connect(&url).await.unwrap()
    }

    /// Sends `signal` (e.g. `HUP`) to the running broker without waiting for anything.
    /// Waits up to 10 s for `text` to appear `times` times in the broker's log.
    pub fn log_shows(&self, text: &str, times: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(text).count() < times {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// The broker process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the broker is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Whether the broker process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Stops the broker with SIGTERM (graceful) and waits for it to exit.
    pub fn stop(&mut self) {
        self.stop_with("TERM");
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the broker to exit; returns its status
    /// and how long it took, or `None` if it was not running.
    pub fn stop_with(&mut self, signal: &str) -> Option<(std::process::ExitStatus, Duration)> {
        let child = self.child.as_ref()?;
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        Some(self.wait_for_exit(Duration::from_secs(15)))
    }

    /// Waits (`within` at most, then kills it and fails) for the broker to exit by itself;
    /// its status and how long that took.
    pub fn wait_for_exit(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("the broker is running");
        let since = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, since.elapsed());
            }
            if since.elapsed() > within {
                let _ = child.kill();
                panic!("broker did not stop within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The operator API's bearer token: the base64url form of the broker's token file.
    pub fn admin_token(&self) -> String {
        sealrelay_wire::b64::encode_url(
            &std::fs::read(self.dir.path().join("data/sealrelay-admin.token")).unwrap(),
        )
    }

    /// `sealrelay admin <args>` against this broker's operator API, with its token.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        self.cli()
            .current_dir(self.dir.path())
            .arg("admin")
            .args(args)
            .args(["--config", "broker.toml"])
            .args(["--admin-url", &format!("http://{}", self.admin)])
            .output()
            .unwrap()
    }

    pub async fn user(&self, name: &str) -> Identity {
        Identity::register_user(&self.api(), name, &format!("pw-{name}"), FAST_KDF)
            .await
            .expect("register user")
    }

    pub async fn client(&self, identity: Identity, version: MqttVersion) -> Client {
        self.try_client(identity, version)
            .await
            .expect("connect client")
    }

    pub async fn try_client(
        &self,
        identity: Identity,
        version: MqttVersion,
    ) -> Result<Client, sealrelay_client::ClientError> {
        Client::connect(self.api(), identity, &self.broker_addr(), version).await
    }

    /// Adds an instance for `user` and logs it in with its token.
    pub async fn instance_of(&self, user: &mut Identity) -> Identity {
        let (_, token) = user.add_instance(&self.api()).await.expect("add instance");
        Identity::login_instance(&self.api(), &token)
            .await
            .expect("instance login")
    }

    /// A user and one of its instances, both connected; the instance echoes.
    pub async fn pair(&self, name: &str, version: MqttVersion) -> (Client, PrincipalId) {
        let mut user = self.user(name).await;
        let instance = self.instance_of(&mut user).await;
        let instance_id = instance.id;
        let mut agent = self.client(instance, version).await;
        tokio::spawn(async move {
            let _ = agent
                .serve(|m| [b"echo:".as_slice(), &m.payload].concat())
                .await;
        });
        (self.client(user, version).await, instance_id)
    }
}

/// `node --test <file>` in the npm package at `<repo>/<package>` (whose `node_modules` must
/// hold `needs`: `npm ci --prefix <package>`, as .ci/run does), with the test's cases as JSON
/// in the environment variable `var`.
pub fn node_test(
    package: &str,
    needs: &str,
    file: &str,
    var: &str,
    cases: &serde_json::Value,
) -> Command {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(package);
    assert!(
        dir.join("node_modules").join(needs).is_dir(),
        "{needs} is not installed: run `npm ci --prefix {package}` (.ci/run does)"
    );
    let mut cmd = Command::new("node");
    cmd.args(["--test", file])
        .current_dir(dir)
        .env(var, cases.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits (off the async runtime) for a node test run and asserts it passed `passed` tests.
pub async fn node_passed(mut cmd: Command, passed: usize) {
    let run = tokio::task::spawn_blocking(move || cmd.output().expect("node (Node 20) on PATH"))
        .await
        .unwrap();
    node_report(run, passed);
}

/// Asserts a finished node test run passed `passed` tests, showing its report if not.
pub fn node_report(run: std::process::Output, passed: usize) {
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success()
            && report.contains(&format!("# pass {passed}\n"))
            && report.contains("# fail 0"),
        "{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The instance id and token that `sealrelay instance add` printed (`instance <id>`,
/// `token <token>` lines).
pub fn instance_and_token(added: &str) -> (String, String) {
    let field = |name: &str| {
        added
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no `{name}` line in: {added}"))
            .trim()
            .to_owned()
    };
    (field("instance "), field("token "))
}

/// Runs the CLI through `cmd` with `password`, asserting success; returns stdout.
pub fn run_cli_ok(mut cmd: Command, args: &[&str], password: &str) -> String {
    let out = cmd
        .args(args)
        .env("SEALRELAY_PASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `sealrelay agent` process; killed when dropped.
pub struct Agent {
    child: Child,
    /// The key witness the agent printed, for checking out of band.
    pub witness: String,
}

impl Agent {
    /// Waits up to `limit` for the agent to exit by itself; its status and the last line
    /// of its stderr.
    pub fn exit_within(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return Some((status, err.trim().lines().last().unwrap_or("").to_owned()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// Runs `sealrelay agent` with the token in its environment and waits until it serves.
    pub fn start_agent(&self, token: &str, version: &str) -> Agent {
        Broker::start_agent_with(self.cli(), token, version)
    }

    /// Runs `sealrelay agent` as `cli` is set up (its endpoints, its CA) and waits until
    /// it serves.
    pub fn start_agent_with(mut cli: Command, token: &str, version: &str) -> Agent {
        use std::io::{BufRead, BufReader};
        let mut child = cli
            .args(["agent", "--mqtt-version", version])
            .env("SEALRELAY_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("serving"), "agent did not start: {first:?}");
        let witness = first
            .split("(key witness ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_default()
            .to_owned();
        Agent { child, witness }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The next message `client` opens, failing the test if none arrives within 5 s.
pub async fn next_message(client: &mut Client) -> sealrelay_client::Message {
    tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("a message within 5 s")
        .expect("the message opens")
}

impl Broker {
    /// Polls the broker's `session_log` (the closed sessions' rows, all or one principal's)
    /// for up to 5 s until `until` holds for the row count; returns that count.
    pub async fn session_rows_until(
        &self,
        principal: Option<PrincipalId>,
        what: &str,
        until: impl Fn(i64) -> bool,
    ) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let db = self.database().await;
            let query = match principal {
                Some(id) => {
                    sqlx::query_scalar("SELECT count(*) FROM session_log WHERE principal_id = $1 AND close_reason <> 'live'")
                        .bind(id.0.to_vec())
                }
                None => sqlx::query_scalar(
                    "SELECT count(*) FROM session_log WHERE close_reason <> 'live'",
                ),
            };
            let rows: i64 = query.fetch_one(&db).await.unwrap();
            db.close().await;
            if until(rows) {
                return rows;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// What an MQTT probe saw, in either protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    ConnAck(u8),
    SubAck(Vec<u8>),
    PubAck(u16, u8),
    PubRec(u16, u8),
    PubComp(u16),
    Publish {
        topic: String,
        qos: u8,
        payload: Bytes,
    },
    Disconnect(u8),
    Closed(String),
}

enum ProbeClient {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A plain MQTT client (rumqttc) that reports every packet it receives, for checking the
/// broker's exact answers. It does not reconnect.
pub struct Probe {
    client: ProbeClient,
    seen: mpsc::UnboundedReceiver<Seen>,
}

pub struct ProbeOptions<'a> {
    pub version: MqttVersion,
    pub client_id: &'a str,
    pub login: Option<(&'a str, &'a str)>,
    pub keep_alive: u64,
    pub will_retain: Option<bool>,
}

impl<'a> ProbeOptions<'a> {
    pub fn new(version: MqttVersion, login: Option<(&'a str, &'a str)>) -> Self {
        ProbeOptions {
            version,
            client_id: "probe",
            login,
            keep_alive: 30,
            will_retain: None,
        }
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Probe {
    /// Connects as `who` and asserts the login succeeded.
    pub async fn logged_in(addr: SocketAddr, version: MqttVersion, who: &Identity) -> Probe {
        let mut p = Probe::logged_in_or(addr, version, who).await;
        assert_eq!(p.next().await, Seen::ConnAck(0), "login as {}", who.login);
        p
    }

    /// Connects as `who` without asserting the answer (the test reads the CONNACK).
    pub async fn logged_in_or(addr: SocketAddr, version: MqttVersion, who: &Identity) -> Probe {
        Probe::connect(
            addr,
            ProbeOptions::new(version, Some((&who.login, who.auth_secret()))),
        )
        .await
    }

    pub async fn connect(addr: SocketAddr, o: ProbeOptions<'_>) -> Probe {
        let (tx, seen) = mpsc::unbounded_channel();
        let host = addr.ip().to_string();
        let client = match o.version {
            MqttVersion::V311 => {
                let mut options = rumqttc::MqttOptions::new(o.client_id, host, addr.port());
                options
                    .set_keep_alive(Duration::from_secs(o.keep_alive))
                    .set_max_packet_size(1 << 20, 1 << 20);
                if let Some((u, p)) = o.login {
                    options.set_credentials(u, p);
                }
                if let Some(retain) = o.will_retain {
                    options.set_last_will(rumqttc::LastWill::new(
                        "will",
                        "bye",
                        rumqttc::QoS::AtMostOnce,
                        retain,
                    ));
                }
                let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
                tokio::spawn(async move {
                    use rumqttc::{ConnectionError as CE, Event, Packet as P};
                    loop {
                        let seen = match eventloop.poll().await {
                            Ok(Event::Incoming(P::ConnAck(a))) => Seen::ConnAck(a.code as u8),
                            Ok(Event::Incoming(P::SubAck(a))) => Seen::SubAck(
                                a.return_codes
                                    .iter()
                                    .map(|c| match c {
                                        rumqttc::SubscribeReasonCode::Success(q) => *q as u8,
                                        rumqttc::SubscribeReasonCode::Failure => 0x80,
                                    })
                                    .collect(),
                            ),
                            Ok(Event::Incoming(P::PubAck(a))) => Seen::PubAck(a.pkid, 0),
                            Ok(Event::Incoming(P::PubRec(a))) => Seen::PubRec(a.pkid, 0),
                            Ok(Event::Incoming(P::PubComp(a))) => Seen::PubComp(a.pkid),
                            Ok(Event::Incoming(P::Publish(p))) => Seen::Publish {
                                topic: p.topic,
                                qos: p.qos as u8,
                                payload: p.payload,
                            },
                            Ok(_) => continue,
                            Err(CE::ConnectionRefused(code)) => {
                                let _ = tx.send(Seen::ConnAck(code as u8));
                                return;
                            }
                            Err(e) => {
                                let _ = tx.send(Seen::Closed(e.to_string()));
                                return;
                            }
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                });
                ProbeClient::V4(client)
            }
            MqttVersion::V5 => {
                let mut options = rumqttc::v5::MqttOptions::new(o.client_id, host, addr.port());
                options
                    .set_keep_alive(Duration::from_secs(o.keep_alive))
                    .set_max_packet_size(Some(1 << 20));
                if let Some((u, p)) = o.login {
                    options.set_credentials(u, p);
                }
                if let Some(retain) = o.will_retain {
                    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                        "will",
                        "bye",
                        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                        retain,
                        None,
                    ));
                }
                let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
                tokio::spawn(async move {
                    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as S;
                    use rumqttc::v5::{ConnectionError as CE, Event, Incoming as P};
                    loop {
                        let seen = match eventloop.poll().await {
                            Ok(Event::Incoming(P::ConnAck(a))) => {
                                Seen::ConnAck(connack_code(a.code))
                            }
                            Ok(Event::Incoming(P::SubAck(a))) => Seen::SubAck(
                                a.return_codes
                                    .iter()
                                    .map(|c| match c {
                                        S::Success(q) => *q as u8,
                                        S::NotAuthorized => 0x87,
                                        S::Failure | S::Unspecified => 0x80,
                                        _ => 0xFF,
                                    })
                                    .collect(),
                            ),
                            Ok(Event::Incoming(P::PubAck(a))) => {
                                Seen::PubAck(a.pkid, sealrelay_client::puback_code(a.reason))
                            }
                            Ok(Event::Incoming(P::PubRec(a))) => {
                                Seen::PubRec(a.pkid, pubrec_code(a.reason))
                            }
                            Ok(Event::Incoming(P::PubComp(a))) => Seen::PubComp(a.pkid),
                            Ok(Event::Incoming(P::Publish(p))) => Seen::Publish {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                qos: p.qos as u8,
                                payload: p.payload,
                            },
                            Ok(Event::Incoming(P::Disconnect(d))) => {
                                Seen::Disconnect(d.reason_code as u8)
                            }
                            Ok(_) => continue,
                            Err(CE::ConnectionRefused(code)) => {
                                let _ = tx.send(Seen::ConnAck(connack_code(code)));
                                return;
                            }
                            Err(CE::MqttState(rumqttc::v5::StateError::ServerDisconnect {
                                reason_code,
                                ..
                            })) => {
                                let _ = tx.send(Seen::Disconnect(reason_code as u8));
                                return;
                            }
                            Err(e) => {
                                let _ = tx.send(Seen::Closed(e.to_string()));
                                return;
                            }
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                });
                ProbeClient::V5(client)
            }
        };
        Probe { client, seen }
    }

    /// The next packet seen, or `Closed`, within 5 s.
    pub async fn next(&mut self) -> Seen {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("probe saw nothing within its timeout")
    }

    pub async fn next_within(&mut self, limit: Duration) -> Option<Seen> {
        match tokio::time::timeout(limit, self.seen.recv()).await {
            Ok(Some(seen)) => Some(seen),
            Ok(None) => Some(Seen::Closed("event loop ended".into())),
            Err(_) => None,
        }
    }

    pub async fn subscribe(&self, filter: &str, qos: u8) {
        match &self.client {
            ProbeClient::V4(c) => c.subscribe(filter, qos4(qos)).await.unwrap(),
            ProbeClient::V5(c) => c.subscribe(filter, qos5(qos)).await.unwrap(),
        }
    }

    pub async fn publish(&self, topic: &str, qos: u8, retain: bool, payload: Bytes) {
        match &self.client {
            ProbeClient::V4(c) => c
                .publish_bytes(topic, qos4(qos), retain, payload)
                .await
                .unwrap(),
            ProbeClient::V5(c) => c
                .publish_bytes(topic, qos5(qos), retain, payload)
                .await
                .unwrap(),
        }
    }
}

fn pubrec_code(reason: rumqttc::v5::mqttbytes::v5::PubRecReason) -> u8 {
    use rumqttc::v5::mqttbytes::v5::PubRecReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::NotAuthorized => 0x87,
        R::QuotaExceeded => 0x97,
        _ => 0x80,
    }
}

fn connack_code(code: rumqttc::v5::mqttbytes::v5::ConnectReturnCode) -> u8 {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
    match code {
        C::Success => 0x00,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::UnsupportedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::ConnectionRateExceeded => 0x9F,
        _ => 0xFF,
    }
}

/// A raw MQTT 5 connection: sends exact bytes, parses what comes back with rumqttc.
pub struct Raw {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

#[derive(Debug)]
pub enum RawRead {
    Packet(Box<rumqttc::v5::mqttbytes::v5::Packet>),
    Eof,
    Timeout,
}

impl Raw {
    pub async fn open(addr: SocketAddr) -> Raw {
        Raw {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buf: bytes::BytesMut::new(),
        }
    }

    /// Opens a connection whose source address is `from` (any 127.x.y.z is loopback on
    /// Linux), so tests can play several client IPs.
    pub async fn open_from(addr: SocketAddr, from: std::net::IpAddr) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        Raw {
            stream: socket.connect(addr).await.unwrap(),
            buf: bytes::BytesMut::new(),
        }
    }

    /// Opens a connection whose kernel receive buffer is about `bytes`: a client that stops
    /// reading fills it, and then the broker's side, quickly.
    pub async fn open_with_receive_buffer(addr: SocketAddr, bytes: u32) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        Raw {
            stream: socket.connect(addr).await.unwrap(),
            buf: bytes::BytesMut::new(),
        }
    }

    /// Opens and logs in over MQTT 5, asserting CONNACK success.
    pub async fn connect_v5(addr: SocketAddr, login: (&str, &str), keep_alive: u16) -> Raw {
        let mut raw = Raw::open(addr).await;
        let code = raw
            .try_connect_v5(login, &format!("raw-{}", rand_suffix()), keep_alive)
            .await;
        assert_eq!(
            code,
            Some(rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success)
        );
        raw
    }

    /// Sends an MQTT 5 CONNECT for `login` on this connection and returns the CONNACK code,
    /// or `None` if the broker closed without one.
    pub async fn try_connect_v5(
        &mut self,
        login: (&str, &str),
        client_id: &str,
        keep_alive: u16,
    ) -> Option<rumqttc::v5::mqttbytes::v5::ConnectReturnCode> {
        self.connect_session(login, client_id, keep_alive, None)
            .await
            .map(|ack| ack.code)
    }

    /// An MQTT 5 CONNECT for `login`; with `persist`, Clean Start 0 and that Session Expiry
    /// Interval (seconds). The CONNACK, or `None` if the broker closed without one.
    pub async fn connect_session(
        &mut self,
        login: (&str, &str),
        client_id: &str,
        keep_alive: u16,
        persist: Option<u32>,
    ) -> Option<rumqttc::v5::mqttbytes::v5::ConnAck> {
        self.connect_session_taking(login, client_id, keep_alive, persist, None)
            .await
    }

    /// [`Raw::connect_session`], the client taking packets up to `max_packet` bytes (its
    /// MQTT 5 Maximum Packet Size) if given.
    pub async fn connect_session_taking(
        &mut self,
        login: (&str, &str),
        client_id: &str,
        keep_alive: u16,
        persist: Option<u32>,
        max_packet: Option<u32>,
    ) -> Option<rumqttc::v5::mqttbytes::v5::ConnAck> {
        use rumqttc::v5::mqttbytes::v5::{Connect, ConnectProperties, Login, Packet};
        let connect = Connect {
            keep_alive,
            client_id: client_id.to_owned(),
            clean_start: persist.is_none(),
            properties: (persist.is_some() || max_packet.is_some()).then(|| ConnectProperties {
                session_expiry_interval: persist,
                max_packet_size: max_packet,
                ..ConnectProperties::new()
            }),
        };
        let login = Login {
            username: login.0.into(),
            password: login.1.into(),
        };
        self.send_v5(Packet::Connect(connect, None, Some(login)))
            .await;
        match self.read(Duration::from_secs(5)).await {
            RawRead::Packet(p) => match *p {
                Packet::ConnAck(ack) => Some(ack),
                other => panic!("expected CONNACK, got {other:?}"),
            },
            RawRead::Eof => None,
            RawRead::Timeout => panic!("no answer to CONNECT within 5 s"),
        }
    }

    /// Subscribes to `id`'s inbox at QoS 1 and waits for the SUBACK.
    pub async fn subscribe_inbox(&mut self, id: sealrelay_wire::PrincipalId) {
        use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Subscribe};
        let filter = Filter::new(id.inbox_topic(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
        self.send_v5(Packet::Subscribe(Subscribe::new(filter, None)))
            .await;
        match self.read(Duration::from_secs(5)).await {
            RawRead::Packet(p) if matches!(*p, Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        // The peer may already have closed; what it answered is what the test reads.
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends an MQTT 3.1.1 packet.
    pub async fn send_v4(&mut self, packet: rumqttc::mqttbytes::v4::Packet) {
        let mut out = bytes::BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.send(&out).await;
    }

    /// The next MQTT 3.1.1 packet within `limit`, or `None` once the server has closed.
    pub async fn read_v4(&mut self, limit: Duration) -> Option<rumqttc::mqttbytes::v4::Packet> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if !self.buf.is_empty() {
                match rumqttc::mqttbytes::v4::Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent bytes rumqttc cannot parse as 3.1.1: {e}"),
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => panic!("no 3.1.1 packet within {limit:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn send_v5(&mut self, packet: rumqttc::v5::mqttbytes::v5::Packet) {
        let mut out = bytes::BytesMut::new();
        packet.write(&mut out, None).unwrap();
        self.send(&out).await;
    }

    pub async fn read(&mut self, limit: Duration) -> RawRead {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if !self.buf.is_empty() {
                match rumqttc::v5::mqttbytes::v5::Packet::read(&mut self.buf, None) {
                    Ok(p) => return RawRead::Packet(Box::new(p)),
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent bytes rumqttc cannot parse: {e}"),
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return RawRead::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return RawRead::Eof,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads until the server closes; returns the packets it sent first.
    pub async fn until_closed(&mut self) -> Vec<rumqttc::v5::mqttbytes::v5::Packet> {
        let mut seen = Vec::new();
        loop {
            match self.read(Duration::from_secs(5)).await {
                RawRead::Packet(p) => seen.push(*p),
                RawRead::Eof => return seen,
                RawRead::Timeout => panic!("server kept the connection open; sent {seen:?}"),
            }
        }
    }

    /// Reads raw bytes until the server closes (for answers that are not MQTT 5).
    pub async fn raw_until_closed(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut all = self.buf.split().to_vec();
        let read =
            tokio::time::timeout(Duration::from_secs(5), self.stream.read_to_end(&mut all)).await;
        assert!(read.is_ok(), "server kept the connection open");
        all
    }
}

fn rand_suffix() -> String {
    hex::encode(&PrincipalId::random().0[..4])
}

/// A man in the middle between one MQTT client and the broker: it forwards both ways and
/// can slip whole PUBLISH packets of its own into what the client receives. This is the
/// broker turned malicious — it can deliver anything to anyone — without a forging code
/// path in the broker itself.
pub struct Mitm {
    pub addr: SocketAddr,
    inject: mpsc::UnboundedSender<Vec<u8>>,
}

impl Mitm {
    pub async fn start(upstream: SocketAddr) -> Mitm {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (inject, mut injected) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let broker = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut broker_rx, mut broker_tx) = broker.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_rx, &mut broker_tx).await;
            });
            // Broker → client, whole packets only, so injected ones never split a packet.
            let mut pending = Vec::new();
            let mut chunk = [0u8; 16384];
            loop {
                tokio::select! {
                    read = broker_rx.read(&mut chunk) => {
                        let Ok(n @ 1..) = read else { return };
                        pending.extend_from_slice(&chunk[..n]);
                        let whole = whole_packets(&pending);
                        if client_tx.write_all(&pending[..whole]).await.is_err() { return }
                        pending.drain(..whole);
                    }
                    Some(packet) = injected.recv() => {
                        if client_tx.write_all(&packet).await.is_err() { return }
                    }
                }
            }
        });
        Mitm { addr, inject }
    }

    /// Delivers `payload` to the client as an MQTT 3.1.1 QoS 0 PUBLISH on `topic`.
    pub fn inject(&self, topic: &str, payload: &[u8]) {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(payload);
        let mut packet = vec![0x30];
        let mut len = body.len();
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            packet.push(if len > 0 { byte | 0x80 } else { byte });
            if len == 0 {
                break;
            }
        }
        packet.extend_from_slice(&body);
        self.inject.send(packet).unwrap();
    }
}

/// How many leading bytes of `buf` are complete MQTT packets.
fn whole_packets(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let (mut len, mut shift, mut i) = (0usize, 0, at + 1);
        loop {
            let Some(&b) = buf.get(i) else { return at };
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if buf.len() < i + len {
            return at;
        }
        at = i + len;
    }
}

/// The line of `out`'s stdout that starts with `prefix`, without it.
pub fn line_after(out: &std::process::Output, prefix: &str) -> String {
    let said = String::from_utf8_lossy(&out.stdout);
    said.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| {
            panic!(
                "no {prefix:?} in {said}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

/// A broker started with `env`, a user alice and an instance of hers, logged in.
pub async fn alice_and_her_instance(env: &[(&str, &str)]) -> (Broker, Identity, Identity) {
    let broker = Broker::start_with(env);
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    (broker, alice, instance)
}

/// The `Authorization` header value for HTTP Basic with `login` and `secret`.
pub fn basic_auth(login: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        sealrelay_wire::b64::encode(format!("{login}:{secret}").as_bytes())
    )
}

/// Leaves none of the test's own `SEALRELAY_*` variables to `cmd`: it runs as a reader's or an
/// operator's shell would.
pub fn without_our_variables(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("SEALRELAY_")) {
        cmd.env_remove(name);
    }
    cmd
}

/// The fence that marks a shell block of the docs as one a test runs verbatim.
pub const RUNNABLE: &str = "```sh runnable\n";

/// Every block marked [`RUNNABLE`] in README.md and the other docs a reader follows: where
/// it is (file and line) and its text.
pub fn runnable_blocks() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("README.md"),
        root.join("deploy/README.md"),
        root.join("load-tests/README.md"),
        root.join("dashboards/README.md"),
    ];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(RUNNABLE) {
            let start = at + RUNNABLE.len();
            let end = start + rest[start..].find("```").expect("the block ends");
            let line = text.len() - rest.len() + at;
            let line = text[..line].lines().count() + 1;
            let name = file.strip_prefix(root).unwrap().display();
            blocks.push((format!("{name}:{line}"), rest[start..end].to_owned()));
            rest = &rest[end..];
        }
    }
    blocks
}

/// The runnable block after `## Try it` in README.md: the walk.
fn try_it_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme
        .find("## Try it")
        .expect("README has a Try it section")..];
    let start = section.find(RUNNABLE).expect("a runnable sh block") + RUNNABLE.len();
    let end = start + section[start..].find("```").expect("the block ends");
    section[start..end].to_owned()
}

/// Runs a shell block of the docs as a reader would beside `broker`, after the README's first
/// command: in the broker's directory, by bash with errors fatal, `sealrelay` on the PATH.
/// The reader's broker listens on the default ports; this one on ephemeral ones, so the
/// block's `localhost:<default>` and `127.0.0.1:<default>` are rewritten to them, and the
/// CLI is told them through the SEALRELAY_* variables it reads.
pub fn run_doc_block(broker: &Broker, block: &str) -> std::process::Output {
    let mut block = block.to_owned();
    for (default, actual) in [
        (1883, broker.mqtt),
        (8883, broker.mqtts),
        (8083, broker.ws),
        (8084, broker.wss),
        (8443, broker.https),
        (8080, broker.http),
        (8081, broker.admin),
    ] {
        for host in ["localhost", "127.0.0.1"] {
            block = block.replace(
                &format!("{host}:{default}"),
                &format!("{host}:{}", actual.port()),
            );
        }
    }
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut run = Command::new("timeout");
    without_our_variables(&mut run);
    run.args(["120", "bash", "-euo", "pipefail", "-c", &block])
        .current_dir(broker.dir.path())
        .env("PATH", path)
        .env("SEALRELAY_SERVER", format!("http://{}", broker.http))
        .env("SEALRELAY_BROKER", format!("mqtt://{}", broker.mqtt))
        .env("SEALRELAY_HTTP_LISTEN", broker.http.to_string())
        .env("SEALRELAY_ADMIN_LISTEN", broker.admin.to_string())
        .env("SEALRELAY_STATE_DIR", broker.dir.path().join("cli-state"))
        .stdin(Stdio::null());
    run.output().unwrap()
}

/// Runs the README's "Try it" walk against `broker`, as a reader would after the README's
/// first command, and checks every reply came.
pub fn readme_walk(broker: &Broker) {
    let block = try_it_block();
    assert!(block.contains("sealrelay admin reset-user") && block.lines().count() > 10);
    let out = run_doc_block(broker, &block);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the walk failed:\n{stdout}\n{stderr}");
    for reply in ["hello\n", "still me\n", "after the reset\n"] {
        assert!(stdout.contains(reply), "no reply {reply:?}:\n{stdout}");
    }
    assert!(stdout.contains("re-enrol "), "{stdout}");
    assert!(stdout.contains("removed instance "), "{stdout}");
    // The activity report: alice's account and the sessions her sends made.
    assert!(stdout.contains("what the server holds"), "{stdout}");
    assert!(stdout.contains("user alice ("), "{stdout}");
    assert!(stdout.contains("client_disconnect"), "{stdout}");
}

/// An instance agent, logged in with the token `token`, that echoes what it gets.
pub fn echo_agent(broker: &Broker, token: &str) -> tokio::task::JoinHandle<()> {
    let (api, address, token) = (broker.api(), broker.broker_addr(), token.to_owned());
    tokio::spawn(async move {
        let token = token.parse().unwrap();
        let instance = Identity::login_instance(&api, &token).await.unwrap();
        let mut agent = Client::connect(api, instance, &address, MqttVersion::V5)
            .await
            .unwrap();
        let _ = agent
            .serve(|m| [b"echo:".as_slice(), &m.payload].concat())
            .await;
    })
}

/// Sends `payload` to `instance` until its echo comes back (the instance's agent may still
/// be connecting: until then it is offline); the echo.
pub async fn echo(console: &mut Client, instance: PrincipalId, payload: &[u8]) -> Vec<u8> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        assert!(std::time::Instant::now() < deadline, "no echo");
        match console.send(instance, payload, 1).await {
            Err(sealrelay_client::ClientError::Offline(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            sent => sent.unwrap(),
        };
        let reply = next_message(console);
        if let Ok(reply) = tokio::time::timeout(Duration::from_secs(2), reply).await {
            return reply.payload.to_vec();
        }
    }
}

/// alice's login on `broker` while its database is down: a clear 503, within 4 s (the
/// pool's 3 s wait for a connection, and the request).
pub async fn login_fails_without_the_database(broker: &Broker) {
    let asked = Instant::now();
    let refused = Identity::login_user(&broker.api(), "alice", "pw-alice")
        .await
        .err()
        .expect("a login without its database")
        .to_string();
    assert!(
        refused.contains("503") && refused.contains("directory is unavailable"),
        "{refused}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    // Not ready (send clients elsewhere), yet alive (no reason to restart it).
    let (status, body) = broker.readyz();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("the directory database did not answer"),
        "{body}"
    );
    assert_eq!(
        ureq::get(&format!("http://{}/healthz", broker.http))
            .call()
            .unwrap()
            .status(),
        200
    );
}

/// Echoes through `console` and `instance`'s agent every half second until `since` is 10 s
/// old, at least once: live sessions keep relaying meanwhile.
pub async fn echo_until_ten_seconds(console: &mut Client, instance: PrincipalId, since: Instant) {
    loop {
        assert_eq!(echo(console, instance, b"down").await, b"echo:down");
        if since.elapsed() >= Duration::from_secs(10) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Connections a broker saw lost (closed without DISCONNECT).
pub const LOST: &str = r#"sealrelay_sessions_closed_total{reason="connection_lost"}"#;

/// Waits (10 s at most) until `broker` has seen `lost` connections lost in all.
pub async fn until_lost(broker: &Broker, lost: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.counter(LOST) < lost {
        assert!(
            Instant::now() < deadline,
            "the broker never saw the connection go"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
