//! The README's "Try it" walk, run exactly as written: the first `sh` block after that
//! heading, by bash with errors fatal, against a broker on free ports. The only help it gets
//! is what a reader has after the README's first command: `sealrelay` on the PATH and the
//! broker's addresses (here through the SEALRELAY_* variables the CLI reads, since the ports
//! are not the defaults), run beside the broker for the operator's step.

mod common;

use common::Broker;

#[test]
fn the_readme_walk_runs_verbatim() {
    common::readme_walk(&Broker::start());
}
