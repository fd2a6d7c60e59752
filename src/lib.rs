//! # wgpu-loss
//!
//! Neural-network loss functions and their gradients as WGSL compute shaders on wgpu: mean
//! squared error, cross-entropy (from logits with class or probability targets, and the classic
//! form on probability inputs), negative log-likelihood and PyTorch's catalogue of pointwise
//! losses, each forward and backward in one fused pass, with deterministic reductions (a
//! fixed-order tree, no float atomics: the same bits on every run) and an f64 CPU twin for
//! every kernel. Inputs and gradients in f32, f16 or bf16 ([`DType`]); sums in f32.
//! Cross-entropy also writes what a trainer needs from the same pass (each row's log-sum-exp,
//! loss and argmax, the count of correct rows; an upstream gradient folded in), and splits a
//! vocabulary over devices ([`cross_entropy::Shard`], [`cross_entropy::combine_shards`]). Fused linear + cross-entropy
//! ([`LinearCrossEntropyDesc`]) computes a language model's loss and the gradients of its hidden
//! states and output layer without the `[N, V]` logits. Image losses for renderers
//! ([`ImageDesc`] and its [`Plan`]: L1, MSE, PSNR, SSIM, D-SSIM and the photometric loss of
//! Gaussian splatting) read the caller's textures or `[N, H, W, C]` buffers and write the
//! gradient to a buffer or a storage texture.
//!
//! Every loss has the same shape. A description ([`plan::LossDesc`]: [`PointwiseDesc`],
//! [`CrossEntropyDesc`], [`NllDesc`], [`ClassicCrossEntropyDesc`], [`LinearCrossEntropyDesc`],
//! [`CustomLossDesc`], [`ImageDesc`], [`MixDesc`]) says what to compute for one shape; then two
//! levels of API, the same for every family:
//! - **recording**: a [`Plan`] built once per description binds your buffers, or ranges of
//!   them, named by the loss's family ([`pointwise::PointwiseBuffers`],
//!   [`cross_entropy::CrossEntropyBuffers`], [`nll::NllBuffers`],
//!   [`linear_cross_entropy::LinearCrossEntropyBuffers`], [`image::ImageBuffers`],
//!   [`mix::MixBuffers`]) into [`plan::Bindings`], and records its passes into your
//!   `wgpu::CommandEncoder`; nothing is submitted and results stay on the GPU;
//! - **convenience**: [`Context::loss`] takes host slices ([`Inputs`], [`image::ImageInputs`])
//!   and returns a [`LossOutput`] (a [`mix::MixOutput`] for a mix): upload, record, submit, read
//!   back (plans cached per description).
//!
//! The root holds the descriptions, [`Plan`], [`Context`], the error, the dtypes, the
//! reductions and the convenience level's [`Inputs`] and [`LossOutput`]; each family's other
//! types (its buffers, options and helpers) sit in the module of its name, the device's options
//! in [`context`].
//!
//! ```no_run
//! use wgpu_loss::{Context, CrossEntropyDesc, Inputs};
//!
//! let ctx = Context::new()?;
//! let logits = [2.0f32, -1.0, 0.5, 0.1, 0.2, 3.0];
//! let out = ctx.loss(&CrossEntropyDesc::new(2, 3), &Inputs::classes(&logits, &[0, 2]))?;
//! println!("loss {:?}, grad {:?}", out.value, out.grad);
//! # Ok::<(), wgpu_loss::Error>(())
//! ```
//!
//! A [`Context`] is `Send + Sync`: share it between threads on any backend. On GL, where wgpu
//! drives the device through one GL context, the crate serialises its own use of the device;
//! callers that make wgpu calls of their own on a shared device hold [`Context::lock`] around
//! them (see its docs).
//!
//! Map of the crate, from the bottom up: `error`, `dtype` ([`DType`], [`Values`]) and
//! `reduction` ([`Reduction`], [`Outputs`], [`LossOutput`]) are the vocabulary; `engine`
//! names no loss family (a kernel's declaration, the WGSL preprocessor, the device and its
//! pipeline and plan caches, programs of dispatches with fixed-order reductions, uploads and
//! read-backs, the slots a family declares and names), and [`kernel`] opens it to kernels of
//! your own; [`plan`] is the one public shape ([`plan::LossDesc`], [`Plan`], [`Inputs`],
//! [`Context::loss`], the slots every loss over tensors shares and the macro that makes a
//! family's buffers struct); `families` holds one file per loss family beside
//! `shaders/<family>.wgsl` (`pointwise`, `custom`, `class_targets`, `cross_entropy`, `nll`,
//! `linear_cross_entropy`, `image`, `mix`, `optim`), each declaring its kernel, its slots and
//! its buffers; [`cpu`] the f64 twins; [`train`] ([`train::SoftmaxRegression`]) trains on top of
//! them all. The benchmark harness is the `wgpu-loss-bench` package of this workspace.

