//! The streaming losses (L1, Huber, smooth L1, BCE, BCE with logits, KL divergence, and the
//! classic cross-entropy on probabilities) on the GPU against the f64 reference, with their
//! options and hard values, through the recording API with poisoned outputs. MSE has its own
//! file.
//!
//! Tolerances: each element is a handful of f32 operations, and at most one exp or log (Vulkan:
//! exp within 3 + 2|x| ulp, log within 3 ulp or 2^-21 absolute near 1): 1e-5 relative plus
//! 1e-6 absolute per element. Reduced values are sums of mixed-sign terms (KL), so the bound is
//! on the sum of magnitudes: 4e-6 of sum |l_i| (a fixed-order tree over at most 2^25 terms stays
//! within (32 + 25) eps of it, about 3.4e-6), over the mean's denominator.

use crate::common::*;
use wgpu_loss::{
    ClassicCrossEntropyDesc, Context, Error, Outputs, Plan, PointwiseDesc, Reduction,
    context::{ContextOptions, Tuning},
    cpu,
    pointwise::Pointwise,
};

const ELEM: Tol = Tol::new(1e-5, 1e-6);

struct Case {
    loss: Pointwise,
    pred: Vec<f32>,
    target: Vec<f32>,
    weight: Option<Vec<f32>>,
    pos_weight: Option<Vec<f32>>,
    batch: Option<usize>,
}

impl Case {
    fn new(loss: Pointwise, pred: Vec<f32>, target: Vec<f32>) -> Self {
        Case {
            loss,
            pred,
            target,
            weight: None,
            pos_weight: None,
            batch: None,
        }
    }

    fn reference(&self, reduction: Reduction) -> cpu::Reference {
        cpu::pointwise::pointwise(
            self.loss,
            &self.pred,
            &self.target,
            self.weight.as_deref(),
            self.pos_weight.as_deref(),
            reduction,
            self.batch,
        )
        .unwrap()
    }

    /// Runs through the recording API with poisoned outputs.
    fn record(&self, reduction: Reduction) -> (Vec<f32>, Vec<f32>) {
        let ctx = ctx();
        let m = self.pred.len();
        let mut desc = PointwiseDesc::new(self.loss, m).reduction(reduction);
        desc.weight = self.weight.as_ref().map(Vec::len);
        desc.pos_weight = self.pos_weight.as_ref().map(Vec::len);
        desc.batch = self.batch;
        let plan = Plan::new(ctx, &desc).unwrap();
        let pred = upload(ctx, &self.pred);
        let target = upload(ctx, &self.target);
        let weight = self.weight.as_ref().map(|w| upload(ctx, w));
        let pos_weight = self.pos_weight.as_ref().map(|w| upload(ctx, w));
        let loss_len = if reduction == Reduction::None { m } else { 1 };
        let loss = poisoned(ctx, loss_len);
        let grad = poisoned(ctx, m);
        submit(ctx, |e| {
            plan.record_buffers(
                e,
                &buffers(
                    &pred,
                    &target,
                    weight.as_deref(),
                    pos_weight.as_deref(),
                    Some(&loss),
                    Some(&grad),
                ),
            )
            .unwrap()
        });
        plan.read_status().unwrap().check("probabilities").unwrap();
        (read(ctx, &loss, loss_len), read(ctx, &grad, m))
    }

    fn check(&self, what: &str) {
        let reductions: &[Reduction] = match (self.loss, self.batch) {
            (Pointwise::KlDiv { .. }, Some(_)) => &[
                Reduction::None,
                Reduction::Sum,
                Reduction::Mean,
                Reduction::BatchMean,
            ],
            _ => &[Reduction::None, Reduction::Sum, Reduction::Mean],
        };
        for &reduction in reductions {
            let reference = self.reference(reduction);
            let (loss, grad) = self.record(reduction);
            let what = format!(
                "{what} {} m={} {reduction}",
                self.loss.name(),
                self.pred.len()
            );
            match reduction {
                Reduction::None => {
                    assert_close(&what, &loss, reference.per_element.as_ref().unwrap(), ELEM)
                }
                _ => {
                    let per = self.reference(Reduction::None).per_element.unwrap();
                    let den = match reduction {
                        Reduction::Sum => 1.0,
                        Reduction::BatchMean => self.batch.unwrap() as f64,
                        _ => per.len() as f64,
                    };
                    let magnitude: f64 = per.iter().map(|l| l.abs()).sum::<f64>() / den;
                    assert_scalar(
                        &what,
                        loss[0],
                        reference.value.unwrap(),
                        Tol::new(0.0, 4e-6 * magnitude + 1e-12),
                    );
                }
            }
            let gmax = reference
                .grad
                .iter()
                .filter(|g| g.is_finite())
                .fold(0.0f64, |a, g| a.max(g.abs()));
            assert_close(
                &format!("{what} grad"),
                &grad,
                &reference.grad,
                Tol::new(1e-5, 1e-6 * gmax),
            );
        }
    }
}

