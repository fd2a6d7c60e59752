//! Criterion benchmarks of the loss kernels, on the default adapter (`WGPU_ADAPTER_NAME` and
//! `WGPU_BACKEND` pick another). The cases, their inputs and the GPU timing are those of
//! `wgpu-loss bench` (the `wgpu-loss-bench` package): criterion gets the GPU time of each run (timestamp
//! queries where the adapter has them), not the time to submit it.
//!
//! `cargo bench`; `cargo bench -- cross-entropy` for one group (`image` for the image losses).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wgpu_loss::{Context, DType, image::ImageLoss};
use wgpu_loss_bench::{Bench, Case, ImageBench, ImageShape};

fn context() -> Context {
    let ctx = Context::new().expect("the benchmarks need a GPU adapter (or lavapipe)");
    let info = ctx.adapter_info();
    eprintln!(
        "adapter: {} ({}, {} {}), {:?}",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        ctx.tuning()
    );
    ctx
}

/// Times `case` with criterion: each iteration is one GPU run, measured on the GPU.
fn run(c: &mut Criterion, ctx: &Context, group: &str, case: Case) {
    let bench = Bench::new(ctx, case, 1).expect("plan and upload the case");
    // First runs pay for bind groups and driver caches; keep them out of criterion's estimates.
    bench.time(2, 3).expect("the kernels run");
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(case.bytes()));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::new(case.kernel(), case.shape()), |b| {
        b.iter_custom(|iters| {
            let timing = bench
                .time(0, iters.max(1) as usize)
                .expect("the kernels run");
            Duration::from_secs_f64(timing.samples.iter().sum())
        })
    });
    g.finish();
}

fn losses(c: &mut Criterion) {
    let ctx = context();
    for grad in [false, true] {
        for elements in [1 << 20, 1 << 24] {
            run(c, &ctx, "mse", Case::mse(elements, grad));
        }
        for classes in [10, 1000, 32_000, 128_000] {
            run(
                c,
                &ctx,
                "cross-entropy",
                Case::cross_entropy((1 << 24) / classes, classes, grad),
            );
            run(
                c,
                &ctx,
                "cross-entropy-probs",
                Case::cross_entropy_probs((1 << 22) / classes, classes, grad),
            );
        }
    }
    // Half precision: the same shapes in f16 and bf16 (bytes counted at 2 an element).
    for dtype in [DType::F16, DType::BF16] {
        for grad in [false, true] {
            run(c, &ctx, "mse", Case::mse(1 << 24, grad).in_dtype(dtype));
            let ce = Case::cross_entropy((1 << 24) / 32_000, 32_000, grad);
            run(c, &ctx, "cross-entropy", ce.in_dtype(dtype));
        }
    }
    // Latency of a small batch, where dispatch overhead is all there is.
    run(c, &ctx, "small", Case::cross_entropy(32, 10, true));
    run(c, &ctx, "small", Case::mse(320, true));
}

/// SSIM and the photometric loss at 1080p RGB, fused, and SSIM's five-convolution form (the
/// `bench --loss image` table holds them against the ceilings as well).
fn images(c: &mut Criterion) {
    let ctx = context();
    let shape = ImageShape {
        h: 1080,
        w: 1920,
        c: 3,
    };
    let bench = ImageBench::new(&ctx, shape, 1).expect("upload the images");
    let mut g = c.benchmark_group("image");
    g.throughput(Throughput::Bytes(shape.bytes(false)));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(5));
    for grad in [false, true] {
        let pass = if grad { "fwd+grad" } else { "fwd" };
        for loss in [ImageLoss::Ssim, ImageLoss::Photometric] {
            g.bench_function(
                BenchmarkId::new(format!("{loss} {pass}"), "1920x1080x3"),
                |b| {
                    b.iter_custom(|iters| {
                        let t = bench.fused(loss, grad, 0, iters.max(1) as usize);
                        Duration::from_secs_f64(t.expect("the kernels run").samples.iter().sum())
                    })
                },
            );
        }
        g.bench_function(
            BenchmarkId::new(format!("five convolutions {pass}"), "1920x1080x3"),
            |b| {
                b.iter_custom(|iters| {
                    let (t, _, _) = bench
                        .unfused(grad, 0, iters.max(1) as usize)
                        .expect("the kernels run");
                    Duration::from_secs_f64(t.samples.iter().sum())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, losses, images);
criterion_main!(benches);
