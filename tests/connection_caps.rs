//! `mqtt.max_connections` and `mqtt.max_connections_per_ip`: past either cap a new
//! connection is refused cheaply — MQTT 5 CONNACK 0x97 (broker full) or 0x9F (this address
//! full), MQTT 3.1.1 a close — counted, and the listener keeps serving everyone else.
//! Several client IPs are played with source addresses in 127.0.0.0/8.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Broker, Raw};
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// An MQTT 5 CONNECT for `login` from `from`: the connection and the CONNACK code, or
/// `None` if the broker closed without one.
async fn connect_v5_from(
    broker: &Broker,
    from: IpAddr,
    login: (&str, &str),
) -> (Raw, Option<ConnectReturnCode>) {
    let mut raw = Raw::open_from(broker.mqtt, from).await;
    let id = format!(
        "cap-{from}-{}",
        rand_core::RngCore::next_u32(&mut rand_core::OsRng)
    );
    let code = raw.try_connect_v5(login, &id, 30).await;
    (raw, code)
}

/// An MQTT 3.1.1 CONNECT from `from`: returns the bytes the broker sent before closing.
async fn connect_v4_from(broker: &Broker, from: IpAddr, login: (&str, &str)) -> Vec<u8> {
    let mut raw = Raw::open_from(broker.mqtt, from).await;
    let mut connect = rumqttc::mqttbytes::v4::Connect::new("cap-v4");
    connect.set_login(login.0, login.1);
    let mut out = bytes::BytesMut::new();
    connect.write(&mut out).unwrap();
    raw.send(&out).await;
    raw.raw_until_closed().await
}

fn counted(broker: &Broker, outcome: &str) -> u64 {
    broker.counter(&format!(
        "sealrelay_connections_total{{transport=\"tcp\",outcome=\"{outcome}\"}}"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_either_cap_are_refused_and_counted_while_others_are_served() {
    let broker = Broker::start_with(&[
        ("SEALRELAY_MQTT_MAX_CONNECTIONS", "4"),
        ("SEALRELAY_MQTT_MAX_CONNECTIONS_PER_IP", "2"),
    ]);
    let alice = broker.user("alice").await;
    let login = (alice.login.as_str(), alice.auth_secret());

    // Two from 127.0.0.1 fill that address's share; a third is refused in both versions.
    let (first, code) = connect_v5_from(&broker, ip(1), login).await;
    assert_eq!(code, Some(ConnectReturnCode::Success));
    let _second = Raw::open_from(broker.mqtt, ip(1)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, code) = connect_v5_from(&broker, ip(1), login).await;
    assert_eq!(
        code,
        Some(ConnectReturnCode::ConnectionRateExceeded),
        "0x9F"
    );
    assert_eq!(
        connect_v4_from(&broker, ip(1), login).await,
        Vec::<u8>::new(),
        "3.1.1 has no code for it: closed without CONNACK"
    );

    // Another address is still served, up to the broker-wide cap of 4.
    let (_third, code) = connect_v5_from(&broker, ip(2), login).await;
    assert_eq!(code, Some(ConnectReturnCode::Success));
    let _fourth = Raw::open_from(broker.mqtt, ip(3)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, code) = connect_v5_from(&broker, ip(4), login).await;
    assert_eq!(code, Some(ConnectReturnCode::QuotaExceeded), "0x97");

    // A closed connection gives its place back.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_again, code) = connect_v5_from(&broker, ip(1), login).await;
        if code == Some(ConnectReturnCode::Success) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back: {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert!(counted(&broker, "refused_ip_capacity") >= 2);
    assert!(counted(&broker, "refused_capacity") >= 1);
}

/// The caps are one budget across listeners: a WebSocket connection from an address that
/// already holds its share on plain TCP is refused too (closed before any upgrade).
#[tokio::test(flavor = "multi_thread")]
async fn the_caps_count_every_transport_together() {
    use std::io::Read;
    let broker = Broker::start_with(&[("SEALRELAY_MQTT_MAX_CONNECTIONS_PER_IP", "1")]);
    let _held = Raw::open_from(broker.mqtt, ip(1)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ws = std::net::TcpStream::connect(broker.ws).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(
        &mut ws,
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .ok();
    let mut answer = Vec::new();
    let _ = ws.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "refused before the upgrade: {}",
        String::from_utf8_lossy(&answer)
    );
    let line = "sealrelay_connections_total{transport=\"ws\",outcome=\"refused_ip_capacity\"} 1";
    assert!(broker.metrics().contains(line), "{}", broker.metrics());
}
