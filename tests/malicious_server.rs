//! A server that cheats (issue 4). Here the tests are the server: they rewrite what the
//! directory answers in the broker's own database, and deliver what they like through a man
//! in the middle of the MQTT link. Every client must refuse every trick, each with its own
//! specific error, and still accept what is genuine.

mod common;

use std::time::Duration;

use common::{Broker, Mitm, Probe};
use crypto_box::SecretKey;
use rand_core::OsRng;
use sealrelay_client::crypto::{self, CryptoError, OpenError};
use sealrelay_client::{Client, ClientError, Identity, Message, MqttVersion};
use sealrelay_wire::{KdfParams, KdfRefused, KdfSpec, PrincipalId};
use sqlx::{AnyPool, Row};

/// Rewrites one column of one principal, as a malicious server would.
async fn tamper(db: &AnyPool, id: PrincipalId, column: &str, value: Option<&[u8]>) {
    sqlx::query(&format!(
        "UPDATE principals SET {column} = $1 WHERE id = $2"
    ))
    .bind(value)
    .bind(&id.0[..])
    .execute(db)
    .await
    .unwrap();
}

async fn column(db: &AnyPool, id: PrincipalId, column: &str) -> Option<Vec<u8>> {
    sqlx::query(&format!("SELECT {column} FROM principals WHERE id = $1"))
        .bind(&id.0[..])
        .fetch_one(db)
        .await
        .unwrap()
        .get(0)
}

async fn set_keyring(db: &AnyPool, id: PrincipalId, blob: Option<&[u8]>, version: i64) {
    tamper(db, id, "keyring", blob).await;
    sqlx::query("UPDATE principals SET keyring_version = $1 WHERE id = $2")
        .bind(version)
        .bind(&id.0[..])
        .execute(db)
        .await
        .unwrap();
}

