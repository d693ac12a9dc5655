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

/// One malformed HTTP/1 request on a connection of its own (hyper answers 400 and closes: a
/// glitch of the client's), read until the proxy answers or closes.
async fn bad_request(to: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(to).await else {
        return;
    };
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
}

/// `zgate ctl blocks`' output.
async fn blocks(a: std::net::SocketAddr) -> String {
    let out = ctl(a, None, &["blocks"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_glitch_guard_and_the_fallback_caps_are_runtime_overrides() {
    let b = backend().await;
    let dir = TempDir::new("overrides");
    let state = dir.path().join("state.json");
    let text = state_config(
        b.addr(),
        &state,
        "[limits.guards]\nmax_glitches = 0\n[limits.fallback]\nconnections = 8\n",
    );
    let z = ZgateProcess::start(&text, &dir);
    let (a, to) = (z.admin_addr(), z.addr);

    // The glitch guard is off in the file: a stream of bad requests blocks nobody.
    for _ in 0..20 {
        bad_request(to).await;
    }
    assert_eq!(blocks(a).await, "", "glitch guard off");
    // On at run time: the same stream blocks, on `guard:glitches`.
    let out = ctl(a, None, &["guards.max_glitches=20"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "guards.max_glitches = 20\n"),
        "{out:?}"
    );
    for _ in 0..20 {
        bad_request(to).await;
        if !blocks(a).await.is_empty() {
            break;
        }
    }
    let listed = blocks(a).await;
    assert!(
        listed.starts_with("127.0.0.1/32 ") && listed.contains("reason=guard:glitches"),
        "{listed}"
    );
    let out = ctl(a, None, &["unblock", "127.0.0.1"]).await;
    assert_eq!(out.code, 0, "{out:?}");

    // A model learned from nobody: every metric is thin and falls back to its static cap.
    for mode in ["mode=training", "mode=defence"] {
        let out = ctl(a, None, &[mode, "--force"]).await;
        assert_eq!(out.code, 0, "{mode}: {out:?}");
    }
    // Three connections at once are within the file's cap (8) ...
    let mut open = Vec::new();
    for i in 0..3 {
        let stream = tokio::net::TcpStream::connect(to).await;
        let stream = stream.unwrap_or_else(|e| panic!("connection {i}, within the cap: {e}"));
        let mut c = Client::from_stream(stream, false).await;
        assert_eq!(c.send(get(to, "/")).await.status(), 200);
        open.push(c);
    }
    drop(open);
    assert_eq!(blocks(a).await, "");
    // ... and over the cap set at run time (2): the third is cut, on `metric:connections`.
    let out = ctl(a, None, &["fallback.connections=2"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "fallback.connections = 2\n"),
        "{out:?}"
    );
    let mut open = Vec::new();
    for _ in 0..3 {
        // A connection refused at accept may be reset before `connect` returns.
        let Ok(stream) = tokio::net::TcpStream::connect(to).await else {
            break;
        };
        let mut c = Client::from_stream(stream, false).await;
        let status = c.try_send(get(to, "/")).await.map(|r| r.status());
        open.push(c);
        if status.is_err() {
            break;
        }
    }
    let listed = blocks(a).await;
    assert!(
        listed.starts_with("127.0.0.1/32 ") && listed.contains("reason=metric:connections"),
        "{listed}"
    );
    drop(open);
    // Out of range: refused, naming the key.
    let out = ctl(a, None, &["guards.max_glitches=-1"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("guards.max_glitches"), "{out:?}");
    let out = ctl(a, None, &["fallback.cpu=2000000000000"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("fallback.cpu"), "{out:?}");
    drop(z);

    // Both were saved: a restart with the same state file has them again, marked.
    let z = ZgateProcess::start(&text, &dir);
    z.wait_log("state loaded");
    let out = ctl(z.admin_addr(), None, &["-a"]).await;
    for line in [
        "guards.max_glitches = 20  # runtime override; file: 0\n",
        "fallback.connections = 2  # runtime override; file: 8\n",
        "fallback.cpu = 500000\n",
    ] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }
}
