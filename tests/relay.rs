//! The relay end to end, as a user drives it: register, add an instance, run the agent,
//! send from the console and get the sealed reply — over MQTT 3.1.1 and 5.0.

mod common;

use std::time::Duration;

use common::{Broker, Raw, RawRead};
use sealrelay_client::{Identity, MqttVersion};

fn cli_ok(broker: &Broker, args: &[&str], password: &str) -> String {
    common::run_cli_ok(broker.cli(), args, password)
}

fn cli_flow(version: &str) {
    let broker = Broker::start();
    let registered = cli_ok(
        &broker,
        &["user", "register", "--user", "alice"],
        "correct horse battery",
    );
    assert!(
        registered.starts_with("registered user alice"),
        "{registered}"
    );

    let added = cli_ok(
        &broker,
        &["instance", "add", "--user", "alice"],
        "correct horse battery",
    );
    let (instance, token) = common::instance_and_token(&added);
    assert!(token.starts_with(&format!("srt1.{instance}.")));

    let _agent = broker.start_agent(&token, version);
    let reply = cli_ok(
        &broker,
        &[
            "send",
            "--user",
            "alice",
            "--to",
            &instance,
            "--mqtt-version",
            version,
            "ping from the console",
        ],
        "correct horse battery",
    );
    assert_eq!(reply, "ping from the console\n");

    let listed = cli_ok(
        &broker,
        &["instance", "list", "--user", "alice"],
        "correct horse battery",
    );
    assert!(
        listed.contains(&instance) && listed.contains("online now"),
        "{listed}"
    );

    // A wrong password stops at the server with a one-line reason, before any MQTT.
    let out = broker
        .cli()
        .args(["send", "--user", "alice", "--to", &instance, "x"])
        .env("SEALRELAY_PASSWORD", "wrong")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        err.trim_end(),
        "sealrelay: wrong password for alice, or no account by that name; if the password was changed or reset, log in with the new one (a forgotten password: ask the operator for a reset code)"
    );
}

#[test]
fn cli_register_add_agent_send_over_mqtt_5() {
    cli_flow("5");
}

#[test]
fn cli_register_add_agent_send_over_mqtt_311() {
    cli_flow("3.1.1");
}

#[tokio::test]
async fn every_console_tab_of_a_user_receives_its_envelopes() {
    let broker = Broker::start();
    let mut user = broker.user("bob").await;
    let (instance_id, token) = user.add_instance(&broker.api()).await.unwrap();
    let tab = |v| {
        let broker = &broker;
        async move {
            let me = Identity::login_user(&broker.api(), "bob", "pw-bob")
                .await
                .unwrap();
            broker.client(me, v).await
        }
    };
    let mut tab1 = tab(MqttVersion::V5).await;
    let mut tab2 = tab(MqttVersion::V311).await;
    let instance = Identity::login_instance(&broker.api(), &token)
        .await
        .unwrap();
    let mut agent = broker.client(instance, MqttVersion::V5).await;

    for qos in [0, 1] {
        let note = format!("status at qos {qos}");
        agent.send(user.id, note.as_bytes(), qos).await.unwrap();
        for tab in [&mut tab1, &mut tab2] {
            let m = common::next_message(tab).await;
            assert_eq!((m.from, m.authenticated), (instance_id, true));
            assert_eq!(m.payload.as_slice(), note.as_bytes());
        }
    }
    // And the other way: a tab's request reaches the instance, whose reply reaches both tabs.
    tab1.send(instance_id, b"from tab 1", 1).await.unwrap();
    let got = common::next_message(&mut agent).await;
    assert_eq!(
        (got.from, got.payload.as_slice()),
        (user.id, b"from tab 1".as_slice())
    );
}

