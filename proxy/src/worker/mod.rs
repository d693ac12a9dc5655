//! The data path's threads: one current-thread tokio runtime per worker (thread-per-core,
//! DESIGN.md §6c). A connection is handed to one worker at accept and lives there with
//! everything it starts: its HTTP/2 stream tasks, the upstream connections it opens (their
//! tasks are spawned from it), their idle pool slot. No request wakes another thread.
//!
//! - `id.rs`: which worker the current thread is (a thread-local), and how many workers a
//!   config asks for;
//! - `threads.rs`: [`Workers`], the worker threads and their runtimes, and the hand-off of an
//!   admitted connection to the least loaded one.
//!
//! The control plane (admin API, the limiter's tick, signals, the fleet) stays on the runtime
//! the server was started on; the accept loops on the accept thread (the `listen` room).

mod id;
mod threads;

pub use id::{count, current};
pub use threads::{WorkerSet, Workers};
