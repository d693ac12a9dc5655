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
mod health;
mod limits;
mod listener_tls;
mod pool;
mod schema;
mod upstream_tls;

pub use admin::{Admin, DEFAULT_ADMIN_ADDR, DEFAULT_ADMIN_PORT, MIN_TOKEN_LEN};
pub use choices::{AfterTraining, BlockActionKind, StartMode, UnknownChoice};
pub use cidr::{Cidr, CidrError};
pub use client_ip::{ClientIp, ForwardHeader};
pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use fleet::{Fleet, RedisUrl};
pub use health::HealthCheck;
pub use limits::{Guards, Limits, PerMetric};
pub use listener_tls::{CertFiles, TlsFiles};
pub use pool::{Balance, HostPattern, Pool, PoolSource, Route, DEFAULT_POOL};
pub use schema::{
    Backend, Config, Http, Listener, Log, Runtime, Timeouts, Upstream, DEFAULT_CONFIG,
};
pub use upstream_tls::{UpstreamProtocol, UpstreamTls};
