//! What a start reads back: the state file, and the limiter built from it.

use std::path::Path;

use zgate_config::Config;
use zgate_limiter::{Limiter, LimiterConfig};

use crate::clock::Clock;
use crate::state::persist::{self, LoadError};

use super::StartError;

/// Reads the state file, if configured. A missing file is normal; a bad one is reported and
/// ignored (zgate starts without a model rather than not at all).
pub(super) fn load_state(path: Option<&Path>) -> Option<persist::SavedState> {
    let path = path?;
    match persist::load(path) {
        Ok(s) => {
            tracing::info!(
                file = %path.display(),
                mode = %s.mode,
                model = s.model.is_some(),
                "state loaded"
            );
            Some(s)
        }
        Err(LoadError::Missing) => {
            tracing::info!(file = %path.display(), "no saved state yet; starting without a model");
            None
        }
        Err(LoadError::Invalid(e)) => {
            tracing::warn!("state file unusable, starting without a saved model: {e}");
            None
        }
    }
}

/// The limiter at start: the saved model, and the saved mode unless `[limits] mode` is set
/// (the config wins; without it a restarted zgate resumes in the mode it had, e.g. defence).
pub(super) fn start_limiter(
    config: &Config,
    limiter_config: &LimiterConfig,
    saved: Option<&persist::SavedState>,
    clock: Clock,
    workers: usize,
) -> Result<Limiter, StartError> {
    let now = clock.now();
    let model = saved.and_then(|s| s.model.clone());
    let mut limiter_config = limiter_config.clone();
    if limiter_config.training_shards == 0 {
        // One exclusive training shard per thread that records samples: each worker, and the
        // accept thread (a connection's first sample is taken at admission).
        limiter_config.training_shards = workers + 1;
    }
    let limiter = Limiter::new(limiter_config, model, now).map_err(StartError::Limiter)?;
    if config.limits.mode.is_none() {
        if let Some(mode) = saved.and_then(|s| s.mode().ok()) {
            if let Err(e) = limiter.set_mode(mode, now) {
                tracing::warn!(error = %e, "saved mode not resumed");
            }
        }
    }
    tracing::info!(
        mode = %limiter.mode(),
        model = limiter.model().is_some(),
        "limiter ready"
    );
    Ok(limiter)
}
