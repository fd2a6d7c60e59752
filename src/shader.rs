//! WGSL sources and the tiny preprocessor that assembles them.
//!
//! Each kernel family has one file in `shaders/`; helpers shared between families live in
//! `shaders/common/` and are spliced in with `#import name`. Variants of a kernel (vec4 or
//! scalar bindings, in-place, with or without subgroup operations) are chosen with
//! `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` on the names the host defines; numeric
//! choices are WGSL `override` constants, given at pipeline creation.

use std::borrow::Cow;

use crate::context::Binding;
use crate::{Error, Result};

/// Declares a kernel's uniform parameters once, for both sides: the `#[repr(C)]` Rust struct
/// the host fills, and (as `WGSL`) the `struct Params` that `#params` splices into the shader
/// (with its binding, `params` at binding 0).
/// Fields are `u32`, `i32` or `f32`, named the same in both; the contract test
/// (`contracts` below) checks that naga lays the WGSL struct out as Rust does.
macro_rules! params {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident: $ty:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl $name {
            /// The WGSL declaration, spliced into the kernel by `#params`.
            pub const WGSL: &'static str = concat!(
                "struct Params {\n",
                $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                "}\n"
            );
            /// Field names and byte offsets, for the contract test.
            #[cfg(test)]
            pub const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($field), std::mem::offset_of!($name, $field)),)*];
        }
    };
}
pub(crate) use params;

/// A kernel family: one file in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// `shaders/pointwise.wgsl`: MSE, L1, Huber, smooth L1, BCE, BCE with logits, KL divergence.
    Pointwise,
    /// `shaders/cross_entropy.wgsl`: cross-entropy from logits (class or probability targets)
    /// and from probabilities.
    CrossEntropy,
    /// `shaders/class_targets.wgsl`: the weighted mean's denominator over class targets.
    ClassTargets,
    /// `shaders/nll.wgsl`: negative log-likelihood.
    Nll,
    /// `shaders/reduce.wgsl`: fixed-order sums of partials.
    Reduce,
    /// `shaders/ceiling.wgsl`: the trivial kernels `bench` measures as ceilings.
    Ceiling,
    /// `shaders/linear_cross_entropy.wgsl`: fused linear + cross-entropy.
    LinearCrossEntropy,
    /// `shaders/matmul.wgsl`: the matrix products `bench` measures fused linear +
    /// cross-entropy against.
    Matmul,
    /// `shaders/optim.wgsl`: the update step (SGD, Adam).
    Optim,
    /// `shaders/mix.wgsl`: a weighted sum of losses' outputs.
    Mix,
    /// `shaders/image.wgsl`: image losses (L1, MSE, PSNR, SSIM, the photometric loss).
    Image,
    /// `shaders/ssim_unfused.wgsl`: the five-convolution form of SSIM `bench` measures the
    /// fused kernel against.
    SsimUnfused,
}

impl Shader {
    /// Every kernel family.
    pub const ALL: [Shader; 12] = [
        Shader::Pointwise,
        Shader::CrossEntropy,
        Shader::ClassTargets,
        Shader::Nll,
        Shader::Reduce,
        Shader::Ceiling,
        Shader::LinearCrossEntropy,
        Shader::Matmul,
        Shader::Optim,
        Shader::Mix,
        Shader::Image,
        Shader::SsimUnfused,
    ];

