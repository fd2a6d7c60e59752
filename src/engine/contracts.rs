//! The contracts between the host and a kernel, checked with naga (the WGSL front end wgpu
//! uses), without a GPU: the kernel, in every variant the host can ask for, parses and
//! validates; every binding it declares has the kind the host's layout gives it
//! ([`Kernel::layout`]); its `Params` lies in memory exactly as the Rust struct the host fills
//! (`params!`); the mode codes it compares against are the host's (`modes!`: a name the host
//! does not define fails to parse); and its header names its CPU twin.

use super::kernel::{Binding, Kernel};
use super::wgsl::preprocess;

/// Every subset of `defines`.
fn variants(defines: &[&'static str]) -> Vec<Vec<&'static str>> {
    (0..1u32 << defines.len())
        .map(|mask| {
            defines
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, d)| *d)
                .collect()
        })
        .collect()
}

/// Every combination of the kernel's values: `NAME=a|b|c` takes each of `a`, `b`, `c` in turn.
fn value_sets(values: &[&str]) -> Vec<Vec<String>> {
    let mut sets = vec![Vec::new()];
    for v in values {
        let choices: Vec<String> = match v.split_once('=') {
            Some((name, alts)) if alts.contains('|') && !alts.contains(' ') => {
                alts.split('|').map(|a| format!("{name}={a}")).collect()
            }
            _ => vec![v.to_string()],
        };
        sets = sets
            .into_iter()
            .flat_map(|set| {
                choices.iter().map(move |c| {
                    let mut s = set.clone();
                    s.push(c.clone());
                    s
                })
            })
            .collect();
    }
    sets
}

/// The dtypes of the caller's tensors the host asks for (`DTYPE_*`, see
/// shaders/common/tensor.wgsl): all f32, all f16 (packed, and through WGSL's f16), all bf16,
/// and mixtures (16-bit inputs with an f32 gradient, f16 inputs with a bf16 one). `DTYPE_gw`
/// follows the gradient's (the fused loss's narrowing pass writes it).
const DTYPES: [&[&str]; 6] = [
    &[],
    &[
        "DTYPE_x=1",
        "DTYPE_lw=1",
        "DTYPE_t=1",
        "DTYPE_y=1",
        "DTYPE_grad=1",
        "DTYPE_gw=1",
    ],
    &[
        "DTYPE_x=1",
        "DTYPE_lw=1",
        "DTYPE_t=1",
        "DTYPE_y=1",
        "DTYPE_grad=1",
        "DTYPE_gw=1",
        "NATIVE_F16",
    ],
    &[
        "DTYPE_x=2",
        "DTYPE_lw=2",
        "DTYPE_t=2",
        "DTYPE_y=2",
        "DTYPE_grad=2",
        "DTYPE_gw=2",
    ],
    &[
        "DTYPE_x=2",
        "DTYPE_lw=2",
        "DTYPE_t=2",
        "DTYPE_y=2",
        "NATIVE_F16",
    ],
    &[
        "DTYPE_x=1",
        "DTYPE_lw=1",
        "DTYPE_t=1",
        "DTYPE_y=1",
        "DTYPE_grad=2",
        "DTYPE_gw=2",
        "NATIVE_F16",
    ],
];

/// Checks every contract of `kernel` in every variant (every subset of its defines, every
/// dtype mixture, every combination of its values): returns how many variants it checked, or
/// the first broken contract, naming the file and the variant.
pub fn check(kernel: &Kernel) -> Result<usize, String> {
    header_names_twin(kernel)?;
    let mut checked = 0;
    for defines in variants(kernel.defines) {
        for (values, dtypes) in value_sets(kernel.values)
            .iter()
            .flat_map(|v| DTYPES.map(|d| (v, d)))
        {
            let mut names: Vec<&str> = defines.clone();
            names.extend(dtypes);
            names.extend(values.iter().map(String::as_str));
            let what = format!("shaders/{} {names:?}", kernel.file);
            let source = preprocess(kernel, &names, None).map_err(|e| format!("{what}: {e}"))?;
            let module = naga::front::wgsl::parse_str(&source)
                .map_err(|e| format!("{what} does not parse:\n{}", e.emit_to_string(&source)))?;
            // Without SUBGROUPS (NATIVE_F16) a variant must validate on a device without
            // subgroups (f16).
            let mut caps = naga::valid::Capabilities::all();
            if !names.contains(&"SUBGROUPS") {
                caps -= naga::valid::Capabilities::SUBGROUP
                    | naga::valid::Capabilities::SUBGROUP_BARRIER;
            }
            if !names.contains(&"NATIVE_F16") {
                caps -= naga::valid::Capabilities::SHADER_FLOAT16;
            }
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .validate(&module)
                .map_err(|e| format!("{what} does not validate:\n{}", e.emit_to_string(&source)))?;
            let mut layout_defines: Vec<String> = defines.iter().map(|d| d.to_string()).collect();
            layout_defines.extend(dtypes.iter().map(|d| d.to_string()));
            layout_defines.extend(values.iter().cloned());
            bindings_match(kernel, &layout_defines, &module, &what)?;
            params_match(kernel, &module, &what)?;
            checked += 1;
        }
    }
    Ok(checked)
}

