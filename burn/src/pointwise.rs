//! The pointwise losses of PyTorch (MSE, L1, Huber, smooth L1, BCE, BCE with logits, KL
//! divergence: [`Pointwise`]) on tensors of any rank, reduced or one loss an element.

use burn::backend::Dispatch;
use burn::tensor::Tensor;
use wgpu_loss::Reduction;
pub use wgpu_loss::pointwise::Pointwise;

use crate::backend::{LossBackend, PwOp, loss_dtype};
use crate::device::shared_of;
use crate::{Error, Result};

fn check<const D: usize>(pred: &Tensor<D>, target: &Tensor<D>, op: &PwOp) -> Result<()> {
    let shared = shared_of(&pred.device()).ok_or(Error::Device("pred"))?;
    if crate::device::wgpu_device(&target.device()) != crate::device::wgpu_device(&pred.device()) {
        return Err(Error::Device("target (not on the prediction's device)"));
    }
    if pred.dims() != target.dims() {
        return Err(Error::Shape {
            what: "target",
            detail: format!("{:?}, the prediction is {:?}", target.dims(), pred.dims()),
        });
    }
    let n = pred.shape().num_elements();
    if n == 0 {
        return Err(Error::Shape {
            what: "pred",
            detail: "empty".into(),
        });
    }
    let dtype = loss_dtype(pred.dtype()).ok_or(Error::DType {
        what: "pred",
        dtype: pred.dtype(),
    })?;
    if target.dtype() != pred.dtype() {
        return Err(Error::DType {
            what: "target (not the prediction's dtype)",
            dtype: target.dtype(),
        });
    }
    shared.plan(&op.desc(n, dtype, pred.is_require_grad()))?;
    Ok(())
}

/// `loss` of `pred` and `target` (the same shape and dtype: f32, f16 or bf16), reduced over
/// every element by `reduction` ([`Reduction::Mean`] or [`Reduction::Sum`]): `[1]`, f32. On an
/// autodiff device the prediction gets its gradient (in its dtype), computed in the forward
/// pass; the target takes none.
///
/// # Errors
/// [`Reduction::None`] (see [`pointwise_unreduced`]); the prediction not on a device of
/// [`crate::init`] or [`crate::adopt`], or the target on another; shapes or dtypes that differ;
/// a dtype the kernels do not read; a parameter wgpu-loss refuses (a Huber `delta <= 0`).
pub fn pointwise<const D: usize>(
    loss: Pointwise,
    pred: Tensor<D>,
    target: Tensor<D>,
    reduction: Reduction,
) -> Result<Tensor<1>> {
    if reduction == Reduction::None {
        return Err(Error::Loss(wgpu_loss::Error::option(
            "reduction",
            "None: pointwise_unreduced gives one loss an element",
        )));
    }
    run(loss, pred, target, reduction)
}

/// `loss` of each element of `pred` and `target`: a tensor of their shape, f32. Gradients as
/// [`pointwise`].
///
/// # Errors
/// As [`pointwise`], but for the reduction.
pub fn pointwise_unreduced<const D: usize>(
    loss: Pointwise,
    pred: Tensor<D>,
    target: Tensor<D>,
) -> Result<Tensor<D>> {
    let dims = pred.dims();
    Ok(run(loss, pred, target, Reduction::None)?.reshape(dims))
}

fn run<const D: usize>(
    loss: Pointwise,
    pred: Tensor<D>,
    target: Tensor<D>,
    reduction: Reduction,
) -> Result<Tensor<1>> {
    let op = PwOp { loss, reduction };
    check(&pred, &target, &op)?;
    let n = pred.shape().num_elements();
    let out = <Dispatch as LossBackend>::wgpu_loss_pointwise(
        pred.reshape([n]).into_dispatch(),
        target.reshape([n]).into_dispatch(),
        op,
    );
    Ok(Tensor::from_dispatch(out))
}