/// The CLI as alice (password in the environment); its state directory persists.
fn as_alice(broker: &Broker, args: &[&str]) -> std::process::Output {
    broker
        .cli()
        .args(args)
        .args(["--user", "alice"])
        .env("SEALRELAY_PASSWORD", "pw-alice")
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_public_key_is_refused_on_both_sides() {
    let broker = Broker::start();
    let api = broker.api();
    let db = broker.database().await;
    let mut alice = broker.user("alice").await;
    let (instance_id, token) = alice.add_instance(&api).await.unwrap();
    let server_key = SecretKey::generate(&mut OsRng).public_key();
    let real_key = column(&db, instance_id, "public_key").await.unwrap();

    // The server answers with a key of its own for the instance. A fresh login (the pins
    // come from the sealed keyring on the server) refuses it, loudly and specifically.
    tamper(&db, instance_id, "public_key", Some(server_key.as_bytes())).await;
    let fresh = Identity::login_user(&api, "alice", "pw-alice")
        .await
        .unwrap();
    let mut console = broker.client(fresh, MqttVersion::V5).await;
    let err = console.send(instance_id, b"secret", 1).await.err().unwrap();
    assert!(
        matches!(err, ClientError::PinMismatch { peer, .. } if peer == instance_id),
        "{err}"
    );
    assert!(err.to_string().contains("not the key pinned"), "{err}");
    let out = as_alice(&broker, &["instance", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("MISMATCH"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = as_alice(&broker, &["send", "--to", &instance_id.to_string(), "hi"]);
    assert!(
        !out.status.success() && stderr(&out).contains("not the key pinned"),
        "{}",
        stderr(&out)
    );
    tamper(&db, instance_id, "public_key", Some(&real_key)).await;

    // The server answers the instance with a key of its own for its owner: the instance
    // refuses to start, since its bundle pins the owner's real key.
    tamper(&db, alice.id, "public_key", Some(server_key.as_bytes())).await;
    let instance = Identity::login_instance(&api, &token).await.unwrap();
    let err = broker
        .try_client(instance, MqttVersion::V5)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ClientError::PinMismatch { peer, .. } if peer == alice.id),
        "{err}"
    );
    // And alice's own login notices its public key is not the one its private key makes.
    let err = Identity::login_user(&api, "alice", "pw-alice")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ClientError::BadKey(id) if id == alice.id),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_keyrings_and_bundles_are_refused() {
    let broker = Broker::start();
    let api = broker.api();
    let db = broker.database().await;
    let alice_id = broker.user("alice").await.id;
    let mut bob = broker.user("bob").await;
    bob.add_instance(&api).await.unwrap();

    // Two instances added through the CLI, which remembers the newest keyring it saw.
    let add = || {
        let out = as_alice(&broker, &["instance", "add"]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        said.lines()
            .find_map(|l| l.strip_prefix("instance "))
            .unwrap_or_else(|| panic!("{said}{}", stderr(&out)))
            .parse::<PrincipalId>()
            .unwrap()
    };
    let first = add();
    let old_keyring = column(&db, alice_id, "keyring").await.unwrap();
    let second = add();
    let keyring = column(&db, alice_id, "keyring").await.unwrap();
    let second_key = column(&db, second, "public_key").await.unwrap();

    // The server replays the older, genuine keyring: the CLI has seen a newer one.
    set_keyring(&db, alice_id, Some(&old_keyring), 1).await;
    let out = as_alice(&broker, &["instance", "list"]);
    assert!(
        !out.status.success() && stderr(&out).contains("older than version 2"),
        "{}",
        stderr(&out)
    );
    // A client without that memory still trusts nothing the old keyring lacks.
    let fresh = Identity::login_user(&api, "alice", "pw-alice")
        .await
        .unwrap();
    assert_eq!(fresh.keyring_version(), 1);
    let err = fresh.check_served_key(second, &second_key).err().unwrap();
    assert!(
        matches!(err, ClientError::NotPinned(id) if id == second),
        "{err}"
    );
    let mut console = broker.client(fresh, MqttVersion::V5).await;
    let err = console.send(second, b"x", 1).await.err().unwrap();
    assert!(matches!(err, ClientError::NotPinned(_)), "{err}");

    // Wiped: the same rollback to the CLI.
    set_keyring(&db, alice_id, None, 0).await;
    let out = as_alice(&broker, &["instance", "list"]);
    assert!(
        stderr(&out).contains("keyring version 0, older than version 2"),
        "{}",
        stderr(&out)
    );
    // A version that is not the sealed one, and bob's keyring under alice's name: refused.
    set_keyring(&db, alice_id, Some(&keyring), 3).await;
    let err = Identity::login_user(&api, "alice", "pw-alice")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ClientError::Crypto(CryptoError::KeyringFormat(_))),
        "{err}"
    );
    let bobs = column(&db, bob.id, "keyring").await.unwrap();
    set_keyring(&db, alice_id, Some(&bobs), 1).await;
    let err = Identity::login_user(&api, "alice", "pw-alice")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ClientError::Crypto(CryptoError::KeyringUnreadable)),
        "{err}"
    );

    // Restored, everything works again.
    set_keyring(&db, alice_id, Some(&keyring), 2).await;
    let out = as_alice(&broker, &["instance", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut alice = Identity::login_user(&api, "alice", "pw-alice")
        .await
        .unwrap();
    alice.check_served_key(second, &second_key).unwrap();

    // An instance's old bundle and key, served again after its re-enrolment: the new token
    // does not open the old bundle, and the console's pin refuses the old key.
    let (old_key, old_bundle) = (
        column(&db, first, "public_key").await.unwrap(),
        column(&db, first, "wrapped_key").await.unwrap(),
    );
    let token = alice.reenrol_instance(&api, first).await.unwrap();
    tamper(&db, first, "public_key", Some(&old_key)).await;
    tamper(&db, first, "wrapped_key", Some(&old_bundle)).await;
    let err = Identity::login_instance(&api, &token).await.err().unwrap();
    assert!(
        matches!(err, ClientError::Crypto(CryptoError::Unwrap)),
        "{err}"
    );
    let err = alice.check_served_key(first, &old_key).err().unwrap();
    assert!(matches!(err, ClientError::PinMismatch { .. }), "{err}");
}

async fn next(client: &mut Client) -> Result<Message, ClientError> {
    tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("an envelope within 5 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_replayed_envelopes_with_valid_headers_are_refused() {
    let broker = Broker::start();
    let api = broker.api();
    let mut alice = broker.user("alice").await;
    let instance = broker.instance_of(&mut alice).await;
    let (me, my_key) = (instance.id, instance.public_key());
    let topic = me.inbox_topic();
    // The instance's link runs through the man in the middle; alice's through the broker.
    let mitm = Mitm::start(broker.mqtt).await;
    let mut instance = Client::connect(api, instance, &mitm.addr.to_string(), MqttVersion::V311)
        .await
        .unwrap();
    let alice_link = Probe::logged_in(broker.mqtt, MqttVersion::V5, &alice).await;
    let server_key = SecretKey::generate(&mut OsRng);

    // Header right in every byte (sender alice, recipient and witness the instance's), body
    // boxed with the server's own key: it does not authenticate as alice.
    let forged = crypto::seal_authenticated(alice.id, &server_key, me, &my_key, b"forged").unwrap();
    mitm.inject(&topic, &forged);
    let err = next(&mut instance).await.err().unwrap();
    assert!(
        matches!(err, ClientError::Open(OpenError::Forged(id)) if id == alice.id),
        "{err}"
    );
    // A genuine envelope of alice's with one bit flipped: the same.
    let mut flipped = alice.seal_to(me, &my_key, b"genuine?").unwrap().to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    mitm.inject(&topic, &flipped);
    assert!(matches!(
        next(&mut instance).await,
        Err(ClientError::Open(OpenError::Forged(_)))
    ));
    // An anonymous sealed box that names alice opens, but is never taken for hers.
    let anonymous = crypto::seal_anonymous(alice.id, me, &my_key, b"anonymous").unwrap();
    mitm.inject(&topic, &anonymous);
    let message = next(&mut instance).await.unwrap();
    assert!(!message.authenticated && message.payload.as_slice() == b"anonymous");
    // Another principal's envelope, delivered here.
    let elsewhere =
        crypto::seal_authenticated(alice.id, &server_key, alice.id, &alice.public_key(), b"x")
            .unwrap();
    mitm.inject(&topic, &elsewhere);
    assert!(matches!(
        next(&mut instance).await,
        Err(ClientError::Open(OpenError::NotForMe(_)))
    ));

    // A genuine envelope through the broker opens; delivered again, it is a replay.
    let genuine = alice.seal_to(me, &my_key, b"genuine").unwrap();
    alice_link.publish(&topic, 1, false, genuine.clone()).await;
    let message = next(&mut instance).await.unwrap();
    assert!(message.authenticated && message.from == alice.id);
    assert_eq!(message.payload.as_slice(), b"genuine");
    mitm.inject(&topic, &genuine);
    assert!(matches!(
        next(&mut instance).await,
        Err(ClientError::Open(OpenError::Replayed(_)))
    ));

    // Serving, the instance's handler sees the genuine envelope and none of the others.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        instance
            .serve(move |m| {
                seen_tx.send(m.payload.to_vec()).unwrap();
                Vec::new()
            })
            .await
    });
    for trick in [&forged[..], &flipped, &anonymous, &elsewhere, &genuine] {
        mitm.inject(&topic, trick);
    }
    let last = alice.seal_to(me, &my_key, b"last").unwrap();
    alice_link.publish(&topic, 1, false, last).await;
    let handled = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        handled, b"last",
        "the first envelope handled is the genuine one"
    );
    assert!(seen.try_recv().is_err());
}

