//! Element types of the caller's tensors: f32, and the 16-bit floats f16 and bf16 that large
//! models keep their logits and activations in. Every sum and softmax statistic is computed in
//! f32 whatever the inputs' dtype; losses are always f32. On the GPU, 16-bit tensors are read
//! and written through `shaders/common/tensor.wgsl` (WGSL's `f16` where the device has
//! `SHADER_F16`, packed `u32` pairs otherwise; bf16 always packed), with conversions in
//! `shaders/common/half.wgsl` that round to nearest even on every adapter.

use std::borrow::Cow;
use std::str::FromStr;

pub use half::{bf16, f16};

use crate::error::{Error, Result, display_by_name};

/// The element type of an input, target or gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    #[default]
    F32,
    /// IEEE binary16 (largest finite 65504).
    F16,
    /// bfloat16: f32's upper 16 bits (f32's range, 8 significant bits).
    BF16,
}

impl DType {
    /// Bytes an element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Its name (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// The gap between 1 and the next value (2^-23, 2^-10, 2^-7): a relative rounding error of
    /// at most half of it.
    pub fn epsilon(self) -> f64 {
        match self {
            DType::F32 => f32::EPSILON as f64,
            DType::F16 => f16::EPSILON.to_f64(),
            DType::BF16 => bf16::EPSILON.to_f64(),
        }
    }

    /// The bytes `elements` of this dtype take in a binding: rounded up to whole 4-byte words
    /// (storage bindings are sized in words; the pad of an odd count of 16-bit elements is
    /// neither read nor changed).
    pub fn bytes(self, elements: u64) -> u64 {
        (elements * self.size()).next_multiple_of(4)
    }

    /// The shader's code for it (`DTYPE_*` in shaders/common/tensor.wgsl).
    pub(crate) fn code(self) -> u32 {
        self as u32
    }

    /// `x` rounded to this dtype (to nearest even), as f32.
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::F16 => f16::from_f32(x).to_f32(),
            DType::BF16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// Little-endian bytes of this dtype as f32 (exact).
    pub(crate) fn widen(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytemuck::pod_collect_to_vec(bytes),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}

display_by_name!(DType);

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(Error::option(
                "dtype",
                format!("{other:?} is not one of f32, f16, bf16"),
            )),
        }
    }
}

/// Host values in one of the dtypes: what [`crate::Inputs`] holds for the input and
/// real-valued targets. `From` takes slices (and arrays, vectors) of `f32`, [`struct@f16`] and [`bf16`].
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
    /// bf16 values.
    BF16(&'a [bf16]),
}

impl<'a> Values<'a> {
    /// The dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Values::F32(_) => DType::F32,
            Values::F16(_) => DType::F16,
            Values::BF16(_) => DType::BF16,
        }
    }

    /// How many elements.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) => v.len(),
            Values::BF16(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (exact: every f16 and bf16 is an f32).
    pub fn to_f32(&self) -> Cow<'a, [f32]> {
        match *self {
            Values::F32(v) => Cow::Borrowed(v),
            Values::F16(v) => Cow::Owned(v.iter().map(|h| h.to_f32()).collect()),
            Values::BF16(v) => Cow::Owned(v.iter().map(|h| h.to_f32()).collect()),
        }
    }

    /// The values' bytes, as the GPU reads them.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            Values::F32(v) => bytemuck::cast_slice(v),
            Values::F16(v) => bytemuck::cast_slice(v),
            Values::BF16(v) => bytemuck::cast_slice(v),
        }
    }

    /// Checks that these values are of the description's `dtype` (`what` names them).
    pub(crate) fn expect(&self, what: &'static str, dtype: DType) -> Result<()> {
        if self.dtype() == dtype {
            Ok(())
        } else {
            Err(Error::option(
                "dtype",
                format!(
                    "the {what} are {} but the description says {dtype}",
                    self.dtype()
                ),
            ))
        }
    }
}

macro_rules! values_from {
    ($($t:ty => $v:ident),*) => {$(
        impl<'a> From<&'a [$t]> for Values<'a> {
            fn from(v: &'a [$t]) -> Self {
                Values::$v(v)
            }
        }
        impl<'a> From<&'a Vec<$t>> for Values<'a> {
            fn from(v: &'a Vec<$t>) -> Self {
                Values::$v(v)
            }
        }
        impl<'a, const N: usize> From<&'a [$t; N]> for Values<'a> {
            fn from(v: &'a [$t; N]) -> Self {
                Values::$v(v)
            }
        }
    )*};
}
values_from!(f32 => F32, f16 => F16, bf16 => BF16);

/// A caller's slice of one of the dtypes, for a result written into it
/// ([`crate::Context::loss_into`]). `From` takes mutable slices (and vectors) of `f32`,
/// [`struct@f16`] and [`bf16`].
#[derive(Debug)]
pub enum ValuesMut<'a> {
    /// f32 values.
    F32(&'a mut [f32]),
    /// f16 values.
    F16(&'a mut [f16]),
    /// bf16 values.
    BF16(&'a mut [bf16]),
}

impl ValuesMut<'_> {
    /// The dtype.
    pub fn dtype(&self) -> DType {
        match self {
            ValuesMut::F32(_) => DType::F32,
            ValuesMut::F16(_) => DType::F16,
            ValuesMut::BF16(_) => DType::BF16,
        }
    }

    /// How many elements.
    pub fn len(&self) -> usize {
        match self {
            ValuesMut::F32(v) => v.len(),
            ValuesMut::F16(v) => v.len(),
            ValuesMut::BF16(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slice's bytes, as the GPU writes them.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            ValuesMut::F32(v) => bytemuck::cast_slice_mut(v),
            ValuesMut::F16(v) => bytemuck::cast_slice_mut(v),
            ValuesMut::BF16(v) => bytemuck::cast_slice_mut(v),
        }
    }
}

macro_rules! values_mut_from {
    ($($t:ty => $v:ident),*) => {$(
        impl<'a> From<&'a mut [$t]> for ValuesMut<'a> {
            fn from(v: &'a mut [$t]) -> Self {
                ValuesMut::$v(v)
            }
        }
        impl<'a> From<&'a mut Vec<$t>> for ValuesMut<'a> {
            fn from(v: &'a mut Vec<$t>) -> Self {
                ValuesMut::$v(v)
            }
        }
    )*};
}
values_mut_from!(f32 => F32, f16 => F16, bf16 => BF16);
