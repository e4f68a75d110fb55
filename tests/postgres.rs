//! The directory on PostgreSQL (`directory.url`): a real server started by the harness
//! (Debian's binaries, a throwaway cluster), the real broker on it, driven as users would.
//! Whatever the broker keeps must land in PostgreSQL and nowhere on its disk.

mod common;

use std::time::Duration;

use common::postgres::Postgres;
use common::Broker;
use sealrelay_client::{Identity, MqttVersion};

/// Rows of `table` in the broker's PostgreSQL database, read with psql.
fn rows(postgres: &Postgres, url: &str, table: &str) -> u64 {
    let database = url.rsplit('/').next().unwrap();
    postgres
        .query(database, &format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .unwrap()
}

/// The README's walk — register, add an instance, relay, change the password, an
/// operator's reset, re-enrolment, removal — with the directory on PostgreSQL; nothing
/// of the directory is written beside the broker.
#[test]
fn the_readme_walk_runs_on_postgresql() {
    let postgres = Postgres::start();
    let url = postgres.database();
    let broker = Broker::start_on_postgres(&url);
    common::readme_walk(&broker);
    assert_eq!(rows(&postgres, &url, "principals WHERE kind = 'user'"), 1);
    assert_eq!(
        rows(&postgres, &url, "pairings"),
        0,
        "the instance was removed"
    );
    assert!(
        rows(&postgres, &url, "session_log") >= 2,
        "the agents' sessions"
    );
    let sqlite = broker.dir.path().join("data/sealrelay.db");
    assert!(
        !sqlite.exists(),
        "a SQLite file beside a PostgreSQL directory"
    );
}

/// A restarted broker rebuilds its login and pairing cache from PostgreSQL: the pair that
/// traded before trades again, and a change of password made after the restart takes
/// effect (the old password fails, the new one logs in).
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_broker_serves_what_postgresql_holds() {
    let postgres = Postgres::start();
    let url = postgres.database();
    let mut broker = Broker::start_on_postgres(&url);
    let mut alice = broker.user("alice").await;
    let (instance, token) = alice.add_instance(&broker.api()).await.unwrap();
    let token = token.reveal();
    let agent = common::echo_agent(&broker, &token);
    let mut console = broker.client(alice, MqttVersion::V5).await;
    assert_eq!(
        common::echo(&mut console, instance, b"before").await,
        b"echo:before"
    );
    drop(console);
    agent.abort();

    broker.restart();
    // The instance logs in again with its token, the user with the password it registered.
    let _agent = common::echo_agent(&broker, &token);
    let mut alice = Identity::login_user(&broker.api(), "alice", "pw-alice")
        .await
        .expect("alice logs in after the restart");
    assert_eq!(alice.instances(&broker.api()).await.unwrap().len(), 1);
    alice
        .change_password(&broker.api(), "pw-alice-2", common::FAST_KDF)
        .await
        .unwrap();
    let old = Identity::login_user(&broker.api(), "alice", "pw-alice").await;
    assert!(old.is_err(), "the old password still logs in");
    let alice = Identity::login_user(&broker.api(), "alice", "pw-alice-2")
        .await
        .unwrap();
    let mut console = broker.client(alice, MqttVersion::V5).await;
    assert_eq!(
        common::echo(&mut console, instance, b"after").await,
        b"echo:after"
    );
}

/// The directory's database down for 10 s: what needs it (a user's login, which reads the
/// wrapped key) fails at once with a clear 503, what does not (relaying between live
/// sessions, from memory) goes on, and once it is back everything works without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn postgresql_down_for_10_s_fails_logins_clearly_and_keeps_live_sessions_relaying() {
    let mut postgres = Postgres::start();
    let url = postgres.database();
    let broker = Broker::start_on_postgres(&url);
    let mut alice = broker.user("alice").await;
    let (instance, token) = alice.add_instance(&broker.api()).await.unwrap();
    let _agent = common::echo_agent(&broker, &token.reveal());
    let mut console = broker.client(alice, MqttVersion::V5).await;
    assert_eq!(
        common::echo(&mut console, instance, b"up").await,
        b"echo:up"
    );

    postgres.kill();
    let down = std::time::Instant::now();
    common::login_fails_without_the_database(&broker).await;
    common::echo_until_ten_seconds(&mut console, instance, down).await;

    postgres.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut alice = loop {
        match Identity::login_user(&broker.api(), "alice", "pw-alice").await {
            Ok(alice) => break alice,
            Err(e) => assert!(std::time::Instant::now() < deadline, "still refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alice.instances(&broker.api()).await.unwrap().len(), 1);
    let ready = broker.until_readyz(200, Duration::from_secs(5));
    assert_eq!(ready["cluster"], "off", "{ready}");
    alice.add_instance(&broker.api()).await.unwrap();
    assert_eq!(
        rows(&postgres, &url, "pairings"),
        2,
        "a write after the outage"
    );
    assert_eq!(
        common::echo(&mut console, instance, b"back").await,
        b"echo:back"
    );
}

/// Two brokers on one directory that are not nodes of one cluster would disagree about
/// credentials (a password changed through one still accepted by the other): the second is
/// refused at start with one line naming the database, and the first is unharmed.
#[test]
fn a_second_broker_on_the_same_postgresql_directory_refuses_to_start() {
    let postgres = Postgres::start();
    let url = postgres.database();
    let mut first = Broker::start_on_postgres(&url);
    let stderr = common::refused_start(&format!("[directory]\nurl = \"{url}\"\n"), &[]);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("another broker already serves the PostgreSQL directory")
            && last.contains(&url),
        "{stderr}"
    );
    assert!(first.running(), "the first one is unharmed");
}

/// The connection holding the directory's lock, dropped as a PostgreSQL restart drops it
/// (its backend terminated): the broker takes the lock again within seconds, so a second
/// broker is still refused; and a broker that finds the lock taken by another when its
/// connection comes back stops (exit 1, saying why) rather than serve the directory beside it.
#[tokio::test(flavor = "multi_thread")]
async fn the_directory_lock_survives_a_lost_postgresql_connection() {
    use sqlx::Connection;
    let postgres = Postgres::start();
    let url = postgres.database();
    let mut first = Broker::start_on_postgres(&url);
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    // The lock's backend (pg_advisory_lock's key: classid 0x7365616c, objid 0x72656c61).
    let holder = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                  AND classid = 1936023916 AND objid = 1919249505";
    let kill = format!("SELECT pg_terminate_backend(pid) FROM ({holder}) AS h");
    sqlx::query(&kill).execute(&mut admin).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !first.log_shows("holds its lock again", 1) {
        assert!(std::time::Instant::now() < deadline, "{}", first.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stderr = common::refused_start(&format!("[directory]\nurl = \"{url}\"\n"), &[]);
    assert!(
        stderr.contains("another broker already serves the PostgreSQL directory"),
        "{stderr}"
    );

    // Now another takes it the moment it is free: this broker must give way.
    sqlx::query(&kill).execute(&mut admin).await.unwrap();
    let taken: bool =
        sqlx::query_scalar("SELECT pg_advisory_lock(8315159405413100641) IS NOT NULL")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(taken);
    let (status, _) = first.wait_for_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", first.log());
    assert!(
        first
            .log()
            .lines()
            .last()
            .unwrap_or("")
            .contains("another broker took the PostgreSQL directory"),
        "{}",
        first.log()
    );
}

/// A `directory.url` that asks for TLS (`sslmode=verify-full`, the server's CA in
/// `sslrootcert`) gets it: every connection the broker holds to its database is encrypted,
/// and the broker works as ever. One whose CA did not sign the server's certificate is
/// refused at start, naming the database.
#[tokio::test(flavor = "multi_thread")]
async fn the_directory_speaks_tls_to_postgresql_when_its_url_asks() {
    let postgres = Postgres::start();
    let ca = postgres.enable_tls();
    let plain = postgres.database();
    let database = plain.rsplit('/').next().unwrap().to_owned();
    let url = format!("{plain}?sslmode=verify-full&sslrootcert={}", ca.display());
    let broker = Broker::start_on_postgres(&url);
    broker.user("alice").await;
    let (encrypted, all) = postgres
        .query(
            &database,
            &format!(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
                 JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = '{database}' AND a.pid <> pg_backend_pid()"
            ),
        )
        .trim()
        .split_once('|')
        .map(|(e, a)| (e.parse::<u32>().unwrap(), a.parse::<u32>().unwrap()))
        .unwrap();
    assert!(
        all >= 1 && encrypted == all,
        "{encrypted} of {all} encrypted"
    );

    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let wrong_ca = broker.dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong_ca, stranger.cert.pem()).unwrap();
    let said = common::refused_start(
        &format!(
            "[directory]\nurl = \"{plain}?sslmode=verify-full&sslrootcert={}\"\n",
            wrong_ca.display()
        ),
        &[],
    );
    assert!(
        said.contains(&database) && said.contains("invalid peer certificate"),
        "{said}"
    );
}
