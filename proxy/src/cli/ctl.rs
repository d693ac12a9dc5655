//! `zgate ctl`: a thin client of the admin API with sysctl-like syntax.
//!
//! ```text
//! zgate ctl mode                 # mode = training
//! zgate ctl mode=defence         # sets it (--force: even with a thin model)
//! zgate ctl -a                   # every runtime knob as key = value, overrides marked
//! zgate ctl -n z.cpu             # the value only
//! zgate ctl z.cpu=4              # a runtime override (kept in the state file)
//! zgate ctl --reset z.cpu        # back to the config file's value
//! zgate ctl blocks | block IP [DURATION] [--force] | unblock IP
//! zgate ctl model | clients [--top N] [--by METRIC] | client IP | reload | metrics | health
//! ```
//!
//! The admin URL comes from `--admin URL`, else `ZGATE_ADMIN`, else `http://127.0.0.1:7391`
//! (`https://` works too, verified against the system's roots or `--cacert FILE`); the token
//! from `--token T`, else `ZGATE_ADMIN_TOKEN`. Exit codes: 0 done, 1 the API refused (its
//! error is printed), 2 usage error, 3 zgate could not be reached. Every error names the URL.

use std::io::Write;
use std::path::PathBuf;

use clap::{Arg, ArgMatches};

use super::admin_client::{AdminClient, ClientError};
use super::args::flag;
use super::ctl_commands::{command as run_command, text, usage, Api};

/// The default admin URL (`admin.addr`'s default, `127.0.0.1:7391`).
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:7391";

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: the API refused the request (4xx/5xx); its error is printed.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: zgate's admin API could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// The commands of `zgate ctl`, shown by `zgate ctl --help`.
const COMMANDS: &str = "\
Commands:
    mode                       print the mode (mode = training)
    mode=MODE [--force]        set it: disabled, training, defence, monitor (--force: even
                               with metrics learned from fewer than min_clients clients)
    KEY                        print one knob (e.g. z.cpu, block_duration)
    KEY=VALUE                  a runtime override, kept in the state file, over the config
                               file's value: z.METRIC, enabled.METRIC, min_std.METRIC,
                               min_clients, fallback.METRIC, block_duration, guards.NAME
                               (guards.max_glitches too)
    model                      print the model per metric (n, mean, std, threshold), then
                               where it blocks and its quantiles, in the metric's unit
    clients [--top N] [--by METRIC]   the top clients (default 10 by connections)
    client IP                  one client's current values, maxima and z
    blocks                     the block list
    block IP[/LEN] [DURATION] [--force]   block an address or network (default
                               block_duration; wider than /16 or /32 needs --force)
    unblock IP[/LEN]           remove a block
    reload                     re-read the config file
    metrics | health           Prometheus text | liveness

Exit status: 0 ok, 1 refused by zgate, 2 usage error, 3 zgate unreachable";

/// `zgate ctl`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlArgs {
    /// The admin URL.
    pub admin: String,
    /// The bearer token.
    pub token: Option<String>,
    /// CA certificates (PEM) for an https admin URL.
    pub cacert: Option<PathBuf>,
    /// `-a`: every knob.
    pub all: bool,
    /// `-n`: values only.
    pub value_only: bool,
    /// `--force`.
    pub force: bool,
    /// `--reset KEY`.
    pub reset: Option<String>,
    /// The command and its words.
    pub words: Vec<String>,
}

/// The `ctl` subcommand's grammar.
pub fn command() -> clap::Command {
    clap::Command::new("ctl")
        .about("Talk to a running zgate's admin API, sysctl-like: zgate ctl -a, zgate ctl mode=defence")
        .after_help(COMMANDS)
        .arg(
            Arg::new("admin")
                .long("admin")
                .value_name("URL")
                .env("ZGATE_ADMIN")
                .default_value(DEFAULT_ADMIN_URL)
                .help("The admin API: http://HOST:PORT or https://HOST:PORT"),
        )
        .arg(
            Arg::new("token")
                .long("token")
                .value_name("TOKEN")
                .env("ZGATE_ADMIN_TOKEN")
                .hide_env_values(true)
                .help("The admin token (admin.token)"),
        )
        .arg(
            Arg::new("cacert")
                .long("cacert")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Trust these CA certificates (PEM) for https, instead of the system's"),
        )
        .arg(flag("all").short('a').help("Print every runtime knob; overrides are marked"))
        .arg(flag("value-only").short('n').help("Print values only, without `KEY = `"))
        .arg(flag("force").help("Take a thin model (mode=) or a wide block"))
        .arg(
            Arg::new("reset")
                .long("reset")
                .value_name("KEY")
                .help("Drop the runtime override of KEY: the config file's value applies"),
        )
        .arg(
            Arg::new("words")
                .value_name("COMMAND")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true),
        )
}

