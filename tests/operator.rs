//! What an operator runs into around the broker process: config mistakes stop it with one line
//! naming the key, where it was set and what it should be; `check-config` says the same
//! without starting anything and `default-config` prints the shipped file; a second broker on
//! one database refuses to start; the broker's files are private; SIGHUP reloads the log
//! level and never stops it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::{Broker, BIN};
use sealrelay_client::{ClientError, Identity};

/// The binary with no `SEALRELAY_*` variable from the test's own environment.
fn sealrelay(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    common::without_our_variables(&mut cmd)
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// Asserts a run failed with exactly one stderr line, and returns it.
fn one_line_failure(out: &Output) -> String {
    assert!(!out.status.success(), "it should have failed");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err.trim_end().to_owned()
}

#[test]
fn config_mistakes_are_one_line_naming_the_key_and_check_config_says_so_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[mqtt]\nmax_inflight = \"x\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("good.toml"),
        "[mqtt]\nlisten = \"localhost:0\"\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();

    let out = sealrelay(dir.path())
        .args(["check-config", "--config", "good.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("config OK: good.toml (MQTT 127.0.0.1:0,"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let bad_value = "sealrelay: mqtt.max_inflight in bad.toml: expected a whole number from 0 to 65535, got the text \"x\"";
    let typo = "sealrelay: SEALRELAY_MQQT_LISTEN: names no config key (did you mean SEALRELAY_MQTT_LISTEN?); see broker.toml";
    let level = "sealrelay: log.level from SEALRELAY_LOG_LEVEL: `debgu` names no level: use off, error, warn, info, debug or trace, alone or per module (e.g. \"info,sealrelay_broker=debug\")";
    for verb in ["check-config", "serve"] {
        let out = sealrelay(dir.path())
            .args([verb, "--config", "bad.toml"])
            .output()
            .unwrap();
        assert_eq!(one_line_failure(&out), bad_value, "{verb}");
        let out = sealrelay(dir.path())
            .arg(verb)
            .env("SEALRELAY_MQQT_LISTEN", "127.0.0.1:1")
            .output()
            .unwrap();
        assert_eq!(one_line_failure(&out), typo, "{verb}");
        let out = sealrelay(dir.path())
            .arg(verb)
            .env("SEALRELAY_LOG_LEVEL", "debgu")
            .output()
            .unwrap();
        assert_eq!(one_line_failure(&out), level, "{verb}");
    }
    // Every problem of a config at once, one line each.
    std::fs::write(
        dir.path().join("two.toml"),
        "[kdf]\nmemory_kib = 1024\n[mqtt]\nmax_connections = 0\n",
    )
    .unwrap();
    let out = sealrelay(dir.path())
        .args(["check-config", "--config", "two.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sealrelay: kdf.memory_kib in two.toml: memory_kib and iterations must not be below min_memory_kib and min_iterations\n\
         sealrelay: mqtt.max_connections in two.toml: max_connections and max_connections_per_ip must be at least 1\n"
    );
    // Nothing was started or written by the refusals.
    assert!(!dir.path().join("data").exists());

    let out = sealrelay(dir.path())
        .arg("default-config")
        .output()
        .unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/broker.toml")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shipped);
}

/// A config with every listener on a free port but `mqtt` and `http` (given), and `extra`.
fn config_with(mqtt: &str, http: &str, extra: &str) -> String {
    let mut text = format!("[mqtt]\nlisten = \"{mqtt}\"\n[http]\nlisten = \"{http}\"\n");
    for section in ["mqtts", "ws", "wss", "https", "admin"] {
        let more = if section == "mqtts" { extra } else { "" };
        text += &format!("[{section}]\nlisten = \"127.0.0.1:0\"\n{more}");
    }
    text
}

/// `serve`'s refusal of `file` in `dir` (its stderr), failing the test if it starts.
fn refused_by_serve(dir: &std::path::Path, file: &str) -> String {
    let mut child = sealrelay(dir)
        .args(["serve", "--config", file])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success(), "serve took {file}");
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("serve started with {file}, which check-config refuses");
}

#[test]
fn check_config_refuses_what_serve_would_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shared = format!("127.0.0.1:{port}");
    let no_ca = "client_ca = \"no-such-ca.pem\"\n";
    let files = [
        ("clash.toml", config_with(&shared, &shared, "")),
        ("ca.toml", config_with("127.0.0.1:0", "127.0.0.1:0", no_ca)),
        (
            "all.toml",
            config_with(&shared, &shared, no_ca)
                + "[tls]\ncert_file = \"no-such-cert.pem\"\nkey_file = \"no-such-key.pem\"\n",
        ),
        (
            "typos.toml",
            "[mqtt]\nlisen = 1\n[htp]\nlisten = 1\n".into(),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let check = |file: &str| {
        let out = sealrelay(dir.path())
            .args(["check-config", "--config", file])
            .output()
            .unwrap();
        assert!(!out.status.success(), "check-config took {file}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let clash = "sealrelay: http.listen in clash.toml: is the address mqtt.listen listens on too: each listener needs its own (port 0 picks a free one)\n";
    assert_eq!(check("clash.toml"), clash);
    assert!(refused_by_serve(dir.path(), "clash.toml").contains("http.listen"));
    let ca = check("ca.toml");
    assert!(
        ca.starts_with("sealrelay: cannot use no-such-ca.pem as mqtts.client_ca: "),
        "{ca}"
    );
    assert_eq!(ca.lines().count(), 1, "{ca}");
    assert!(refused_by_serve(dir.path(), "ca.toml").contains("no-such-ca.pem as mqtts.client_ca"));
    // All at once: the clash, the key pair, the client CA; each on its line.
    let all = check("all.toml");
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "{all}");
    assert!(
        lines[0].starts_with("sealrelay: http.listen in all.toml: is the address mqtt.listen"),
        "{all}"
    );
    assert!(lines[1].contains("no-such-cert.pem"), "{all}");
    assert!(
        lines[2].contains("no-such-ca.pem as mqtts.client_ca"),
        "{all}"
    );
    assert_eq!(
        check("typos.toml"),
        "sealrelay: typos.toml: unknown section [htp]\nsealrelay: typos.toml: unknown key `lisen` in [mqtt]\n"
    );
}

#[test]
fn a_second_broker_on_the_same_database_refuses_to_start_and_names_the_first() {
    let mut broker = Broker::start();
    // Same directory and config: every listener is on port 0, so only the database clashes.
    let out = sealrelay(broker.dir.path())
        .args(["serve", "--config", "broker.toml"])
        .output()
        .unwrap();
    assert_eq!(
        one_line_failure(&out),
        format!(
            "sealrelay: another broker (pid {}) already serves the database data/sealrelay.db: stop it first, or give this one its own directory.database",
            broker.pid()
        )
    );
    assert!(broker.running(), "the first one is unharmed");
    // Still serving its own database: ready, with no cluster to be linked to.
    let (status, ready) = broker.readyz();
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "directory": "ok", "cluster": "off"})
    );
    // What a container's health check runs: the answer, or one line and exit 1.
    let health = |ready: bool, env: &[(&str, &str)]| {
        let mut cmd = sealrelay(broker.dir.path());
        cmd.args(["health", "--config", "broker.toml"])
            .envs(env.iter().copied());
        if ready {
            cmd.arg("--ready");
        }
        cmd.output().unwrap()
    };
    // The test's config says port 0; the broker's real port goes in the variable.
    let http = broker.http.to_string();
    let at = [("SEALRELAY_HTTP_LISTEN", http.as_str())];
    let unknown = health(false, &[]);
    assert!(one_line_failure(&unknown).contains("http.listen has port 0"));
    let alive = health(false, &at);
    assert!(alive.status.success(), "{alive:?}");
    assert_eq!(
        String::from_utf8_lossy(&alive.stdout).trim(),
        r#"{"status":"ok"}"#
    );
    let ready = health(true, &at);
    assert!(ready.status.success(), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stdout).contains(r#""status":"ready""#));
    // A port nothing listens on: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let gone = health(false, &[("SEALRELAY_HTTP_LISTEN", &closed)]);
    assert!(
        one_line_failure(&gone).contains(&format!("http://{closed}/healthz")),
        "{gone:?}"
    );
}

/// Every config the deploy artifacts ship — the systemd unit's, and the broker.toml of each
/// Kubernetes ConfigMap — is one `check-config` passes (with a real key pair standing in for
/// the TLS files the cluster mounts).
#[test]
fn every_shipped_deploy_config_passes_check_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let mut configs = vec![(
        "deploy/sealrelay.toml".to_owned(),
        std::fs::read_to_string(root.join("deploy/sealrelay.toml")).unwrap(),
    )];
    for manifest in [
        "deploy/k8s/one-node/config.yaml",
        "deploy/k8s/cluster/config.yaml",
    ] {
        let yaml = std::fs::read_to_string(root.join(manifest)).unwrap();
        // The block scalar under `broker.toml: |`, its four spaces of indentation taken off.
        let toml: String = yaml
            .split_once("  broker.toml: |\n")
            .unwrap_or_else(|| panic!("{manifest}: no broker.toml"))
            .1
            .lines()
            .map(|line| line.strip_prefix("    ").unwrap_or(line))
            .map(|line| format!("{line}\n"))
            .collect();
        configs.push((manifest.to_owned(), toml));
    }
    for (name, text) in configs {
        assert!(text.contains("\n[tls]\n"), "{name}: not the config: {text}");
        let file = dir.path().join("broker.toml");
        std::fs::write(&file, &text).unwrap();
        let out = sealrelay(dir.path())
            .args(["check-config", "--config", file.to_str().unwrap()])
            .env("SEALRELAY_TLS_CERT_FILE", &cert)
            .env("SEALRELAY_TLS_KEY_FILE", &key)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("config OK"),
            "{name}: {out:?}"
        );
    }
}

/// Paths written in a config file name files beside it: the admin CLI, given the broker's
/// config from another directory, finds the broker's token there (and the broker its
/// database), without a `cd`.
#[test]
fn the_admin_cli_finds_the_brokers_files_beside_its_config_from_anywhere() {
    // Goes on with the test config's last section, [admin].
    let state = "token_file = \"state/admin.token\"\n[directory]\ndatabase = \"state/sealrelay.db\"\nprelogin_key_file = \"state/prelogin.key\"\n";
    let broker = Broker::start_configured(&[], &[], state);
    assert!(broker.dir.path().join("state/sealrelay.db").exists());
    let elsewhere = tempfile::tempdir().unwrap();
    let config = broker.dir.path().join("broker.toml");
    let out = sealrelay(elsewhere.path())
        .args(["admin", "users", "--config", config.to_str().unwrap()])
        .args(["--admin-url", &format!("http://{}", broker.admin)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("user "),
        "{out:?}"
    );
}

/// `sealrelay admin backup` copies the SQLite directory while the broker serves; a broker
/// started on the copy (with the prelogin key beside it) logs the same users in with their
/// instances. The copy is private, and an existing file is never overwritten.
#[tokio::test(flavor = "multi_thread")]
async fn an_online_backup_restores_into_a_broker_that_logs_the_same_users_in() {
    // SQLite's: in CI's PostgreSQL pass too (that directory is backed up with pg_dump).
    const SQLITE: &str = "[directory]\nurl = \"\"\n";
    let broker = Broker::start_configured(&[], &[], SQLITE);
    let mut alice = broker.user("alice").await;
    alice.add_instance(&broker.api()).await.unwrap();
    let kept = tempfile::tempdir().unwrap();
    let copy = kept.path().join("sealrelay-backup.db");
    let out = broker.admin(&["backup", "--to", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.starts_with(&format!("backup {} (", copy.display())),
        "{said}"
    );
    assert_eq!(copy.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    // To standard output, as through `kubectl exec` from an image without a shell.
    let piped = broker.admin(&["backup", "--to", "-"]);
    assert!(piped.status.success(), "{piped:?}");
    assert!(piped.stdout.starts_with(b"SQLite format 3\0"));
    assert_eq!(
        String::from_utf8_lossy(&piped.stderr).lines().next(),
        Some(format!("backup - ({} bytes)", piped.stdout.len()).as_str())
    );
    let again = broker.admin(&["backup", "--to", copy.to_str().unwrap()]);
    assert!(
        one_line_failure(&again).contains("(it must not exist yet)"),
        "{again:?}"
    );
    // Nothing is left beside the database but what the broker keeps there.
    let beside: Vec<_> = std::fs::read_dir(broker.dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("backup"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");

    let key = broker.dir.path().join("data/sealrelay-prelogin.key");
    let restored = Broker::start_configured(
        &[],
        &[
            ("SEALRELAY_DIRECTORY_DATABASE", copy.to_str().unwrap()),
            (
                "SEALRELAY_DIRECTORY_PRELOGIN_KEY_FILE",
                key.to_str().unwrap(),
            ),
        ],
        SQLITE,
    );
    let alice = Identity::login_user(&restored.api(), "alice", "pw-alice")
        .await
        .expect("alice logs in on the restored copy");
    assert_eq!(alice.instances(&restored.api()).await.unwrap().len(), 1);
}

#[test]
fn the_broker_files_are_private_and_an_exposed_one_is_reported() {
    let mut broker = Broker::start();
    let data = broker.dir.path().join("data");
    let mode = |name: &str| {
        std::fs::metadata(data.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    for name in [
        "sealrelay.db",
        "sealrelay.db-wal",
        "sealrelay.db-shm",
        "sealrelay.db.lock",
        "sealrelay-prelogin.key",
        "sealrelay-admin.token",
        "tls-dev-key.pem",
        "tls-dev-ca-key.pem",
    ] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
    assert_eq!(mode(""), 0o700, "the data directory");
    assert!(!broker.log().contains("readable by group or others"));

    broker.stop();
    let db = data.join("sealrelay.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    broker.restart();
    assert!(
        broker.log_shows("readable by group or others: run chmod 600 on it", 1),
        "{}",
        broker.log()
    );
    assert!(
        broker.log().contains("file=data/sealrelay.db mode=644"),
        "{}",
        broker.log()
    );
}

#[test]
fn sighup_reloads_the_log_level_says_what_needs_a_restart_and_never_stops() {
    let mut broker = Broker::start();
    let config = broker.dir.path().join("broker.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("level = \"debug\""),
        "the harness logs at debug"
    );

    // An info line, at debug: the operator's reset.
    let reset = "operator issued a password reset";
    common::run_cli_ok(
        broker.cli(),
        &["user", "register", "--user", "alice"],
        "a long enough phrase",
    );
    assert!(broker.admin_reset("alice").status.success());
    assert!(broker.log_shows(reset, 1));

    std::fs::write(
        &config,
        text.replace("level = \"debug\"", "level = \"warn\""),
    )
    .unwrap();
    broker.signal("HUP");
    assert!(
        broker.log_shows("SIGHUP: log.level reloaded", 1),
        "{}",
        broker.log()
    );
    // At warn the same info line no longer shows.
    assert!(broker.admin_reset("alice").status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(broker.log().matches(reset).count(), 1, "{}", broker.log());

    std::fs::write(
        &config,
        text.replace("level = \"debug\"", "level = \"warn\"")
            .replace("[kdf]", "[envelope]\nmax_bytes = 1000\n[kdf]"),
    )
    .unwrap();
    broker.signal("HUP");
    assert!(broker.log_shows(
        "other settings changed in the config; they apply at the next restart",
        1
    ));

    std::fs::write(&config, "[mqtt]\nmax_inflight = \"x\"\n").unwrap();
    broker.signal("HUP");
    assert!(broker.log_shows(
        "SIGHUP: the config does not load; keeping the running settings",
        1
    ));
    assert!(broker.running(), "SIGHUP must never stop the broker");
    let (status, _) = broker.stop_with("TERM").unwrap();
    assert!(status.success());
}

/// Every `SEALRELAY_*` variable the client commands read is one the broker leaves alone, so
/// exporting a password for the CLI never stops a broker started from the same shell.
#[test]
fn the_client_variables_are_the_ones_the_broker_ignores() {
    let mut read = Vec::new();
    for file in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/cli")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for piece in text.split("\"SEALRELAY_").skip(1) {
            read.push(format!("SEALRELAY_{}", piece.split('"').next().unwrap()));
        }
    }
    assert!(read.contains(&"SEALRELAY_PASSWORD".to_owned()), "{read:?}");
    for name in read {
        assert!(
            sealrelay_broker::config::CLIENT_VARIABLES.contains(&name.as_str()),
            "{name} is read by the CLI but would stop the broker"
        );
    }
}

/// `sealrelay admin <args>` as the operator beside the broker.
fn admin_json(broker: &Broker, args: &[&str]) -> serde_json::Value {
    let out = broker.admin(&[args, &["--json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_lists_users_and_sessions_kicks_unlocks_and_reads_the_session_log() {
    let broker = Broker::start();
    let password = "an operator's test phrase";
    let cli = |args: &[&str]| common::run_cli_ok(broker.cli(), args, password);
    cli(&["user", "register", "--user", "alice"]);
    let (instance, token) =
        common::instance_and_token(&cli(&["instance", "add", "--user", "alice"]));
    let _agent = broker.start_agent(&token, "5");
    assert_eq!(
        cli(&["send", "--user", "alice", "--to", &instance, "hi"]),
        "hi\n"
    );

    let users = admin_json(&broker, &["users"]);
    assert_eq!(users["users"][0]["name"], "alice");
    assert_eq!(users["users"][0]["instances"], 1);
    let table = String::from_utf8(broker.admin(&["users"]).stdout).unwrap();
    assert!(
        table.lines().nth(1).unwrap().starts_with("alice "),
        "{table}"
    );

    // The agent's session: one request in, one reply out, over TCP from loopback.
    let sessions = admin_json(&broker, &["sessions"]);
    let live = &sessions["sessions"].as_array().unwrap();
    assert_eq!(live.len(), 1, "{sessions}");
    assert_eq!(live[0]["principal"], instance.as_str());
    assert_eq!(
        (live[0]["kind"].as_str(), live[0]["login"].as_str()),
        (Some("instance"), Some(instance.as_str()))
    );
    assert_eq!(
        (live[0]["transport"].as_str(), live[0]["ip"].as_str()),
        (Some("tcp"), Some("127.0.0.1"))
    );
    assert_eq!(
        (
            live[0]["messages_in"].as_u64(),
            live[0]["messages_out"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // Kicked: told why, recorded, and (credentials intact) the agent comes back by itself.
    let out = broker.admin(&["kick", "--principal", &instance]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("closed 1 session(s) of {instance}\n")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = admin_json(
            &broker,
            &["session-log", "--principal", &instance, "--since", "1h"],
        );
        if !log["sessions"].as_array().unwrap().is_empty() || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(log["sessions"][0]["close_reason"], "kicked_by_operator");
    assert_eq!(log["sessions"][0]["messages_in"], 1);
    assert!(broker.log_shows("operator closed a principal's sessions", 1));
    // A user goes by name as well as by id: alice's own session, named and of its kind.
    let console = Identity::login_user(&broker.api(), "alice", password)
        .await
        .unwrap();
    let _link = broker
        .client(console, sealrelay_client::MqttVersion::V5)
        .await;
    let table = String::from_utf8(broker.admin(&["sessions"]).stdout).unwrap();
    let alice_id = users["users"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{alice_id}  user      alice "))),
        "{table}"
    );
    let out = broker.admin(&["kick", "--principal", "alice"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("closed 1 session(s) of {alice_id}\n")
    );
    let by_name = admin_json(&broker, &["activity", "--principal", "alice"]);
    assert_eq!(by_name["principals"][0]["id"], alice_id.as_str());
    let nobody = broker.admin(&["kick", "--principal", "bob"]);
    assert_eq!(
        String::from_utf8_lossy(&nobody.stderr).trim_end(),
        "sealrelay: no user is named bob: `sealrelay admin users` lists them (an instance goes by its id)"
    );
    let bad = broker.admin(&["session-log", "--principal", &instance, "--since", "1x"]);
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim_end(),
        "sealrelay: --since 1x: write an age like 90m, 24h or 7d"
    );

    // Locked out by failures, unlocked by the operator.
    for _ in 0..10 {
        let _ = Identity::login_user(&broker.api(), "alice", "not the phrase").await;
    }
    let locked = Identity::login_user(&broker.api(), "alice", password)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(locked, ClientError::TooManyFailures { .. }),
        "{locked}"
    );
    let out = broker.admin(&["unlock", "--login", "alice"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "alice: lockout cleared; it may log in again now\n"
    );
    Identity::login_user(&broker.api(), "alice", password)
        .await
        .unwrap();
}

/// The metrics page after alice's console and her echoing instance traded an envelope.
async fn scrape_after_an_echo(broker: &Broker) -> String {
    let (mut console, instance) = broker
        .pair("alice", sealrelay_client::MqttVersion::V5)
        .await;
    assert_eq!(
        common::echo(&mut console, instance, b"hi").await,
        b"echo:hi"
    );
    broker.metrics()
}

/// A fresh broker's scrape already holds the process series, its build, the connection caps
/// in force and its hot counters at zero (a series that appears only with its first event
/// cannot be told from one not exported); after traffic the histograms of envelope sizes,
/// CONNECT answers and API requests have their buckets, and `promtool check metrics`
/// (installed by .ci/run with Debian's prometheus) finds nothing to fix.
#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_page_is_whole_from_the_start_and_lints_clean() {
    let broker = Broker::start_with(&[("SEALRELAY_MQTT_MAX_CONNECTIONS", "777")]);
    let fresh = broker.metrics();
    // The build the scrape names is the one `--version` and the start-up line name.
    let version = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let commit = version
        .strip_prefix(&format!("sealrelay {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("--version says {version:?}"));
    assert!(
        fresh.contains(&format!("commit=\"{commit}\"")),
        "{commit} not in the scrape"
    );
    let started = broker.log();
    let listening = started
        .lines()
        .find(|l| l.contains("sealrelay listening"))
        .expect("the start-up line");
    assert!(
        listening.contains(&format!("version={}", env!("CARGO_PKG_VERSION")))
            && listening.contains(&format!("commit={commit}")),
        "{listening}"
    );
    for series in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "sealrelay_sessions_active 0",
        "sealrelay_sessions{transport=\"wss\",version=\"5.0\"} 0",
        "sealrelay_held_bytes{state=\"parked\"} 0",
        "sealrelay_sessions_closed_total{reason=\"taken_over\"} 0",
        "sealrelay_envelopes_received_total 0",
        "sealrelay_deliveries_refused_total{reason=\"broker_budget\"} 0",
        "sealrelay_connections_max{protocol=\"mqtt\"} 777",
        "sealrelay_connections_max{protocol=\"http\"} ",
        &format!(
            "sealrelay_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(fresh.contains(series), "{series:?} missing from:\n{fresh}");
    }

    let scrape = scrape_after_an_echo(&broker).await;
    for series in [
        "sealrelay_envelope_bytes_bucket{le=\"256\"}",
        "sealrelay_envelope_bytes_count ",
        "sealrelay_connect_seconds_bucket{le=\"0.0005\"}",
        "sealrelay_http_request_seconds_bucket{route=\"users\",le=\"0.001\"}",
    ] {
        assert!(
            scrape.contains(series),
            "{series:?} missing from:\n{scrape}"
        );
    }
    let count = |name: &str| -> f64 {
        let prefix = format!("{name} ");
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("sealrelay_envelope_bytes_count") >= 2.0,
        "the echo and its answer"
    );
    assert!(
        count("sealrelay_connect_seconds_count") >= 2.0,
        "console and agent"
    );
    assert!(
        count("sealrelay_routing_seconds_count") >= 1.0,
        "the first delivery a thread hands over is timed"
    );
    assert_eq!(
        count("sealrelay_sessions{transport=\"tcp\",version=\"5.0\"}"),
        2.0,
        "console and agent, by transport and version"
    );
    assert_eq!(
        count("sealrelay_sessions{transport=\"ws\",version=\"3.1.1\"}"),
        0.0
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (.ci/run installs Debian's prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), scrape.as_bytes()).unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "{}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );
}

/// The metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    struct Names(Vec<String>);
    impl promql_parser::util::ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, ()> {
            use promql_parser::parser::Expr;
            let selector = match expr {
                Expr::VectorSelector(v) => Some(v),
                Expr::MatrixSelector(m) => Some(&m.vs),
                _ => None,
            };
            self.0.extend(selector.and_then(|v| v.name.clone()));
            Ok(true)
        }
    }
    let parsed = promql_parser::parser::parse(expr)
        .unwrap_or_else(|e| panic!("{expr:?} is not PromQL: {e}"));
    let mut names = Names(Vec::new());
    promql_parser::util::walk_expr(&mut names, &parsed).unwrap();
    names.0
}

/// Every expression of the Grafana dashboard and of the alert rules parses as PromQL, and
/// every metric it reads is in a live scrape after traffic: a renamed series breaks this
/// test rather than a panel or an alert in production.
#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_panel_and_alert_reads_series_the_broker_exports() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/dashboards/sealrelay.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            panel["description"]
                .as_str()
                .is_some_and(|q| q.ends_with('?')),
            "panel {} states the question it answers",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let panels = exprs.len();
    for rules in std::fs::read_dir(format!("{root}/dashboards/rules")).unwrap() {
        let path = rules.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let Some(expr) = line.trim().strip_prefix("expr: ") else {
                continue;
            };
            assert!(
                !expr.starts_with(['|', '>']),
                "{path:?}: write each expr on one line, so this test reads it"
            );
            exprs.push(expr.to_owned());
        }
    }
    assert!(panels >= 20 && exprs.len() > panels + 10, "{exprs:?}");

    let broker = Broker::start();
    let scrape = scrape_after_an_echo(&broker).await;
    let exported: std::collections::HashSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut missing = Vec::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            // `up` is Prometheus's own series about the scrape.
            if name != "up" && !exported.contains(name.as_str()) {
                missing.push(format!("{name} (in {expr})"));
            }
        }
    }
    assert!(missing.is_empty(), "not in the scrape: {missing:#?}");
}
