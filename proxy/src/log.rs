//! The log subscriber of a running proxy: `tracing` to stderr at `log.level` (unless
//! `RUST_LOG` says otherwise), as text or, with `log.format = "json"`, one JSON object per
//! line (`timestamp`, `level`, `target`, `fields` with `message`; tracing-subscriber's JSON
//! formatter).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The crates whose logs are capped whatever `log.level` says. rustls at `error`: its warnings
/// are all about what a peer sent (an IP address as SNI, as every client connecting by address
/// sends; a warning alert; an unexpected message), one line per connection a client can
/// trigger at will, and its formatting and write cost a line per handshake (about 1% of a new
/// TLS connection's CPU; bench/results/issue-17.md, TLS). A failed handshake is still logged
/// by zgate at `debug`.
pub(crate) const QUIET_CRATES: &str = "h2=warn,hyper=warn,rustls=error";

/// Installs the global subscriber for `[log]`. Calling it twice is harmless (the second does
/// nothing).
pub fn init(log: &zgate_config::Log) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},{QUIET_CRATES}", log.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.format == "json" {
        builder.json().with_ansi(false).try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
