//! Records the version line of `zgate --version` in `ZGATE_VERSION`: the package version and
//! the git commit it is built from (`0.1.0 (commit 1a2b3c4d5e6f)`; the version alone outside a
//! git checkout, e.g. from a source tarball).

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => println!("cargo:rustc-env=ZGATE_VERSION={version} (commit {commit})"),
        None => println!("cargo:rustc-env=ZGATE_VERSION={version}"),
    }
    // A new commit or checkout changes HEAD (in a worktree, its own git dir) or the refs.
    for dir in [
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ]
    .into_iter()
    .flatten()
    {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
