//! Every transport the deployment uses, driven by clients we did not write where it matters:
//! MQTT over TLS (mosquitto_pub/sub --cafile, the CLI, the SDK), MQTT over WebSocket with and
//! without TLS (the CLI, raw upgrades), the API over HTTPS; refusals that must fail cleanly
//! and leave other sessions working; certificate rotation without dropping sessions.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Broker, Raw};
use sealrelay_client::{Api, Broker as BrokerUrl, Client, ClientError, MqttVersion};

fn line_value(text: &str, prefix: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in {text}"))
        .trim()
        .to_owned()
}

/// register → add → agent → send, the whole walk through the CLI over `broker_url`, with
/// the API over HTTPS; both sides trust the development certificate through --ca-file.
fn cli_round_trip(broker: &Broker, name: &str, broker_url: &str) {
    let https = format!("https://127.0.0.1:{}", broker.https.port());
    let via = || broker.cli_via(&https, broker_url);
    let registered = common::run_cli_ok(
        via(),
        &["user", "register", "--user", name],
        "pw-long-enough",
    );
    assert!(
        registered.starts_with(&format!("registered user {name}")),
        "{registered}"
    );
    let added = common::run_cli_ok(
        via(),
        &["instance", "add", "--user", name],
        "pw-long-enough",
    );
    let (instance, token) = (
        line_value(&added, "instance "),
        line_value(&added, "token "),
    );
    let _agent = Broker::start_agent_with(via(), &token, "5");
    let reply = common::run_cli_ok(
        via(),
        &[
            "send",
            "--user",
            name,
            "--to",
            &instance,
            "hello over the wire",
        ],
        "pw-long-enough",
    );
    assert_eq!(reply, "hello over the wire\n", "over {broker_url}");
}

#[test]
fn the_cli_round_trip_works_over_mqtts_ws_and_wss_with_the_api_over_https() {
    let broker = Broker::start();
    cli_round_trip(
        &broker,
        "tls-user",
        &format!("mqtts://127.0.0.1:{}", broker.mqtts.port()),
    );
    cli_round_trip(
        &broker,
        "ws-user",
        &format!("ws://127.0.0.1:{}/mqtt", broker.ws.port()),
    );
    cli_round_trip(
        &broker,
        "wss-user",
        &format!("wss://127.0.0.1:{}/mqtt", broker.wss.port()),
    );
}

fn mosquitto_tls(
    tool: &str,
    broker: &Broker,
    login: (&str, &str),
    args: &[&str],
) -> std::process::Output {
    Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &broker.mqtts.port().to_string()])
        .args(["--cafile", broker.dev_cert().to_str().unwrap()])
        .args(["-u", login.0, "-P", login.1])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool} (Debian package mosquitto-clients) must be installed: {e}")
        })
}

