//! Every shader, in every variant the host can ask for, parses and validates with naga (the
//! version wgpu uses). Needs no GPU.

use wgpu_loss::shader::{Shader, preprocess};

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

#[test]
fn every_shader_variant_validates() {
    let mut checked = 0;
    for shader in Shader::ALL {
        for defines in variants(shader.defines()) {
            // Without SUBGROUPS a variant must validate on a device without the capability.
            let caps = if defines.contains(&"SUBGROUPS") {
                naga::valid::Capabilities::all()
            } else {
                naga::valid::Capabilities::all()
                    - naga::valid::Capabilities::SUBGROUP
                    - naga::valid::Capabilities::SUBGROUP_BARRIER
            };
            let values: Vec<String> = if shader.values().is_empty() {
                vec![String::new()]
            } else {
                TILES.iter().map(|k| format!("K={k}")).collect()
            };
            for value in &values {
                let mut defines = defines.clone();
                if !value.is_empty() {
                    defines.push(value);
                }
                let source = preprocess(shader, &defines)
                    .unwrap_or_else(|e| panic!("shaders/{} {defines:?}: {e}", shader.file()));
                let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
                    panic!(
                        "shaders/{} {defines:?} does not parse:\n{}",
                        shader.file(),
                        e.emit_to_string(&source)
                    )
                });
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                    .validate(&module)
                    .unwrap_or_else(|e| {
                        panic!(
                            "shaders/{} {defines:?} does not validate:\n{}",
                            shader.file(),
                            e.emit_to_string(&source)
                        )
                    });
                checked += 1;
            }
        }
    }
    assert!(checked >= Shader::ALL.len() * 2);
}

#[test]
fn every_shader_names_its_cpu_twin() {
    for shader in Shader::ALL {
        let source = preprocess(shader, shader.values()).unwrap();
        // The leading comment block.
        let head: String = source
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            head.contains("CPU twin") && head.contains("src/"),
            "shaders/{} must say in its header which CPU twin it has",
            shader.file()
        );
    }
}
