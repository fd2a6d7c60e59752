//! Cross-entropy from logits `[N, C]` and class targets `[N]`, with PyTorch's options
//! (`torch.nn.functional.cross_entropy`): class weights, `ignore_index`, label smoothing, and
//! the z-loss and logit softcap of language-model training; every reduction; the per-row
//! log-sum-exp as a second output; probability targets ([`cross_entropy_probs`]).

use std::sync::Arc;

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Int, Tensor};
use wgpu_loss::Reduction;

use crate::backend::{CeOp, LossBackend, loss_dtype};
use crate::device::{shared_of, wgpu_device};
use crate::{Error, Result};

/// Cross-entropy's options: by default PyTorch's (mean over the rows that are not ignored,
/// `ignore_index = -100`, no weights, no smoothing), without z-loss or softcap.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropy {
    op: CeOp,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl CrossEntropy {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        CrossEntropy {
            op: CeOp {
                reduction: Reduction::Mean,
                ignore_index: -100,
                label_smoothing: 0.0,
                z_loss: 0.0,
                softcap: None,
                weight: None,
                soft: false,
            },
        }
    }

    /// The reduction: the mean over the rows that count (weighted by their class's weight),
    /// their sum, or one loss a row (`[N]`).
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.op.reduction = reduction;
        self
    }

    /// Rows whose target is this class count for nothing (their loss and gradient are 0).
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.op.ignore_index = index;
        self
    }

    /// Label smoothing in [0, 1]: the target distribution is `(1 - s)` on the class and `s / C`
    /// spread over every class.
    pub fn label_smoothing(mut self, smoothing: f32) -> Self {
        self.op.label_smoothing = smoothing;
        self
    }

    /// The z-loss coefficient: adds `z * lse^2` to each row's loss (PaLM's auxiliary loss).
    pub fn z_loss(mut self, z: f32) -> Self {
        self.op.z_loss = z;
        self
    }

    /// Softcap `cap > 0`: the logits are read as `cap * tanh(x / cap)` (Gemma 2).
    pub fn softcap(mut self, cap: f32) -> Self {
        self.op.softcap = Some(cap);
        self
    }

    /// Class weights, `C` of them (PyTorch's `weight`).
    pub fn weight(mut self, weight: Vec<f32>) -> Self {
        self.op.weight = Some(Arc::new(weight));
        self
    }

    /// The options as the operations carry them.
    pub(crate) fn op(&self) -> &CeOp {
        &self.op
    }
}

/// The checks before anything is recorded: the device, the shapes, the dtypes and the plan
/// (made and cached here, so that an option out of range is an error, not a panic later).
/// `targets` checks the targets against `[rows, classes]` logits.
fn check(
    logits: &Tensor<2>,
    targets_device: &Device,
    targets: impl FnOnce(usize, usize) -> Result<()>,
    op: &CeOp,
) -> Result<()> {
    let shared = shared_of(&logits.device()).ok_or(Error::Device("logits"))?;
    if wgpu_device(targets_device) != wgpu_device(&logits.device()) {
        return Err(Error::Device("targets (not on the logits' device)"));
    }
    let [rows, classes] = logits.dims();
    if rows == 0 || classes == 0 {
        return Err(Error::Shape {
            what: "logits",
            detail: format!("[{rows}, {classes}]: empty"),
        });
    }
    targets(rows, classes)?;
    let dtype = loss_dtype(logits.dtype()).ok_or(Error::DType {
        what: "logits",
        dtype: logits.dtype(),
    })?;
    if let Some(w) = op.weight.as_ref().filter(|w| w.len() != classes) {
        return Err(Error::Shape {
            what: "weight",
            detail: format!("{} values for {classes} classes", w.len()),
        });
    }
    shared.plan(&op.desc(rows, classes, dtype, logits.is_require_grad()))?;
    Ok(())
}

/// The checks of class targets `[rows]` (i32).
pub(crate) fn check_classes(targets: &Tensor<1, Int>, rows: usize) -> Result<()> {
    if targets.dims() != [rows] {
        return Err(Error::Shape {
            what: "targets",
            detail: format!("{:?}, the logits have {rows} rows", targets.dims()),
        });
    }
    if targets.dtype() != DType::I32 {
        return Err(Error::DType {
            what: "targets (i32 class indices)",
            dtype: targets.dtype(),
        });
    }
    Ok(())
}

/// Cross-entropy of `logits` `[N, C]` (f32, f16 or bf16) and class `targets` `[N]` (i32): `[1]`
/// when reduced, `[N]` for [`Reduction::None`]; f32. On an autodiff device the logits get
/// their gradient (in their dtype), computed in the forward pass and scaled by the upstream
/// gradient in the backward pass; the targets take none.
///
/// # Errors
/// The logits not on a device of [`crate::init`] or [`crate::adopt`], or the targets on
/// another; shapes that do not fit; a dtype the kernels do not read; options wgpu-loss refuses
/// (smoothing outside [0, 1], a softcap <= 0, a class weight count other than `C`).
pub fn cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    options: &CrossEntropy,
) -> Result<Tensor<1>> {
    Ok(cross_entropy_with_lse(logits, targets, options)?.0)
}

/// [`cross_entropy`] and the per-row log-sum-exp of the logits (`[N]`, f32, of the softcapped
/// logits where there is a softcap), which the same pass computes: what a z-loss, a
/// perplexity or a vocabulary-sharded loss reads. The log-sum-exp takes no gradient.
///
/// # Errors
/// As [`cross_entropy`].
pub fn cross_entropy_with_lse(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    options: &CrossEntropy,
) -> Result<(Tensor<1>, Tensor<1>)> {
    check(
        &logits,
        &targets.device(),
        |rows, _| check_classes(&targets, rows),
        &options.op,
    )?;
    let (loss, lse) = <Dispatch as LossBackend>::wgpu_loss_cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
        options.op.clone(),
    );
    Ok((Tensor::from_dispatch(loss), Tensor::from_dispatch(lse)))
}

/// Cross-entropy of `logits` `[N, C]` and probability targets `probs` `[N, C]` (a distribution
/// a row, in the logits' dtype: f32, f16 or bf16), PyTorch's `cross_entropy(x, p)`: `[1]`
/// reduced, `[N]` for [`Reduction::None`]; f32; and the per-row log-sum-exp `[N]`. Class
/// weights and label smoothing apply as in PyTorch; `ignore_index` does not. The logits get
/// their gradient as in [`cross_entropy`]; the probabilities take none.
///
/// # Errors
/// As [`cross_entropy`]; `probs` of another shape or dtype than the logits.
pub fn cross_entropy_probs(
    logits: Tensor<2>,
    probs: Tensor<2>,
    options: &CrossEntropy,
) -> Result<(Tensor<1>, Tensor<1>)> {
    let op = CeOp {
        soft: true,
        ..options.op.clone()
    };
    let probs_fit = |rows, classes| {
        if probs.dims() != [rows, classes] {
            return Err(Error::Shape {
                what: "probs",
                detail: format!("{:?} for logits [{rows}, {classes}]", probs.dims()),
            });
        }
        if probs.dtype() != logits.dtype() {
            return Err(Error::DType {
                what: "probs (not the logits' dtype)",
                dtype: probs.dtype(),
            });
        }
        Ok(())
    };
    check(&logits, &probs.device(), probs_fit, &op)?;
    let (loss, lse) = <Dispatch as LossBackend>::wgpu_loss_cross_entropy_soft(
        logits.into_dispatch(),
        probs.into_dispatch(),
        op,
    );
    Ok((Tensor::from_dispatch(loss), Tensor::from_dispatch(lse)))
}
