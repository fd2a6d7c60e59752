//! A vocabulary split into shards, each on a device of its own (two or three contexts, each its
//! own device on the same adapter), against the unsharded loss on one: every shard's
//! statistics against its twin, the combined loss, log-sum-exp and gradient against the
//! unsharded ones.

use crate::common::*;
use wgpu_loss::{
    Context, CrossEntropyDesc, Error, Inputs, Plan, Reduction, cpu,
    cross_entropy::{Shard, combine_shards},
};

const VALUE: Tol = Tol::new(2e-5, 1e-5);
const ROW: Tol = Tol::new(1e-5, 1e-5);

fn grad_tol(reference: &[f64]) -> Tol {
    Tol::new(2e-5, 1e-6 * largest(reference))
}

/// Columns `[from, to)` of an `[n, c]` array.
fn columns(x: &[f32], c: usize, from: usize, to: usize) -> Vec<f32> {
    x.chunks(c).flat_map(|row| row[from..to].to_vec()).collect()
}

/// The options of a case, applied to a description.
fn with_options(desc: CrossEntropyDesc, case: usize) -> CrossEntropyDesc {
    match case {
        0 => desc,
        1 => desc
            .label_smoothing(0.1)
            .z_loss(1e-3)
            .softcap(20.0)
            .reduction(Reduction::Sum),
        _ => desc.label_smoothing(0.05).reduction(Reduction::None),
    }
}

/// Splits `[n, v]` logits at `cuts` over one context each, and checks the sharded loss against
/// the unsharded one.
fn check_split(contexts: &[Context], n: usize, v: usize, cuts: &[usize], seed: u64) {
    check_cases(contexts, (n, v), cuts, seed, &[0, 1, 2]);
}

/// [`check_split`] with the options of `cases` only (see [`with_options`]).
fn check_cases(
    contexts: &[Context],
    (n, v): (usize, usize),
    cuts: &[usize],
    seed: u64,
    cases: &[usize],
) {
    let mut rng = Rng::new(seed);
    let logits = rng.vec(n * v, -8.0, 8.0);
    let mut targets = rng.classes(n, v);
    targets[1] = -100;
    let weight = rng.vec(v, 0.5, 2.0);
    let bounds: Vec<(usize, usize)> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .zip(cuts.iter().copied().chain(std::iter::once(v)))
        .collect();
    assert_eq!(bounds.len(), contexts.len());
    for &case in cases {
        let weighted = case == 1;
        let mut full = with_options(CrossEntropyDesc::new(n, v), case);
        let mut inputs = Inputs::classes(&logits, &targets);
        if weighted {
            full = full.weight(v);
            inputs = inputs.weight(&weight);
        }
        let what = format!("[{n}, {v}] cut at {cuts:?}, case {case}");
        let reference = cpu::reference(&full, &inputs).unwrap();
        // Each shard's statistics, on its own device.
        let parts: Vec<(Vec<f32>, Vec<f32>)> = bounds
            .iter()
            .map(|&(a, b)| (columns(&logits, v, a, b), weight[a..b].to_vec()))
            .collect();
        let step = |(a, b): (usize, usize), shard: Shard| {
            let mut d = with_options(CrossEntropyDesc::new(n, b - a), case).shard(shard);
            if weighted {
                d = d.weight(b - a);
            }
            d
        };
        let stats: Vec<Vec<f32>> = bounds
            .iter()
            .zip(&parts)
            .zip(contexts)
            .map(|((&(a, b), (x, w)), ctx)| {
                let desc = step((a, b), Shard::statistics(a, v));
                let mut inputs = Inputs::classes(x, &targets);
                if weighted {
                    inputs = inputs.weight(w);
                }
                let out = ctx.loss(&desc, &inputs).unwrap();
                let stats = out.shard_stats.unwrap();
                let twin = cpu::reference(&desc, &inputs).unwrap().per_element.unwrap();
                assert_close(&format!("{what} shard {a}.. stats"), &stats, &twin, ROW);
                stats
            })
            .collect();
        let views: Vec<&[f32]> = stats.iter().map(|s| s.as_slice()).collect();
        let combined = combine_shards(&full, &views).unwrap();
        match (combined.value, &combined.per_row) {
            (Some(value), _) => assert_scalar(&what, value, reference.value.unwrap(), VALUE),
            (None, Some(rows)) => {
                assert_close(&what, rows, reference.per_element.as_ref().unwrap(), ROW)
            }
            _ => panic!("{what}: no loss"),
        }
        let lse = cpu::cross_entropy::row_lse(&full, &inputs).unwrap();
        assert_close(&format!("{what} lse"), &combined.lse, &lse, ROW);
        // Each shard's gradient from the combined statistics, stitched back into rows.
        let mut grad = vec![0.0f32; n * v];
        for ((&(a, b), (x, w)), ctx) in bounds.iter().zip(&parts).zip(contexts) {
            let desc = step((a, b), Shard::gradient(a, v));
            let mut inputs = Inputs::classes(x, &targets).shard_scale(&combined.scale);
            if weighted {
                inputs = inputs.weight(w);
            }
            let g = ctx.loss(&desc, &inputs).unwrap().grad.unwrap();
            let twin = cpu::reference(&desc, &inputs).unwrap().grad;
            assert_close(
                &format!("{what} shard {a}.. grad"),
                &g,
                &twin,
                grad_tol(&twin),
            );
            for (row, part) in g.chunks(b - a).enumerate() {
                grad[row * v + a..row * v + b].copy_from_slice(part);
            }
        }
        assert_close(
            &format!("{what} grad"),
            &grad,
            &reference.grad,
            grad_tol(&reference.grad),
        );
    }
}

