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
use zgate_limiter::{Change, Limiter, Nanos};

use crate::breaker::Breaker;
use crate::core::{Fleet, Timing};
pub use crate::exec::local_of;
use crate::redis_io::{now_ms, Entry, Keys, Redis, RedisError, Tail};
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
    /// `rediss://` only: PEM CA certificates trusted instead of the system's roots (`None`:
    /// the system's roots). The caller has checked them (`fleet.ca`).
    pub ca_pem: Option<Vec<u8>>,
}

/// Why the fleet cannot start.
#[derive(Debug)]
pub enum StartError {
    /// The Redis client refuses the URL.
    Url(redis::RedisError),
    /// The Redis client refuses the CA certificates of `fleet.ca`.
    Ca(redis::RedisError),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Url(e) => write!(f, "`fleet.redis`: not a usable Redis URL: {e}"),
            StartError::Ca(e) => write!(f, "`fleet.ca`: not usable for rediss://: {e}"),
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
    let client = client(&settings)?;
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

/// The Redis client of `settings.url`: over TLS (rustls with the `ring` provider, as the rest of
/// zgate) for `rediss://`, trusting `settings.ca_pem` if given, else the system's roots.
fn client(settings: &Settings) -> Result<Client, StartError> {
    let url = settings.url.as_str();
    if url.starts_with("rediss://") {
        // The redis crate builds its rustls config with the process's default provider; install
        // ring's unless one is installed already (an error here only says one is).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match &settings.ca_pem {
        Some(pem) => {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            let info =
                redis::IntoConnectionInfo::into_connection_info(url).map_err(StartError::Url)?;
            Client::build_with_tls(info, certs).map_err(StartError::Ca)
        }
        None => Client::open(url).map_err(StartError::Url),
    }
}

pub(crate) enum TailMsg {
    Entries(u64, Vec<Entry>),
    Failed(u64, RedisError),
}

pub(crate) struct Driver {
    pub(crate) core: Fleet,
    pub(crate) keys: Keys,
    pub(crate) client: Client,
    pub(crate) redis: Option<Redis>,
    pub(crate) breaker: Breaker,
    pub(crate) limiter: Limiter,
    pub(crate) clock: ClockFn,
    pub(crate) status: Arc<Status>,
    pub(crate) timeout: Duration,
    pub(crate) tail: Option<JoinHandle<()>>,
    pub(crate) tail_gen: u64,
    pub(crate) tail_tx: mpsc::Sender<TailMsg>,
    /// The connection state last logged.
    pub(crate) logged_up: Option<bool>,
    /// The id of Redis's data at the last resync (see `redis_io`).
    pub(crate) data_id: Option<String>,
}

impl Drop for Driver {
    /// The task was stopped (or ended): its tail goes too.
    fn drop(&mut self) {
        if let Some(t) = self.tail.take() {
            t.abort();
        }
    }
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
                    Ok(v) if v.is_empty() => {
                        if tx.is_closed() {
                            return;
                        }
                    }
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
    pub(crate) fn failed(&mut self, e: &RedisError) {
        self.breaker.failure(now_ms());
        self.status.set_error(e.to_string(), now_ms());
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
}
