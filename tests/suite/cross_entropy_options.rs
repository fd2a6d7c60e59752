//! Cross-entropy's options on the GPU against the f64 reference: class weights with label
//! smoothing, ignore_index as a real class, z-loss, logit softcap, and probability targets with
//! the same options, on fused (one read) and split (two reads) layouts, with poisoned outputs.
//!
//! Tolerances as in tests/suite/cross_entropy.rs (exp and log error, a fixed-order tree): 1e-5
//! relative + 1e-5 absolute per row, 2e-5 on reduced values, gradients 2e-5 relative + 1e-6 of
//! the largest. Softcap adds tanh, whose Vulkan error bound is that of its exp-based formula:
//! the same tolerances hold, and the test checks them.

use crate::common::*;
use wgpu_loss::{Plan, Reduction, cpu, cross_entropy::Targets};

const ROW: Tol = Tol::new(1e-5, 1e-5);
const VALUE: Tol = Tol::new(2e-5, 1e-5);

/// A gradient is a difference of per-row coefficients of the size of the reduction's scale
/// (1, or 1 / N for a mean); f32 rounding of those leaves an absolute error of about eps times
/// them even where the difference is 0 (C = 1).
fn grad_tol(reference: &[f64], rows: usize, reduction: Reduction) -> Tol {
    let gmax = largest(reference);
    let scale = if reduction == Reduction::Mean {
        1.0 / rows as f64
    } else {
        1.0
    };
    Tol::new(2e-5, 1e-6 * gmax.max(scale))
}

/// Shapes covering rows per block of 1, 2 and 4, one workgroup, many, and split rows.
const SHAPES: [(usize, usize); 6] = [
    (1, 1),
    (7, 5),
    (37, 10),
    (300, 1000),
    (41, 2051),
    (3, 20_001),
];

struct Case {
    rows: usize,
    classes: usize,
    logits: Vec<f32>,
    /// Class indices, or probabilities `[N, C]`.
    classes_t: Option<Vec<i64>>,
    probs_t: Option<Vec<f32>>,
    weight: Option<Vec<f32>>,
    options: CeOptions,
}

impl Case {
    fn classes(rows: usize, classes: usize, seed: u64, options: CeOptions) -> Self {
        let mut rng = Rng::new(seed);
        let logits = rng.vec(rows * classes, -8.0, 8.0);
        let mut targets = rng.classes(rows, classes);
        for t in targets.iter_mut().skip(2).step_by(5) {
            *t = options.ignore_index;
        }
        Case {
            rows,
            classes,
            logits,
            classes_t: Some(targets),
            probs_t: None,
            weight: None,
            options,
        }
    }

    fn probabilities(rows: usize, classes: usize, seed: u64, options: CeOptions) -> Self {
        let mut rng = Rng::new(seed);
        Case {
            rows,
            classes,
            logits: rng.vec(rows * classes, -8.0, 8.0),
            classes_t: None,
            probs_t: Some(rng.distributions(rows, classes)),
            weight: None,
            options,
        }
    }

    fn weighted(mut self, seed: u64) -> Self {
        self.weight = Some(Rng::new(seed).vec(self.classes, 0.1, 3.0));
        self
    }

    fn reference(&self, options: &CeOptions) -> cpu::Reference {
        match (&self.classes_t, &self.probs_t) {
            (Some(t), _) => cpu_ce(
                &self.logits,
                t,
                self.classes,
                self.weight.as_deref(),
                options,
            )
            .unwrap(),
            (_, Some(p)) => cpu_ce_soft(
                &self.logits,
                p,
                self.classes,
                self.weight.as_deref(),
                options,
            )
            .unwrap(),
            _ => unreachable!(),
        }
    }

    fn record(&self, options: &CeOptions) -> (Vec<f32>, Vec<f32>) {
        let ctx = ctx();
        let kind = if self.classes_t.is_some() {
            Targets::Classes
        } else {
            Targets::Probabilities
        };
        let desc = (options)
            .desc(self.rows, self.classes)
            .targets(kind)
            .weighted(self.weight.is_some());
        let plan = Plan::new(ctx, &desc).unwrap();
        let logits = upload(ctx, &self.logits);
        let targets = match (&self.classes_t, &self.probs_t) {
            (Some(t), _) => upload(ctx, &t.iter().map(|&v| v as i32).collect::<Vec<_>>()),
            (_, Some(p)) => upload(ctx, p),
            _ => unreachable!(),
        };
        let weight = self.weight.as_ref().map(|w| upload(ctx, w));
        let loss_len = if options.reduction == Reduction::None {
            self.rows
        } else {
            1
        };
        let loss = poisoned(ctx, loss_len);
        let grad = poisoned(ctx, self.logits.len());
        plan.run_buffers(&buffers(
            &logits,
            &targets,
            weight.as_deref(),
            None,
            Some(&loss),
            Some(&grad),
        ))
        .unwrap();
        (
            read(ctx, &loss, loss_len),
            read(ctx, &grad, self.logits.len()),
        )
    }

