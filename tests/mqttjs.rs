//! MQTT.js (npm `mqtt` 5.16), the client a browser console uses, against a real broker:
//! a malformed envelope, one to an unpaired principal and one with a spoofed sender are each
//! answered once — no disconnect, so no resend loop under MQTT.js's default reconnect — on
//! MQTT 3.1.1 and 5.0, and the next valid envelope on the same connection is delivered.
//! The JavaScript half is `tests/js/refusals.test.mjs`, run with node's test runner; its
//! packages come from `npm ci` in tests/js (`.ci/run` does it).

mod common;

use common::Broker;
use hex::encode as hex;
use sealrelay_client::crypto;
use sealrelay_client::MqttVersion;

fn refused_count(broker: &Broker, reason: &str) -> u64 {
    broker.counter(&format!(
        "sealrelay_publish_refused_total{{reason=\"{reason}\"}}"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_js_gets_per_message_answers_and_never_loops() {
    let broker = Broker::start();
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    let instance_id = instance.id;
    let bob = broker.user("bob").await;
    let mallory = broker.user("mallory").await;
    let instance_key = alice.pinned(instance_id).unwrap();
    let mut agent = broker.client(instance, MqttVersion::V5).await;

    let refused = serde_json::json!([
        {"name": "malformed", "topic": instance_id.inbox_topic(), "hex": hex(b"not an envelope"), "code": 0x99},
        {"name": "unpaired", "topic": bob.id.inbox_topic(),
         "hex": hex(crypto::seal_anonymous(alice.id, bob.id, &bob.public_key(), b"x").unwrap()), "code": 0x87},
        {"name": "spoofed", "topic": instance_id.inbox_topic(),
         "hex": hex(crypto::seal_anonymous(mallory.id, instance_id, &instance_key, b"x").unwrap()), "code": 0x87},
    ]);
    let valid = |text: &[u8]| {
        serde_json::json!({
            "topic": instance_id.inbox_topic(),
            "hex": hex(alice.seal_to(instance_id, &instance_key, text).unwrap()),
        })
    };
    let cases = serde_json::json!({
        "url": format!("mqtt://{}", broker.mqtt),
        "login": alice.login,
        "secret": alice.auth_secret(),
        "refused": refused,
        "valid": {"4": valid(b"valid over 3.1.1"), "5": valid(b"valid over 5.0")},
    });

    let node = common::node_test(
        "tests/js",
        "mqtt",
        "refusals.test.mjs",
        "SRTEST_JS_CASES",
        &cases,
    );
    common::node_passed(node, 2).await;

    // Each refused envelope was sent exactly once per protocol version: no resend loop.
    for reason in ["bad_header", "not_paired", "sender_spoofed"] {
        assert_eq!(refused_count(&broker, reason), 2, "{reason}");
    }
    // The labels are the broker's fixed words: nothing the client sent (its login, a topic,
    // an id) appears in the metrics.
    let metrics = broker.metrics();
    for client_text in [
        alice.login.clone(),
        alice.id.to_string(),
        bob.id.to_string(),
    ] {
        assert!(!metrics.contains(&client_text), "{client_text} in /metrics");
    }
    // And the valid envelope after the refusals arrived, once per version.
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = common::next_message(&mut agent).await;
        assert_eq!(m.from, alice.id);
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    got.sort();
    assert_eq!(got, ["valid over 3.1.1", "valid over 5.0"]);
}
