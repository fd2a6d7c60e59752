//! MSE on the GPU against the f64 reference: every reduction, loss and gradient, through both
//! API levels, on sizes around the workgroup and vec4 boundaries and past lavapipe's loop cap.
//!
//! Tolerances (f32 against f64 of the same f32 inputs, eps = 2^-24 ~ 6e-8):
//! - per element: `d = x - y` and `d * d` (or `2 d / M`) round at most 3 times: 3 eps < 2e-7;
//!   we allow 1e-6 relative.
//! - reduced: a fixed-order tree over M non-negative terms (up to 32 sequential adds per
//!   invocation lane, then log2 of the rest) stays within (32 + 4 + log2 M) eps of the sum:
//!   < 3.7e-6 for M = 2^25;
//!   we allow 1e-5 relative.

use crate::common::*;
use wgpu_loss::{Outputs, Plan, PointwiseDesc, Reduction, cpu, pointwise::Pointwise};

const ELEM: Tol = Tol::new(1e-6, 0.0);
const SUM: Tol = Tol::new(1e-5, 0.0);

/// Runs MSE through the recording API with poisoned outputs; returns (loss, grad).
fn record_mse(
    pred: &[f32],
    target: &[f32],
    reduction: Reduction,
    outputs: Outputs,
) -> (Vec<f32>, Vec<f32>) {
    let ctx = ctx();
    let m = pred.len();
    let desc = PointwiseDesc::new(Pointwise::Mse, m)
        .reduction(reduction)
        .outputs(outputs);
    let plan = Plan::new(ctx, &desc).unwrap();
    let (p, t) = (upload(ctx, pred), upload(ctx, target));
    let loss_len = if reduction == Reduction::None { m } else { 1 };
    let loss = poisoned(ctx, loss_len);
    let grad = poisoned(ctx, m);
    submit(ctx, |e| {
        plan.record_buffers(
            e,
            &buffers(
                &p,
                &t,
                None,
                None,
                outputs.loss.then_some(&loss),
                outputs.grad.then_some(&grad),
            ),
        )
        .unwrap()
    });
    let l = if outputs.loss {
        read(ctx, &loss, loss_len)
    } else {
        vec![]
    };
    let g = if outputs.grad {
        read(ctx, &grad, m)
    } else {
        vec![]
    };
    if !outputs.grad {
        assert!(
            read(ctx, &grad, m).iter().all(|&v| v.to_bits() == POISON),
            "grad written unasked"
        );
    }
    (l, g)
}

fn check(m: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let pred = rng.vec(m, -3.0, 3.0);
    let target = rng.vec(m, -3.0, 3.0);
    for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
        let reference = cpu::pointwise::mse(&pred, &target, reduction).unwrap();
        let (loss, grad) = record_mse(&pred, &target, reduction, Outputs::BOTH);
        let what = format!("mse m={m} {reduction}");
        assert_loss(&what, &loss, &reference, ELEM, SUM);
        assert_close(&format!("{what} grad"), &grad, &reference.grad, ELEM);
    }
}

#[test]
fn small_and_boundary_sizes() {
    for (i, m) in [
        1, 2, 3, 4, 5, 7, 255, 256, 257, 1023, 1025, 16383, 16384, 16385, 16388,
    ]
    .into_iter()
    .enumerate()
    {
        check(m, i as u64);
    }
}

#[test]
fn medium_sizes_with_tails() {
    for (i, m) in [65_537, 100_003, 262_147].into_iter().enumerate() {
        check(m, 100 + i as u64);
    }
}

/// 2^24 + 3 elements: 16 M, a tail of 3, 1025 workgroups. No invocation loops more than 16
/// times, so lavapipe's silent loop cap (about 65,535 iterations per invocation) cannot bite.
#[test]
fn sixteen_million_elements() {
    check((1 << 24) + 3, 7);
}

/// The largest MSE lavapipe binds: 2^25 f32 = 128 MiB per buffer.
#[test]
fn largest_binding() {
    let ctx = ctx();
    let m = (ctx.max_binding_bytes() / 4).min(1 << 25) as usize;
    let mut rng = Rng::new(9);
    let pred = rng.vec(m, -1.0, 1.0);
    let target = rng.vec(m, -1.0, 1.0);
    let reference = cpu::pointwise::mse(&pred, &target, Reduction::Mean).unwrap();
    let (loss, grad) = record_mse(&pred, &target, Reduction::Mean, Outputs::BOTH);
    assert_scalar("mse 2^25 mean", loss[0], reference.value.unwrap(), SUM);
    assert_close("mse 2^25 grad", &grad, &reference.grad, ELEM);
}