impl CtlArgs {
    /// From the `ctl` subcommand's matches. `--force` and `-n` are also taken after the
    /// command (`zgate ctl mode=defence --force`).
    pub fn from_matches(m: &ArgMatches) -> CtlArgs {
        let mut words: Vec<String> = m
            .get_many::<String>("words")
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let mut take = |w: &str| {
            let before = words.len();
            words.retain(|x| x != w);
            words.len() != before
        };
        let force = take("--force") | m.get_flag("force");
        let value_only = take("-n") | m.get_flag("value-only");
        CtlArgs {
            admin: m
                .get_one::<String>("admin")
                .cloned()
                .unwrap_or_else(|| DEFAULT_ADMIN_URL.into()),
            token: m
                .get_one::<String>("token")
                .filter(|t| !t.is_empty())
                .cloned(),
            cacert: m.get_one::<PathBuf>("cacert").cloned(),
            all: m.get_flag("all"),
            value_only,
            force,
            reset: m.get_one::<String>("reset").cloned(),
            words,
        }
    }
}

/// A failed command, with the exit code it maps to. The messages of `Refused` and
/// `Unreachable` name the URL.
#[derive(Debug)]
pub enum CtlError {
    /// Bad command line (exit 2).
    Usage(String),
    /// The API said no (exit 1): the URL, the status and its error message.
    Refused(String, u16, String),
    /// No answer (exit 3), the message naming the URL.
    Unreachable(String),
}

impl CtlError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Refused(..) => EXIT_REFUSED,
            CtlError::Unreachable(_) => EXIT_UNREACHABLE,
        }
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Usage(m) => write!(f, "{m}"),
            CtlError::Refused(url, status, m) => write!(f, "{url} refused: {m} (HTTP {status})"),
            CtlError::Unreachable(m) => write!(f, "cannot reach zgate at {m}"),
        }
    }
}

impl From<ClientError> for CtlError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Setup(m) => CtlError::Usage(m),
            ClientError::Unreachable(m) => CtlError::Unreachable(m),
        }
    }
}

/// Runs `zgate ctl`; prints results on stdout and errors on stderr; returns the exit code.
pub fn main(args: &CtlArgs) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zgate ctl: cannot start a runtime: {e}");
            return EXIT_UNREACHABLE;
        }
    };
    let mut out = Vec::new();
    let result = rt.block_on(run(args, &mut out));
    let _ = std::io::stdout().write_all(&out);
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("zgate ctl: {e}");
            if matches!(e, CtlError::Usage(_)) {
                eprintln!("(zgate ctl --help lists the commands)");
            }
            e.exit_code()
        }
    }
}

/// Parses and runs one command, writing its output to `out`.
pub async fn run(args: &CtlArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let api = Api {
        client: AdminClient::new(&args.admin, args.token.clone(), args.cacert.as_deref())?,
    };
    let show = |out: &mut dyn Write, k: &str, v: &str| {
        let _ = if args.value_only {
            writeln!(out, "{v}")
        } else {
            writeln!(out, "{k} = {v}")
        };
    };
    if let Some(key) = &args.reset {
        if !args.words.is_empty() || args.all {
            return Err(usage("--reset KEY takes no command"));
        }
        api.call("DELETE", &format!("/api/v1/overrides/{key}"), None)
            .await?;
        let v = api.knob(key).await?;
        show(out, key, &v);
        return Ok(());
    }
    if args.all {
        if !args.words.is_empty() {
            return Err(usage("-a takes no command"));
        }
        let overrides = api.get("/api/v1/overrides").await?;
        for (k, v) in api.knobs().await? {
            match overrides.get(&k) {
                Some(o) if !args.value_only => {
                    let _ = writeln!(
                        out,
                        "{k} = {v}  # runtime override; file: {}",
                        text(&o["file"])
                    );
                }
                _ => show(out, &k, &v),
            }
        }
        return Ok(());
    }
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    let Some((&cmd, rest)) = words.split_first() else {
        return Err(usage("no command"));
    };
    run_command(&api, args, cmd, rest, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> CtlArgs {
        let m = command()
            .try_get_matches_from(std::iter::once("ctl").chain(a.iter().copied()))
            .unwrap();
        CtlArgs::from_matches(&m)
    }

    #[test]
    fn flags_before_and_after_the_command() {
        let a = args(&["--admin", "http://x:1", "mode=defence", "--force"]);
        assert_eq!(a.admin, "http://x:1");
        assert!(a.force);
        assert_eq!(a.words, ["mode=defence"]);
        let a = args(&["-n", "z.cpu"]);
        assert!(a.value_only && !a.force);
        let a = args(&["clients", "--top", "3"]);
        assert_eq!(a.words, ["clients", "--top", "3"]);
        assert_eq!(args(&["--reset", "z.cpu"]).reset.as_deref(), Some("z.cpu"));
    }

    #[tokio::test]
    async fn usage_errors_exit_2_and_unreachable_exits_3_naming_the_url() {
        let mut out = Vec::new();
        let e = run(&args(&["--admin", "http://127.0.0.1:1"]), &mut out)
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let e = run(&args(&["--admin", "http://127.0.0.1:1", "mode"]), &mut out)
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_UNREACHABLE, "{e}");
        assert!(e.to_string().contains("http://127.0.0.1:1"), "{e}");
        let e = run(&args(&["--admin", "http://127.0.0.1:1", "block"]), &mut out)
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let e = run(&args(&["--admin", "ftp://x"]), &mut out)
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
    }
}
