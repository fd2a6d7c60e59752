//! Fused linear + cross-entropy: the loss of a language model's last layer (the logits
//! `hidden @ weight^T` plus a bias, then cross-entropy) without the `[N, V]` logits ever
//! existing, neither Burn's nor ours: wgpu-loss's kernel walks the vocabulary in tiles and keeps
//! each row's running log-sum-exp. Gradients for the hidden states, the weight and the bias.

use burn::backend::Dispatch;
use burn::tensor::{DType, FloatDType, Int, Tensor};
use wgpu_loss::Reduction;

use crate::backend::{LceOp, LossBackend, loss_dtype};
use crate::device::{shared_of, wgpu_device};
use crate::{Error, Result};

/// Fused linear + cross-entropy's options: by default PyTorch's cross-entropy (the mean over
/// the rows that are not ignored, `ignore_index = -100`), no smoothing, z-loss or softcap.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearCrossEntropy {
    op: LceOp,
}

impl Default for LinearCrossEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl LinearCrossEntropy {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        LinearCrossEntropy {
            op: LceOp {
                reduction: Reduction::Mean,
                ignore_index: -100,
                label_smoothing: 0.0,
                z_loss: 0.0,
                softcap: None,
            },
        }
    }

    /// The reduction: [`Reduction::Mean`] or [`Reduction::Sum`] (the layer's gradient of an
    /// unreduced loss depends on each row's upstream gradient, which the forward pass does not
    /// have: [`Reduction::None`] is refused).
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.op.reduction = reduction;
        self
    }

    /// Rows whose target is this class count for nothing.
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.op.ignore_index = index;
        self
    }

    /// Label smoothing in [0, 1].
    pub fn label_smoothing(mut self, smoothing: f32) -> Self {
        self.op.label_smoothing = smoothing;
        self
    }

    /// The z-loss coefficient: adds `z * lse^2` to each row's loss.
    pub fn z_loss(mut self, z: f32) -> Self {
        self.op.z_loss = z;
        self
    }

    /// Softcap `cap > 0`: the logits are read as `cap * tanh(x / cap)`.
    pub fn softcap(mut self, cap: f32) -> Self {
        self.op.softcap = Some(cap);
        self
    }
}

fn shape(what: &'static str, detail: String) -> Error {
    Error::Shape { what, detail }
}

/// The checks before anything is recorded; the bias as a tensor (zeros when there is none).
fn check(
    hidden: &Tensor<2>,
    weight: &Tensor<2>,
    bias: Option<Tensor<1>>,
    targets: &Tensor<1, Int>,
    options: &LinearCrossEntropy,
) -> Result<Tensor<1>> {
    let device = hidden.device();
    let shared = shared_of(&device).ok_or(Error::Device("hidden"))?;
    let on = wgpu_device(&device);
    if wgpu_device(&weight.device()) != on || wgpu_device(&targets.device()) != on {
        return Err(Error::Device(
            "weight or targets (not on the hidden states' device)",
        ));
    }
    let ([rows, dim], [vocab, wdim]) = (hidden.dims(), weight.dims());
    if rows == 0 || dim == 0 || vocab == 0 {
        return Err(shape(
            "hidden",
            format!("[{rows}, {dim}] with a vocabulary of {vocab}"),
        ));
    }
    if wdim != dim {
        return Err(shape(
            "weight",
            format!("[{vocab}, {wdim}], the hidden states are [{rows}, {dim}]"),
        ));
    }
    if targets.dims() != [rows] {
        return Err(shape(
            "targets",
            format!("{:?}, the hidden states have {rows} rows", targets.dims()),
        ));
    }
    if let Some(b) = bias.as_ref().filter(|b| b.dims() != [vocab]) {
        return Err(shape(
            "bias",
            format!("{:?}, the vocabulary is {vocab}", b.dims()),
        ));
    }
    if bias
        .as_ref()
        .is_some_and(|b| wgpu_device(&b.device()) != on)
    {
        return Err(Error::Device("bias (not on the hidden states' device)"));
    }
    let dtype = loss_dtype(hidden.dtype()).ok_or(Error::DType {
        what: "hidden",
        dtype: hidden.dtype(),
    })?;
    if weight.dtype() != hidden.dtype() {
        return Err(Error::DType {
            what: "weight (not the hidden states' dtype)",
            dtype: weight.dtype(),
        });
    }
    if let Some(b) = bias.as_ref().filter(|b| loss_dtype(b.dtype()).is_none()) {
        return Err(Error::DType {
            what: "bias",
            dtype: b.dtype(),
        });
    }
    if targets.dtype() != DType::I32 {
        return Err(Error::DType {
            what: "targets (i32 class indices)",
            dtype: targets.dtype(),
        });
    }
    if options.op.reduction == Reduction::None {
        return Err(Error::Loss(wgpu_loss::Error::option(
            "reduction",
            "None: the layer's gradient of per-row losses needs their upstream gradient",
        )));
    }
    let grad = hidden.is_require_grad() || weight.is_require_grad();
    shared.plan(&options.op.desc(rows, dim, vocab, dtype, grad))?;
    // The kernels read the bias in f32: a 16-bit one is cast (a differentiable Burn operation
    // on `[V]` values, its gradient cast back).
    Ok(match bias {
        Some(b) if b.dtype() != DType::F32 => b.cast(FloatDType::F32),
        Some(b) => b,
        None => Tensor::zeros([vocab], &device),
    })
}

/// Cross-entropy of the logits `hidden @ weight^T + bias` and class `targets`, without the
/// logits: `hidden` `[N, D]`, `weight` `[V, D]` (PyTorch's layout: a row a class), `bias`
/// `[V]` or none; `targets` `[N]` (i32). The hidden states and the weight share one dtype,
/// f32, f16 or bf16 (read as such: no f32 copy is made); the bias is any of the three. The
/// loss is `[1]`, f32. On an autodiff device, whichever of the hidden states, the weight and
/// the bias require a gradient get it, computed in the forward pass in f32 and, in the backward
/// pass, scaled by the upstream gradient and cast to its tensor's dtype.
///
/// # Errors
/// Tensors not on one device of [`crate::init`] or [`crate::adopt`]; shapes that do not fit;
/// a dtype the kernels do not read, or a weight of another dtype than the hidden states (the
/// targets i32); [`Reduction::None`]; options wgpu-loss
/// refuses (a dimension `D` past its largest, smoothing outside [0, 1], a softcap <= 0).
pub fn linear_cross_entropy(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    targets: Tensor<1, Int>,
    options: &LinearCrossEntropy,
) -> Result<Tensor<1>> {
    Ok(linear_cross_entropy_with_lse(hidden, weight, bias, targets, options)?.0)
}

/// [`linear_cross_entropy`] and each row's log-sum-exp of the logits (`[N]`, f32; it takes no
/// gradient).
///
/// # Errors
/// As [`linear_cross_entropy`].
pub fn linear_cross_entropy_with_lse(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    targets: Tensor<1, Int>,
    options: &LinearCrossEntropy,
) -> Result<(Tensor<1>, Tensor<1>)> {
    let bias = check(&hidden, &weight, bias, &targets, options)?;
    let (loss, lse) = <Dispatch as LossBackend>::wgpu_loss_linear_cross_entropy(
        hidden.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        targets.into_dispatch(),
        options.op.clone(),
    );
    Ok((Tensor::from_dispatch(loss), Tensor::from_dispatch(lse)))
}
