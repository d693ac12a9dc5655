//! Seeded, reproducible populations and update streams for the accuracy tests and benchmarks.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use zgate_training::MAX_SAMPLE;

/// A seeded fast generator (the same seed gives the same data on every machine).
pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// `count` samples of a Pareto distribution with scale `x_m` (the minimum) and shape `alpha`
/// (the tail index; `alpha <= 2` has infinite variance), by inversion `x_m / u^(1/alpha)` with
/// `u` uniform in (0, 1], rounded down to `u64` and clamped to [`MAX_SAMPLE`] as the
/// accumulators do.
pub fn pareto(seed: u64, count: usize, x_m: f64, alpha: f64) -> Vec<u64> {
    let mut rng = rng(seed);
    (0..count)
        .map(|_| {
            let u = 1.0 - rng.gen::<f64>(); // (0, 1]
            let x = x_m / u.powf(1.0 / alpha);
            (x as u64).min(MAX_SAMPLE)
        })
        .collect()
}

/// `count` samples uniform in `0..=max`.
pub fn uniform(seed: u64, count: usize, max: u64) -> Vec<u64> {
    let mut rng = rng(seed);
    (0..count).map(|_| rng.gen_range(0..=max)).collect()
}

/// One step of a training run, for a client numbered `client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The client's first sample.
    Add {
        /// Client number.
        client: usize,
        /// Sample.
        x: u64,
    },
    /// The client's maximum grows from `old` to `new`.
    Raise {
        /// Client number.
        client: usize,
        /// Previous maximum.
        old: u64,
        /// New maximum.
        new: u64,
    },
    /// The client is evicted with its current maximum `x`.
    Remove {
        /// Client number.
        client: usize,
        /// Its current sample.
        x: u64,
    },
}

/// A training run over `clients` clients: `steps` events in random order, each picking a
/// random client; a client not in the population is added (first sample in `1..=100`), one in
/// it is raised (by `1..=max_step`, capped at [`MAX_SAMPLE`]) or, with probability
/// `remove_per_mille / 1000`, evicted (and may come back later as a new client). Returns the
/// events and the surviving clients' final maxima.
pub fn training_run(
    seed: u64,
    clients: usize,
    steps: usize,
    max_step: u64,
    remove_per_mille: u32,
) -> (Vec<Event>, Vec<u64>) {
    let mut rng = rng(seed);
    let mut current: Vec<Option<u64>> = vec![None; clients];
    let mut events = Vec::with_capacity(steps + clients);
    // Every client starts once, in random order among the other events.
    for _ in 0..steps {
        let client = rng.gen_range(0..clients);
        let event = match current[client] {
            None => {
                let x = rng.gen_range(1..=100);
                current[client] = Some(x);
                Event::Add { client, x }
            }
            Some(x) if rng.gen_range(0..1000) < remove_per_mille => {
                current[client] = None;
                Event::Remove { client, x }
            }
            Some(old) => {
                let new = old
                    .saturating_add(rng.gen_range(1..=max_step))
                    .min(MAX_SAMPLE);
                current[client] = Some(new);
                Event::Raise { client, old, new }
            }
        };
        events.push(event);
    }
    let survivors = current.into_iter().flatten().collect();
    (events, survivors)
}
