//! Accuracy of the sharded accumulators against the exact references, on hostile data.
//! Every case requires the exact `n` and sums, and relative error <= 1e-9 on mean and on the
//! population standard deviation (divides by `n`); and of the histograms, that every bucket
//! holds exactly the samples of its range (against the sorted samples), that p50, p90, p99 and
//! p99.9 are within 1/32 relative error of the exact nearest-rank quantiles, and that the max is
//! never below the true maximum and at most 1/16 above it, in the merged histogram and in the
//! model made from it.

use zgate_training::{
    Bucket, Metric, Model, ModelParams, Moments, Population, Populations, ShardWriter, TrainingSet,
    MAX_SAMPLE,
};
use zgate_unit_math::data::{self, Event};
use zgate_unit_math::reference::{assert_accurate, exact, exact_weighted};
use zgate_unit_math::sorted::{assert_histogram_accurate, Sorted};

/// Adds `values` to `metric` of a fresh set through `writers` writers on `shards` shards,
/// spreading the samples round-robin over the writers, checks the merged histogram against the
/// sorted values, and returns the merged population.
fn accumulate(values: &[u64], metric: Metric, shards: usize, writers: usize) -> Population {
    let set = TrainingSet::new(1, shards);
    let ws: Vec<ShardWriter> = (0..writers).map(|_| set.writer()).collect();
    for (i, &x) in values.iter().enumerate() {
        ws[i % writers].add(metric, x);
    }
    let p = set.merge();
    let case = format!(
        "{} values on {shards} shards, {writers} writers",
        values.len()
    );
    assert_distribution(&p, metric, values, &case);
    *p.get(metric)
}

/// Asserts that the merged histogram of `metric` in `p`, and the distribution of the model made
/// from `p`, are those of `samples`, with quantiles within the documented bound.
#[track_caller]
fn assert_distribution(p: &Populations, metric: Metric, samples: &[u64], case: &str) {
    let want = Sorted::new(samples);
    let h = p.histogram(metric);
    assert!(
        h.is_consistent(),
        "{case}: a negative bucket after the merge"
    );
    let buckets: Vec<Bucket> = h.buckets().collect();
    let quantiles = h.quantiles();
    let worst = assert_histogram_accurate(&buckets, quantiles.as_ref(), &want, case);
    let model = Model::from_populations(1, p, &ModelParams::default());
    let m = model.get(metric);
    assert_eq!(m.buckets.buckets(), &buckets[..], "{case}: model buckets");
    assert_eq!(m.quantiles, quantiles, "{case}: model quantiles");
    eprintln!("{case}: worst quantile relative error {worst:.3e} (bound 1/32 = 3.125e-2)");
}

#[test]
fn case1_twenty_clients_one_to_twenty() {
    let values: Vec<u64> = (1..=20).collect();
    let want = exact(&values);
    assert_eq!(want.mean, 10.5);
    assert!((want.std - 5.766_281_297_335_398).abs() < 1e-15);
    for (shards, writers) in [(1, 1), (4, 4), (2, 5)] {
        let got = accumulate(&values, Metric::Connections, shards, writers);
        assert_accurate(
            &got,
            &want,
            &format!("1..=20 on {shards} shards, {writers} writers"),
        );
    }
}

#[test]
fn case2_large_mean_tiny_spread() {
    let values: Vec<u64> = (0..100_000u64)
        .map(|i| 1_000_000_000_000 + i % 10)
        .collect();
    let want = exact(&values);
    // digits 0..9 equally often: variance (10^2 - 1) / 12 = 8.25
    assert!((want.std - 8.25f64.sqrt()).abs() < 1e-12);
    let got = accumulate(&values, Metric::Memory, 4, 4);
    assert_accurate(&got, &want, "10^12 + (0..9), 10^5 clients");
    // A naive f64 one-pass (E[x^2] - E[x]^2) loses everything here; ours must not.
    let n = values.len() as f64;
    let (s1, s2) = values.iter().fold((0.0f64, 0.0f64), |(a, b), &x| {
        let x = x as f64;
        (a + x, b + x * x)
    });
    let naive = (s2 / n - (s1 / n).powi(2)).max(0.0).sqrt();
    assert!(
        (naive - want.std).abs() / want.std > 1e-3,
        "naive f64 was accurate: {naive}"
    );
}

