//! One client connection, from admission to close: the driver, and the IO it reads and writes
//! through, which reports everything the connection costs to its meter (the `account` room).
//!
//! - `serve.rs`: TLS handshake or protocol detection, then hyper's HTTP/1.1 or HTTP/2 server;
//! - `detect.rs`: HTTP/1.1 or h2c (HTTP/2 with prior knowledge) on a cleartext listener, by the
//!   first bytes;
//! - `drive.rs`: polls the hyper connection beside the watchdog, the kill switch of a block,
//!   and the server's shutdown phase;
//! - `watchdog.rs`: the header deadline and idle timeout decided from the accounting, sans-IO;
//! - `gather.rs`: the client's socket, whose writes during one poll of the connection's task
//!   leave in one system call at the end of that poll (TLS and HTTP/2);
//! - `coalesce.rs`: over TLS with h2, the writes between two flushes handed to TLS at once, so
//!   one record carries them;
//! - `rewind.rs`: bytes read past a PROXY protocol header put back in front of the stream;
//! - `io.rs`: the IO wrapper between the client's stream and hyper (the linkerd "sensor"):
//!   replays detected bytes, forwards every read and write to the taps and the meter;
//! - `tap/`: parsers of the byte stream (HTTP/1 reads, HTTP/2 frame headers) into events.
//!
//! Where a metric is measured: `tap/` (F, HTTP/2 control frames, held request bytes),
//! `io.rs` (bytes moved, released), the `account` room's `timed.rs` (P), the http room's
//! bodies (bytes forwarded, response bytes held) and service (requests); where it is counted:
//! the `account` room's `accounting.rs`; where it is scored: the limiter crate; where it is enforced:
//! `account/meter.rs` (the kill switch) and `drive.rs` (reset, GOAWAY).

mod coalesce;
mod detect;
mod drive;
pub mod gather;
pub mod io;
mod rewind;
mod serve;
pub mod tap;
mod watchdog;

pub use detect::H2_PREFACE;
pub(crate) use drive::reset_on_close;
#[cfg(feature = "fuzzing")]
pub(crate) use serve::run_http1;
pub use serve::{serve, ConnSettings, Phase};
