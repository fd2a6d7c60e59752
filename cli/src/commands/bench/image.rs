//! `bench --loss image`: SSIM and the photometric loss, forward and forward + gradient, against
//! the five-convolution form of SSIM and the trivial kernels of the same access pattern, on the
//! same adapter in the same run.

use std::path::Path;

use wgpu_loss::{Context, image::ImageLoss};
use wgpu_loss_bench::{Ceilings, ImageBench, ImageShape, Timing};

use super::{BenchArgs, adapter_json, timing_json};

/// The shapes of `--image-sizes` (WxH, RGB).
pub fn shapes(a: &BenchArgs) -> Result<Vec<ImageShape>, String> {
    a.image_sizes
        .iter()
        .map(|s| {
            let dims: Vec<usize> = s
                .split('x')
                .map(|d| d.trim().parse().ok().filter(|&d: &usize| d > 0))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("--image-sizes: {s:?} is not WxH (e.g. 1920x1080)"))?;
            match dims[..] {
                [w, h] => Ok(ImageShape { h, w, c: 3 }),
                _ => Err(format!("--image-sizes: {s:?} is not WxH")),
            }
        })
        .collect()
}

/// One shape and pass, measured.
struct Measured {
    shape: ImageShape,
    grad: bool,
    ssim: Timing,
    photometric: Timing,
    unfused: Timing,
    ceilings: Ceilings,
    /// Mean SSIM from the fused kernel and from the five-convolution form.
    means: (f32, f64),
    /// With the gradient: the largest difference of the two paths' gradients, relative to the
    /// fused one's largest magnitude.
    grad_difference: Option<f64>,
}

pub fn run(ctx: &Context, a: &BenchArgs) -> Result<(), String> {
    let mut rows = Vec::new();
    let (warmup, reps) = (a.warmup.min(1), a.image_reps);
    for shape in shapes(a)? {
        let what = format!("{}x{}", shape.w, shape.h);
        let fail = |e: wgpu_loss::Error| format!("image {what}: {e}");
        let bench = ImageBench::new(ctx, shape, 7).map_err(fail)?;
        let fused_mean = bench.fused_ssim().map_err(fail)?;
        for grad in [false, true] {
            eprintln!("image {what} {} ...", if grad { "fwd+grad" } else { "fwd" });
            let (unfused, unfused_mean, grad_difference) =
                bench.unfused(grad, warmup, reps).map_err(fail)?;
            rows.push(Measured {
                shape,
                grad,
                ssim: bench
                    .fused(ImageLoss::Ssim, grad, warmup, reps)
                    .map_err(fail)?,
                photometric: bench
                    .fused(ImageLoss::Photometric, grad, warmup, reps)
                    .map_err(fail)?,
                unfused,
                ceilings: bench.ceilings(grad, warmup, reps.max(10)).map_err(fail)?,
                means: (fused_mean, unfused_mean),
                grad_difference,
            });
        }
    }
    let table = table(ctx, &rows, reps);
    println!("{table}");
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "crate": "wgpu-loss",
            "version": env!("CARGO_PKG_VERSION"),
            "adapter": adapter_json(ctx),
            "reps": reps,
            "image": rows.iter().map(|r| {
                let bytes = r.shape.bytes(r.grad);
                serde_json::json!({
                    "width": r.shape.w, "height": r.shape.h, "channels": r.shape.c,
                    "pass": if r.grad { "fwd+grad" } else { "fwd" },
                    "least_bytes": bytes,
                    "ssim": timing_json(&r.ssim, bytes),
                    "photometric": timing_json(&r.photometric, bytes),
                    "five_convolutions": timing_json(&r.unfused, bytes),
                    "trivial": timing_json(&r.ceilings.trivial, bytes),
                    "trivial_kind": r.ceilings.trivial_kind,
                    "copy_buffer": timing_json(&r.ceilings.copy, bytes),
                    "ssim_fused": r.means.0,
                    "ssim_five_convolutions": r.means.1,
                    "grad_difference": r.grad_difference,
                })
            }).collect::<Vec<_>>(),
        });
        super::write_json(&path.with_extension("image.json"), &v)?;
    }
    if let Some(path) = &a.readme {
        write_readme(path, &table)?;
    }
    Ok(())
}

fn table(ctx: &Context, rows: &[Measured], reps: usize) -> String {
    let info = ctx.adapter_info();
    let method = rows.first().map_or("", |r| r.ssim.method.name());
    let mut t = format!(
        "Measured by `wgpu-loss bench --loss image` on {} ({}, {} {}); median of {reps} \
         repetitions ({method}), every path in the same run on the same adapter, one RGB image \
         in f32 buffers, mean reduction, padding same. GB/s count the least traffic (prediction \
         and target read once, the gradient written once). The trivial kernel reads the same \
         bytes (and writes the gradient's) and does nothing else; five convolutions is SSIM \
         through memory (each statistic two 1-D passes, then elementwise passes: 12 dispatches \
         forward, 22 with the gradient).\n\n\
         | image | pass | SSIM ms | photometric ms | five convolutions ms | trivial ms | \
         copy_buffer ms | SSIM GB/s | trivial / SSIM | five conv. / SSIM | mean SSIM fused / five conv. |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        info.name, info.backend, info.driver, info.driver_info,
    );
    for r in rows {
        let bytes = r.shape.bytes(r.grad);
        let ms = |t: &Timing| 1e3 * t.median();
        t.push_str(&format!(
            "| {} × {} × 3 | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1}% | {:.2}× | {:.6} / {:.6} |\n",
            r.shape.w,
            r.shape.h,
            if r.grad { "fwd+grad" } else { "fwd" },
            ms(&r.ssim),
            ms(&r.photometric),
            ms(&r.unfused),
            ms(&r.ceilings.trivial),
            ms(&r.ceilings.copy),
            r.ssim.gbps(bytes),
            100.0 * r.ceilings.trivial.median() / r.ssim.median(),
            r.unfused.median() / r.ssim.median(),
            r.means.0,
            r.means.1,
        ));
    }
    t
}

fn write_readme(path: &Path, table: &str) -> Result<(), String> {
    super::replace_block(path, "<!-- image:start -->", "<!-- image:end -->", table)
}
