//! Who may do what: logins, subscriptions, publishes and the sender field, checked with
//! our SDK, plain rumqttc clients, and Debian's mosquitto clients.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Broker, Probe, ProbeOptions, Seen};
use sealrelay_client::crypto;
use sealrelay_client::{ClientError, Identity, MqttVersion};
use sealrelay_wire::PrincipalId;

fn login(identity: &Identity) -> (String, String) {
    (identity.login.clone(), identity.auth_secret().to_owned())
}

#[tokio::test]
async fn subscriptions_are_limited_to_the_own_inbox() {
    let broker = Broker::start();
    let alice = broker.user("alice").await;
    let mut bob = broker.user("bob").await;
    for (version, refused) in [(MqttVersion::V5, 0x87), (MqttVersion::V311, 0x80)] {
        let mut p = Probe::logged_in(broker.mqtt, version, &alice).await;
        for filter in [
            "#",
            "+/v1/inbox/+",
            "$SYS/#",
            "sr/v1/inbox/#",
            &bob.id.inbox_topic(),
            "sr/v1/inbox/+",
        ] {
            p.subscribe(filter, 1).await;
            assert_eq!(
                p.next().await,
                Seen::SubAck(vec![refused]),
                "{version:?} {filter}"
            );
        }
        p.subscribe(&alice.id.inbox_topic(), 2).await;
        assert_eq!(
            p.next().await,
            Seen::SubAck(vec![1]),
            "QoS 2 is granted as 1"
        );
    }

    // Traffic between bob and his instance reaches no one else.
    let mut spy = Probe::logged_in(broker.mqtt, MqttVersion::V5, &alice).await;
    spy.subscribe("#", 0).await;
    spy.next().await;
    let instance = broker.instance_of(&mut bob).await;
    let bob_instance = instance.id;
    let mut instance = broker.client(instance, MqttVersion::V5).await;
    let mut bob = broker.client(bob, MqttVersion::V5).await;
    bob.send(bob_instance, b"private", 1).await.unwrap();
    common::next_message(&mut instance).await;
    assert_eq!(spy.next_within(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn publishing_to_an_unpaired_principal_is_refused_and_not_delivered() {
    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let (alice_instance, _) = alice.add_instance(&broker.api()).await.unwrap();
    let bob = broker.user("bob").await;
    let envelope =
        crypto::seal_anonymous(alice.id, bob.id, &bob.public_key(), b"unsolicited").unwrap();
    let to_own_instance =
        crypto::seal_anonymous(alice.id, alice_instance, &bob.public_key(), b"fine").unwrap();
    let mut bob = broker.client(bob, MqttVersion::V5).await;

    let mut p = Probe::logged_in(broker.mqtt, MqttVersion::V5, &alice).await;
    p.publish(&bob.identity().id.inbox_topic(), 1, false, envelope.clone())
        .await;
    assert!(matches!(p.next().await, Seen::PubAck(_, 0x87)));
    p.publish(&bob.identity().id.inbox_topic(), 2, false, envelope.clone())
        .await;
    assert!(
        matches!(p.next().await, Seen::PubRec(_, 0x87)),
        "QoS 2 is refused on PUBREC"
    );
    // MQTT 5 keeps the session: a publish to a paired (offline) instance still works.
    p.publish(&alice_instance.inbox_topic(), 1, false, to_own_instance)
        .await;
    assert!(
        matches!(p.next().await, Seen::PubAck(_, 0x10)),
        "no subscriber yet: 0x10"
    );

    // MQTT 3.1.1 has no negative PUBACK: acknowledged, dropped, counted; the session stays
    // (closing would only make clients resend it after every reconnect).
    let mut p = Probe::logged_in(broker.mqtt, MqttVersion::V311, &alice).await;
    p.publish(&bob.identity().id.inbox_topic(), 1, false, envelope)
        .await;
    assert!(matches!(p.next().await, Seen::PubAck(_, 0)));
    assert_eq!(
        p.next_within(Duration::from_millis(300)).await,
        None,
        "still connected"
    );
    assert!(broker
        .metrics()
        .contains("sealrelay_publish_refused_total{reason=\"not_paired\"} 3"));

    assert!(
        tokio::time::timeout(Duration::from_millis(300), bob.next())
            .await
            .is_err(),
        "bob got nothing"
    );
}

/// A spoofed sender is refused per message like any other refusal; a session that keeps
/// getting refused is ended once, by the refusal past the budget of 100 a minute, with
/// DISCONNECT 0x87; its reconnect is throttled (CONNACK 0x9F), and other users carry on.
#[tokio::test(flavor = "multi_thread")]
async fn spoofed_senders_are_refused_and_a_session_that_keeps_at_it_is_ended_and_throttled() {
    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let (instance, _) = alice.add_instance(&broker.api()).await.unwrap();
    let mallory = broker.user("mallory").await;
    let (bob_console, bob_instance) = broker.pair("bob", MqttVersion::V5).await;
    // Alice claims the envelope comes from mallory.
    let forged = crypto::seal_anonymous(mallory.id, instance, &alice.public_key(), b"x").unwrap();
    // The budget plus one, on a raw socket so that every answer is read (a client still
    // writing after the close would get a reset that discards them).
    let mut raw =
        common::Raw::connect_v5(broker.mqtt, (&alice.login, alice.auth_secret()), 30).await;
    for pkid in 1..=101u16 {
        let mut publish = rumqttc::v5::mqttbytes::v5::Publish::new(
            instance.inbox_topic(),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            forged.clone(),
            None,
        );
        publish.pkid = pkid;
        raw.send_v5(rumqttc::v5::mqttbytes::v5::Packet::Publish(publish))
            .await;
    }
    let answers = raw.until_closed().await;
    use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet, PubAckReason};
    let refused = answers
        .iter()
        .filter(|p| matches!(p, Packet::PubAck(a) if a.reason == PubAckReason::NotAuthorized))
        .count();
    assert_eq!(
        refused, 101,
        "each refused publish is answered, the last one too"
    );
    assert!(
        matches!(answers.last(), Some(Packet::Disconnect(d)) if d.reason_code == DisconnectReasonCode::NotAuthorized),
        "then the session is ended once: {:?}",
        answers.last()
    );
    assert!(broker
        .metrics()
        .contains("sealrelay_publish_refused_total{reason=\"sender_spoofed\"} 101"));

    let mut again = Probe::logged_in_or(broker.mqtt, MqttVersion::V5, &alice).await;
    assert_eq!(
        again.next().await,
        Seen::ConnAck(0x9F),
        "its reconnect is throttled"
    );
    // Other users are unaffected.
    let mut bob_console = bob_console;
    bob_console
        .send(bob_instance, b"still fine", 1)
        .await
        .unwrap();
    assert_eq!(
        common::next_message(&mut bob_console)
            .await
            .payload
            .as_slice(),
        b"echo:still fine"
    );
}

#[tokio::test]
async fn wrong_unknown_and_missing_logins_get_one_answer() {
    let broker = Broker::start();
    let alice = broker.user("alice").await;
    let wrong = (alice.login.clone(), "A".repeat(43));
    let unknown = ("nobody".to_owned(), "A".repeat(43));
    for (version, code) in [(MqttVersion::V5, 0x87), (MqttVersion::V311, 5)] {
        for who in [Some(&wrong), Some(&unknown), None] {
            let login = who.map(|(u, p)| (u.as_str(), p.as_str()));
            let mut p = Probe::connect(broker.mqtt, ProbeOptions::new(version, login)).await;
            assert_eq!(p.next().await, Seen::ConnAck(code), "{version:?} {login:?}");
        }
    }
    // The HTTP API answers the same way for both.
    for (user, secret) in [&wrong, &unknown] {
        let out = ureq::get(&format!("http://{}/v1/me", broker.http))
            .header("Authorization", common::basic_auth(user, secret))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        assert_eq!(out.status(), 401);
    }
}

#[tokio::test]
async fn repeated_failures_are_rate_limited() {
    let broker = Broker::start_with(&[("SEALRELAY_AUTH_MAX_FAILURES_PER_LOGIN", "3")]);
    let alice = broker.user("alice").await;
    let wrong = (alice.login.clone(), "A".repeat(43));
    for _ in 0..3 {
        let mut p = Probe::connect(
            broker.mqtt,
            ProbeOptions::new(MqttVersion::V5, Some((&wrong.0, &wrong.1))),
        )
        .await;
        assert_eq!(p.next().await, Seen::ConnAck(0x87));
    }
    // Now even the right secret is refused until the window passes.
    let right = login(&alice);
    let mut p = Probe::connect(
        broker.mqtt,
        ProbeOptions::new(MqttVersion::V5, Some((&right.0, &right.1))),
    )
    .await;
    assert_eq!(p.next().await, Seen::ConnAck(0x9F));
    let err = Identity::login_user(&broker.api(), "alice", "pw-alice")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, ClientError::TooManyFailures { login } if login == "alice"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "too many failed logins for alice or from this address: wait a minute, then retry"
    );
}

#[tokio::test]
async fn the_http_api_enforces_pairing_and_roles() {
    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let bob = broker.user("bob").await;
    let mut instance = broker.instance_of(&mut alice).await;
    let _ = instance.id;
    let api = broker.api();
    fn who(i: &Identity) -> sealrelay_client::Login<'_> {
        sealrelay_client::Login {
            login: &i.login,
            secret: i.auth_secret(),
        }
    }
    let err = api.public_key(who(&alice), bob.id).await.err().unwrap();
    assert!(
        err.to_string().contains("404"),
        "unpaired keys are not served: {err}"
    );
    let err = api
        .public_key(who(&alice), PrincipalId::random())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("404"),
        "unknown ids look the same: {err}"
    );
    assert!(api.public_key(who(&instance), alice.id).await.is_ok());
    let err = instance.add_instance(&api).await.err().unwrap();
    assert!(
        err.to_string().contains("403"),
        "an instance cannot add instances: {err}"
    );
}

