//! What the functions of this crate refuse, before anything is recorded.

/// An error of this crate: the inputs or the device, checked before Burn records anything.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tensor is not on a Burn wgpu device that [`crate::init`] or [`crate::adopt`] made.
    #[error("{0}: not on a wgpu device made by wgpu_loss_burn::init or adopt")]
    Device(&'static str),
    /// Shapes that do not fit together.
    #[error("{what}: {detail}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A float dtype the kernels do not read (they read f32, f16 and bf16).
    #[error("{what}: dtype {dtype:?}; the kernels read f32, f16 and bf16")]
    DType {
        /// Which input.
        what: &'static str,
        /// Its dtype.
        dtype: burn::tensor::DType,
    },
    /// What wgpu-loss refused (an option out of range, a device without a feature).
    #[error(transparent)]
    Loss(#[from] wgpu_loss::Error),
    /// What Burn refused while making or adopting a device.
    #[error("Burn: {0}")]
    Burn(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