#[tokio::test]
async fn qos_1_envelopes_all_arrive_in_order() {
    let broker = Broker::start();
    let (mut console, instance) = broker.pair("carol", MqttVersion::V5).await;
    for i in 0..200u32 {
        console
            .send(instance, format!("n{i}").as_bytes(), 1)
            .await
            .unwrap();
    }
    for i in 0..200u32 {
        let m = tokio::time::timeout(Duration::from_secs(10), console.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload.as_slice(), format!("echo:n{i}").as_bytes());
    }
}

#[tokio::test]
async fn sessions_are_accounted_as_metadata_only() {
    let mut broker = Broker::start();
    let (mut console, instance) = broker.pair("dave", MqttVersion::V5).await;
    console
        .request(instance, b"count me", Duration::from_secs(5))
        .await
        .unwrap();
    console.close().await;
    let metrics = broker.metrics();
    assert!(
        metrics.contains("sealrelay_envelopes_delivered_total 2"),
        "{metrics}"
    );
    // Read the broker's own database, as an operator would.
    broker
        .session_rows_until(None, "a session row", |n| n > 0)
        .await;
    let db = broker.database().await;
    let row: (i64, i64, String, String) =
        sqlx::query_as("SELECT messages_in, messages_out, close_reason, ip FROM session_log WHERE close_reason <> 'live'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        row,
        (1, 1, "client_disconnect".to_owned(), "127.0.0.1".to_owned())
    );
    db.close().await;
    broker.stop();
}

#[test]
fn the_agent_reconnects_after_a_broker_restart_and_accounts_persist() {
    let mut broker = Broker::start();
    cli_ok(
        &broker,
        &["user", "register", "--user", "erin"],
        "violet staple gun",
    );
    let added = cli_ok(
        &broker,
        &["instance", "add", "--user", "erin"],
        "violet staple gun",
    );
    let (instance, token) = common::instance_and_token(&added);
    let _agent = broker.start_agent(&token, "5");
    broker.restart();
    // The agent backs off from 250 ms; give it a moment to come back before asking.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = broker
            .cli()
            .args([
                "send",
                "--user",
                "erin",
                "--to",
                &instance,
                "--timeout-secs",
                "2",
                "after restart",
            ])
            .env("SEALRELAY_PASSWORD", "violet staple gun")
            .output()
            .unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "after restart\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn session_metadata_is_purged_after_the_retention_period() {
    let mut broker = Broker::start();
    let (mut console, instance) = broker.pair("frank", MqttVersion::V5).await;
    console
        .request(instance, b"leave a trace", Duration::from_secs(5))
        .await
        .unwrap();
    console.close().await;
    broker
        .session_rows_until(None, "a session row", |n| n > 0)
        .await;
    // Sessions recorded before the restart are older than a zero-day retention.
    broker.stop();
    let (mqtt, http) = (broker.mqtt.to_string(), broker.http.to_string());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    broker.spawn(&[
        ("SEALRELAY_MQTT_LISTEN", mqtt.as_str()),
        ("SEALRELAY_HTTP_LISTEN", http.as_str()),
        ("SEALRELAY_ACCOUNTING_RETENTION_DAYS", "0"),
    ]);
    broker
        .session_rows_until(None, "expired session metadata purged", |n| n == 0)
        .await;
    // Said once the purge's last table is done, a moment after the session rows went.
    assert!(
        broker.log_shows("purged expired accounting", 1),
        "{}",
        broker.log()
    );
}

/// A console's request is answered by the reply that names it: an unsolicited message the
/// instance pushes first is not taken for the answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_takes_the_reply_that_names_it_and_skips_strays() {
    let broker = Broker::start();
    let mut user = broker.user("dora").await;
    let instance = broker.instance_of(&mut user).await;
    let (user_id, instance_id) = (user.id, instance.id);
    let mut agent = broker.client(instance, MqttVersion::V5).await;
    tokio::spawn(async move {
        let asked = common::next_message(&mut agent).await;
        agent.send(user_id, b"unsolicited status", 1).await.unwrap();
        agent.reply(&asked, b"the answer").await.unwrap();
    });
    let mut console = broker.client(user, MqttVersion::V5).await;
    let answer = console
        .request(instance_id, b"question", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer.as_slice(), b"the answer");
}

