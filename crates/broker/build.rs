//! Names the commit the broker is built from, for `sealrelay_build_info`: `SR_BUILD_COMMIT`
//! when the builder sets it (a container build has no `.git`), else git's answer, else
//! "unknown" (e.g. from a source package). Not a `SEALRELAY_*` name: cargo also sets it
//! for the crate's test runs, and the configuration refuses `SEALRELAY_*` variables that name
//! no key.

fn main() {
    println!("cargo:rerun-if-env-changed=SR_BUILD_COMMIT");
    if let Some(commit) = std::env::var("SR_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
    {
        println!("cargo:rustc-env=SR_BUILD_COMMIT={commit}");
        return;
    }
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