/// Sizes around the workgroup, vec4 and single-workgroup boundaries.
const SIZES: [usize; 6] = [1, 3, 37, 4099, 32_769, 100_003];

fn random(loss: Pointwise, m: usize, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    match loss {
        Pointwise::Bce => Case::new(loss, rng.vec(m, 0.001, 0.999), rng.vec(m, 0.0, 1.0)),
        Pointwise::KlDiv { log_target } => {
            let pred: Vec<f32> = rng.vec(m, 0.01, 1.0).iter().map(|p| p.ln()).collect();
            let t = rng.vec(m, 0.01, 1.0);
            let target = if log_target {
                t.iter().map(|p| p.ln()).collect()
            } else {
                t
            };
            Case::new(loss, pred, target)
        }
        _ => Case::new(loss, rng.vec(m, -4.0, 4.0), rng.vec(m, -4.0, 4.0)),
    }
}

#[test]
fn l1_huber_smooth_l1() {
    for (i, &m) in SIZES.iter().enumerate() {
        for loss in [
            Pointwise::L1,
            Pointwise::Huber { delta: 1.0 },
            Pointwise::Huber { delta: 0.37 },
            Pointwise::SmoothL1 { beta: 1.0 },
            Pointwise::SmoothL1 { beta: 2.5 },
            Pointwise::SmoothL1 { beta: 0.0 },
        ] {
            random(loss, m, i as u64).check("random");
        }
    }
}

/// |x - y| exactly at delta and beta (both branches meet there), and exact ties (gradient 0).
#[test]
fn thresholds_and_ties() {
    let pred = vec![1.5, -1.5, 0.25, 3.0, 2.0, -2.0, 0.75];
    let target = vec![0.5, -0.5, 0.25, 2.0, 0.0, 0.0, 0.75];
    for loss in [
        Pointwise::L1,
        Pointwise::Huber { delta: 1.0 },
        Pointwise::Huber { delta: 2.0 },
        Pointwise::SmoothL1 { beta: 1.0 },
        Pointwise::SmoothL1 { beta: 2.0 },
        Pointwise::SmoothL1 { beta: 0.0 },
    ] {
        Case::new(loss, pred.clone(), target.clone()).check("thresholds");
    }
    let (_, grad) = Case::new(Pointwise::L1, pred.clone(), target.clone()).record(Reduction::Sum);
    assert_eq!(grad[2], 0.0, "the L1 gradient is 0 where pred == target");
    let (_, grad) = Case::new(Pointwise::Huber { delta: 1.0 }, pred, target).record(Reduction::Sum);
    assert_eq!(
        &grad[..2],
        &[1.0, -1.0],
        "huber's gradient is +-delta at |d| = delta"
    );
}

#[test]
fn binary_cross_entropy() {
    for (i, &m) in SIZES.iter().enumerate() {
        random(Pointwise::Bce, m, 10 + i as u64).check("random");
        let mut case = random(Pointwise::Bce, m, 20 + i as u64);
        case.weight = Some(Rng::new(i as u64).vec(m, 0.1, 2.0));
        case.check("per-element weight");
    }
    // Weight broadcast over the last dimension of [N, C].
    let mut case = random(Pointwise::Bce, 7 * 13, 30);
    case.weight = Some(Rng::new(31).vec(13, 0.1, 2.0));
    case.check("class weight");
}

/// Probabilities of exactly 0 and 1: the logs clamp at -100, finite everywhere.
#[test]
fn binary_cross_entropy_at_zero_and_one() {
    let pred = vec![0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.5];
    let target = vec![0.0, 1.0, 0.0, 1.0, 0.3, 0.7, 1.0];
    let case = Case::new(Pointwise::Bce, pred, target);
    case.check("0 and 1");
    let (loss, grad) = case.record(Reduction::None);
    assert_eq!(loss[1], 100.0);
    assert!(
        loss.iter().chain(&grad).all(|v| v.is_finite()),
        "{loss:?} {grad:?}"
    );
}