    /// The file name under `shaders/`.
    pub fn file(self) -> &'static str {
        match self {
            Shader::Pointwise => "pointwise.wgsl",
            Shader::CrossEntropy => "cross_entropy.wgsl",
            Shader::ClassTargets => "class_targets.wgsl",
            Shader::Nll => "nll.wgsl",
            Shader::Reduce => "reduce.wgsl",
            Shader::Ceiling => "ceiling.wgsl",
            Shader::LinearCrossEntropy => "linear_cross_entropy.wgsl",
            Shader::Matmul => "matmul.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Mix => "mix.wgsl",
            Shader::Image => "image.wgsl",
            Shader::SsimUnfused => "ssim_unfused.wgsl",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Shader::Pointwise => include_str!("../shaders/pointwise.wgsl"),
            Shader::CrossEntropy => include_str!("../shaders/cross_entropy.wgsl"),
            Shader::ClassTargets => include_str!("../shaders/class_targets.wgsl"),
            Shader::Nll => include_str!("../shaders/nll.wgsl"),
            Shader::Reduce => include_str!("../shaders/reduce.wgsl"),
            Shader::Ceiling => include_str!("../shaders/ceiling.wgsl"),
            Shader::LinearCrossEntropy => include_str!("../shaders/linear_cross_entropy.wgsl"),
            Shader::Matmul => include_str!("../shaders/matmul.wgsl"),
            Shader::Optim => include_str!("../shaders/optim.wgsl"),
            Shader::Mix => include_str!("../shaders/mix.wgsl"),
            Shader::Image => include_str!("../shaders/image.wgsl"),
            Shader::SsimUnfused => include_str!("../shaders/ssim_unfused.wgsl"),
        }
    }

    /// The WGSL of the kernel's `Params`, generated from the Rust struct the host fills.
    fn params(self) -> &'static str {
        match self {
            Shader::Pointwise => crate::pointwise::PointwiseParams::WGSL,
            Shader::CrossEntropy => crate::cross_entropy::CeParams::WGSL,
            Shader::ClassTargets => crate::class_targets::TargetParams::WGSL,
            Shader::Nll => crate::nll::NllParams::WGSL,
            Shader::Reduce => crate::program::ReduceParams::WGSL,
            Shader::Ceiling => crate::bench::CeilingParams::WGSL,
            Shader::LinearCrossEntropy => crate::linear_cross_entropy::LinearParams::WGSL,
            Shader::Matmul => crate::bench::MatmulParams::WGSL,
            Shader::Optim => crate::optim::OptimParams::WGSL,
            Shader::Mix => crate::mix::MixParams::WGSL,
            Shader::Image => crate::image::ImageParams::WGSL,
            Shader::SsimUnfused => crate::bench::UnfusedParams::WGSL,
        }
    }

    /// The Rust `Params` of the kernel: field names and offsets, and size.
    #[cfg(test)]
    fn params_layout(self) -> (Vec<(&'static str, usize)>, usize) {
        fn of<P: Copy>(
            fields: &'static [(&'static str, usize)],
        ) -> (Vec<(&'static str, usize)>, usize) {
            (fields.to_vec(), std::mem::size_of::<P>())
        }
        use crate::{bench, class_targets, cross_entropy, linear_cross_entropy, nll, pointwise};
        use crate::{linear_cross_entropy::LinearParams, program};
        match self {
            Shader::Pointwise => {
                of::<pointwise::PointwiseParams>(pointwise::PointwiseParams::FIELDS)
            }
            Shader::CrossEntropy => of::<cross_entropy::CeParams>(cross_entropy::CeParams::FIELDS),
            Shader::ClassTargets => {
                of::<class_targets::TargetParams>(class_targets::TargetParams::FIELDS)
            }
            Shader::Nll => of::<nll::NllParams>(nll::NllParams::FIELDS),
            Shader::Reduce => of::<program::ReduceParams>(program::ReduceParams::FIELDS),
            Shader::Ceiling => of::<bench::CeilingParams>(bench::CeilingParams::FIELDS),
            Shader::LinearCrossEntropy => {
                of::<linear_cross_entropy::LinearParams>(LinearParams::FIELDS)
            }
            Shader::Matmul => of::<bench::MatmulParams>(bench::MatmulParams::FIELDS),
            Shader::Optim => of::<crate::optim::OptimParams>(crate::optim::OptimParams::FIELDS),
            Shader::Mix => of::<crate::mix::MixParams>(crate::mix::MixParams::FIELDS),
            Shader::Image => of::<crate::image::ImageParams>(crate::image::ImageParams::FIELDS),
            Shader::SsimUnfused => of::<bench::UnfusedParams>(bench::UnfusedParams::FIELDS),
        }
    }

    /// The kernel's bindings, in binding order from 0, for the given defines: the one
    /// description of them on the host (the contract test checks it against every variant).
    pub fn layout(self, defines: &[String]) -> Cow<'static, [Binding]> {
        use Binding::{Read as R, ReadWrite as W, Uniform as U};
        let on = |name: &str| defines.iter().any(|d| d == name);
        Cow::Borrowed(match self {
            // x, y, mask (buffers or textures), dst, scratch, maps A, B, C, the gradient
            // texture.
            Shader::Image => {
                let input = |tex| if on(tex) { Binding::Texture } else { R };
                let mut layout = vec![
                    U,
                    input("PRED_TEX"),
                    input("TARGET_TEX"),
                    input("MASK_TEX"),
                    W,
                    W,
                    W,
                    W,
                    W,
                ];
                if on("GRAD_TEX") {
                    let format = defines
                        .iter()
                        .find_map(|d| d.strip_prefix("GRAD_FORMAT="))
                        .and_then(crate::image::storage_format)
                        .unwrap_or(wgpu::TextureFormat::Rgba32Float);
                    layout.push(Binding::StorageTexture(format));
                }
                return Cow::Owned(layout);
            }
            // pred, target, weight, pos_weight, grad, loss, scratch.
            Shader::Pointwise => &[U, R, R, R, R, W, W, W],
            // In place, x (binding 1) is written with the gradient and binding 5 is unused.
            Shader::CrossEntropy if defines.iter().any(|d| d == "INPLACE") => {
                &[U, W, R, R, R, W, W, W]
            }
            // x, t, y, w, grad, loss, scratch.
            Shader::CrossEntropy => &[U, R, R, R, R, W, W, W],
            // y, w, scratch.
            Shader::ClassTargets => &[U, R, R, W],
            // x, y, w, grad, loss, scratch.
            Shader::Nll => &[U, R, R, R, W, W, W],
            // scratch, loss.
            Shader::Reduce => &[U, W, W],
            // a, b, c.
            Shader::Ceiling | Shader::Matmul => &[U, R, R, W],
            // h, W, y, class weight, gh, gw, scratch.
            Shader::LinearCrossEntropy => &[U, R, R, R, R, W, W, W],
            // p, g, m, v.
            Shader::Optim => &[U, W, R, W, W],
            // dst, src.
            Shader::Mix => &[U, W, R],
            // m0..m4, dst, partials.
            Shader::SsimUnfused => &[U, R, R, R, R, R, W, W],
        })
    }

    /// The values this file needs (`#const`, `#unroll`), with sample values for validation.
    pub fn values(self) -> &'static [&'static str] {
        match self {
            Shader::CrossEntropy => &["K=3"],
            Shader::LinearCrossEntropy => &["TK=16"],
            Shader::Pointwise => &["CUSTOM_LOSS=log(cosh(x - y))", "CUSTOM_GRAD=tanh(x - y)"],
            Shader::Matmul => &["TK=16", "LOADS=4"],
            Shader::Image => &["GRAD_FORMAT=rgba32float", "TAPS=11", GAUSS_SAMPLE],
            Shader::SsimUnfused => &[GAUSS_SAMPLE],
            _ => &[],
        }
    }

    /// The preprocessor names this file reacts to; every subset is a variant the host may ask
    /// for (the shader validation test walks them all).
    pub fn defines(self) -> &'static [&'static str] {
        match self {
            Shader::Pointwise => &["VEC4", "ROWS", "CUSTOM", "SUBGROUPS"],
            Shader::Nll => &["VEC4", "SUBGROUPS"],
            Shader::CrossEntropy => &["VEC4", "UNALIGNED", "INPLACE", "SUBGROUPS"],
            Shader::ClassTargets | Shader::Reduce | Shader::Ceiling => &["SUBGROUPS"],
            Shader::LinearCrossEntropy => &["SUBGROUPS"],
            Shader::Matmul | Shader::Optim | Shader::Mix | Shader::SsimUnfused => &["SUBGROUPS"],
            Shader::Image => &[
                "PRED_TEX",
                "TARGET_TEX",
                "MASK_TEX",
                "GRAD_TEX",
                "SUBGROUPS",
            ],
        }
    }
}

