//! CPU twin of `src/train.rs`: the same softmax regression by the same gradient descent, in f64.
//! Per batch, in the data's order: logits `z = x W^T + b`, the mean cross-entropy and the first
//! argmax of each row, the gradients `dz = (softmax(z) - onehot) / B`, `dW = dz^T x`,
//! `db = sum_rows dz`, then the optimizer's step ([`crate::cpu::optim::step`]) on W and b.

use crate::error::Result;
use crate::train::TrainDesc;

/// The parameters after training, and each epoch's figures (of its first batch, before its
/// first step, as the GPU reports them).
#[derive(Clone, Debug, PartialEq)]
pub struct Trained {
    /// `[C, D]`.
    pub weight: Vec<f64>,
    /// `[C]`.
    pub bias: Vec<f64>,
    /// Loss and accuracy of each epoch.
    pub epochs: Vec<(f64, f64)>,
}

/// Trains `epochs` epochs from zero parameters.
pub fn softmax_regression(
    desc: &TrainDesc,
    features: &[f32],
    labels: &[i64],
    epochs: usize,
) -> Result<Trained> {
    desc.check(features, labels)?;
    let (d, c) = (desc.features, desc.classes);
    let mut weight = vec![0.0f64; c * d];
    let mut bias = vec![0.0f64; c];
    let (mut state_w, mut state_b) = Default::default();
    let mut figures = Vec::with_capacity(epochs);
    for _ in 0..epochs {
        for (k, (first, rows)) in desc.batches().into_iter().enumerate() {
            let mut grad_w = vec![0.0f64; c * d];
            let mut grad_b = vec![0.0f64; c];
            let (mut loss, mut correct) = (0.0, 0usize);
            for r in first..first + rows {
                let x = &features[r * d..(r + 1) * d];
                let z: Vec<f64> = (0..c)
                    .map(|v| {
                        let w = &weight[v * d..(v + 1) * d];
                        bias[v] + w.iter().zip(x).map(|(&w, &x)| w * x as f64).sum::<f64>()
                    })
                    .collect();
                let argmax = (0..c).fold(0, |best, v| if z[v] > z[best] { v } else { best });
                let m = z[argmax];
                let sum: f64 = z.iter().map(|&zv| (zv - m).exp()).sum();
                let lse = m + sum.ln();
                let y = labels[r] as usize;
                loss += lse - z[y];
                correct += usize::from(argmax == y);
                for v in 0..c {
                    let dz = ((z[v] - lse).exp() - f64::from(u8::from(v == y))) / rows as f64;
                    grad_b[v] += dz;
                    for j in 0..d {
                        grad_w[v * d + j] += dz * x[j] as f64;
                    }
                }
            }
            if k == 0 {
                figures.push((loss / rows as f64, correct as f64 / rows as f64));
            }
            crate::cpu::optim::step(desc.optimizer, &mut weight, &grad_w, &mut state_w)?;
            crate::cpu::optim::step(desc.optimizer, &mut bias, &grad_b, &mut state_b)?;
        }
    }
    Ok(Trained {
        weight,
        bias,
        epochs: figures,
    })
}
