//! # wgpu-loss
//!
//! Neural-network loss functions and their gradients as WGSL compute shaders on wgpu: mean
//! squared error, cross-entropy (from logits with class or probability targets, and from
//! probabilities), and PyTorch's catalogue of pointwise losses, each forward and backward in
//! one fused pass, with deterministic reductions (a fixed-order tree, no float atomics: the same
//! bits on every run) and an f64 CPU twin for every kernel.
//!
//! Two levels of API:
//! - **recording**: a plan ([`PointwisePlan`], [`CrossEntropyPlan`], ...) built once per shape
//!   records its passes into your `wgpu::CommandEncoder` against your buffers; nothing is
//!   submitted and results stay on the GPU;
//! - **convenience**: [`Context::mse`], [`Context::cross_entropy`], ... take host slices and
//!   return [`LossOutput`]: upload, record, submit, read back.
//!
//! ```no_run
//! use wgpu_loss::{Context, CrossEntropyOptions, Outputs};
//!
//! let ctx = Context::new()?;
//! let logits = [2.0, -1.0, 0.5, 0.1, 0.2, 3.0];
//! let out = ctx.cross_entropy(&logits, &[0, 2], 3, None, &CrossEntropyOptions::default(), Outputs::BOTH)?;
//! println!("loss {:?}, grad {:?}", out.value, out.grad);
//! # Ok::<(), wgpu_loss::Error>(())
//! ```
//!
//! A [`Context`] is `Send + Sync`: share it between threads on any backend. On GL, where wgpu
//! drives the device through one GL context, the crate serialises its own use of the device;
//! callers that make wgpu calls of their own on a shared device hold [`Context::lock`] around
//! them (see its docs).
//!
//! Module map: [`context`] (device, pipeline cache), [`pointwise`] and [`cross_entropy`] (one
//! file per loss family, beside `shaders/<family>.wgsl`), [`cpu`] (the references),
//! [`reduction`] (reductions and outputs), [`shader`] (WGSL assembly).

pub mod bench;
pub mod context;
pub mod cpu;
pub mod cross_entropy;
mod error;
pub mod nll;
pub mod pointwise;
mod program;
pub mod reduction;
pub mod shader;
mod transfer;

pub use context::{Context, ContextOptions, DeviceGuard, Tuning};
pub use cross_entropy::{
    CrossEntropyBuffers, CrossEntropyDesc, CrossEntropyOptions, CrossEntropyPlan,
    CrossEntropyProbsBuffers, CrossEntropyProbsDesc, CrossEntropyProbsPlan, TargetKind,
};
pub use error::{Error, Result};
pub use nll::{NllBuffers, NllDesc, NllOptions, NllPlan};
pub use pointwise::{Pointwise, PointwiseBuffers, PointwiseDesc, PointwiseInputs, PointwisePlan};
pub use program::Status;
pub use reduction::{LossOutput, Outputs, Reduction};
