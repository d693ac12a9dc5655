//! What the fuzz targets that run the server's code share: a world built once per process
//! (a current-thread runtime, the parsed config, the limiter's and the proxy's limits, a
//! clock) and, made fresh for every input, what an input can change: the limiter (its
//! clients and their counters, glitch windows and training samples, its mode, model, block
//! list and thresholds). Inputs are thereby independent of the ones run before them, and an
//! input pays only for a limiter (no client, one training shard: a few small allocations),
//! not for a runtime, a config parse or a backend.

use std::path::Path;
use std::sync::Arc;

use tokio::runtime::Runtime;
use zgate_config::Config;
use zgate_limiter::{Limiter, LimiterConfig};

use crate::clock::Clock;
use crate::limits::{self, ProxyLimits};

/// Clients a fuzzed limiter tracks at most: one input has one or two clients.
const MAX_CLIENTS: usize = 64;

/// The process-wide part (see the module docs).
pub(super) struct World {
    /// Runs every input (current thread: the fuzzer's).
    pub runtime: Runtime,
    /// The config the world was built from.
    pub config: Arc<Config>,
    /// Its `[limits]` as the limiter takes them, with [`MAX_CLIENTS`] and one training shard.
    pub limiter_config: Arc<LimiterConfig>,
    /// Its `[limits]` as the proxy applies them.
    pub proxy_limits: ProxyLimits,
    /// The limiters' clock.
    pub clock: Clock,
}

impl World {
    /// A world on `runtime` for the config `text` (relative paths against `/`); `None` when
    /// the text is not a valid config (a bug of the caller: the fuzzer then runs nothing).
    pub fn new(runtime: Runtime, text: &str) -> Option<World> {
        let config = Config::parse(text, Path::new("/")).ok()?;
        let (mut limiter_config, proxy_limits) = limits::from_config(&config.limits).ok()?;
        limiter_config.max_clients = MAX_CLIENTS;
        limiter_config.training_shards = 1;
        Some(World {
            runtime,
            config: Arc::new(config),
            limiter_config: Arc::new(limiter_config),
            proxy_limits,
            clock: Clock::new(),
        })
    }

    /// A fresh limiter on the world's config, in its start mode, for one input.
    pub fn limiter(&self) -> Option<Limiter> {
        Limiter::new(
            LimiterConfig::clone(&self.limiter_config),
            None,
            self.clock.now(),
        )
        .ok()
    }
}

/// A current-thread runtime with IO and time.
pub(super) fn runtime() -> Option<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
}
