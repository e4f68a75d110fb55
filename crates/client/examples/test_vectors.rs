//! Writes `docs/test-vectors.json`: fixed passwords, salts, KDF parameters, keys, ids and
//! plaintexts, and the exact bytes the SDK makes from them — auth secrets, verifiers,
//! witnesses, bundles, wrapped keys, escrow copies, keyrings, both envelope kinds, and the
//! client's KDF bounds with a case on each side of each.
//! Nonces (and the sealed box's ephemeral key) are random when the file is made and recorded
//! in the outputs; a client in another language checks every vector in the opening
//! direction, and the deterministic ones (KDF, verifier, witness, bundle bytes, header) both
//! ways. `crates/client/tests/vectors.rs` checks the committed file against this SDK.
//!
//!     cargo run -p sealrelay-client --example test_vectors > docs/test-vectors.json

use crypto_box::{PublicKey, SecretKey};
use hex::encode as hex;
use sealrelay_client::crypto::{self, Bundle, Keyring, Token};
use sealrelay_wire::envelope::Witness;
use sealrelay_wire::{b64, KdfParams, KdfRefused, PrincipalId, CLIENT_CEILING, CLIENT_FLOOR};
use serde_json::json;

const KDF: KdfParams = KdfParams {
    memory_kib: 19_456,
    iterations: 2,
    parallelism: 1,
};

fn key(fill: u8) -> SecretKey {
    SecretKey::from_bytes([fill; 32])
}

fn verifier(secret: &str) -> String {
    hex(sealrelay_wire::verifier(secret))
}

fn public(k: &SecretKey) -> PublicKey {
    k.public_key()
}

