//! Model persistence: the model and mode are saved when training ends (and on API changes),
//! a restarted zgate resumes defence with the same model, and a corrupted state file is
//! reported without stopping zgate.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use zgate_limiter::Mode;
use zgate_proxy::Server;
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

fn read_state(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_saved_when_training_ends_and_restart_resumes_defence() {
    let b = backend().await;
    let dir = TempDir::new("persist");
    let state = dir.path().join("state").join("zgate-state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    let text = state_config(b.addr(), &state, "training_period = \"1s\"\n");
    let s = proxy(config(&text, dir.path())).await;
    assert_eq!(s.limiter().mode(), Mode::Disabled);
    let admin = s.admin_addr().unwrap();
    let r = admin_request(
        admin,
        "PUT",
        "/api/v1/mode",
        None,
        Some(r#"{"mode":"training"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The API change is saved at once.
    assert_eq!(read_state(&state).expect("state saved")["mode"], "training");
    // Some traffic to learn from, then training ends by itself (1 s) into defence.
    let p = addr(&s);
    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(c.send(get(p, "/")).await.status(), 200);
    let deadline = std::time::Instant::now() + STEP;
    let saved = loop {
        if let Some(v) = read_state(&state) {
            if v["mode"] == "defence" {
                break v;
            }
        }
        assert!(std::time::Instant::now() < deadline, "training never saved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["model"]["epoch"], 1);
    assert_eq!(saved["model"]["metrics"]["connections"]["n"], 1);
    let model = s.limiter().model().expect("trained");
    s.shutdown().await;
    // No temporary file left beside it.
    let names: Vec<_> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // Restart: defence at once, with the same model.
    let s = proxy(config(&text, dir.path())).await;
    assert_eq!(s.limiter().mode(), Mode::Defence);
    assert_eq!(*s.limiter().model().expect("loaded"), *model);
    let v = admin_get(s.admin_addr().unwrap(), "/api/v1/model")
        .await
        .json();
    assert_eq!(v["trained_at"], saved["trained_at"]);
    s.shutdown().await;

    // The config's own mode wins over the saved one.
    let text = state_config(b.addr(), &state, "mode = \"monitor\"\n");
    let s = proxy(config(&text, dir.path())).await;
    assert_eq!(s.limiter().mode(), Mode::Monitor);
    assert_eq!(s.limiter().model().expect("loaded").epoch, 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_restart_resumes_defence_with_the_imported_model() {
    let b = backend().await;
    let dir = TempDir::new("persist");
    let state = dir.path().join("state.json");
    let text = state_config(b.addr(), &state, "");
    let z = ZgateProcess::start(&text, &dir);
    z.wait_log("no saved state yet");
    let admin = z.admin_addr();
    let r = admin_request(admin, "PUT", "/api/v1/model", None, Some(MODEL_JSON)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let out = ctl(admin, None, &["mode=defence"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let before = admin_get(admin, "/api/v1/model").await.json();
    drop(z);

    let z = ZgateProcess::start(&text, &dir);
    z.wait_log("state loaded");
    let admin = z.admin_addr();
    let out = ctl(admin, None, &["mode"]).await;
    assert_eq!(out.stdout, "mode = defence\n", "{out:?}");
    let after = admin_get(admin, "/api/v1/model").await.json();
    assert_eq!(after["epoch"], 7, "the fixture's epoch");
    assert_eq!(after["metrics"], before["metrics"]);
    // Epochs go on after the model's.
    let out = ctl(admin, None, &["mode=training"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = ctl(admin, None, &["epoch"]).await;
    assert_eq!(out.stdout, "epoch = 8\n", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_state_file_is_reported_and_zgate_serves() {
    let b = backend().await;
    let dir = TempDir::new("persist");
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        "{\"version\": 1, \"mode\": \"defence\", \"model\": {\"epo",
    )
    .unwrap();
    let z = ZgateProcess::start(&state_config(b.addr(), &state, ""), &dir);
    let line = z.wait_log("state file unusable");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&state.display().to_string()), "{line}");
    assert!(line.contains("EOF"), "{line}");
    let mut c = Client::connect(z.addr, Proto::Http1).await;
    assert_eq!(c.send(get(z.addr, "/")).await.status(), 200);
    let out = ctl(z.admin_addr(), None, &["mode"]).await;
    assert_eq!(out.stdout, "mode = disabled\n", "{out:?}");
    drop(z);

    // Garbage of another kind, in-process: same outcome.
    std::fs::write(&state, [0xff, 0x00, 0x13]).unwrap();
    let s: Server = proxy(config(&state_config(b.addr(), &state, ""), dir.path())).await;
    assert!(s.limiter().model().is_none());
    assert_eq!(s.limiter().mode(), Mode::Disabled);
    s.shutdown().await;
}
