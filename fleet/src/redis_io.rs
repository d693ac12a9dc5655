//! The Redis side, thin: key names, and one function per exchange, each under a deadline.
//!
//! Keys (`P` is `fleet.prefix`, as a Cluster hash tag so every key is in one slot):
//! - `{P}:blocks`, sorted set: prefix → expiry (Unix ms), the authority for the block list;
//! - `{P}:events`, stream of [`Envelope`]s (trimmed to about 100000 entries), tailed by every
//!   instance with `XREAD BLOCK` on a connection of its own;
//! - `{P}:epoch`, the fleet's training epoch counter (`INCR`);
//! - `{P}:training`, hash `epoch`, `active` (0/1), `mode`: the fleet's training state;
//! - `{P}:snap:E`, hash instance → [`Snapshot`] for epoch E (kept 7 days);
//! - `{P}:model:E`, the model of epoch E as JSON, written once (`SET NX`); `{P}:model`, the
//!   latest model's epoch;
//! - `{P}:id`, set once by the first instance to reach an empty Redis: when it changes, Redis
//!   lost its data.
//!
//! Commands go through a `ConnectionManager` (it reconnects by itself), each under
//! `tokio::time::timeout`; the caller keeps the circuit breaker.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline, Value};
use zgate_limiter::{IpPrefix, Mode};

use crate::core::Resync;
use crate::event::{Envelope, Event};
use crate::snapshot::Snapshot;

/// Stream entries kept, about (`XADD MAXLEN ~`).
const STREAM_LEN: u64 = 100_000;
/// Snapshots are kept this long, s.
const SNAPSHOT_TTL_SECS: u64 = 7 * 24 * 3600;
/// `XREAD BLOCK` waits at most this, ms.
pub const TAIL_BLOCK_MS: u64 = 1000;

/// Why an exchange with Redis failed.
#[derive(Debug)]
pub enum RedisError {
    /// No answer within the deadline.
    Timeout,
    /// The client's error (connection refused, reset, a Redis error reply...).
    Redis(redis::RedisError),
}

impl core::fmt::Display for RedisError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RedisError::Timeout => f.write_str("Redis did not answer in time"),
            RedisError::Redis(e) => write!(f, "Redis: {e}"),
        }
    }
}

impl std::error::Error for RedisError {}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        RedisError::Redis(e)
    }
}

/// The fleet's key names.
#[derive(Clone, Debug)]
pub struct Keys {
    tag: String,
}

impl Keys {
    /// Keys under `prefix`, as the hash tag `{prefix}`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            tag: format!("{{{prefix}}}"),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.tag)
    }

    /// The stream.
    pub fn events(&self) -> String {
        self.key("events")
    }
}

/// A connection for commands, with the deadline every command gets.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    keys: Keys,
    timeout: Duration,
}

/// Runs `fut` under `timeout`.
async fn within<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(RedisError::Timeout),
    }
}

impl Redis {
    /// Connects (within `timeout`).
    pub async fn connect(
        client: &Client,
        keys: Keys,
        timeout: Duration,
    ) -> Result<Redis, RedisError> {
        // One attempt per connect: the circuit breaker paces the retries, and the attempt's own
        // error (refused, a TLS certificate not trusted) reaches `last_error` instead of the
        // deadline's.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(0)
            .set_max_delay(100);
        let conn = within(
            timeout * 2,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await?;
        Ok(Redis {
            conn,
            keys,
            timeout,
        })
    }

    async fn cmd<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        let mut c = self.conn.clone();
        within(self.timeout, cmd.query_async(&mut c)).await
    }

    async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, RedisError> {
        let mut c = self.conn.clone();
        within(self.timeout, pipe.query_async(&mut c)).await
    }

    /// The id of the stream's last entry (`0-0` when empty): tail from there after a resync.
    pub async fn last_id(&self) -> Result<String, RedisError> {
        let reply: Vec<(String, Value)> = self
            .cmd(
                redis::cmd("XREVRANGE")
                    .arg(self.keys.events())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        Ok(reply
            .into_iter()
            .next()
            .map_or_else(|| "0-0".into(), |(id, _)| id))
    }

    /// The fleet's state: blocks in force at `now_ms`, training, the latest model, and the
    /// data's id (`{P}:id`, set to `candidate` if absent); `fresh` is left to the caller.
    pub async fn state(
        &self,
        now_ms: u64,
        candidate: &str,
    ) -> Result<(Resync, String), RedisError> {
        let k = &self.keys;
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(k.key("id"))
            .arg(candidate)
            .arg("NX")
            .ignore();
        p.cmd("GET").arg(k.key("id"));
        p.cmd("ZRANGEBYSCORE")
            .arg(k.key("blocks"))
            .arg(now_ms + 1)
            .arg("+inf")
            .arg("WITHSCORES");
        p.cmd("HGETALL").arg(k.key("training"));
        p.cmd("GET").arg(k.key("model"));
        type Reply = (
            String,
            Vec<(String, u64)>,
            HashMap<String, String>,
            Option<u64>,
        );
        let (id, blocks, training, model): Reply = self.pipe(&p).await?;
        let blocks = blocks
            .into_iter()
            .filter_map(|(p, x)| Some((p.parse::<IpPrefix>().ok()?, x)))
            .collect();
        let training = (|| {
            let epoch = training.get("epoch")?.parse().ok()?;
            let active = training.get("active")? == "1";
            let mode = training
                .get("mode")
                .and_then(|m| m.parse().ok())
                .unwrap_or(Mode::Defence);
            Some((epoch, active, mode))
        })();
        let state = Resync {
            blocks,
            training,
            model,
            fresh: false,
        };
        Ok((state, id))
    }

    /// Publishes `env`: the stream entry, with the sorted set or training state it changes, in
    /// one transaction.
    pub async fn publish(&self, env: &Envelope) -> Result<(), RedisError> {
        let k = &self.keys;
        let mut p = redis::pipe();
        p.atomic();
        match &env.event {
            Event::Block {
                prefix, expires_ms, ..
            } => {
                p.cmd("ZADD")
                    .arg(k.key("blocks"))
                    .arg("GT")
                    .arg(*expires_ms)
                    .arg(prefix.to_string())
                    .ignore();
            }
            Event::Unblock { prefix } => {
                p.cmd("ZREM")
                    .arg(k.key("blocks"))
                    .arg(prefix.to_string())
                    .ignore();
            }
            Event::TrainingStarted { epoch } => {
                p.cmd("HSET")
                    .arg(k.key("training"))
                    .arg("epoch")
                    .arg(*epoch)
                    .arg("active")
                    .arg(1)
                    .ignore();
            }
            Event::TrainingEnded { epoch, mode } => {
                p.cmd("HSET")
                    .arg(k.key("training"))
                    .arg("epoch")
                    .arg(*epoch)
                    .arg("active")
                    .arg(0)
                    .arg("mode")
                    .arg(mode.name())
                    .ignore();
            }
            Event::Model { epoch } => {
                p.cmd("SET").arg(k.key("model")).arg(*epoch).ignore();
            }
        }
        let xadd = p
            .cmd("XADD")
            .arg(k.events())
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_LEN)
            .arg("*");
        for (name, value) in env.to_fields() {
            xadd.arg(name).arg(value);
        }
        xadd.ignore();
        if let Event::Block { .. } = env.event {
            // Expired members go; the score is Unix ms.
            p.cmd("ZREMRANGEBYSCORE")
                .arg(k.key("blocks"))
                .arg("-inf")
                .arg(now_ms())
                .ignore();
        }
        self.pipe::<()>(&p).await
    }

