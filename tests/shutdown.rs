//! Stopping the broker loses nothing it accepted: every live session is told, flushed and
//! recorded before the process exits 0 (issue: "a broker that stops without losing
//! anything"). Real broker process, real rumqttc clients over TCP, real SQLite file.

mod common;

use std::time::Duration;

use common::{Broker, Probe, ProbeOptions, Seen};
use sealrelay_client::MqttVersion;

/// Connects `count` sessions of `who` alternating MQTT 3.1.1 and 5.0, each with its own
/// client id, and returns them with their version.
async fn sessions(
    broker: &Broker,
    who: &sealrelay_client::Identity,
    count: usize,
) -> Vec<(MqttVersion, Probe)> {
    let mut probes = Vec::with_capacity(count);
    for i in 0..count {
        let version = if i % 2 == 0 {
            MqttVersion::V311
        } else {
            MqttVersion::V5
        };
        let client_id = format!("s{i}");
        let mut options = ProbeOptions::new(version, Some((&who.login, who.auth_secret())));
        options.client_id = &client_id;
        let mut probe = Probe::connect(broker.mqtt, options).await;
        assert_eq!(probe.next().await, Seen::ConnAck(0), "session {i}");
        probes.push((version, probe));
    }
    probes
}

/// Waits until `probe` sees the broker end the session: MQTT 5 gets DISCONNECT 0x8B
/// (server shutting down) before the close; 3.1.1 has no server DISCONNECT, only the close.
async fn saw_shutdown(version: MqttVersion, probe: &mut Probe) -> bool {
    let mut told = version == MqttVersion::V311;
    while let Some(seen) = probe.next_within(Duration::from_secs(10)).await {
        match seen {
            Seen::Disconnect(0x8B) => told = true,
            Seen::Closed(_) => return told,
            other => panic!("unexpected {other:?} during shutdown"),
        }
    }
    false
}

async fn shutdown_records_every_session(signal: &str, count: usize) {
    // One principal holds all the sessions here: lift its cap above the count.
    let cap = count.to_string();
    let mut broker = Broker::start_with(&[("SEALRELAY_MQTT_MAX_SESSIONS_PER_PRINCIPAL", &cap)]);
    let alice = broker.user("alice").await;
    let mut probes = sessions(&broker, &alice, count).await;
    // Every session is admitted and counted live before the signal.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !broker
        .metrics()
        .contains(&format!("sealrelay_sessions_active {count}"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions never all live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let sig = signal.to_owned();
    let stop = tokio::task::spawn_blocking(move || {
        let stopped = broker.stop_with(&sig);
        (broker, stopped)
    });
    let mut told = 0;
    for (version, probe) in &mut probes {
        told += usize::from(saw_shutdown(*version, probe).await);
    }
    let (broker, stopped) = stop.await.unwrap();
    let (status, took) = stopped.expect("the broker was running");

    eprintln!("SIG{signal} with {count} live sessions: {status} after {took:?}");
    assert_eq!(
        told, count,
        "every client sees its session end as a shutdown"
    );
    assert!(status.success(), "exit status after SIG{signal}: {status}");
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?}, well beyond what {count} sessions need"
    );
    let db = broker.database().await;
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT close_reason, sessions FROM session_log")
        .fetch_all(&db)
        .await
        .unwrap();
    // Short sessions share a row per principal, address and reason; each is counted.
    let recorded: i64 = rows.iter().map(|(_, sessions)| sessions).sum();
    assert_eq!(recorded, count as i64, "every session recorded: {rows:?}");
    assert!(
        rows.iter().all(|(reason, _)| reason == "server_shutdown"),
        "{rows:?}"
    );
    let log = broker.log();
    assert!(log.contains("sealrelay stopped"), "{log}");
    assert!(!log.contains("grace period over"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_200_live_sessions_records_all_200_and_exits_0() {
    shutdown_records_every_session("TERM", 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_as_gracefully_as_sigterm() {
    shutdown_records_every_session("INT", 20).await;
}

/// A session whose client never reads cannot hold the broker hostage: after
/// `server.shutdown_grace_secs` the rest is cut, counted in the log, and the exit is still 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_session_is_cut_at_the_end_of_the_grace_period() {
    let mut broker = Broker::start_with(&[("SEALRELAY_SERVER_SHUTDOWN_GRACE_SECS", "1")]);
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    // The instance's raw socket subscribes and then never reads: the broker's writes to it
    // back up until its writer cannot flush.
    let mut stuck =
        common::Raw::connect_v5(broker.mqtt, (&instance.login, instance.auth_secret()), 0).await;
    stuck
        .send_v5(rumqttc::v5::mqttbytes::v5::Packet::Subscribe(
            rumqttc::v5::mqttbytes::v5::Subscribe::new(
                rumqttc::v5::mqttbytes::v5::Filter::new(
                    instance.id.inbox_topic(),
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                ),
                None,
            ),
        ))
        .await;
    let mut console = broker.client(alice, MqttVersion::V5).await;
    // 40 MB at QoS 0: more than the kernel's socket buffers (a few MB on loopback) plus
    // the session's 1 MiB budget, so the broker's writer for `stuck` cannot flush.
    let blob = vec![7u8; 200_000];
    for _ in 0..200 {
        console.send(instance.id, &blob, 0).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, took) = tokio::task::spawn_blocking(move || {
        let stopped = broker.stop_with("TERM");
        (broker, stopped)
    })
    .await
    .map(|(broker, stopped)| {
        assert!(
            broker.log().contains("grace period over"),
            "{}",
            broker.log()
        );
        stopped.unwrap()
    })
    .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    drop(stuck);
}
