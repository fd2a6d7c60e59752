//! CPU twin of `shaders/pointwise.wgsl`: the pointwise catalogue and the classic cross-entropy.

use super::{Reference, check_rows, reduce};
use crate::error::{Error, Result};
use crate::families::custom::CustomLossDesc;
use crate::families::pointwise::{ClassicCrossEntropyDesc, Pointwise, PointwiseDesc};
use crate::plan::Inputs;
use crate::plan::sealed::Twin;
use crate::reduction::Reduction;

/// The loss and its derivative with respect to `x` at one element, before weights.
/// `pw` is BCE-with-logits' positive weight (1 without one).
pub fn element(loss: Pointwise, x: f64, y: f64, pw: f64) -> (f64, f64) {
    let d = x - y;
    match loss {
        Pointwise::Mse => (d * d, 2.0 * d),
        Pointwise::L1 => (d.abs(), sign(d)),
        Pointwise::Huber { delta } => {
            let delta = delta as f64;
            let a = d.abs();
            let l = if a < delta {
                0.5 * d * d
            } else {
                delta * (a - 0.5 * delta)
            };
            (l, d.clamp(-delta, delta))
        }
        Pointwise::SmoothL1 { beta } => {
            let beta = beta as f64;
            let a = d.abs();
            if beta == 0.0 {
                (a, sign(d))
            } else if a < beta {
                (0.5 * d * d / beta, d / beta)
            } else {
                (a - 0.5 * beta, sign(d))
            }
        }
        Pointwise::Bce => {
            let lx = x.ln().max(-100.0);
            let l1x = (1.0 - x).ln().max(-100.0);
            // PyTorch's EPSILON is a float: 1e-12 rounded to f32, as the kernel has it too.
            (
                -(y * lx + (1.0 - y) * l1x),
                d / (x * (1.0 - x)).max(1e-12f32 as f64),
            )
        }
        Pointwise::BceWithLogits => {
            let lw = 1.0 + (pw - 1.0) * y;
            let softplus = (-x).max(0.0) + (-x.abs()).exp().ln_1p();
            let sigmoid = 1.0 / (1.0 + (-x).exp());
            ((1.0 - y) * x + lw * softplus, lw * sigmoid - pw * y)
        }
        Pointwise::KlDiv { log_target: true } => (y.exp() * (y - x), -y.exp()),
        Pointwise::KlDiv { log_target: false } => {
            let ylogy = if y == 0.0 { 0.0 } else { y * y.ln() };
            (ylogy - y * x, -y)
        }
    }
}

fn sign(d: f64) -> f64 {
    if d > 0.0 {
        1.0
    } else if d < 0.0 {
        -1.0
    } else {
        d * 0.0
    }
}

/// `loss` over `pred` and `target` (same length), with broadcast `weight` and `pos_weight`
/// (element i takes `w[i % w.len()]`), reduced like the GPU plan: `mean` divides by the element
/// count, `batchmean` by `batch`.
pub fn pointwise(
    loss: Pointwise,
    pred: &[f32],
    target: &[f32],
    weight: Option<&[f32]>,
    pos_weight: Option<&[f32]>,
    reduction: Reduction,
    batch: Option<usize>,
) -> Result<Reference> {
    let n = pred.len();
    super::check_len("target (must match pred)", n, Some(target.len()))?;
    for (name, w) in [("weight", weight), ("pos_weight", pos_weight)] {
        if w.is_some_and(<[f32]>::is_empty) {
            return Err(Error::Empty(name));
        }
    }
    if reduction == Reduction::BatchMean && batch == Some(0) {
        return Err(Error::option("batch", "batchmean divides by a batch of 0"));
    }
    let den = match reduction {
        Reduction::BatchMean => batch.unwrap_or(n) as f64,
        _ => n as f64,
    };
    Ok(stream(pred, target, weight, reduction, den, |i, x, y| {
        let pw = pos_weight.map_or(1.0, |p| p[i % p.len()] as f64);
        element(loss, x, y, pw)
    }))
}