#[test]
fn case3_heavy_tail_pareto_million() {
    // alpha 1.1: infinite variance, a few huge values dominate the sums.
    let values = data::pareto(3, 1_000_000, 100.0, 1.1);
    let max = values.iter().copied().max().unwrap_or(0);
    let want = exact(&values);
    assert!(
        max > 10_000_000 && want.std > 10.0 * want.mean,
        "tail: max {max}, {want:?}"
    );
    let got = accumulate(&values, Metric::Memory, 8, 8);
    assert_accurate(&got, &want, "Pareto(100, 1.1), 10^6 clients");
}

#[test]
fn case4_values_up_to_two_pow_40_million() {
    let mut values = data::uniform(4, 1_000_000, MAX_SAMPLE);
    values[..1000].fill(MAX_SAMPLE); // the extreme value itself, many times
    let want = exact(&values);
    let got = accumulate(&values, Metric::Cpu, 4, 4);
    assert_accurate(&got, &want, "uniform 0..=2^40, 10^6 clients");

    // Nearly identical huge values: all 2^40 but one at 2^40 - 1 (tiny std, huge mean).
    let mut values = vec![MAX_SAMPLE; 1_000_000];
    values[0] = MAX_SAMPLE - 1;
    let want = exact(&values);
    let got = accumulate(&values, Metric::Cpu, 2, 2);
    assert_accurate(&got, &want, "2^40 x 10^6 with one 2^40 - 1");
}

#[test]
fn at_the_documented_limit_of_two_pow_47_clients_of_two_pow_40() {
    // Moments of 2^47 clients at 2^40 (built by doubling, i.e. merging equal parts), one at 0.
    let mut m = Moments::default();
    m.add(MAX_SAMPLE);
    for _ in 0..47 {
        let copy = m;
        m.merge(&copy);
    }
    m.add(0);
    let got = Population::from_moments(m);
    let want = exact_weighted([(MAX_SAMPLE, 1u64 << 47), (0, 1)]);
    assert_accurate(&got, &want, "2^47 clients of 2^40 and one 0");
}

/// Replays `events` on a fresh set with `shards` shards, sending each event to a random one of
/// `shards` writers held by this thread, so a client's add, raises and remove land on different
/// shards. Writes `Metric::Memory` with the event's values and `Metric::Requests` with 2x them.
fn replay_random_writers(events: &[Event], shards: usize, seed: u64) -> Populations {
    use rand::Rng;
    let mut rng = data::rng(seed);
    let set = TrainingSet::new(5, shards);
    let ws: Vec<ShardWriter> = (0..shards).map(|_| set.writer()).collect();
    assert!(ws.iter().all(ShardWriter::is_exclusive));
    for e in events {
        let w = &ws[rng.gen_range(0..shards)];
        apply(w, e);
    }
    set.merge()
}

fn apply(w: &ShardWriter, e: &Event) {
    match *e {
        Event::Add { x, .. } => {
            w.add(Metric::Memory, x);
            w.add(Metric::Requests, 2 * x);
        }
        Event::Raise { old, new, .. } => {
            w.raise(Metric::Memory, old, new);
            w.raise(Metric::Requests, 2 * old, 2 * new);
        }
        Event::Remove { x, .. } => {
            w.remove(Metric::Memory, x);
            w.remove(Metric::Requests, 2 * x);
        }
    }
}

/// Asserts the moments and the distributions of both metrics written by [`apply`].
fn assert_both(got: &Populations, survivors: &[u64], case: &str) {
    assert_accurate(got.get(Metric::Memory), &exact(survivors), case);
    assert_distribution(got, Metric::Memory, survivors, case);
    let doubled: Vec<u64> = survivors.iter().map(|x| 2 * x).collect();
    let case = format!("{case} (second metric)");
    assert_accurate(got.get(Metric::Requests), &exact(&doubled), &case);
    assert_distribution(got, Metric::Requests, &doubled, &case);
}

