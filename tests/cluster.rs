//! Several broker nodes as one broker (issue 26): a real PostgreSQL directory and real
//! `nats-server`s started by the harness, three sealrelay processes on loopback, driven as
//! users would — a console on one node, its instance on another. Every test name ends in
//! `across_nodes` (`.ci/run`'s PostgreSQL pass skips them: they start their own servers).

mod common;

use std::time::{Duration, Instant};

use common::nats::Nats;
use common::postgres::Postgres;
use common::{Broker, Probe, ProbeOptions, Seen, FAST_KDF};
use sealrelay_client::{Client, ClientError, Identity, MqttVersion};

/// Three nodes on one PostgreSQL database, each given every NATS server, server `i` first
/// for node `i`.
struct Fleet {
    nodes: Vec<Broker>,
    nats: Nats,
    postgres: Postgres,
    /// Holds the prelogin key every node shares.
    _keys: tempfile::TempDir,
}

/// A 32-byte prelogin key file, private, in `dir`.
fn prelogin_key(dir: &std::path::Path, fill: u8) -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("prelogin-{fill}.key"));
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &[fill; 32]).unwrap();
    path
}

impl Fleet {
    fn start(nats_servers: usize, env: &[(&str, &str)]) -> Fleet {
        Fleet::on(Nats::cluster(nats_servers), 3, env)
    }

    /// `count` nodes on `nats` (node `i` given every server, server `i` first) and a fresh
    /// PostgreSQL, once they know each other.
    fn on(nats: Nats, count: usize, env: &[(&str, &str)]) -> Fleet {
        let postgres = Postgres::start();
        let url = postgres.database();
        let keys = tempfile::tempdir().unwrap();
        let key = prelogin_key(keys.path(), 7);
        let servers = nats.ports.len();
        let nodes: Vec<Broker> = (0..count)
            .map(|i| Broker::start_in_cluster(&url, &nats.urls_from(i % servers), Some(&key), env))
            .collect();
        let fleet = Fleet {
            nodes,
            nats,
            postgres,
            _keys: keys,
        };
        fleet.until_nodes_know(count as u64);
        fleet
    }