/// A custom pointwise loss (the CPU side of [`crate::CustomLossDesc`], whose WGSL no CPU code
/// evaluates): `loss(x, y)` and its derivative `grad(x, y)` given as closures of the same
/// formula, with a broadcast `weight`, reduced like the GPU plan (`mean` divides by the element
/// count).
pub fn custom(
    pred: &[f32],
    target: &[f32],
    weight: Option<&[f32]>,
    reduction: Reduction,
    loss: impl Fn(f64, f64) -> f64,
    grad: impl Fn(f64, f64) -> f64,
) -> Result<Reference> {
    let n = pred.len();
    super::check_len("target (must match pred)", n, Some(target.len()))?;
    if weight.is_some_and(<[f32]>::is_empty) {
        return Err(Error::Empty("weight"));
    }
    Ok(stream(
        pred,
        target,
        weight,
        reduction,
        n as f64,
        |_, x, y| (loss(x, y), grad(x, y)),
    ))
}

/// Each element's loss and derivative (`f(i, x, y)`), times the broadcast weight, reduced;
/// the gradient of a mean divided by `den`.
fn stream(
    pred: &[f32],
    target: &[f32],
    weight: Option<&[f32]>,
    reduction: Reduction,
    den: f64,
    f: impl Fn(usize, f64, f64) -> (f64, f64),
) -> Reference {
    let mut losses = Vec::with_capacity(pred.len());
    let mut grad = Vec::with_capacity(pred.len());
    for i in 0..pred.len() {
        let (mut l, mut g) = f(i, pred[i] as f64, target[i] as f64);
        if let Some(w) = weight {
            let w = w[i % w.len()] as f64;
            l *= w;
            g *= w;
        }
        losses.push(l);
        grad.push(g);
    }
    if matches!(reduction, Reduction::Mean | Reduction::BatchMean) {
        for g in &mut grad {
            *g /= den;
        }
    }
    reduce(reduction, losses, grad, den)
}

/// Mean squared error: `(x - y)^2`, gradient `2 (x - y)`; `mean` divides by the element count.
pub fn mse(pred: &[f32], target: &[f32], reduction: Reduction) -> Result<Reference> {
    pointwise(Pointwise::Mse, pred, target, None, None, reduction, None)
}

pub use crate::families::pointwise::check_probabilities;

/// The classic cross-entropy on probabilities: per row `-sum_c t_c log(p_c + eps)`, gradient
/// `-t / (p + eps)`; `mean` divides by the row count N.
pub fn classic_cross_entropy(
    o: &ClassicCrossEntropyDesc,
    inputs: &Inputs<'_>,
) -> Result<Reference> {
    let (probs, targets, classes) = (inputs.input.to_f32(), inputs.values()?.to_f32(), o.classes);
    let (eps, reduction) = (o.eps, o.reduction);
    let rows = check_rows("probs (N * C)", probs.len(), Some(o.rows), classes, None)?;
    check_rows("targets (N * C)", targets.len(), Some(rows), classes, None)?;
    let c = classes;
    let eps = eps as f64;
    let mut losses = Vec::with_capacity(rows);
    let mut grad = Vec::with_capacity(probs.len());
    for n in 0..rows {
        let mut loss = 0.0;
        for k in n * c..(n + 1) * c {
            let (p, t) = (probs[k] as f64, targets[k] as f64);
            loss -= t * (p + eps).ln();
            grad.push(-t / (p + eps));
        }
        losses.push(loss);
    }
    if reduction == Reduction::Mean {
        for g in &mut grad {
            *g /= rows as f64;
        }
    }
    Ok(reduce(reduction, losses, grad, rows as f64))
}

impl Twin for PointwiseDesc {
    fn reference(&self, inputs: &Inputs<'_>) -> Result<Reference> {
        pointwise(
            self.loss,
            &inputs.input.to_f32(),
            &inputs.values()?.to_f32(),
            inputs.weight,
            inputs.pos_weight,
            self.reduction,
            self.batch,
        )
    }
}

impl Twin for ClassicCrossEntropyDesc {
    fn reference(&self, inputs: &Inputs<'_>) -> Result<Reference> {
        classic_cross_entropy(self, inputs)
    }
}

impl Twin for CustomLossDesc {
    fn reference(&self, _inputs: &Inputs<'_>) -> Result<Reference> {
        Err(Error::option(
            "reference",
            "a custom loss's WGSL has no CPU twin: give the formula as closures to \
             custom",
        ))
    }
}
