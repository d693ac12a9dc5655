//! The `zgate` command line: exit codes and messages that scripts can rely on.

use std::process::Command;

fn zgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zgate"))
        .args(args)
        .output()
        .expect("run zgate")
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn help_and_version_exit_zero() {
    let out = zgate(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--config <FILE>") && text.contains("demo"),
        "{text}"
    );
    let out = zgate(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("zgate 0."), "{text}");
    // Built from a git checkout: the commit is named.
    assert!(text.contains("(commit "), "{text}");
}

#[test]
fn every_subcommand_has_its_own_help() {
    for (sub, needle) in [
        ("demo", "--admin <ADDR>"),
        ("check-config", "<FILE>"),
        ("backend", "--listen <ADDR>"),
        ("ctl", "--reset <KEY>"),
        ("run", "<FILE>"),
    ] {
        let out = zgate(&[sub, "--help"]);
        assert!(out.status.success(), "{sub}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(needle), "{sub}: {text}");
        // Not taken as a file or an address.
        assert!(out.stderr.is_empty(), "{sub}: {out:?}");
    }
}

#[test]
fn usage_errors_exit_two_with_the_reason() {
    let out = zgate(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'frobnicate'"));
    let out = zgate(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = zgate(&["demo", "--listen", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn ctl_names_the_url_it_could_not_reach() {
    let out = Command::new(env!("CARGO_BIN_EXE_zgate"))
        .args(["ctl", "mode"])
        .env("ZGATE_ADMIN", "http://127.0.0.1:1")
        .env_remove("ZGATE_ADMIN_TOKEN")
        .output()
        .expect("run zgate ctl");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach zgate at http://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn check_config_accepts_a_good_file() {
    let path = temp_file(
        "good.toml",
        "[[listener]]\naddr = \"127.0.0.1:8080\"\n[[backend]]\naddr = \"127.0.0.1:3000\"\n",
    );
    let out = zgate(&["check-config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 listener(s), 1 backend(s))"));
}

#[test]
fn bad_config_fails_naming_the_key() {
    let path = temp_file(
        "bad.toml",
        "[[listener]]\naddr = \"127.0.0.1:8080\"\n[[backend]]\naddr = \"127.0.0.1:3000\"\n[timeouts]\nidle = \"ten seconds\"\n",
    );
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["--config", path.to_str().unwrap()],
    ] {
        let out = zgate(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.toml"), "names the file: {err}");
        assert!(err.contains("idle"), "names the key: {err}");
        assert!(err.contains("ten seconds"), "shows the bad value: {err}");
    }
    let typo = temp_file(
        "typo.toml",
        "[[listener]]\naddr = \"127.0.0.1:8080\"\nadress = \"x\"\n[[backend]]\naddr = \"a:1\"\n",
    );
    let out = zgate(&["check-config", typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("adress"));
}

#[test]
fn missing_config_file_is_reported() {
    let out = zgate(&["--config", "/nonexistent/zgate.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/zgate.toml: cannot read config"));
}
