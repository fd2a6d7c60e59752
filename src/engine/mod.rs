//! The engine every loss family shares, naming none of them: kernels and their WGSL assembly
//! (`kernel`, `wgsl`), the device with its pipeline and plan caches (`context`), programs of
//! dispatches over the caller's buffers with fixed-order reductions (`program`) in slots each
//! family declares and names (`slots`), and the
//! uploads and read-backs of the convenience level (`transfer`) through the buffers it reuses
//! (`host_buffers`).

pub(crate) mod context;
#[cfg(any(test, feature = "contracts"))]
pub(crate) mod contracts;
pub(crate) mod host_buffers;
pub(crate) mod kernel;
pub(crate) mod program;
pub(crate) mod slots;
pub(crate) mod transfer;
pub(crate) mod wgsl;
