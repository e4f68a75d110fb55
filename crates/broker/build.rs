//! Names the commit the broker is built from, for `sealrelay_build_info` ("unknown" outside
//! a git checkout, e.g. from a source package). Not a `SEALRELAY_*` name: cargo also sets it
//! for the crate's test runs, and the configuration refuses `SEALRELAY_*` variables that name
//! no key.

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SR_BUILD_COMMIT={commit}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
}