/// Every binding the module declares has the kind the host's layout gives it.
fn bindings_match(
    kernel: &Kernel,
    defines: &[String],
    module: &naga::Module,
    what: &str,
) -> Result<(), String> {
    let layout = (kernel.layout)(defines);
    let mut seen = vec![false; layout.len()];
    for (_, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        let name = var.name.as_deref().unwrap_or("?");
        if rb.group != 0 {
            return Err(format!("{what}: `{name}` is not in bind group 0"));
        }
        let i = rb.binding as usize;
        let expected = layout.get(i).ok_or_else(|| {
            format!("{what}: `{name}` at binding {i}, past the host's {layout:?}")
        })?;
        let actual = match var.space {
            naga::AddressSpace::Uniform => Binding::Uniform,
            naga::AddressSpace::Storage { access }
                if access.contains(naga::StorageAccess::STORE) =>
            {
                Binding::ReadWrite
            }
            naga::AddressSpace::Storage { .. } => Binding::Read,
            naga::AddressSpace::Handle => match module.types[var.ty].inner {
                naga::TypeInner::Image {
                    class: naga::ImageClass::Sampled { .. },
                    dim: naga::ImageDimension::D2,
                    arrayed: false,
                } => Binding::Texture,
                naga::TypeInner::Image {
                    class: naga::ImageClass::Storage { format, .. },
                    dim: naga::ImageDimension::D2,
                    arrayed: false,
                } => Binding::StorageTexture(match format {
                    naga::StorageFormat::Rgba32Float => wgpu::TextureFormat::Rgba32Float,
                    naga::StorageFormat::Rgba16Float => wgpu::TextureFormat::Rgba16Float,
                    naga::StorageFormat::R32Float => wgpu::TextureFormat::R32Float,
                    other => {
                        return Err(format!(
                            "{what}: `{name}` is a storage texture of {other:?}"
                        ));
                    }
                }),
                ref other => return Err(format!("{what}: `{name}` is a {other:?}")),
            },
            other => return Err(format!("{what}: `{name}` is bound in {other:?}")),
        };
        if actual != *expected {
            return Err(format!(
                "{what}: binding {i} (`{name}`) is {actual:?}, the host's {expected:?}"
            ));
        }
        if seen[i] {
            return Err(format!("{what}: binding {i} declared twice"));
        }
        seen[i] = true;
    }
    // The host may bind more than a variant declares (wgpu allows it: in place,
    // cross-entropy's binding 5 holds a dummy the kernel never names).
    Ok(())
}

/// `params` is the uniform struct the host's `Params` lays out, field by field.
fn params_match(kernel: &Kernel, module: &naga::Module, what: &str) -> Result<(), String> {
    let (_, params) = module
        .global_variables
        .iter()
        .find(|(_, v)| v.name.as_deref() == Some("params"))
        .ok_or_else(|| format!("{what}: no `params`"))?;
    if params.space != naga::AddressSpace::Uniform {
        return Err(format!("{what}: `params` is not a uniform"));
    }
    let naga::TypeInner::Struct { members, span } = &module.types[params.ty].inner else {
        return Err(format!("{what}: `params` is not a struct"));
    };
    let wgsl: Vec<(&str, usize)> = members
        .iter()
        .map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize))
        .collect();
    if wgsl != kernel.params.fields {
        return Err(format!(
            "{what}: field names and offsets {wgsl:?}, the host's {:?}",
            kernel.params.fields
        ));
    }
    if *span as usize != kernel.params.size {
        return Err(format!(
            "{what}: {span} bytes, the host's {}",
            kernel.params.size
        ));
    }
    if !kernel.params.size.is_multiple_of(16) {
        return Err(format!("{what}: a uniform's size is whole 16 bytes"));
    }
    Ok(())
}

/// The leading comment block names the kernel's CPU twin.
fn header_names_twin(kernel: &Kernel) -> Result<(), String> {
    let head: String = kernel
        .source
        .lines()
        .take_while(|l| l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    if head.contains("CPU twin") {
        Ok(())
    } else {
        Err(format!(
            "shaders/{} must say in its header which CPU twin it has",
            kernel.file
        ))
    }
}
