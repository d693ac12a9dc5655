//! Taking connections in: everything between a listening socket and a connection handed to a
//! worker.
//!
//! - `bind.rs`: listening sockets (deep backlog, address reuse), named by their config key;
//! - `accept.rs`: the accept thread and its loops, and admission (the limiter's word on a new
//!   connection before any byte of it is read, so a blocked client costs no TLS handshake);
//! - `listeners.rs`: the set of bound listeners, kept across reloads by config address;
//! - `tls.rs`: PEM files to a rustls server config, and a listener's acceptor;
//! - `sni.rs`: a listener's certificates chosen by the client's SNI (exact, wildcard, default);
//! - `proxied.rs`: reading that header off a connection, bounded and under a deadline;
//! - `proxy_header.rs`: the PROXY protocol header (v1, v2) an L4 balancer sends first: who
//!   the client is (sans-IO, incremental, bounded);
//! - `syndrop.rs` (Linux): a BPF filter that drops the SYNs of a blocked client that keeps
//!   reconnecting.
//!
//! What happens to an admitted connection is the `conn` room's business.

mod accept;
pub mod bind;
mod listeners;
pub mod proxied;
pub mod proxy_header;
pub mod sni;
#[cfg(target_os = "linux")]
pub mod syndrop;
pub mod tls;

pub(crate) use accept::{AcceptThread, Admission, ConnCount};
pub(crate) use bind::{bind, bind_listener};
pub(crate) use listeners::{Kept, Listeners, NewListener, Stopped};
pub(crate) use tls::tls_acceptor;