#[test]
fn case5_raised_many_times_in_random_order_across_shards() {
    // 10^5 clients, 10^6 events: each client added once and raised ~9 times on random shards.
    let (events, survivors) = data::training_run(5, 100_000, 1_000_000, 1_000_000, 0);
    // A client never picked by any of the 10^6 random steps is not in the population.
    assert!(survivors.len() > 99_900, "{} clients", survivors.len());
    let raises = events
        .iter()
        .filter(|e| matches!(e, Event::Raise { .. }))
        .count();
    assert!(raises > 800_000, "{raises} raises");
    for shards in [2, 4, 16] {
        let got = replay_random_writers(&events, shards, shards as u64);
        assert_both(
            &got,
            &survivors,
            &format!("10^5 clients raised on {shards} shards"),
        );
    }
}

#[test]
fn case5_raised_concurrently_on_threads() {
    // The same kind of run, with the events dealt round-robin to 4 real threads: a client's
    // events are applied by different threads in any order; sums commute, so the merge is exact.
    let (events, survivors) = data::training_run(55, 100_000, 600_000, 1 << 30, 0);
    let set = TrainingSet::new(1, 16);
    std::thread::scope(|s| {
        for t in 0..4 {
            let w = set.writer();
            let events = &events;
            s.spawn(move || events.iter().skip(t).step_by(4).for_each(|e| apply(&w, e)));
        }
    });
    assert_both(&set.merge(), &survivors, "4 threads on 16 shards");
}

#[test]
fn case6_samples_removed_mid_training() {
    // 5% of events evict a client (with its current maximum); evicted clients may come back as
    // new clients with a fresh first sample.
    let (events, survivors) = data::training_run(6, 100_000, 1_000_000, 10_000, 50);
    let removes = events
        .iter()
        .filter(|e| matches!(e, Event::Remove { .. }))
        .count();
    let returns = events.len() - removes - survivors.len(); // adds + raises - survivors
    assert!(removes > 10_000 && returns > 0, "{removes} removes");
    assert!(survivors.len() < 100_000);
    for shards in [2, 4, 16] {
        let got = replay_random_writers(&events, shards, 60 + shards as u64);
        assert_both(&got, &survivors, &format!("evictions on {shards} shards"));
    }
}

#[test]
fn overflow_shard_writers_are_exact_too() {
    // More writers than shards: the extra writers share the overflow shard.
    let (events, survivors) = data::training_run(7, 10_000, 100_000, 1000, 20);
    let set = TrainingSet::new(1, 2);
    let ws: Vec<ShardWriter> = (0..6).map(|_| set.writer()).collect();
    assert_eq!(ws.iter().filter(|w| !w.is_exclusive()).count(), 4);
    for (i, e) in events.iter().enumerate() {
        apply(&ws[i % 6], e);
    }
    assert_both(&set.merge(), &survivors, "overflow");
}

#[test]
fn clamped_samples_match_the_reference_of_clamped_values() {
    let values = [0, 5, MAX_SAMPLE, MAX_SAMPLE + 1, u64::MAX];
    let clamped: Vec<u64> = values.iter().map(|&x| x.min(MAX_SAMPLE)).collect();
    let got = accumulate(&values, Metric::Fragmentation, 2, 2);
    assert_accurate(&got, &exact(&clamped), "clamped at 2^40");
}

#[test]
fn quantiles_at_the_worst_place_of_their_buckets_meet_the_bound_exactly() {
    // Each power of two from 32 to 2^40, the start of its bucket, where the bucket is widest
    // relative to its values (1/16): the midpoint is then 1/32 above the sample, the bound.
    let values: Vec<u64> = (5..=40).map(|e| 1u64 << e).collect();
    let set = TrainingSet::new(1, 2);
    let ws = [set.writer(), set.writer()];
    for (i, &x) in values.iter().enumerate() {
        ws[i % 2].add(Metric::Memory, x);
    }
    let p = set.merge();
    let want = Sorted::new(&values);
    let h = p.histogram(Metric::Memory);
    let buckets: Vec<Bucket> = h.buckets().collect();
    let worst = assert_histogram_accurate(&buckets, h.quantiles().as_ref(), &want, "2^5..2^40");
    assert_eq!(worst, 1.0 / 32.0);
}
