//! What it measures: the hot-path cost of `ShardWriter::raise` (a client's maximum growing), in
//! ns per raise per thread, with and without the histogram:
//! - `moments only/1 thread`: one thread, one shard, `raise_moments_only` (the exact moments
//!   alone, as before histograms existed): the baseline;
//! - `histogram/1 thread`: `raise` (moments and histogram) of `x -> x + 1` for growing `x`, so
//!   most raises stay in their bucket (the common case of a maximum creeping up);
//! - `histogram, moving/1 thread`: `raise` where every raise moves a count to another bucket
//!   (`x -> x + 32` with `x < 32`), the worst case;
//! - the same three with `/2 threads`: two threads, each on its own shard of one set, running
//!   at once (if shards shared a cache line, this would be much slower per update than one
//!   thread);
//! - `separate sets/2 threads`: the control, two threads on two unrelated sets (nothing shared
//!   at all), moving raises: the machine's own two-thread scaling, to compare the `/2 threads`
//!   cases with;
//! - `naive shared atomics/1 thread` and `/2 threads`: the baseline, one shared accumulator
//!   updated with `fetch_add` (two atomic read-modify-writes per raise, on one cache line shared
//!   by both threads, and only 64-bit sums, so not even exact);
//! - `merge/16 shards`: the cost of one `TrainingSet::merge` of 16 shards, moments and
//!   histograms (preview, end of training).
//!
//! Every raise case runs its `iters` raises on each of its threads, started together behind a
//! barrier, and reports the slowest thread's time divided by `iters`: ns per update per thread.
//! It does so twice: group `raise/wall` times each thread with the wall clock, and group
//! `raise/thread-cpu` with the thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`; falls back to
//! wall time off Unix). On a shared machine, wall time of two threads includes the time they
//! waited for a core; CPU time does not, but it still includes cache-line transfers, so it
//! isolates what the data layout costs.
//!
//! Run: `cargo bench -p zgate-unit-math --bench raise` (about a minute after the build; short
//! sampling is set below). Timing is never asserted; compare the ratios printed in one run.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use crossbeam_utils::CachePadded;
use zgate_training::{Metric, ShardWriter, TrainingSet};

/// The baseline: one accumulator shared by every thread, updated with atomic RMWs.
#[derive(Default)]
struct NaiveShared {
    s1: AtomicU64,
    s2: AtomicU64,
}

impl NaiveShared {
    #[inline]
    fn raise(&self, old: u64, new: u64) {
        self.s1.fetch_add(new.wrapping_sub(old), Ordering::Relaxed);
        self.s2.fetch_add(
            new.wrapping_mul(new).wrapping_sub(old.wrapping_mul(old)),
            Ordering::Relaxed,
        );
    }
}

/// How a thread's time is taken.
#[derive(Clone, Copy)]
enum Clock {
    Wall,
    ThreadCpu,
}

impl Clock {
    fn name(self) -> &'static str {
        match self {
            Clock::Wall => "raise/wall",
            Clock::ThreadCpu => "raise/thread-cpu",
        }
    }

    /// Runs `job` and returns how long it took by this clock.
    fn time(self, job: impl FnOnce()) -> Duration {
        let cpu_start = match self {
            Clock::ThreadCpu => thread_cpu_time(),
            Clock::Wall => None,
        };
        let start = Instant::now();
        job();
        let wall = start.elapsed();
        match (cpu_start, thread_cpu_time()) {
            (Some(a), Some(b)) if matches!(self, Clock::ThreadCpu) => b.saturating_sub(a),
            _ => wall,
        }
    }
}

/// CPU time consumed so far by the calling thread, if the platform reports it.
#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes a timespec to the pointer, which points to `ts`, a
    // valid, exclusively borrowed timespec on this stack frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// Runs each job with `iters` on its own thread, all started together; returns the slowest
/// thread's time by `clock`.
fn timed_threads<F>(clock: Clock, iters: u64, jobs: Vec<F>) -> Duration
where
    F: FnOnce(u64) + Send,
{
    let barrier = Barrier::new(jobs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    clock.time(|| job(iters))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .max()
            .unwrap_or_default()
    })
}

