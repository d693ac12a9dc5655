//! A throwaway `redis-server` for the fleet tests and benchmark: its own loopback port,
//! persistence off (`--save "" --appendonly no`), stopped when dropped. Debian's
//! `redis-server` must be installed (`.ci/run` installs it when missing).
//!
//! [`RedisServer::start_tls`] serves TLS (`--tls-port`) with a server certificate for
//! `127.0.0.1` signed by a CA made at start ([`crate::TestCa`]); clients are not asked for
//! certificates. Its plain port serves only the helper's readiness PING.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{dead_addr, TempDir, TestCa};

/// A running redis-server.
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: TempDir,
    /// With TLS: the CA and server certificate, and the plain port kept for readiness checks.
    tls: Option<(TestCa, SocketAddr)>,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits (at most 10 s) until it answers PING.
    pub fn start() -> RedisServer {
        let mut r = RedisServer {
            child: None,
            addr: dead_addr(),
            dir: TempDir::new("redis"),
            tls: None,
        };
        r.spawn();
        r
    }

    /// Starts one serving TLS on a free loopback port, with a server certificate for
    /// `127.0.0.1` signed by a fresh CA ([`RedisServer::ca_path`]). Its plain port (another
    /// free loopback port) only serves this helper's PING; [`RedisServer::url`] is the TLS one.
    pub fn start_tls() -> RedisServer {
        let mut r = RedisServer {
            child: None,
            addr: dead_addr(),
            dir: TempDir::new("redis-tls"),
            tls: Some((TestCa::generate(), dead_addr())),
        };
        r.spawn();
        r
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}/0", self.addr)
    }

    /// With TLS, the PEM file of the CA that signed the server's certificate.
    pub fn ca_path(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|(ca, _)| ca.ca_path.as_path())
    }

    /// Kills it (like a crash: no shutdown save, since persistence is off anyway).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Where PING goes: the plain port.
    fn plain(&self) -> SocketAddr {
        self.tls.as_ref().map_or(self.addr, |(_, plain)| *plain)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.plain().port().to_string()]);
        if let Some((ca, _)) = &self.tls {
            cmd.args(["--tls-port", &self.addr.port().to_string()])
                .arg("--tls-cert-file")
                .arg(&ca.cert_path)
                .arg("--tls-key-file")
                .arg(&ca.key_path)
                .arg("--tls-ca-cert-file")
                .arg(&ca.ca_path)
                .args(["--tls-auth-clients", "no"]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (install Debian's redis-server package)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.plain(), Duration::from_millis(200))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
