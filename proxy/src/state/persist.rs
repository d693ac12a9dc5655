//! Model persistence: the learned model and the mode, the runtime overrides and the manual
//! blocks, saved atomically to `[limits] state_file` and loaded at start, so a restarted zgate
//! resumes defence at once with the operator's settings.
//!
//! The file is JSON: `{"version": 1, "mode": "defence", "model": {...}, "saved_at": 1763779200,
//! "trained_at": 1763779100, "overrides": {"z.cpu": 5.0}, "blocks": [{"prefix":
//! "192.0.2.0/24", "expires_at": 1763782800}]}` (times in seconds since the Unix epoch; `model`
//! may be `null`; `overrides` and `blocks` may be absent). Per metric the model holds `n`,
//! `mean`, `std`, `quantiles` and `buckets` (the histogram's non-empty buckets as `[lower,
//! count]` pairs); files from before histograms, without the last two, still load (no
//! distribution). It is written by
//! [`atomic_file::write`]: mode 0600, a temporary file with a random name created exclusively
//! and never through a symlink, fsync, rename. A missing file is normal (first start); a
//! truncated or corrupted one is reported with its path and the parse error, and zgate starts
//! without a model. Every number read is bounded: the model's epoch (at most
//! [`zgate_limiter::MAX_EPOCH`]), the overrides (as the API checks them), block expiries (at
//! most 365 days ahead).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zgate_limiter::{Limiter, Mode, Model, UnknownMode};

use super::atomic_file;

/// The state file format version this zgate writes and reads.
pub const STATE_VERSION: u32 = 1;

/// The contents of a state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// Always [`STATE_VERSION`].
    pub version: u32,
    /// The limiter's mode when saved (`"defence"`, ...).
    pub mode: String,
    /// The model in use when saved, if any.
    pub model: Option<Model>,
    /// When the file was written, seconds since the Unix epoch.
    pub saved_at: u64,
    /// When the model was learned (training ended) or imported, seconds since the Unix epoch;
    /// `None` if unknown.
    #[serde(default)]
    pub trained_at: Option<u64>,
    /// The runtime overrides (`state/overrides.rs`), by key.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub overrides: Map<String, Value>,
    /// The manual blocks (automatic ones are not kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<SavedBlock>,
}

/// A manual block in the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SavedBlock {
    /// The blocked address or network, `192.0.2.7/32` or `2001:db8::/64`.
    pub prefix: String,
    /// When the block ends, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// What the state file keeps besides the mode and model: set by the admin API after a change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runtime {
    /// The overrides, as [`SavedState::overrides`].
    pub overrides: Map<String, Value>,
    /// The manual blocks.
    pub blocks: Vec<SavedBlock>,
}

impl SavedState {
    /// The saved mode, parsed.
    pub fn mode(&self) -> Result<Mode, UnknownMode> {
        self.mode.parse::<Mode>()
    }
}

/// Why a state file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// There is no file (first start): not an error worth a warning.
    Missing,
    /// The file exists but cannot be read or is not a valid state (truncated, corrupted, wrong
    /// version); the message says which and names the file.
    Invalid(String),
}

/// Reads and validates the state file at `path`.
pub fn load(path: &Path) -> Result<SavedState, LoadError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => {
            return Err(LoadError::Invalid(format!(
                "{}: cannot read: {e}",
                path.display()
            )))
        }
    };
    let state: SavedState = serde_json::from_slice(&text).map_err(|e| {
        LoadError::Invalid(format!("{}: not a valid state file: {e}", path.display()))
    })?;
    if state.version != STATE_VERSION {
        return Err(LoadError::Invalid(format!(
            "{}: version {} is not supported (expected {STATE_VERSION})",
            path.display(),
            state.version
        )));
    }
    state
        .mode()
        .map_err(|e| LoadError::Invalid(format!("{}: `mode`: {e}", path.display())))?;
    if let Some(model) = &state.model {
        if model.epoch > zgate_limiter::MAX_EPOCH {
            return Err(LoadError::Invalid(format!(
                "{}: `model.epoch` {} is out of range: at most {}",
                path.display(),
                model.epoch,
                zgate_limiter::MAX_EPOCH
            )));
        }
        model
            .validate()
            .map_err(|e| LoadError::Invalid(format!("{}: `model`: {e}", path.display())))?;
    }
    Ok(state)
}

