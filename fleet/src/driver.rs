//! The fleet task: runs the [`Fleet`] state machine against Redis and a limiter.
//!
//! One tokio task owns the state machine. It hears of local changes through the limiter's sink
//! (a bounded channel of 4096 changes; `try_send`, so a worker never waits, and a full queue is
//! counted as dropped), of remote events from a tail task (`XREAD BLOCK` on a connection of its
//! own), and of time from a 100 ms tick (reconnects, live snapshots, model builds). Every
//! Redis exchange goes through the circuit breaker and has `fleet.timeout`. The connection
//! state is logged at `warn` once per change.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zgate_limiter::{Change, Limiter, Mode, Model, Nanos};
use zgate_training::ModelParams;

use crate::breaker::Breaker;
use crate::core::{Action, Fleet, Local, Timing};
use crate::event::{Envelope, Event};
use crate::redis_io::{now_ms, Entry, Keys, Redis, RedisError, Tail};
use crate::snapshot::{self, Snapshot};
use crate::status::{Status, StatusView};

/// Local changes queued for the task, at most.
const QUEUE: usize = 4096;
/// The task's tick.
const TICK: Duration = Duration::from_millis(100);

/// What the task needs to know.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Redis URL, password included (never logged).
    pub url: String,
    /// This instance's name.
    pub instance: String,
    /// The key prefix (hash tag).
    pub prefix: String,
    /// Deadline of every Redis command.
    pub timeout: Duration,
    /// Outbox bound, events.
    pub outbox: usize,
    /// Snapshot and model-build timing.
    pub timing: Timing,
}

