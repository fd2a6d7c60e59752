//! CPU twin of `shaders/cross_entropy.wgsl` and `shaders/class_targets.wgsl`.

use super::{Reference, check_len, check_rows, reduce};
use crate::error::{Error, Result};
use crate::families::cross_entropy::{CrossEntropyDesc, ShardStep, Targets};
use crate::plan::Inputs;
use crate::plan::check_count;
use crate::plan::sealed::Twin;
use crate::reduction::Reduction;

/// `cap * tanh(x / cap)`, or x.
fn capped(x: impl Into<f64>, softcap: Option<f32>) -> f64 {
    let x = x.into();
    match softcap {
        Some(cap) => cap as f64 * (x / cap as f64).tanh(),
        None => x,
    }
}

/// d x' / d x.
fn cap_slope(xc: f64, softcap: Option<f32>) -> f64 {
    match softcap {
        Some(cap) => {
            let u = xc / cap as f64;
            1.0 - u * u
        }
        None => 1.0,
    }
}

/// log-sum-exp of a row, and its softmax.
fn softmax(row: &[f64]) -> (Lse, Vec<f64>) {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = row.iter().map(|&x| (x - m).exp()).sum();
    let lse = Lse { m, log_s: s.ln() };
    (
        lse,
        row.iter().map(|&x| ((x - m) - lse.log_s).exp()).collect(),
    )
}

/// A row's log-sum-exp as its max and the log of its sum of exponentials relative to it: `lse
/// - x` is taken as `(m - x) + log s`, never as the difference of two large numbers (which
/// would lose `log s` entirely for logits near f32's largest, even in f64).
#[derive(Clone, Copy)]
struct Lse {
    m: f64,
    log_s: f64,
}

impl Lse {
    fn value(self) -> f64 {
        self.m + self.log_s
    }

    /// `lse - x`.
    fn minus(self, x: f64) -> f64 {
        (self.m - x) + self.log_s
    }
}

/// The denominator of a weighted mean over class targets: the sum of `weight[y_n]` (1 without
/// weights) over rows with `y_n != ignore_index` and `0 <= y_n < C`.
pub fn mean_denominator(
    targets: &[i64],
    classes: usize,
    weight: Option<&[f32]>,
    ignore_index: i64,
) -> Result<f64> {
    check_len("weight (C)", classes, weight.map(<[f32]>::len))?;
    Ok(targets
        .iter()
        .filter_map(|&y| class(y, classes).filter(|_| y != ignore_index))
        .map(|y| weight.map_or(1.0, |w| w[y] as f64))
        .sum())
}

/// The class a target names, when it lies in [0, C).
fn class(y: i64, classes: usize) -> Option<usize> {
    usize::try_from(y).ok().filter(|&y| y < classes)
}

/// Cross-entropy from logits `[N, C]` with class targets, PyTorch's semantics: per row
/// `(1 - ls) w_y (lse - x_y) + ls / C * sum_c w_c (lse - x_c) + z w_y lse^2` on softcapped
/// logits; ignored rows weigh 0; `mean` divides by the sum of the target weights (the gradient
/// of ignored rows stays 0 even when that sum is 0). A target out of range gives NaN.
pub fn cross_entropy(o: &CrossEntropyDesc, inputs: &Inputs<'_>) -> Result<Reference> {
    let (logits, targets) = (inputs.input.to_f32(), inputs.class_indices()?);
    check_rows(
        "logits (N * C)",
        logits.len(),
        Some(targets.len()),
        o.classes,
        inputs.weight,
    )?;
    let logits: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    class_targets(o, &logits, targets, inputs.weight)
}