    /// Waits until every running node knows `count` nodes, itself included.
    fn until_nodes_know(&self, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &self.nodes {
            while node.counter("sealrelay_cluster_nodes") != count {
                assert!(
                    Instant::now() < deadline,
                    "the nodes did not find each other:\n{}",
                    node.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Fleet {
    /// alice, registered on node A and known to every node (their caches have her).
    async fn alice(&self) -> Identity {
        let alice = self.nodes[0].user("alice").await;
        for node in &self.nodes[1..] {
            let api = node.api();
            within_a_second(|| Identity::login_user(&api, "alice", "pw-alice")).await;
        }
        alice
    }
}

impl Fleet {
    /// alice's console on node A and an instance of hers on node `on` that echoes; the
    /// first echo has come back.
    async fn echoing(
        &self,
        on: usize,
    ) -> (
        Client,
        sealrelay_wire::PrincipalId,
        tokio::task::JoinHandle<()>,
    ) {
        let mut alice = self.alice().await;
        let (instance, token) = alice.add_instance(&self.nodes[0].api()).await.unwrap();
        let api = self.nodes[on].api();
        within_a_second(|| Identity::login_instance(&api, &token)).await;
        let agent = common::echo_agent(&self.nodes[on], &token.reveal());
        let mut console = console_on(&self.nodes[0]).await;
        assert_eq!(
            common::echo(&mut console, instance, b"up").await,
            b"echo:up"
        );
        (console, instance, agent)
    }
}

impl Fleet {
    /// alice, an instance of hers, her console on node A, and node C taken out of the fleet
    /// for the test to stop.
    async fn c_apart(&mut self) -> (Identity, Identity, Client, Broker) {
        let mut alice = self.alice().await;
        let c = self.nodes.pop().unwrap();
        let instance = self.nodes[0].instance_of(&mut alice).await;
        let console = console_on(&self.nodes[0]).await;
        (alice, instance, console, c)
    }
}

/// alice's console on `node`: logged in there, connected over MQTT 5.
async fn console_on(node: &Broker) -> Client {
    let alice = Identity::login_user(&node.api(), "alice", "pw-alice")
        .await
        .unwrap();
    connect(node, alice, MqttVersion::V5, None).await
}

/// A persistent session of `who` on `node` under `client_id`: resumed (CONNACK's Session
/// Present is `present`, or the test fails saying `what`) or new, and then subscribed.
async fn session_on(
    node: &Broker,
    who: &Identity,
    client_id: &str,
    present: bool,
    what: &str,
) -> common::Raw {
    let mut raw = common::Raw::open(node.mqtt).await;
    let login = (who.login.as_str(), who.auth_secret());
    let ack = raw
        .connect_session(login, client_id, 0, Some(300))
        .await
        .unwrap();
    assert_eq!(
        (ack.code, ack.session_present),
        (
            rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success,
            present
        ),
        "{what}"
    );
    if !present {
        raw.subscribe_inbox(who.id).await;
    }
    raw
}

/// A first persistent session of `who` on `node` under `client_id`, subscribed.
async fn persistent_on(node: &Broker, who: &Identity, client_id: &str) -> common::Raw {
    session_on(node, who, client_id, false, "a first session").await
}

/// [`persistent_on`], whose connection is then lost: parked on `node` once this returns.
async fn park(node: &Broker, who: &Identity, client_id: &str) {
    let before = node.counter(common::LOST);
    drop(persistent_on(node, who, client_id).await);
    common::until_lost(node, before + 1).await;
}

/// Seals `count` envelopes from alice to `to` ("{label} {i}") and sends them at QoS 1 from
/// `console`, each acknowledged (once the console's node knows where `to` is); returns them.
async fn send_sealed(
    console: &mut Client,
    alice: &Identity,
    to: &Identity,
    label: &str,
    count: usize,
) -> Vec<bytes::Bytes> {
    let mut sent = Vec::new();
    for i in 0..count {
        let envelope = alice
            .seal_to(to.id, &to.public_key(), format!("{label} {i}").as_bytes())
            .unwrap();
        send_until_held(console, to.id, envelope.clone()).await;
        sent.push(envelope);
    }
    sent
}

/// Connects `who` to `node` over `url` (the node's TCP listener if `None`).
async fn connect(
    node: &Broker,
    who: Identity,
    version: MqttVersion,
    url: Option<String>,
) -> Client {
    let url = url.unwrap_or_else(|| node.broker_addr());
    let endpoint = sealrelay_client::Broker::parse(&url, Some(&node.dev_cert())).unwrap();
    Client::connect_to(node.api(), who, endpoint, version)
        .await
        .expect("connect")
}

/// `attempt`'s first success within a second: what one node committed reaches the others'
/// caches within that (their change events).
async fn within_a_second<T, F>(mut attempt: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(e) if Instant::now() > deadline => panic!("not within a second: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A console on node A and its instance on node C trade envelopes at QoS 0 and 1, over
/// MQTT 3.1.1 and 5, TCP and WebSocket over TLS; an instance gone from C is answered 0x10
/// on A, and one on C that stopped reading is answered 0x97 on A, as on one node.
#[tokio::test(flavor = "multi_thread")]
async fn a_console_and_its_instance_trade_envelopes_across_nodes() {
    let fleet = Fleet::start(1, &[]);
    let (a, b, c) = (&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[2]);
    let mut alice = fleet.alice().await;
    let alice_id = alice.id;
    let (_, token) = alice.add_instance(&b.api()).await.unwrap();
    let console_login = || async {
        Identity::login_user(&a.api(), "alice", "pw-alice")
            .await
            .unwrap()
    };
    for (version, console_url) in [
        (MqttVersion::V311, None),
        (MqttVersion::V5, None),
        (
            MqttVersion::V5,
            Some(format!("wss://127.0.0.1:{}/mqtt", a.wss.port())),
        ),
    ] {
        let api_c = c.api();
        let instance = within_a_second(|| Identity::login_instance(&api_c, &token)).await;
        let instance_id = instance.id;
        let hello = alice
            .seal_to(instance_id, &instance.public_key(), b"hello")
            .unwrap();
        let mut agent = connect(c, instance, version, None).await;
        let mut console = connect(a, console_login().await, version, console_url.clone()).await;
        send_until_held(&mut console, instance_id, hello).await;
        for qos in [0, 1, 1, 0] {
            console
                .send(instance_id, format!("q{qos}").as_bytes(), qos)
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..5 {
            let message = tokio::time::timeout(Duration::from_secs(5), agent.next())
                .await
                .expect("delivered across nodes")
                .unwrap();
            assert_eq!(message.from, alice_id);
            got.push(String::from_utf8(message.payload.to_vec()).unwrap());
        }
        assert_eq!(
            got,
            ["hello", "q0", "q1", "q1", "q0"],
            "{version:?} {console_url:?}: in order"
        );
        // The answer goes back from C to A.
        agent.send(alice_id, b"from C", 1).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), console.next())
            .await
            .expect("the reply crossed back")
            .unwrap();
        assert_eq!(&reply.payload[..], b"from C");
        agent.close().await;
        // Gone from C: A answers no subscribers once C's news is in (or asks C, which has none).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match console.send(instance_id, b"anyone?", 1).await {
                Err(ClientError::Offline(_)) => break,
                Ok(_) if version == MqttVersion::V311 => break, // 3.1.1 has no 0x10
                Ok(_) => assert!(Instant::now() < deadline, "still delivered to C"),
                Err(e) => panic!("{e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        console.close().await;
    }

    // An instance on C subscribed at QoS 1 that never reads nor acknowledges: its budget
    // fills, and A's publisher hears 0x97 `recipient_backpressure` for it.
    let instance = Identity::login_instance(&c.api(), &token).await.unwrap();
    let to = instance.id;
    let mut stuck = common::Raw::open_with_receive_buffer(c.mqtt, 4096).await;
    stuck
        .try_connect_v5((&instance.login, instance.auth_secret()), "stuck", 0)
        .await;
    stuck.subscribe_inbox(to).await;
    let mut console = connect(a, console_login().await, MqttVersion::V5, None).await;
    let big = vec![0x5a; 200_000];
    let first = alice.seal_to(to, &instance.public_key(), &big).unwrap();
    send_until_held(&mut console, to, first).await;
    let mut refused = None;
    for _ in 0..40 {
        match console.send(to, &big, 1).await {
            Ok(_) => {}
            Err(e @ ClientError::PublishRefused { code: 0x97, .. }) => {
                refused = Some(e.to_string());
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let refused = refused.expect("never refused for the stuck recipient on C");
    assert!(refused.contains("recipient"), "{refused}");
    drop(stuck);
}

/// A password changed through node B ends alice's sessions on A and C within a second, and
/// her old password and login secret fail on all three nodes; the new one works on each.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_change_on_one_node_takes_effect_on_every_node_across_nodes() {
    let fleet = Fleet::start(1, &[]);
    let (a, b, c) = (&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[2]);
    // The old password works everywhere before.
    let mut alice = fleet.alice().await;
    let old_secret = alice.auth_secret().to_owned();
    let mut on_a = probe_as(a, &alice, "on-a").await;
    let mut on_c = probe_as(c, &alice, "on-c").await;

    alice
        .change_password(&b.api(), "a brand new passphrase", FAST_KDF)
        .await
        .unwrap();
    let changed = Instant::now();
    for (name, probe) in [("A", &mut on_a), ("C", &mut on_c)] {
        let seen = tokio::time::timeout(Duration::from_secs(1), probe.next())
            .await
            .unwrap_or_else(|_| panic!("node {name} kept alice's session past 1 s"));
        assert_eq!(seen, Seen::Disconnect(0x98), "node {name}");
    }
    assert!(changed.elapsed() < Duration::from_secs(1));

    for (name, node) in ["A", "B", "C"].iter().zip(&fleet.nodes) {
        let err = Identity::login_user(&node.api(), "alice", "pw-alice")
            .await
            .err()
            .unwrap_or_else(|| panic!("the old password logged in on {name}"));
        assert!(
            matches!(err, ClientError::WrongPassword { .. }),
            "{name}: {err}"
        );
        let mut old = Probe::connect(
            node.mqtt,
            ProbeOptions::new(MqttVersion::V5, Some(("alice", &old_secret))),
        )
        .await;
        assert_eq!(old.next().await, Seen::ConnAck(0x87), "node {name}");
        Identity::login_user(&node.api(), "alice", "a brand new passphrase")
            .await
            .unwrap_or_else(|e| panic!("the new password on {name}: {e}"));
    }
}

/// A removed instance's sessions end on every node that holds one, removed through B: a
/// live one on A is closed, a parked one on C is discarded with its queue; its token no
/// longer logs in anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_instance_is_closed_on_every_node_across_nodes() {
    let fleet = Fleet::start(1, &[]);
    let (a, b, c) = (&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[2]);
    let mut alice = fleet.alice().await;
    let (_, token) = alice.add_instance(&b.api()).await.unwrap();
    let api_c = c.api();
    let instance = within_a_second(|| Identity::login_instance(&api_c, &token)).await;
    park(c, &instance, "on-c").await;
    let mut live = probe_as(a, &instance, "on-a").await;
    let mut console = console_on(a).await;
    send_sealed(&mut console, &alice, &instance, "m", 3).await;

    alice.remove_instance(&b.api(), instance.id).await.unwrap();
    let removed = Instant::now();
    let seen = tokio::time::timeout(Duration::from_secs(1), live.next())
        .await
        .expect("node A kept the removed instance past 1 s");
    assert_eq!(seen, Seen::Disconnect(0x87), "node A");
    let discarded = r#"sealrelay_offline_discarded_total{reason="instance_removed"}"#;
    while c.counter(discarded) < 3 {
        assert!(
            removed.elapsed() < Duration::from_secs(1),
            "node C kept the removed instance's parked queue past 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        c.counter("sealrelay_sessions_parked"),
        0,
        "nothing parked on C"
    );
    for node in [a, c] {
        let mut again = Probe::connect(
            node.mqtt,
            ProbeOptions::new(
                MqttVersion::V5,
                Some((&instance.login, instance.auth_secret())),
            ),
        )
        .await;
        assert_eq!(again.next().await, Seen::ConnAck(0x87), "its token fails");
    }
}

/// `who` logged in on `node` under `client_id` (sessions of one principal on two nodes
/// with one client id would take each other over, as on one node).
async fn probe_as(node: &Broker, who: &Identity, client_id: &str) -> Probe {
    let mut probe = Probe::connect(
        node.mqtt,
        ProbeOptions {
            client_id,
            ..ProbeOptions::new(MqttVersion::V5, Some((&who.login, who.auth_secret())))
        },
    )
    .await;
    assert_eq!(
        probe.next().await,
        Seen::ConnAck(0),
        "login as {}",
        who.login
    );
    probe
}

/// Reads `count` deliveries on `raw`, acknowledging each; returns their envelopes.
async fn deliveries(raw: &mut common::Raw, count: usize) -> Vec<bytes::Bytes> {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAck};
    let mut got = Vec::new();
    while got.len() < count {
        match raw.read(Duration::from_secs(5)).await {
            common::RawRead::Packet(packet) => match *packet {
                Packet::Publish(publish) => {
                    raw.send_v5(Packet::PubAck(PubAck::new(publish.pkid, None)))
                        .await;
                    got.push(publish.payload);
                }
                other => panic!("expected a delivery, got {other:?}"),
            },
            other => panic!("{} of {count} deliveries, then {other:?}", got.len()),
        }
    }
    got
}

/// An instance's persistent session follows it between nodes: parked on C, the envelopes
/// sent meanwhile from a console on A queue there, and when it reconnects to A it gets them
/// all, in order, with Session Present 1; connected on A, a connection with its client id
/// on C takes that session over (the one on A told 0x8E) and resumes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_session_moves_with_its_queue_across_nodes() {
    let fleet = Fleet::start(1, &[]);
    let (a, c) = (&fleet.nodes[0], &fleet.nodes[2]);
    let mut alice = fleet.alice().await;
    let instance = a.instance_of(&mut alice).await;
    park(c, &instance, "plant-7").await;
    let mut console = console_on(a).await;
    let (to, key) = (instance.id, instance.public_key());
    let sent = send_sealed(&mut console, &alice, &instance, "m", 20).await;

    let mut on_a = session_on(a, &instance, "plant-7", true, "resumed on A").await;
    assert_eq!(
        deliveries(&mut on_a, 20).await,
        sent,
        "every queued envelope, in order"
    );

    // Live on A; the same client id on C takes it over.
    let mut again = session_on(c, &instance, "plant-7", true, "taken over on C").await;
    match on_a.read(Duration::from_secs(2)).await {
        common::RawRead::Packet(packet) => assert!(
            matches!(&*packet, rumqttc::v5::mqttbytes::v5::Packet::Disconnect(d) if d.reason_code == rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver),
            "{packet:?}"
        ),
        other => panic!("A's session was not told it was taken over: {other:?}"),
    }
    // Still subscribed (the session moved): an envelope reaches it on C.
    let last = alice.seal_to(to, &key, b"after the move").unwrap();
    console.send_envelope(to, last.clone(), 1).await.unwrap();
    // First again, with DUP, whatever A had written and not yet seen acknowledged.
    loop {
        let got = deliveries(&mut again, 1).await.remove(0);
        if got == last {
            break;
        }
        assert!(sent.contains(&got), "only redeliveries come before it");
    }
}

/// A rolling restart: SIGTERM on C tells its sessions 0x8B; an instance whose persistent
/// session was there reconnects to B and resumes it — the envelopes C had written and not
/// seen acknowledged come again — and C, drained, exits.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_node_hands_its_persistent_sessions_over_across_nodes() {
    use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};

    let mut fleet = Fleet::start(1, &[]);
    let (alice, instance, mut console, mut c) = fleet.c_apart().await;
    let b = &fleet.nodes[1];
    let mut on_c = persistent_on(&c, &instance, "plant-9").await;
    let sent = send_sealed(&mut console, &alice, &instance, "m", 5).await;

    c.signal("TERM");
    // Written to the instance on C, never acknowledged; then the node says it is going.
    loop {
        match on_c.read(Duration::from_secs(5)).await {
            common::RawRead::Packet(packet) => match *packet {
                Packet::Publish(_) => {}
                Packet::Disconnect(d) => {
                    assert_eq!(d.reason_code, DisconnectReasonCode::ServerShuttingDown);
                    break;
                }
                other => panic!("{other:?}"),
            },
            other => panic!("C closed without DISCONNECT 0x8B: {other:?}"),
        }
    }
    // A client backs off a second before reconnecting; the draining node waits for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(c.running(), "C left before its session was taken over");
    let mut on_b = session_on(
        b,
        &instance,
        "plant-9",
        true,
        "resumed on B from the draining node",
    )
    .await;
    assert_eq!(deliveries(&mut on_b, 5).await, sent, "resent, in order");

    let deadline = Instant::now() + Duration::from_secs(10);
    while c.running() {
        assert!(Instant::now() < deadline, "C never finished draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !c.log().contains("not taken over"),
        "C left a session behind"
    );
}

/// SIGKILL node C. What it acknowledged and had written is delivered; what it held for a
/// parked session is the documented loss (docs/cluster.md, "Failures"), all of it and
/// nothing else; its instance reconnects to B, where traffic resumes at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_loses_only_its_parked_queues_across_nodes() {
    let mut fleet = Fleet::start(1, &[]);
    let (alice, instance, mut console, mut c) = fleet.c_apart().await;
    let b = &fleet.nodes[1];
    let (to, key) = (instance.id, instance.public_key());
    let seal = |text: String| alice.seal_to(to, &key, text.as_bytes()).unwrap();

    // Live on C: every envelope acknowledged to the console arrives.
    let mut on_c = persistent_on(&c, &instance, "plant-3").await;
    let live = send_sealed(&mut console, &alice, &instance, "live", 10).await;
    assert_eq!(deliveries(&mut on_c, 10).await, live);
    // Parked on C: ten more acknowledged, queued there.
    let before = c.counter(common::LOST);
    drop(on_c);
    common::until_lost(&c, before + 1).await;
    send_sealed(&mut console, &alice, &instance, "parked", 10).await;

    c.signal("KILL");
    let killed = Instant::now();
    let mut on_b = session_on(
        b,
        &instance,
        "plant-3",
        false,
        "the parked session died with C",
    )
    .await;
    let after = seal("after".into());
    send_until_held(&mut console, to, after.clone()).await;
    assert_eq!(
        deliveries(&mut on_b, 1).await,
        [after],
        "only what was sent after: the ten parked on C are the documented loss"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.running() {
        assert!(Instant::now() < deadline, "C survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `envelope` to `to` at QoS 1 until it is acknowledged: answered 0x10 only while
/// the console's node does not yet know another node holds `to` (its news takes a moment).
async fn send_until_held(
    console: &mut Client,
    to: sealrelay_wire::PrincipalId,
    envelope: bytes::Bytes,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match console.send_envelope(to, envelope.clone(), 1).await {
            Ok(()) => return,
            Err(ClientError::Offline(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Three NATS servers: killing the one with broker nodes on it leaves routing between a
/// console on A and its instance on C working once those nodes have moved to another server.
#[tokio::test(flavor = "multi_thread")]
async fn routing_goes_on_when_one_nats_server_of_three_dies_across_nodes() {
    let mut fleet = Fleet::start(3, &[]);
    let (mut console, instance, _agent) = fleet.echoing(2).await;

    let busiest = (0..3).max_by_key(|i| fleet.nats.clients(*i)).unwrap();
    assert!(fleet.nats.clients(busiest) >= 1, "no node on any server");
    fleet.nats.kill(busiest);
    let killed = Instant::now();
    assert_eq!(
        common::echo(&mut console, instance, b"after").await,
        b"echo:after"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    fleet.until_nodes_know(3);
}

/// PostgreSQL stopped for 10 s under three nodes: a login on any node fails with a clear 503
/// within 3 s, a console on A and its instance on C keep trading, and afterwards logins work
/// on every node without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn postgresql_down_keeps_live_sessions_relaying_across_nodes() {
    let mut fleet = Fleet::start(1, &[]);
    let (mut console, instance, _agent) = fleet.echoing(2).await;

    fleet.postgres.kill();
    let down = Instant::now();
    for node in &fleet.nodes {
        common::login_fails_without_the_database(node).await;
    }
    common::echo_until_ten_seconds(&mut console, instance, down).await;
    fleet.postgres.start_again();
    for node in &fleet.nodes {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Err(e) = Identity::login_user(&node.api(), "alice", "pw-alice").await {
            assert!(Instant::now() < deadline, "still refused: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for node in &fleet.nodes {
        let ready = node.until_readyz(200, Duration::from_secs(5));
        assert_eq!(ready["cluster"], "linked", "{ready}");
    }
    assert_eq!(
        common::echo(&mut console, instance, b"back").await,
        b"echo:back"
    );
}

/// Tries `count` wrong passwords for `login`, the i-th on `nodes[i % nodes.len()]`; how
/// many were answered "wrong password" before the login locked (the rest: 429).
async fn wrong_passwords(nodes: &[&Broker], login: &str, count: usize) -> usize {
    let mut denied = 0;
    for i in 0..count {
        match Identity::login_user(&nodes[i % nodes.len()].api(), login, "not the password").await {
            Err(ClientError::WrongPassword { .. }) => denied += 1,
            Err(ClientError::TooManyFailures { .. }) => {}
            other => panic!("try {i}: {:?}", other.err()),
        }
    }
    denied
}

/// 30 wrong passwords spread over three nodes lock a login as 30 on one node do: the same
/// number are answered before it locks (cluster-wide windows, counted on every node), and
/// then the right password is refused on every node too, until the window passes.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_spread_over_nodes_lock_as_on_one_node_across_nodes() {
    let fleet = Fleet::start(1, &[]);
    let nodes: Vec<&Broker> = fleet.nodes.iter().collect();
    for name in ["alice", "bob"] {
        nodes[0].user(name).await;
        let (api, password) = (nodes[2].api(), format!("pw-{name}"));
        within_a_second(|| Identity::login_user(&api, name, &password)).await;
    }
    let on_one = wrong_passwords(&nodes[..1], "bob", 30).await;
    let spread = wrong_passwords(&nodes, "alice", 30).await;
    assert_eq!(on_one, 10, "auth.max_failures_per_login on one node");
    assert!(
        (on_one..=on_one + 1).contains(&spread),
        "{spread} answered over three nodes, {on_one} on one"
    );
    for node in &nodes {
        let locked = Identity::login_user(&node.api(), "alice", "pw-alice").await;
        assert!(
            matches!(locked, Err(ClientError::TooManyFailures { .. })),
            "{:?}",
            locked.err()
        );
    }
}

/// alice's login from `client` (its X-Forwarded-For, believed from the test's loopback
/// proxy) on `node`'s API with `secret`: the HTTP status.
fn login_from(node: &Broker, client: &str, secret: &str) -> u16 {
    ureq::get(&format!("http://{}/v1/me", node.http))
        .header("Authorization", common::basic_auth("alice", secret))
        .header("X-Forwarded-For", client)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap()
        .status()
        .as_u16()
}

/// The addresses a login succeeded from are trusted by every node: once wrong passwords from
/// many addresses lock alice's login everywhere, the address she logged in from on node A
/// still lets her in on nodes B and C, and a new address does not.
#[tokio::test(flavor = "multi_thread")]
async fn an_address_trusted_on_one_node_is_trusted_on_every_node_across_nodes() {
    let env = [
        ("SEALRELAY_SERVER_TRUSTED_PROXIES", r#"["127.0.0.0/8"]"#),
        ("SEALRELAY_AUTH_MAX_FAILURES_PER_LOGIN_ALL_ADDRESSES", "5"),
    ];
    let fleet = Fleet::start(1, &env);
    let alice = fleet.alice().await;
    let secret = alice.auth_secret().to_owned();
    let nodes = &fleet.nodes;
    assert_eq!(login_from(&nodes[0], "203.0.113.7", &secret), 200, "home");
    for i in 0..6 {
        let guesser = format!("198.51.100.{}", i + 1);
        login_from(&nodes[i % 3], &guesser, "not the secret");
    }
    assert_eq!(
        login_from(&nodes[2], "198.51.100.50", &secret),
        429,
        "locked"
    );
    for node in &nodes[1..] {
        let deadline = Instant::now() + Duration::from_secs(1);
        while login_from(node, "203.0.113.7", &secret) != 200 {
            assert!(Instant::now() < deadline, "home refused on another node");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Nodes that do not share their prelogin key would answer prelogin for an unknown name
/// differently (telling it from a known one) and key failed logins apart: each reports the
/// other, once, naming the fix.
#[test]
fn nodes_with_different_prelogin_keys_say_so_across_nodes() {
    let postgres = Postgres::start();
    let url = postgres.database();
    let nats = Nats::start();
    let keys = tempfile::tempdir().unwrap();
    let nodes: Vec<Broker> = [1, 2]
        .map(|fill| prelogin_key(keys.path(), fill))
        .iter()
        .map(|key| Broker::start_in_cluster(&url, &nats.url(0), Some(key), &[]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in &nodes {
        while node.counter(r#"sealrelay_refused_total{reason="cluster_config_mismatch"}"#) != 1 {
            assert!(Instant::now() < deadline, "not reported:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(node
            .log()
            .contains("copy directory.prelogin_key_file and [kdf] from one node to every node"));
    }
}

/// A node whose NATS server is gone says it is not ready (naming NATS) while it stays alive;
/// stopped while its database is gone too, it still stops within its grace period (saying
/// goodbye to nobody costs at most a moment), and exits 0.
#[test]
fn a_node_without_nats_is_not_ready_and_still_stops_in_time_across_nodes() {
    let mut fleet = Fleet::start(1, &[("SEALRELAY_SERVER_SHUTDOWN_GRACE_SECS", "3")]);
    for node in &fleet.nodes {
        let ready = node.until_readyz(200, Duration::from_secs(5));
        assert_eq!(ready["cluster"], "linked", "{ready}");
    }
    fleet.nats.kill(0);
    for node in &fleet.nodes {
        let body = node.until_readyz(503, Duration::from_secs(5));
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("the link to NATS"),
            "{body}"
        );
    }
    fleet.postgres.kill();
    std::thread::sleep(Duration::from_millis(200));
    let (status, took) = fleet.nodes[0].stop_with("TERM").unwrap();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// With `cluster.nats_ca_file` a node speaks TLS to NATS: two nodes on a TLS-only server find
/// each other and relay; a node given that CA refuses a server that does not speak TLS.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_speak_tls_to_nats_when_given_its_ca_across_nodes() {
    let (nats, ca) = Nats::start_tls();
    let ca_env = [("SEALRELAY_CLUSTER_NATS_CA_FILE", ca.to_str().unwrap())];
    let fleet = Fleet::on(nats, 2, &ca_env);
    let (mut console, instance, _agent) = fleet.echoing(1).await;
    assert_eq!(
        common::echo(&mut console, instance, b"over TLS").await,
        b"echo:over TLS"
    );

    let plain = Nats::start();
    let url = fleet.postgres.database();
    let said = common::refused_start(
        &format!(
            "[directory]\nurl = \"{url}\"\n[cluster]\nnats_url = \"{}\"\nnats_user = \"{}\"\n",
            plain.url(0),
            common::nats::USER
        ),
        &ca_env,
    );
    assert!(
        said.contains("cannot reach NATS at cluster.nats_url"),
        "{said}"
    );
}

/// Waits (a second at most) for `probe`'s session to be closed with DISCONNECT `code`.
async fn closed_within_a_second(probe: &mut Probe, code: u8, what: &str) {
    let seen = tokio::time::timeout(Duration::from_secs(1), probe.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: the session was still open after 1 s"));
    assert_eq!(seen, Seen::Disconnect(code), "{what}");
}

/// Every other kind of revocation reaches every node within a second too: a token rotated
/// through B closes the instance's session on C, an operator's kick on A and an operator's
/// reset on B close alice's on C, and an account deleted through A closes its sessions on B
/// and C.
#[tokio::test(flavor = "multi_thread")]
async fn every_revocation_reaches_every_node_across_nodes() {
    let fleet = Fleet::start(1, &[]);
    let (a, b, c) = (&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[2]);
    let mut alice = fleet.alice().await;
    let (api_b, api_c) = (b.api(), c.api());
    let (instance, token) = alice.add_instance(&api_b).await.unwrap();
    let agent = within_a_second(|| Identity::login_instance(&api_c, &token)).await;

    let mut on_c = probe_as(c, &agent, "agent").await;
    alice.rotate_token(&api_b, instance).await.unwrap();
    closed_within_a_second(&mut on_c, 0x98, "token rotated through B").await;

    let mut alice_on_c = probe_as(c, &alice, "alice").await;
    let kicked = a.admin(&["kick", "--principal", &alice.id.to_string()]);
    assert!(kicked.status.success(), "{kicked:?}");
    closed_within_a_second(&mut alice_on_c, 0x98, "kicked on A").await;

    let mut alice_on_c = probe_as(c, &alice, "alice").await;
    let reset = b.admin_reset("alice");
    assert!(reset.status.success(), "{reset:?}");
    closed_within_a_second(&mut alice_on_c, 0x98, "reset on B").await;
    let refused = Identity::login_user(&api_c, "alice", "pw-alice").await;
    assert!(
        matches!(refused, Err(ClientError::WrongPassword { .. })),
        "the old password on C after a reset on B: {:?}",
        refused.err()
    );

    let bob = a.user("bob").await;
    within_a_second(|| Identity::login_user(&api_c, "bob", "pw-bob")).await;
    within_a_second(|| Identity::login_user(&api_b, "bob", "pw-bob")).await;
    let mut bob_on_b = probe_as(b, &bob, "bob-b").await;
    let mut bob_on_c = probe_as(c, &bob, "bob-c").await;
    bob.delete_account(&a.api()).await.unwrap();
    closed_within_a_second(&mut bob_on_b, 0x87, "deleted through A, on B").await;
    closed_within_a_second(&mut bob_on_c, 0x87, "deleted through A, on C").await;
}

/// A rollback of a password change and an instance's re-enrolment, made through one node,
/// end the sessions they revoke on another within a second, as every revocation does.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_and_a_reenrolment_reach_every_node_across_nodes() {
    let fleet = Fleet::start(1, &[]);
    let (a, b, c) = (&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[2]);
    let mut alice = fleet.alice().await;
    let (instance, token) = alice.add_instance(&b.api()).await.unwrap();
    let api_c = c.api();
    let agent = within_a_second(|| Identity::login_instance(&api_c, &token)).await;
    let mut on_c = probe_as(c, &agent, "agent").await;
    alice.reenrol_instance(&b.api(), instance).await.unwrap();
    closed_within_a_second(&mut on_c, 0x98, "re-enrolled through B").await;

    alice
        .change_password(&a.api(), "a brand new passphrase", FAST_KDF)
        .await
        .unwrap();
    let api_c = c.api();
    let changed =
        within_a_second(|| Identity::login_user(&api_c, "alice", "a brand new passphrase")).await;
    let mut on_c = probe_as(c, &changed, "alice").await;
    Identity::roll_back_password(&b.api(), "alice", "pw-alice")
        .await
        .unwrap();
    closed_within_a_second(&mut on_c, 0x98, "rolled back through B").await;
    let refused = Identity::login_user(&api_c, "alice", "a brand new passphrase").await;
    assert!(
        matches!(refused, Err(ClientError::WrongPassword { .. })),
        "the undone password on C: {:?}",
        refused.err()
    );
}

/// A keyring's compare-and-swap holds across nodes: two writes of the same next version
/// through A and B at once — one lands, the other is 409 `keyring_conflict` — and every node
/// then serves the one that landed.
#[tokio::test(flavor = "multi_thread")]
async fn keyring_writes_through_two_nodes_swap_once_across_nodes() {
    use sealrelay_wire::api::KeyringBody;

    let fleet = Fleet::start(1, &[]);
    let alice = fleet.alice().await;
    let login = || sealrelay_client::Login {
        login: &alice.login,
        secret: alice.auth_secret(),
    };
    let stored = fleet.nodes[0]
        .api()
        .me(login())
        .await
        .unwrap()
        .keyring_version;
    let write = |node: usize, fill: u8| {
        let api = fleet.nodes[node].api();
        let body = KeyringBody {
            version: stored + 1,
            keyring: vec![fill; 64],
        };
        let login = login();
        async move { api.put_keyring(login, body).await }
    };
    let (through_a, through_b) = tokio::join!(write(0, 0xA), write(1, 0xB));
    let landed = match (&through_a, &through_b) {
        (Ok(()), Err(ClientError::Api { status: 409, .. })) => 0xA,
        (Err(ClientError::Api { status: 409, .. }), Ok(())) => 0xB,
        other => panic!("both or neither landed: {other:?}"),
    };
    for node in &fleet.nodes {
        let me = node.api().me(login()).await.unwrap();
        assert_eq!(me.keyring_version, stored + 1);
        let keyring = sealrelay_wire::b64::decode(&me.keyring.unwrap()).unwrap();
        assert_eq!(keyring, vec![landed; 64]);
    }
}

/// The close state of `principal`'s newest session in `who`'s activity report, read on
/// `node`.
async fn newest_session_state(
    node: &Broker,
    who: &Identity,
    principal: sealrelay_wire::PrincipalId,
) -> Option<String> {
    let report = who.activity(&node.api(), None).await.ok()?;
    let p = report.principals.into_iter().find(|p| p.id == principal)?;
    p.sessions.into_iter().next().map(|s| s.close_reason)
}

/// Accounting on a cluster: the row of a session on C is in the report read on B within a
/// checkpoint; once C is SIGKILLed the other nodes close it as `unclean_shutdown` within
/// three checkpoints, while the console's row on A stays live.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_sessions_are_closed_by_the_others_across_nodes() {
    let mut fleet = Fleet::start(
        1,
        &[
            ("SEALRELAY_ACCOUNTING_CHECKPOINT_SECS", "1"),
            ("SEALRELAY_ACCOUNTING_AGGREGATE_BELOW_SECS", "0"),
        ],
    );
    let (alice, instance, _console, c) = fleet.c_apart().await;
    let id = instance.id;
    let _on_c = connect(&c, instance, MqttVersion::V5, None).await;
    let (b, alice) = (&fleet.nodes[1], &alice);
    let until = |want: &'static str, limit: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(limit);
        loop {
            let state = newest_session_state(b, alice, id).await;
            if state.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the instance's row is {state:?}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    until("live", 3).await;
    c.signal("KILL");
    let killed = Instant::now();
    until("unclean_shutdown", 10).await;
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not before it went stale"
    );
    assert_eq!(
        newest_session_state(b, alice, alice.id).await.as_deref(),
        Some("live"),
        "the console on A is still counted"
    );
    drop(c);
}