fn main() {
    let user_id = PrincipalId([0x11; 16]);
    let instance_id = PrincipalId([0x22; 16]);
    let peer_id = PrincipalId([0x33; 16]);
    let (user_sk, instance_sk, peer_sk) = (key(0x41), key(0x42), key(0x43));
    let password = "correct horse battery staple";
    let salt = [0x5a; 16];

    let user_keys = crypto::derive_from_password(password, &salt, KDF).expect("KDF");
    let user_bundle = Bundle::User {
        secret: user_sk.clone(),
    }
    .encode();
    let user_auth = user_keys.auth_secret();

    let token: Token = format!("srt1.{instance_id}.{}", b64::encode_url(&[0x7e; 32]))
        .parse()
        .expect("token");
    let token_keys = token.keys();
    let instance_bundle = Bundle::Instance {
        secret: instance_sk.clone(),
        owner: user_id,
        owner_public: public(&user_sk),
    }
    .encode();
    let token_auth = token_keys.auth_secret();

    let mut ring = Keyring::default();
    ring.version = 7;
    ring.pin(instance_id, &public(&instance_sk));
    ring.pin(peer_id, &public(&peer_sk));
    ring.set_name(instance_id, "Press line 7 — Zürich")
        .expect("a valid name");

    let kind1 = crypto::seal_anonymous(user_id, instance_id, &public(&instance_sk), b"status?")
        .expect("seal");
    let (kind2, request_id) =
        crypto::Sealer::new(user_id, &user_sk, instance_id, &public(&instance_sk))
            .seal_message(b"restart line 3", None)
            .expect("seal");
    let (reply, reply_id) =
        crypto::Sealer::new(instance_id, &instance_sk, user_id, &public(&user_sk))
            .seal_message(b"line 3 restarted", Some(request_id))
            .expect("seal");
    // Version 1 (protocol §4.3), as an older console asks and as it must be answered: no
    // reply field inside.
    let (old_request, old_request_id) =
        crypto::Sealer::new(user_id, &user_sk, instance_id, &public(&instance_sk))
            .seal_in(1, b"status of line 3", None)
            .expect("seal");
    let (old_reply, old_reply_id) =
        crypto::Sealer::new(instance_id, &instance_sk, user_id, &public(&user_sk))
            .seal_in(1, b"line 3 running", Some(old_request_id))
            .expect("seal");
    // When each kind-2 envelope was sealed: it is inside the box, and long outside the
    // 5-minute window by the time anyone checks the file.
    let sent_at = |envelope: &[u8], to: PrincipalId, to_sk: &SecretKey, from_sk: &SecretKey| {
        let mut as_wide_as_time =
            crypto::ReplayGuard::new(std::time::Duration::from_secs(u64::MAX / 2_000));
        crypto::open(
            to,
            to_sk,
            envelope,
            Some(&from_sk.public_key()),
            &mut as_wide_as_time,
        )
        .expect("the vector opens")
        .sent_at_ms
    };

    // The client bounds (protocol §2.1), and one case per way past them.
    let kdf = |memory_kib, iterations, parallelism| KdfParams {
        memory_kib,
        iterations,
        parallelism,
    };
    let bound_cases: Vec<_> = [
        kdf(19_456, 2, 1),
        kdf(1_048_576, 10, 16),
        kdf(8, 1, 1),
        kdf(19_455, 2, 1),
        kdf(65_536, 1, 1),
        kdf(65_536, 3, 0),
        kdf(1_048_577, 3, 1),
        kdf(65_536, 11, 1),
        kdf(65_536, 3, 17),
    ]
    .into_iter()
    .map(|params| {
        let refused = match params.within_client_bounds() {
            Ok(_) => None,
            Err(KdfRefused::BelowFloor(_)) => Some("below_floor"),
            Err(KdfRefused::AboveCeiling(_)) => Some("above_ceiling"),
        };
        json!({"kdf": params, "refused": refused})
    })
    .collect();

    let vectors = json!({
        "kdf_bounds": {
            "floor": CLIENT_FLOOR,
            "ceiling": CLIENT_CEILING,
            "cases": bound_cases,
        },
        "about": "sealrelay test vectors (docs/protocol.md). Byte strings are hex unless the field name ends in _b64 (standard base64) or is an auth secret / token (their printable forms). Secret keys are X25519 scalars as stored by libsodium (32 bytes). Made by `cargo run -p sealrelay-client --example test_vectors`; checked by crates/client/tests/vectors.rs.",
        "user": {
            "id": user_id.to_string(),
            "password": password,
            "salt": hex(salt),
            "kdf": KDF,
            "auth_secret": &*user_auth,
            "verifier": verifier(&user_auth),
            "secret_key": hex(user_sk.to_bytes()),
            "public_key": hex(public(&user_sk).as_bytes()),
            "witness": Witness::of(public(&user_sk).as_bytes()).to_string(),
            "bundle": hex(&user_bundle),
            "wrapped_key_b64": b64::encode(&user_keys.wrap(user_id, &user_bundle)),
            "key_proof": &*crypto::key_proof(&user_sk),
        },
        "instance": {
            "id": instance_id.to_string(),
            "token": &*token.reveal(),
            "auth_secret": &*token_auth,
            "verifier": verifier(&token_auth),
            "secret_key": hex(instance_sk.to_bytes()),
            "public_key": hex(public(&instance_sk).as_bytes()),
            "witness": Witness::of(public(&instance_sk).as_bytes()).to_string(),
            "bundle": hex(&instance_bundle),
            "wrapped_key_b64": b64::encode(&token_keys.wrap(instance_id, &instance_bundle)),
            "owner_copy_b64": b64::encode(&crypto::escrow_keys(&user_sk).wrap(instance_id, &instance_bundle)),
        },
        "keyring": {
            "owner": user_id.to_string(),
            "version": ring.version,
            "entries": [
                {"id": instance_id.to_string(), "public_key": hex(public(&instance_sk).as_bytes()), "name": "Press line 7 — Zürich"},
                {"id": peer_id.to_string(), "public_key": hex(public(&peer_sk).as_bytes()), "name": ""},
            ],
            "sealed_b64": b64::encode(&ring.seal(user_id, &user_sk)),
        },
        // The same pins sealed in format 1 (no names) by an earlier SDK: still opened.
        "keyring_pins_only": {
            "owner": user_id.to_string(),
            "version": ring.version,
            "entries": [
                {"id": instance_id.to_string(), "public_key": hex(public(&instance_sk).as_bytes()), "name": ""},
                {"id": peer_id.to_string(), "public_key": hex(public(&peer_sk).as_bytes()), "name": ""},
            ],
            "sealed_b64": "RsA9jiJfhg6Jsj1wB8N0BhOdQc5G6PVzdfqjFMHMo/q8NiU8RnXwVPHQ7I5viwSR6bPDW2DKZ5tlqFvnTGGHkGf29FpGb4MnuV/qNiGkRoiIT91CdVhBxCHEEXaU846NqMHJCzrbPGOzrvQLL8HzzWBmNVtT3ObcO11KVM/c9OGIjnlRd9f9aHWLeO7/m6GJ6rC6+og=",
        },
        "envelopes": [
            {
                "version": 2,
                "kind": 1,
                "sender": user_id.to_string(),
                "recipient": instance_id.to_string(),
                "plaintext": hex(b"status?"),
                "envelope": hex(&kind1),
            },
            {
                "version": 2,
                "kind": 2,
                "sender": user_id.to_string(),
                "recipient": instance_id.to_string(),
                "plaintext": hex(b"restart line 3"),
                "message_id": hex(request_id),
                "in_reply_to": null,
                "sent_at_ms": sent_at(&kind2, instance_id, &instance_sk, &user_sk),
                "envelope": hex(&kind2),
            },
            {
                "version": 2,
                "kind": 2,
                "sender": instance_id.to_string(),
                "recipient": user_id.to_string(),
                "plaintext": hex(b"line 3 restarted"),
                "message_id": hex(reply_id),
                "in_reply_to": hex(request_id),
                "sent_at_ms": sent_at(&reply, user_id, &user_sk, &instance_sk),
                "envelope": hex(&reply),
            },
            {
                "version": 1,
                "kind": 2,
                "sender": user_id.to_string(),
                "recipient": instance_id.to_string(),
                "plaintext": hex(b"status of line 3"),
                "message_id": hex(old_request_id),
                "in_reply_to": null,
                "sent_at_ms": sent_at(&old_request, instance_id, &instance_sk, &user_sk),
                "envelope": hex(&old_request),
            },
            {
                "version": 1,
                "kind": 2,
                "sender": instance_id.to_string(),
                "recipient": user_id.to_string(),
                "plaintext": hex(b"line 3 running"),
                "message_id": hex(old_reply_id),
                "in_reply_to": null,
                "sent_at_ms": sent_at(&old_reply, user_id, &user_sk, &instance_sk),
                "envelope": hex(&old_reply),
            },
        ],
    });
    println!("{}", serde_json::to_string_pretty(&vectors).expect("json"));
}
