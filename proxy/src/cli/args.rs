//! The command line, parsed with `clap`: `zgate --config FILE`, `zgate check-config FILE`,
//! `zgate demo`, `zgate backend`, `zgate ctl ...` (the admin client, see `ctl.rs`). Every
//! subcommand has its own `--help`; `--version` names the git commit of the build.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{value_parser, Arg, ArgAction, ArgMatches};

use super::ctl::CtlArgs;

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
        /// The admin API's address; `None`: the embedded config's (the default port).
        admin: Option<SocketAddr>,
    },
    /// Run only the embedded backend.
    Backend {
        /// Its address.
        listen: SocketAddr,
    },
    /// `zgate ctl ...`: the admin client.
    Ctl(CtlArgs),
}

/// Why the command line was not run: help or version asked for (exit 0), or a usage error
/// (exit 2). Its `Display` is the text to print.
#[derive(Debug)]
pub struct ArgsError(clap::Error);

impl ArgsError {
    /// The process exit code: 0 for `--help` and `--version`, 2 for a usage error.
    pub fn exit_code(&self) -> u8 {
        if self.0.use_stderr() {
            2
        } else {
            0
        }
    }

    /// Whether the text goes to stderr (an error) or stdout (help, version).
    pub fn is_error(&self) -> bool {
        self.0.use_stderr()
    }
}

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.render())
    }
}

impl std::error::Error for ArgsError {}

/// `zgate --version`: the package version and the git commit of the build,
/// `0.1.0 (commit 1a2b3c4d5e6f)` (the version alone when built outside a git checkout).
pub const VERSION: &str = env!("ZGATE_VERSION");

const DEMO_LISTEN: &str = "127.0.0.1:8080";
const DEMO_BACKEND: &str = "127.0.0.1:8081";

const AFTER_HELP: &str = "\
Signals:
  SIGTERM, SIGINT   stop accepting, let in-flight requests finish within
                    timeouts.shutdown_grace, then exit 0
  SIGHUP            reload the config file; an invalid one is refused (logged) and
                    the config in force stays

Environment:
  RUST_LOG          overrides [log] level, e.g. RUST_LOG=debug
  ZGATE_ADMIN       zgate ctl's admin URL (default http://127.0.0.1:7391)
  ZGATE_ADMIN_TOKEN zgate ctl's bearer token";

/// The whole command line's grammar.
pub fn command() -> clap::Command {
    let addr = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name("ADDR")
            .default_value(default)
            .value_parser(value_parser!(SocketAddr))
            .help(help)
    };
    let file = || {
        Arg::new("file")
            .value_name("FILE")
            .required(true)
            .value_parser(value_parser!(PathBuf))
    };
    clap::Command::new("zgate")
        .about("A reverse proxy for HTTP/1.1 and HTTP/2 that learns what normal clients look like")
        .version(VERSION)
        .arg_required_else_help(true)
        .args_conflicts_with_subcommands(true)
        .after_help(AFTER_HELP)
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("Run the proxy with the TOML config FILE"),
        )
        .subcommand(
            clap::Command::new("run")
                .about("Run the proxy with the TOML config FILE (as --config FILE)")
                .arg(file().help("The config file")),
        )
        .subcommand(
            clap::Command::new("check-config")
                .about("Validate FILE: exit 0 if good, 1 with the error naming the key if not")
                .arg(file().help("The config file")),
        )
        .subcommand(
            clap::Command::new("demo")
                .about("Run on the embedded default config, in front of the embedded demo backend")
                .arg(addr("listen", DEMO_LISTEN, "The proxy's address"))
                .arg(addr("backend", DEMO_BACKEND, "The demo backend's address"))
                .arg(
                    Arg::new("admin")
                        .long("admin")
                        .value_name("ADDR")
                        .value_parser(value_parser!(SocketAddr))
                        .help("The admin API's address [default: 127.0.0.1:7391]"),
                ),
        )
        .subcommand(
            clap::Command::new("backend")
                .about("Run only the embedded demo backend (the benchmarks use it)")
                .arg(addr("listen", DEMO_BACKEND, "Its address")),
        )
        .subcommand(super::ctl::command())
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, ArgsError> {
    let argv = std::iter::once(OsString::from("zgate")).chain(args);
    let m = command().try_get_matches_from(argv).map_err(ArgsError)?;
    Ok(from_matches(&m))
}

fn from_matches(m: &ArgMatches) -> Command {
    let path = |m: &ArgMatches| m.get_one::<PathBuf>("file").cloned().unwrap_or_default();
    let addr = |m: &ArgMatches, name: &str| m.get_one::<SocketAddr>(name).copied();
    match m.subcommand() {
        Some(("run", sub)) => Command::Run(path(sub)),
        Some(("check-config", sub)) => Command::CheckConfig(path(sub)),
        Some(("demo", sub)) => Command::Demo {
            listen: addr(sub, "listen").unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            backend: addr(sub, "backend").unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081))),
            admin: addr(sub, "admin"),
        },
        Some(("backend", sub)) => Command::Backend {
            listen: addr(sub, "listen").unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081))),
        },
        Some((_, sub)) => Command::Ctl(CtlArgs::from_matches(sub)),
        // `arg_required_else_help` and the conflict rules leave `--config` as the only case.
        None => Command::Run(m.get_one::<PathBuf>("config").cloned().unwrap_or_default()),
    }
}

/// A flag that takes no value.
pub(crate) fn flag(name: &'static str) -> Arg {
    Arg::new(name).long(name).action(ArgAction::SetTrue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, ArgsError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn grammar_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            p(&["--config", "z.toml"]).unwrap(),
            Command::Run("z.toml".into())
        );
        assert_eq!(p(&["-c", "z.toml"]).unwrap(), Command::Run("z.toml".into()));
        assert_eq!(
            p(&["run", "z.toml"]).unwrap(),
            Command::Run("z.toml".into())
        );
        assert_eq!(
            p(&["check-config", "z.toml"]).unwrap(),
            Command::CheckConfig("z.toml".into())
        );
        assert_eq!(
            p(&[
                "demo",
                "--listen",
                "127.0.0.1:9000",
                "--admin",
                "127.0.0.1:9001"
            ])
            .unwrap(),
            Command::Demo {
                listen: "127.0.0.1:9000".parse().unwrap(),
                backend: DEMO_BACKEND.parse().unwrap(),
                admin: Some("127.0.0.1:9001".parse().unwrap()),
            }
        );
        assert!(matches!(p(&["ctl", "-a"]).unwrap(), Command::Ctl(_)));
    }

    #[test]
    fn help_and_mistakes() {
        for args in [
            &["--help"][..],
            &["--version"],
            &["demo", "--help"],
            &["check-config", "--help"],
            &["ctl", "--help"],
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.exit_code(), 0, "{args:?}: {e}");
        }
        for args in [
            &[][..],
            &["--config"],
            &["frobnicate"],
            &["demo", "--listen", "nope"],
            &["check-config", "a", "b"],
            &["check-config"],
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        assert!(p(&["demo", "--listen", "nope"])
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }
}
