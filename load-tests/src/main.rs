//! `sealrelay-load`: scripted load clients for sealrelay. The scenarios (issue 3) are not
//! built yet; this binary exists so the workspace layout and the SDK dependency are fixed.

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    eprintln!(
        "sealrelay-load {version}: scenarios are not implemented yet (see load-tests/README.md)"
    );
    std::process::exit(2);
}