/// Writes `state` to `path` atomically and privately (see [`atomic_file::write`]).
pub fn save(path: &Path, state: &SavedState) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    json.push(b'\n');
    atomic_file::write(path, &json)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Keeps the state file in step with the limiter: [`Persist::sync`] saves when the model or the
/// mode changed since the last save, or when [`Persist::set_runtime`] gave new overrides or
/// manual blocks. Called by the ticker (training ending by itself) and by
/// the admin API right after a change (so the file is written when the API answers).
pub struct Persist {
    path: Option<PathBuf>,
    last: Mutex<Seen>,
}

/// The overrides and manual blocks to save, and whether they changed since the last save.
#[derive(Default)]
struct Pending {
    runtime: Runtime,
    dirty: bool,
}

/// What was last saved (or seen), to notice a change.
struct Seen {
    model: Option<Arc<Model>>,
    mode: Mode,
    /// Epoch of the model last seen, to tell a newly trained model from a re-parameterised one.
    model_epoch: Option<u64>,
    trained_at: Option<u64>,
    /// The overrides and manual blocks.
    pending: Pending,
}

impl Persist {
    /// Tracks `limiter` (its state now counts as saved) and saves to `path`, if any.
    /// `trained_at` is when the current model was learned, if known (from the loaded file).
    /// `runtime` is what the file held besides the model (it counts as saved too).
    pub fn new(
        path: Option<PathBuf>,
        limiter: &Limiter,
        trained_at: Option<u64>,
        runtime: Runtime,
    ) -> Persist {
        let model = limiter.model();
        Persist {
            path,
            last: Mutex::new(Seen {
                model_epoch: model.as_ref().map(|m| m.epoch),
                model,
                mode: limiter.mode(),
                trained_at,
                pending: Pending {
                    runtime,
                    dirty: false,
                },
            }),
        }
    }

    /// Records new overrides and manual blocks; the next [`Persist::sync`] saves them.
    pub fn set_runtime(&self, runtime: Runtime) {
        let mut seen = self.lock();
        if seen.pending.runtime != runtime {
            seen.pending = Pending {
                runtime,
                dirty: true,
            };
        }
    }

    /// The state file, if persistence is on.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// When the model in use was learned or imported, seconds since the Unix epoch.
    pub fn trained_at(&self, limiter: &Limiter) -> Option<u64> {
        self.observe(limiter);
        self.lock().trained_at
    }

    /// Marks the model in use as new now (an import).
    pub fn model_imported(&self) {
        let mut seen = self.lock();
        seen.trained_at = Some(unix_now());
        seen.model_epoch = None;
    }

    /// Saves if the model or the mode changed since the last save. Returns the error of a
    /// failed write (also logged); `Ok(false)` when there was nothing to save.
    pub fn sync(&self, limiter: &Limiter) -> Result<bool, String> {
        let mut seen = self.lock();
        let model = limiter.model();
        let mode = limiter.mode();
        let same_model = match (&seen.model, &model) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        Self::note_epoch(&mut seen, &model);
        if same_model && seen.mode == mode && !seen.pending.dirty {
            return Ok(false);
        }
        seen.model = model.clone();
        seen.mode = mode;
        seen.pending.dirty = false;
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let state = SavedState {
            version: STATE_VERSION,
            mode: mode.name().to_owned(),
            model: model.map(|m| Model::clone(&m)),
            saved_at: unix_now(),
            trained_at: seen.trained_at,
            overrides: seen.pending.runtime.overrides.clone(),
            blocks: seen.pending.runtime.blocks.clone(),
        };
        match save(path, &state) {
            Ok(()) => {
                tracing::info!(file = %path.display(), mode = %mode, "state saved");
                Ok(true)
            }
            Err(e) => {
                let msg = format!("{}: cannot save state: {e}", path.display());
                tracing::warn!("{msg}");
                Err(msg)
            }
        }
    }

    fn observe(&self, limiter: &Limiter) {
        let model = limiter.model();
        Self::note_epoch(&mut self.lock(), &model);
    }

