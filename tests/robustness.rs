//! Bad input and protocol corners: each misbehaving connection is closed with a reason,
//! and every other session keeps working.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Broker, Probe, ProbeOptions, Raw, RawRead, Seen};
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode as D, Packet, PubAckReason, Publish};
use rumqttc::v5::mqttbytes::QoS;
use sealrelay_client::crypto;
use sealrelay_client::MqttVersion;

fn disconnect_code(packets: &[Packet]) -> Option<D> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason_code),
        _ => None,
    })
}

fn publish(topic: String, payload: impl Into<Bytes>) -> Packet {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.into(), None);
    p.pkid = 1;
    Packet::Publish(p)
}

#[tokio::test]
async fn malformed_input_closes_only_the_offending_session() {
    let broker = Broker::start();
    let (mut console, instance) = broker.pair("alice", MqttVersion::V5).await;
    let reply = console
        .request(instance, b"before", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply.as_slice(), b"echo:before");
    let mut eve = broker.user("eve").await;
    let (eve_instance, _) = eve.add_instance(&broker.api()).await.unwrap();
    let login = (eve.login.as_str(), eve.auth_secret());

    // A malformed remaining length before CONNECT.
    let mut raw = Raw::open(broker.mqtt).await;
    raw.send(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
    assert!(raw.until_closed().await.is_empty());

    // Anything but CONNECT first.
    let mut raw = Raw::open(broker.mqtt).await;
    raw.send(&[0xC0, 0x00]).await;
    assert!(raw.until_closed().await.is_empty());

    // MQTT 3.1 (MQIsdp, level 3) is not spoken: CONNACK "unacceptable protocol version".
    let mut raw = Raw::open(broker.mqtt).await;
    let mut connect = vec![0x10, 0x10, 0x00, 0x06];
    connect.extend_from_slice(b"MQIsdp");
    connect.extend_from_slice(&[0x03, 0x02, 0x00, 0x3C, 0x00, 0x02, b'c', b'1']);
    raw.send(&connect).await;
    assert_eq!(raw.raw_until_closed().await, vec![0x20, 0x02, 0x00, 0x01]);

    // A packet larger than mqtt.max_packet_bytes: DISCONNECT 0x95.
    let mut raw = Raw::connect_v5(broker.mqtt, login, 30).await;
    raw.send(&[0x30, 0x80, 0x80, 0x80, 0x01]).await;
    assert_eq!(
        disconnect_code(&raw.until_closed().await),
        Some(D::PacketTooLarge)
    );

    // A structurally broken packet (SUBSCRIBE without filters): DISCONNECT 0x81.
    let mut raw = Raw::connect_v5(broker.mqtt, login, 30).await;
    raw.send(&[0x82, 0x03, 0x00, 0x01, 0x00]).await;
    assert_eq!(
        disconnect_code(&raw.until_closed().await),
        Some(D::MalformedPacket)
    );

    // A payload that is not an envelope, and an envelope whose header names another
    // recipient than its topic: refused per message (PUBACK 0x99 with the label as Reason
    // String), and the session stays.
    let misaddressed =
        crypto::seal_anonymous(eve.id, console.identity().id, &eve.public_key(), b"x").unwrap();
    let mut raw = Raw::connect_v5(broker.mqtt, login, 30).await;
    for (payload, label) in [
        (Bytes::from("not an envelope"), "bad_header"),
        (misaddressed, "recipient_mismatch"),
    ] {
        raw.send_v5(publish(eve_instance.inbox_topic(), payload))
            .await;
        match raw.read(Duration::from_secs(5)).await {
            RawRead::Packet(p) => match *p {
                Packet::PubAck(ack) => {
                    assert_eq!(ack.reason, PubAckReason::PayloadFormatInvalid);
                    let why = ack.properties.and_then(|p| p.reason_string);
                    assert_eq!(why.as_deref(), Some(label));
                }
                other => panic!("expected PUBACK, got {other:?}"),
            },
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    // At QoS 0 there is nothing to answer: dropped and counted, the session stays.
    let mut qos0 = Publish::new(eve_instance.inbox_topic(), QoS::AtMostOnce, "junk", None);
    qos0.pkid = 0;
    raw.send_v5(Packet::Publish(qos0)).await;
    raw.send(&[0xC0, 0x00]).await; // PINGREQ: still connected
    assert!(matches!(
        raw.read(Duration::from_secs(5)).await,
        RawRead::Packet(p) if matches!(*p, Packet::PingResp(_))
    ));
    assert!(broker
        .metrics()
        .contains("sealrelay_publish_refused_total{reason=\"bad_header\"} 2"));

    // A second CONNECT on a live session is a protocol error.
    let mut raw = Raw::connect_v5(broker.mqtt, login, 30).await;
    raw.send(&[
        0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x00,
    ])
    .await;
    assert_eq!(
        disconnect_code(&raw.until_closed().await),
        Some(D::ProtocolError)
    );

    // The short DISCONNECT forms MQTT 5 allows, which rumqttc's parser mishandles.
    for bytes in [&[0xE0u8, 0x00][..], &[0xE0, 0x01, 0x8E][..]] {
        let mut raw = Raw::connect_v5(broker.mqtt, login, 30).await;
        raw.send(bytes).await;
        assert!(
            raw.until_closed().await.is_empty(),
            "{bytes:x?} closes quietly"
        );
    }

    let reply = console
        .request(instance, b"after", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply.as_slice(), b"echo:after");
    let log = broker.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn keepalive_expiry_closes_the_session() {
    let broker = Broker::start();
    let user = broker.user("alice").await;
    let mut raw = Raw::connect_v5(broker.mqtt, (&user.login, user.auth_secret()), 1).await;
    let started = std::time::Instant::now();
    assert_eq!(
        disconnect_code(&raw.until_closed().await),
        Some(D::KeepAliveTimeout)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_second_connect_with_the_same_client_id_takes_over() {
    let broker = Broker::start();
    let user = broker.user("alice").await;
    let login = Some((user.login.as_str(), user.auth_secret()));
    let options = || ProbeOptions {
        client_id: "tab-1",
        ..ProbeOptions::new(MqttVersion::V5, login)
    };
    let mut first = Probe::connect(broker.mqtt, options()).await;
    assert_eq!(first.next().await, Seen::ConnAck(0));
    let mut second = Probe::connect(broker.mqtt, options()).await;
    assert_eq!(second.next().await, Seen::ConnAck(0));
    assert_eq!(first.next().await, Seen::Disconnect(0x8E));
    second.subscribe(&user.id.inbox_topic(), 1).await;
    assert_eq!(second.next().await, Seen::SubAck(vec![1]));
}

#[tokio::test]
async fn qos_2_is_accepted_and_delivered_as_qos_1() {
    let broker = Broker::start();
    let mut user = broker.user("alice").await;
    let instance = broker.instance_of(&mut user).await;
    let instance_id = instance.id;
    let mut sub = Probe::logged_in(broker.mqtt, MqttVersion::V311, &instance).await;
    sub.subscribe(&instance_id.inbox_topic(), 2).await;
    assert_eq!(sub.next().await, Seen::SubAck(vec![1]), "granted QoS is 1");

    let mut publisher = Probe::logged_in(broker.mqtt, MqttVersion::V5, &user).await;
    let envelope = crypto::seal_anonymous(
        user.id,
        instance_id,
        &instance.public_key(),
        b"exactly once",
    )
    .unwrap();
    publisher
        .publish(&instance_id.inbox_topic(), 2, false, envelope.clone())
        .await;
    assert!(matches!(publisher.next().await, Seen::PubRec(_, 0)));
    assert!(matches!(publisher.next().await, Seen::PubComp(_)));
    assert_eq!(
        sub.next().await,
        Seen::Publish {
            topic: instance_id.inbox_topic(),
            qos: 1,
            payload: envelope
        }
    );
}

#[tokio::test]
async fn retained_messages_and_wills_follow_the_documented_rules() {
    let broker = Broker::start();
    let mut user = broker.user("alice").await;
    let instance = broker.instance_of(&mut user).await;
    let instance_id = instance.id;
    let login = Some((user.login.as_str(), user.auth_secret()));
    let envelope =
        crypto::seal_anonymous(user.id, instance_id, &instance.public_key(), b"r").unwrap();

    // MQTT 5: a will with retain is refused at CONNECT; a retained PUBLISH closes with 0x9A.
    let mut p = Probe::connect(
        broker.mqtt,
        ProbeOptions {
            will_retain: Some(true),
            ..ProbeOptions::new(MqttVersion::V5, login)
        },
    )
    .await;
    assert_eq!(p.next().await, Seen::ConnAck(0x9A));
    let mut p = Probe::connect(
        broker.mqtt,
        ProbeOptions {
            will_retain: Some(false),
            ..ProbeOptions::new(MqttVersion::V5, login)
        },
    )
    .await;
    assert_eq!(
        p.next().await,
        Seen::ConnAck(0),
        "a will without retain is accepted (and ignored)"
    );
    p.publish(&instance_id.inbox_topic(), 1, true, envelope.clone())
        .await;
    assert_eq!(p.next().await, Seen::Disconnect(0x9A));

    // MQTT 3.1.1 cannot refuse retain: the flag is ignored and the envelope delivered live.
    let mut sub = Probe::logged_in(broker.mqtt, MqttVersion::V5, &instance).await;
    sub.subscribe(&instance_id.inbox_topic(), 1).await;
    sub.next().await;
    let mut p = Probe::connect(
        broker.mqtt,
        ProbeOptions {
            will_retain: Some(true),
            ..ProbeOptions::new(MqttVersion::V311, login)
        },
    )
    .await;
    assert_eq!(p.next().await, Seen::ConnAck(0));
    p.publish(&instance_id.inbox_topic(), 1, true, envelope.clone())
        .await;
    assert!(matches!(p.next().await, Seen::PubAck(_, 0)));
    match sub.next().await {
        Seen::Publish { payload, .. } => assert_eq!(payload, envelope),
        other => panic!("expected the envelope, got {other:?}"),
    }
    // Nothing was retained: a new subscriber gets nothing.
    let mut late = Probe::connect(
        broker.mqtt,
        ProbeOptions {
            client_id: "late",
            ..ProbeOptions::new(
                MqttVersion::V5,
                Some((&instance.login, instance.auth_secret())),
            )
        },
    )
    .await;
    late.next().await;
    late.subscribe(&instance_id.inbox_topic(), 1).await;
    late.next().await;
    assert!(late.next_within(Duration::from_millis(300)).await.is_none());
}

fn serve_with(env: &[(&str, &str)], config: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("serve")
        .current_dir(dir.path())
        .envs(env.iter().copied());
    if let Some(text) = config {
        std::fs::write(dir.path().join("b.toml"), text).unwrap();
        cmd.args(["--config", "b.toml"]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_stops_start_up_with_one_line_naming_it() {
    let (ok, err) = serve_with(&[], Some("[mqtt]\nlisen = \"127.0.0.1:1\"\n"));
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("lisen"),
        "{err}"
    );

    let (ok, err) = serve_with(&[("SEALRELAY_MQTT_MAX_INFLIGHT", "lots")], None);
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("SEALRELAY_MQTT_MAX_INFLIGHT"),
        "{err}"
    );

    let (ok, err) = serve_with(&[("SEALRELAY_HTTP_LISTEN", "nowhere")], None);
    assert!(!ok && err.contains("http.listen"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, err) = serve_with(
        &[
            ("SEALRELAY_MQTT_LISTEN", &addr),
            ("SEALRELAY_HTTP_LISTEN", "127.0.0.1:0"),
            ("SEALRELAY_LOG_LEVEL", "error"),
        ],
        None,
    );
    let last = err.trim().lines().last().unwrap_or("");
    assert!(
        !ok && last.contains(&addr) && last.contains("mqtt.listen"),
        "{err}"
    );
}
