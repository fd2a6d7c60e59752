//! Kernels of your own on the library's machinery: a WGSL file declared as a [`Kernel`] (its
//! `Params` from [`params!`](crate::kernel::params), its mode codes from
//! [`modes!`](crate::kernel::modes), its bindings), assembled by the library's preprocessor
//! ([`preprocess`]: `#import` of the library's `shaders/common/` helpers, `#params`,
//! `#ifdef`, `#const`, `#unroll`), compiled once per [`Context`](crate::Context) through its
//! pipeline cache ([`Context::pipeline`](crate::Context::pipeline), keyed by a
//! [`PipelineKey`]), and dispatched in workgroups of [`WG`] invocations. The benchmark
//! package's ceiling kernels are built this way.
//!
//! With the `contracts` feature, `kernel::check` holds a kernel to its declaration with naga (every
//! variant parses and validates, its bindings and `Params` are the host's), without a GPU.

pub use crate::engine::context::{Pipeline, PipelineKey};
#[cfg(feature = "contracts")]
pub use crate::engine::contracts::check;
pub use crate::engine::kernel::{Binding, Kernel, ParamsInfo, WG};
pub use crate::engine::program::{fold, partial_group};
pub use crate::engine::transfer::{map_read, read_back, upload, upload_reused};
pub use crate::engine::wgsl::preprocess;
pub use crate::{__fixed_layout as fixed_layout, __modes as modes, __params as params};
