//! WGSL sources and the tiny preprocessor that assembles them.
//!
//! Each kernel family has one file in `shaders/`; helpers shared between families live in
//! `shaders/common/` and are spliced in with `#import name`. Variants of a kernel (vec4 or
//! scalar bindings, in-place, with or without subgroup operations) are chosen with
//! `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` on the names the host defines; numeric
//! choices are WGSL `override` constants, given at pipeline creation.

use super::kernel::{FinalMode, Kernel, ScaleMode};
use crate::error::{Error, Result};

/// The files of `shaders/common/`, spliced in by `#import name`.
fn common(name: &str) -> Option<&'static str> {
    match name {
        "scratch" => Some(include_str!("../../shaders/common/scratch.wgsl")),
        "segment" => Some(include_str!("../../shaders/common/segment.wgsl")),
        "math" => Some(include_str!("../../shaders/common/math.wgsl")),
        "outputs" => Some(include_str!("../../shaders/common/outputs.wgsl")),
        "half" => Some(include_str!("../../shaders/common/half.wgsl")),
        "tensor" => Some(include_str!("../../shaders/common/tensor.wgsl")),
        "classes" => Some(include_str!("../../shaders/common/classes.wgsl")),
        "elementwise" => Some(include_str!("../../shaders/common/elementwise.wgsl")),
        "stream" => Some(include_str!("../../shaders/common/stream.wgsl")),
        "tile_matmul" => Some(include_str!("../../shaders/common/tile_matmul.wgsl")),
        _ => None,
    }
}

/// The text of `file` (relative to `shaders/`): from `dir` when the context was given one
/// (`ContextOptions::shader_dir`, for experiments with kernels), else `built_in`. The library
/// reads no environment variable for it.
fn text(
    file: &str,
    built_in: &'static str,
    dir: Option<&std::path::Path>,
) -> Result<std::borrow::Cow<'static, str>> {
    match dir {
        Some(dir) => {
            let path = dir.join(file);
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
///
/// `dir`: a directory (a checkout's `shaders/`) to read the kernel's file and its `common/`
/// imports from instead of the built-in copies.
pub fn preprocess(
    kernel: &Kernel,
    defines: &[&str],
    dir: Option<&std::path::Path>,
) -> Result<String> {
    let mut out = String::new();
    let mut imported = Vec::new();
    let source = text(kernel.file, kernel.source, dir)?;
    let params: String = std::iter::once(kernel.params.wgsl)
        .chain(kernel.consts.iter().copied())
        .collect();
    let file = Source {
        name: kernel.file,
        params: &params,
        dir,
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
    /// Where the WGSL is read from instead of the built-in copies (see [`preprocess`]).
    dir: Option<&'a std::path::Path>,
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
                if name == "outputs" {
                    out.push_str(ScaleMode::WGSL);
                    out.push_str(FinalMode::WGSL);
                }
                let name = format!("common/{name}.wgsl");
                let source = text(&name, built_in, src.dir)?;
                let file = Source {
                    name: &name,
                    params: src.params,
                    dir: src.dir,
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
                let built_in = common("tensor").expect("built in");
                let template = text("common/tensor.wgsl", built_in, src.dir)?;
                let file = Source {
                    name: "common/tensor.wgsl",
                    params: src.params,
                    dir: src.dir,
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
            // Only where taken: a branch may name a value only its own variants have.
            if live {
                let v =
                    value(defines, name).ok_or_else(|| bad(n, "#const of a name with no value"))?;
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
mod tests {
    use super::*;

    const T: Source<'static> = Source {
        name: "t.wgsl",
        params: "struct Params {}\n",
        dir: None,
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
