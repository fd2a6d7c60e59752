//! `wgpu-loss info`.

use super::{adapter_json, context};

pub fn run(json: bool) -> Result<(), String> {
    let ctx = context()?;
    let info = ctx.adapter_info();
    let limits = ctx.limits();
    let features = ctx.features();
    let feature_list: Vec<(&str, bool)> = [
        ("SUBGROUP", wgpu::Features::SUBGROUP),
        ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
        ("SHADER_F16", wgpu::Features::SHADER_F16),
    ]
    .into_iter()
    .map(|(name, f)| (name, features.contains(f)))
    .collect();
    let limit_list = [
        (
            "max_storage_buffer_binding_size",
            limits.max_storage_buffer_binding_size,
        ),
        ("max_buffer_size", limits.max_buffer_size),
        (
            "max_compute_workgroups_per_dimension",
            limits.max_compute_workgroups_per_dimension as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            limits.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroup_storage_size",
            limits.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_storage_buffers_per_shader_stage",
            limits.max_storage_buffers_per_shader_stage as u64,
        ),
    ];
    if json {
        let mut v = adapter_json(&ctx);
        v["subgroup_sizes"] = serde_json::json!([info.subgroup_min_size, info.subgroup_max_size]);
        v["reductions_use_subgroups"] = ctx.uses_subgroups().into();
        v["features"] = feature_list
            .iter()
            .map(|&(n, on)| (n.to_string(), on.into()))
            .collect::<serde_json::Map<_, _>>()
            .into();
        v["limits"] = limit_list
            .iter()
            .map(|&(n, l)| (n.to_string(), l.into()))
            .collect::<serde_json::Map<_, _>>()
            .into();
        v["max_f32_per_binding"] = (ctx.max_binding_bytes() / 4).into();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("adapter   {}", info.name);
    println!("backend   {} ({:?})", info.backend, info.device_type);
    println!("driver    {} {}", info.driver, info.driver_info);
    println!(
        "subgroups {}..{} (reductions {} them)",
        info.subgroup_min_size,
        info.subgroup_max_size,
        if ctx.uses_subgroups() {
            "use"
        } else {
            "do not use"
        }
    );
    for (name, on) in feature_list {
        println!("feature   {name:<40} {}", if on { "yes" } else { "no" });
    }
    for (name, value) in limit_list {
        println!("limit     {name:<40} {value}");
    }
    println!(
        "largest input: {} f32 per buffer",
        ctx.max_binding_bytes() / 4
    );
    Ok(())
}
