//! WGSL sources and the tiny preprocessor that assembles them.
//!
//! Each kernel family has one file in `shaders/`; helpers shared between families live in
//! `shaders/common/` and are spliced in with `#import name`. Variants of a kernel (vec4 or
//! scalar bindings, in-place, with or without subgroup operations) are chosen with
//! `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` on the names the host defines; numeric
//! choices are WGSL `override` constants, given at pipeline creation.

use crate::{Error, Result};

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
    /// `shaders/reduce.wgsl`: fixed-order sums of partials.
    Reduce,
}

impl Shader {
    /// Every kernel family.
    pub const ALL: [Shader; 4] = [
        Shader::Pointwise,
        Shader::CrossEntropy,
        Shader::ClassTargets,
        Shader::Reduce,
    ];

    /// The file name under `shaders/`.
    pub fn file(self) -> &'static str {
        match self {
            Shader::Pointwise => "pointwise.wgsl",
            Shader::CrossEntropy => "cross_entropy.wgsl",
            Shader::ClassTargets => "class_targets.wgsl",
            Shader::Reduce => "reduce.wgsl",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Shader::Pointwise => include_str!("../shaders/pointwise.wgsl"),
            Shader::CrossEntropy => include_str!("../shaders/cross_entropy.wgsl"),
            Shader::ClassTargets => include_str!("../shaders/class_targets.wgsl"),
            Shader::Reduce => include_str!("../shaders/reduce.wgsl"),
        }
    }

    /// The preprocessor names this file reacts to; every subset is a variant the host may ask
    /// for (the shader validation test walks them all).
    pub fn defines(self) -> &'static [&'static str] {
        match self {
            Shader::Pointwise => &["VEC4", "SUBGROUPS"],
            Shader::CrossEntropy => &["VEC4", "INPLACE", "SUBGROUPS"],
            Shader::ClassTargets | Shader::Reduce => &["SUBGROUPS"],
        }
    }
}

/// The files of `shaders/common/`, spliced in by `#import name`.
fn common(name: &str) -> Option<&'static str> {
    match name {
        "scratch" => Some(include_str!("../shaders/common/scratch.wgsl")),
        "segment" => Some(include_str!("../shaders/common/segment.wgsl")),
        _ => None,
    }
}

/// Assembles `shader` for the given defines: imports spliced in (each once), conditional
/// blocks resolved. Errors name the file and line.
pub fn preprocess(shader: Shader, defines: &[&str]) -> Result<String> {
    let mut out = String::new();
    let mut imported = Vec::new();
    expand(
        shader.file(),
        shader.source(),
        defines,
        &mut imported,
        &mut out,
    )?;
    Ok(out)
}

fn expand(
    file: &str,
    source: &str,
    defines: &[&str],
    imported: &mut Vec<String>,
    out: &mut String,
) -> Result<()> {
    // One entry per open #if: (this branch is taken, an enclosing branch is taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let bad = |line: usize, what: &str| Error::Wgpu(format!("{file}:{}: {what}", line + 1));
    for (n, line) in source.lines().enumerate() {
        let trimmed = line.trim();
        let live = stack.last().is_none_or(|&(taken, outer)| taken && outer);
        if let Some(name) = trimmed.strip_prefix("#ifdef ") {
            stack.push((defines.contains(&name.trim()), live));
        } else if let Some(name) = trimmed.strip_prefix("#ifndef ") {
            stack.push((!defines.contains(&name.trim()), live));
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
                let text = common(name).ok_or_else(|| bad(n, "unknown #import"))?;
                imported.push(name.to_string());
                expand(&format!("common/{name}.wgsl"), text, defines, imported, out)?;
            }
        } else if trimmed.starts_with('#') {
            return Err(bad(n, "unknown directive"));
        } else if live {
            out.push_str(line);
            out.push('\n');
        }
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

    #[test]
    fn conditionals_nest() {
        let src = "a\n#ifdef X\nb\n#ifndef Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf\n";
        let mut out = String::new();
        expand("t", src, &["X"], &mut Vec::new(), &mut out).unwrap();
        assert_eq!(out, "a\nb\nc\nf\n");
        out.clear();
        expand("t", src, &["X", "Y"], &mut Vec::new(), &mut out).unwrap();
        assert_eq!(out, "a\nb\nd\nf\n");
        out.clear();
        expand("t", src, &[], &mut Vec::new(), &mut out).unwrap();
        assert_eq!(out, "a\ne\nf\n");
    }

    #[test]
    fn unbalanced_is_an_error() {
        let mut out = String::new();
        let err = expand("t.wgsl", "#ifdef X\n", &[], &mut Vec::new(), &mut out).unwrap_err();
        assert!(err.to_string().contains("t.wgsl"), "{err}");
        let err = expand("t.wgsl", "#endif\n", &[], &mut Vec::new(), &mut out).unwrap_err();
        assert!(err.to_string().contains("t.wgsl:1"), "{err}");
    }
}
