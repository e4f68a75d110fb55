//! The Rust SDK as others use it (issue 29): the console and the agent in the crate's README
//! are its examples, word for word; copied into a fresh cargo project that depends on
//! `sealrelay-client` by path (its own workspace, the profile overrides the README gives, the
//! versions of this repository's lock file, offline), they build, and against a real broker
//! the console's question comes back answered by the agent.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, FAST_KDF};
use sealrelay_client::Identity;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The ```rust block under `heading` in the SDK's README.
fn readme_block(readme: &str, heading: &str) -> String {
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading}"))..];
    let start = section.find("```rust,no_run\n").expect("a rust block") + "```rust,no_run\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    section[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_project_builds_the_readmes_console_and_agent_and_they_talk() {
    let root = std::path::Path::new(ROOT);
    let readme = std::fs::read_to_string(root.join("crates/client/README.md")).unwrap();
    let console = readme_block(&readme, "## A console");
    let agent = readme_block(&readme, "## An agent");
    for (block, example) in [(&console, "console"), (&agent, "agent")] {
        let file =
            std::fs::read_to_string(root.join(format!("crates/client/examples/{example}.rs")))
                .unwrap();
        assert_eq!(*block, file, "README and examples/{example}.rs differ");
    }

    // Kept between runs (under target/) so that a second run reuses the build, but every file
    // of the project is written anew.
    let project = root.join("target/tmp/sdk-consumer");
    std::fs::create_dir_all(project.join("src/bin")).unwrap();
    let manifest = readme
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the README's Cargo.toml lines")
        .0
        .replace(
            "sealrelay-client = \"0.1\"",
            &format!("sealrelay-client = {{ path = \"{ROOT}/crates/client\" }}"),
        );
    std::fs::write(
        project.join("Cargo.toml"),
        format!("[package]\nname = \"consumer\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n{manifest}\n[workspace]\n"),
    )
    .unwrap();
    std::fs::write(project.join("src/bin/console.rs"), &console).unwrap();
    std::fs::write(project.join("src/bin/agent.rs"), &agent).unwrap();
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let built = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--bins", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", project.join("target"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let bin = |name: &str| {
        let mut cmd = Command::new(project.join("target/debug").join(name));
        common::without_our_variables(&mut cmd).stdin(Stdio::null());
        cmd
    };

    let broker = Broker::start();
    let mut alice = Identity::register_user(&broker.api(), "alice", "pw-alice", FAST_KDF)
        .await
        .unwrap();
    let (instance, token) = alice.add_instance(&broker.api()).await.unwrap();
    let server = format!("http://{}", broker.http);
    let mut agent = bin("agent")
        .env("SEALRELAY_SERVER", &server)
        .env("SEALRELAY_BROKER", broker.mqtt.to_string())
        .env("SEALRELAY_TOKEN", &*token.reveal())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Until the agent is connected its instance is offline, and the console says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let asked = bin("console")
            .args(["alice", &instance.to_string()])
            .env("SEALRELAY_SERVER", &server)
            .env("SEALRELAY_BROKER", broker.mqtt.to_string())
            .env("SEALRELAY_PASSWORD", "pw-alice")
            .output()
            .unwrap();
        if asked.status.success() {
            break String::from_utf8(asked.stdout).unwrap();
        }
        let said = String::from_utf8_lossy(&asked.stderr).into_owned();
        assert!(
            Instant::now() < deadline && said.contains("offline"),
            "{said}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(answer, "up; you asked: status?\n");
}
