//! A live session fed arbitrary packet sequences after a valid CONNECT: the real broker runs
//! in this process (its own actix system, SQLite in a temporary directory, MQTT and HTTP on
//! ephemeral ports) with one user and one instance paired with it, made through the HTTP
//! API. Each input is one connection: a CONNECT as that user (MQTT 5 or 3.1.1, by the first
//! byte), then the rest of the input as sent bytes, then end of stream; the reply is read
//! until the broker closes. Every 64 inputs a fresh connection must still get CONNACK and
//! PINGRESP within 5 s. A panic anywhere in the broker aborts the process (libfuzzer's
//! panic hook), a hang fails the liveness check, an allocation past `-rss_limit_mb` is
//! reported by libFuzzer.
//!
//! The ids are fixed so a corpus can hold envelopes with valid headers: the user is
//! 11…11, the instance 22…22 (the instance's inbox `sr/v1/inbox/2222…2222`); seeds for
//! the corpus are in `fuzz/seeds/mqtt_session`.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sealrelay_broker::config::Config;

/// actix-router leaks its route names on purpose, and the broker started here lives as long
/// as the process: leak checks could only report those. Memory growth is still caught, by
/// `-rss_limit_mb`.
#[no_mangle]
pub extern "C" fn __lsan_default_options() -> *const std::ffi::c_char {
    c"detect_leaks=0".as_ptr()
}

const USER: &str = "fuzzer";
const USER_ID: &str = "11111111111111111111111111111111";
const INSTANCE_ID: &str = "22222222222222222222222222222222";
/// A login secret like any other (43 characters); the broker only keeps its hash.
const SECRET: &str = "fuzz-login-secret-0123456789abcdefghijklmno";

struct Broker {
    mqtt: SocketAddr,
    /// The temporary directory lives as long as the process.
    _dir: tempfile::TempDir,
}

fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[mqtt]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             connects_per_ip_per_minute = 1000000000\nconnects_per_principal_per_minute = 1000000000\n\
             max_refusals_per_minute = 1000000000\npacket_timeout_secs = 2\n\
             [http]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             [mqtts]\nlisten = \"\"\n[ws]\nlisten = \"\"\n[wss]\nlisten = \"\"\n[https]\nlisten = \"\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{0}/admin.token\"\n\
             [directory]\ndatabase = \"{0}/sealrelay.db\"\nprelogin_key_file = \"{0}/prelogin.key\"\n\
             [kdf]\nmemory_kib = 19456\niterations = 2\n[log]\nlevel = \"off\"\n",
            dir.path().display()
        );
        let config = Config::from_layers(Some(("fuzz.toml", &text)), std::iter::empty()).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let running = sealrelay_broker::server::start(config).await.unwrap();
                let addresses = &running.addresses;
                ready_tx.send((addresses.mqtt, addresses.http)).unwrap();
                // Serves for as long as the fuzzer runs.
                std::future::pending::<()>().await;
                drop(running);
            })
        });
        let (mqtt, api) = ready_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let blob = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB";
        let key = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
        let kdf = r#"{"salt": "AAAAAAAAAAAAAAAAAAAAAA==", "memory_kib": 19456, "iterations": 2, "parallelism": 1}"#;
        let register = format!(
            r#"{{"name": "{USER}", "user_id": "{USER_ID}", "public_key": "{key}", "wrapped_key": "{blob}", "auth_secret": "{SECRET}", "kdf": {kdf}}}"#
        );
        http(api, "POST", "/v1/users", None, &register);
        let add = format!(
            r#"{{"instance_id": "{INSTANCE_ID}", "public_key": "{key}", "wrapped_key": "{blob}", "auth_secret": "{SECRET}", "owner_copy": "{blob}"}}"#
        );
        http(api, "POST", "/v1/instances", Some((USER, SECRET)), &add);
        Broker { mqtt, _dir: dir }
    })
}

/// One HTTP/1.1 request; panics unless the answer is 2xx.
fn http(at: SocketAddr, method: &str, path: &str, login: Option<(&str, &str)>, body: &str) {
    let auth = login.map_or(String::new(), |(user, secret)| {
        let text = format!("{user}:{secret}");
        format!("Authorization: Basic {}\r\n", sealrelay_wire::b64::encode(text.as_bytes()))
    });
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = TcpStream::connect(at).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 2"), "{method} {path}: {answer}");
}

/// A CONNECT as the fuzz user: MQTT 5 (protocol level 5) or 3.1.1, with a clean session
/// or a persistent one (3.1.1 Clean Session 0; MQTT 5 Clean Start 0 and a Session Expiry
/// Interval of 60 s), which the next persistent input resumes.
fn connect(v5: bool, persistent: bool) -> Vec<u8> {
    let flags = if persistent { 0xC0 } else { 0xC2 };
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', if v5 { 5 } else { 4 }, flags, 0x00, 0x00];
    match (v5, persistent) {
        (true, true) => body.extend_from_slice(&[0x05, 0x11, 0x00, 0x00, 0x00, 0x3C]),
        (true, false) => body.push(0x00),
        (false, _) => {}
    }
    for field in ["fuzz", USER, SECRET] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// Sends `bytes` on a fresh connection after a CONNECT, ends the stream and reads the reply
/// until the broker closes (or 3 s pass); returns what came back.
fn exchange(v5: bool, persistent: bool, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(broker().mqtt).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = tcp.write_all(&connect(v5, persistent));
    let _ = tcp.write_all(bytes);
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply);
    reply
}

fuzz_target!(|data: &[u8]| {
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    exchange(first & 1 == 1, first & 2 == 2, rest);
    if INPUTS.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
        // Still serving: CONNACK (0x20 …) then PINGRESP (0xD0 0x00) to a PINGREQ.
        let reply = exchange(true, false, &[0xC0, 0x00]);
        assert!(
            reply.first() == Some(&0x20) && reply.windows(2).any(|w| w == [0xD0, 0x00]),
            "the broker stopped serving: {reply:02x?}"
        );
    }
});
