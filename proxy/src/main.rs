//! The `zgate` binary.

use std::process::ExitCode;

use zgate_config::{Backend, Config, DEFAULT_CONFIG};
use zgate_proxy::cli::{self, Command};
use zgate_proxy::cli::{ctl, demo, logging};
use zgate_proxy::state::checked::{CheckError, Checked};
use zgate_proxy::Server;

/// mimalloc: per-thread heaps suit the thread-per-core workers (a buffer is mostly freed on
/// the thread that allocated it), and it costs fewer instructions per request than glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            // Help and version go to stdout with exit 0; a usage error to stderr with exit 2.
            let text = e.to_string();
            let nl = if text.ends_with('\n') { "" } else { "\n" };
            if e.is_error() {
                eprint!("{text}{nl}");
            } else {
                print!("{text}{nl}");
            }
            return ExitCode::from(e.exit_code());
        }
    };
    match command {
        Command::Ctl(args) => ExitCode::from(ctl::main(&args)),
        Command::CheckConfig(path) => check_config(&path),
        Command::Run(path) => match Config::load(&path) {
            Ok(config) => run(config, None, Some(path)),
            Err(e) => {
                eprintln!("zgate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo {
            listen,
            backend,
            admin,
        } => {
            let mut config = match Config::parse(DEFAULT_CONFIG, std::path::Path::new(".")) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("zgate: embedded config: {e}");
                    return ExitCode::FAILURE;
                }
            };
            config.listeners.truncate(1);
            config.listeners[0].addr = listen;
            if admin.is_some() {
                config.admin.addr = admin;
            }
            run(config, Some(backend), None)
        }
        Command::Backend { listen } => {
            logging::init("info");
            runtime(0).map_or(ExitCode::FAILURE, |rt| {
                rt.block_on(async {
                    let Signals { term, int, .. } = Signals::install();
                    match demo::Backend::start(listen).await {
                        Ok(b) => {
                            tracing::info!(addr = %b.addr(), "demo backend listening");
                            wait_for_signal(term, int).await;
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("zgate: cannot listen on {listen}: {e}");
                            ExitCode::FAILURE
                        }
                    }
                })
            })
        }
    }
}

/// `zgate check-config FILE`: the same check start runs (limits mapped, TLS files loaded,
/// every range, the start mode against the state file): what passes here starts, binding the
/// listeners aside.
fn check_config(path: &std::path::Path) -> ExitCode {
    let checked = Checked::load(path).and_then(|c| {
        c.check_start().map_err(|e| CheckError {
            file: Some(path.to_owned()),
            ..e
        })?;
        Ok(c)
    });
    match checked {
        Ok(c) => {
            println!(
                "{}: ok ({} listener(s), {} backend(s))",
                path.display(),
                c.config.listeners.len(),
                c.config.backends.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(workers: usize) -> Option<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    match builder.build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("zgate: cannot start the runtime: {e}");
            None
        }
    }
}

/// The control plane's runtime (signals, the admin API, the limiter's tick, the fleet): one
/// thread; the data path runs on the server's own worker threads.
fn control_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("zgate: cannot start the runtime: {e}");
            None
        }
    }
}

/// Runs the proxy until SIGTERM or SIGINT, then drains; reloads `path` on SIGHUP. With
/// `demo_backend`, also runs the embedded backend there and makes it the only backend.
fn run(
    mut config: Config,
    demo_backend: Option<std::net::SocketAddr>,
    path: Option<std::path::PathBuf>,
) -> ExitCode {
    zgate_proxy::log::init(&config.log);
    let Some(rt) = control_runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let _backend = match demo_backend {
            Some(addr) => match demo::Backend::start(addr).await {
                Ok(b) => {
                    config.backends = vec![Backend {
                        addr: b.addr().to_string(),
                    }];
                    Some(b)
                }
                Err(e) => {
                    eprintln!(
                        "zgate: demo backend cannot listen on {addr}: {e} (try --backend ADDR)"
                    );
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        tracing::info!(
            version = cli::VERSION,
            listeners = config.listeners.len(),
            backends = config.backends.len(),
            "zgate starting"
        );
        // Handlers before the first `listening` line: a signal sent as soon as zgate is seen up
        // must not meet the default action (terminate) still in place.
        let signals = Signals::install();
        let server = match Server::start_with_path(config, path).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("zgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let (Some(backend), Some(addr)) = (&_backend, server.local_addrs().first()) {
            print_demo_help(*addr, backend.addr());
        }
        wait_for_stop_reloading(&server, signals).await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        match server.shutdown().await {
            zgate_proxy::server::Shutdown::Drained => tracing::info!("all connections finished"),
            zgate_proxy::server::Shutdown::GraceExpired(n) => {
                tracing::warn!(cut = n, "grace period over; cut the remaining connections")
            }
        }
        ExitCode::SUCCESS
    })
}

/// The signals zgate handles; tokio keeps a handler installed once its stream is created.
struct Signals {
    hup: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup()).ok();
        if hup.is_none() {
            tracing::warn!("no SIGHUP handler: reload through the admin API only");
        }
        Signals {
            hup,
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }
}

/// Waits for SIGTERM or SIGINT; on each SIGHUP, reloads the config (the server logs the result).
async fn wait_for_stop_reloading(server: &Server, signals: Signals) {
    let Signals { hup, term, int } = signals;
    let stop = wait_for_signal(term, int);
    tokio::pin!(stop);
    let Some(mut hup) = hup else {
        return stop.await;
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = server.reload();
            }
        }
    }
}

async fn wait_for_signal(
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
) {
    match (term, int) {
        (Some(mut term), Some(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, fall back to Ctrl-C only.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn print_demo_help(proxy: std::net::SocketAddr, backend: std::net::SocketAddr) {
    println!(
        "\nzgate demo: proxy on http://{proxy} in front of the embedded backend on {backend}\n\
         Try:\n  \
         curl -i http://{proxy}/\n  \
         curl -i --http2-prior-knowledge http://{proxy}/headers\n  \
         curl --data-binary 'hello, zgate' http://{proxy}/echo\n  \
         curl -s -o /dev/null -w '%{{size_download}} bytes\\n' 'http://{proxy}/bytes?n=10485760'\n  \
         curl -i 'http://{proxy}/slow?ms=1500'\n\
         Ctrl-C stops it (in-flight requests finish first).\n"
    );
}