/// mosquitto_sub over TLS receives what the SDK seals; mosquitto_pub over TLS delivers what
/// the SDK sealed to the SDK, which opens it.
#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_clients_speak_mqtt_over_tls_with_the_dev_certificate() {
    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    let (instance_id, instance_login) = (
        instance.id,
        (instance.login.clone(), instance.auth_secret().to_owned()),
    );
    let topic = instance_id.inbox_topic();
    let sub = {
        let (port, cert) = (broker.mqtts.port(), broker.dev_cert());
        let (login, secret) = instance_login.clone();
        std::thread::spawn(move || {
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args([
                    "--cafile",
                    cert.to_str().unwrap(),
                    "-u",
                    &login,
                    "-P",
                    &secret,
                ])
                .args(["-V", "5", "-q", "1", "-t", &topic, "-C", "1", "-W", "10"])
                .output()
                .unwrap()
        })
    };
    // Until mosquitto_sub is subscribed, a publish finds no subscriber; retry until it does.
    let mut console = broker.client(alice, MqttVersion::V5).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sub.is_finished() {
        match console.send(instance_id, b"over tls", 1).await {
            Ok(_) | Err(ClientError::Offline(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "mosquitto_sub never received");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = sub.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = sealrelay_wire::envelope::Header::parse(
        out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout),
    )
    .expect("mosquitto_sub received a whole envelope");
    assert_eq!(header.recipient, instance_id);

    // The other way: an envelope sealed by the instance, published by mosquitto_pub over TLS
    // to a console that opens it.
    let tab = sealrelay_client::Identity::login_user(&broker.api(), "alice", "pw-alice")
        .await
        .unwrap();
    let (alice_id, alice_key) = (tab.id, tab.public_key());
    let mut tab = broker.client(tab, MqttVersion::V5).await;
    let sealed = instance
        .seal_to(alice_id, &alice_key, b"from mosquitto_pub")
        .unwrap();
    let file = broker.dir.path().join("envelope.bin");
    std::fs::write(&file, &sealed).unwrap();
    let out = mosquitto_tls(
        "mosquitto_pub",
        &broker,
        (&instance_login.0, &instance_login.1),
        &[
            "-V",
            "5",
            "-q",
            "1",
            "-t",
            &alice_id.inbox_topic(),
            "-f",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = common::next_message(&mut tab).await;
    assert_eq!(
        (got.from, got.payload.as_slice()),
        (instance_id, b"from mosquitto_pub".as_slice())
    );
}

/// An HTTP/1.1 WebSocket upgrade to `addr` with these extra headers; returns the response head.
fn upgrade(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let host = headers
        .iter()
        .find(|(name, _)| *name == "Host")
        .map_or(addr.to_string(), |(_, host)| host.to_string());
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers.iter().filter(|(name, _)| *name != "Host") {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A plain MQTT CONNECT to the TLS port, a TLS client that does not trust the certificate,
/// WebSocket upgrades on the wrong path, without the `mqtt` subprotocol or from a foreign
/// Origin: each fails cleanly and is counted, and a live session keeps working throughout.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_fail_cleanly_and_leave_other_sessions_working() {
    let broker = Broker::start();
    let (mut console, instance) = broker.pair("alice", MqttVersion::V5).await;

    let mut raw = Raw::open(broker.mqtts).await;
    raw.send(b"\x10\x10\x00\x04MQTT\x05\x02\x00\x1e\x00\x00\x03abc")
        .await;
    let answer = raw.raw_until_closed().await;
    assert!(
        answer.first() != Some(&0x20),
        "no CONNACK on a TLS port: {answer:?}"
    );

    let untrusted =
        BrokerUrl::parse(&format!("mqtts://127.0.0.1:{}", broker.mqtts.port()), None).unwrap();
    let who = sealrelay_client::Identity::login_user(&broker.api(), "alice", "pw-alice")
        .await
        .unwrap();
    let err = Client::connect_to(broker.api(), who, untrusted, MqttVersion::V5)
        .await
        .err()
        .expect("a certificate nobody vouched for is refused")
        .to_string();
    assert!(
        err.contains("mqtts://127.0.0.1") && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    let https_untrusted = Api::new(&format!("https://127.0.0.1:{}", broker.https.port()));
    let err = https_untrusted
        .prelogin("alice")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("127.0.0.1") && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    let own_origin = format!("http://{}", broker.ws);
    // A page of a domain its owner points at this broker's address (DNS rebinding): its
    // Origin is on the host it connected to, but the certificate does not cover that host.
    let rebound = format!("rebound.example:{}", broker.ws.port());
    let rebound_origin = format!("http://{rebound}");
    // The broker's own console: the same host, the HTTPS port.
    let console_origin = format!("https://127.0.0.1:{}", broker.https.port());
    for (path, headers, status) in [
        ("/mqtt", vec![], "400"),
        (
            "/elsewhere",
            vec![("Sec-WebSocket-Protocol", "mqtt")],
            "404",
        ),
        (
            "/mqtt",
            vec![
                ("Sec-WebSocket-Protocol", "mqtt"),
                ("Origin", "https://evil.example"),
            ],
            "403",
        ),
        (
            "/mqtt",
            vec![
                ("Sec-WebSocket-Protocol", "mqtt"),
                ("Origin", "https://127.0.0.1.evil.example"),
            ],
            "403",
        ),
        (
            "/mqtt",
            vec![
                ("Sec-WebSocket-Protocol", "mqtt"),
                ("Host", rebound.as_str()),
                ("Origin", rebound_origin.as_str()),
            ],
            "403",
        ),
        (
            "/mqtt",
            vec![
                ("Sec-WebSocket-Protocol", "mqtt"),
                ("Origin", own_origin.as_str()),
            ],
            "101",
        ),
        (
            "/mqtt",
            vec![
                ("Sec-WebSocket-Protocol", "mqtt"),
                ("Origin", console_origin.as_str()),
            ],
            "101",
        ),
        (
            "/mqtt",
            vec![("Sec-WebSocket-Protocol", "mqttv3.1, mqtt")],
            "101",
        ),
    ] {
        let head = upgrade(broker.ws, path, &headers);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{headers:?}: {head}"
        );
        if status == "101" {
            assert!(
                head.to_lowercase().contains("sec-websocket-protocol: mqtt"),
                "{head}"
            );
        }
    }

    console.send(instance, b"still here", 1).await.unwrap();
    let m = common::next_message(&mut console).await;
    assert_eq!(m.payload.as_slice(), b"echo:still here");
    let metrics = broker.metrics();
    for outcome in [
        "ws_no_mqtt_subprotocol",
        "ws_wrong_path",
        "ws_origin_refused",
        "tls_handshake_failed",
    ] {
        assert!(
            metrics.contains(&format!("outcome=\"{outcome}\"")),
            "{outcome} not counted"
        );
    }
}

/// A self-signed certificate for 127.0.0.1 with its key, as PEM, valid from `from` to `to`.
fn pair(from: (i32, u8, u8), to: (i32, u8, u8)) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn install(dir: &Path, (cert, key): &(String, String)) {
    // Written beside and renamed, as a certificate manager does, so the broker never reads
    // half a file.
    for (name, text) in [("key.pem", key), ("cert.pem", cert)] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
}

fn broker_with_cert(certs: &Path) -> Broker {
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    Broker::start_with(&[
        ("SEALRELAY_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("SEALRELAY_TLS_KEY_FILE", key.to_str().unwrap()),
        ("SEALRELAY_TLS_RELOAD_CHECK_SECS", "1"),
        // The rotation test holds 100 sessions of one principal.
        ("SEALRELAY_MQTT_MAX_SESSIONS_PER_PRINCIPAL", "200"),
    ])
}

/// Connects one rumqttc MQTT 5 client over TLS trusting `ca`; returns its client and a
/// watch that turns true if its connection ever fails after CONNACK.
async fn tls_session(
    broker: &Broker,
    ca: &Path,
    login: (&str, &str),
    client_id: &str,
) -> Result<(rumqttc::v5::AsyncClient, tokio::sync::watch::Receiver<bool>), String> {
    let config = sealrelay_client::endpoint::tls_config(Some(ca)).unwrap();
    let mut options = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", broker.mqtts.port());
    options
        .set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            config,
        )))
        .set_credentials(login.0, login.1)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::ConnAck(_))) => break,
            Ok(_) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    let (dropped, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while eventloop.poll().await.is_ok() {}
        let _ = dropped.send(true);
    });
    Ok((client, watch))
}

