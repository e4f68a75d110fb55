//! The JavaScript SDK (`sdk/js`, node's test runner) against a real broker and the Rust SDK:
//! a user registered from JavaScript logs in with the Rust SDK and gets the same key, and a
//! user the Rust SDK registered logs in from JavaScript — byte-compatible key derivation,
//! wrapping and HTTP bodies in both directions. Packages: `npm ci --prefix sdk/js`.

mod common;

use common::{Broker, FAST_KDF};
use sealrelay_client::Identity;

/// Starts a node test of the JavaScript SDK in the background.
fn spawn_js(file: &str, var: &str, cases: &serde_json::Value) -> std::process::Child {
    common::node_test("sdk/js", "mqtt", file, var, cases)
        .spawn()
        .expect("node (Node 20) on PATH")
}

/// Waits up to 30 s for the JavaScript side to create `path` (its signal to the Rust side).
async fn appears(path: &std::path::Path, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits for a background node test and asserts its one test passed.
async fn js_passed(node: std::process::Child) {
    let run = tokio::task::spawn_blocking(move || node.wait_with_output().unwrap())
        .await
        .unwrap();
    common::node_report(run, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_registered_in_either_sdk_log_in_with_the_other() {
    // By invite, so that both SDKs' invite fields meet a server that checks them.
    let broker = Broker::start_with(&[("SEALRELAY_AUTH_REGISTRATION", "invite")]);
    let password = "a password both sides derive alike";
    let invite = broker.invite();
    let rust = Identity::register_invited(
        &broker.api(),
        "from-rust",
        password,
        FAST_KDF,
        Some(&invite),
    )
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
        "invite": broker.invite(),
        "out": out,
    });
    let node = common::node_test(
        "sdk/js",
        "libsodium-wrappers-sumo",
        "test/interop.test.mjs",
        "SRTEST_JS_INTEROP",
        &cases,
    );
    common::node_passed(node, 1).await;

    let js: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let me = Identity::login_user(&broker.api(), "from-js", password)
        .await
        .expect("the Rust SDK logs in as the user JavaScript registered");
    assert_eq!(me.id.to_string(), js["id"].as_str().unwrap());
    assert_eq!(me.witness().to_string(), js["witness"].as_str().unwrap());
}

/// A JavaScript console (SDK + MQTT.js over ws://) adds an instance and asks it something;
/// the instance is the Rust `sealrelay agent` logged in with the token made in JavaScript.
#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_console_and_a_rust_agent_talk_through_the_broker() {
    let broker = Broker::start();
    let (token_file, ready_file) = (
        broker.dir.path().join("js-token"),
        broker.dir.path().join("agent-ready"),
    );
    let cases = serde_json::json!({
        "http": format!("http://{}", broker.http),
        "ws": format!("ws://{}/mqtt", broker.ws),
        "password": "a console password",
        "user": "js-console",
        "token_file": token_file,
        "ready_file": ready_file,
    });
    let node = spawn_js("test/console.test.mjs", "SRTEST_JS_CONSOLE", &cases);
    appears(&token_file, "JavaScript never added the instance").await;
    let token = std::fs::read_to_string(&token_file).unwrap();
    let _agent = broker.start_agent(token.trim(), "5");
    std::fs::write(&ready_file, b"").unwrap();
    let run = tokio::task::spawn_blocking(move || node.wait_with_output().unwrap())
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && report.contains("# pass 1"),
        "{report}"
    );
}

/// The other direction: an instance written with the JavaScript SDK in Node, started with a
/// token the Rust SDK made, answers `sealrelay send` from the Rust CLI.
#[tokio::test(flavor = "multi_thread")]
async fn the_rust_cli_asks_an_instance_written_in_javascript() {
    let broker = Broker::start();
    let password = "pw-rust-console";
    let mut owner = Identity::register_user(&broker.api(), "rust-console", password, FAST_KDF)
        .await
        .unwrap();
    let (instance, token) = owner.add_instance(&broker.api()).await.unwrap();
    let (serving, done) = (
        broker.dir.path().join("js-agent-serving"),
        broker.dir.path().join("rust-done"),
    );
    let cases = serde_json::json!({
        "http": format!("http://{}", broker.http),
        "mqtt": format!("mqtt://{}", broker.mqtt),
        "token": &*token.reveal(),
        "serving_file": serving,
        "done_file": done,
    });
    let node = spawn_js("test/agent.test.mjs", "SRTEST_JS_AGENT", &cases);
    appears(&serving, "the JavaScript agent never served").await;
    let reply = common::run_cli_ok(
        broker.cli(),
        &[
            "send",
            "--user",
            "rust-console",
            "--to",
            &instance.to_string(),
            "hello js",
        ],
        password,
    );
    std::fs::write(&done, b"").unwrap();
    assert_eq!(reply, "js says: hello js\n");
    js_passed(node).await;
}

/// The SDK as a package (issue 29): `npm pack`'s tarball, installed into a fresh project with
/// TypeScript (strict, the package's generated types and public entries only), compiles, and
/// the program registers, adds an instance, serves it with the JavaScript agent and gets its
/// reply through a real broker. Packages come from npm's cache where it has them (`npm ci
/// --prefix sdk/js` filled it), else from the registry.
#[test]
fn the_packed_sdk_serves_a_strict_typescript_consumer() {
    let broker = Broker::start();
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/js");
    let project = tempfile::tempdir().unwrap();
    let run = |program: &str, args: &[&str], dir: &std::path::Path| {
        let out = std::process::Command::new(program)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dest = project.path().to_str().unwrap();
    let tarball = run(
        "npm",
        &["pack", "--silent", "--pack-destination", dest],
        &sdk,
    );
    let tarball = project.path().join(tarball.trim());
    let listing = run("tar", &["tzf", tarball.to_str().unwrap()], project.path());
    for shipped in [
        "package/README.md",
        "package/LICENSE",
        "package/types/index.d.ts",
        "package/src/index.js",
    ] {
        assert!(
            listing.lines().any(|l| l == shipped),
            "{shipped} not in:\n{listing}"
        );
    }
    assert!(
        !listing.contains("package/test/"),
        "the tests are not shipped:\n{listing}"
    );
    let app = project.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("package.json"),
        r#"{ "name": "packed-consumer", "private": true, "type": "module" }"#,
    )
    .unwrap();
    for file in ["consumer.ts", "tsconfig.json"] {
        std::fs::copy(sdk.join("test/packed").join(file), app.join(file)).unwrap();
    }
    let installed = |name: &str| {
        let manifest = sdk.join("node_modules").join(name).join("package.json");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
        format!("{name}@{}", manifest["version"].as_str().unwrap())
    };
    run(
        "npm",
        &[
            "install",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            "--silent",
            tarball.to_str().unwrap(),
            &installed("typescript"),
            &installed("@types/node"),
        ],
        &app,
    );
    run("node_modules/.bin/tsc", &["-p", "."], &app);
    let cases = serde_json::json!({
        "http": format!("http://{}", broker.http),
        "ws": format!("ws://{}/mqtt", broker.ws),
        "user": "packed-user",
        "password": "a password for the packed package",
    });
    // Bounded: a handle the SDK left open would keep node alive.
    let out = std::process::Command::new("timeout")
        .args(["60", "node", "out/consumer.js"])
        .current_dir(&app)
        .env("SRTEST_PACKED", cases.to_string())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "echo: hello from a package\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
