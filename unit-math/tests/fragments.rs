//! The fragmentation score (metric F), alone and as a trained metric.

use rand::Rng;
use zgate_training::{
    fragmentation_score, Fragments, Metric, ModelParams, TrainingSet, FRAG_SCALE,
};
use zgate_unit_math::data;

/// Feeds `chunks` and returns the score after each chunk.
fn scores(chunks: &[usize]) -> Vec<Option<u64>> {
    let mut f = Fragments::default();
    chunks.iter().map(|&len| f.chunk(len)).collect()
}

#[test]
fn incremental_score_equals_the_closed_form_at_every_chunk() {
    let mut rng = data::rng(21);
    for _ in 0..1000 {
        let chunks: Vec<usize> = (0..rng.gen_range(1..50))
            .map(|_| rng.gen_range(0..20_000))
            .collect();
        let mut bytes = 0u64;
        for (i, got) in scores(&chunks).into_iter().enumerate() {
            bytes += chunks[i] as u64;
            let k = i as u64 + 1;
            let want = (k >= 2).then(|| FRAG_SCALE * k * k / bytes.max(1));
            assert_eq!(got, want);
        }
    }
}

#[test]
fn single_chunk_messages_have_no_score() {
    assert_eq!(scores(&[1]), [None]);
    assert_eq!(scores(&[1 << 20]), [None]);
    assert_eq!(fragmentation_score(0, 1), None);
}

#[test]
fn large_chunks_score_low_tiny_chunks_score_high() {
    // 1 MiB in 16 KiB HTTP/2 DATA frames: 1024 * 64^2 / 2^20 = 4.
    assert_eq!(fragmentation_score(1 << 20, 64), Some(4));
    // The same MiB in 1500-byte reads: about 1024 * 699^2 / 2^20 = 477.
    assert_eq!(fragmentation_score(1 << 20, 699), Some(477));
    // Byte-by-byte: 1024 per chunk.
    assert_eq!(fragmentation_score(1000, 1000), Some(1_024_000));
    // Chunks averaging 1 KiB score their count.
    assert_eq!(fragmentation_score(10 * 1024, 10), Some(10));
}

#[test]
fn for_a_fixed_chunk_size_the_score_grows_with_the_chunk_count() {
    for size in [1usize, 10, 1000, 16_384] {
        let s: Vec<u64> = scores(&vec![size; 100]).into_iter().flatten().collect();
        assert!(s.windows(2).all(|w| w[0] <= w[1]), "size {size}: {s:?}");
        // score = 1024 * k / size
        assert_eq!(s.last().copied(), Some(FRAG_SCALE * 100 / size as u64));
    }
}

#[test]
fn empty_frame_floods_score_high() {
    let s = scores(&[0; 100]);
    assert_eq!(s[99], Some(FRAG_SCALE * 100 * 100));
}

#[test]
fn a_dribbling_client_exceeds_a_model_of_normal_uploads() {
    // 1000 normal clients: their largest multi-chunk message is 4..64 KiB in 2..8 chunks.
    let mut rng = data::rng(22);
    let set = TrainingSet::new(1, 2);
    let w = set.writer();
    for _ in 0..1000 {
        let bytes = rng.gen_range(4096..65_536);
        let k = rng.gen_range(2..=8);
        let mut f = Fragments::default();
        let mut max = None;
        for i in 0..k {
            let len = bytes / k + usize::from(i == 0) * (bytes % k);
            max = max.max(f.chunk(len));
        }
        if let Some(x) = max {
            w.add(Metric::Fragmentation, x);
        }
    }
    let model = set.finalize(&ModelParams::default());
    let normal = model.get(Metric::Fragmentation);
    assert_eq!(normal.n, 1000);
    assert!(normal.mean < 16.0, "{normal:?}");
    // An attacker sends a 4 KiB body in 8-byte chunks: it exceeds threshold 3 mid-message,
    // after a few dozen chunks.
    let mut f = Fragments::default();
    let fired = (1..=512).find(|_| {
        f.chunk(8)
            .is_some_and(|x| model.exceeds(Metric::Fragmentation, x, 3.0))
    });
    assert!(
        matches!(fired, Some(k) if k < 64),
        "{fired:?}, model {normal:?}"
    );
    // A normal 64 KiB upload in 4 chunks does not.
    let mut f = Fragments::default();
    let top = (0..4).filter_map(|_| f.chunk(16_384)).max();
    assert!(top.is_some_and(|x| !model.exceeds(Metric::Fragmentation, x, 3.0)));
}