/// A directory that lies about key derivation (issue 24): a real HTTP server on an ephemeral
/// port that answers prelogin with `advertised` and everything else 401, and records what
/// each request carried.
struct LyingDirectory {
    url: String,
    /// Per request: its request line, whether it had an Authorization header, its body.
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, bool, String)>>>,
}

impl LyingDirectory {
    async fn start(advertised: KdfParams) -> LyingDirectory {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then as many body bytes as Content-Length says.
                let (head, body) = loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    request.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= length || n == 0 {
                            break (head.to_owned(), body.to_owned());
                        }
                    } else if n == 0 {
                        break (text, String::new());
                    }
                };
                let line = head.lines().next().unwrap_or_default().to_owned();
                let authorized = head.to_ascii_lowercase().contains("\r\nauthorization:");
                let prelogin = line.starts_with("POST /v1/prelogin ")
                    || line.starts_with("POST /v1/prelogin/previous ");
                log.lock().unwrap().push((line, authorized, body));
                let (status, answer) = if prelogin {
                    let spec = KdfSpec {
                        salt: vec![7; 16],
                        params: advertised,
                    };
                    ("200 OK", serde_json::to_string(&spec).unwrap())
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"error":"unauthorized","message":"lying server"}"#.to_owned(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        LyingDirectory { url, seen }
    }

    /// Every request so far was a prelogin without credentials or anything derived; forgets
    /// them.
    fn only_prelogin_was_sent(&self) {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        assert!(!seen.is_empty(), "the client asked for prelogin");
        for (line, authorized, body) in seen {
            assert!(
                line.starts_with("POST /v1/prelogin"),
                "{line} was sent after a refused derivation"
            );
            assert!(!authorized, "{line} carried an Authorization header");
            assert!(
                !["auth_secret", "key_proof", "wrapped_key"]
                    .iter()
                    .any(|field| body.contains(field)),
                "{line} carried {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lying_directory_gets_no_login_secret_from_weak_or_ruinous_kdf_parameters() {
    let weak = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
    let ruinous = KdfParams {
        memory_kib: 64 * 1_048_576,
        iterations: 3,
        parallelism: 1,
    };
    for (advertised, refused, words) in [
        (
            weak,
            KdfRefused::BelowFloor(weak),
            "weaker key derivation (Argon2id m = 8 KiB, t = 1, p = 1)",
        ),
        (
            ruinous,
            KdfRefused::AboveCeiling(ruinous),
            "costlier key derivation (Argon2id m = 67108864 KiB, t = 3, p = 1)",
        ),
    ] {
        let liar = LyingDirectory::start(advertised).await;
        let api = sealrelay_client::Api::new(&liar.url);
        let typed = |e: ClientError| {
            assert!(
                matches!(e, ClientError::Crypto(CryptoError::KdfRefused(r)) if r == refused),
                "{e}"
            );
            liar.only_prelogin_was_sent();
        };
        typed(
            Identity::login_user(&api, "alice", "pw-alice")
                .await
                .err()
                .unwrap(),
        );
        typed(
            Identity::roll_back_password(&api, "alice", "pw-alice")
                .await
                .err()
                .unwrap(),
        );
        // The CLI, in the user's words: every verb that logs a user in, and registration,
        // which derives at the server's parameters when they are stronger than the floor.
        let dir = tempfile::tempdir().unwrap();
        let mut verbs = vec![
            vec!["instance", "list"],
            vec!["user", "passwd"],
            vec!["user", "rollback"],
        ];
        if advertised == ruinous {
            verbs.push(vec!["user", "register"]);
        }
        for verb in verbs {
            let out = std::process::Command::new(common::BIN)
                .args(&verb)
                .args(["--user", "alice"])
                .env("SEALRELAY_SERVER", &liar.url)
                .env("SEALRELAY_STATE_DIR", dir.path())
                .env("SEALRELAY_PASSWORD", "a long passphrase for the line")
                .env("SEALRELAY_NEW_PASSWORD", "another long passphrase")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let err = stderr(&out);
            assert!(
                !out.status.success()
                    && err.contains(words)
                    && err.contains("the password was not used"),
                "{verb:?}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            liar.only_prelogin_was_sent();
        }
    }
}
