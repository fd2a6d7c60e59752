//! `bench --loss linear-cross-entropy`: the fused loss against the unfused path (the crate's
//! matmul to logits, its cross-entropy kernel, the gradients' matmuls) on the same adapter in
//! the same run: time, the extra device memory each allocates, and FLOP rates against the
//! trivial matmul's.

use std::path::Path;

use wgpu_loss::Context;
use wgpu_loss_bench::{LinearBench, LinearShape, Timing};

use super::{BenchArgs, adapter_json, timing_json};

/// The shapes of `--linear-shapes`.
pub fn shapes(a: &BenchArgs) -> Result<Vec<LinearShape>, String> {
    a.linear_shapes
        .iter()
        .map(|s| {
            let dims: Vec<usize> = s
                .split('x')
                .map(|d| d.trim().parse().ok().filter(|&d: &usize| d > 0))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    format!("--linear-shapes: {s:?} is not NxDxV (e.g. 4096x512x32000)")
                })?;
            match dims[..] {
                [rows, dim, vocab] => Ok(LinearShape { rows, dim, vocab }),
                _ => Err(format!("--linear-shapes: {s:?} is not NxDxV")),
            }
        })
        .collect()
}

/// One shape, measured.
struct Measured {
    shape: LinearShape,
    fused: Timing,
    unfused: Timing,
    matmul: Timing,
    fused_bytes: u64,
    unfused_bytes: u64,
    /// The two paths' losses (a check that they computed the same thing).
    losses: [f32; 2],
}

impl Measured {
    fn gflops(&self, t: &Timing, flops: f64) -> f64 {
        flops / t.median() / 1e9
    }
}

pub fn run(ctx: &Context, a: &BenchArgs) -> Result<(), String> {
    let mut rows = Vec::new();
    for shape in shapes(a)? {
        let what = format!("{}x{}x{}", shape.rows, shape.dim, shape.vocab);
        let fail = |e: wgpu_loss::Error| format!("linear-cross-entropy {what}: {e}");
        eprintln!("linear-cross-entropy {what} ...");
        let bench = LinearBench::new(ctx, shape, 1).map_err(fail)?;
        let [fused, unfused] = bench.results().map_err(fail)?;
        let (warmup, reps) = (a.warmup.min(1), a.linear_reps);
        rows.push(Measured {
            shape,
            fused: bench.time_fused(warmup, reps).map_err(fail)?,
            unfused: bench.time_unfused(warmup, reps).map_err(fail)?,
            matmul: bench.time_matmul(warmup, reps).map_err(fail)?,
            fused_bytes: bench.fused_bytes(),
            unfused_bytes: bench.unfused_bytes(),
            losses: [fused.loss, unfused.loss],
        });
    }
    let table = table(ctx, &rows, a.linear_reps);
    println!("{table}");
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "crate": "wgpu-loss",
            "version": env!("CARGO_PKG_VERSION"),
            "adapter": adapter_json(ctx),
            "reps": a.linear_reps,
            "linear_cross_entropy": rows.iter().map(|r| {
                let s = r.shape;
                serde_json::json!({
                    "rows": s.rows, "dim": s.dim, "vocab": s.vocab,
                    "fused": timing_json(&r.fused, 0),
                    "unfused": timing_json(&r.unfused, 0),
                    "matmul": timing_json(&r.matmul, 0),
                    "fused_extra_bytes": r.fused_bytes,
                    "unfused_extra_bytes": r.unfused_bytes,
                    "flops": s.flops(),
                    "fused_flops_executed": s.fused_flops(),
                    "loss_fused": r.losses[0],
                    "loss_unfused": r.losses[1],
                })
            }).collect::<Vec<_>>(),
        });
        super::write_json(&path.with_extension("linear.json"), &v)?;
    }
    if let Some(path) = &a.readme {
        write_readme(path, &table)?;
    }
    Ok(())
}

/// Bytes in MB, with enough digits for a plan's few kilobytes.
fn mb(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    if mb < 1.0 {
        format!("{mb:.3}")
    } else {
        format!("{mb:.1}")
    }
}

fn table(ctx: &Context, rows: &[Measured], reps: usize) -> String {
    let info = ctx.adapter_info();
    let mut t = format!(
        "Measured by `wgpu-loss bench --loss linear-cross-entropy` on {} ({}, {} {}); \
         median of {reps} repetitions by the wall clock (submit to done), both paths in the same \
         run on the same adapter, f32, mean reduction, loss and the gradients of the hidden \
         states and the weight. Extra memory: what each path allocates beyond the inputs and \
         outputs they share. GFLOP/s count 6 N D V (the logits and the two gradients' products); \
         the fused kernels execute 10 N D V (they recompute the logits twice).\n\n\
         | N × D × V | fused ms | unfused ms | unfused / fused | fused extra MB | unfused extra MB | \
         fused GFLOP/s | matmul GFLOP/s | fused / matmul | loss fused / unfused |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        info.name, info.backend, info.driver, info.driver_info,
    );
    for r in rows {
        let s = r.shape;
        let fused = r.gflops(&r.fused, s.flops());
        let matmul = r.gflops(&r.matmul, 2.0 * s.flops() / 6.0);
        t.push_str(&format!(
            "| {} × {} × {} | {:.0} | {:.0} | {:.2} | {} | {} | {:.1} | {:.1} | {:.0}% | {} / {} |\n",
            s.rows,
            s.dim,
            s.vocab,
            1e3 * r.fused.median(),
            1e3 * r.unfused.median(),
            r.unfused.median() / r.fused.median(),
            mb(r.fused_bytes),
            mb(r.unfused_bytes),
            fused,
            matmul,
            100.0 * fused / matmul,
            r.losses[0],
            r.losses[1],
        ));
    }
    t
}

const START: &str = "<!-- linear:start -->";
const END: &str = "<!-- linear:end -->";

fn write_readme(path: &Path, table: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(i), Some(j)) = (text.find(START), text.find(END)) else {
        return Err(format!("{}: no {START} ... {END} markers", path.display()));
    };
    let out = format!("{}{START}\n{table}{}", &text[..i], &text[j..]);
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
}