/// Protocol §4.3 with a version-1 client on the other end: the agent answers a version-1
/// request in version 1 (no reply field, which such a client could not open), and a console
/// that has heard an instance only in version 1 seals to it in version 1 and takes its
/// version-1 answer; once the instance speaks version 2 the console does too.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_1_peer_is_answered_and_addressed_in_version_1() {
    let broker = Broker::start();
    let mut user = broker.user("dora").await;
    let (instance, token) = user.add_instance(&broker.api()).await.unwrap();
    let instance_key = Identity::login_instance(&broker.api(), &token)
        .await
        .unwrap()
        .public_key();
    let old_client = user.sealer_to(instance, &instance_key);
    let _agent = common::echo_agent(&broker, &token.reveal());
    let mut console = broker.client(user, MqttVersion::V5).await;
    common::echo(&mut console, instance, b"up").await;

    // An old console's request, sealed in version 1: answered in version 1.
    let (request, _) = old_client.seal_in(1, b"old question", None).unwrap();
    console.send_envelope(instance, request, 1).await.unwrap();
    let answer = common::next_message(&mut console).await;
    assert_eq!(
        (
            answer.version,
            answer.in_reply_to,
            answer.payload.as_slice()
        ),
        (1, None, b"echo:old question".as_slice())
    );

    // A version-1 instance: heard only in version 1, it is sealed to in version 1.
    let mut alice = broker.user("alice").await;
    let old_instance = broker.instance_of(&mut alice).await;
    let (alice_id, old_id) = (alice.id, old_instance.id);
    let to_alice = old_instance.sealer_to(alice_id, &alice.public_key());
    let pushed = to_alice.seal_in(1, b"status: running", None).unwrap().0;
    let mut old_agent = broker.client(old_instance, MqttVersion::V5).await;
    let mut console = broker.client(alice, MqttVersion::V5).await;
    old_agent.send_envelope(alice_id, pushed, 1).await.unwrap();
    assert_eq!(common::next_message(&mut console).await.version, 1);
    let asking = tokio::spawn(async move {
        let answer = console
            .request(old_id, b"status?", Duration::from_secs(5))
            .await
            .unwrap();
        (console, answer)
    });
    let asked = common::next_message(&mut old_agent).await;
    assert_eq!(
        asked.version, 1,
        "a version-1 instance could not open version 2"
    );
    old_agent.reply(&asked, b"running").await.unwrap();
    let (mut console, answer) = asking.await.unwrap();
    assert_eq!(answer.as_slice(), b"running");

    // The instance, upgraded, speaks version 2: so does the console from then on.
    let upgraded = to_alice.seal_in(2, b"upgraded", None).unwrap().0;
    old_agent
        .send_envelope(alice_id, upgraded, 1)
        .await
        .unwrap();
    assert_eq!(common::next_message(&mut console).await.version, 2);
    console.send(old_id, b"hello", 1).await.unwrap();
    assert_eq!(common::next_message(&mut old_agent).await.version, 2);
}

