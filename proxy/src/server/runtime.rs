//! The tokio runtime the proxy runs on: `workers` threads named `zgate-worker`, each telling
//! the CPU accounting when it parks (`account::run_share`), so that a poll's wall time is
//! charged as the CPU time it took even on a loaded machine. `main` and the tests that measure
//! CPU build it here, so they run what production runs.

use tokio::runtime::{Builder, Runtime};

use crate::account::run_share;

/// A multi-threaded runtime with `workers` worker threads (0: one per core), all IO and time
/// drivers on.
pub fn worker_runtime(workers: usize) -> std::io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder
        .enable_all()
        .thread_name("zgate-worker")
        .on_thread_park(run_share::on_park)
        .on_thread_unpark(run_share::on_unpark);
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder.build()
}
