//! wgpu-loss's losses as operations of [Burn](https://burn.dev) 0.22: functions of Burn tensors
//! on Burn's own wgpu device (its default backend, fusion on), differentiable on an autodiff
//! device, computed by wgpu-loss's kernels recorded onto the queue Burn submits to.
//!
//! ```no_run
//! use burn::tensor::{Int, Tensor};
//! use wgpu_loss_burn::{CrossEntropy, cross_entropy};
//!
//! # fn main() -> Result<(), wgpu_loss_burn::Error> {
//! // A Burn wgpu device whose device and queue wgpu-loss shares.
//! let device = wgpu_loss_burn::init()?.autodiff();
//! let logits = Tensor::<2>::random([64, 1000], burn::tensor::Distribution::Default, &device)
//!     .require_grad();
//! let targets = Tensor::<1, Int>::from_ints([7; 64], &device);
//! let loss = cross_entropy(logits.clone(), targets, &CrossEntropy::new())?;
//! let grads = loss.backward();
//! let dlogits = logits.grad(&grads).expect("logits take part in the loss");
//! # let _ = dlogits;
//! # Ok(())
//! # }
//! ```
//!
//! How it works: each loss is a [backend extension](burn::backend::backend_extension) of Burn's
//! cubecl backend. Under fusion it is a lazy custom operation, run in its stream's order; when it
//! runs, the tensors' wgpu buffers (with their offsets: Burn's pools put many tensors in one
//! buffer) are bound to a cached [`wgpu_loss::Plan`] and its passes are submitted on the shared
//! queue, after Burn's pending work and before Burn's next, with no wait on the host. The forward
//! pass computes the gradient too (one pass over the logits, as wgpu-loss does everywhere); the
//! backward pass only scales that stored gradient by the upstream one. See `README.md` for what
//! that costs in memory.
//!
//! - [`device`]: a Burn device made for, or adopted from, a wgpu device that wgpu-loss shares.
//! - [`cross_entropy`](mod@cross_entropy): cross-entropy from logits with class targets.
//! - [`image`](mod@image): SSIM, D-SSIM, PSNR, the photometric loss, L1 and MSE of images.
//! - [`linear_cross_entropy`](mod@linear_cross_entropy): fused linear + cross-entropy, without
//!   the `[N, V]` logits.
//! - [`pointwise`](mod@pointwise): MSE, L1, Huber, smooth L1, BCE, BCE with logits, KL divergence.
//! - [`shards`]: cross-entropy over a vocabulary split by classes over several devices.
//! - `backend` (crate-private): the backend extension and its autodiff rule.
#![warn(missing_docs)]

mod backend;
pub mod cross_entropy;
pub mod device;
mod error;
pub mod image;
pub mod linear_cross_entropy;
pub mod pointwise;
pub mod shards;

pub use cross_entropy::{CrossEntropy, cross_entropy, cross_entropy_probs, cross_entropy_with_lse};
pub use device::{adopt, context, init};
pub use error::{Error, Result};
pub use image::{Image, image_loss};
pub use linear_cross_entropy::{
    LinearCrossEntropy, linear_cross_entropy, linear_cross_entropy_with_lse,
};
pub use pointwise::{pointwise, pointwise_unreduced};
pub use shards::cross_entropy_sharded;
pub use wgpu_loss::Reduction;
