//! Faults the broker must come through without losing what it acknowledged (issue 12's
//! proof): SIGKILL in the middle of writes, and a disk that fills up. Each drives the real
//! broker process through its API, as clients would, and then reads its SQLite file.

mod common;

use std::time::Duration;

use common::{Broker, FAST_KDF};
use sealrelay_client::crypto::Token;
use sealrelay_client::{Api, ClientError, Identity};

/// SQLite's own verdict on its file; on PostgreSQL, which recovers from its write-ahead log
/// before it answers, that the directory answers with its rows.
async fn integrity(broker: &Broker) -> String {
    let db = broker.database().await;
    let verdict = if broker.directory_url().is_none() {
        sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&db)
            .await
            .unwrap()
    } else {
        let principals: i64 = sqlx::query_scalar("SELECT count(*) FROM principals")
            .fetch_one(&db)
            .await
            .unwrap();
        assert!(principals > 0);
        "ok".to_owned()
    };
    db.close().await;
    verdict
}

/// Registers users until the broker stops answering; the names it acknowledged.
async fn register_until_refused(api: Api, prefix: String) -> Vec<String> {
    let mut acknowledged = Vec::new();
    for i in 0.. {
        let name = format!("{prefix}-{i}");
        match Identity::register_user(&api, &name, "a long passphrase", FAST_KDF).await {
            Ok(_) => acknowledged.push(name),
            Err(_) => break,
        }
    }
    acknowledged
}

/// Three writers — registrations, instance additions (each with a keyring write), changes of
/// password — run until the broker is killed with SIGKILL mid-way; after each restart the
/// database passes `integrity_check`, every write a client saw acknowledged is there, and the
/// accounts log in (a change of password in flight when the broker died may have landed or
/// not: one of the two passwords works).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_writes_loses_nothing_acknowledged() {
    let mut broker = Broker::start();
    broker.user("alice").await;
    broker.user("bob").await;
    let (mut users, mut tokens): (Vec<String>, Vec<Token>) = (Vec::new(), Vec::new());
    let mut bob_password = "pw-bob".to_owned();
    for round in 0..3 {
        let api = broker.api();
        let registering = tokio::spawn(register_until_refused(api.clone(), format!("r{round}")));
        let adding = tokio::spawn({
            let api = api.clone();
            async move {
                let mut alice = Identity::login_user(&api, "alice", "pw-alice")
                    .await
                    .unwrap();
                let mut added = Vec::new();
                while let Ok((_, token)) = alice.add_instance(&api).await {
                    added.push(token);
                }
                added
            }
        });
        let changing = tokio::spawn({
            let (api, old) = (api.clone(), bob_password.clone());
            async move {
                let mut bob = Identity::login_user(&api, "bob", &old).await.unwrap();
                let (mut acknowledged, mut in_flight) = (old, None);
                for n in 0.. {
                    let new = format!("bob's password {round}.{n}");
                    in_flight = Some(new.clone());
                    if bob.change_password(&api, &new, FAST_KDF).await.is_err() {
                        break;
                    }
                    (acknowledged, in_flight) = (new, None);
                }
                (acknowledged, in_flight)
            }
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        broker.stop_with("KILL");
        // With the broker gone every writer's next request fails, so each stops.
        users.extend(registering.await.unwrap());
        tokens.extend(adding.await.unwrap());
        let (acknowledged, in_flight) = changing.await.unwrap();
        broker.respawn();

        assert_eq!(integrity(&broker).await, "ok", "round {round}");
        let api = broker.api();
        for name in &users {
            Identity::login_user(&api, name, "a long passphrase")
                .await
                .unwrap_or_else(|e| panic!("{name}, acknowledged, is gone: {e}"));
        }
        for token in &tokens {
            Identity::login_instance(&api, token)
                .await
                .unwrap_or_else(|e| {
                    panic!("instance {}, acknowledged, is gone: {e}", token.instance)
                });
        }
        bob_password = match Identity::login_user(&api, "bob", &acknowledged).await {
            Ok(_) => acknowledged,
            Err(ClientError::WrongPassword { .. }) => {
                let landed = in_flight.expect("bob's acknowledged password no longer works");
                Identity::login_user(&api, "bob", &landed).await.unwrap();
                landed
            }
            Err(e) => panic!("{e}"),
        };
        assert!(!users.is_empty() && !tokens.is_empty(), "the writers wrote");
    }
}

/// Sets the broker's file-size limit (what a nearly full disk looks like to it).
fn limit_file_size(pid: u32, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit reads `limit` and writes nothing (the old-limit pointer is null).
    let done = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A disk that fills up: writes fail with a clear 507, nothing already written is damaged
/// or lost, the broker keeps running (a file-size limit would otherwise kill it with
/// SIGXFSZ), and writes work again once there is room.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_writes_clearly_and_recovers_when_space_returns() {
    let mut broker = Broker::start();
    let api = broker.api();
    let db = broker.db_path();
    let largest = [db.clone(), db.with_extension("db-wal")]
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .max()
        .unwrap();
    limit_file_size(broker.pid(), largest + 64 * 1024);
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let name = format!("u{}", acknowledged.len());
        match Identity::register_user(&api, &name, "a long passphrase", FAST_KDF).await {
            Ok(_) => acknowledged.push(name),
            Err(e) => break e,
        }
        assert!(acknowledged.len() < 1000, "the limit never bit");
    };
    assert!(
        matches!(&refusal, ClientError::Api { status: 507, code, message }
            if code == "storage_full" && message.starts_with("the broker could not write to its database")),
        "{refusal}"
    );
    assert!(broker.running(), "the broker survived the full disk");
    assert_eq!(integrity(&broker).await, "ok");
    for name in &acknowledged {
        Identity::login_user(&api, name, "a long passphrase")
            .await
            .unwrap();
    }
    limit_file_size(broker.pid(), libc::RLIM_INFINITY);
    Identity::register_user(&api, "after", "a long passphrase", FAST_KDF)
        .await
        .expect("writes work again once there is room");
    broker.restart();
    assert_eq!(integrity(&broker).await, "ok");
    Identity::login_user(&broker.api(), "after", "a long passphrase")
        .await
        .unwrap();
}

