//! What an operator sets at run time lasts: runtime overrides and manual blocks survive a
//! reload (SIGHUP) and a restart with the same state file, `zgate ctl -a` marks them,
//! `ctl --reset` returns a key to the file's value; the state file is private, written without
//! following a symlink planted at a predictable name, and a huge epoch in it is refused;
//! `ctl` reaches an https admin URL and names the URL when it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zgate_limiter::{Metric, Mode};
use zgate_tests::*;

fn state_config(backend: std::net::SocketAddr, state: &Path, extra: &str) -> String {
    config_text(
        &[backend],
        &format!(
            "[admin]\naddr = \"127.0.0.1:0\"\n[limits]\nstate_file = \"{}\"\n{extra}",
            state.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_and_manual_blocks_survive_sighup_and_restart() {
    let b = backend().await;
    let dir = TempDir::new("overrides");
    let state = dir.path().join("state.json");
    let text = state_config(b.addr(), &state, "[limits.z]\ncpu = 3.0\n");
    let z = ZgateProcess::start(&text, &dir);
    let a = z.admin_addr();
    for (set, shown) in [
        ("z.cpu=5", "z.cpu = 5\n"),
        ("enabled.memory=false", "enabled.memory = false\n"),
        ("min_std.cpu=20000", "min_std.cpu = 20000\n"),
        ("min_clients=3", "min_clients = 3\n"),
        ("block_duration=5m", "block_duration = 5m\n"),
        ("guards.ping_per_sec=7", "guards.ping_per_sec = 7\n"),
    ] {
        let out = ctl(a, None, &[set]).await;
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, shown),
            "{set}: {out:?}"
        );
    }
    // Out of range or not settable: refused, nothing changes.
    let out = ctl(a, None, &["min_clients=0"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let out = ctl(a, None, &["max_blocks=3"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("config file"), "{out:?}");
    let out = ctl(a, None, &["block", "192.0.2.0/24", "30m"]).await;
    assert_eq!(out.code, 0, "{out:?}");

    // SIGHUP re-reads the file (which says cpu = 3): the override stays on top.
    z.signal("HUP");
    z.wait_log("config reloaded");
    let out = ctl(a, None, &["-n", "z.cpu"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "5\n"), "{out:?}");
    let out = ctl(a, None, &["-a"]).await;
    assert!(
        out.stdout
            .contains("z.cpu = 5  # runtime override; file: 3\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("z.memory = 3\n"),
        "not marked: {}",
        out.stdout
    );
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "state file mode {mode:o}");
    drop(z);

    // Restart with the same state file: the overrides and the block are back.
    let z = ZgateProcess::start(&text, &dir);
    z.wait_log("state loaded");
    let a = z.admin_addr();
    for (key, value) in [
        ("z.cpu", "5"),
        ("enabled.memory", "false"),
        ("min_std.cpu", "20000"),
        ("min_clients", "3"),
        ("block_duration", "5m"),
        ("guards.ping_per_sec", "7"),
    ] {
        let out = ctl(a, None, &["-n", key]).await;
        assert_eq!(out.stdout, format!("{value}\n"), "{key}: {out:?}");
    }
    let out = ctl(a, None, &["blocks"]).await;
    assert!(
        out.stdout.starts_with("192.0.2.0/24 expires_in="),
        "{out:?}"
    );
    assert!(out.stdout.contains("reason=manual"), "{out:?}");

    // --reset: the file's value again, and it stays so across a reload.
    let out = ctl(a, None, &["--reset", "z.cpu"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "z.cpu = 3\n"),
        "{out:?}"
    );
    let out = ctl(a, None, &["--reset", "z.cpu"]).await;
    assert_eq!(out.code, 1, "not overridden any more: {out:?}");
    let r = admin_request(a, "POST", "/api/v1/reload", None, Some("{}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let out = ctl(a, None, &["-a"]).await;
    assert!(out.stdout.contains("z.cpu = 3\n"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("min_clients = 3  # runtime override; file: 10\n"),
        "{}",
        out.stdout
    );
    // The API view of the same.
    let v = admin_get(a, "/api/v1/overrides").await.json();
    assert_eq!(v["min_clients"]["value"], "3");
    assert_eq!(v["min_clients"]["file"], "10");
    assert!(v.get("z.cpu").is_none(), "{v}");
    // Unblocking is saved too.
    let out = ctl(a, None, &["unblock", "192.0.2.0/24"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(saved.get("blocks").is_none(), "{saved}");
    assert_eq!(saved["overrides"]["min_clients"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_set_through_the_api_are_overrides_over_a_reload() {
    let b = backend().await;
    let dir = TempDir::new("overrides");
    let path = dir.path().join("zgate.toml");
    let state = dir.path().join("state.json");
    std::fs::write(&path, state_config(b.addr(), &state, "")).unwrap();
    let config = zgate_config::Config::load(&path).unwrap();
    let s = zgate_proxy::Server::start_with_path(config, Some(path.clone()))
        .await
        .unwrap();
    let a = s.admin_addr().unwrap();
    let r = admin_request(
        a,
        "PUT",
        "/api/v1/thresholds",
        None,
        Some(r#"{"cpu": 4.5}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.reload().expect("valid reload");
    assert_eq!(s.limiter().threshold(Metric::Cpu), 4.5);
    let r = admin_request(a, "DELETE", "/api/v1/overrides/z.cpu", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.limiter().threshold(Metric::Cpu), 3.0);
    let r = admin_request(a, "PUT", "/api/v1/overrides", None, Some(r#"{"nope": 1}"#)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_planted_at_the_old_temporary_name_is_left_alone() {
    let b = backend().await;
    let dir = TempDir::new("overrides");
    let state = dir.path().join("state.json");
    // The name zgate used to write through: `.NAME.tmp.<pid>` (this process runs the server).
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let planted = dir
        .path()
        .join(format!(".state.json.tmp.{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let s = proxy(config(&state_config(b.addr(), &state, ""), dir.path())).await;
    let a = s.admin_addr().unwrap();
    for mode in ["training", "disabled", "training"] {
        let body = format!("{{\"mode\": \"{mode}\"}}");
        let r = admin_request(a, "PUT", "/api/v1/mode", None, Some(&body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    s.shutdown().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(&planted)
        .unwrap()
        .file_type()
        .is_symlink());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["mode"], "training");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // Nothing else was left behind: the state file, the victim, the planted link.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_epoch_in_the_state_file_is_refused() {
    let b = backend().await;
    let dir = TempDir::new("overrides");
    let state = dir.path().join("state.json");
    let model = MODEL_JSON.replace("\"epoch\": 7", "\"epoch\": 18446744073709551615");
    std::fs::write(
        &state,
        format!("{{\"version\": 1, \"mode\": \"defence\", \"model\": {model}, \"saved_at\": 1}}"),
    )
    .unwrap();
    let s = proxy(config(&state_config(b.addr(), &state, ""), dir.path())).await;
    assert!(s.limiter().model().is_none());
    assert_eq!(s.limiter().mode(), Mode::Disabled);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reaches_an_https_admin_url_and_names_the_url_in_errors() {
    const TOKEN: &str = "test-token-0123456789";
    let b = backend().await;
    let dir = TempDir::new("overrides");
    let admin_cfg = format!("[admin]\naddr = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n");
    let inner = proxy(config(&config_text(&[b.addr()], &admin_cfg), dir.path())).await;
    // A TLS terminator in front of the admin API: a second zgate with a TLS listener.
    let cert = TestCert::generate();
    let text = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n[[backend]]\naddr = \"{}\"\n[admin]\nenabled = false\n",
        cert.cert_path.display(),
        cert.key_path.display(),
        inner.admin_addr().unwrap()
    );
    let front = proxy(config(&text, dir.path())).await;
    let url = format!("https://localhost:{}", addr(&front).port());
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(zgate_bin())
            .arg("ctl")
            .args(args)
            .env_remove("ZGATE_ADMIN")
            .env("ZGATE_ADMIN_TOKEN", TOKEN)
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cacert = cert.cert_path.display().to_string();
    let (code, stdout, stderr) = run(vec![
        "--admin".into(),
        url.clone(),
        "--cacert".into(),
        cacert,
        "mode".into(),
    ])
    .await;
    assert_eq!(
        (code, stdout.as_str()),
        (Some(0), "mode = disabled\n"),
        "{stderr}"
    );
    // Without the CA the certificate is not trusted: unreachable, naming the URL.
    let (code, _, stderr) = run(vec!["--admin".into(), url.clone(), "mode".into()]).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    // A refusal names the URL too.
    let plain = format!("http://{}", inner.admin_addr().unwrap());
    let (code, _, stderr) = run(vec!["--admin".into(), plain.clone(), "mode=attack".into()]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{plain}/api/v1/mode refused")),
        "{stderr}"
    );
    front.shutdown().await;
    inner.shutdown().await;
}
