//! What it measures: the hot-path cost of `ShardWriter::raise` (a client's maximum growing), in
//! ns per raise per thread:
//! - `sharded/1 thread`: one thread, one shard;
//! - `sharded/2 threads`: two threads, each on its own shard of one set, running at once (if
//!   shards shared a cache line, this would be much slower per update than one thread);
//! - `separate sets/2 threads`: the control, two threads on two unrelated sets: the machine's
//!   own two-thread scaling, to compare `sharded/2 threads` with;
//! - `naive shared atomics/1 thread` and `/2 threads`: the baseline, one shared accumulator
//!   updated with `fetch_add` (two atomic read-modify-writes per raise, on one cache line shared
//!   by both threads, and only 64-bit sums, so not even exact);
//! - `merge/16 shards`: the cost of one `TrainingSet::merge` of 16 shards (preview, end of
//!   training).
//!
//! For the two-thread cases each thread times its own `iters` raises between a barrier and its
//! end; the reported time per iteration is the slower thread's time divided by `iters`, i.e. ns
//! per update per thread.
//!
//! Run: `cargo bench -p zgate-unit-math` (about 20 s after the build; short sampling is set
//! below). Timing is never asserted; compare the ratios printed in one run.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_utils::CachePadded;
use zgate_training::{Metric, TrainingSet};

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

/// Runs each job with `iters` on its own thread, all started together; returns the slowest
/// thread's time.
fn timed_threads<F>(iters: u64, jobs: Vec<F>) -> Duration
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
                    let start = Instant::now();
                    job(iters);
                    start.elapsed()
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

fn raise(c: &mut Criterion) {
    let mut g = c.benchmark_group("raise");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    g.bench_function("sharded/1 thread", |b| {
        let set = TrainingSet::new(1, 1);
        let w = set.writer();
        let mut x = 0u64;
        b.iter(|| {
            w.raise(Metric::Memory, black_box(x), black_box(x + 1));
            x += 1;
        });
    });

    g.bench_function("sharded/2 threads", |b| {
        b.iter_custom(|iters| {
            let set = TrainingSet::new(1, 2);
            // Each thread gets its own writer (Send, not Sync), hence its own shard.
            let jobs = [set.writer(), set.writer()].map(|w| {
                move |iters| {
                    for x in 0..iters {
                        w.raise(Metric::Memory, black_box(x), black_box(x + 1));
                    }
                }
            });
            timed_threads(iters, jobs.into())
        });
    });

    // Control: two threads on two separate sets (nothing shared at all). If this is as slow as
    // `sharded/2 threads`, the slowdown is the machine (other load, SMT siblings), not shards
    // sharing cache lines.
    g.bench_function("separate sets/2 threads", |b| {
        b.iter_custom(|iters| {
            let sets = [TrainingSet::new(1, 1), TrainingSet::new(1, 1)];
            let jobs = [sets[0].writer(), sets[1].writer()].map(|w| {
                move |iters| {
                    for x in 0..iters {
                        w.raise(Metric::Memory, black_box(x), black_box(x + 1));
                    }
                }
            });
            timed_threads(iters, jobs.into())
        });
    });

    g.bench_function("naive shared atomics/1 thread", |b| {
        let acc = CachePadded::new(NaiveShared::default());
        let mut x = 0u64;
        b.iter(|| {
            acc.raise(black_box(x), black_box(x + 1));
            x += 1;
        });
    });

    g.bench_function("naive shared atomics/2 threads", |b| {
        b.iter_custom(|iters| {
            let acc = CachePadded::new(NaiveShared::default());
            let acc = &acc;
            let jobs = [(); 2].map(|()| {
                move |iters| {
                    for x in 0..iters {
                        acc.raise(black_box(x), black_box(x + 1));
                    }
                }
            });
            timed_threads(iters, jobs.into())
        });
    });
    g.finish();

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
