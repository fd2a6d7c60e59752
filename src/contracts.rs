//! The contracts between the host and the kernels, checked with naga (the WGSL front end wgpu
//! uses), without a GPU: every shader, in every variant the host can ask for, parses and
//! validates; every binding it declares has the kind the host's layout gives it
//! ([`Kernel::layout`]); its `Params` lies in memory exactly as the Rust struct the host
//! fills (`params!`); and the mode codes it compares against are the host's (`modes!`: a name
//! the host does not define fails to parse).
//!
//! [`KERNELS`] is the one list that names every family's kernel.

use crate::engine::kernel::{Binding, Kernel};
use crate::engine::wgsl::preprocess;
use crate::families::{
    class_targets, cross_entropy, image, linear_cross_entropy, mix, nll, optim, pointwise,
};

/// Every kernel of the library.
const KERNELS: [&Kernel; 12] = [
    &pointwise::POINTWISE,
    &cross_entropy::CROSS_ENTROPY,
    &class_targets::CLASS_TARGETS,
    &nll::NLL,
    &crate::engine::program::REDUCE,
    &crate::bench::CEILING,
    &linear_cross_entropy::LINEAR_CROSS_ENTROPY,
    &crate::bench::linear::MATMUL,
    &optim::OPTIM,
    &mix::MIX,
    &image::IMAGE,
    &crate::bench::image::SSIM_UNFUSED,
];

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

/// The register tile sizes the host asks for: 1..=32 vec4s (the tunings' 8 and 32 included).
const TILES: [u32; 5] = [1, 3, 8, 17, 32];

/// The dtypes of the caller's tensors the host asks for (`DTYPE_*`, see
/// shaders/common/tensor.wgsl): all f32, all f16 (packed, and through WGSL's f16), all bf16,
/// and mixtures (16-bit inputs with an f32 gradient, f16 inputs with a bf16 one).
const DTYPES: [&[&str]; 6] = [
    &[],
    &[
        "DTYPE_x=1",
        "DTYPE_lw=1",
        "DTYPE_t=1",
        "DTYPE_y=1",
        "DTYPE_grad=1",
    ],
    &[
        "DTYPE_x=1",
        "DTYPE_lw=1",
        "DTYPE_t=1",
        "DTYPE_y=1",
        "DTYPE_grad=1",
        "NATIVE_F16",
    ],
    &[
        "DTYPE_x=2",
        "DTYPE_lw=2",
        "DTYPE_t=2",
        "DTYPE_y=2",
        "DTYPE_grad=2",
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
        "NATIVE_F16",
    ],
];

/// Every variant of `kernel` (defines, dtypes and preprocessor values), parsed.
fn modules(kernel: &Kernel) -> Vec<(Vec<&'static str>, String, naga::Module)> {
    let mut out = Vec::new();
    for defines in variants(kernel.defines) {
        // K (cross-entropy's registers) in every size the host asks for; the values of another
        // file as given, together.
        let values: Vec<Vec<String>> = match kernel.values {
            ["K=3"] => TILES.iter().map(|k| vec![format!("K={k}")]).collect(),
            given => vec![given.iter().map(|v| v.to_string()).collect()],
        };
        for (value, dtypes) in values.iter().flat_map(|v| DTYPES.map(|d| (v, d))) {
            let mut names: Vec<&str> = defines.clone();
            names.extend(dtypes);
            names.extend(value.iter().map(String::as_str));
            let source = preprocess(kernel, &names)
                .unwrap_or_else(|e| panic!("shaders/{} {names:?}: {e}", kernel.file));
            let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
                panic!(
                    "shaders/{} {names:?} does not parse:\n{}",
                    kernel.file,
                    e.emit_to_string(&source)
                )
            });
            let mut defines = defines.clone();
            defines.extend(dtypes);
            out.push((defines, source, module));
        }
    }
    out
}

#[test]
fn every_shader_variant_validates() {
    let mut checked = 0;
    for kernel in KERNELS {
        for (defines, source, module) in modules(kernel) {
            // Without SUBGROUPS (NATIVE_F16) a variant must validate on a device without
            // subgroups (f16).
            let mut caps = naga::valid::Capabilities::all();
            if !defines.contains(&"SUBGROUPS") {
                caps -= naga::valid::Capabilities::SUBGROUP
                    | naga::valid::Capabilities::SUBGROUP_BARRIER;
            }
            if !defines.contains(&"NATIVE_F16") {
                caps -= naga::valid::Capabilities::SHADER_FLOAT16;
            }
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| {
                    panic!(
                        "shaders/{} {defines:?} does not validate:\n{}",
                        kernel.file,
                        e.emit_to_string(&source)
                    )
                });
            checked += 1;
        }
    }
    assert!(checked >= KERNELS.len() * 2);
}

#[test]
fn bindings_match_the_host_layouts() {
    for kernel in KERNELS {
        for (defines, _, module) in modules(kernel) {
            let names: Vec<String> = defines.iter().map(|d| d.to_string()).collect();
            let layout = (kernel.layout)(&names);
            let what = format!("shaders/{} {defines:?}", kernel.file);
            let mut seen = vec![false; layout.len()];
            for (_, var) in module.global_variables.iter() {
                let Some(rb) = &var.binding else { continue };
                let name = var.name.as_deref().unwrap_or("?");
                assert_eq!(rb.group, 0, "{what}: `{name}` is not in bind group 0");
                let i = rb.binding as usize;
                let expected = layout.get(i).unwrap_or_else(|| {
                    panic!("{what}: `{name}` at binding {i}, past the host's {layout:?}")
                });
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
                            other => panic!("{what}: `{name}` is a storage texture of {other:?}"),
                        }),
                        ref other => panic!("{what}: `{name}` is a {other:?}"),
                    },
                    other => panic!("{what}: `{name}` is bound in {other:?}"),
                };
                assert_eq!(actual, *expected, "{what}: binding {i} (`{name}`)");
                assert!(!seen[i], "{what}: binding {i} declared twice");
                seen[i] = true;
            }
            // The host may bind more than a variant declares (wgpu allows it: in place,
            // cross-entropy's binding 5 holds a dummy the kernel never names).
        }
    }
}

#[test]
fn params_match_the_host_structs() {
    for kernel in KERNELS {
        let (fields, size) = (kernel.params.fields.to_vec(), kernel.params.size);
        for (defines, _, module) in modules(kernel) {
            let what = format!("shaders/{} {defines:?}", kernel.file);
            let (_, params) = module
                .global_variables
                .iter()
                .find(|(_, v)| v.name.as_deref() == Some("params"))
                .unwrap_or_else(|| panic!("{what}: no `params`"));
            assert_eq!(params.space, naga::AddressSpace::Uniform, "{what}");
            let naga::TypeInner::Struct { members, span } = &module.types[params.ty].inner else {
                panic!("{what}: `params` is not a struct");
            };
            let wgsl: Vec<(&str, usize)> = members
                .iter()
                .map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize))
                .collect();
            assert_eq!(wgsl, fields, "{what}: field names and offsets");
            assert_eq!(*span as usize, size, "{what}: size");
            assert!(
                size.is_multiple_of(16),
                "{what}: a uniform's size is whole 16 bytes"
            );
        }
    }
}

#[test]
fn every_shader_names_its_cpu_twin() {
    for kernel in KERNELS {
        let source = preprocess(kernel, kernel.values).unwrap();
        // The leading comment block.
        let head: String = source
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            head.contains("CPU twin") && head.contains("src/"),
            "shaders/{} must say in its header which CPU twin it has",
            kernel.file
        );
    }
}
