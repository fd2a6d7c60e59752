//! `wgpu-loss demo`: a large random batch on the GPU and on the CPU reference.

use std::time::Instant;

use clap::Args;
use wgpu::util::DeviceExt;
use wgpu_loss::{
    Context, CrossEntropyDesc, Inputs, Plan, PointwiseDesc, cpu,
    cross_entropy::CrossEntropyBuffers, pointwise::Pointwise, pointwise::PointwiseBuffers,
};

use super::context;

#[derive(Args)]
pub struct DemoArgs {
    /// Cross-entropy rows N.
    #[arg(long, default_value_t = 16_384)]
    rows: usize,
    /// Cross-entropy classes C.
    #[arg(long, default_value_t = 1_024)]
    classes: usize,
    /// MSE elements.
    #[arg(long, default_value_t = 1 << 24)]
    elements: usize,
    /// Seed of the random data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A small xorshift generator: the demo's data needs to be random, not cryptographic.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn storage(ctx: &Context, data: &[u8]) -> wgpu::Buffer {
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("demo"),
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
}

fn empty(ctx: &Context, bytes: u64) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("demo"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

/// Times `record` on the GPU: submit and wait, median of 5 after a warm-up.
fn gpu_time(ctx: &Context, record: impl Fn(&mut wgpu::CommandEncoder)) -> f64 {
    let mut times = Vec::new();
    for i in 0..6 {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        record(&mut encoder);
        let start = Instant::now();
        ctx.queue().submit([encoder.finish()]);
        let _ = ctx.device().poll(wgpu::PollType::wait_indefinitely());
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn max_errors(gpu: &[f32], cpu: &[f64]) -> (f64, f64) {
    let scale = cpu.iter().fold(0.0f64, |a, c| a.max(c.abs()));
    gpu.iter()
        .zip(cpu)
        .fold((0.0, 0.0), |(abs, rel), (&g, &c)| {
            let d = (g as f64 - c).abs();
            (abs.max(d), rel.max(d / c.abs().max(scale * 1e-3)))
        })
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

pub fn run(a: &DemoArgs) -> Result<(), String> {
    let fail = |e: wgpu_loss::Error| e.to_string();
    let ctx = context()?;
    let info = ctx.adapter_info();
    println!(
        "adapter: {} ({}, {:?}, {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    );
    let mut rng = XorShift(a.seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);

    // Cross-entropy, mean over rows, loss and gradient.
    let (n, c) = (a.rows, a.classes);
    let logits: Vec<f32> = (0..n * c).map(|_| rng.next() * 16.0 - 8.0).collect();
    let targets: Vec<i64> = (0..n)
        .map(|_| ((rng.next() * c as f32) as i64).min(c as i64 - 1))
        .collect();
    let y: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
    println!();
    println!(
        "cross-entropy: N = {n}, C = {c} ({} logits), mean, loss and gradient",
        n * c
    );
    let start = Instant::now();
    let desc = CrossEntropyDesc::new(n, c);
    let plan = Plan::new(&ctx, &desc).map_err(fail)?;
    let plan_time = start.elapsed().as_secs_f64();
    let x_buf = storage(&ctx, bytemuck::cast_slice(&logits));
    let y_buf = storage(&ctx, bytemuck::cast_slice(&y));
    let loss_buf = empty(&ctx, 4);
    let grad_buf = empty(&ctx, 4 * (n * c) as u64);
    let bindings = plan
        .bind(
            &CrossEntropyBuffers::new(&x_buf, &y_buf)
                .loss(&loss_buf)
                .grad(&grad_buf),
        )
        .map_err(fail)?;
    let kernel = gpu_time(&ctx, |e| {
        plan.record(e, &bindings).expect("bindings of this plan")
    });
    let inputs = Inputs::classes(&logits, &targets);
    let start = Instant::now();
    let gpu = ctx.loss(&desc, &inputs).map_err(fail)?;
    let end_to_end = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let reference = cpu::reference(&desc, &inputs).map_err(fail)?;
    let cpu_time = start.elapsed().as_secs_f64();
    report(
        gpu.value.unwrap_or(f32::NAN),
        reference.value.unwrap_or(f64::NAN),
        gpu.grad.as_deref().unwrap_or_default(),
        &reference.grad,
        (plan_time, kernel, end_to_end, cpu_time),
        (4 * n * c * 2 + 4 * n) as f64,
    );

    // MSE, mean, loss and gradient.
    let m = a.elements;
    let pred: Vec<f32> = (0..m).map(|_| rng.next() * 4.0 - 2.0).collect();
    let target: Vec<f32> = (0..m).map(|_| rng.next() * 4.0 - 2.0).collect();
    println!();
    println!("mse: {m} elements, mean, loss and gradient");
    let start = Instant::now();
    let desc = PointwiseDesc::new(Pointwise::Mse, m);
    let plan = Plan::new(&ctx, &desc).map_err(fail)?;
    let plan_time = start.elapsed().as_secs_f64();
    let p_buf = storage(&ctx, bytemuck::cast_slice(&pred));
    let t_buf = storage(&ctx, bytemuck::cast_slice(&target));
    let grad_buf = empty(&ctx, 4 * m as u64);
    let bindings = plan
        .bind(
            &PointwiseBuffers::new(&p_buf, &t_buf)
                .loss(&loss_buf)
                .grad(&grad_buf),
        )
        .map_err(fail)?;
    let kernel = gpu_time(&ctx, |e| {
        plan.record(e, &bindings).expect("bindings of this plan")
    });
    let inputs = Inputs::new(&pred, &target);
    let start = Instant::now();
    let gpu = ctx.loss(&desc, &inputs).map_err(fail)?;
    let end_to_end = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let reference = cpu::reference(&desc, &inputs).map_err(fail)?;
    let cpu_time = start.elapsed().as_secs_f64();
    report(
        gpu.value.unwrap_or(f32::NAN),
        reference.value.unwrap_or(f64::NAN),
        gpu.grad.as_deref().unwrap_or_default(),
        &reference.grad,
        (plan_time, kernel, end_to_end, cpu_time),
        (4 * m * 3) as f64,
    );
    Ok(())
}

fn report(
    gpu: f32,
    cpu: f64,
    gpu_grad: &[f32],
    cpu_grad: &[f64],
    times: (f64, f64, f64, f64),
    bytes: f64,
) {
    let (plan, kernel, end_to_end, cpu_time) = times;
    let (grad_abs, grad_rel) = max_errors(gpu_grad, cpu_grad);
    println!("  GPU loss  {gpu:.9}");
    println!("  CPU loss  {cpu:.9}  (f64 reference)");
    println!(
        "  agreement: loss relative error {:.2e}; gradient max abs error {grad_abs:.2e}, max relative error {grad_rel:.2e}",
        (gpu as f64 - cpu).abs() / cpu.abs()
    );
    println!(
        "  times: plan (pipelines) {}, GPU kernels {} ({:.2} GB/s), GPU with upload and readback {}, CPU reference {}",
        ms(plan),
        ms(kernel),
        bytes / kernel / 1e9,
        ms(end_to_end),
        ms(cpu_time)
    );
}
