//! The README's "Try it" walk, run exactly as written: the runnable `sh` block after that
//! heading, by bash with errors fatal, against a broker on free ports; and every other shell
//! block of the docs marked runnable. The only help it gets
//! is what a reader has after the README's first command: `sealrelay` on the PATH and the
//! broker's addresses (here through the SEALRELAY_* variables the CLI reads, since the ports
//! are not the defaults), run beside the broker for the operator's step.

mod common;

use common::Broker;

#[test]
fn the_readme_walk_runs_verbatim() {
    common::readme_walk(&Broker::start());
}

/// Every shell block of README.md and the docs marked runnable (` ```sh runnable `) runs as
/// written, each beside a fresh broker; the README's walk is one of them (run above, with its
/// replies checked).
#[test]
fn every_runnable_shell_block_of_the_docs_runs() {
    let blocks = common::runnable_blocks();
    assert!(
        blocks.iter().any(|(at, _)| at.starts_with("README.md:")),
        "the README walk is not marked runnable: {blocks:?}"
    );
    let others: Vec<_> = blocks
        .iter()
        .filter(|(_, block)| !block.contains("sealrelay admin reset-user"))
        .collect();
    assert!(!others.is_empty(), "no runnable block beside the walk");
    for (at, block) in others {
        // On the defaults, as the blocks say: the SQLite file, in CI's PostgreSQL pass too.
        let broker = Broker::start_configured(&[], &[], "[directory]\nurl = \"\"\n");
        let out = common::run_doc_block(&broker, block);
        assert!(
            out.status.success(),
            "{at} failed:\n{block}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
