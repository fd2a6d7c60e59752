//! Probabilities below the smallest normal f32 (1.18e-38) are legitimate inputs. Every loss that
//! takes the log of an input gives PyTorch's value for them (the log of the subnormal, computed
//! from its bits: drivers may flush subnormals or evaluate log() wrongly there; llvmpipe's log
//! of 1e-40 was neither -92.1 nor -inf).
//!
//! Tolerance: the loss is a log of magnitude ~90 computed as log(m) - 149 ln 2 with m an exact
//! integer; Vulkan's log is within 3 ulp, so 1e-6 relative. Products that are themselves
//! subnormal (KL's y log y at subnormal y) may be flushed to zero by the driver: 1e-37 absolute.

use crate::common::*;
use wgpu_loss::{Outputs, Reduction, cpu, pointwise::Pointwise};

const SUBNORMALS: [f32; 6] = [1e-40, 1.4e-45, 5e-39, 1.1754942e-38, 3e-42, 2e-44];

#[test]
fn bce_of_subnormal_probabilities() {
    let ctx = ctx();
    let pred: Vec<f32> = SUBNORMALS.iter().chain(&[0.5, 1e-30]).copied().collect();
    let target: Vec<f32> = (0..pred.len()).map(|i| 0.1 + 0.1 * i as f32).collect();
    let inputs = PwInputs {
        pred: &pred,
        target: &target,
        ..Default::default()
    };
    let out = pointwise_loss(
        ctx,
        Pointwise::Bce,
        &inputs,
        Reduction::None,
        None,
        Outputs::BOTH,
    )
    .unwrap();
    let twin = cpu::pointwise::pointwise(
        Pointwise::Bce,
        &pred,
        &target,
        None,
        None,
        Reduction::None,
        None,
    )
    .unwrap();
    let reference = twin.per_element.unwrap();
    // The reference really is the log of the subnormal (not 100, not the flushed value).
    assert!((reference[0] - 0.1 * 40.0 * std::f64::consts::LN_10 - 0.9 * 1e-40).abs() < 1e-3);
    assert_close(
        "bce loss",
        out.per_element.as_deref().unwrap(),
        &reference,
        Tol::new(1e-6, 0.0),
    );
    assert_close(
        "bce grad",
        out.grad.as_deref().unwrap(),
        &twin.grad,
        Tol::new(1e-6, 0.0),
    );
}

#[test]
fn cross_entropy_probs_of_subnormal_probabilities() {
    let ctx = ctx();
    let c = SUBNORMALS.len() + 1;
    let mut probs: Vec<f32> = SUBNORMALS.to_vec();
    probs.push(1.0 - 1e-6);
    let targets = vec![1.0 / c as f32; c];
    // eps = 0: the log of the subnormal itself; eps a subnormal too: the exact sum's log; the
    // default eps: log(x + 1e-7).
    for eps in [0.0, 1e-41, 1e-7] {
        let out = ce_probs(
            ctx,
            &probs,
            &targets,
            c,
            eps,
            Reduction::None,
            Outputs::LOSS,
        )
        .unwrap();
        let twin = cpu_ce_probs(&probs, &targets, c, eps, Reduction::None).unwrap();
        assert_close(
            &format!("cross-entropy-probs eps {eps:e}"),
            out.per_element.as_deref().unwrap(),
            twin.per_element.as_deref().unwrap(),
            Tol::new(1e-6, 0.0),
        );
    }
}

#[test]
fn kl_divergence_of_subnormal_targets() {
    let ctx = ctx();
    let target: Vec<f32> = SUBNORMALS.iter().chain(&[0.25]).copied().collect();
    let pred: Vec<f32> = (0..target.len()).map(|i| -0.5 * i as f32).collect();
    let inputs = PwInputs {
        pred: &pred,
        target: &target,
        ..Default::default()
    };
    let loss = Pointwise::KlDiv { log_target: false };
    let out = pointwise_loss(ctx, loss, &inputs, Reduction::None, None, Outputs::BOTH).unwrap();
    let twin =
        cpu::pointwise::pointwise(loss, &pred, &target, None, None, Reduction::None, None).unwrap();
    assert_close(
        "kl loss",
        out.per_element.as_deref().unwrap(),
        twin.per_element.as_deref().unwrap(),
        Tol::new(1e-6, 1e-37),
    );
}
