//! The PROXY protocol behind a load balancer: headers (v1 and v2) from a trusted proxy name
//! the real client, whom per-address limits and accounting then see; the same header from
//! anyone else is refused, and direct clients are unaffected. 127.0.0.2 plays the proxy.

mod common;

use std::net::IpAddr;

use common::{Broker, Raw};
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;

const PROXY: [u8; 4] = [127, 0, 0, 2];

/// Opens from `from`, sends `header` then an MQTT 5 CONNECT; returns the connection and the
/// CONNACK code, or `None` if the broker closed without one.
async fn connect(
    broker: &Broker,
    from: [u8; 4],
    header: &[u8],
    login: (&str, &str),
    client_id: &str,
) -> (Raw, Option<ConnectReturnCode>) {
    let mut raw = Raw::open_from(broker.mqtt, IpAddr::from(from)).await;
    raw.send(header).await;
    let code = raw.try_connect_v5(login, client_id, 30).await;
    (raw, code)
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 1883\r\n").into_bytes()
}

fn v2(client: [u8; 4]) -> Vec<u8> {
    v2_command(0x21, client)
}

/// A v2 header with version and command byte `command` (0x21 PROXY, 0x20 LOCAL).
fn v2_command(command: u8, client: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[command, 0x11, 0x00, 0x0c]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&40001u16.to_be_bytes());
    h.extend_from_slice(&1883u16.to_be_bytes());
    h
}