/// [`cross_entropy`] on logits given in f64 (shape checked), as [`super::linear_cross_entropy`]
/// computes them.
pub(crate) fn class_targets(
    o: &CrossEntropyDesc,
    logits: &[f64],
    targets: &[i64],
    weight: Option<&[f32]>,
) -> Result<Reference> {
    let c = o.classes;
    let ls = o.label_smoothing as f64;
    let z = o.z_loss as f64;
    let cf = c as f64;
    let w = |k: usize| weight.map_or(1.0, |w| w[k] as f64);
    let wsum: f64 = (0..c).map(w).sum();
    let mut losses = Vec::with_capacity(targets.len());
    let mut grad = vec![0.0; logits.len()];
    let mut active = vec![false; targets.len()];
    for (n, &y) in targets.iter().enumerate() {
        let row: Vec<f64> = logits[n * c..(n + 1) * c]
            .iter()
            .map(|&x| capped(x, o.softcap))
            .collect();
        let g = &mut grad[n * c..(n + 1) * c];
        if y == o.ignore_index {
            losses.push(0.0);
            continue;
        }
        active[n] = true;
        let Some(y) = class(y, c) else {
            losses.push(f64::NAN);
            g.fill(f64::NAN);
            continue;
        };
        let (lse_parts, p) = softmax(&row);
        let lse = lse_parts.value();
        let wy = w(y);
        let mut loss = (1.0 - ls) * wy * lse_parts.minus(row[y]) + z * wy * lse * lse;
        if ls > 0.0 {
            let smooth: f64 = (0..c).map(|k| w(k) * lse_parts.minus(row[k])).sum();
            loss += ls / cf * smooth;
        }
        losses.push(loss);
        for k in 0..c {
            let onehot = if k == y { 1.0 } else { 0.0 };
            let gk = (1.0 - ls) * wy * (p[k] - onehot)
                + ls / cf * (wsum * p[k] - w(k))
                + 2.0 * z * wy * lse * p[k];
            g[k] = gk * cap_slope(row[k], o.softcap);
        }
    }
    let den = mean_denominator(targets, c, weight, o.ignore_index)?;
    if o.reduction == Reduction::Mean {
        for (n, &a) in active.iter().enumerate() {
            if a {
                for g in &mut grad[n * c..(n + 1) * c] {
                    *g /= den;
                }
            }
        }
    }
    Ok(reduce(o.reduction, losses, grad, den))
}

/// Cross-entropy from logits `[N, C]` with probability targets `[N, C]`: per row
/// `sum_c w_c q_c (lse - x_c) + z lse^2`, `q = (1 - ls) t + ls / C`; `mean` divides by N.
pub fn cross_entropy_soft(o: &CrossEntropyDesc, inputs: &Inputs<'_>) -> Result<Reference> {
    let (logits, target_probs, classes) =
        (inputs.input.to_f32(), inputs.values()?.to_f32(), o.classes);
    let weight = inputs.weight;
    let rows = check_rows(
        "logits (N * C)",
        logits.len(),
        Some(o.rows),
        classes,
        weight,
    )?;
    check_rows(
        "targets (N * C)",
        target_probs.len(),
        Some(rows),
        classes,
        None,
    )?;
    let c = classes;
    let ls = o.label_smoothing as f64;
    let z = o.z_loss as f64;
    let w = |k: usize| weight.map_or(1.0, |w| w[k] as f64);
    let mut losses = Vec::with_capacity(rows);
    let mut grad = vec![0.0; logits.len()];
    for n in 0..rows {
        let row: Vec<f64> = logits[n * c..(n + 1) * c]
            .iter()
            .map(|&x| capped(x, o.softcap))
            .collect();
        let q: Vec<f64> = target_probs[n * c..(n + 1) * c]
            .iter()
            .map(|&t| (1.0 - ls) * t as f64 + ls / c as f64)
            .collect();
        let (lse_parts, p) = softmax(&row);
        let lse = lse_parts.value();
        let a: f64 = (0..c).map(|k| w(k) * q[k]).sum();
        let nll: f64 = (0..c).map(|k| w(k) * q[k] * lse_parts.minus(row[k])).sum();
        losses.push(nll + z * lse * lse);
        for k in 0..c {
            grad[n * c + k] =
                ((a + 2.0 * z * lse) * p[k] - w(k) * q[k]) * cap_slope(row[k], o.softcap);
        }
    }
    if o.reduction == Reduction::Mean {
        for g in &mut grad {
            *g /= rows as f64;
        }
    }
    Ok(reduce(o.reduction, losses, grad, rows as f64))
}

