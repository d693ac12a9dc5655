//! A headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them), for the status page's end-to-end test.
//!
//! [`Browser::start`] runs `chromedriver` on a loopback port it picks and opens one session
//! with a fresh profile (`--headless --no-sandbox --disable-gpu
//! --disable-background-networking`, no first-run, sync or component updates). Commands are
//! plain WebDriver HTTP requests; every wait is bounded by [`crate::STEP`]. Dropping the
//! browser ends the session (Chromium exits) and stops the driver.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

use crate::{loopback0, Client, TempDir, STEP};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Why no browser could be started.
#[derive(Debug)]
pub enum BrowserError {
    /// A program is not installed (its path).
    Missing(PathBuf),
    /// The driver did not start or refused the session.
    Driver(String),
}

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrowserError::Missing(p) => write!(
                f,
                "{} is not installed (apt-get install chromium chromium-driver)",
                p.display()
            ),
            BrowserError::Driver(e) => write!(f, "chromedriver: {e}"),
        }
    }
}

/// A WebDriver session in headless Chromium.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: TempDir,
}

/// The first of `paths` that exists, or the first (for the error).
fn program(env: &str, paths: &[&str]) -> Result<PathBuf, BrowserError> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(BrowserError::Missing(p))
        };
    }
    paths
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .ok_or_else(|| BrowserError::Missing(PathBuf::from(paths[0])))
}

impl Browser {
    /// Starts the driver and a session with a `width` x `height` window. The programs are
    /// `ZGATE_CHROMEDRIVER` and `ZGATE_CHROMIUM` if set, else Debian's.
    pub async fn start(width: u32, height: u32) -> Result<Browser, BrowserError> {
        let driver_bin = program("ZGATE_CHROMEDRIVER", &["/usr/bin/chromedriver"])?;
        let chromium = program(
            "ZGATE_CHROMIUM",
            &["/usr/lib/chromium/chromium", "/usr/bin/chromium"],
        )?;
        let port = {
            let l = std::net::TcpListener::bind(loopback0())
                .map_err(|e| BrowserError::Driver(e.to_string()))?;
            l.local_addr()
                .map_err(|e| BrowserError::Driver(e.to_string()))?
                .port()
        };
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BrowserError::Driver(format!("{}: {e}", driver_bin.display())))?;
        let profile = TempDir::new("chromium");
        let mut browser = Browser {
            driver,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + STEP;
        loop {
            let ready = browser.try_call("GET", "/status", None).await;
            if ready
                .as_ref()
                .is_ok_and(|(_, v)| v["value"]["ready"] == json!(true))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(BrowserError::Driver(format!(
                    "not ready in time: {ready:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", browser._profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium.to_string_lossy(), "args": args },
        }}});
        let (status, answer) = browser
            .try_call("POST", "/session", Some(caps))
            .await
            .map_err(BrowserError::Driver)?;
        match answer["value"]["sessionId"].as_str() {
            Some(id) if status == 200 => browser.session = id.to_owned(),
            _ => return Err(BrowserError::Driver(format!("no session: {answer}"))),
        }
        Ok(browser)
    }

    /// One WebDriver request; `Err` if the driver cannot be reached.
    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let connect = tokio::net::TcpStream::connect(self.addr);
        let stream = tokio::time::timeout(STEP, connect)
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut client = Client::from_stream(stream, false).await;
        let body = body.map_or(Bytes::new(), |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = client.try_send(req).await.map_err(|e| e.to_string())?;
        let value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        Ok((resp.status(), value))
    }

    /// A command of the session (`path` after `/session/{id}`); its `value`, panicking with
    /// the driver's error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        match self.try_call(method, &full, body).await {
            Ok((200, v)) => v["value"].clone(),
            Ok((status, v)) => panic!("WebDriver {method} {path}: {status} {v}"),
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `script` until it returns something truthy (at most [`STEP`]); that value. `what`
    /// names the wait in the panic message.
    pub async fn wait_for(&self, script: &str, what: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let v = self.eval(script, json!([])).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            assert!(Instant::now() < deadline, "the page never showed {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element matching `css`, panicking if there is none.
    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Clicks the element matching `css`, as a user would (it must be visible).
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", "/screenshot", None).await;
        let b64 = v.as_str().unwrap_or_else(|| panic!("no screenshot: {v}"));
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("screenshot is not base64: {e}"))
    }

    /// Ends the session with a blocking request (from `Drop`, outside the runtime's tasks).
    fn end_session(&self) {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&self.addr, STEP) else {
            return;
        };
        let _ = s.set_read_timeout(Some(STEP));
        let req = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.addr
        );
        if s.write_all(req.as_bytes()).is_ok() {
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.end_session();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
