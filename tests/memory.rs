//! The broker's memory holds no secret after its check (issue 24). A user and an instance
//! log in over MQTT, MQTTS and WSS and stay connected; another user completes a reset with
//! an operator's code over HTTPS; the operator token is used. One second later the test
//! reads every private writable mapping of the live broker process (`/proc/PID/mem`, as the
//! same user or root) and searches it for each secret in every form it travelled in: the
//! text, the raw bytes it encodes, their hex, their base64, and the text inside a base64
//! encoding at any alignment (an HTTP Basic header). A canary that is meant to be there (a
//! login name and a verifier the broker keeps) proves the scan reads the right memory.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use common::{line_after, Broker, FAST_KDF};
use sealrelay_client::{Client, Identity, MqttVersion};
use sealrelay_wire::{b64, ResetCode};

/// The private writable mappings of process `pid`, read whole: heap, stacks, anonymous
/// memory, the writable data of the binary.
fn private_memory(pid: u32) -> Vec<(String, Vec<u8>)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .expect("/proc/PID/mem of the broker: run the test as the broker's user or root");
    let mut regions = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (range, perms) = (fields[0], fields[1]);
        if !perms.starts_with("rw") || !perms.ends_with('p') {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut bytes = vec![0u8; (end - start) as usize];
        // A region can vanish or shrink between reading maps and reading it: take what reads.
        if mem.seek(SeekFrom::Start(start)).is_ok() {
            let mut filled = 0;
            while filled < bytes.len() {
                match mem.read(&mut bytes[filled..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => filled += n,
                }
            }
            bytes.truncate(filled);
        }
        regions.push((line.to_owned(), bytes));
    }
    regions
}

/// Every form `secret` (a printable secret) may have taken: its text; if it is base64url,
/// the bytes it encodes, their hex and standard base64; and the middle of its own base64
/// encoding at each of the three alignments it can start at inside a longer encoded string
/// (the Basic header `base64(login:secret)`).
fn forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    let mut forms = vec![("text".to_owned(), secret.as_bytes().to_vec())];
    let tail = secret.rsplit('.').next().unwrap_or(secret);
    let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, tail).ok();
    if let Some(raw) = raw.filter(|raw| raw.len() >= 16) {
        forms.push(("raw bytes".into(), raw.clone()));
        forms.push(("hex".into(), hex::encode(&raw).into_bytes()));
        forms.push(("HEX".into(), hex::encode_upper(&raw).into_bytes()));
        forms.push(("base64".into(), b64::encode(&raw).into_bytes()));
    }
    for shift in 0..3 {
        let mut padded = vec![b'x'; shift];
        padded.extend_from_slice(secret.as_bytes());
        let encoded = b64::encode(&padded);
        // Characters that depend on the padding or on what follows are left out.
        let start = if shift == 0 {
            0
        } else {
            (shift * 4).div_ceil(3)
        };
        let end = (padded.len() / 3) * 4;
        forms.push((
            format!("inside base64 at offset {shift}"),
            encoded.as_bytes()[start..end].to_vec(),
        ));
    }
    forms
}