/// What a benchmarked raise does.
#[derive(Clone, Copy)]
enum Raise {
    /// `raise_moments_only(x, x + 1)`: no histogram.
    MomentsOnly,
    /// `raise(x, x + 1)` for `x = 0, 1, 2, ...`: past 32, most raises stay in their bucket.
    Creeping,
    /// `raise(x, x + 32)` for `x < 32`: every raise moves a count between two buckets.
    Moving,
}

impl Raise {
    fn name(self) -> &'static str {
        match self {
            Raise::MomentsOnly => "moments only",
            Raise::Creeping => "histogram",
            Raise::Moving => "histogram, moving",
        }
    }
}

/// Raises on one new writer per entry of `sets`, each on its own thread (a set listed twice gives
/// two writers, hence two shards, of that set).
fn sharded(clock: Clock, iters: u64, raise: Raise, sets: &[Arc<TrainingSet>]) -> Duration {
    // One closure type per kind, so that each kind's loop is compiled on its own.
    match raise {
        Raise::MomentsOnly => sharded_with(clock, iters, sets, |w: &ShardWriter, x| {
            w.raise_moments_only(Metric::Memory, black_box(x), black_box(x + 1));
        }),
        Raise::Creeping => sharded_with(clock, iters, sets, |w: &ShardWriter, x| {
            w.raise(Metric::Memory, black_box(x), black_box(x + 1));
        }),
        Raise::Moving => sharded_with(clock, iters, sets, |w: &ShardWriter, x| {
            let old = x & 31;
            w.raise(Metric::Memory, black_box(old), black_box(old + 32));
        }),
    }
}

fn sharded_with<R>(clock: Clock, iters: u64, sets: &[Arc<TrainingSet>], raise: R) -> Duration
where
    R: Fn(&ShardWriter, u64) + Copy + Send,
{
    let jobs: Vec<_> = sets
        .iter()
        .map(|set| {
            let w = set.writer(); // Send, not Sync: moved into its thread
            move |iters| {
                for x in 0..iters {
                    raise(&w, x);
                }
            }
        })
        .collect();
    timed_threads(clock, iters, jobs)
}

fn naive(clock: Clock, iters: u64, threads: usize) -> Duration {
    let acc = CachePadded::new(NaiveShared::default());
    let acc = &acc;
    let jobs: Vec<_> = (0..threads)
        .map(|_| {
            move |iters| {
                for x in 0..iters {
                    acc.raise(black_box(x), black_box(x + 1));
                }
            }
        })
        .collect();
    timed_threads(clock, iters, jobs)
}

fn raise_cases(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, clock: Clock) {
    for raise in [Raise::MomentsOnly, Raise::Creeping, Raise::Moving] {
        g.bench_function(format!("{}/1 thread", raise.name()), |b| {
            b.iter_custom(|iters| sharded(clock, iters, raise, &[TrainingSet::new(1, 1)]));
        });
    }
    for raise in [Raise::MomentsOnly, Raise::Creeping, Raise::Moving] {
        g.bench_function(format!("{}/2 threads", raise.name()), |b| {
            b.iter_custom(|iters| {
                let set = TrainingSet::new(1, 2);
                sharded(clock, iters, raise, &[set.clone(), set])
            });
        });
    }
    g.bench_function("separate sets/2 threads", |b| {
        b.iter_custom(|iters| {
            let sets = [TrainingSet::new(1, 1), TrainingSet::new(1, 1)];
            sharded(clock, iters, Raise::Moving, &sets)
        });
    });
    g.bench_function("naive shared atomics/1 thread", |b| {
        b.iter_custom(|iters| naive(clock, iters, 1));
    });
    g.bench_function("naive shared atomics/2 threads", |b| {
        b.iter_custom(|iters| naive(clock, iters, 2));
    });
}

fn raise(c: &mut Criterion) {
    for clock in [Clock::Wall, Clock::ThreadCpu] {
        let mut g = c.benchmark_group(clock.name());
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        raise_cases(&mut g, clock);
        g.finish();
    }

    let mut g = c.benchmark_group("merge");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    g.bench_function("16 shards", |b| {
        let set = TrainingSet::new(1, 16);
        let writers: Vec<_> = (0..16).map(|_| set.writer()).collect();
        for (i, w) in writers.iter().enumerate() {
            w.add(Metric::Cpu, i as u64);
        }
        b.iter(|| black_box(set.merge()));
    });
    g.finish();
}

criterion_group!(benches, raise);
criterion_main!(benches);
