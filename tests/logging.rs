//! The broker's log as an operator follows it (issue 27): at info level, a line for each
//! session opened and closed, each refused CONNECT, refused publish and failed login, and
//! each HTTP request — with who, how and from where, and never a payload, password, token or
//! login secret. `log.format = "json"` writes the same as one object per line;
//! `log.connections = false` leaves the session lines out.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Raw};
use rumqttc::v5::mqttbytes::v5::{Disconnect, DisconnectReasonCode, Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use sealrelay_client::Identity;

/// Waits until `broker`'s log holds `count` lines containing `text`; those lines.
fn lines_with(broker: &Broker, text: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = broker
            .log()
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{count} lines with {text:?}, found {}:\n{}",
            lines.len(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One instance followed through its day: a connect with a wrong secret, a session, a
/// refused publish, a takeover by its own next connection, a disconnect; and its owner's
/// failed login over HTTP. Each leaves its line, with the principal, client id, transport,
/// protocol version, address, reason and byte counts; no secret or payload is anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_follows_a_client_through_the_info_log() {
    let broker = Broker::start_with(&[("SEALRELAY_LOG_LEVEL", "info")]);
    let mut alice = broker.user("alice").await;
    let (instance_id, token) = alice.add_instance(&broker.api()).await.unwrap();
    let instance = Identity::login_instance(&broker.api(), &token)
        .await
        .unwrap();
    let login = (instance.login.as_str(), instance.auth_secret());

    let mut wrong = Raw::open(broker.mqtt).await;
    wrong
        .try_connect_v5((&instance.login, "not-the-secret-at-all"), "plant-1", 0)
        .await;
    let mut first = Raw::open(broker.mqtt).await;
    first
        .connect_session(login, "plant-1", 0, None)
        .await
        .unwrap();
    let canary = b"PAYLOAD-CANARY-5b1e".to_vec();
    let mut publish = Publish::new("not/an/inbox", QoS::AtLeastOnce, canary.clone(), None);
    publish.pkid = 1;
    first.send_v5(Packet::Publish(publish)).await;
    // Its refusal answered before the takeover below ends the session.
    match first.read(Duration::from_secs(5)).await {
        common::RawRead::Packet(p) if matches!(*p, Packet::PubAck(_)) => {}
        other => panic!("expected the refusal's PUBACK, got {other:?}"),
    }
    let mut second = Raw::open(broker.mqtt).await;
    second
        .connect_session(login, "plant-1", 0, None)
        .await
        .unwrap();
    second
        .send_v5(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::NormalDisconnection,
        )))
        .await;
    let refused = Identity::login_user(&broker.api(), "alice", "a wrong password").await;
    assert!(refused.is_err());

    let id = instance_id.to_string();
    let refused = lines_with(&broker, "connect refused", 1);
    assert!(
        refused[0].contains(&format!("login=\"{id}\""))
            && refused[0].contains("reason=\"refused_auth\"")
            && refused[0].contains("ip=127.0.0.1")
            && refused[0].contains("transport=\"tcp\""),
        "{refused:?}"
    );
    let opened = lines_with(&broker, "session opened", 2);
    for line in &opened {
        for field in [
            format!("principal={id}"),
            "kind=\"instance\"".to_owned(),
            "client_id=plant-1".to_owned(),
            "transport=\"tcp\"".to_owned(),
            "version=\"5.0\"".to_owned(),
            "ip=127.0.0.1".to_owned(),
        ] {
            assert!(line.contains(&field), "{field} missing: {line}");
        }
    }
    let publish = lines_with(&broker, "publish refused", 1);
    assert!(
        publish[0].contains("reason=\"topic_not_inbox\"") && publish[0].contains(&id),
        "{publish:?}"
    );
    let closed = lines_with(&broker, "session closed", 2);
    assert!(
        closed.iter().any(|l| l.contains("reason=\"taken_over\""))
            && closed
                .iter()
                .any(|l| l.contains("reason=\"client_disconnect\"")),
        "{closed:?}"
    );
    let login_refused = lines_with(&broker, "login refused", 2);
    assert!(
        login_refused
            .iter()
            .any(|l| l.contains("login=\"alice\"") && l.contains("reason=\"denied\"")),
        "{login_refused:?}"
    );
    let requests = lines_with(&broker, "http request", 3);
    assert!(
        requests
            .iter()
            .all(|l| l.contains("route=") && l.contains("status=") && l.contains("ms=")),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|l| !l.contains(&id)),
        "a request line names a principal: {requests:?}"
    );

    let log = broker.log();
    for secret in [
        instance.auth_secret(),
        alice.auth_secret(),
        &token.reveal(),
        "not-the-secret-at-all",
        "a wrong password",
        "pw-alice",
        "PAYLOAD-CANARY-5b1e",
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
}

/// `log.format = "json"`: every line is one JSON object, a session's lines carry its fields
/// in `span`; `log.connections = false` leaves session lines out and keeps the rest.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_speaks_json_and_session_lines_can_be_silenced() {
    for connections in ["true", "false"] {
        let broker = Broker::start_with(&[
            ("SEALRELAY_LOG_LEVEL", "info"),
            ("SEALRELAY_LOG_FORMAT", "json"),
            ("SEALRELAY_LOG_CONNECTIONS", connections),
        ]);
        let mut alice = broker.user("alice").await;
        let instance = broker.instance_of(&mut alice).await;
        let mut raw =
            Raw::connect_v5(broker.mqtt, (&instance.login, instance.auth_secret()), 0).await;
        raw.send_v5(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::NormalDisconnection,
        )))
        .await;
        let mut wrong = Raw::open(broker.mqtt).await;
        wrong
            .try_connect_v5((&instance.login, "wrong"), "x", 0)
            .await;
        lines_with(&broker, "connect refused", 1);
        let lines: Vec<serde_json::Value> = broker
            .log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let opened: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "session opened")
            .collect();
        if connections == "true" {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !broker.log().contains("session closed") {
                assert!(Instant::now() < deadline, "no session closed line");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(opened.len(), 1, "{lines:?}");
            assert_eq!(opened[0]["span"]["principal"], instance.id.to_string());
            assert_eq!(opened[0]["span"]["transport"], "tcp");
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(opened.is_empty() && !broker.log().contains("session closed"));
        }
    }
}
