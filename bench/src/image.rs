//! The image losses against their baselines on the same adapter, in the same run: the fused
//! SSIM kernels (`shaders/image.wgsl`, through a [`Plan`] of an [`ImageDesc`]) against the five-convolution form
//! (`shaders/ssim_unfused.wgsl`: every statistic through memory, as frameworks without a fused
//! kernel run it) and against the trivial kernels of the same access pattern (read the
//! prediction and target once; for forward + gradient also write the gradient once).

use wgpu::util::DeviceExt;

use super::{Ceilings, Timing, ceilings, time_passes};
use wgpu_loss::kernel::{Kernel, fixed_layout, params};
use wgpu_loss::kernel::{Pipeline, PipelineKey};
use wgpu_loss::kernel::{WG, fold};
use wgpu_loss::{Context, Error, Result};
use wgpu_loss::{
    ImageDesc, Plan,
    image::{ImageBuffers, ImageLoss},
    plan::Bindings,
};

/// `shaders/ssim_unfused.wgsl`: the five-convolution form of SSIM `bench` measures the fused
/// kernel against. Bindings: maps m0..m4, dst, partials.
/// A sample of the window's `#expr GAUSS` (the real one is the library's taps), for the
/// contract test.
const GAUSS_SAMPLE: &str = "GAUSS=const G = array<f32, 11>(0.001, 0.008, 0.038, 0.109, 0.213, 0.264, 0.213, 0.109, 0.038, 0.008, 0.001);";

/// The element count of `dims`, refused past the kernels' u32 element index.
fn elements(what: &'static str, dims: &[usize]) -> Result<u64> {
    let limit = u32::MAX as u64;
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= limit)
        .ok_or_else(|| Error::ShapeTooLarge {
            what,
            dims: dims.to_vec(),
            limit,
        })
}

pub static SSIM_UNFUSED: Kernel = Kernel::new(
    "ssim_unfused.wgsl",
    include_str!("../shaders/ssim_unfused.wgsl"),
)
.params(UnfusedParams::INFO)
.layout(fixed_layout!(U, R, R, R, R, R, W, W))
.values(&[GAUSS_SAMPLE]);

params! {
    /// The parameters of ssim_unfused.wgsl.
    UnfusedParams {
        h: u32,
        w: u32,
        c: u32,
        len: u32,
        wg_x: u32,
        mode: u32,
        c1: f32,
        c2: f32,
    }
}

/// One bench image shape: `h x w` pixels of `c` channels (one image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The least traffic of a case: prediction and target read once, the gradient written once
    /// (forward + gradient).
    pub fn bytes(&self, grad: bool) -> u64 {
        4 * self.len() as u64 * if grad { 3 } else { 2 }
    }
}

/// An image bench on one shape: the images (random, structured), the fused plans and the
/// five-convolution form's buffers, created once.
pub struct ImageBench {
    ctx: Context,
    shape: ImageShape,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    grad: wgpu::Buffer,
    loss: wgpu::Buffer,
}

/// One dispatch of the five-convolution form, bound.
struct Step {
    pipeline: Pipeline,
    group: wgpu::BindGroup,
    workgroups: (u32, u32),
}

