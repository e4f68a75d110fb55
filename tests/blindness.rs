//! The broker cannot read what it relays: a canary sent through it appears in none of
//! the bytes it receives in clear, in no file it writes and in no log line; the password
//! and the instance token never reach it in any request, in any common encoding.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::Broker;
use sealrelay_client::{Api, Client, Identity, MqttVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Tape = Arc<Mutex<Vec<u8>>>;

/// A TCP relay that records every byte passing in either direction.
async fn recording_proxy(upstream: std::net::SocketAddr, tape: Tape) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            for (mut from, mut to) in [(client_read, server_write), (server_read, client_write)] {
                let tape = tape.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf).await {
                        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        tape.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = to.shutdown().await;
                });
            }
        }
    });
    addr
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A secret as it might leak: raw, hex, base64 and base64url.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        STANDARD.encode(secret).into_bytes(),
        URL_SAFE_NO_PAD.encode(secret).into_bytes(),
    ]
}

fn every_file_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(every_file_under(&path));
        } else {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

/// The files holding the broker's directory: its SQLite file (read with the rest of its
/// directory), or, on PostgreSQL, its database's files and the server's write-ahead log
/// (where rows land first: the segments written since `since`), after a checkpoint.
async fn stored_rows(broker: &Broker, since: std::time::SystemTime) -> Vec<(String, Vec<u8>)> {
    if broker.directory_url().is_none() {
        assert!(broker.db_path().exists());
        return Vec::new();
    }
    let data = std::path::PathBuf::from(
        std::env::var("SRTEST_POSTGRES_DATA")
            .expect("SRTEST_POSTGRES_DATA: the server's data directory"),
    );
    let db = broker.database().await;
    sqlx::query("CHECKPOINT").execute(&db).await.unwrap();
    let oid: i64 = sqlx::query_scalar(
        "SELECT CAST(oid AS BIGINT) FROM pg_database WHERE datname = current_database()",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let mut files = every_file_under(&data.join("base").join(oid.to_string()));
    assert!(!files.is_empty(), "the database's files");
    for segment in std::fs::read_dir(data.join("pg_wal")).unwrap() {
        let path = segment.unwrap().path();
        let written = std::fs::metadata(&path).and_then(|m| m.modified());
        if path.is_file() && written.is_ok_and(|at| at >= since) {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_never_holds_payloads_passwords_or_tokens() {
    let started = std::time::SystemTime::now();
    let mut broker = Broker::start();
    let tape: Tape = Arc::default();
    let http = recording_proxy(broker.http, tape.clone()).await;
    let mqtt = recording_proxy(broker.mqtt, tape.clone()).await;
    let api = Api::new(&format!("http://{http}"));

    let canary = "CANARY-7f3a9c-the-broker-must-never-see-this";
    let password = "correct-horse-battery-staple-canary";
    let mut user = Identity::register_user(&api, "alice", password, common::FAST_KDF)
        .await
        .unwrap();
    let (instance_id, token) = user.add_instance(&api).await.unwrap();
    let token_text = token.reveal().to_string();
    let token_secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token_text.rsplit('.').next().unwrap())
        .unwrap();
    let user = Identity::login_user(&api, "alice", password).await.unwrap();
    let instance = Identity::login_instance(&api, &token).await.unwrap();

    for version in [MqttVersion::V5, MqttVersion::V311] {
        let mut agent = Client::connect(
            api.clone(),
            Identity::login_instance(&api, &token).await.unwrap(),
            &mqtt.to_string(),
            version,
        )
        .await
        .unwrap();
        tokio::spawn(async move {
            let _ = agent
                .serve(|m| [m.payload.as_slice(), b"-reply"].concat())
                .await;
        });
        let mut console = Client::connect(
            api.clone(),
            Identity::login_user(&api, "alice", password).await.unwrap(),
            &mqtt.to_string(),
            version,
        )
        .await
        .unwrap();
        let reply = console
            .request(instance_id, canary.as_bytes(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            reply.as_slice(),
            format!("{canary}-reply").as_bytes(),
            "the canary really went through"
        );
        console.close().await;
    }
    let wire = tape.lock().unwrap().clone();
    // Positive controls: the detector does find what really crosses — the topic and the
    // derived login secret (the MQTT password field carries it raw).
    assert!(
        contains(&wire, b"sr/v1/inbox/"),
        "the proxy saw the MQTT traffic"
    );
    assert!(
        contains(&wire, user.auth_secret().as_bytes()),
        "the proxy saw CONNECT's password field"
    );
    assert!(contains(&wire, instance.auth_secret().as_bytes()));
    for leak in encodings(canary.as_bytes()) {
        assert!(!contains(&wire, &leak), "canary crossed the wire in clear");
    }
    for leak in encodings(password.as_bytes())
        .into_iter()
        .chain(encodings(&token_secret))
        .chain([token_text.clone().into_bytes()])
    {
        assert!(
            !contains(&wire, &leak),
            "a password or token reached the server"
        );
    }

    let mut files = stored_rows(&broker, started).await;
    broker.stop();
    files.extend(every_file_under(broker.dir.path()));
    assert!(files.iter().any(
        |(name, bytes)| name.ends_with("broker.log") && contains(bytes, b"sealrelay listening")
    ));
    // Positive control: the scan reads stored rows (the public key is stored, in clear).
    assert!(files
        .iter()
        .any(|(_, bytes)| contains(bytes, user.public_key().as_bytes())));
    for (name, bytes) in &files {
        for leak in encodings(canary.as_bytes())
            .into_iter()
            .chain(encodings(password.as_bytes()))
            .chain(encodings(&token_secret))
        {
            assert!(
                !contains(bytes, &leak),
                "{name} holds a canary, password or token"
            );
        }
    }
}
