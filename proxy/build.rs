//! Build script: the commit zgate is built from, for `zgate --version` (`ZGATE_VERSION`:
//! `0.1.0 (commit 1a2b3c4d5e6f)`, the version alone outside a git checkout) and for
//! `zgate_build_info` (`ZGATE_COMMIT`: `ZGATE_COMMIT` from the environment when set, else
//! `git rev-parse --short=12 HEAD`, else `unknown`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ZGATE_COMMIT");
    let commit = std::env::var("ZGATE_COMMIT").ok().or_else(git_commit);
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    match &commit {
        Some(c) => println!("cargo:rustc-env=ZGATE_VERSION={version} (commit {c})"),
        None => println!("cargo:rustc-env=ZGATE_VERSION={version}"),
    }
    println!(
        "cargo:rustc-env=ZGATE_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn git_commit() -> Option<String> {
    // Rebuild when HEAD moves: HEAD itself and the ref it points at (in a worktree, its own
    // git dir; the refs in the common one).
    for path in ["HEAD", "logs/HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
