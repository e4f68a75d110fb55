//! Accounting as the people it concerns read it: a session's row written at CONNACK,
//! checkpointed while it lives and matching to the byte what the client's socket carried;
//! a SIGKILLed broker losing at most one checkpoint; failed logins against a name recorded
//! per hour; a user's activity report holding everything about them and nothing about
//! anyone else; and every table and column of the database described in
//! docs/accounting.md.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Broker, Probe, ProbeOptions, Seen};
use sealrelay_client::{Client, Identity, MqttVersion};
use sealrelay_wire::api::{Activity, AdminSessionRecord};
use sealrelay_wire::PrincipalId;

/// Every live session is checkpointed each second and every session keeps its own row.
const LIVE_ACCOUNTING: [(&str, &str); 2] = [
    ("SEALRELAY_ACCOUNTING_CHECKPOINT_SECS", "1"),
    ("SEALRELAY_ACCOUNTING_AGGREGATE_BELOW_SECS", "0"),
];

/// A TCP relay in front of the broker that counts the bytes its one client sent and
/// received: what the client's socket carried, counted on the client's side.
struct Counted {
    addr: SocketAddr,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    /// Set once both directions reached end of stream.
    done: Arc<AtomicU64>,
}

impl Counted {
    async fn start(upstream: SocketAddr) -> Counted {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sent, received, done): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) =
            Default::default();
        let counters = [Arc::clone(&sent), Arc::clone(&received)];
        let finished = Arc::clone(&done);
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let broker = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (client_rx, client_tx) = client.into_split();
            let (broker_rx, broker_tx) = broker.into_split();
            let ways: [(
                tokio::net::tcp::OwnedReadHalf,
                tokio::net::tcp::OwnedWriteHalf,
            ); 2] = [(client_rx, broker_tx), (broker_rx, client_tx)];
            for ((mut from, mut to), count) in ways.into_iter().zip(counters) {
                let finished = Arc::clone(&finished);
                tokio::spawn(async move {
                    let mut chunk = [0u8; 16384];
                    while let Ok(n @ 1..) = from.read(&mut chunk).await {
                        count.fetch_add(n as u64, Ordering::SeqCst);
                        if to.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown().await;
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Counted {
            addr,
            sent,
            received,
            done,
        }
    }
}

/// Polls `check` for up to `limit`, failing with `what` if it never returns `Some`.
async fn within<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sessions of `principal` in `report`.
fn sessions_of(report: &Activity, principal: PrincipalId) -> &[AdminSessionRecord] {
    &report
        .principals
        .iter()
        .find(|p| p.id == principal)
        .unwrap_or_else(|| panic!("{principal} is in the report"))
        .sessions
}

/// The operator's export of `principal`'s report, from `sealrelay admin activity`.
fn exported(broker: &Broker, principal: PrincipalId) -> Activity {
    let out = broker.admin(&["activity", "--principal", &principal.to_string(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_row_matches_to_the_byte_what_its_socket_carried_and_shows_while_it_lives() {
    let (broker, alice, instance) = common::alice_and_her_instance(&LIVE_ACCOUNTING).await;
    let (api, instance_id) = (broker.api(), instance.id);
    let counted = Counted::start(broker.mqtt).await;
    let mut agent = Client::connect(
        api.clone(),
        instance,
        &counted.addr.to_string(),
        MqttVersion::V5,
    )
    .await
    .unwrap();
    let mut console = broker.client(alice, MqttVersion::V5).await;
    for round in 0..3u8 {
        console
            .send(instance_id, &vec![round; 100 + usize::from(round)], 1)
            .await
            .unwrap();
        let asked = common::next_message(&mut agent).await;
        agent.send(asked.from, b"done", 1).await.unwrap();
        common::next_message(&mut console).await;
    }

    // Live: the row is there within a checkpoint, for the user and for the operator.
    let live = within(
        Duration::from_secs(5),
        "the live row checkpointed",
        || async {
            let report = console.identity().activity(&api, None).await.unwrap();
            let row = sessions_of(&report, instance_id).first()?.clone();
            (row.close_reason == "live" && row.traffic.messages_in == 3).then_some(row)
        },
    )
    .await;
    assert_eq!(live.transport.as_deref(), Some("tcp"));
    assert_eq!(live.protocol_version.as_deref(), Some("5.0"));
    assert!(live.client_id.as_ref().is_some_and(|c| !c.is_empty()));
    assert_eq!(
        (live.traffic.messages_in, live.traffic.messages_out),
        (3, 3)
    );
    let exported = exported(&broker, instance_id);
    assert_eq!(sessions_of(&exported, instance_id)[0].close_reason, "live");

    agent.close().await;
    within(
        Duration::from_secs(5),
        "the relay saw both ends close",
        || async { (counted.done.load(Ordering::SeqCst) == 2).then_some(()) },
    )
    .await;
    let closed = within(Duration::from_secs(5), "the closed row", || async {
        let report = console.identity().activity(&api, None).await.unwrap();
        let row = sessions_of(&report, instance_id).first()?.clone();
        (row.close_reason == "client_disconnect").then_some(row)
    })
    .await;
    assert_eq!(
        (closed.traffic.wire_bytes_in, closed.traffic.wire_bytes_out),
        (
            counted.sent.load(Ordering::SeqCst),
            counted.received.load(Ordering::SeqCst)
        ),
        "the row's wire bytes are what the client's socket sent and received"
    );
    assert!(closed.traffic.wire_bytes_in > closed.traffic.bytes_in && closed.traffic.bytes_in > 0);
    assert_eq!(
        (closed.traffic.messages_in, closed.traffic.messages_out),
        (3, 3)
    );

    // The hour's usage holds the same counts.
    let report = console.identity().activity(&api, None).await.unwrap();
    let usage = &report
        .principals
        .iter()
        .find(|p| p.id == instance_id)
        .unwrap()
        .usage;
    let sum = |f: fn(&sealrelay_wire::api::UsageRecord) -> u64| usage.iter().map(f).sum::<u64>();
    assert_eq!(sum(|u| u.sessions), 1);
    assert_eq!(
        sum(|u| u.traffic.wire_bytes_in),
        closed.traffic.wire_bytes_in
    );
    assert_eq!(
        sum(|u| u.traffic.wire_bytes_out),
        closed.traffic.wire_bytes_out
    );
    assert_eq!(sum(|u| u.traffic.bytes_out), closed.traffic.bytes_out);
    console.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_broker_loses_at_most_one_checkpoint_and_closes_its_rows_as_unclean_at_start() {
    let (mut broker, alice, instance) = common::alice_and_her_instance(&LIVE_ACCOUNTING).await;
    let instance_id = instance.id;
    let mut agent = broker.client(instance, MqttVersion::V311).await;
    let mut console = broker.client(alice, MqttVersion::V5).await;
    for _ in 0..4 {
        console.send(instance_id, b"counted", 1).await.unwrap();
        common::next_message(&mut agent).await;
    }
    // Two checkpoints after the last envelope, both rows hold every count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    broker.stop_with("KILL");
    drop((agent, console));
    broker.respawn();
    let db = broker.database().await;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT close_reason, messages_in, messages_out FROM session_log ORDER BY messages_in",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("unclean_shutdown".to_owned(), 0, 4),
            ("unclean_shutdown".to_owned(), 4, 0)
        ],
        "both rows closed at start with their last checkpoint's counts"
    );
    let (sessions, envelopes): (i64, i64) = sqlx::query_as(
        "SELECT CAST(SUM(sessions) AS BIGINT), CAST(SUM(messages_in) AS BIGINT) FROM usage_hours",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((sessions, envelopes), (2, 4));
    db.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_against_a_name_are_recorded_and_a_user_sees_only_their_own() {
    let (broker, alice, alices_instance) = common::alice_and_her_instance(&LIVE_ACCOUNTING).await;
    let bob = broker.user("bob").await;
    let api = broker.api();
    // Two wrong secrets for alice over MQTT, one over HTTP; one for a name nobody has.
    for _ in 0..2 {
        let mut probe = Probe::connect(
            broker.mqtt,
            ProbeOptions::new(MqttVersion::V5, Some(("alice", "not-her-secret"))),
        )
        .await;
        assert_eq!(probe.next().await, Seen::ConnAck(0x87));
    }
    let wrong = ureq::get(&format!("http://{}/v1/me", broker.http))
        .header(
            "Authorization",
            common::basic_auth("alice", "not-her-secret"),
        )
        .call();
    assert!(wrong.is_err(), "a wrong secret is refused");
    let mut probe = Probe::connect(
        broker.mqtt,
        ProbeOptions::new(MqttVersion::V5, Some(("no-such-user-hunter2", "x"))),
    )
    .await;
    assert_eq!(probe.next().await, Seen::ConnAck(0x87));
    // Both users and the instance have had a session.
    for who in [alices_instance, bob] {
        broker.client(who, MqttVersion::V5).await.close().await;
    }
    let bob = Identity::login_user(&api, "bob", "pw-bob").await.unwrap();

    let report = within(
        Duration::from_secs(5),
        "alice's failures recorded",
        || async {
            let report = alice.activity(&api, None).await.unwrap();
            let failures: u64 = report.principals[0]
                .login_failures
                .iter()
                .map(|f| f.failures)
                .sum();
            (failures == 3).then_some(report)
        },
    )
    .await;
    let me = &report.principals[0];
    assert_eq!((me.id, me.login.as_str()), (alice.id, "alice"));
    assert_eq!(me.login_failures[0].ip, "127.0.0.1");
    assert_eq!(me.login_failures[0].reason, "denied");
    assert_eq!(report.principals.len(), 2, "alice and her instance");
    assert!(
        me.stored
            .iter()
            .any(|b| b.column == "wrapped_key" && b.bytes > 0 && b.sha256.len() == 64),
        "{:?}",
        me.stored
    );
    let db = broker.database().await;
    let unknown: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        unknown, 1,
        "one row: alice's hour and address; the unknown name is not written"
    );
    db.close().await;

    // Bob's report names bob alone: no id, login or record of alice's or her instance's.
    let bobs = within(Duration::from_secs(5), "bob's closed session", || async {
        let report = bob.activity(&api, None).await.unwrap();
        (!report.principals[0].sessions.is_empty()).then_some(report)
    })
    .await;
    let text = serde_json::to_string(&bobs).unwrap();
    assert_eq!(bobs.principals.len(), 1);
    assert!(bobs.pairings.is_empty());
    for foreign in [alice.id.to_string(), report.principals[1].id.to_string()] {
        assert!(
            !text.contains(&foreign),
            "bob's report names {foreign}: {text}"
        );
    }
    assert!(!text.contains("alice"), "{text}");
    assert!(bobs.principals[0].login_failures.is_empty());
}

/// The tables and columns the broker's database holds, from the engine's own catalogue
/// (SQLite's, or PostgreSQL's information schema when the suite runs on PostgreSQL).
async fn schema(db: &sqlx::AnyPool, postgres: bool) -> Vec<(String, Vec<String>)> {
    let (tables, columns) = match postgres {
        false => (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE '_sqlx%' ORDER BY name",
            "SELECT name FROM pragma_table_info($1)",
        ),
        true => (
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%' ORDER BY 1",
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        ),
    };
    let tables: Vec<String> = sqlx::query_scalar(tables).fetch_all(db).await.unwrap();
    let mut schema = Vec::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query_scalar(columns)
            .bind(&table)
            .fetch_all(db)
            .await
            .unwrap();
        schema.push((table, columns));
    }
    schema
}

#[tokio::test(flavor = "multi_thread")]
async fn every_table_and_column_of_the_database_is_described_in_docs_accounting() {
    let broker = Broker::start();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/accounting.md"))
        .unwrap();
    let db = broker.database().await;
    let schema = schema(&db, broker.directory_url().is_some()).await;
    db.close().await;
    assert!(schema.len() >= 8, "{schema:?}");
    let mut missing = Vec::new();
    for (table, columns) in &schema {
        let heading = format!("### `{table}`");
        let Some(start) = docs.find(&heading) else {
            missing.push(table.clone());
            continue;
        };
        let section = &docs[start + heading.len()..];
        let section = &section[..section.find("\n### ").unwrap_or(section.len())];
        for column in columns {
            if !section.contains(&format!("| `{column}` |")) {
                missing.push(format!("{table}.{column}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/accounting.md describes no {missing:?}: add a row for each, saying what it reveals"
    );
}
