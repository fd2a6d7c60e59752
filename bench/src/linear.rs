//! Fused linear + cross-entropy against the unfused path on the same adapter: the crate's own
//! matmul to logits (`shaders/matmul.wgsl`), its cross-entropy kernel on them (the gradient in
//! place), then the gradients' matmuls; and that matmul alone, the ceiling of the fused
//! kernel's arithmetic. Both paths read the same buffers and write the loss and the gradients
//! of the hidden states and of the layer's weight; each allocates its own extra memory, counted
//! here: the fused plan's scratch against the unfused path's `[N, V]` logits and its plan's.

use wgpu::util::DeviceExt;

use super::{Timing, wall_clock};
use wgpu_loss::kernel::{Kernel, fixed_layout, params};
use wgpu_loss::kernel::{Pipeline, PipelineKey};
use wgpu_loss::{
    Context, CrossEntropyDesc, Error, LinearCrossEntropyDesc, Plan, Result,
    cross_entropy::CrossEntropyBuffers, linear_cross_entropy::LinearCrossEntropyBuffers,
    plan::Bindings,
};

/// `shaders/matmul.wgsl`: the matrix products `bench` measures fused linear + cross-entropy
/// against. Bindings: a, b, c.
pub static MATMUL: Kernel = Kernel::new("matmul.wgsl", include_str!("../shaders/matmul.wgsl"))
    .params(MatmulParams::INFO)
    .layout(fixed_layout!(U, R, R, W))
    .values(&["TK=16", "LOADS=4"]);

params! {
    /// The parameters of matmul.wgsl.
    MatmulParams {
        m: u32,
        n: u32,
        k: u32,
        a_rs: u32,
        a_cs: u32,
        b_rs: u32,
        b_cs: u32,
        n_ld: u32,
    }
}

/// Rows of a matmul tile (the shader's 64), and the depth staged at a time.
const TILE: u64 = 64;
const TK: u32 = 16;

/// One matmul dispatch, bound.
struct Product {
    pipeline: Pipeline,
    group: wgpu::BindGroup,
    workgroups: (u32, u32),
}

/// A window of a buffer: the buffer, a byte offset and size.
type Window<'a> = (&'a wgpu::Buffer, u64, u64);

fn binding((buffer, offset, size): Window<'_>) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset,
        size: wgpu::BufferSize::new(size),
    })
}

fn whole(b: &wgpu::Buffer) -> Window<'_> {
    (b, 0, b.size())
}

/// The shape of a benchmark: N tokens of width D, a vocabulary of V.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub dim: usize,
    pub vocab: usize,
}

impl LinearShape {
    /// The FLOPs of the work itself: the logits and the two gradients' products, `6 N D V`
    /// (what the unfused path computes).
    pub fn flops(&self) -> f64 {
        6.0 * self.rows as f64 * self.dim as f64 * self.vocab as f64
    }

    /// The FLOPs the fused kernels execute: the logits three times (the statistics pass and
    /// both gradient passes recompute them) and the two gradients' products, `10 N D V`.
    pub fn fused_flops(&self) -> f64 {
        self.flops() / 6.0 * 10.0
    }
}

/// What [`LinearBench`] runs: the fused loss, the unfused path, or its logits' matmul alone.
#[derive(Clone, Copy)]
enum Path {
    Fused,
    Unfused,
    Matmul,
}

/// Both paths on one shape, ready to time.
pub struct LinearBench {
    ctx: Context,
    shape: LinearShape,
    fused: Plan<LinearCrossEntropyDesc>,
    fused_bindings: Bindings,
    ce: Plan<CrossEntropyDesc>,
    ce_bindings: Bindings,
    /// The unfused path's products: to logits, then after the cross-entropy pass, to the
    /// gradients.
    to_logits: Vec<Product>,
    to_grads: Vec<Product>,
    uniform_bytes: u64,
    // The buffers, kept alive with the bind groups.
    _buffers: Vec<wgpu::Buffer>,
    loss: [wgpu::Buffer; 2],
    grads: [[wgpu::Buffer; 2]; 2],
    host: (Vec<f32>, Vec<f32>, Vec<i64>),
}

