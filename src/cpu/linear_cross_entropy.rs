//! CPU twin of `shaders/linear_cross_entropy.wgsl`: the logits `h W^T + b` in f64, then the
//! cross-entropy twin on them, then the three gradients by the chain rule. It materialises the
//! `[N, V]` logits the kernels never do: the twin is for the sizes tests run.

use super::Reference;
use super::cross_entropy::{class_targets, lse_of};
use crate::error::{Error, Result};
use crate::families::linear_cross_entropy::LinearCrossEntropyDesc;
use crate::plan::Inputs;
use crate::plan::sealed::Twin;

/// The loss, the per-row log-sum-exp, and the gradients of the hidden states `[N, D]`, the
/// layer's weight `[V, D]` and its bias `[V]` (when it has one), in f64.
pub fn linear_cross_entropy(o: &LinearCrossEntropyDesc, inputs: &Inputs<'_>) -> Result<Reference> {
    let (n, d, v) = (o.rows, o.dim, o.vocab);
    let hidden = inputs.input.to_f32();
    let linear = inputs
        .linear
        .ok_or(Error::Binding("linear", "needed by this loss"))?
        .to_f32();
    let targets = inputs.class_indices()?;
    super::check_len("hidden (N * D)", n * d, Some(hidden.len()))?;
    super::check_len("linear (V * D)", v * d, Some(linear.len()))?;
    super::check_len("targets (N)", n, Some(targets.len()))?;
    super::check_len("weight (V)", v, inputs.weight.map(<[f32]>::len))?;
    super::check_len("bias (V)", v, inputs.bias.map(<[f32]>::len))?;
    let mut logits = vec![0.0f64; n * v];
    for (r, row) in logits.chunks_mut(v).enumerate() {
        let h = &hidden[r * d..(r + 1) * d];
        for (c, z) in row.iter_mut().enumerate() {
            let w = &linear[c * d..(c + 1) * d];
            let dot: f64 = h.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
            *z = dot + inputs.bias.map_or(0.0, |b| b[c] as f64);
        }
    }
    let ce = o.cross_entropy();
    let mut r = class_targets(&ce, &logits, targets, inputs.weight)?;
    let lse = lse_of(&ce, &logits);
    // The logits' gradient (r.grad, [N, V]) through the layer.
    let dz = std::mem::take(&mut r.grad);
    let mut grad_hidden = vec![0.0; n * d];
    let mut grad_linear = vec![0.0; v * d];
    for row in 0..n {
        for c in 0..v {
            let g = dz[row * v + c];
            if g == 0.0 {
                continue;
            }
            for k in 0..d {
                grad_hidden[row * d + k] += g * linear[c * d + k] as f64;
                grad_linear[c * d + k] += g * hidden[row * d + k] as f64;
            }
        }
    }
    let grad_bias = if inputs.bias.is_some() {
        (0..v)
            .map(|c| (0..n).map(|row| dz[row * v + c]).sum())
            .collect()
    } else {
        Vec::new()
    };
    Ok(Reference {
        grad: grad_hidden,
        grad_linear,
        grad_bias,
        lse: Some(lse),
        ..r
    })
}

impl Twin for LinearCrossEntropyDesc {
    fn reference(&self, inputs: &Inputs<'_>) -> Result<Reference> {
        linear_cross_entropy(self, inputs)
    }
}
