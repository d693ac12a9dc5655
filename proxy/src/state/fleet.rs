//! `[fleet]`, started from the server's lifecycle: the `zgate-fleet` task that shares this
//! instance's blocks and training with the others through Redis. Without `[fleet]` nothing
//! starts and no Redis is needed. `[fleet]` changes apply at the next restart.

use std::sync::Arc;

use zgate_fleet::{FleetHandle, Settings, StartError, Timing};
use zgate_limiter::Limiter;

use crate::clock::Clock;

/// The running fleet task and what the admin API shows of its config.
pub(crate) struct FleetTask {
    /// The task.
    pub(crate) handle: FleetHandle,
    /// The Redis URL without its password.
    pub(crate) redis: String,
}

/// Starts the fleet task for `limiter` if `config` has `[fleet]`; `ca_pem` is `fleet.ca`'s
/// content as checked (see `fleet_ca.rs`).
pub(crate) fn start(
    config: Option<&zgate_config::Fleet>,
    ca_pem: Option<Vec<u8>>,
    limiter: &Limiter,
    clock: Clock,
) -> Result<Option<FleetTask>, StartError> {
    let Some(f) = config else {
        return Ok(None);
    };
    let settings = Settings {
        url: f.redis.as_secret_str().to_owned(),
        instance: f.instance.clone(),
        prefix: f.prefix.clone(),
        timeout: f.timeout,
        outbox: f.outbox,
        timing: Timing::default(),
        ca_pem,
    };
    let handle = zgate_fleet::start(settings, limiter.clone(), Arc::new(move || clock.now()))?;
    tracing::info!(instance = %f.instance, redis = %f.redis, prefix = %f.prefix, "fleet: started");
    Ok(Some(FleetTask {
        handle,
        redis: f.redis.to_string(),
    }))
}