impl LinearBench {
    /// Random hidden states, layer and targets (`seed`), both paths planned and bound.
    pub fn new(ctx: &Context, shape: LinearShape, seed: u64) -> Result<Self> {
        let LinearShape {
            rows: n,
            dim: d,
            vocab: v,
        } = shape;
        let desc = LinearCrossEntropyDesc::new(n, d, v);
        let fused = Plan::new(ctx, &desc)?;
        let ce = Plan::new(ctx, &CrossEntropyDesc::new(n, v).in_place(true))?;
        let mut rng = super::XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        // Logits of a few units: h in [-1, 1), W in [-2, 2) / sqrt(D).
        let scale = 4.0 / (d as f32).sqrt();
        let hidden: Vec<f32> = (0..n * d).map(|_| rng.unit() * 2.0 - 1.0).collect();
        let linear: Vec<f32> = (0..v * d).map(|_| (rng.unit() - 0.5) * scale).collect();
        let targets: Vec<i64> = (0..n)
            .map(|_| ((rng.unit() * v as f32) as i64).min(v as i64 - 1))
            .collect();
        let targets32: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
        let _guard = ctx.lock();
        let device = ctx.device();
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let init = |label, data: &[u8]| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: data,
                usage,
            })
        };
        let empty = |label, bytes: u64| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4),
                usage,
                mapped_at_creation: false,
            })
        };
        let h = init("bench.hidden", bytemuck::cast_slice(&hidden));
        let w = init("bench.linear", bytemuck::cast_slice(&linear));
        let y = init("bench.targets", bytemuck::cast_slice(&targets32));
        let (n, d, v) = (n as u64, d as u64, v as u64);
        let loss = [empty("bench.loss", 4), empty("bench.loss", 4)];
        let grads = [0, 1].map(|_| {
            [
                empty("bench.grad_hidden", 4 * n * d),
                empty("bench.grad_linear", 4 * v * d),
            ]
        });
        let fused_bindings = fused.bind(
            &LinearCrossEntropyBuffers::new(&h, &w, &y)
                .loss(&loss[0])
                .grad_hidden(&grads[0][0])
                .grad_linear(&grads[0][1]),
        )?;
        let logits = empty("bench.logits", 4 * n * v);
        let ce_bindings = ce.bind(&CrossEntropyBuffers::new(&logits, &y).loss(&loss[1]))?;

        // Windows of whole 64-row blocks of the logits (offsets 256-byte aligned as any
        // device allows: 64 rows of 4-byte elements).
        let limit = ctx.max_binding_bytes();
        let window_rows = (limit / (4 * v) / TILE * TILE).min(n.next_multiple_of(TILE));
        if window_rows == 0 {
            return Err(Error::TooLarge {
                what: "64 rows of logits (the unfused path)",
                bytes: 4 * v * TILE,
                limit,
                which: "storage binding",
            });
        }
        let windows: Vec<(u64, u64)> = (0..n)
            .step_by(window_rows as usize)
            .map(|r0| (r0, (r0 + window_rows).min(n)))
            .collect();
        // The byte range of rows [r0, r1) of a [_, width] tensor.
        let rows = |r0: u64, r1: u64, width: u64| (4 * r0 * width, 4 * (r1 - r0) * width);
        let mut uniforms = Vec::new();
        let mut product = |m: u64,
                           nn: u64,
                           k: u64,
                           a: Window<'_>,
                           (a_rs, a_cs): (u64, u64),
                           b: Window<'_>,
                           (b_rs, b_cs): (u64, u64),
                           c: Window<'_>,
                           accumulate: bool|
         -> Result<Product> {
            let key = PipelineKey::new(&MATMUL, "main")
                .value("TK", TK)
                .value("LOADS", 4)
                .constant("ACCUMULATE", accumulate as u32);
            let pipeline = pollster::block_on(ctx.pipeline(&key))?;
            let params = MatmulParams {
                m: m as u32,
                n: nn as u32,
                k: k as u32,
                a_rs: a_rs as u32,
                a_cs: a_cs as u32,
                b_rs: b_rs as u32,
                b_cs: b_cs as u32,
                n_ld: nn as u32,
            };
            let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("bench.matmul"),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("bench.matmul"),
                layout: &pipeline.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: binding(a),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: binding(b),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: binding(c),
                    },
                ],
            });
            uniforms.push(uniform);
            let workgroups = (nn.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32);
            Ok(Product {
                pipeline,
                group,
                workgroups,
            })
        };
        let mut to_logits = Vec::new();
        let mut to_grads = Vec::new();
        for (j, &(r0, r1)) in windows.iter().enumerate() {
            let m = r1 - r0;
            let (ho, hs) = rows(r0, r1, d);
            let (zo, zs) = rows(r0, r1, v);
            let (go, gs) = rows(r0, r1, d);
            // logits[rows] = h[rows] W^T.
            to_logits.push(product(
                m,
                v,
                d,
                (&h, ho, hs),
                (d, 1),
                whole(&w),
                (1, d),
                (&logits, zo, zs),
                false,
            )?);
            // dh[rows] = dz[rows] W.
            to_grads.push(product(
                m,
                d,
                v,
                (&logits, zo, zs),
                (v, 1),
                whole(&w),
                (d, 1),
                (&grads[1][0], go, gs),
                false,
            )?);
            // dW += dz[rows]^T h[rows].
            to_grads.push(product(
                v,
                d,
                m,
                (&logits, zo, zs),
                (1, v),
                (&h, ho, hs),
                (d, 1),
                whole(&grads[1][1]),
                j > 0,
            )?);
        }
        let uniform_bytes = uniforms.iter().map(wgpu::Buffer::size).sum();
        drop(_guard);
        Ok(LinearBench {
            ctx: ctx.clone(),
            shape,
            fused,
            fused_bindings,
            ce,
            ce_bindings,
            to_logits,
            to_grads,
            uniform_bytes,
            _buffers: [vec![h, w, y, logits], uniforms].concat(),
            loss,
            grads,
            host: (hidden, linear, targets),
        })
    }

    /// The host copies of the inputs: hidden states, layer, targets.
    pub fn inputs(&self) -> (&[f32], &[f32], &[i64]) {
        (&self.host.0, &self.host.1, &self.host.2)
    }

    pub fn shape(&self) -> LinearShape {
        self.shape
    }

    /// The device memory the fused path allocates beyond its inputs and outputs.
    pub fn fused_bytes(&self) -> u64 {
        self.fused.device_bytes()
    }

    /// The device memory the unfused path allocates beyond its inputs and outputs: the logits,
    /// its cross-entropy plan's, and its matmuls' parameters.
    pub fn unfused_bytes(&self) -> u64 {
        let s = self.shape;
        4 * s.rows as u64 * s.vocab as u64 + self.ce.device_bytes() + self.uniform_bytes
    }

    fn record_products(&self, encoder: &mut wgpu::CommandEncoder, products: &[Product]) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bench.matmul"),
            timestamp_writes: None,
        });
        for p in products {
            pass.set_pipeline(&p.pipeline.pipeline);
            pass.set_bind_group(0, &p.group, &[]);
            pass.dispatch_workgroups(p.workgroups.0, p.workgroups.1, 1);
        }
    }

    /// Records, submits and waits for one path.
    fn run(&self, path: Path) -> Result<()> {
        let ctx = &self.ctx;
        let _guard = ctx.lock();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        match path {
            Path::Fused => self.fused.record(&mut encoder, &self.fused_bindings)?,
            Path::Unfused => {
                self.record_products(&mut encoder, &self.to_logits);
                self.ce.record(&mut encoder, &self.ce_bindings)?;
                self.record_products(&mut encoder, &self.to_grads);
            }
            Path::Matmul => self.record_products(&mut encoder, &self.to_logits),
        }
        ctx.queue().submit([encoder.finish()]);
        super::wait(ctx)
    }

    /// Times the fused path (by the wall clock around submit and wait: the unfused path is
    /// several passes, and both are timed alike).
    pub fn time_fused(&self, warmup: usize, reps: usize) -> Result<Timing> {
        wall_clock(warmup, reps, || self.run(Path::Fused))
    }

    /// Times the unfused path.
    pub fn time_unfused(&self, warmup: usize, reps: usize) -> Result<Timing> {
        wall_clock(warmup, reps, || self.run(Path::Unfused))
    }

    /// Times the logits' matmul alone: `2 N D V` FLOPs, the trivial kernel of the fused
    /// kernels' arithmetic.
    pub fn time_matmul(&self, warmup: usize, reps: usize) -> Result<Timing> {
        wall_clock(warmup, reps, || self.run(Path::Matmul))
    }

    /// Runs both paths once and reads back each one's loss and gradients (hidden states,
    /// layer): `[fused, unfused]`.
    pub fn results(&self) -> Result<[LinearResults; 2]> {
        self.run(Path::Fused)?;
        self.run(Path::Unfused)?;
        let s = self.shape;
        let read = |b: &wgpu::Buffer, len: usize| -> Result<Vec<f32>> {
            let bytes = wgpu_loss::kernel::read_back(&self.ctx, b, 4 * len as u64)?;
            Ok(bytemuck::pod_collect_to_vec(&bytes))
        };
        let one = |i: usize| -> Result<LinearResults> {
            Ok(LinearResults {
                loss: read(&self.loss[i], 1)?[0],
                grad_hidden: read(&self.grads[i][0], s.rows * s.dim)?,
                grad_linear: read(&self.grads[i][1], s.vocab * s.dim)?,
            })
        };
        Ok([one(0)?, one(1)?])
    }
}

/// What a path computed.
pub struct LinearResults {
    pub loss: f32,
    pub grad_hidden: Vec<f32>,
    pub grad_linear: Vec<f32>,
}
