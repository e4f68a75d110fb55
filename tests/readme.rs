//! The README's "Try it" walk, run exactly as written: the first `sh` block after that
//! heading, by bash with errors fatal, against a broker on free ports. The only help it gets
//! is what a reader has after the README's first command: `sealrelay` on the PATH and the
//! broker's addresses (here through the SEALRELAY_* variables the CLI reads, since the ports
//! are not the defaults), run beside the broker for the operator's step.

mod common;

use std::process::Command;

use common::{Broker, BIN};

/// The first ```sh block after `## Try it` in README.md.
fn try_it_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme
        .find("## Try it")
        .expect("README has a Try it section")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    section[start..end].to_owned()
}

#[test]
fn the_readme_walk_runs_verbatim() {
    let broker = Broker::start();
    let block = try_it_block();
    assert!(block.contains("sealrelay admin reset-user") && block.lines().count() > 10);
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut walk = Command::new("timeout");
    // A reader's shell: none of the test's own SEALRELAY_* variables.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("SEALRELAY_")) {
        walk.env_remove(name);
    }
    walk.args(["120", "bash", "-euo", "pipefail", "-c", &block])
        .current_dir(broker.dir.path())
        .env("PATH", path)
        .env("SEALRELAY_SERVER", format!("http://{}", broker.http))
        .env("SEALRELAY_BROKER", format!("mqtt://{}", broker.mqtt))
        .env("SEALRELAY_ADMIN_LISTEN", broker.admin.to_string())
        .env("SEALRELAY_STATE_DIR", broker.dir.path().join("cli-state"));
    let out = walk.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the walk failed:\n{stdout}\n{stderr}");
    for reply in ["hello\n", "still me\n", "after the reset\n"] {
        assert!(stdout.contains(reply), "no reply {reply:?}:\n{stdout}");
    }
    assert!(stdout.contains("re-enrol "), "{stdout}");
    assert!(stdout.contains("removed instance "), "{stdout}");
}
