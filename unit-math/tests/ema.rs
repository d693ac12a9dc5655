//! The CPU EMA (metric P) driven with explicit timestamps. Values are ppm of one core.

use rand::Rng;
use zgate_training::CpuEma;
use zgate_unit_math::data;
use zgate_unit_math::reference::rel_err;

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
const HALF_LIFE: u64 = SECOND;

/// Runs `load_ppm` of a core for `duration` ns from `start`, reported every `step` ns.
fn run(mut e: CpuEma, start: u64, duration: u64, step: u64, load_ppm: u64) -> (CpuEma, u64) {
    let mut now = start;
    while now < start + duration {
        let dt = step.min(start + duration - now);
        now += dt;
        e = e.update(dt * load_ppm / 1_000_000, now, HALF_LIFE);
    }
    (e, now)
}

#[test]
fn constant_load_converges_to_that_load() {
    for load in [0, 1_000, 250_000, 500_000, 1_000_000, 3_000_000] {
        // 20 half-lives: the remaining gap is load * 2^-20, under 3 ppm for 3 cores.
        let (e, _) = run(CpuEma::started(0), 0, 20 * HALF_LIFE, 10 * MS, load);
        let got = e.value_ppm();
        assert!(got.abs_diff(load) <= 3, "load {load}: EMA {got}");
    }
    // Starting from a high value, it comes down to the load as well.
    let high = CpuEma::started(0).update(10 * SECOND, 0, HALF_LIFE);
    assert!(high.value_ppm() > 6_000_000);
    let (e, _) = run(high, 0, 30 * HALF_LIFE, 100 * MS, 200_000);
    assert!(e.value_ppm().abs_diff(200_000) <= 1, "{}", e.value_ppm());
}

#[test]
fn converges_with_irregular_update_times() {
    let mut rng = data::rng(11);
    let mut e = CpuEma::started(0);
    let mut now = 0;
    while now < 20 * HALF_LIFE {
        let dt = rng.gen_range(1..=50 * MS);
        now += dt;
        e = e.update(dt * 3 / 10, now, HALF_LIFE); // 30% of a core
    }
    assert!(e.value_ppm().abs_diff(300_000) <= 1, "{}", e.value_ppm());
}

#[test]
fn one_half_life_idle_halves_the_value() {
    let (e, now) = run(CpuEma::started(0), 0, 10 * HALF_LIFE, 5 * MS, 800_000);
    let v = e.value();
    assert_eq!(e.at(now, HALF_LIFE), e.value_ppm());
    assert!((e.at(now + HALF_LIFE, HALF_LIFE) as f64 - v / 2.0).abs() <= 0.5);
    assert!((e.at(now + 2 * HALF_LIFE, HALF_LIFE) as f64 - v / 4.0).abs() <= 0.5);
    // An update with no CPU time after a half-life is the same decay, and it sticks.
    let idle = e.update(0, now + HALF_LIFE, HALF_LIFE);
    assert!(rel_err(idle.value(), v / 2.0) < 1e-12);
    assert_eq!(idle.last_ns(), Some(now + HALF_LIFE));
    // Other half-lives: the value halves after each one's own half-life.
    for h in [MS, 100 * MS, 60 * SECOND] {
        let e = CpuEma::started(0).update(h / 2, h, h);
        assert!(rel_err(e.update(0, 2 * h, h).value(), e.value() / 2.0) < 1e-12);
    }
}

#[test]
fn many_small_updates_equal_few_large_ones_for_the_same_cpu_and_wall_time() {
    // 10 s at 37% of a core: 10_000 updates of 1 ms, 100 of 100 ms, or 10 of 1 s.
    // Tolerance: 1e-9 relative. The formula is exact for load that is uniform within each
    // reported interval (2^(-dt/h) multiplies over sub-intervals), so only float rounding
    // separates them.
    let load = 370_000;
    let (fine, t1) = run(CpuEma::started(0), 0, 10 * SECOND, MS, load);
    let (medium, t2) = run(CpuEma::started(0), 0, 10 * SECOND, 100 * MS, load);
    let (coarse, t3) = run(CpuEma::started(0), 0, 10 * SECOND, SECOND, load);
    assert_eq!((t1, t2), (t3, t3));
    assert!(
        rel_err(fine.value(), coarse.value()) < 1e-9,
        "{fine:?} {coarse:?}"
    );
    assert!(
        rel_err(medium.value(), coarse.value()) < 1e-9,
        "{medium:?} {coarse:?}"
    );
}

