//! `docs/test-vectors.json` against this SDK: every deterministic value is recomputed and
//! compared (auth secrets, verifiers, public keys, witnesses, bundle bytes, envelope
//! headers), and every sealed value is opened and must give back its inputs (wrapped keys,
//! escrow copy, keyring, both envelope kinds). Another language's client checks the same file.

use std::time::Duration;

use crypto_box::SecretKey;
use hex::encode as hex;
use sealrelay_client::crypto::{self, Bundle, Keyring, ReplayGuard, Token};
use sealrelay_wire::envelope::{Header, Kind, Witness};
use sealrelay_wire::{b64, KdfParams, KdfRefused, PrincipalId};
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("../../../docs/test-vectors.json");
    serde_json::from_str(text).expect("docs/test-vectors.json is JSON")
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("hex")
}

fn unb64(v: &Value) -> Vec<u8> {
    b64::decode(v.as_str().expect("a base64 string")).expect("base64")
}

fn id(v: &Value) -> PrincipalId {
    v.as_str().unwrap().parse().unwrap()
}

fn secret_key(v: &Value) -> SecretKey {
    SecretKey::from_bytes(unhex(v).try_into().unwrap())
}

fn verifier(secret: &str) -> String {
    hex(sealrelay_wire::verifier(secret))
}

/// The fields every principal vector shares: its key pair, witness and verifier.
fn check_principal(p: &Value) -> SecretKey {
    let sk = secret_key(&p["secret_key"]);
    assert_eq!(
        hex(sk.public_key().as_bytes()),
        p["public_key"].as_str().unwrap()
    );
    assert_eq!(
        Witness::of(sk.public_key().as_bytes()).to_string(),
        p["witness"].as_str().unwrap()
    );
    let auth = p["auth_secret"].as_str().unwrap();
    assert_eq!(verifier(auth), p["verifier"].as_str().unwrap());
    sk
}

#[test]
fn the_user_vector_derives_and_unwraps() {
    let v = &vectors()["user"];
    let sk = check_principal(v);
    let params: KdfParams = serde_json::from_value(v["kdf"].clone()).unwrap();
    let keys =
        crypto::derive_from_password(v["password"].as_str().unwrap(), &unhex(&v["salt"]), params)
            .unwrap();
    assert_eq!(&*keys.auth_secret(), v["auth_secret"].as_str().unwrap());
    assert_eq!(&*crypto::key_proof(&sk), v["key_proof"].as_str().unwrap());
    let bundle = Bundle::User { secret: sk }.encode();
    assert_eq!(hex(&bundle), v["bundle"].as_str().unwrap());
    let opened = keys
        .unwrap(id(&v["id"]), &unb64(&v["wrapped_key_b64"]))
        .unwrap();
    assert_eq!(&*opened, &*bundle);
    // Bound to the id: the same blob under another principal's id does not open.
    assert!(keys
        .unwrap(PrincipalId([0; 16]), &unb64(&v["wrapped_key_b64"]))
        .is_err());
}

#[test]
fn the_instance_vector_derives_from_its_token_and_its_owner_copy_opens() {
    let all = vectors();
    let (v, user) = (&all["instance"], &all["user"]);
    let sk = check_principal(v);
    let token: Token = v["token"].as_str().unwrap().parse().unwrap();
    let keys = token.keys();
    assert_eq!(&*keys.auth_secret(), v["auth_secret"].as_str().unwrap());
    let owner_sk = secret_key(&user["secret_key"]);
    let bundle = Bundle::Instance {
        secret: sk,
        owner: id(&user["id"]),
        owner_public: owner_sk.public_key(),
    }
    .encode();
    assert_eq!(hex(&bundle), v["bundle"].as_str().unwrap());
    let instance = id(&v["id"]);
    assert_eq!(
        &*keys
            .unwrap(instance, &unb64(&v["wrapped_key_b64"]))
            .unwrap(),
        &*bundle
    );
    let escrow = crypto::escrow_keys(&owner_sk);
    assert_eq!(
        &*escrow
            .unwrap(instance, &unb64(&v["owner_copy_b64"]))
            .unwrap(),
        &*bundle
    );
}

