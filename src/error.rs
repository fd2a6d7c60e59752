//! The one error type of the crate.

/// Everything that can go wrong, as a value: library code never panics because of what a caller
/// passed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched: none at all, none on the requested backends, or none whose name
    /// contains `WGPU_ADAPTER_NAME`.
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),

    /// The adapter refused to create a device.
    #[error("could not create a device: {0}")]
    RequestDevice(String),

    /// A device handed to [`Context::from_device`](crate::Context::from_device) lacks a limit
    /// the kernels need.
    #[error("device limit {limit} is {actual}, wgpu-loss needs at least {needed}")]
    DeviceLimit {
        /// The `wgpu::Limits` field.
        limit: &'static str,
        /// What the kernels need.
        needed: u64,
        /// What the device has.
        actual: u64,
    },

    /// Two inputs that must agree in length do not.
    #[error("{what}: expected {expected} elements, got {actual}")]
    LengthMismatch {
        /// Which input, and what it had to match.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        actual: usize,
    },

    /// An input has no elements, or a shape has a zero dimension. A loss over nothing is
    /// rejected rather than answered with PyTorch's NaN: GPU buffers cannot be empty, and in a
    /// training loop an empty batch is almost always a bug worth hearing about.
    #[error("{0} is empty")]
    Empty(&'static str),

    /// An option is out of its domain (a negative `delta`, `label_smoothing` outside [0, 1], a
    /// reduction the loss does not have, ...).
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// Why it is refused.
        reason: String,
    },

    /// A custom loss's expression that is not one WGSL `f32` expression in `x` and `y`: the
    /// host's check, or the WGSL compiler's message.
    #[error("custom {which} expression {expr:?}: {message}")]
    CustomLoss {
        /// `"loss"` or `"grad"`.
        which: &'static str,
        /// The expression as given.
        expr: String,
        /// Why it is refused.
        message: String,
    },

    /// A class index outside `[0, C)` that is not the `ignore_index`, found on the host.
    #[error("target {value} at row {row} is outside [0, {classes})")]
    TargetOutOfRange {
        /// The row.
        row: usize,
        /// The index found there.
        value: i64,
        /// The number of classes.
        classes: usize,
    },

    /// A value outside the loss's domain, found on the host (a probability outside [0, 1] for
    /// binary cross-entropy, NaN included).
    #[error("{what}: element {index} is {value}, outside {domain}")]
    ValueOutOfRange {
        /// Which input.
        what: &'static str,
        /// The element.
        index: usize,
        /// Its value.
        value: f64,
        /// The allowed domain, in words.
        domain: &'static str,
    },

    /// Invalid inputs counted by a kernel (class indices out of range, probabilities outside
    /// [0, 1]) in GPU-resident data. `first` is the first offending row (class targets) or
    /// element (probabilities).
    #[error("{count} invalid {what} on the GPU; the first at index {first}")]
    InvalidOnGpu {
        /// What was invalid.
        what: &'static str,
        /// How many.
        count: u32,
        /// The index of the first.
        first: u32,
    },

    /// A shape has more elements than the kernels can index (2^32 - 1, their u32 element
    /// index), or its element count overflows.
    #[error("{what}: shape {dims:?} has more than {limit} elements")]
    ShapeTooLarge {
        /// Which input.
        what: &'static str,
        /// The dimensions given.
        dims: Vec<usize>,
        /// The most elements the kernels index.
        limit: u64,
    },

    /// An input or output is larger than the device allows: than one binding holds (per-row
    /// tensors, scratch, a window's unit), or than one buffer (tensors bound a window at a time).
    #[error("{what} needs {bytes} bytes, over the adapter's {which} limit of {limit}")]
    TooLarge {
        /// Which buffer.
        what: &'static str,
        /// Bytes it would need (workgroups, for a dispatch).
        bytes: u64,
        /// The limit: `max_storage_buffer_binding_size`, `max_buffer_size`, or workgroups.
        limit: u64,
        /// Which limit: "storage binding", "buffer size", or "workgroups per dispatch".
        which: &'static str,
    },

    /// A caller's buffer (or range of one) is smaller than the shape needs.
    #[error("buffer `{binding}` has {actual} bytes, the shape needs {needed}")]
    BufferTooSmall {
        /// The buffer's role.
        binding: &'static str,
        /// Bytes needed.
        needed: u64,
        /// The buffer's size.
        actual: u64,
    },

    /// A caller's range starts at an offset the device cannot bind a storage buffer at.
    #[error(
        "buffer `{binding}` starts at offset {offset}, not a multiple of the device's \
         min_storage_buffer_offset_alignment ({alignment})"
    )]
    Misaligned {
        /// The buffer's role.
        binding: &'static str,
        /// The range's offset.
        offset: u64,
        /// The device's alignment.
        alignment: u64,
    },

    /// A caller's buffer lacks a usage the kernels need.
    #[error("buffer `{binding}` lacks usage {needed:?} (it has {actual:?})")]
    MissingUsage {
        /// The buffer's role.
        binding: &'static str,
        /// The usage it needs.
        needed: wgpu::BufferUsages,
        /// The usages it has.
        actual: wgpu::BufferUsages,
    },

    /// Two ranges given to a plan share a buffer that the plan writes through one of them: they
    /// overlap (the same buffer as `loss` and `grad`, the logits again as `grad` without
    /// `in_place`), or an input lies in a buffer that also holds an output (wgpu binds a buffer
    /// either read-only or writable in one dispatch, whatever the ranges). Outputs may share a
    /// buffer at disjoint ranges, and inputs may share one freely.
    #[error(
        "buffers `{a}` and `{b}` share a buffer written through one of them (overlapping, or \
         an input beside an output)"
    )]
    Aliased {
        /// One buffer's role.
        a: &'static str,
        /// The other's.
        b: &'static str,
    },

    /// A buffer was given where the plan has no use for it, a needed one is missing, a range
    /// runs past its buffer's end, or bindings were recorded with another plan.
    #[error("buffer `{0}`: {1}")]
    Binding(&'static str, &'static str),

    /// The device ran out of memory (caught by an error scope).
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),

    /// wgpu reported a validation or internal error (caught by an error scope).
    #[error("wgpu error: {0}")]
    Wgpu(String),

    /// Mapping a buffer for readback failed, or the device was lost while waiting.
    #[error("reading results back failed: {0}")]
    Readback(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// [`Error::InvalidOption`]: `option` is refused for `reason`.
    pub fn option(option: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            option,
            reason: reason.into(),
        }
    }

    /// The error of an error scope: [`Error::OutOfMemory`] when wgpu ran out of memory, else
    /// [`Error::Wgpu`].
    pub fn from_wgpu(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
            other => Error::Wgpu(other.to_string()),
        }
    }
}

/// `Display` of a type that has a `name()`: its name (the CLI's, and its `FromStr`'s).
macro_rules! display_by_name {
    ($ty:ty) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use display_by_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_scope_results_keep_their_kind() {
        let oom = Error::from_wgpu(wgpu::Error::OutOfMemory {
            source: Box::new(std::io::Error::other("vkAllocateMemory failed")),
        });
        assert!(matches!(oom, Error::OutOfMemory(_)), "{oom:?}");
        assert!(oom.to_string().starts_with("out of GPU memory"), "{oom}");
        let validation = Error::from_wgpu(wgpu::Error::Validation {
            source: Box::new(std::io::Error::other("bad binding")),
            description: "bad binding".into(),
        });
        assert!(matches!(validation, Error::Wgpu(_)), "{validation:?}");
        assert!(
            validation.to_string().contains("bad binding"),
            "{validation}"
        );
    }
}