/// A sample of the SSIM window's `#expr GAUSS` (the host makes the real one from the twin's taps),
/// for validation.
const GAUSS_SAMPLE: &str = "GAUSS=const G = array<f32, 11>(0.001, 0.008, 0.038, 0.109, 0.213, 0.264, 0.213, 0.109, 0.038, 0.008, 0.001);";

/// The files of `shaders/common/`, spliced in by `#import name`.
fn common(name: &str) -> Option<&'static str> {
    match name {
        "scratch" => Some(include_str!("../shaders/common/scratch.wgsl")),
        "segment" => Some(include_str!("../shaders/common/segment.wgsl")),
        "math" => Some(include_str!("../shaders/common/math.wgsl")),
        "outputs" => Some(include_str!("../shaders/common/outputs.wgsl")),
        "half" => Some(include_str!("../shaders/common/half.wgsl")),
        "tensor" => Some(include_str!("../shaders/common/tensor.wgsl")),
        _ => None,
    }
}

/// Kernel developers can point this variable at a checkout's `shaders/` directory to load the
/// WGSL from there at run time instead of the copy built into the binary (to try a change to a
/// kernel without rebuilding).
pub const SHADER_DIR_VAR: &str = "WGPU_LOSS_SHADER_DIR";

/// The text of `file` (relative to `shaders/`): from [`SHADER_DIR_VAR`]'s directory when it is
/// set, else `built_in`.
fn text(file: &str, built_in: &'static str) -> Result<std::borrow::Cow<'static, str>> {
    match std::env::var_os(SHADER_DIR_VAR) {
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(file);
            std::fs::read_to_string(&path)
                .map(Into::into)
                .map_err(|e| Error::Wgpu(format!("{}: {e}", path.display())))
        }
        None => Ok(built_in.into()),
    }
}