#[test]
fn the_keyring_vectors_open_to_their_version_pins_and_names() {
    let all = vectors();
    for format in ["keyring", "keyring_pins_only"] {
        let (v, user) = (&all[format], &all["user"]);
        let ring = Keyring::open(
            id(&v["owner"]),
            &secret_key(&user["secret_key"]),
            &unb64(&v["sealed_b64"]),
        )
        .unwrap();
        assert_eq!(ring.version, v["version"].as_u64().unwrap());
        let entries = v["entries"].as_array().unwrap();
        assert_eq!(ring.len(), entries.len());
        for e in entries {
            let pinned = ring.get(id(&e["id"])).expect("pinned");
            assert_eq!(hex(pinned.as_bytes()), e["public_key"].as_str().unwrap());
            let name = e["name"].as_str().unwrap();
            assert_eq!(
                ring.name(id(&e["id"])),
                Some(name).filter(|n| !n.is_empty()),
                "{format}"
            );
        }
    }
}

#[test]
fn both_envelope_kinds_and_a_reply_parse_and_open() {
    let all = vectors();
    let principal_key = |who: PrincipalId| {
        ["user", "instance"]
            .iter()
            .map(|p| &all[*p])
            .find(|p| id(&p["id"]) == who)
            .map(|p| secret_key(&p["secret_key"]))
            .expect("a principal of the vectors")
    };
    for e in all["envelopes"].as_array().unwrap() {
        let bytes = unhex(&e["envelope"]);
        let header = Header::parse(&bytes).unwrap();
        let kind = match e["kind"].as_u64().unwrap() {
            1 => Kind::Anonymous,
            _ => Kind::Authenticated,
        };
        let (sender, recipient) = (id(&e["sender"]), id(&e["recipient"]));
        let recipient_sk = principal_key(recipient);
        assert_eq!(
            (
                header.version,
                header.kind,
                header.sender,
                header.recipient,
                header.witness
            ),
            (
                e["version"].as_u64().unwrap() as u8,
                kind,
                sender,
                recipient,
                Witness::of(recipient_sk.public_key().as_bytes())
            )
        );
        // The vectors are older than the replay window (sealed at `sent_at_ms`, when the file
        // was made); a guard as wide as time opens them, every other check applying.
        let mut guard = ReplayGuard::new(Duration::from_secs(u64::MAX / 2_000));
        let sender_pk = principal_key(sender).public_key();
        let opened = crypto::open(
            recipient,
            &recipient_sk,
            &bytes,
            Some(&sender_pk),
            &mut guard,
        )
        .unwrap();
        assert_eq!(opened.payload.as_slice(), unhex(&e["plaintext"]).as_slice());
        assert_eq!(opened.authenticated, kind == Kind::Authenticated);
        if kind == Kind::Authenticated {
            assert_eq!(
                opened.message_id.map(hex).as_deref(),
                e["message_id"].as_str()
            );
            assert_eq!(
                opened.in_reply_to.map(hex).as_deref(),
                e["in_reply_to"].as_str()
            );
            assert_eq!(opened.sent_at_ms, e["sent_at_ms"].as_u64());
        }
    }
}

#[test]
fn the_kdf_bounds_are_the_protocols_and_refuse_each_case_as_listed() {
    let v = &vectors()["kdf_bounds"];
    let params = |p: &Value| -> KdfParams { serde_json::from_value(p.clone()).unwrap() };
    assert_eq!(params(&v["floor"]), sealrelay_wire::CLIENT_FLOOR);
    assert_eq!(params(&v["ceiling"]), sealrelay_wire::CLIENT_CEILING);
    for case in v["cases"].as_array().unwrap() {
        let asked = params(&case["kdf"]);
        let label = |r: &KdfRefused| match r {
            KdfRefused::BelowFloor(_) => "below_floor",
            KdfRefused::AboveCeiling(_) => "above_ceiling",
        };
        let checked = asked.within_client_bounds();
        assert_eq!(
            checked.as_ref().err().map(label),
            case["refused"].as_str(),
            "{asked:?}"
        );
        // A refused case is refused by the SDK's derivation itself, before any work (the
        // ceiling case would otherwise take a gigabyte and many seconds).
        if let Err(refused) = checked {
            match crypto::derive_from_password("pw", &[0x5a; 16], asked) {
                Err(crypto::CryptoError::KdfRefused(r)) => assert_eq!(r, refused),
                _ => panic!("{asked:?} was derived with"),
            }
        }
    }
}