/// Why the fleet cannot start.
#[derive(Debug)]
pub enum StartError {
    /// The Redis client refuses the URL.
    Url(redis::RedisError),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Url(e) => write!(f, "`fleet.redis`: not a usable Redis URL: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The limiter's clock.
pub type ClockFn = Arc<dyn Fn() -> Nanos + Send + Sync>;

/// The running fleet task; stopping it (or dropping this) detaches the limiter.
pub struct FleetHandle {
    status: Arc<Status>,
    task: JoinHandle<()>,
    limiter: Limiter,
    instance: String,
}

impl FleetHandle {
    /// The fleet's state now.
    pub fn status(&self) -> StatusView {
        self.status.view()
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Stops the task.
    pub fn stop(&self) {
        self.limiter.clear_change_sink();
        self.task.abort();
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the fleet task for `limiter` (inside a tokio runtime). Fails only on a URL the
/// client refuses; an unreachable Redis is retried in the background.
pub fn start(
    settings: Settings,
    limiter: Limiter,
    clock: ClockFn,
) -> Result<FleetHandle, StartError> {
    let client = Client::open(settings.url.as_str()).map_err(StartError::Url)?;
    let status = Arc::new(Status::default());
    let (tx, rx) = mpsc::channel(QUEUE);
    let st = status.clone();
    limiter.set_change_sink(move |c| {
        if tx.try_send(c).is_err() {
            Status::add(&st.dropped, 1);
        }
    });
    let (tail_tx, tail_rx) = mpsc::channel(16);
    let driver = Driver {
        core: Fleet::new(settings.instance.clone(), settings.outbox, settings.timing),
        keys: Keys::new(&settings.prefix),
        client,
        redis: None,
        breaker: Breaker::default(),
        limiter: limiter.clone(),
        clock,
        status: status.clone(),
        timeout: settings.timeout,
        tail: None,
        tail_gen: 0,
        tail_tx,
        logged_up: None,
        data_id: None,
    };
    let task = tokio::spawn(driver.run(rx, tail_rx));
    Ok(FleetHandle {
        status,
        task,
        limiter,
        instance: settings.instance,
    })
}

enum TailMsg {
    Entries(u64, Vec<Entry>),
    Failed(u64, RedisError),
}

struct Driver {
    core: Fleet,
    keys: Keys,
    client: Client,
    redis: Option<Redis>,
    breaker: Breaker,
    limiter: Limiter,
    clock: ClockFn,
    status: Arc<Status>,
    timeout: Duration,
    tail: Option<JoinHandle<()>>,
    tail_gen: u64,
    tail_tx: mpsc::Sender<TailMsg>,
    /// The connection state last logged.
    logged_up: Option<bool>,
    /// The id of Redis's data at the last resync (see `redis_io`).
    data_id: Option<String>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Change>, mut tail_rx: mpsc::Receiver<TailMsg>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(change) = rx.recv() => {
                    if let Some(local) = local_of(change, now_ms()) {
                        let actions = self.core.local(local, now_ms());
                        self.exec(actions).await;
                    }
                }
                Some(msg) = tail_rx.recv() => self.on_tail(msg).await,
                _ = tick.tick() => {
                    if !self.core.is_connected() {
                        self.connect().await;
                    }
                    let actions = self.core.tick(now_ms());
                    self.exec(actions).await;
                }
            }
            self.publish_status();
        }
    }

    async fn on_tail(&mut self, msg: TailMsg) {
        match msg {
            TailMsg::Entries(gen, entries) if gen == self.tail_gen => {
                for (sent_ms, env) in entries {
                    let Ok(env) = env else {
                        Status::add(&self.status.malformed, 1);
                        continue;
                    };
                    let actions = self.core.remote(env, sent_ms, now_ms());
                    if !actions.is_empty() {
                        Status::add(&self.status.received, 1);
                    }
                    self.exec(actions).await;
                }
            }
            TailMsg::Failed(gen, e) if gen == self.tail_gen => self.failed(&e),
            _ => {}
        }
    }

    /// Connects (if the breaker lets it), resynchronises, replays the outbox, starts the tail.
    async fn connect(&mut self) {
        let now = now_ms();
        if !self.breaker.allow(now) {
            return;
        }
        let redis = match self.redis.clone() {
            Some(r) => r,
            None => match Redis::connect(&self.client, self.keys.clone(), self.timeout).await {
                Ok(r) => {
                    self.redis = Some(r.clone());
                    r
                }
                Err(e) => return self.failed(&e),
            },
        };
        let candidate = format!("{}-{}-{now}", self.core.instance(), std::process::id());
        let state = async {
            Ok::<_, RedisError>((
                redis.last_id().await?,
                redis.state(now_ms(), &candidate).await?,
            ))
        };
        let (last, (mut state, id)) = match state.await {
            Ok(s) => s,
            Err(e) => return self.failed(&e),
        };
        self.breaker.success();
        state.fresh = self.data_id.as_ref().is_some_and(|old| *old != id);
        if state.fresh {
            tracing::warn!("fleet: Redis lost its data; publishing this instance's blocks again");
        }
        self.data_id = Some(id);
        let actions = self.core.resync(state, now_ms());
        self.log_state(true, None);
        self.start_tail(last);
        self.exec(actions).await;
    }

    fn start_tail(&mut self, last: String) {
        if let Some(t) = self.tail.take() {
            t.abort();
        }
        self.tail_gen += 1;
        let (gen, tx, client, keys, timeout) = (
            self.tail_gen,
            self.tail_tx.clone(),
            self.client.clone(),
            self.keys.clone(),
            self.timeout,
        );
        self.tail = Some(tokio::spawn(async move {
            let mut tail = match Tail::connect(&client, &keys, last, timeout).await {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(TailMsg::Failed(gen, e)).await;
                    return;
                }
            };
            loop {
                match tail.next().await {
                    Ok(v) if v.is_empty() => {}
                    Ok(v) => {
                        if tx.send(TailMsg::Entries(gen, v)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(TailMsg::Failed(gen, e)).await;
                        return;
                    }
                }
            }
        }));
    }

    /// A Redis exchange failed: the breaker counts it; the fleet is down until a resync.
    fn failed(&mut self, e: &RedisError) {
        self.breaker.failure(now_ms());
        if let Some(t) = self.tail.take() {
            t.abort();
        }
        self.core.disconnected();
        self.log_state(false, Some(e));
    }

    fn log_state(&mut self, up: bool, e: Option<&RedisError>) {
        if self.logged_up == Some(up) {
            return;
        }
        self.logged_up = Some(up);
        let instance = self.core.instance();
        if up {
            tracing::warn!(
                instance,
                "fleet: connected to Redis; block list resynchronised"
            );
        } else {
            let error = e.map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(
                instance,
                %error,
                outbox = self.core.outbox().len(),
                "fleet: Redis unreachable; blocking locally, changes wait in the outbox, the model stays"
            );
        }
    }

    fn publish_status(&self) {
        let (s, c, r) = (&self.status, &self.core, Ordering::Relaxed);
        s.connected.store(c.is_connected(), r);
        s.outbox.store(c.outbox().len() as u64, r);
        s.lag_ms.store(c.lag_ms(), r);
        let (epoch, training) = c.training();
        s.epoch.store(epoch.unwrap_or(0), r);
        s.training.store(training, r);
        s.model_epoch.store(c.model_epoch(), r);
    }

    async fn exec(&mut self, actions: Vec<Action>) {
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
                self.limiter.import_model(model);
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
