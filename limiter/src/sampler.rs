//! The per-thread training writer cache.
//!
//! Each worker thread keeps one `ShardWriter` of the current epoch's training set in a
//! thread-local slot, tagged with the limiter it belongs to and the epoch. Recording a sample
//! costs a thread-local access and a comparison; the writer is claimed again only when the epoch
//! (or the limiter) changes. A thread that uses two limiters alternately is still correct, only
//! slower (the slot is re-claimed on each switch).

use std::cell::RefCell;
use std::sync::Arc;

use zgate_training::{Epoch, Metric, ShardWriter, TrainingSet};

use crate::client::Sample;

struct Cached {
    limiter: u64,
    epoch: Epoch,
    writer: ShardWriter,
}

thread_local! {
    static WRITER: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// Writes `sample` of `m` into `set` through this thread's writer for limiter `limiter`.
pub(crate) fn record(limiter: u64, set: &Arc<TrainingSet>, m: Metric, sample: Sample) {
    with_writer(limiter, set, |w| match sample {
        Sample::None => {}
        Sample::Add(x) => w.add(m, x),
        Sample::Raise(old, new) => w.raise(m, old, new),
    });
}

/// Removes a departing client's samples from `set`.
pub(crate) fn remove(limiter: u64, set: &Arc<TrainingSet>, samples: [Option<u64>; Metric::COUNT]) {
    if samples.iter().all(Option::is_none) {
        return;
    }
    with_writer(limiter, set, |w| {
        for m in Metric::ALL {
            if let Some(x) = samples[m.index()] {
                w.remove(m, x);
            }
        }
    });
}

fn with_writer(limiter: u64, set: &Arc<TrainingSet>, f: impl FnOnce(&ShardWriter)) {
    let mut f = Some(f);
    let cached = WRITER.try_with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return;
        };
        let fresh = match &*slot {
            Some(c) => c.limiter != limiter || c.epoch != set.epoch(),
            None => true,
        };
        if fresh {
            // Drop the old writer first so its shard is free for the new set's claim.
            *slot = None;
            *slot = Some(Cached {
                limiter,
                epoch: set.epoch(),
                writer: set.writer(),
            });
        }
        if let (Some(c), Some(f)) = (slot.as_ref(), f.take()) {
            f(&c.writer);
        }
    });
    // Thread-local storage being torn down (or re-entered): use a one-off writer.
    let _ = cached;
    if let Some(f) = f {
        f(&set.writer());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zgate_training::ModelParams;

    #[test]
    fn samples_land_in_the_set_of_their_epoch() {
        let one = TrainingSet::new(1, 2);
        let two = TrainingSet::new(2, 2);
        record(7, &one, Metric::Requests, Sample::Add(4));
        record(7, &one, Metric::Requests, Sample::Raise(4, 6));
        record(7, &two, Metric::Requests, Sample::Add(10));
        record(7, &one, Metric::Requests, Sample::Add(2));
        let p = ModelParams::default();
        let m1 = one.finalize(&p);
        assert_eq!(m1.get(Metric::Requests).n, 2);
        assert_eq!(m1.get(Metric::Requests).mean, 4.0);
        remove(7, &two, [None, None, Some(10), None, None, None]);
        assert_eq!(two.finalize(&p).get(Metric::Requests).n, 0);
    }
}
