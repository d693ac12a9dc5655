//! The command line: `zgate --config FILE`, `zgate check-config FILE`, `zgate demo`,
//! `zgate backend`, `zgate ctl ...` (the admin client, see `ctl.rs`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The usage text printed by `zgate --help`.
pub const USAGE: &str = "\
zgate: a reverse proxy for HTTP/1.1 and HTTP/2 that learns what normal clients look like

USAGE:
    zgate --config FILE            run the proxy with the TOML config FILE
    zgate check-config FILE        validate FILE; exit 0 if good, 1 with the error if not
    zgate demo [OPTIONS]           run on the embedded default config, in front of the
                                   embedded demo backend (no files needed)
        --listen ADDR              proxy address (default 127.0.0.1:8080)
        --backend ADDR             demo backend address (default 127.0.0.1:8081)
    zgate backend [--listen ADDR]  run only the embedded demo backend (default 127.0.0.1:8081)
    zgate ctl [--admin URL] [--token T] COMMAND
                                   talk to a running zgate's admin API, sysctl-like:
                                   `zgate ctl -a`, `zgate ctl mode=defence`; `zgate ctl --help`
    zgate --help | --version

SIGNALS:
    SIGTERM, SIGINT   stop accepting, let in-flight requests finish within
                      timeouts.shutdown_grace, then exit 0
    SIGHUP            reload the config file; an invalid one is refused (logged) and
                      the config in force stays

ENVIRONMENT:
    RUST_LOG          overrides [log] level, e.g. RUST_LOG=debug
    ZGATE_ADMIN       zgate ctl's admin URL (default http://127.0.0.1:9090)
    ZGATE_ADMIN_TOKEN zgate ctl's bearer token
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the proxy with a config file.
    Run(PathBuf),
    /// Validate a config file.
    CheckConfig(PathBuf),
    /// Run the demo: proxy and embedded backend.
    Demo {
        /// The proxy's listener.
        listen: SocketAddr,
        /// The embedded backend's address.
        backend: SocketAddr,
    },
    /// Run only the embedded backend.
    Backend {
        /// Its address.
        listen: SocketAddr,
    },
    /// `zgate ctl ARGS`: the admin client, with the arguments after `ctl`.
    Ctl(Vec<String>),
    /// Print the usage.
    Help,
    /// Print the version.
    Version,
}

const DEMO_LISTEN: &str = "127.0.0.1:8080";
const DEMO_BACKEND: &str = "127.0.0.1:8081";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8"))
        })
        .collect::<Result<_, _>>()?;
    let mut it = args.iter().map(String::as_str);
    let Some(first) = it.next() else {
        return Err("no command: give --config FILE, or try `zgate demo`".into());
    };
    match first {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "-c" | "--config" | "run" => {
            let path = if first == "run" {
                match (it.next(), it.next()) {
                    (Some("-c" | "--config"), Some(p)) => p,
                    (Some(p), None) if !p.starts_with('-') => p,
                    _ => return Err("run needs --config FILE".into()),
                }
            } else {
                it.next().ok_or("--config needs a FILE")?
            };
            no_more(it)?;
            Ok(Command::Run(path.into()))
        }
        "ctl" => Ok(Command::Ctl(it.map(str::to_owned).collect())),
        "check-config" => {
            let path = it.next().ok_or("check-config needs a FILE")?;
            no_more(it)?;
            Ok(Command::CheckConfig(path.into()))
        }
        "demo" => {
            let mut listen = addr(DEMO_LISTEN)?;
            let mut backend = addr(DEMO_BACKEND)?;
            while let Some(flag) = it.next() {
                let value = it.next().ok_or_else(|| format!("{flag} needs an ADDR"))?;
                match flag {
                    "--listen" => listen = addr(value)?,
                    "--backend" => backend = addr(value)?,
                    other => return Err(format!("demo: unknown option {other:?}")),
                }
            }
            Ok(Command::Demo { listen, backend })
        }
        "backend" => {
            let mut listen = addr(DEMO_BACKEND)?;
            while let Some(flag) = it.next() {
                let value = it.next().ok_or_else(|| format!("{flag} needs an ADDR"))?;
                match flag {
                    "--listen" => listen = addr(value)?,
                    other => return Err(format!("backend: unknown option {other:?}")),
                }
            }
            Ok(Command::Backend { listen })
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

fn addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:8080"))
}

fn no_more<'a>(mut it: impl Iterator<Item = &'a str>) -> Result<(), String> {
    match it.next() {
        Some(extra) => Err(format!("unexpected argument {extra:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            p(&["--config", "z.toml"]),
            Ok(Command::Run("z.toml".into()))
        );
        assert_eq!(p(&["-c", "z.toml"]), Ok(Command::Run("z.toml".into())));
        assert_eq!(
            p(&["run", "--config", "z.toml"]),
            Ok(Command::Run("z.toml".into()))
        );
        assert_eq!(
            p(&["check-config", "z.toml"]),
            Ok(Command::CheckConfig("z.toml".into()))
        );
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert_eq!(
            p(&["ctl", "--admin", "http://x:1", "mode=defence"]),
            Ok(Command::Ctl(vec![
                "--admin".into(),
                "http://x:1".into(),
                "mode=defence".into()
            ]))
        );
        assert_eq!(
            p(&["demo", "--listen", "127.0.0.1:9000"]),
            Ok(Command::Demo {
                listen: "127.0.0.1:9000".parse().unwrap(),
                backend: DEMO_BACKEND.parse().unwrap()
            })
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(p(&[]).unwrap_err().contains("no command"));
        assert!(p(&["--config"]).unwrap_err().contains("needs a FILE"));
        assert!(p(&["frobnicate"]).unwrap_err().contains("frobnicate"));
        assert!(p(&["demo", "--listen", "nope"])
            .unwrap_err()
            .contains("nope"));
        assert!(p(&["check-config", "a", "b"])
            .unwrap_err()
            .contains("\"b\""));
    }
}
