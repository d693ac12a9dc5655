//! The fleet task's actions: what each [`Action`] of the state machine does to the limiter
//! and to Redis, every Redis exchange through the circuit breaker.

use std::time::Duration;

use zgate_limiter::{Change, Mode, Model};
use zgate_training::ModelParams;

use crate::core::{Action, Local};
use crate::driver::Driver;
use crate::event::{Envelope, Event};
use crate::redis_io::{now_ms, Redis, RedisError};
use crate::snapshot::{self, Snapshot};
use crate::status::Status;

impl Driver {
    pub(crate) async fn exec(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.exec_one(action).await;
        }
    }

    async fn exec_one(&mut self, action: Action) {
        match action {
            Action::ApplyBlock {
                prefix,
                expires_ms,
                reason,
            } => {
                let now = (self.clock)();
                let left = Duration::from_millis(expires_ms.saturating_sub(now_ms()));
                if self
                    .limiter
                    .apply_block(prefix, now.saturating_add(left), reason, now)
                    .is_err()
                {
                    Status::add(&self.status.dropped, 1);
                }
            }
            Action::ApplyUnblock { prefix } => {
                self.limiter.apply_unblock(prefix);
            }
            Action::StartTraining { epoch } => {
                let _ = self.limiter.apply_mode(Mode::Training, (self.clock)());
                tracing::info!(epoch, "fleet: training started fleet-wide");
            }
            Action::EndTraining { epoch, mode } => {
                match self.limiter.apply_mode(mode, (self.clock)()) {
                    Ok(Some(p)) => self.put_snapshot(epoch, &Snapshot::of(&p, true)).await,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(epoch, error = %e, "fleet: training not ended here"),
                }
            }
            Action::ImportModel { epoch } => self.import(epoch).await,
            Action::Publish(event) => self.publish(event).await,
            Action::AssignEpoch => self.assign_epoch().await,
            Action::PublishSnapshot { epoch, snapshot } => {
                let s = match snapshot {
                    Some(s) => *s,
                    None => match self.limiter.training_preview() {
                        Some(p) => Snapshot::of(&p, false),
                        None => return,
                    },
                };
                self.put_snapshot(epoch, &s).await;
            }
            Action::BuildModel { epoch } => self.build(epoch).await,
        }
    }

    /// Runs a Redis exchange through the breaker; `None` if refused or failed.
    async fn call<T, F: std::future::Future<Output = Result<T, RedisError>>>(
        &mut self,
        f: impl FnOnce(Redis) -> F,
    ) -> Option<T> {
        let redis = self.redis.clone()?;
        if !self.breaker.allow(now_ms()) {
            return None;
        }
        match f(redis).await {
            Ok(v) => {
                self.breaker.success();
                Some(v)
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    async fn publish(&mut self, event: Event) {
        let env = Envelope {
            origin: self.core.instance().to_owned(),
            event,
        };
        let sent = match self.redis.clone() {
            Some(_) if self.core.is_connected() => {
                let e = env.clone();
                self.call(|r| async move { r.publish(&e).await })
                    .await
                    .is_some()
            }
            _ => false,
        };
        if sent {
            Status::add(&self.status.published, 1);
        } else {
            self.core.publish_failed(env.event);
        }
    }

    async fn assign_epoch(&mut self) {
        let Some(epoch) = self.call(|r| async move { r.next_epoch().await }).await else {
            tracing::warn!("fleet: training started on this instance only (Redis unreachable)");
            return;
        };
        self.core.epoch_assigned(epoch, now_ms());
        tracing::info!(
            epoch,
            "fleet: training started fleet-wide from this instance"
        );
        self.publish(Event::TrainingStarted { epoch }).await;
    }

    async fn put_snapshot(&mut self, epoch: u64, s: &Snapshot) {
        let instance = self.core.instance().to_owned();
        let s = s.clone();
        self.call(|r| async move { r.put_snapshot(epoch, &instance, &s).await })
            .await;
    }

    /// Sums every snapshot of `epoch` into the model, writes it once, announces it, imports it.
    async fn build(&mut self, epoch: u64) {
        let Some(snaps) = self.call(|r| async move { r.snapshots(epoch).await }).await else {
            return;
        };
        let mut good = Vec::with_capacity(snaps.len());
        for (instance, s) in snaps {
            match s {
                Ok(s) => good.push(s),
                Err(e) => {
                    tracing::warn!(epoch, instance = %instance.escape_debug(), error = %e, "fleet: snapshot skipped")
                }
            }
        }
        let model = Model::from_populations(epoch, &snapshot::sum(&good), &ModelParams::default());
        let Ok(json) = serde_json::to_string(&model) else {
            return;
        };
        let wrote = self
            .call(|r| async move { r.put_model(epoch, &json).await })
            .await;
        if wrote == Some(true) {
            tracing::info!(epoch, instances = good.len(), "fleet: model written");
            self.publish(Event::Model { epoch }).await;
        }
        self.import(epoch).await;
    }

    async fn import(&mut self, epoch: u64) {
        let Some(Some(json)) = self.call(|r| async move { r.model(epoch).await }).await else {
            return;
        };
        match serde_json::from_str::<Model>(&json) {
            Ok(model) => {
                let n = model.metrics.iter().map(|m| m.n).max().unwrap_or(0);
                if let Err(e) = self.limiter.import_model(model) {
                    tracing::warn!(epoch, error = %e, "fleet: model refused");
                    return;
                }
                self.core.model_imported(epoch);
                tracing::info!(epoch, clients = n, "fleet: model imported");
            }
            Err(e) => tracing::warn!(epoch, error = %e, "fleet: stored model unusable"),
        }
    }
}

/// The fleet's view of a limiter change at `now_ms` (Unix ms).
pub fn local_of(change: Change, now_ms: u64) -> Option<Local> {
    match change {
        Change::Blocked { entry, now } => {
            let left_ms = entry.until.0.saturating_sub(now.0) / 1_000_000;
            Some(Local::Block {
                prefix: entry.prefix,
                expires_ms: now_ms.saturating_add(left_ms),
                reason: entry.reason,
            })
        }
        Change::Unblocked { prefix } => Some(Local::Unblock { prefix }),
        Change::Mode {
            mode: Mode::Training,
            ..
        } => Some(Local::TrainingStarted),
        Change::Mode {
            mode: mode @ (Mode::Defence | Mode::Monitor),
            ended: Some(p),
            ..
        } => Some(Local::TrainingEnded {
            mode,
            snapshot: Box::new(Snapshot::of(&p, true)),
        }),
        Change::Mode {
            mode: Mode::Disabled,
            ended: Some(_),
            ..
        } => Some(Local::TrainingStopped),
        Change::Mode { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zgate_limiter::{BlockEntry, IpPrefix, Nanos};

    #[test]
    fn a_local_block_keeps_its_remaining_duration_in_wall_time() {
        let prefix = IpPrefix::host([192, 0, 2, 1].into());
        let entry = BlockEntry {
            prefix,
            until: Nanos(12_000_000_000),
            reason: None,
            value: 0,
            z: 0.0,
        };
        let change = Change::Blocked {
            entry,
            now: Nanos(2_000_000_000),
        };
        let local = local_of(change, 1_700_000_000_000);
        let expect = Local::Block {
            prefix,
            expires_ms: 1_700_000_010_000,
            reason: None,
        };
        assert_eq!(local, Some(expect));
        let monitor = Change::Mode {
            mode: Mode::Monitor,
            epoch: 3,
            ended: None,
        };
        assert_eq!(local_of(monitor, 0), None, "not the end of a training");
    }
}