/// 100 sessions over mqtts; the certificate files are replaced: new connections get the new
/// certificate and none of the 100 drops. A bad pair next is refused with one log line and
/// the previous one kept.
#[tokio::test(flavor = "multi_thread")]
async fn certificate_rotation_under_load_drops_no_session() {
    let certs = tempfile::tempdir().unwrap();
    let old = pair((2024, 1, 1), (2099, 1, 1));
    install(certs.path(), &old);
    std::fs::write(certs.path().join("old-ca.pem"), &old.0).unwrap();
    let broker = broker_with_cert(certs.path());
    let alice = broker.user("alice").await;
    let login = (alice.login.as_str(), alice.auth_secret());
    let old_ca = certs.path().join("old-ca.pem");

    let mut live = Vec::new();
    for i in 0..100 {
        live.push(
            tls_session(&broker, &old_ca, login, &format!("live-{i}"))
                .await
                .unwrap(),
        );
    }

    let new = pair((2024, 1, 1), (2099, 1, 1));
    install(certs.path(), &new);
    let new_ca = certs.path().join("new-ca.pem");
    std::fs::write(&new_ca, &new.0).unwrap();
    assert!(
        broker.log_shows("TLS certificate reloaded", 1),
        "{}",
        broker.log()
    );

    tls_session(&broker, &new_ca, login, "after-new")
        .await
        .expect("new handshakes present the new certificate");
    let err = tls_session(&broker, &old_ca, login, "after-old")
        .await
        .expect_err("the old certificate is gone");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A key that does not go with the certificate: refused, the new pair stays in service.
    std::fs::write(
        certs.path().join("key.pem"),
        pair((2024, 1, 1), (2099, 1, 1)).1,
    )
    .unwrap();
    assert!(
        broker.log_shows("new TLS certificate refused", 1),
        "{}",
        broker.log()
    );
    tls_session(&broker, &new_ca, login, "after-bad")
        .await
        .expect("still serving the last good pair");

    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, (_client, dropped)) in live.iter().enumerate() {
        assert!(!*dropped.borrow(), "session {i} dropped during rotation");
    }
    let active: f64 = broker
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("sealrelay_sessions_active ")?.parse().ok())
        .unwrap();
    assert!(active >= 100.0, "{active} sessions live after rotation");
}

