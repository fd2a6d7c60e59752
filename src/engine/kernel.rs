//! What the host knows of one WGSL kernel file, declared by the family that owns it: a
//! [`Kernel`] (its source, its `Params`, its mode constants, its bindings, its variants). The
//! engine compiles any kernel from this alone and names none.

use std::borrow::Cow;

/// Invocations per workgroup of every kernel.
pub const WG: u32 = 256;

/// The role of one binding of a kernel, in binding order from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// The kernel's `params` (always binding 0).
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
    /// A 2-D float texture read with `textureLoad` (any float format: unfilterable).
    Texture,
    /// A 2-D write-only storage texture of this format.
    StorageTexture(wgpu::TextureFormat),
}

/// A kernel's uniform `Params` as both sides see it: the WGSL declaration `#params` splices in,
/// and the Rust struct's field offsets and size (for the contract test).
#[derive(Debug)]
pub struct ParamsInfo {
    /// `struct Params { ... }` in WGSL.
    pub wgsl: &'static str,
    /// Field names and byte offsets of the Rust struct.
    pub fields: &'static [(&'static str, usize)],
    /// The Rust struct's size in bytes.
    pub size: usize,
}

/// One kernel file and what the host knows of it. A family declares its kernels as statics
/// next to its planner; the engine's pipeline cache keys on [`Kernel::file`].
pub struct Kernel {
    /// The file's name (under the family's shader folder): labels, errors, cache keys.
    pub file: &'static str,
    /// The WGSL (`include_str!` of the file).
    pub source: &'static str,
    /// Its `Params` (from [`params!`]).
    pub params: ParamsInfo,
    /// WGSL constants spliced in after `Params` (from [`modes!`]): the mode codes the host
    /// writes into `Params` or override constants, named in the shader instead of numbered.
    pub consts: &'static [&'static str],
    /// The bindings, in binding order from 0, for the given defines: the one description of
    /// them on the host (the contract test checks it against every variant).
    pub layout: fn(&[String]) -> Cow<'static, [Binding]>,
    /// The preprocessor names the file reacts to; every subset is a variant the host may ask
    /// for (the contract test walks them all).
    pub defines: &'static [&'static str],
    /// Values the file needs (`#const`, `#unroll`, `#expr`), with sample values for validation.
    pub values: &'static [&'static str],
}

impl Kernel {
    /// The kernel in `file` whose WGSL is `source`, with no parameters, no bindings, no mode
    /// constants and no values yet, and the one define every kernel reacts to (`SUBGROUPS`):
    /// declare the rest with the setters, in a `static`.
    pub const fn new(file: &'static str, source: &'static str) -> Self {
        Kernel {
            file,
            source,
            params: ParamsInfo {
                wgsl: "",
                fields: &[],
                size: 0,
            },
            consts: &[],
            layout: |_| Cow::Borrowed(&[]),
            defines: &["SUBGROUPS"],
            values: &[],
        }
    }

    /// Sets the `Params` (a `params!` struct's `INFO`).
    pub const fn params(mut self, params: ParamsInfo) -> Self {
        self.params = params;
        self
    }

    /// Sets the mode constants (`modes!` types' `WGSL`).
    pub const fn consts(mut self, consts: &'static [&'static str]) -> Self {
        self.consts = consts;
        self
    }

    /// Sets the bindings (see [`Kernel::layout`]).
    pub const fn layout(mut self, layout: fn(&[String]) -> Cow<'static, [Binding]>) -> Self {
        self.layout = layout;
        self
    }

    /// Sets the preprocessor names the file reacts to.
    pub const fn defines(mut self, defines: &'static [&'static str]) -> Self {
        self.defines = defines;
        self
    }

    /// Sets the values the file needs, with samples for validation (`NAME=a|b` takes each).
    pub const fn values(mut self, values: &'static [&'static str]) -> Self {
        self.values = values;
        self
    }
}

impl PartialEq for Kernel {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file
    }
}

impl Eq for Kernel {}

impl std::hash::Hash for Kernel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.file.hash(state);
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.file)
    }
}

/// Declares a kernel's uniform parameters once, for both sides: the `#[repr(C)]` Rust struct
/// the host fills, and (as `INFO`) the `struct Params` that `#params` splices into the shader
/// (with its binding, `params` at binding 0).
/// Fields are `u32`, `i32` or `f32`, named the same in both; the contract test checks that
/// naga lays the WGSL struct out as Rust does. The struct derives `bytemuck::Pod`: the crate
/// that uses the macro depends on bytemuck.
#[doc(hidden)]
#[macro_export]
macro_rules! __params {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident: $ty:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl $name {
            /// The WGSL declaration and the Rust layout.
            pub const INFO: $crate::kernel::ParamsInfo = $crate::kernel::ParamsInfo {
                wgsl: concat!(
                    "struct Params {\n",
                    $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                    "}\n"
                ),
                fields: &[$((stringify!($field), std::mem::offset_of!($name, $field)),)*],
                size: std::mem::size_of::<$name>(),
            };
        }
    };
}
pub(crate) use crate::__params as params;

/// Declares mode codes once, for both sides: `u32` constants on a Rust type that the host
/// writes (into `Params`, or as override constants), and (as `WGSL`) the same constants,
/// prefixed, that the shader compares against by name. A kernel lists the `WGSL` in
/// [`Kernel::consts`], so that a shader naming a code the host does not define fails the
/// contract test.
#[doc(hidden)]
#[macro_export]
macro_rules! __modes {
    ($(#[$m:meta])* $name:ident $prefix:literal { $($(#[$vm:meta])* $code:ident = $val:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name;

        #[allow(dead_code)]
        impl $name {
            $($(#[$vm])* pub const $code: u32 = $val;)*
            /// The codes as WGSL constants.
            pub const WGSL: &'static str = concat!(
                $("const ", $prefix, "_", stringify!($code), ": u32 = ", stringify!($val), "u;\n",)*
            );
        }
    };
}
pub(crate) use crate::__modes as modes;

modes! {
    /// How a loss kernel scales its gradient (`params.scale_mode`,
    /// shaders/common/outputs.wgsl).
    /// `HOST`: `params.grad_scale`, from the host; `REDUCED`: one over the denominator an earlier
    /// pass reduced (`scratch.data[0]`); `OWN`: one over the weight sum this dispatch reduces
    /// itself (single only).
    ScaleMode "SCALE" { HOST = 0, REDUCED = 1, OWN = 2 }
}

modes! {
    /// How a single-dispatch loss kernel finishes its reduced value (`params.final_mode`,
    /// shaders/common/outputs.wgsl).
    /// `SUM`: the sum; `MEAN`: the sum over `params.mean_den`; `WEIGHTED`: the sum over the
    /// weight sum; `NONE`: no reduced value.
    FinalMode "FINAL" { SUM = 0, MEAN = 1, WEIGHTED = 2, NONE = 3 }
}

/// A [`Kernel::layout`] that does not depend on the defines: `U` the params, `R` read, `W`
/// read-write.
#[doc(hidden)]
#[macro_export]
macro_rules! __fixed_layout {
    ($($b:ident),* $(,)?) => {{
        #[allow(unused_imports)]
        use $crate::kernel::Binding::{Read as R, ReadWrite as W, Uniform as U};
        |_: &[String]| std::borrow::Cow::Borrowed(&[$($b),*][..])
    }};
}
pub(crate) use crate::__fixed_layout as fixed_layout;
