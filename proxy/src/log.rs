//! The log subscriber of a running proxy: `tracing` to stderr at `log.level` (unless
//! `RUST_LOG` says otherwise), as text or, with `log.format = "json"`, one JSON object per
//! line (`timestamp`, `level`, `target`, `fields` with `message`; tracing-subscriber's JSON
//! formatter).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for `[log]`. Calling it twice is harmless (the second does
/// nothing).
pub fn init(log: &zgate_config::Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{},h2=warn,hyper=warn,rustls=warn", log.level))
    });
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