/// An expired certificate fails the handshake with a reason that says so.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate_is_refused_by_clients_with_the_reason() {
    let certs = tempfile::tempdir().unwrap();
    let expired = pair((2020, 1, 1), (2021, 1, 1));
    install(certs.path(), &expired);
    let broker = broker_with_cert(certs.path());
    let alice = broker.user("alice").await;
    let err = tls_session(
        &broker,
        &certs.path().join("cert.pem"),
        (&alice.login, alice.auth_secret()),
        "x",
    )
    .await
    .expect_err("expired");
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(20), lines.recv())
        .await
        .ok()
        .flatten()
}

/// Eclipse paho-mqtt (Python, PyPI), as an instance over `ws` and over `wss`: it receives
/// an envelope the Rust SDK sealed, and publishes one the console opens.
#[tokio::test(flavor = "multi_thread")]
async fn paho_mqtt_speaks_mqtt_over_websocket_and_websocket_tls() {
    use std::io::BufRead;
    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let (alice_id, alice_key) = (alice.id, alice.public_key());
    let instance = broker.instance_of(&mut alice).await;
    let mut console = broker.client(alice, MqttVersion::V5).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/paho_ws.py");
    for (port, cafile) in [
        (broker.ws.port(), None),
        (broker.wss.port(), Some(broker.dev_cert())),
    ] {
        let reply = instance
            .seal_to(alice_id, &alice_key, format!("paho on {port}").as_bytes())
            .unwrap();
        let reply_file = broker.dir.path().join(format!("reply-{port}.bin"));
        std::fs::write(&reply_file, &reply).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(["--port", &port.to_string(), "--username", &instance.login])
            .args([
                "--password",
                instance.auth_secret(),
                "--inbox",
                &instance.id.inbox_topic(),
            ])
            .args(["--reply-topic", &alice_id.inbox_topic()])
            .arg("--reply-file")
            .arg(&reply_file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(ca) = &cafile {
            cmd.arg("--cafile").arg(ca);
        }
        let mut child = cmd
            .spawn()
            .expect("python3 with paho-mqtt (pip install paho-mqtt; .ci/run does it)");
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let subscribed = next_line(&mut lines).await;
        if subscribed.is_none() {
            let out = child.wait_with_output().unwrap();
            panic!("paho: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert_eq!(
            subscribed.unwrap(),
            "SUBSCRIBED [1]",
            "own inbox granted at QoS 1"
        );
        console.send(instance.id, b"to paho", 1).await.unwrap();
        let received = next_line(&mut lines)
            .await
            .expect("paho received the envelope");
        let bytes = received
            .strip_prefix("RECEIVED ")
            .map(|text| hex::decode(text).unwrap())
            .unwrap_or_else(|| panic!("{received}"));
        let header = sealrelay_wire::envelope::Header::parse(&bytes).unwrap();
        assert_eq!((header.sender, header.recipient), (alice_id, instance.id));
        let m = common::next_message(&mut console).await;
        assert_eq!(m.payload.as_slice(), format!("paho on {port}").as_bytes());
        assert_eq!(next_line(&mut lines).await.as_deref(), Some("PUBLISHED 0"));
        assert!(child.wait().unwrap().success());
    }
}

/// A CA and a client certificate it signed, as PEM: (ca cert, client cert, client key).
fn client_ca_and_cert() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["instance.example".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    (ca_cert.pem(), client.pem(), client_key.serialize_pem())
}

/// With `mqtts.client_ca` set, mosquitto_sub must present a certificate from that CA *and*
/// log in: without the certificate the handshake fails, with it but a wrong secret CONNACK
/// refuses, with both it receives what the console sends.
#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_required_on_mqtts_and_the_login_still_counts() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = client_ca_and_cert();
    for (name, text) in [("ca.pem", &ca), ("client.pem", &cert), ("client.key", &key)] {
        std::fs::write(certs.path().join(name), text).unwrap();
    }
    let ca_path = certs.path().join("ca.pem");
    let broker = Broker::start_with(&[("SEALRELAY_MQTTS_CLIENT_CA", ca_path.to_str().unwrap())]);
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    let topic = instance.id.inbox_topic();
    let (client_cert, client_key) = (
        certs.path().join("client.pem"),
        certs.path().join("client.key"),
    );
    let sub = |with_cert: bool, password: String| {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.mqtts.port().to_string()])
            .args(["--cafile", broker.dev_cert().to_str().unwrap()])
            .args(["-u", &instance.login, "-P", &password])
            .args(["-V", "5", "-q", "1", "-t", &topic, "-C", "1", "-W", "10"]);
        if with_cert {
            cmd.args([
                "--cert",
                client_cert.to_str().unwrap(),
                "--key",
                client_key.to_str().unwrap(),
            ]);
        }
        cmd
    };
    let out = sub(false, instance.auth_secret().to_owned())
        .output()
        .unwrap();
    assert!(!out.status.success(), "no client certificate, no session");
    let out = sub(true, "A".repeat(43)).output().unwrap();
    assert!(
        !out.status.success(),
        "a certificate does not replace the login"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("not authorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let child = sub(true, instance.auth_secret().to_owned())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut console = broker.client(alice, MqttVersion::V5).await;
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() {
        match console
            .send(instance.id, b"to a certified instance", 1)
            .await
        {
            Ok(_) | Err(ClientError::Offline(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto_sub with a client certificate never received"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = waiter.join().unwrap();
    assert!(out.status.success());
    let received = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
    assert_eq!(
        sealrelay_wire::envelope::Header::parse(received)
            .unwrap()
            .recipient,
        instance.id
    );
}

/// A TLS client that never finishes its handshake is dropped after
/// `mqtt.connect_timeout_secs`, and counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_tls_handshake_is_dropped_at_the_connect_timeout() {
    let broker = Broker::start_with(&[("SEALRELAY_MQTT_CONNECT_TIMEOUT_SECS", "1")]);
    let mut stalled = Raw::open(broker.mqtts).await;
    stalled.send(&[0x16, 0x03, 0x01]).await; // the first bytes of a ClientHello, then nothing
    let started = Instant::now();
    let _ = stalled.raw_until_closed().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !broker.metrics().contains("outcome=\"handshake_timeout\"") {
        assert!(Instant::now() < deadline, "not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGHUP reloads the certificate at once (here the periodic check is an hour away) and the
/// broker keeps running; mqtts offers ALPN `mqtt`, so it can share 443 behind an SNI router.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_and_mqtts_negotiates_alpn_mqtt() {
    let certs = tempfile::tempdir().unwrap();
    install(certs.path(), &pair((2024, 1, 1), (2099, 1, 1)));
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let mut broker = Broker::start_with(&[
        ("SEALRELAY_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("SEALRELAY_TLS_KEY_FILE", key.to_str().unwrap()),
        ("SEALRELAY_TLS_RELOAD_CHECK_SECS", "3600"),
    ]);
    let new = pair((2024, 1, 1), (2099, 1, 1));
    install(certs.path(), &new);
    let new_ca = certs.path().join("new-ca.pem");
    std::fs::write(&new_ca, &new.0).unwrap();
    broker.signal("HUP");
    assert!(
        broker.log_shows("SIGHUP: TLS certificate reloaded", 1),
        "{}",
        broker.log()
    );
    assert!(broker.running(), "SIGHUP must not stop the broker");

    let mut config = (*sealrelay_client::endpoint::tls_config(Some(&new_ca)).unwrap()).clone();
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(broker.mqtts).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("the reloaded certificate verifies");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"mqtt".as_slice()));
}