/// Assembles `shader` for the given defines: imports spliced in (each once), conditional
/// blocks resolved, constants declared, loops unrolled. Errors name the file and line.
///
/// A define is a name (`"VEC4"`) or a name with a value (`"K=32"`). Directives:
/// `#import name`; `#tensor NAME BINDING ACCESS [scalar]` (a caller's tensor in the dtype of
/// the value `DTYPE_NAME`, from shaders/common/tensor.wgsl); `#enable name` (a WGSL enable
/// directive, emitted once at the top); `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif`; `#params` (the kernel's
/// `struct Params` from its Rust twin, and `params` at binding 0); `#const NAME` (declares
/// `const NAME: u32 = value;`); `#expr NAME` (the text of the define `NAME=text`, a line of its
/// own); `#unroll var NAME` ... `#endunroll` (the body `value` times, each
/// copy in its own block with `const var: u32 = i;`: drivers keep arrays indexed by `var` in
/// registers, which a loop would leave in memory on some, lavapipe among them).
pub fn preprocess(shader: Shader, defines: &[&str]) -> Result<String> {
    let mut out = String::new();
    let mut imported = Vec::new();
    let source = text(shader.file(), shader.source())?;
    let file = Source {
        name: shader.file(),
        params: shader.params(),
    };
    expand(&file, &source, defines, &mut imported, &mut out)?;
    // `#enable`s go first, as WGSL wants its enable directives.
    let enables: String = imported
        .iter()
        .filter_map(|i| i.strip_prefix("enable "))
        .map(|e| format!("enable {e};\n"))
        .collect();
    Ok(enables + &out)
}

/// The tensor template's names for one `#tensor` of a tensor of dtype `code` (see
/// shaders/common/tensor.wgsl): its dtype's branch, and whether it is a vector and writable.
fn tensor_defines(code: u32, native_f16: bool, vector: bool, writable: bool) -> Vec<&'static str> {
    let mut names = vec![match code {
        0 => "DT_F32",
        1 if native_f16 => "DT_F16N",
        _ => "DT_HALF",
    }];
    if vector {
        names.push("TV4");
    }
    if writable {
        names.push("TW");
    }
    names
}

fn defined(defines: &[&str], name: &str) -> bool {
    defines.iter().any(|d| d.split('=').next() == Some(name))
}

