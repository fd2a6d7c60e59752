//! CPU twin of `shaders/nll.wgsl`.

use super::{Reference, check_rows, reduce};
use crate::error::Result;
use crate::families::nll::NllDesc;
use crate::plan::Inputs;
use crate::plan::sealed::Twin;
use crate::reduction::Reduction;

/// Negative log-likelihood of `log_probs` `[N, C]` and class `targets` `[N]`: per row
/// `-w_y x[n, y]`, 0 for rows whose target is `ignore_index`; `mean` divides by the sum of the
/// target weights over the other rows (the gradient of ignored rows stays 0 when that sum is 0).
/// A target out of range gives NaN.
pub fn nll(
    log_probs: &[f32],
    targets: &[i64],
    classes: usize,
    weight: Option<&[f32]>,
    ignore_index: i64,
    reduction: Reduction,
) -> Result<Reference> {
    check_rows(
        "log_probs (N * C)",
        log_probs.len(),
        Some(targets.len()),
        classes,
        weight,
    )?;
    let c = classes;
    let mut losses = Vec::with_capacity(targets.len());
    let mut grad = vec![0.0; log_probs.len()];
    let den = super::cross_entropy::mean_denominator(targets, c, weight, ignore_index)?;
    let scale = if reduction == Reduction::Mean {
        1.0 / den
    } else {
        1.0
    };
    for (n, &y) in targets.iter().enumerate() {
        if y == ignore_index {
            losses.push(0.0);
        } else if let Some(y) = usize::try_from(y).ok().filter(|&y| y < c) {
            let w = weight.map_or(1.0, |w| w[y] as f64);
            losses.push(-w * log_probs[n * c + y] as f64);
            grad[n * c + y] = -w * scale;
        } else {
            losses.push(f64::NAN);
        }
    }
    Ok(reduce(reduction, losses, grad, den))
}

impl Twin for NllDesc {
    fn reference(&self, inputs: &Inputs<'_>) -> Result<Reference> {
        nll(
            &inputs.input.to_f32(),
            inputs.class_indices()?,
            self.classes,
            inputs.weight,
            self.ignore_index,
            self.reduction,
        )
    }
}
