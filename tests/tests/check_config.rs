//! `zgate check-config` runs every check start runs: for each config that start refuses, it
//! exits 1 with a message naming the file and the key as written in the file, and `zgate
//! --config` refuses the same file with the same message.

use std::process::Command;

use zgate_tests::{zgate_bin, TempDir, TestCert};

const BASE: &str = "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"127.0.0.1:9\"\n";

/// Runs `zgate ARGS` on `file` and returns (exit code, stderr).
fn zgate(args: &[&str], file: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(zgate_bin())
        .args(args)
        .arg(file)
        .env("RUST_LOG", "error")
        .output()
        .expect("run zgate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(dir: &TempDir, text: &str, key: &str) {
    let file = dir.path().join("zgate.toml");
    std::fs::write(&file, text).expect("write config");
    let name = file.display().to_string();
    let (code, _, err) = zgate(&["check-config"], &file);
    assert_eq!(code, Some(1), "check-config passed {text:?}: {err}");
    assert!(
        err.contains(&name) && err.contains(&format!("`{key}`")),
        "check-config's error does not name {name} and `{key}`: {err}"
    );
    assert!(!err.contains("limiter."), "names an internal field: {err}");
    // Start refuses it with the same words (before binding anything).
    let (code, _, start_err) = zgate(&["--config"], &file);
    assert_eq!(code, Some(1), "start accepted {text:?}: {start_err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(
        start_err.contains(line),
        "start said {start_err:?}, check-config {line:?}"
    );
}

#[test]
fn check_config_refuses_what_start_refuses_naming_file_and_key() {
    let dir = TempDir::new("check-config");
    for (extra, key) in [
        ("[limits]\nmode = \"offence\"\n", "limits.mode"),
        ("[limits]\nblock_status = 200\n", "limits.block_status"),
        ("[limits.z]\ncpu = -1.0\n", "limits.z.cpu"),
        ("[limits]\nmax_clients = 0\n", "limits.max_clients"),
        ("[limits]\nipv6_prefix = 200\n", "limits.ipv6_prefix"),
        (
            "[http]\nh2_max_header_list_bytes = 0\n",
            "http.h2_max_header_list_bytes",
        ),
        // Valid in the file, but start has no model to defend with.
        ("[limits]\nmode = \"defence\"\n", "limits.mode"),
    ] {
        assert_refused(&dir, &format!("{BASE}{extra}"), key);
    }
}

#[test]
fn check_config_loads_the_tls_files() {
    let dir = TempDir::new("check-config-tls");
    let cert = TestCert::generate();
    let tls = |c: &std::path::Path, k: &std::path::Path| {
        format!(
            "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n[[backend]]\naddr = \"127.0.0.1:9\"\n",
            c.display(),
            k.display()
        )
    };
    let missing = dir.path().join("missing.pem");
    assert_refused(&dir, &tls(&missing, &cert.key_path), "listener[0].tls.cert");
    assert_refused(&dir, &tls(&cert.cert_path, &missing), "listener[0].tls.key");
    // Swapped: the key file holds no certificate.
    assert_refused(
        &dir,
        &tls(&cert.key_path, &cert.cert_path),
        "listener[0].tls.cert",
    );
    // Another certificate's key does not fit.
    let other = TestCert::generate();
    assert_refused(
        &dir,
        &tls(&cert.cert_path, &other.key_path),
        "listener[0].tls",
    );

    let file = dir.path().join("good.toml");
    std::fs::write(&file, tls(&cert.cert_path, &cert.key_path)).expect("write");
    let (code, out, err) = zgate(&["check-config"], &file);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ok (1 listener(s), 1 backend(s))"), "{out}");
}