/// Each row's log-sum-exp of the (softcapped) logits `[N, C]`, in f64.
///
/// # Errors
/// [`Error::Empty`] when `o.classes` is 0; [`Error::LengthMismatch`] when the logits are not
/// whole rows of `o.classes`.
pub fn row_lse(o: &CrossEntropyDesc, inputs: &Inputs<'_>) -> Result<Vec<f64>> {
    let logits = inputs.input.to_f32();
    check_rows("logits (N * C)", logits.len(), None, o.classes, None)?;
    let logits: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    Ok(lse_of(o, &logits))
}

/// [`row_lse`] of logits given in f64.
pub(crate) fn lse_of(o: &CrossEntropyDesc, logits: &[f64]) -> Vec<f64> {
    logits
        .chunks(o.classes.max(1))
        .map(|row| {
            let row: Vec<f64> = row.iter().map(|&x| capped(x, o.softcap)).collect();
            if row.iter().all(|&x| x == f64::NEG_INFINITY) {
                // torch.logsumexp: -inf, not exp(-inf - -inf) = NaN.
                return f64::NEG_INFINITY;
            }
            softmax(&row).0.value()
        })
        .collect()
}

/// Scales a reference's gradient by an upstream gradient: one value for every row, or one a
/// row (`classes` elements each).
///
/// # Errors
/// [`Error::Empty`] when `classes` is 0; [`Error::LengthMismatch`] when the gradient is not
/// whole rows, or `grad_output` has neither 1 value nor one a row. `r` is unchanged on error.
pub fn scale_by_upstream(r: &mut Reference, grad_output: &[f32], classes: usize) -> Result<()> {
    let rows = check_rows("gradient (N * C)", r.grad.len(), None, classes, None)?;
    if grad_output.len() != 1 && grad_output.len() != rows {
        return Err(Error::LengthMismatch {
            what: "grad_output (1 or N)",
            expected: rows,
            actual: grad_output.len(),
        });
    }
    for (n, row) in r.grad.chunks_mut(classes).enumerate() {
        let g = grad_output[if grad_output.len() == 1 { 0 } else { n }] as f64;
        row.iter_mut().for_each(|x| *x *= g);
    }
    Ok(())
}

/// A shard's logits (as f32), class targets, and first class.
type ShardInputs<'a> = (std::borrow::Cow<'a, [f32]>, &'a [i64], i64);

/// A shard's logits (checked against its classes and weight), class targets, and first class.
fn shard_inputs<'a>(o: &CrossEntropyDesc, inputs: &Inputs<'a>) -> Result<ShardInputs<'a>> {
    let (logits, targets) = (inputs.input.to_f32(), inputs.class_indices()?);
    let rows = Some(targets.len());
    check_rows(
        "logits (N * C)",
        logits.len(),
        rows,
        o.classes,
        inputs.weight,
    )?;
    Ok((logits, targets, o.shard.map_or(0, |sh| sh.offset as i64)))
}