#[test]
fn loss_only_and_grad_only() {
    let mut rng = Rng::new(3);
    for m in [10, 50_001] {
        let pred = rng.vec(m, -2.0, 2.0);
        let target = rng.vec(m, -2.0, 2.0);
        let reference = cpu::pointwise::mse(&pred, &target, Reduction::Mean).unwrap();
        let (loss, _) = record_mse(&pred, &target, Reduction::Mean, Outputs::LOSS);
        assert_scalar("loss only", loss[0], reference.value.unwrap(), SUM);
        let (_, grad) = record_mse(&pred, &target, Reduction::Mean, Outputs::GRAD);
        assert_close("grad only", &grad, &reference.grad, ELEM);
    }
}

#[test]
fn convenience_matches_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(11);
    let pred = rng.vec(20_001, -5.0, 5.0);
    let target = rng.vec(20_001, -5.0, 5.0);
    for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
        let out = mse(ctx, &pred, &target, reduction, Outputs::BOTH).unwrap();
        let reference = cpu::pointwise::mse(&pred, &target, reduction).unwrap();
        match reduction {
            Reduction::None => {
                assert_eq!(out.value, None);
                assert_close(
                    "per element",
                    out.per_element.as_ref().unwrap(),
                    reference.per_element.as_ref().unwrap(),
                    ELEM,
                )
            }
            _ => {
                assert_eq!(out.per_element, None);
                assert_scalar("value", out.value.unwrap(), reference.value.unwrap(), SUM)
            }
        }
        assert_close("grad", out.grad.as_ref().unwrap(), &reference.grad, ELEM);
    }
}

#[test]
fn nan_propagates() {
    let ctx = ctx();
    let mut rng = Rng::new(5);
    for m in [9, 70_001] {
        let mut pred = rng.vec(m, -1.0, 1.0);
        let target = rng.vec(m, -1.0, 1.0);
        pred[m / 2] = f32::NAN;
        let out = mse(ctx, &pred, &target, Reduction::Mean, Outputs::BOTH).unwrap();
        assert!(
            out.value.unwrap().is_nan(),
            "m={m}: mean of data with a NaN"
        );
        let grad = out.grad.unwrap();
        assert!(grad[m / 2].is_nan());
        assert_eq!(grad.iter().filter(|g| g.is_nan()).count(), 1);
    }
}

#[test]
fn repeated_runs_are_bitwise_equal() {
    let mut rng = Rng::new(21);
    let m = 3_000_017;
    let pred = rng.vec(m, -10.0, 10.0);
    let target = rng.vec(m, -10.0, 10.0);
    let first = record_mse(&pred, &target, Reduction::Sum, Outputs::BOTH);
    for _ in 0..3 {
        let again = record_mse(&pred, &target, Reduction::Sum, Outputs::BOTH);
        assert_eq!(first.0[0].to_bits(), again.0[0].to_bits());
        assert!(
            first
                .1
                .iter()
                .zip(&again.1)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
}

/// A plan may be dropped between recording and submitting: the recorded commands keep what
/// they use alive (the plan's buffers are released, not destroyed, on drop).
#[test]
fn plan_dropped_before_submit() {
    let ctx = ctx();
    let mut rng = Rng::new(91);
    let m = 100_003;
    let (pred, target) = (rng.vec(m, -2.0, 2.0), rng.vec(m, -2.0, 2.0));
    let (p, t) = (upload(ctx, &pred), upload(ctx, &target));
    let (loss, grad) = (poisoned(ctx, 1), poisoned(ctx, m));
    submit(ctx, |encoder| {
        let plan = Plan::new(ctx, &PointwiseDesc::new(Pointwise::Mse, m)).unwrap();
        plan.record_buffers(
            encoder,
            &buffers(&p, &t, None, None, Some(&loss), Some(&grad)),
        )
        .unwrap();
        drop(plan);
    });
    let reference = cpu::pointwise::mse(&pred, &target, Reduction::Mean).unwrap();
    assert_scalar(
        "mse",
        read(ctx, &loss, 1)[0],
        reference.value.unwrap(),
        Tol::new(1e-6, 0.0),
    );
    assert_close(
        "mse grad",
        &read(ctx, &grad, m),
        &reference.grad,
        Tol::new(1e-6, 1e-7),
    );
}
