//! zgate's configuration: the TOML schema, its defaults, and its validation.
//!
//! A config file is parsed once into [`Config`], a typed value that the rest of zgate trusts
//! ("parse, don't validate"). Unknown keys are rejected, and every error names the key and the
//! problem. This crate reads text and paths; it opens no sockets and loads no certificates (the
//! proxy does that, and names the key when a file is bad).

mod admin;
mod choices;
mod cidr;
mod client_ip;
mod duration;
mod error;
mod fleet;
mod limits;
mod pool;
mod schema;

pub use admin::{Admin, DEFAULT_ADMIN_ADDR, DEFAULT_ADMIN_PORT, MIN_TOKEN_LEN};
pub use choices::{AfterTraining, BlockActionKind, StartMode, UnknownChoice};
pub use cidr::{Cidr, CidrError};
pub use client_ip::{ClientIp, ForwardHeader};
pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use fleet::{Fleet, RedisUrl};
pub use limits::{Guards, Limits, PerMetric};
pub use pool::{Balance, HostPattern, Pool, PoolSource, Route, DEFAULT_POOL};
pub use schema::{
    Backend, Config, Http, Listener, Log, Runtime, Timeouts, TlsFiles, Upstream, DEFAULT_CONFIG,
};