#[test]
fn uneven_cpu_within_a_window_is_bounded_by_the_window_over_the_half_life() {
    // Each 100 ms window gets the same CPU time (40 ms), reported either as one update at the
    // window's end, or as 10 updates with a random split of the 40 ms inside the window.
    // Where inside a window the CPU went can shift its weight by at most 2^(w/h), so the two
    // differ by at most 2^(0.1) - 1 = 7.2% relative.
    let window = 100 * MS;
    let mut rng = data::rng(12);
    let mut one = CpuEma::started(0);
    let mut split = CpuEma::started(0);
    let mut now = 0;
    let mut max_diff: f64 = 0.0;
    for _ in 0..200 {
        let mut cuts: Vec<u64> = (0..9).map(|_| rng.gen_range(0..=40 * MS)).collect();
        cuts.push(0);
        cuts.push(40 * MS);
        cuts.sort_unstable();
        for (i, pair) in cuts.windows(2).enumerate() {
            split = split.update(
                pair[1] - pair[0],
                now + (i as u64 + 1) * window / 10,
                HALF_LIFE,
            );
        }
        now += window;
        one = one.update(40 * MS, now, HALF_LIFE);
        max_diff = max_diff.max(rel_err(split.value(), one.value()));
    }
    let bound = 2f64.powf(window as f64 / HALF_LIFE as f64) - 1.0;
    assert!(max_diff <= bound, "{max_diff} > {bound}");
    assert!(max_diff > 0.0);
    // Both converge to the mean load of 40% (20 half-lives).
    assert!(one.value_ppm().abs_diff(400_000) <= 1, "{one:?}");
}

#[test]
fn a_burst_at_one_instant_is_an_impulse_of_cpu_ln2_over_half_life() {
    // Ten updates at the same instant add up like one.
    let mut e = CpuEma::started(0);
    for _ in 0..10 {
        e = e.update(10 * MS, 0, HALF_LIFE);
    }
    let once = CpuEma::started(0).update(100 * MS, 0, HALF_LIFE);
    assert!(rel_err(e.value(), once.value()) < 1e-12);
    // 100 ms of CPU with a 1 s half-life: 0.1 * ln 2 of a core.
    assert_eq!(
        once.value_ppm(),
        (100_000.0 * std::f64::consts::LN_2).round() as u64
    );
    // Spread over 1 ms instead, nearly the same (within 1 - 2^-0.001).
    let spread = CpuEma::started(0).update(100 * MS, MS, HALF_LIFE);
    assert!(rel_err(spread.value(), once.value()) < 1e-3);
}

#[test]
fn a_cheap_flood_and_an_expensive_batch_both_score_above_a_normal_client() {
    // Normal: 1 ms of CPU per second. Flood: 2 us every 100 us (2%). Batch: 300 ms every 2 s.
    // 20 half-lives, so the steady clients are within 2^-20 of their load.
    let (normal, _) = run(CpuEma::started(0), 0, 20 * SECOND, SECOND, 1_000);
    let (flood, _) = run(CpuEma::started(0), 0, 20 * SECOND, 100_000, 20_000);
    let mut batch = CpuEma::started(0);
    for i in 1..=5 {
        batch = batch.update(300 * MS, i * 2 * SECOND, HALF_LIFE);
    }
    assert!(normal.value_ppm().abs_diff(1_000) <= 1);
    assert!(flood.value_ppm().abs_diff(20_000) <= 1);
    assert!(batch.value_ppm() > 100_000, "{batch:?}");
}