    fn note_epoch(seen: &mut Seen, model: &Option<Arc<Model>>) {
        let epoch = model.as_ref().map(|m| m.epoch);
        if epoch.is_some() && epoch != seen.model_epoch {
            if seen.model_epoch.is_some() || seen.trained_at.is_none() {
                seen.trained_at = Some(unix_now());
            }
            seen.model_epoch = epoch;
            if let Some(m) = model {
                warn_thin(m);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // `Seen` is plain data, consistent after every statement: a poisoned lock is usable.
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Logs, once per new model, the metrics that are not enforceable (learned from fewer than
/// `min_clients` clients) and the static cap each falls back to.
fn warn_thin(model: &Model) {
    let thin: Vec<String> = model
        .thin_metrics()
        .map(|(m, n)| format!("{m} (n = {n}, static cap {})", model.params.fallback(m)))
        .collect();
    if !thin.is_empty() {
        tracing::warn!(
            epoch = model.epoch,
            min_clients = model.params.min_clients,
            "model: not enforceable, too few clients, falling back to static caps \
             (limits.fallback): {}",
            thin.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zgate-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn model() -> Model {
        // Connections with its distribution; the other metrics as saved before histograms.
        let json = r#"{"epoch":3,"metrics":{
            "connections":{"n":20,"mean":2.0,"std":1.0,
                "quantiles":{"p50":2,"p90":3,"p99":4,"p99_9":4,"max":4},
                "buckets":[[1,5],[2,8],[3,5],[4,2]]},
            "requests_nonidempotent":{"n":20,"mean":0.0,"std":0.0},
            "requests":{"n":20,"mean":1.5,"std":0.5},
            "memory":{"n":20,"mean":20000.0,"std":100.0},
            "cpu":{"n":20,"mean":500.0,"std":50.0},
            "fragmentation":{"n":0,"mean":0.0,"std":0.0}}}"#;
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn saves_atomically_and_loads_back() {
        let d = dir("roundtrip");
        let path = d.join("state.json");
        let state = SavedState {
            version: 1,
            mode: "defence".into(),
            model: Some(model()),
            saved_at: 10,
            trained_at: Some(5),
            overrides: serde_json::json!({"z.cpu": 5.0})
                .as_object()
                .unwrap()
                .clone(),
            blocks: vec![SavedBlock {
                prefix: "192.0.2.0/24".into(),
                expires_at: 20,
            }],
        };
        save(&path, &state).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, state);
        let model = loaded.model.unwrap();
        let conn = model.get(zgate_limiter::Metric::Connections);
        assert_eq!(conn.quantiles.map(|q| q.p90), Some(3));
        assert_eq!(conn.buckets.count(), 20);
        assert!(model.get(zgate_limiter::Metric::Cpu).buckets.is_empty());
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(names.len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_truncated_and_corrupted_files_are_told_apart() {
        let d = dir("bad");
        let path = d.join("state.json");
        assert!(matches!(load(&path), Err(LoadError::Missing)));
        let state = SavedState {
            version: 1,
            mode: "defence".into(),
            model: Some(model()),
            saved_at: 10,
            trained_at: None,
            overrides: Map::new(),
            blocks: Vec::new(),
        };
        let json = serde_json::to_string(&state).unwrap();
        std::fs::write(&path, &json[..json.len() / 2]).unwrap();
        match load(&path) {
            Err(LoadError::Invalid(e)) => {
                assert!(e.contains("state.json") && e.contains("EOF"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, json.replace("\"defence\"", "\"offence\"")).unwrap();
        assert!(matches!(load(&path), Err(LoadError::Invalid(e)) if e.contains("mode")));
        std::fs::write(&path, json.replace("\"version\":1", "\"version\":9")).unwrap();
        assert!(matches!(load(&path), Err(LoadError::Invalid(e)) if e.contains("version 9")));
        std::fs::write(
            &path,
            json.replace("\"epoch\":3", "\"epoch\":18446744073709551615"),
        )
        .unwrap();
        assert!(matches!(load(&path), Err(LoadError::Invalid(e)) if e.contains("model.epoch")));
        let _ = std::fs::remove_dir_all(&d);
    }
}