// The fast suite splits with every option at once (case 1); the extended suite with none and
// with per-row losses.
fast_and_extended!(
    two_devices_each_with_half_the_vocabulary,
    two_devices_each_with_half_the_vocabulary_extended,
    |extended| {
        let contexts = [Context::new().unwrap(), Context::new().unwrap()];
        let cases: &[usize] = if extended { &[0, 2] } else { &[1] };
        check_cases(&contexts, (37, 1001), &[500], 41, cases);
    }
);

/// Rows chunked over workgroups in each shard.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn two_devices_each_with_half_of_long_rows() {
    let contexts = [Context::new().unwrap(), Context::new().unwrap()];
    check_split(&contexts, 3, 80_001, &[40_000], 42);
}

/// Shards whose rows are longer than a workgroup holds, under a tuning that reads them once
/// with the gradient (the sweep, its gradient step over the whole vocabulary's statistics).
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn shards_of_rows_swept_once() {
    let contexts = [swept(None), swept(None)];
    check_split(&contexts, 3, 80_001, &[40_000], 44);
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn three_uneven_shards() {
    let contexts = [
        Context::new().unwrap(),
        Context::new().unwrap(),
        Context::new().unwrap(),
    ];
    check_split(&contexts, 19, 777, &[5, 700], 43);
}

#[test]
fn bad_shards_are_errors() {
    let ctx = ctx();
    let desc = CrossEntropyDesc::new(2, 300).shard(Shard::statistics(800, 1000));
    assert!(matches!(
        Plan::new(ctx, &desc).unwrap_err(),
        Error::InvalidOption {
            option: "shard",
            ..
        }
    ));
    let desc = CrossEntropyDesc::new(2, 300)
        .shard(Shard::statistics(0, 1000))
        .lse(true);
    assert!(matches!(
        Plan::new(ctx, &desc).unwrap_err(),
        Error::InvalidOption {
            option: "shard",
            ..
        }
    ));
    // The gradient step needs the combined statistics; targets index the whole vocabulary.
    let logits = vec![0.5f32; 2 * 300];
    let desc = CrossEntropyDesc::new(2, 300).shard(Shard::gradient(0, 1000));
    let err = ctx
        .loss(&desc, &Inputs::classes(&logits, &[0, 999]))
        .unwrap_err();
    assert!(matches!(err, Error::Binding("shard_scale", _)), "{err}");
    let desc = CrossEntropyDesc::new(2, 300).shard(Shard::statistics(0, 1000));
    let err = ctx
        .loss(&desc, &Inputs::classes(&logits, &[0, 1000]))
        .unwrap_err();
    assert!(matches!(err, Error::TargetOutOfRange { .. }), "{err}");
    // Shards that do not hold a row's target between them.
    let stats = ctx
        .loss(&desc, &Inputs::classes(&logits, &[0, 999]))
        .unwrap()
        .shard_stats
        .unwrap();
    let err = combine_shards(&CrossEntropyDesc::new(2, 1000), &[&stats]).unwrap_err();
    assert!(err.to_string().contains("row 1"), "{err}");
}
