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

#[test]
fn every_shader_variant_validates() {
    let mut checked = 0;
    for shader in Shader::ALL {
        for mut defines in variants(shader.defines()) {
            defines.extend_from_slice(shader.values());
            let source = preprocess(shader, &defines)
                .unwrap_or_else(|e| panic!("shaders/{} {defines:?}: {e}", shader.file()));
            let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
                panic!(
                    "shaders/{} {defines:?} does not parse:\n{}",
                    shader.file(),
                    e.emit_to_string(&source)
                )
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
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
    assert!(checked >= Shader::ALL.len());
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
