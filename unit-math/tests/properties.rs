//! Property: any sequence of add / raise / remove, spread over any writers on any number of
//! shards (including writers sharing the overflow shard), merges to exactly the statistics of
//! the surviving samples: the same `n` and sums, and mean and std within 1e-9 of the exact
//! two-pass reference; and the merged histogram is exactly the histogram of the surviving
//! samples (every bucket holds exactly the survivors in its range), with quantiles within 1/32
//! of the exact ones.

use proptest::prelude::*;
use zgate_training::{Bucket, Histogram, Metric, ShardWriter, TrainingSet, MAX_SAMPLE};
use zgate_unit_math::reference::{assert_accurate, exact};
use zgate_unit_math::sorted::{assert_histogram_accurate, Sorted};

#[derive(Clone, Debug)]
enum Op {
    /// Sample `x` for client `client`: an add if the client has no sample, else a raise to
    /// `max(current, x)` (a no-op raise when `x` is not larger is still sent).
    Sample {
        client: usize,
        x: u64,
        writer: usize,
    },
    /// Evict client `client` if it has a sample.
    Remove { client: usize, writer: usize },
}

/// Small values, values at the 2^40 edge, anything up to 2^40, and values beyond it (clamped).
fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=100,
        (MAX_SAMPLE - 100)..=MAX_SAMPLE,
        0..=MAX_SAMPLE,
        any::<u64>(),
    ]
}

fn op(clients: usize, writers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..clients, value(), 0..writers)
            .prop_map(|(client, x, writer)| Op::Sample { client, x, writer }),
        1 => (0..clients, 0..writers).prop_map(|(client, writer)| Op::Remove { client, writer }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, usize, Metric, Vec<Op>)> {
    (1usize..=6, 1usize..=8, 1usize..=40, 0..Metric::COUNT).prop_flat_map(
        |(shards, writers, clients, metric)| {
            (
                Just(shards),
                Just(writers),
                Just(Metric::ALL[metric]),
                prop::collection::vec(op(clients, writers), 0..300),
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_updates_over_any_shards_merge_to_the_survivors((shards, writers, metric, ops) in scenario()) {
        let set = TrainingSet::new(9, shards);
        let ws: Vec<ShardWriter> = (0..writers).map(|_| set.writer()).collect();
        let mut current: Vec<Option<u64>> = vec![None; 40];
        for op in &ops {
            match *op {
                Op::Sample { client, x, writer } => match current[client] {
                    None => {
                        ws[writer].add(metric, x);
                        current[client] = Some(x);
                    }
                    Some(old) => {
                        let new = old.max(x);
                        ws[writer].raise(metric, old, new);
                        current[client] = Some(new);
                    }
                },
                Op::Remove { client, writer } => {
                    if let Some(x) = current[client].take() {
                        ws[writer].remove(metric, x);
                    }
                }
            }
        }
        let survivors: Vec<u64> = current.iter().flatten().map(|&x| x.min(MAX_SAMPLE)).collect();
        let merged = set.merge();
        assert_accurate(merged.get(metric), &exact(&survivors), "proptest");
        let h = merged.histogram(metric);
        let buckets: Vec<Bucket> = h.buckets().collect();
        assert_histogram_accurate(&buckets, h.quantiles().as_ref(), &Sorted::new(&survivors), "proptest");
        // Not one stray count left in any bucket, negative ones included.
        let mut direct = Histogram::new();
        survivors.iter().for_each(|&x| direct.add(x));
        prop_assert_eq!(h, &direct);
        for other in Metric::ALL.into_iter().filter(|&m| m != metric) {
            prop_assert_eq!(merged.get(other).n, 0);
            prop_assert_eq!(merged.histogram(other), &Histogram::new());
        }
    }
}
