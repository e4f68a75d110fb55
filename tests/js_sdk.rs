//! The JavaScript SDK (`sdk/js`, node's test runner) against a real broker and the Rust SDK:
//! a user registered from JavaScript logs in with the Rust SDK and gets the same key, and a
//! user the Rust SDK registered logs in from JavaScript — byte-compatible key derivation,
//! wrapping and HTTP bodies in both directions. Packages: `npm ci --prefix sdk/js`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Broker, FAST_KDF};
use sealrelay_client::Identity;

#[tokio::test(flavor = "multi_thread")]
async fn users_registered_in_either_sdk_log_in_with_the_other() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/js");
    assert!(
        dir.join("node_modules/libsodium-wrappers-sumo").is_dir(),
        "the JavaScript SDK's packages are not installed: run `npm ci --prefix sdk/js` (.ci/run does)"
    );
    let broker = Broker::start();
    let password = "a password both sides derive alike";
    let rust = Identity::register_user(&broker.api(), "from-rust", password, FAST_KDF)
        .await
        .unwrap();
    let out = broker.dir.path().join("js-out.json");
    let cases = serde_json::json!({
        "http": format!("http://{}", broker.http),
        "password": password,
        "js_user": "from-js",
        "rust_user": "from-rust",
        "rust_id": rust.id.to_string(),
        "rust_witness": rust.witness().to_string(),
        "out": out,
    });
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["--test", "test/interop.test.mjs"])
            .current_dir(&dir)
            .env("SEALRELAY_JS_INTEROP", cases.to_string())
            .output()
            .expect("node (Node 20) on PATH")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && report.contains("# pass 1"),
        "{report}"
    );

    let js: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let me = Identity::login_user(&broker.api(), "from-js", password)
        .await
        .expect("the Rust SDK logs in as the user JavaScript registered");
    assert_eq!(me.id.to_string(), js["id"].as_str().unwrap());
    assert_eq!(me.witness().to_string(), js["witness"].as_str().unwrap());
}