#[test]
fn binary_cross_entropy_rejects_values_outside_zero_one() {
    let ctx = ctx();
    let inputs = PwInputs {
        pred: &[0.5, 1.5, 0.2],
        target: &[1.0, 0.0, 0.0],
        ..Default::default()
    };
    let e = pointwise_loss(
        ctx,
        Pointwise::Bce,
        &inputs,
        Reduction::Mean,
        None,
        Outputs::BOTH,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::ValueOutOfRange { index: 1, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("1.5") && e.to_string().contains("[0, 1]"),
        "{e}"
    );
    let nan = PwInputs {
        pred: &[0.5, f32::NAN],
        target: &[1.0, 0.0],
        ..Default::default()
    };
    let e = pointwise_loss(
        ctx,
        Pointwise::Bce,
        &nan,
        Reduction::Mean,
        None,
        Outputs::BOTH,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::ValueOutOfRange { index: 1, .. }),
        "{e:?}"
    );

    // On the GPU, the kernel counts them.
    let plan = Plan::new(ctx, &PointwiseDesc::new(Pointwise::Bce, 5)).unwrap();
    let pred = upload(ctx, &[0.5f32, -0.1, 0.2, 2.0, 0.9]);
    let target = upload(ctx, &[1.0f32; 5]);
    let loss = poisoned(ctx, 1);
    let grad = poisoned(ctx, 5);
    let e = plan
        .run_buffers(&buffers(
            &pred,
            &target,
            None,
            None,
            Some(&loss),
            Some(&grad),
        ))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidOnGpu {
                count: 2,
                first: 1,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn binary_cross_entropy_with_logits() {
    for (i, &m) in SIZES.iter().enumerate() {
        random(Pointwise::BceWithLogits, m, 40 + i as u64).check("random");
    }
    // pos_weight per class over [N, C], with a weight.
    let (n, c) = (301, 13);
    let mut rng = Rng::new(50);
    let mut case = Case::new(
        Pointwise::BceWithLogits,
        rng.vec(n * c, -6.0, 6.0),
        rng.vec(n * c, 0.0, 1.0),
    );
    case.pos_weight = Some(rng.vec(c, 0.2, 5.0));
    case.weight = Some(rng.vec(c, 0.5, 1.5));
    case.check("pos_weight");
}

/// Logits of +-100 and +-1e4: no NaN, no inf.
#[test]
fn binary_cross_entropy_with_huge_logits() {
    let pred = vec![100.0, -100.0, 1e4, -1e4, 0.0, 30.0, -30.0, 1e4, -1e4];
    let target = vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.2, 0.9, 1.0, 0.0];
    let mut case = Case::new(Pointwise::BceWithLogits, pred.clone(), target.clone());
    case.check("huge");
    let (loss, grad) = case.record(Reduction::None);
    assert!(
        loss.iter().chain(&grad).all(|v| v.is_finite()),
        "{loss:?} {grad:?}"
    );
    case.pos_weight = Some(vec![3.0]);
    case.check("huge with pos_weight");
}

#[test]
fn kl_divergence() {
    for (i, &m) in SIZES.iter().enumerate() {
        for log_target in [false, true] {
            let mut case = random(Pointwise::KlDiv { log_target }, m, 60 + i as u64);
            case.batch = Some(1);
            case.check("random");
        }
    }
    // batchmean divides by the first dimension of [N, C].
    for log_target in [false, true] {
        let mut case = random(Pointwise::KlDiv { log_target }, 37 * 11, 70);
        case.batch = Some(37);
        case.check("batchmean");
    }
    // Targets of exactly 0 contribute 0 (xlogy).
    let mut case = Case::new(
        Pointwise::KlDiv { log_target: false },
        vec![-0.5, -1.0, -2.0, -0.1],
        vec![0.0, 0.5, 0.0, 0.5],
    );
    case.batch = Some(2);
    case.check("zero targets");
    let (loss, _) = case.record(Reduction::None);
    assert_eq!((loss[0], loss[2]), (0.0, 0.0));
}

#[test]
fn convenience_level() {
    let ctx = ctx();
    let mut rng = Rng::new(80);
    let pred = rng.vec(1001, -3.0, 3.0);
    let target = rng.vec(1001, 0.0, 1.0);
    let pos_weight = [2.5f32];
    let inputs = PwInputs {
        pred: &pred,
        target: &target,
        weight: None,
        pos_weight: Some(&pos_weight),
    };
    let out = pointwise_loss(
        ctx,
        Pointwise::BceWithLogits,
        &inputs,
        Reduction::Mean,
        None,
        Outputs::BOTH,
    )
    .unwrap();
    let reference = cpu::pointwise::pointwise(
        Pointwise::BceWithLogits,
        &pred,
        &target,
        None,
        Some(&pos_weight),
        Reduction::Mean,
        None,
    )
    .unwrap();
    assert_scalar(
        "value",
        out.value.unwrap(),
        reference.value.unwrap(),
        Tol::new(1e-5, 0.0),
    );
    assert_close("grad", out.grad.as_ref().unwrap(), &reference.grad, ELEM);
}

// The classic cross-entropy on probabilities: LOSS 7 of the streaming kernel, whose rows sum
// their elements' losses. A row loss sums C non-negative terms (-t log(p + eps) with p + eps
// <= 1 here), each within a few ulp plus log's 2^-21 absolute near 1: 1e-5 relative plus 1e-5
// absolute; reduced values 2e-5 (a fixed-order tree adds (log2 N + 32) eps relative). Gradients
// -t / (p + eps) are one division: 2e-5 relative plus 1e-6 of the largest magnitude.

const ROW: Tol = Tol::new(1e-5, 1e-5);
const VALUE: Tol = Tol::new(2e-5, 1e-5);

fn grad_tol(reference: &[f64]) -> Tol {
    Tol::new(2e-5, 1e-6 * largest(reference))
}

/// One classic cross-entropy through the recording API into poisoned buffers: (loss, grad).
fn record_probs(
    ctx: &Context,
    probs: &[f32],
    targets: &[f32],
    classes: usize,
    eps: f32,
    reduction: Reduction,
) -> (Vec<f32>, Vec<f32>) {
    let rows = probs.len() / classes;
    let desc = ClassicCrossEntropyDesc::new(rows, classes)
        .eps(eps)
        .reduction(reduction);
    let plan = Plan::new(ctx, &desc).unwrap();
    let (p, t) = (upload(ctx, probs), upload(ctx, targets));
    let loss_len = if reduction == Reduction::None {
        rows
    } else {
        1
    };
    let loss = poisoned(ctx, loss_len);
    let grad = poisoned(ctx, probs.len());
    submit(ctx, |e| {
        plan.record_buffers(e, &buffers(&p, &t, None, None, Some(&loss), Some(&grad)))
            .unwrap()
    });
    (read(ctx, &loss, loss_len), read(ctx, &grad, probs.len()))
}

/// Every reduction of random distributions of `shapes` against the twin.
fn classic_against_reference(ctx: &Context, shapes: &[(usize, usize)], seed: u64) {
    for (i, &(n, c)) in shapes.iter().enumerate() {
        let mut rng = Rng::new(seed + i as u64);
        let probs = rng.distributions(n, c);
        let targets = rng.distributions(n, c);
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let reference = cpu_ce_probs(&probs, &targets, c, 1e-7, reduction).unwrap();
            let (loss, grad) = record_probs(ctx, &probs, &targets, c, 1e-7, reduction);
            let what = format!("probs n={n} c={c} {reduction}");
            let tols = (ROW, VALUE, grad_tol(&reference.grad));
            assert_loss_and_grad(&what, (&loss, &grad), &reference, tols);
        }
    }
}