/// The broker's resident memory (KiB) and open descriptors, from /proc.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

/// Connections churning: ten rounds of 1,000 connections, each logged in and then dropped.
/// Once the first round has warmed the broker's caches (tokio's task slabs, SQLite's page
/// cache, the rate windows), later rounds leave it holding no more descriptors and settling
/// within 10% of the memory the earlier rounds settled at (the finding: RSS climbed flood
/// after flood and stayed there).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_churn_leaks_no_descriptor_or_memory() {
    let broker = Broker::start();
    let mut logins = Vec::new();
    for i in 0..50 {
        let user = broker.user(&format!("churn{i}")).await;
        logins.push((user.login.clone(), user.auth_secret().to_owned()));
    }
    let logins = std::sync::Arc::new(logins);
    let settle = || async {
        // Every session closed and recorded, then the 2 s the broker takes to trim memory.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let live = || {
            let metrics = broker.metrics();
            let line = metrics
                .lines()
                .find(|l| l.starts_with("sealrelay_sessions_active "));
            line.map_or(0.0, |l| l[26..].trim().parse::<f64>().unwrap())
        };
        while live() > 0.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "sessions never all closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        footprint(broker.pid())
    };
    let mut settled = vec![settle().await];
    for round in 0..10 {
        let opened: Vec<_> = (0..1000)
            .map(|i| {
                let (logins, mqtt) = (logins.clone(), broker.mqtt);
                tokio::spawn(async move {
                    let (login, secret) = &logins[i % logins.len()];
                    let mut raw = common::Raw::open(mqtt).await;
                    let code = raw
                        .try_connect_v5((login, secret), &format!("c{round}-{i}"), 0)
                        .await;
                    (raw, code)
                })
            })
            .collect();
        let mut held = Vec::new();
        for task in opened {
            let (raw, code) = task.await.unwrap();
            assert_eq!(
                code,
                Some(rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success)
            );
            held.push(raw);
        }
        drop(held);
        settled.push(settle().await);
    }
    let rss: Vec<u64> = settled.iter().map(|f| f.0).collect();
    let fds: Vec<usize> = settled.iter().map(|f| f.1).collect();
    let record = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("churn-footprint.txt");
    std::fs::write(record, format!("RSS KiB {rss:?}\nfds {fds:?}\n")).unwrap();
    // The database pool opens its connections (up to 4 on SQLite, 8 on PostgreSQL) as load
    // asks, in any round: past them, ten rounds leaking one descriptor each would show.
    let pool = if broker.directory_url().is_some() {
        8
    } else {
        4
    };
    assert!(
        fds.iter().all(|&n| n <= fds[0] + pool),
        "descriptors by round: {fds:?}"
    );
    // A trim lands a tick after the last session closes or a tick before: compare the
    // least each half of the churn settled at. A leak, or memory never handed back, moves
    // the later minimum up round after round.
    let least = |rounds: &[u64]| *rounds.iter().min().unwrap();
    assert!(
        least(&rss[6..]) * 10 <= least(&rss[1..6]) * 11,
        "RSS KiB by round: {rss:?}"
    );
}