/// A broker that believes PROXY headers from 127.0.0.2 and gives each address one MQTT
/// connection, and a user of it.
async fn behind_a_proxy_with_one_share() -> (Broker, sealrelay_client::Identity) {
    let broker = Broker::start_with(&[
        ("SEALRELAY_MQTT_PROXY_PROTOCOL", "true"),
        ("SEALRELAY_SERVER_TRUSTED_PROXIES", "[\"127.0.0.2\"]"),
        ("SEALRELAY_MQTT_MAX_CONNECTIONS_PER_IP", "1"),
    ]);
    let alice = broker.user("alice").await;
    (broker, alice)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_names_the_client_and_per_address_limits_see_it() {
    let (broker, alice) = behind_a_proxy_with_one_share().await;
    let login = (alice.login.as_str(), alice.auth_secret());

    // Two clients behind one proxy address: each has its own share (v1 and v2 headers).
    let (first, code) = connect(&broker, PROXY, &v1("203.0.113.7"), login, "a").await;
    assert_eq!(code, Some(ConnectReturnCode::Success));
    let (_second, code) = connect(&broker, PROXY, &v2([203, 0, 113, 8]), login, "b").await;
    assert_eq!(code, Some(ConnectReturnCode::Success));
    // The same real client again is over its share of one.
    let (_, code) = connect(&broker, PROXY, &v1("203.0.113.7"), login, "c").await;
    assert_eq!(
        code, None,
        "refused for the client's address, not the proxy's"
    );

    // A header from an address that is not a trusted proxy is not believed.
    let (_, code) = connect(&broker, [127, 0, 0, 3], &v1("198.51.100.1"), login, "d").await;
    assert_eq!(code, None);
    // A trusted proxy must send one.
    let (_, code) = connect(&broker, PROXY, b"", login, "e").await;
    assert_eq!(code, None);
    // Direct clients are unaffected.
    let (_direct, code) = connect(&broker, [127, 0, 0, 1], b"", login, "f").await;
    assert_eq!(code, Some(ConnectReturnCode::Success));

    // Accounting records the client behind the proxy.
    drop(first);
    broker
        .session_rows_until(Some(alice.id), "a closed session row", |n| n >= 1)
        .await;
    let db = broker.database().await;
    let ips: Vec<(String,)> =
        sqlx::query_as("SELECT ip FROM session_log WHERE close_reason <> 'live'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(ips, vec![("203.0.113.7".to_owned(),)]);
    let metrics = broker.metrics();
    assert!(
        metrics.contains("outcome=\"proxy_header_invalid\""),
        "{metrics}"
    );
}

/// An HTTP client that returns error statuses instead of failing on them.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// HTTP status of `GET /v1/me` with a wrong secret for `login`, through a proxy that says
/// the client is `forwarded_for`.
fn failed_login(broker: &Broker, login: &str, forwarded_for: &str) -> u16 {
    agent()
        .get(format!("http://{}/v1/me", broker.http))
        .header("Authorization", common::basic_auth(login, &"A".repeat(43)))
        .header("X-Forwarded-For", forwarded_for)
        .call()
        .unwrap()
        .status()
        .as_u16()
}

/// Each (login, forwarded client, expected status) of failed logins, in turn.
fn failed_logins(broker: &Broker, steps: &[(&str, &str, u16)]) {
    for &(login, client, status) in steps {
        assert_eq!(
            failed_login(broker, login, client),
            status,
            "{login} from {client}"
        );
    }
}

/// HTTP load balancers forward the client in `X-Forwarded-For`: believed from a trusted
/// proxy, so each client behind it has its own failed-login budget; ignored from anyone else.
#[test]
fn http_failed_login_budgets_follow_the_forwarded_client_only_behind_a_trusted_proxy() {
    let trusting = Broker::start_with(&[
        ("SEALRELAY_SERVER_TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ("SEALRELAY_AUTH_MAX_FAILURES_PER_IP", "2"),
    ]);
    failed_logins(
        &trusting,
        &[
            ("a1", "198.51.100.1", 401),
            ("a2", "198.51.100.1", 401),
            ("a3", "198.51.100.1", 429), // that client's budget is spent
            ("b1", "198.51.100.2", 401), // not its neighbour's
        ],
    );

    let direct = Broker::start_with(&[("SEALRELAY_AUTH_MAX_FAILURES_PER_IP", "2")]);
    failed_logins(
        &direct,
        &[
            ("a1", "198.51.100.1", 401),
            ("a2", "198.51.100.2", 401),
            ("a3", "198.51.100.3", 429), // a forged header buys nothing
        ],
    );
}

/// IPv6 clients count per /64 (issue 25): one client holds a whole /64 and may use any
/// address in it, so behind a trusted proxy every per-address budget — MQTT connections,
/// failed logins, registrations — is spent by the prefix, not by each address (before: 1,100
/// connections from one /64 all held, 60 failed logins accepted where one address gets 20).
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_clients_are_counted_per_64_in_every_per_address_budget() {
    let broker = Broker::start_with(&[
        ("SEALRELAY_MQTT_PROXY_PROTOCOL", "true"),
        (
            "SEALRELAY_SERVER_TRUSTED_PROXIES",
            "[\"127.0.0.1\", \"127.0.0.2\"]",
        ),
        ("SEALRELAY_MQTT_MAX_CONNECTIONS_PER_IP", "2"),
        ("SEALRELAY_AUTH_MAX_FAILURES_PER_IP", "2"),
        ("SEALRELAY_AUTH_REGISTRATIONS_PER_IP_PER_HOUR", "3"),
    ]);
    let alice = broker.user("alice").await;
    let login = (alice.login.as_str(), alice.auth_secret());
    let tcp6 = |client: &str| format!("PROXY TCP6 {client} ::1 40000 1883\r\n").into_bytes();
    let (_a, code) = connect(&broker, PROXY, &tcp6("2001:db8::1"), login, "a").await;
    assert_eq!(code, Some(ConnectReturnCode::Success));
    let (_b, code) = connect(&broker, PROXY, &tcp6("2001:db8::2"), login, "b").await;
    assert_eq!(code, Some(ConnectReturnCode::Success));
    let (_, code) = connect(&broker, PROXY, &tcp6("2001:db8::ffff:3"), login, "c").await;
    assert_eq!(
        code, None,
        "a third address of the same /64 is over its share"
    );
    let (_d, code) = connect(&broker, PROXY, &tcp6("2001:db8:0:1::1"), login, "d").await;
    assert_eq!(code, Some(ConnectReturnCode::Success), "another /64");

    failed_logins(
        &broker,
        &[
            ("x1", "2001:db8:5::a", 401),
            ("x2", "2001:db8:5::b", 401),
            ("x3", "2001:db8:5::c", 429), // the /64's budget
            ("x4", "2001:db8:6::c", 401), // another /64
        ],
    );

    // Registrations (alice's name is taken: each attempt counts, and answers 409).
    let register = |forwarded_for: &str| {
        let body = serde_json::json!({
            "name": "alice", "user_id": sealrelay_wire::PrincipalId::random(),
            "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "wrapped_key": "AAAA", "auth_secret": "A".repeat(43),
            "kdf": {"salt": "AAAAAAAAAAAAAAAAAAAAAA==", "memory_kib": 19456, "iterations": 2, "parallelism": 1}
        });
        agent()
            .post(format!("http://{}/v1/users", broker.http))
            .header("X-Forwarded-For", forwarded_for)
            .send_json(&body)
            .unwrap()
            .status()
            .as_u16()
    };
    // The broker's test config lets the user above register from 127.0.0.1, not from here.
    for address in ["2001:db8:7::1", "2001:db8:7::2", "2001:db8:7::3"] {
        assert_eq!(register(address), 409);
    }
    assert_eq!(register("2001:db8:7::4"), 429, "the /64's registrations");
    assert_eq!(register("2001:db8:8::4"), 409, "another /64");
}

/// A v2 LOCAL header is the proxy speaking for itself (issue 25: its addresses were
/// believed): the connection counts as the proxy's, whatever addresses the header carries.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_header_names_no_client() {
    let (broker, alice) = behind_a_proxy_with_one_share().await;
    let login = (alice.login.as_str(), alice.auth_secret());
    let (_first, code) = connect(
        &broker,
        PROXY,
        &v2_command(0x20, [203, 0, 113, 9]),
        login,
        "a",
    )
    .await;
    assert_eq!(code, Some(ConnectReturnCode::Success));
    let (_, code) = connect(
        &broker,
        PROXY,
        &v2_command(0x20, [203, 0, 113, 10]),
        login,
        "b",
    )
    .await;
    assert_eq!(code, None, "both count as the proxy's own address");
}
