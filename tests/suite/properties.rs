//! Property tests over small shapes, options and reductions: no panic, and agreement with the
//! f64 twin (the same tolerances as the per-loss tests). Each case runs through the convenience
//! API; a new class count compiles new pipelines (C is a pipeline constant), so class counts
//! come from a fixed set and the case count is modest.

use crate::common::Rng;
use crate::common::*;
use proptest::prelude::*;
use wgpu_loss::{LossOutput, Outputs, Reduction, cpu, pointwise::Pointwise};

const LOSS: Tol = Tol::new(2e-5, 1e-5);

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn grad_tol(reference: &[f64]) -> Tol {
    Tol::new(2e-5, 1e-5 * largest(reference).max(1.0))
}

fn agree(what: &str, out: &LossOutput, twin: &cpu::Reference, outputs: Outputs) {
    if outputs.loss {
        match (&out.per_element, twin.per_element.as_deref()) {
            (Some(rows), Some(reference)) => assert_close(what, rows, reference, LOSS),
            _ => assert_scalar(what, out.value.unwrap(), twin.value.unwrap(), LOSS),
        }
    }
    if outputs.grad {
        let g = out.grad.as_deref().unwrap();
        assert_close(&format!("{what} grad"), g, &twin.grad, grad_tol(&twin.grad));
    }
}

/// Class counts: C is a pipeline constant, so each new one compiles pipelines (0.3-0.8 s on
/// lavapipe); a fixed set of five awkward values keeps the run short: C mod 4 of 0, 1, 2 and 3
/// (blocks of 4, 1 and 2 rows), odd, prime, and past one lane group's register tile.
fn classes() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 3, 7, 36, 514])
}

pub(crate) fn reduction() -> impl Strategy<Value = Reduction> {
    prop_oneof![
        Just(Reduction::None),
        Just(Reduction::Sum),
        Just(Reduction::Mean)
    ]
}

pub(crate) fn outputs() -> impl Strategy<Value = Outputs> {
    prop_oneof![
        Just(Outputs::LOSS),
        Just(Outputs::GRAD),
        Just(Outputs::BOTH)
    ]
}