/// A delivery larger than the recipient's client takes (its MQTT 5 Maximum Packet Size) is
/// discarded "as if sent" (MQTT-3.1.2-25); the publisher used to get PUBACK 0x00 for it (issue
/// 25). It now hears why: PUBACK 0x97 `recipient_max_packet`, and a smaller envelope still goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_hears_when_the_recipient_takes_no_packet_that_large() {
    use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
    use rumqttc::v5::mqttbytes::QoS;

    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    let mut small = connect_taking(&broker, &instance, None, Some(1024)).await;
    small.subscribe_inbox(instance.id).await;

    let mut publisher = Raw::connect_v5(broker.mqtt, (&alice.login, alice.auth_secret()), 0).await;
    for (pkid, size) in [(1u16, 2000usize), (2, 100)] {
        let envelope = alice
            .seal_to(instance.id, &instance.public_key(), &vec![b'x'; size])
            .unwrap();
        let mut publish = Publish::new(
            instance.id.inbox_topic(),
            QoS::AtLeastOnce,
            envelope.to_vec(),
            None,
        );
        publish.pkid = pkid;
        publisher.send_v5(Packet::Publish(publish)).await;
        let RawRead::Packet(p) = publisher.read(Duration::from_secs(5)).await else {
            panic!("no PUBACK");
        };
        let Packet::PubAck(ack) = *p else {
            panic!("expected PUBACK, got {p:?}");
        };
        let label = ack.properties.and_then(|p| p.reason_string);
        if size > 1000 {
            assert_eq!(
                ack.reason,
                rumqttc::v5::mqttbytes::v5::PubAckReason::QuotaExceeded
            );
            assert_eq!(label.as_deref(), Some("recipient_max_packet"));
        } else {
            assert_eq!(
                ack.reason,
                rumqttc::v5::mqttbytes::v5::PubAckReason::Success,
                "{label:?}"
            );
        }
    }
    // The small one arrives; the large one never did.
    match small.read(Duration::from_secs(5)).await {
        RawRead::Packet(p) => assert!(
            matches!(*p, Packet::Publish(ref p) if p.payload.len() < 1000),
            "{p:?}"
        ),
        other => panic!("the small envelope: {other:?}"),
    }
}

/// An MQTT 5 CONNECT as `instance`, client id "small", persistent (Clean Start 0, an hour's
/// expiry) if `persistent_id` names the client id, taking packets up to `max_packet`;
/// asserts CONNACK success.
async fn connect_taking(
    broker: &Broker,
    instance: &Identity,
    persistent_id: Option<&str>,
    max_packet: Option<u32>,
) -> Raw {
    let mut raw = Raw::open(broker.mqtt).await;
    let login = (instance.login.as_str(), instance.auth_secret());
    let client_id = persistent_id.unwrap_or("small");
    let persist = persistent_id.map(|_| 3600);
    let ack = raw
        .connect_session_taking(login, client_id, 30, persist, max_packet)
        .await
        .expect("CONNACK");
    assert_eq!(
        ack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
    );
    raw
}

/// A persistent session parked holding a large envelope and a small one, resumed by a
/// connection that takes smaller packets than the last: the large one is discarded as if
/// sent (MQTT-3.1.2-25) and counted, the small one delivered, the session kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_session_is_sent_nothing_larger_than_its_new_maximum() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAck};

    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    let mut agent = connect_taking(&broker, &instance, Some("agent"), None).await;
    agent.subscribe_inbox(instance.id).await;
    drop(agent);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !broker.metrics().contains("sealrelay_sessions_parked 1") {
        assert!(std::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut console = broker.client(alice, MqttVersion::V5).await;
    for size in [2000, 100] {
        console
            .send(instance.id, &vec![b'x'; size], 1)
            .await
            .unwrap();
    }

    let mut agent = connect_taking(&broker, &instance, Some("agent"), Some(1024)).await;
    let RawRead::Packet(p) = agent.read(Duration::from_secs(5)).await else {
        panic!("the small envelope was not delivered");
    };
    let Packet::Publish(publish) = *p else {
        panic!("expected the small envelope, got {p:?}");
    };
    assert!(publish.payload.len() < 1000, "{}", publish.payload.len());
    agent
        .send_v5(Packet::PubAck(PubAck::new(publish.pkid, None)))
        .await;
    assert!(
        matches!(
            agent.read(Duration::from_millis(500)).await,
            RawRead::Timeout
        ),
        "nothing else is sent, and the session stays"
    );
    let discarded =
        broker.counter(r#"sealrelay_offline_discarded_total{reason="client_max_packet"}"#);
    assert_eq!(discarded, 1);
}