    fn check(&self, what: &str) {
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let options = self.options.reduction(reduction);
            let reference = self.reference(&options);
            let (loss, grad) = self.record(&options);
            let what = format!(
                "{what} n={} c={} {reduction} {:?}",
                self.rows, self.classes, self.options
            );
            assert_loss(&what, &loss, &reference, ROW, VALUE);
            let tol = grad_tol(&reference.grad, self.rows, reduction);
            assert_close(&format!("{what} grad"), &grad, &reference.grad, tol);
        }
    }
}

fn opts(label_smoothing: f32, z_loss: f32, softcap: Option<f32>) -> CeOptions {
    CeOptions {
        label_smoothing,
        z_loss,
        softcap,
        ..Default::default()
    }
}

// Each option on one shape of `SHAPES` in the fast suite (a different one each), on the rest
// in the extended suite: every (C, option) pair compiles pipelines of its own.
fast_and_extended!(label_smoothing, label_smoothing_extended, |extended| {
    for (i, (n, c)) in cases(&SHAPES, &[2], extended) {
        Case::classes(n, c, i as u64, opts(0.1, 0.0, None)).check("smoothing");
        Case::classes(n, c, 10 + i as u64, opts(0.25, 0.0, None))
            .weighted(i as u64)
            .check("smoothing, weighted");
    }
});

fast_and_extended!(
    ignore_index_that_is_a_class,
    ignore_index_extended,
    |extended| {
        for (i, (n, c)) in cases(&SHAPES[1..], &[0], extended) {
            let i = i + 1;
            let options = CeOptions {
                ignore_index: 1,
                label_smoothing: 0.05,
                ..Default::default()
            };
            Case::classes(n, c, 20 + i as u64, options)
                .weighted(i as u64)
                .check("ignore 1");
        }
    }
);

fast_and_extended!(z_loss, z_loss_extended, |extended| {
    for (i, (n, c)) in cases(&SHAPES, &[2], extended) {
        Case::classes(n, c, 30 + i as u64, opts(0.0, 1e-4, None)).check("z-loss");
        Case::classes(n, c, 40 + i as u64, opts(0.0, 0.05, None))
            .weighted(i as u64)
            .check("z-loss, weighted");
    }
});

fast_and_extended!(softcap, softcap_extended, |extended| {
    for (i, (n, c)) in cases(&SHAPES, &[1], extended) {
        Case::classes(n, c, 50 + i as u64, opts(0.0, 0.0, Some(5.0))).check("softcap");
        Case::classes(n, c, 60 + i as u64, opts(0.1, 1e-4, Some(30.0)))
            .weighted(i as u64)
            .check("everything");
    }
});

/// Softcapped logits of +-1e4 and -inf saturate at -+cap: finite losses and gradients.
#[test]
fn softcap_saturates() {
    let mut case = Case::classes(5, 6, 70, opts(0.0, 0.0, Some(20.0)));
    case.logits[0] = 1e4;
    case.logits[7] = -1e4;
    case.logits[13] = f32::NEG_INFINITY;
    case.classes_t = Some(vec![0, 1, 2, 3, 4]);
    case.check("saturated");
    let (loss, grad) = case.record(&case.options.reduction(Reduction::None));
    assert!(loss.iter().chain(&grad).all(|v| v.is_finite()), "{loss:?}");
}

fast_and_extended!(
    probability_targets,
    probability_targets_extended,
    |extended| {
        for (i, (n, c)) in cases(&SHAPES, &[1], extended) {
            Case::probabilities(n, c, 80 + i as u64, opts(0.0, 0.0, None)).check("probabilities");
            Case::probabilities(n, c, 90 + i as u64, opts(0.2, 1e-3, Some(10.0)))
                .weighted(i as u64)
                .check("probabilities, options");
        }
    }
);

/// A -inf logit with label smoothing: the smoothing term makes the loss infinite (PyTorch
/// does the same); the gradient stays finite.
#[test]
fn minus_infinity_with_smoothing() {
    let mut case = Case::classes(4, 5, 100, opts(0.1, 0.0, None));
    case.classes_t = Some(vec![1, 2, 3, 4]);
    case.logits[0] = f32::NEG_INFINITY;
    case.check("-inf smoothing");
    let (loss, grad) = case.record(&case.options.reduction(Reduction::None));
    assert_eq!(loss[0], f32::INFINITY);
    assert!(grad.iter().all(|g| g.is_finite()));
}