/// Rows in one segment or several, vec4 rows (C a multiple of 4) and scalar ones, rows that
/// share a workgroup and rows cut into chunks (C = 40,000 and 300,001: past lavapipe's loop
/// cap per invocation), more than 65,535 rows.
#[test]
fn probabilities_against_reference() {
    classic_against_reference(
        ctx(),
        &[
            (1, 1),
            (7, 5),
            (1000, 10),
            (333, 1001),
            (3, 40_000),
            (4097, 3),
            (70_001, 4),
            (2, 300_001),
        ],
        1600,
    );
}

/// Rows of more chunks than one reduction level sums (4,097 chunks of 1,024 elements under a
/// tuning of one vec4 an invocation): the per-row reduction takes two levels, its groups kept
/// apart.
#[test]
fn rows_of_many_chunks() {
    let tuning = Tuning {
        lanes: 8,
        stream_vecs: 1,
        register_vecs: 32,
        wide_vecs: 32,
        chunk_wide_rows: true,
        sweep_long_rows: false,
    };
    let ctx = Context::with_options(ContextOptions::default().tuning(tuning)).unwrap();
    classic_against_reference(&ctx, &[(2, 4_194_311), (5, 3000)], 1650);
}

/// numpy's `-np.mean(y_true * np.log(y_pred + eps))` averages over all N * C elements: it is
/// our sum divided by N * C (our mean divides by N, like PyTorch and Keras).
#[test]
fn numpy_one_liner_is_sum_over_n_times_c() {
    let (n, c, eps) = (64, 37, 1e-7f32);
    let mut rng = Rng::new(1700);
    let probs = rng.distributions(n, c);
    let targets = rng.distributions(n, c);
    // The one-liner, elementwise in f64 as numpy does on float64 arrays.
    let numpy: f64 = -probs
        .iter()
        .zip(&targets)
        .map(|(&p, &t)| t as f64 * (p as f64 + eps as f64).ln())
        .sum::<f64>()
        / (n * c) as f64;
    let (sum, _) = record_probs(ctx(), &probs, &targets, c, eps, Reduction::Sum);
    assert_scalar(
        "sum / (N C) vs numpy",
        sum[0] / (n * c) as f32,
        numpy,
        VALUE,
    );
    let (mean, _) = record_probs(ctx(), &probs, &targets, c, eps, Reduction::Mean);
    assert_scalar("mean = numpy * C", mean[0], numpy * c as f64, VALUE);
}