fn mosquitto(
    tool: &str,
    broker: &Broker,
    who: &(String, String),
    args: &[&str],
) -> std::process::Output {
    Command::new(tool)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.mqtt.port().to_string(),
            "-u",
            &who.0,
            "-P",
            &who.1,
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool} (Debian package mosquitto-clients) must be installed: {e}")
        })
}

/// `mosquitto_pub -V 5 -q 1` of the file's bytes to `topic`.
fn publish_file(
    broker: &Broker,
    who: &(String, String),
    topic: &str,
    file: &std::path::Path,
) -> std::process::Output {
    let file = file.to_str().unwrap();
    mosquitto(
        "mosquitto_pub",
        broker,
        who,
        &["-V", "5", "-q", "1", "-t", topic, "-f", file],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_clients_interoperate_and_meet_the_same_acl() {
    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    let instance_id = instance.id;
    let bob = broker.user("bob").await;
    let (alice_creds, instance_creds) = (login(&alice), login(&instance));
    let instance_key = instance.public_key();

    // A wildcard subscription is denied.
    let out = mosquitto(
        "mosquitto_sub",
        &broker,
        &alice_creds,
        &["-V", "5", "-t", "#", "-C", "1", "-W", "2"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied"), "{err}");

    // A publish to an unpaired user is refused with 0x87.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envelope.bin");
    std::fs::write(
        &file,
        crypto::seal_anonymous(alice.id, bob.id, &bob.public_key(), b"no").unwrap(),
    )
    .unwrap();
    let topic = bob.id.inbox_topic();
    let out = publish_file(&broker, &alice_creds, &topic, &file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Not authorized"), "{err}");

    // mosquitto_sub as the instance receives what our SDK console seals to it.
    let sub = {
        let (broker_port, creds, topic) = (
            broker.mqtt.port(),
            instance_creds.clone(),
            instance_id.inbox_topic(),
        );
        tokio::task::spawn_blocking(move || {
            Command::new("mosquitto_sub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &broker_port.to_string(),
                    "-u",
                    &creds.0,
                    "-P",
                    &creds.1,
                ])
                .args([
                    "-V", "311", "-q", "1", "-t", &topic, "-C", "1", "-W", "10", "-F", "%x",
                ])
                .output()
                .unwrap()
        })
    };
    let mut console = broker.client(alice, MqttVersion::V5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    console.send(instance_id, b"to mosquitto", 1).await.unwrap();
    let out = sub.await.unwrap();
    let received = hex::decode(String::from_utf8_lossy(&out.stdout).trim()).expect("hex payload");
    let header = sealrelay_wire::envelope::Header::parse(&received).unwrap();
    assert_eq!(
        (header.sender, header.recipient),
        (console.identity().id, instance_id)
    );
    assert_eq!(
        header.witness,
        sealrelay_wire::envelope::Witness::of(instance_key.as_bytes())
    );

    // mosquitto_pub as the console delivers an envelope our SDK instance opens.
    let mut instance = broker.client(instance, MqttVersion::V311).await;
    let envelope = crypto::seal_anonymous(
        console.identity().id,
        instance_id,
        &instance_key,
        b"from mosquitto",
    )
    .unwrap();
    std::fs::write(&file, envelope).unwrap();
    let out = publish_file(&broker, &alice_creds, &instance_id.inbox_topic(), &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = common::next_message(&mut instance).await;
    assert_eq!(m.payload.as_slice(), b"from mosquitto");
    assert!(
        !m.authenticated,
        "an anonymous sealed box does not prove its sender"
    );
}

#[tokio::test]
async fn prelogin_does_not_reveal_which_names_exist() {
    let broker = Broker::start();
    broker.user("alice").await;
    let api = broker.api();
    let real = api.prelogin("alice").await.unwrap();
    let ghost = api.prelogin("ghost").await.unwrap();
    assert_eq!(
        ghost.salt,
        api.prelogin("ghost").await.unwrap().salt,
        "a fake salt is stable"
    );
    assert_ne!(
        ghost.salt,
        api.prelogin("ghost-2").await.unwrap().salt,
        "and differs per name"
    );
    assert_eq!(
        (ghost.salt.len(), ghost.params),
        (real.salt.len(), real.params),
        "same shape as a real answer"
    );
    // The same answer as a wrong password for a real name (see auth tests).
    let err = Identity::login_user(&api, "ghost", "anything")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, ClientError::WrongPassword { login } if login == "ghost"),
        "{err}"
    );
}

#[tokio::test]
async fn http_errors_are_json_and_name_the_problem() {
    let broker = Broker::start();
    broker.user("alice").await;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = |path: &str| format!("http://{}{path}", broker.http);
    let check = |mut response: ureq::http::Response<ureq::Body>, status: u16, code: &str| {
        assert_eq!(response.status(), status);
        let body: serde_json::Value = response.body_mut().read_json().unwrap();
        assert_eq!(body["error"], code, "{body}");
        body["message"].as_str().unwrap().to_owned()
    };
    check(agent.get(url("/nope")).call().unwrap(), 404, "not_found");
    check(
        agent.get(url("/v1/users")).call().unwrap(),
        405,
        "method_not_allowed",
    );
    let message = check(
        agent
            .post(url("/v1/users"))
            .header("Content-Type", "application/json")
            .send("{not json")
            .unwrap(),
        400,
        "bad_request",
    );
    assert!(message.contains("not valid JSON"), "{message}");
    let message = check(
        agent
            .post(url("/v1/prelogin"))
            .send_json(serde_json::json!({"nome": "x"}))
            .unwrap(),
        400,
        "bad_request",
    );
    assert!(
        message.contains("field `name` is missing"),
        "names the missing field: {message}"
    );
    // A badly formatted field is named, nested ones by their path; the value is not echoed.
    let secret_looking = "not-base64-SECRET-VALUE";
    for (body, field) in [
        (
            serde_json::json!({"name": 5}),
            "field `name` has the wrong type or format",
        ),
        (
            serde_json::json!({
                "name": "x", "user_id": PrincipalId::random(), "public_key": secret_looking,
                "wrapped_key": "AAAA", "auth_secret": "A".repeat(43),
                "kdf": {"salt": "AAAAAAAAAAAAAAAAAAAAAA==", "memory_kib": 19456, "iterations": 2, "parallelism": 1}
            }),
            "field `public_key` has the wrong type or format",
        ),
        (
            serde_json::json!({
                "name": "x", "user_id": PrincipalId::random(), "public_key": "AAAA",
                "wrapped_key": "AAAA", "auth_secret": "A".repeat(43),
                "kdf": {"salt": secret_looking, "memory_kib": 19456, "iterations": 2, "parallelism": 1}
            }),
            "field `kdf.salt` has the wrong type or format",
        ),
    ] {
        let path = if field.contains("`name`") {
            "/v1/prelogin"
        } else {
            "/v1/users"
        };
        let message = check(
            agent.post(url(path)).send_json(&body).unwrap(),
            400,
            "bad_request",
        );
        assert!(message.contains(field), "{field}: {message}");
        assert!(
            !message.contains(secret_looking),
            "echoes the value: {message}"
        );
    }
    let weak = serde_json::json!({
        "name": "weak", "user_id": PrincipalId::random(), "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "wrapped_key": "AAAA", "auth_secret": "A".repeat(43),
        "kdf": {"salt": "AAAAAAAAAAAAAAAAAAAAAA==", "memory_kib": 1024, "iterations": 1, "parallelism": 1}
    });
    let message = check(
        agent.post(url("/v1/users")).send_json(&weak).unwrap(),
        400,
        "bad_request",
    );
    assert!(message.contains("minimum"), "{message}");
    let mut taken = weak.clone();
    taken["name"] = "alice".into();
    taken["kdf"]["memory_kib"] = 19456.into();
    taken["kdf"]["iterations"] = 2.into();
    check(
        agent.post(url("/v1/users")).send_json(&taken).unwrap(),
        409,
        "conflict",
    );
}

/// Over MQTT 5 the SDK turns each refusal into a typed error for that message, and the
/// connection carries on: the next valid envelope goes through.
#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_reports_refused_messages_as_typed_errors_and_keeps_the_connection() {
    use sealrelay_client::{ClientError, PublishRefusal};
    let broker = Broker::start();
    let (mut console, instance) = broker.pair("alice", MqttVersion::V5).await;
    let alice = console.identity().id;
    let bob = broker.user("bob").await;
    let mallory = broker.user("mallory").await;
    let instance_key = console.identity().pinned(instance).unwrap();
    let cases = [
        (
            instance,
            bytes::Bytes::from_static(b"not an envelope"),
            PublishRefusal::InvalidEnvelope,
            0x99,
        ),
        (
            bob.id,
            crypto::seal_anonymous(alice, bob.id, &bob.public_key(), b"x").unwrap(),
            PublishRefusal::RecipientNotPaired,
            0x87,
        ),
        (
            instance,
            crypto::seal_anonymous(mallory.id, instance, &instance_key, b"x").unwrap(),
            PublishRefusal::SenderRefused,
            0x87,
        ),
    ];
    for (to, envelope, expected, expected_code) in cases {
        match console.send_envelope(to, envelope, 1).await {
            Err(ClientError::PublishRefused { why, code, .. }) => {
                assert_eq!((why, code), (expected, expected_code))
            }
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    let reply = console
        .request(instance, b"after the refusals", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply.as_slice(), b"echo:after the refusals");
}