fn any_pointwise() -> impl Strategy<Value = Pointwise> {
    prop_oneof![
        Just(Pointwise::Mse),
        Just(Pointwise::L1),
        (0.1f32..3.0).prop_map(|delta| Pointwise::Huber { delta }),
        (0.0f32..2.0).prop_map(|beta| Pointwise::SmoothL1 { beta }),
        Just(Pointwise::Bce),
        Just(Pointwise::BceWithLogits),
        any::<bool>().prop_map(|log_target| Pointwise::KlDiv { log_target }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pointwise_agrees(
        loss in any_pointwise(),
        len in 1usize..40_000,
        weight_len in prop::option::of(1usize..4),
        reduction in reduction(),
        outputs in outputs(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let probabilities = matches!(loss, Pointwise::Bce);
        let pred = if probabilities { rng.vec(len, 0.0, 1.0) } else { rng.vec(len, -3.0, 3.0) };
        let target = rng.vec(len, 0.0, 1.0);
        let bce = matches!(loss, Pointwise::Bce | Pointwise::BceWithLogits);
        // A weight whose length divides the element count.
        let weight = weight_len
            .filter(|_| bce)
            .map(|l| if len.is_multiple_of(l) { l } else { 1 })
            .map(|l| rng.vec(l, 0.5, 2.0));
        let inputs = PwInputs {
            pred: &pred,
            target: &target,
            weight: weight.as_deref(),
            pos_weight: None,
        };
        let out = pointwise_loss(ctx(), loss, &inputs, reduction, None, outputs).unwrap();
        let twin = cpu::pointwise::pointwise(
            loss, &pred, &target, weight.as_deref(), None, reduction, None,
        ).unwrap();
        agree(&format!("{loss:?} len {len} {reduction}"), &out, &twin, outputs);
    }

    #[test]
    fn cross_entropy_agrees(
        n in 1usize..60,
        c in classes(),
        weighted in any::<bool>(),
        label_smoothing in prop_oneof![Just(0.0f32), 0.0f32..1.0],
        z_loss in prop_oneof![Just(0.0f32), 0.0f32..0.01],
        softcap in prop::option::of(1.0f32..30.0),
        ignore_some in any::<bool>(),
        reduction in reduction(),
        outputs in outputs(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let logits = rng.vec(n * c, -10.0, 10.0);
        let mut targets = rng.classes(n, c);
        if ignore_some {
            for t in targets.iter_mut().step_by(3) {
                *t = -100;
            }
        }
        let weight = weighted.then(|| rng.vec(c, 0.5, 2.0));
        let options = CeOptions {
            reduction,
            ignore_index: -100,
            label_smoothing,
            z_loss,
            softcap,
        };
        let out = ce_classes(ctx(), &logits, &targets, c, weight.as_deref(), &options, outputs)
            .unwrap();
        let twin = cpu_ce(
            &logits, &targets, c, weight.as_deref(), &options,
        ).unwrap();
        // Every row ignored under `mean`: NaN on both sides.
        if twin.value.is_some_and(f64::is_nan) {
            prop_assert!(out.value.unwrap().is_nan() || !outputs.loss);
        } else {
            agree(&format!("cross-entropy [{n}, {c}] {options:?}"), &out, &twin, outputs);
        }
    }

    #[test]
    fn soft_targets_and_probabilities_agree(
        n in 1usize..40,
        c in classes(),
        reduction in reduction(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let logits = rng.vec(n * c, -6.0, 6.0);
        let probs = rng.distributions(n, c);
        let targets = rng.distributions(n, c);
        let options = CeOptions { reduction, ..Default::default() };
        let out = ce_soft(ctx(), &logits, &targets, c, None, &options, Outputs::BOTH)
            .unwrap();
        let twin =
            cpu_ce_soft(&logits, &targets, c, None, &options).unwrap();
        agree("soft targets", &out, &twin, Outputs::BOTH);
        let out = ce_probs(ctx(), &probs, &targets, c, 1e-7, reduction, Outputs::BOTH)
            .unwrap();
        let twin =
            cpu_ce_probs(&probs, &targets, c, 1e-7, reduction).unwrap();
        agree("probabilities", &out, &twin, Outputs::BOTH);
    }

    #[test]
    fn nll_agrees(
        n in 1usize..5_000,
        c in classes(),
        weighted in any::<bool>(),
        reduction in reduction(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let log_probs = rng.vec(n * c, -9.0, 0.0);
        let targets = rng.classes(n, c);
        let weight = weighted.then(|| rng.vec(c, 0.5, 2.0));
        let options = NllOptions { reduction, ..Default::default() };
        let out = nll_classes(ctx(), &log_probs, &targets, c, weight.as_deref(), &options, Outputs::BOTH)
            .unwrap();
        let twin = cpu::nll::nll(
            &log_probs, &targets, c, weight.as_deref(), -100, reduction,
        ).unwrap();
        agree(&format!("nll [{n}, {c}]"), &out, &twin, Outputs::BOTH);
    }

    /// Shapes and options that are wrong come back as errors, never panics, from the GPU API
    /// and the twins alike.
    #[test]
    fn bad_shapes_are_errors(
        data_len in 0usize..50,
        targets_len in 0usize..10,
        c in 0usize..8,
        weight_len in prop::option::of(0usize..8),
        label_smoothing in -1.0f32..2.0,
        ignore_index in prop_oneof![Just(-100i64), any::<i64>()],
    ) {
        let logits = vec![0.5f32; data_len];
        let targets: Vec<i64> = (0..targets_len as i64).collect();
        let weight = weight_len.map(|l| vec![1.0f32; l]);
        let options = CeOptions {
            label_smoothing,
            ignore_index,
            ..Default::default()
        };
        let gpu = ce_classes(ctx(), &logits, &targets, c, weight.as_deref(), &options, Outputs::BOTH);
        let twin = cpu_ce(&logits, &targets, c, weight.as_deref(), &options);
        // Where the GPU API accepts the input, so does the twin.
        if gpu.is_ok() {
            prop_assert!(twin.is_ok());
        }
    }
}