#![warn(missing_docs)]

#[cfg(test)]
mod contracts;
pub mod cpu;
mod dtype;
mod engine;
mod error;
mod families;
pub mod kernel;
pub mod plan;
mod reduction;
pub mod train;

pub use dtype::{DType, Values, ValuesMut, bf16, f16};
pub use engine::context::Context;
pub use error::{Error, Result};
pub use families::cross_entropy::CrossEntropyDesc;
pub use families::custom::CustomLossDesc;
pub use families::image::ImageDesc;
pub use families::linear_cross_entropy::LinearCrossEntropyDesc;
pub use families::mix::MixDesc;
pub use families::nll::NllDesc;
pub use families::pointwise::{ClassicCrossEntropyDesc, PointwiseDesc};
pub use plan::{Inputs, Plan};
pub use reduction::{LossOutput, Outputs, Reduction};

/// The device: [`Context`]'s options and tuning, its lock, and the status words a run leaves.
pub mod context {
    pub use crate::engine::context::{ContextOptions, DeviceGuard, Tuning};
    pub use crate::engine::program::Status;
}

/// The pointwise catalogue ([`crate::pointwise::Pointwise`], planned by [`crate::PointwiseDesc`]), and the
/// buffers of its plans, of the classic cross-entropy's and of custom losses'.
pub mod pointwise {
    pub use crate::families::pointwise::{Pointwise, PointwiseBuffers};
}

/// Cross-entropy from logits ([`crate::CrossEntropyDesc`]): its targets, its buffers, and
/// vocabulary shards.
pub mod cross_entropy {
    pub use crate::families::cross_entropy::{
        CombinedShards, CrossEntropyBuffers, Shard, ShardStep, Targets, combine_shards,
    };
}

/// Negative log-likelihood ([`crate::NllDesc`]): its buffers.
pub mod nll {
    pub use crate::families::nll::NllBuffers;
}

/// Fused linear + cross-entropy ([`crate::LinearCrossEntropyDesc`]): its buffers and limits.
pub mod linear_cross_entropy {
    pub use crate::families::linear_cross_entropy::{LinearCrossEntropyBuffers, MAX_DIM};
}

/// Image losses ([`crate::ImageDesc`]): the losses, their sources, masks and padding, their
/// buffers and textures, and host images.
pub mod image {
    pub use crate::families::image::{
        GradTarget, ImageBuffers, ImageInput, ImageInputs, ImageLoss, ImageMask, ImageSource,
        Padding,
    };
}

/// Weighted sums of losses ([`crate::MixDesc`]): their buffers and output.
pub mod mix {
    pub use crate::families::mix::{MixBuffers, MixOutput, TermBuffers};
}

/// The update step on the GPU: SGD and Adam over the caller's parameter buffers.
pub mod optim {
    pub use crate::families::optim::{Optim, OptimBindings, Optimizer};
}