/// A vocabulary shard's statistics step (`o.shard`: classes `[offset, offset + C)` of the
/// vocabulary), 8 values a row as the kernel writes them: the max of x', the log of the sum of
/// exp(x' - max), the target's x' where it is in the shard (else 0), where the target is (0
/// elsewhere, 1 here, 2 ignored, 3 outside the vocabulary), sum w (x' - max) and sum w (with
/// label smoothing, else 0), the target's weight where it is here (else 0), and 0.
pub fn shard_statistics(o: &CrossEntropyDesc, inputs: &Inputs<'_>) -> Result<Vec<f64>> {
    let (logits, targets, offset) = shard_inputs(o, inputs)?;
    let c = o.classes;
    let vocab = o.shard.map_or(c, |sh| sh.vocab) as i64;
    let w = |k: usize| inputs.weight.map_or(1.0, |w| w[k] as f64);
    let smooth = o.label_smoothing > 0.0;
    let mut out = Vec::with_capacity(8 * targets.len());
    for (n, &y) in targets.iter().enumerate() {
        let row: Vec<f64> = logits[n * c..(n + 1) * c]
            .iter()
            .map(|&x| capped(x, o.softcap))
            .collect();
        // The kernel's identity of max is f32's lowest, so a row of -inf keeps it.
        let m = row.iter().copied().fold(f32::MIN as f64, f64::max);
        let s: f64 = row.iter().map(|&x| (x - m).exp()).sum();
        let local = y - offset;
        let (at, here) = if y == o.ignore_index {
            (2.0, None)
        } else if y < 0 || y >= vocab {
            (3.0, None)
        } else if (0..c as i64).contains(&local) {
            (1.0, Some(local as usize))
        } else {
            (0.0, None)
        };
        let (b, ws) = if smooth {
            (
                (0..c).map(|k| w(k) * (row[k] - m)).sum(),
                (0..c).map(w).sum(),
            )
        } else {
            (0.0, 0.0)
        };
        out.extend([
            m,
            s.ln(),
            here.map_or(0.0, |k| row[k]),
            at,
            b,
            ws,
            here.map_or(0.0, w),
            0.0,
        ]);
    }
    Ok(out)
}

/// A vocabulary shard's gradient step from the combined statistics (`scale`: the row's
/// log-sum-exp and the scaled coefficients of p, of the one-hot target and of the class weight,
/// 4 a row): `g = cp exp(x' - lse) - ct onehot - cs w`, times the softcap's slope.
pub fn shard_gradient(
    o: &CrossEntropyDesc,
    inputs: &Inputs<'_>,
    scale: &[f32],
) -> Result<Vec<f64>> {
    let (logits, targets, offset) = shard_inputs(o, inputs)?;
    let c = o.classes;
    check_len("shard_scale (4 N)", 4 * targets.len(), Some(scale.len()))?;
    let w = |k: usize| inputs.weight.map_or(1.0, |w| w[k] as f64);
    let mut grad = Vec::with_capacity(logits.len());
    for (n, &y) in targets.iter().enumerate() {
        let [lse, cp, ct, cs] = [0, 1, 2, 3].map(|i| scale[4 * n + i] as f64);
        for k in 0..c {
            let x = capped(logits[n * c + k], o.softcap);
            let onehot = if y - offset == k as i64 { ct } else { 0.0 };
            let g = cp * (x - lse).exp() - onehot - cs * w(k);
            grad.push(g * cap_slope(x, o.softcap));
        }
    }
    Ok(grad)
}

impl Twin for CrossEntropyDesc {
    fn reference(&self, inputs: &Inputs<'_>) -> Result<Reference> {
        // A shard's statistics come back as its "per-element" values (8 a row); its gradient
        // step as the gradient.
        match self.shard.map(|sh| sh.step) {
            Some(ShardStep::Statistics) => {
                return Ok(Reference {
                    per_element: Some(shard_statistics(self, inputs)?),
                    ..Default::default()
                });
            }
            Some(ShardStep::Gradient) => {
                let scale = inputs
                    .shard_scale
                    .ok_or(Error::Binding("shard_scale", "needed by this plan"))?;
                return Ok(Reference {
                    grad: shard_gradient(self, inputs, scale)?,
                    ..Default::default()
                });
            }
            None => {}
        }
        let mut r = match self.targets {
            Targets::Classes => cross_entropy(self, inputs)?,
            Targets::Probabilities => cross_entropy_soft(self, inputs)?,
        };
        if let Some(go) = inputs.grad_output {
            let len = if self.grad_output {
                self.grad_output_len()
            } else {
                0
            };
            check_count("grad_output", len as u64, go.len())?;
            scale_by_upstream(&mut r, go, self.classes)?;
        }
        Ok(r)
    }
}