fn value(defines: &[&str], name: &str) -> Option<u32> {
    defines
        .iter()
        .filter_map(|d| d.split_once('='))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The file being expanded: its name (for errors) and the `Params` that `#params` splices in.
struct Source<'a> {
    name: &'a str,
    params: &'a str,
}

fn expand(
    src: &Source<'_>,
    source: &str,
    defines: &[&str],
    imported: &mut Vec<String>,
    out: &mut String,
) -> Result<()> {
    // One entry per open #if: (this branch is taken, an enclosing branch is taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let bad = |line: usize, what: &str| {
        Error::Wgpu(format!("{file}:{}: {what}", line + 1, file = src.name))
    };
    let lines: Vec<&str> = source.lines().collect();
    let mut n = 0;
    while n < lines.len() {
        let line = lines[n];
        let trimmed = line.trim();
        let live = stack.last().is_none_or(|&(taken, outer)| taken && outer);
        if let Some(name) = trimmed.strip_prefix("#ifdef ") {
            stack.push((defined(defines, name.trim()), live));
        } else if let Some(name) = trimmed.strip_prefix("#ifndef ") {
            stack.push((!defined(defines, name.trim()), live));
        } else if trimmed == "#else" {
            let top = stack
                .last_mut()
                .ok_or_else(|| bad(n, "#else without #ifdef"))?;
            top.0 = !top.0;
        } else if trimmed == "#endif" {
            stack.pop().ok_or_else(|| bad(n, "#endif without #ifdef"))?;
        } else if let Some(name) = trimmed.strip_prefix("#import ") {
            let name = name.trim();
            if live && !imported.iter().any(|i| i == name) {
                let built_in = common(name).ok_or_else(|| bad(n, "unknown #import"))?;
                imported.push(name.to_string());
                let name = format!("common/{name}.wgsl");
                let source = text(&name, built_in)?;
                let file = Source {
                    name: &name,
                    params: src.params,
                };
                expand(&file, &source, defines, imported, out)?;
            }
        } else if let Some(args) = trimmed.strip_prefix("#tensor ") {
            // `#tensor NAME BINDING ACCESS [scalar]`: the template with this tensor's names.
            let args: Vec<&str> = args.split_whitespace().collect();
            let (name, binding, access) = match args[..] {
                [name, binding, access] | [name, binding, access, "scalar"] => {
                    (name, binding, access)
                }
                _ => return Err(bad(n, "#tensor NAME BINDING ACCESS [scalar]")),
            };
            if live {
                let code = value(defines, &format!("DTYPE_{name}")).unwrap_or(0);
                let vector = args.len() == 3 && defined(defines, "VEC4");
                let mut names: Vec<&str> = defines
                    .iter()
                    .copied()
                    .filter(|d| !["DT_F32", "DT_F16N", "DT_HALF", "TV4", "TW"].contains(d))
                    .collect();
                names.extend(tensor_defines(
                    code,
                    defined(defines, "NATIVE_F16"),
                    vector,
                    access == "read_write",
                ));
                let template = text("common/tensor.wgsl", common("tensor").expect("built in"))?;
                let file = Source {
                    name: "common/tensor.wgsl",
                    params: src.params,
                };
                let mut body = String::new();
                expand(&file, &template, &names, imported, &mut body)?;
                let h = if code == 2 { "bf16" } else { "f16" };
                out.push_str(
                    &body
                        .replace("$name", name)
                        .replace("$binding", binding)
                        .replace("$access", access)
                        .replace("$h", h),
                );
            }
        } else if let Some(what) = trimmed.strip_prefix("#enable ") {
            let key = format!("enable {}", what.trim());
            if live && !imported.contains(&key) {
                imported.push(key);
            }
        } else if trimmed == "#params" {
            if live {
                out.push_str(src.params);
                out.push_str("@group(0) @binding(0) var<uniform> params: Params;\n");
            }
        } else if let Some(name) = trimmed.strip_prefix("#expr ") {
            // `#expr NAME`: the text of the define `NAME=text` (a custom loss's expression,
            // checked by the host before it gets here), as a line of its own.
            let name = name.trim();
            if live {
                let text = defines
                    .iter()
                    .find_map(|d| d.strip_prefix(name).and_then(|t| t.strip_prefix('=')))
                    .ok_or_else(|| bad(n, "#expr of a name with no text"))?;
                out.push_str(text);
                out.push('\n');
            }
        } else if let Some(name) = trimmed.strip_prefix("#const ") {
            let name = name.trim();
            let v = value(defines, name).ok_or_else(|| bad(n, "#const of a name with no value"))?;
            if live {
                out.push_str(&format!("const {name}: u32 = {v}u;\n"));
            }
        } else if let Some(args) = trimmed.strip_prefix("#unroll ") {
            let (var, count) = args
                .trim()
                .split_once(' ')
                .ok_or_else(|| bad(n, "#unroll needs a variable and a count"))?;
            let end = (n + 1..lines.len())
                .find(|&i| lines[i].trim() == "#endunroll")
                .ok_or_else(|| bad(n, "#unroll without #endunroll"))?;
            if live {
                let count = value(defines, count.trim())
                    .ok_or_else(|| bad(n, "#unroll count has no value"))?;
                let mut body = String::new();
                expand(
                    src,
                    &lines[n + 1..end].join("\n"),
                    defines,
                    imported,
                    &mut body,
                )?;
                for i in 0..count {
                    out.push_str(&format!("{{ const {var}: u32 = {i}u;\n{body}}}\n"));
                }
            }
            n = end;
        } else if trimmed.starts_with('#') {
            return Err(bad(n, "unknown directive"));
        } else if live {
            out.push_str(line);
            out.push('\n');
        }
        n += 1;
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(bad(source.lines().count(), "#ifdef without #endif"))
    }
}