/// Where `needle` occurs in the broker's memory, as "mapping +offset" lines.
fn find(memory: &[(String, Vec<u8>)], needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for (mapping, bytes) in memory {
        for offset in memchr::memmem::find_iter(bytes, needle) {
            let context =
                &bytes[offset.saturating_sub(48)..(offset + needle.len() + 48).min(bytes.len())];
            found.push(format!(
                "{mapping} +{offset:#x}: {}",
                String::from_utf8_lossy(context).escape_debug()
            ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_stays_in_the_broker_memory_after_its_check() {
    // Not dumpable by default: /proc/PID/mem is then readable by root only, so a test run
    // as another user lets the broker stay dumpable (what it holds is the same either way).
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let env: &[(&str, &str)] = if root {
        &[]
    } else {
        &[("SEALRELAY_SERVER_ALLOW_CORE_DUMPS", "true")]
    };
    let broker = Broker::start_with(env);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", broker.pid())).unwrap();
    if root {
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(
            core.split_whitespace().nth(4) == Some("0"),
            "core dumps are off by default: {core}"
        );
    }
    let api = broker.api();
    let canary_login = "canary-login-7d1e";
    let password = "a long passphrase of alice";
    let mut alice = Identity::register_user(&api, canary_login, password, FAST_KDF)
        .await
        .unwrap();
    let user_secret = alice.auth_secret().to_owned();
    let key_proof = alice.key_proof().to_string();
    let (instance_id, token) = alice.add_instance(&api).await.unwrap();
    let instance_secret = token.keys().auth_secret().to_string();
    let token_text = token.reveal().to_string();

    // Both log in over every MQTT transport and stay connected while the memory is read.
    let ca = broker.dev_cert();
    let urls = [
        format!("mqtt://{}", broker.mqtt),
        format!("mqtts://127.0.0.1:{}", broker.mqtts.port()),
        format!("wss://127.0.0.1:{}/mqtt", broker.wss.port()),
    ];
    let mut live: Vec<Client> = Vec::new();
    for url in &urls {
        let endpoint = sealrelay_client::Broker::parse(url, Some(&ca)).unwrap();
        let user = Identity::login_user(&api, canary_login, password)
            .await
            .unwrap();
        live.push(
            Client::connect_to(api.clone(), user, endpoint.clone(), MqttVersion::V5)
                .await
                .unwrap(),
        );
        let instance = Identity::login_instance(&api, &token).await.unwrap();
        live.push(
            Client::connect_to(api.clone(), instance, endpoint, MqttVersion::V311)
                .await
                .unwrap(),
        );
    }
    // Traffic after the logins, as in a real session.
    live[0]
        .send(instance_id, b"after the login", 1)
        .await
        .unwrap();

    // Another user completes an operator's reset, over the API's TLS listener: the code,
    // then a new login secret and key proof. The operator token authorises the reset.
    let api = sealrelay_client::Api::with_ca(
        &format!("https://127.0.0.1:{}", broker.https.port()),
        Some(&ca),
    )
    .unwrap();
    let bob = Identity::register_user(&api, "bob", "a long passphrase of bob", FAST_KDF)
        .await
        .unwrap();
    drop(bob);
    let code_text = line_after(&broker.admin_reset("bob"), "reset-code ");
    let code: ResetCode = code_text.parse().unwrap();
    let (bob, _) =
        Identity::complete_reset(&api, "bob", &code, "a new passphrase of bob", FAST_KDF)
            .await
            .unwrap();
    let bob_secret = bob.auth_secret().to_owned();
    let bob_proof = bob.key_proof().to_string();
    let operator_token = broker.admin_token();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = private_memory(broker.pid());
    let scanned: usize = memory.iter().map(|(_, b)| b.len()).sum();

    // The canaries are meant to be there: the login name in the directory's cache, the
    // verifier of the user's login secret in its credentials.
    assert!(
        !find(&memory, canary_login.as_bytes()).is_empty(),
        "the scan ({scanned} bytes) does not find the login name the broker must hold"
    );
    assert!(
        !find(&memory, &sealrelay_wire::verifier(&user_secret)).is_empty(),
        "the scan ({scanned} bytes) does not find the verifier the broker must hold"
    );

    let secrets = [
        ("the user's login secret", user_secret.as_str()),
        ("the user's key proof", key_proof.as_str()),
        ("the instance's login secret", instance_secret.as_str()),
        ("the instance token", token_text.as_str()),
        ("the used reset code", code_text.as_str()),
        ("the reset user's new login secret", bob_secret.as_str()),
        ("the reset user's key proof", bob_proof.as_str()),
        ("the operator token", operator_token.as_str()),
    ];
    let mut lingering = Vec::new();
    for (what, secret) in secrets {
        for (form, needle) in forms(secret) {
            for place in find(&memory, &needle) {
                lingering.push(format!("{what} ({form}) at {place}"));
            }
        }
    }
    assert!(
        lingering.is_empty(),
        "{} copies of secrets in {scanned} bytes of the broker's memory:\n{}",
        lingering.len(),
        lingering.join("\n")
    );
    drop(live);
}