/// Raises this test process's soft open-file limit to its hard one: the floods below hold
/// over a thousand sockets on the client side.
fn raise_own_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// A connection to `addr` that sends `head` and then holds.
async fn held(addr: std::net::SocketAddr, head: &str) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes())
        .await
        .unwrap();
    tcp
}

/// The descriptor reserve (the slow-body finding: 20,000 held API connections took every
/// descriptor, and MQTT CONNECTs timed out with them). Under an open-file limit too small
/// for `mqtt.max_connections` + `http.max_connections`, the broker lowers both in
/// proportion and says so, so a flood of either protocol's connections leaves the other
/// accepting: with 1,000 API connections held, MQTT logins work; with 1,000 MQTT
/// connections open, the API answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_one_protocol_leaves_the_other_its_descriptors() {
    let own = raise_own_open_file_limit();
    assert!(
        own >= 4096,
        "this test needs a hard open-file limit of 4096, not {own}"
    );
    let broker = Broker::start_through(
        &["prlimit", "--nofile=1024:1024"],
        &[
            ("SEALRELAY_MQTT_WORKERS", "2"),
            ("SEALRELAY_MQTT_MAX_CONNECTIONS", "1000"),
            ("SEALRELAY_HTTP_MAX_CONNECTIONS", "1000"),
            ("SEALRELAY_HTTP_MAX_CONNECTIONS_PER_IP", "5000"),
            ("SEALRELAY_HTTP_BODY_TIMEOUT_SECS", "120"),
        ],
    );
    // 1024 less the reserve (256 MQTT refusals + 128 + 8 per worker thread: 416), halved.
    assert!(
        broker.log_shows("both lowered in proportion", 1)
            && broker.log_shows("mqtt_max_connections=304 http_max_connections=304", 1),
        "{}",
        broker.log()
    );
    let alice = broker.user("alice").await;
    let login = (alice.login.as_str(), alice.auth_secret());

    let slow = "POST /v1/prelogin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n";
    let mut api_flood = Vec::new();
    for _ in 0..1000 {
        api_flood.push(held(broker.http, slow).await);
    }
    let mut mqtt_idle = Vec::new();
    for _ in 0..100 {
        mqtt_idle.push(common::Raw::open(broker.mqtt).await);
    }
    let mut raw = common::Raw::open(broker.mqtt).await;
    assert_eq!(
        raw.try_connect_v5(login, "during-the-api-flood", 0).await,
        Some(rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success),
        "{}",
        broker.log()
    );
    drop((api_flood, mqtt_idle, raw));

    let mut mqtt_flood = Vec::new();
    for _ in 0..1000 {
        mqtt_flood.push(held(broker.mqtt, "").await);
    }
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        Identity::login_user(&broker.api(), "alice", "pw-alice"),
    )
    .await;
    assert!(
        matches!(answered, Ok(Ok(_))),
        "the API did not answer during the MQTT flood:\n{}",
        broker.log()
    );
    drop(mqtt_flood);
    assert!(
        !broker.log().contains("Too many open files"),
        "{}",
        broker.log()
    );
}