#[cfg(test)]
mod contracts;

#[cfg(test)]
mod tests {
    use super::*;

    const T: Source<'static> = Source {
        name: "t.wgsl",
        params: "struct Params {}\n",
    };

    #[test]
    fn conditionals_nest() {
        let src = "a\n#ifdef X\nb\n#ifndef Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf\n";
        let mut out = String::new();
        expand(&T, src, &["X"], &mut Vec::new(), &mut out).unwrap();
        assert_eq!(out, "a\nb\nc\nf\n");
        out.clear();
        expand(&T, src, &["X", "Y"], &mut Vec::new(), &mut out).unwrap();
        assert_eq!(out, "a\nb\nd\nf\n");
        out.clear();
        expand(&T, src, &[], &mut Vec::new(), &mut out).unwrap();
        assert_eq!(out, "a\ne\nf\n");
    }

    #[test]
    fn constants_and_unrolling() {
        let src = "#const K\n#unroll k K\n#ifdef X\nx[k] = 1;\n#endif\n#endunroll\nend\n";
        let mut out = String::new();
        expand(&T, src, &["K=2", "X"], &mut Vec::new(), &mut out).unwrap();
        assert_eq!(
            out,
            "const K: u32 = 2u;\n{ const k: u32 = 0u;\nx[k] = 1;\n}\n{ const k: u32 = 1u;\nx[k] = 1;\n}\nend\n"
        );
        let err = expand(&T, "#unroll k K\n", &["K=2"], &mut Vec::new(), &mut out).unwrap_err();
        assert!(err.to_string().contains("#endunroll"), "{err}");
        let err = expand(&T, "#const Q\n", &["Q"], &mut Vec::new(), &mut out).unwrap_err();
        assert!(err.to_string().contains("no value"), "{err}");
    }

    #[test]
    fn unbalanced_is_an_error() {
        let mut out = String::new();
        let err = expand(&T, "#ifdef X\n", &[], &mut Vec::new(), &mut out).unwrap_err();
        assert!(err.to_string().contains("t.wgsl"), "{err}");
        let err = expand(&T, "#endif\n", &[], &mut Vec::new(), &mut out).unwrap_err();
        assert!(err.to_string().contains("t.wgsl:1"), "{err}");
        out.clear();
        expand(&T, "a\n#params\nb\n", &[], &mut Vec::new(), &mut out).unwrap();
        assert_eq!(
            out,
            "a\nstruct Params {}\n@group(0) @binding(0) var<uniform> params: Params;\nb\n"
        );
    }
}