    /// The next fleet epoch.
    pub async fn next_epoch(&self) -> Result<u64, RedisError> {
        self.cmd(redis::cmd("INCR").arg(self.keys.key("epoch")))
            .await
    }

    /// Stores `instance`'s snapshot of `epoch`.
    pub async fn put_snapshot(
        &self,
        epoch: u64,
        instance: &str,
        s: &Snapshot,
    ) -> Result<(), RedisError> {
        let key = self.keys.key(&format!("snap:{epoch}"));
        let mut p = redis::pipe();
        p.cmd("HSET")
            .arg(&key)
            .arg(instance)
            .arg(s.encode())
            .ignore();
        p.cmd("EXPIRE").arg(&key).arg(SNAPSHOT_TTL_SECS).ignore();
        self.pipe::<()>(&p).await
    }

    /// Every instance's snapshot of `epoch` (undecodable ones are reported by name).
    pub async fn snapshots(
        &self,
        epoch: u64,
    ) -> Result<Vec<(String, Result<Snapshot, crate::snapshot::SnapshotError>)>, RedisError> {
        let all: HashMap<String, String> = self
            .cmd(redis::cmd("HGETALL").arg(self.keys.key(&format!("snap:{epoch}"))))
            .await?;
        Ok(all
            .into_iter()
            .map(|(i, s)| (i, Snapshot::decode(&s)))
            .collect())
    }

    /// Writes the model of `epoch` unless one is there; returns whether this call wrote it.
    pub async fn put_model(&self, epoch: u64, json: &str) -> Result<bool, RedisError> {
        let set: Option<String> = self
            .cmd(
                redis::cmd("SET")
                    .arg(self.keys.key(&format!("model:{epoch}")))
                    .arg(json)
                    .arg("NX"),
            )
            .await?;
        Ok(set.is_some())
    }

    /// The model of `epoch` as JSON, if written.
    pub async fn model(&self, epoch: u64) -> Result<Option<String>, RedisError> {
        self.cmd(redis::cmd("GET").arg(self.keys.key(&format!("model:{epoch}"))))
            .await
    }
}

/// A connection of its own for `XREAD BLOCK`.
pub struct Tail {
    conn: MultiplexedConnection,
    stream: String,
    /// The last id read.
    pub last: String,
    timeout: Duration,
}

/// One stream entry: its id's milliseconds (when it was published) and its event, or why it
/// does not decode.
pub type Entry = (u64, Result<Envelope, crate::event::DecodeError>);

impl Tail {
    /// Connects a tail of `keys`' stream after `last`.
    pub async fn connect(
        client: &Client,
        keys: &Keys,
        last: String,
        timeout: Duration,
    ) -> Result<Tail, RedisError> {
        let block = Duration::from_millis(TAIL_BLOCK_MS) + timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(block);
        let conn = within(
            timeout * 2,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        Ok(Tail {
            conn,
            stream: keys.events(),
            last,
            timeout,
        })
    }

    /// The next entries (none after `TAIL_BLOCK_MS` without any).
    pub async fn next(&mut self) -> Result<Vec<Entry>, RedisError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1024)
            .arg("BLOCK")
            .arg(TAIL_BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(&self.last);
        let deadline = Duration::from_millis(TAIL_BLOCK_MS) + self.timeout;
        let reply: Option<StreamReadReply> =
            within(deadline, cmd.query_async(&mut self.conn)).await?;
        let mut out = Vec::new();
        for id in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let ms = id
                .id
                .split_once('-')
                .and_then(|(ms, _)| ms.parse().ok())
                .unwrap_or(0);
            let text: HashMap<&str, String> = id
                .map
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), String::from_redis_value(v).ok()?)))
                .collect();
            out.push((
                ms,
                Envelope::from_fields(|k| text.get(k).map(String::as_str)),
            ));
            self.last = id.id;
        }
        Ok(out)
    }
}

/// Now, Unix milliseconds (0 before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