impl ImageBench {
    /// Uploads a prediction and target of `shape` (a smooth field plus noise in [0, 1]).
    pub fn new(ctx: &Context, shape: ImageShape, seed: u64) -> Result<Self> {
        // Refused before anything is allocated on the host: past one binding, no plan takes it.
        let len = elements("image", &[shape.h, shape.w, shape.c])?;
        let limit = ctx.max_binding_bytes();
        if len == 0 || 4 * len > limit {
            return Err(Error::TooLarge {
                what: "bench image",
                bytes: 4 * len,
                limit,
                which: "storage binding",
            });
        }
        let len = len as usize;
        let mut s = seed | 1;
        let mut noise = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let mut x = Vec::with_capacity(len);
        let mut y = Vec::with_capacity(len);
        for i in 0..len {
            let p = i / shape.c;
            let (px, py) = ((p % shape.w) as f32, (p / shape.w) as f32);
            let t = (0.5 + 0.3 * (0.031 * px + 0.017 * py).sin() + 0.2 * noise()).clamp(0.0, 1.0);
            y.push(t);
            x.push((t + 0.3 * noise()).clamp(0.0, 1.0));
        }
        let device = ctx.device();
        let storage = |data: &[f32]| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgpu-loss.bench.image"),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            })
        };
        let (xb, yb) = (storage(&x), storage(&y));
        let grad = super::empty(ctx, 4 * len as u64);
        let loss = super::empty(ctx, 4);
        Ok(ImageBench {
            ctx: ctx.clone(),
            shape,
            x: xb,
            y: yb,
            grad,
            loss,
        })
    }

    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    fn plan(&self, loss: ImageLoss, grad: bool) -> Result<(Plan<ImageDesc>, Bindings)> {
        let s = self.shape;
        let desc =
            ImageDesc::new(loss, s.h, s.w, s.c).outputs(wgpu_loss::Outputs { loss: true, grad });
        let plan = Plan::new(&self.ctx, &desc)?;
        let mut b = ImageBuffers::new(&self.x, &self.y).loss(&self.loss);
        if grad {
            b = b.grad(&self.grad);
        }
        let bindings = plan.bind(&b)?;
        Ok((plan, bindings))
    }

    /// The fused kernels of `loss` (forward, or forward + gradient), one compute pass timed.
    pub fn fused(&self, loss: ImageLoss, grad: bool, warmup: usize, reps: usize) -> Result<Timing> {
        let (plan, bindings) = self.plan(loss, grad)?;
        time_passes(&self.ctx, warmup, reps, |encoder, _, ts| {
            plan.record_timed(encoder, &bindings, ts)
        })
    }

    /// The fused loss's value (mean SSIM), to hold the five-convolution form's against.
    pub fn fused_ssim(&self) -> Result<f32> {
        let (plan, bindings) = self.plan(ImageLoss::Ssim, false)?;
        let mut encoder = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        plan.record(&mut encoder, &bindings)?;
        self.ctx.queue().submit([encoder.finish()]);
        super::read_f32(&self.ctx, &self.loss)
    }

    /// The five-convolution form (forward, or forward + gradient), all its dispatches in one
    /// compute pass timed; its mean SSIM (from its partial sums, added on the host); and with
    /// the gradient, the largest difference between its gradient and the fused kernel's,
    /// relative to the largest magnitude of the fused one.
    pub fn unfused(
        &self,
        grad: bool,
        warmup: usize,
        reps: usize,
    ) -> Result<(Timing, f64, Option<f64>)> {
        let ctx = &self.ctx;
        let s = self.shape;
        let len = s.len() as u64;
        let workgroups = len.div_ceil(WG as u64);
        let (wg_x, wg_y) = fold(ctx, workgroups)?;
        let map = || super::empty(ctx, 4 * len);
        // The five statistics, a horizontal pass's temporary, the maps A, B, C and their
        // filtered copies, the partial sums.
        let stats: Vec<wgpu::Buffer> = (0..5).map(|_| map()).collect();
        let temp = map();
        let abc: Vec<wgpu::Buffer> = if grad {
            (0..3).map(|_| map()).collect()
        } else {
            Vec::new()
        };
        let filtered: Vec<wgpu::Buffer> = if grad {
            (0..3).map(|_| map()).collect()
        } else {
            Vec::new()
        };
        let partials = super::empty(ctx, 4 * workgroups);
        let params_of = |mode: u32| UnfusedParams {
            h: s.h as u32,
            w: s.w as u32,
            c: s.c as u32,
            len: len as u32,
            wg_x,
            mode,
            c1: 1e-4,
            c2: 9e-4,
        };
        let mut uniforms = Vec::new();
        let mut steps = Vec::new();
        let mut step = |entry: &'static str,
                        mode: u32,
                        inputs: [&wgpu::Buffer; 5],
                        out: &wgpu::Buffer|
         -> Result<()> {
            let key = PipelineKey::new(&SSIM_UNFUSED, entry)
                .constant("WG", WG)
                .constant("SEG", WG)
                .text("GAUSS", &wgpu_loss::cpu::image::gaussian_wgsl());
            let pipeline = pollster::block_on(ctx.pipeline(&key))?;
            let uniform = ctx
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("wgpu-loss.bench.unfused"),
                    contents: bytemuck::bytes_of(&params_of(mode)),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: uniform.as_entire_binding(),
            }];
            for (i, b) in inputs.iter().chain([&out, &&partials]).enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.as_entire_binding(),
                });
            }
            let group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu-loss.bench.unfused"),
                layout: &pipeline.layout,
                entries: &entries,
            });
            uniforms.push(uniform);
            steps.push(Step {
                pipeline,
                group,
                workgroups: (wg_x, wg_y),
            });
            Ok(())
        };
        let (x, y) = (&self.x, &self.y);
        let dummy = &super::empty(ctx, 16);
        for (mode, stat) in stats.iter().enumerate() {
            step("blur_h", mode as u32, [x, y, dummy, dummy, dummy], &temp)?;
            step("blur_v", 0, [&temp, dummy, dummy, dummy, dummy], stat)?;
        }
        let st: Vec<&wgpu::Buffer> = stats.iter().collect();
        let five = [st[0], st[1], st[2], st[3], st[4]];
        step("ssim_map", 0, five, &temp)?;
        if grad {
            for (mode, (a, f)) in abc.iter().zip(&filtered).enumerate() {
                step("ssim_grad", mode as u32, five, a)?;
                step("blur_h", 5, [a, dummy, dummy, dummy, dummy], &temp)?;
                step("blur_v", 0, [&temp, dummy, dummy, dummy, dummy], f)?;
            }
            let fl: Vec<&wgpu::Buffer> = filtered.iter().collect();
            step("combine", 0, [x, y, fl[0], fl[1], fl[2]], &self.grad)?;
        }
        let timing = time_passes(ctx, warmup, reps, |encoder, _, ts| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgpu-loss.bench.unfused"),
                timestamp_writes: ts,
            });
            for s in &steps {
                pass.set_pipeline(&s.pipeline.pipeline);
                pass.set_bind_group(0, &s.group, &[]);
                pass.dispatch_workgroups(s.workgroups.0, s.workgroups.1, 1);
            }
            Ok(())
        })?;
        let sums = wgpu_loss::kernel::read_back(ctx, &partials, 4 * workgroups)?;
        let sums: Vec<f32> = bytemuck::pod_collect_to_vec(&sums);
        let mean = sums.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let difference = if grad {
            let read = |b| -> Result<Vec<f32>> {
                Ok(bytemuck::pod_collect_to_vec(&wgpu_loss::kernel::read_back(
                    ctx,
                    b,
                    4 * len,
                )?))
            };
            let unfused = read(&self.grad)?;
            let (plan, bindings) = self.plan(ImageLoss::Ssim, true)?;
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            plan.record(&mut encoder, &bindings)?;
            ctx.queue().submit([encoder.finish()]);
            let fused = read(&self.grad)?;
            let scale = fused.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
            let worst = fused
                .iter()
                .zip(&unfused)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() as f64));
            Some(worst / scale)
        } else {
            None
        };
        Ok((timing, mean, difference))
    }

    /// The copy and trivial-kernel ceilings of the access pattern (MSE's: read two images,
    /// write one for forward + gradient).
    pub fn ceilings(&self, grad: bool, warmup: usize, reps: usize) -> Result<Ceilings> {
        ceilings(
            &self.ctx,
            &super::Case::mse(self.shape.len(), grad),
            warmup,
            reps,
        )
    }
}
