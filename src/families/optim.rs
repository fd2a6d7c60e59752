//! The update step that closes training: SGD (with momentum, Nesterov, weight decay) and
//! Adam / AdamW, updating parameters in place from a gradient buffer, recorded into the
//! caller's encoder like the losses, with the state (momentum, moments, step count) in buffers
//! the optimizer owns. PyTorch's `torch.optim` semantics and its order of operations.
//!
//! Kernel: `shaders/optim.wgsl`. CPU twin: [`crate::cpu::optim`].

use wgpu::util::DeviceExt;

use crate::engine::context::Context;
use crate::engine::context::{Locked, Pipeline, PipelineKey};
use crate::engine::kernel::{Kernel, fixed_layout, params};
use crate::engine::program::{WG, elements, fold};
use crate::error::{Error, Result};
use crate::plan::IntoBinding;

/// Elements an invocation updates.
const K: u32 = 4;

/// `shaders/optim.wgsl`: the update step. Bindings: parameters, gradient, first and second
/// moments.
pub(crate) static OPTIM: Kernel =
    Kernel::new("optim.wgsl", include_str!("../../shaders/optim.wgsl"))
        .params(OptimParams::INFO)
        .layout(fixed_layout!(U, W, R, W, W));

/// An optimizer and its hyperparameters (PyTorch's defaults in [`Optimizer::sgd`] and
/// [`Optimizer::adam`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Optimizer {
    /// `torch.optim.SGD`.
    Sgd {
        /// The learning rate.
        lr: f32,
        /// The momentum factor (0: none).
        momentum: f32,
        /// The dampening of the momentum.
        dampening: f32,
        /// Nesterov's momentum.
        nesterov: bool,
        /// L2 penalty, added to the gradient.
        weight_decay: f32,
    },
    /// `torch.optim.Adam` (`decoupled: false`) or `torch.optim.AdamW` (`decoupled: true`, the
    /// weight decay applied to the parameters, not added to the gradient).
    Adam {
        /// The learning rate.
        lr: f32,
        /// The decay of the first moment.
        beta1: f32,
        /// The decay of the second moment.
        beta2: f32,
        /// Added to the denominator.
        eps: f32,
        /// The weight decay (an L2 penalty, or decoupled).
        weight_decay: f32,
        /// AdamW: the weight decay applied to the parameters.
        decoupled: bool,
    },
}

impl Optimizer {
    /// Plain gradient descent, `p -= lr g`.
    pub fn sgd(lr: f32) -> Self {
        Optimizer::Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// SGD with momentum (and optionally Nesterov's).
    pub fn momentum(lr: f32, momentum: f32, nesterov: bool) -> Self {
        Optimizer::Sgd {
            lr,
            momentum,
            dampening: 0.0,
            nesterov,
            weight_decay: 0.0,
        }
    }

    /// Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8; no weight decay).
    pub fn adam(lr: f32) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01).
    pub fn adamw(lr: f32) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let finite = |name: &'static str, v: f32, lo: f32, hi: f32| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::option(name, format!("{v} is outside [{lo}, {hi}]")))
            }
        };
        match *self {
            Optimizer::Sgd {
                lr,
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => {
                finite("lr", lr, 0.0, f32::MAX)?;
                finite("momentum", momentum, 0.0, f32::MAX)?;
                finite("dampening", dampening, f32::MIN, f32::MAX)?;
                finite("weight_decay", weight_decay, 0.0, f32::MAX)?;
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    return Err(Error::option(
                        "nesterov",
                        "needs a momentum and zero dampening (as PyTorch)",
                    ));
                }
                Ok(())
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                finite("lr", lr, 0.0, f32::MAX)?;
                finite("beta1", beta1, 0.0, 0.999_999_9)?;
                finite("beta2", beta2, 0.0, 0.999_999_9)?;
                finite("eps", eps, 0.0, f32::MAX)?;
                finite("weight_decay", weight_decay, 0.0, f32::MAX)
            }
        }
    }
}

params! {
    /// The parameters of optim.wgsl (one step's).
    OptimParams {
        len: u32,
        wg_x: u32,
        /// 1 at SGD's first step (the momentum buffer starts as the gradient).
        first: u32,
        lr: f32,
        weight_decay: f32,
        momentum: f32,
        one_minus_dampening: f32,
        one_minus_beta1: f32,
        beta2: f32,
        one_minus_beta2: f32,
        eps: f32,
        /// lr / (1 - beta1^t), sqrt(1 - beta2^t), and AdamW's 1 - lr weight_decay.
        step_size: f32,
        bc2_sqrt: f32,
        decay: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// An optimizer over `len` f32 parameters: its state buffers and its step count. Its life
/// cycle is a plan's: [`Optim::new`] (or [`Optim::new_async`]), [`Optim::bind`] the parameters
/// and their gradient once, then each [`Optim::record`] is one step.
pub struct Optim {
    ctx: Context,
    optimizer: Optimizer,
    len: u64,
    pipeline: Pipeline,
    /// Momentum (SGD) or first moment (Adam), and second moment (Adam); 4 bytes when unused.
    m: Locked<wgpu::Buffer>,
    v: Locked<wgpu::Buffer>,
    /// Steps recorded so far.
    steps: u64,
    id: u64,
}

/// The parameters and gradient bound to one [`Optim`]: made by [`Optim::bind`], recorded with
/// that optimizer only (they keep the buffers alive while held).
#[derive(Debug)]
pub struct OptimBindings {
    optim: u64,
    params: Locked<wgpu::Buffer>,
    params_at: u64,
    grad: Locked<wgpu::Buffer>,
    grad_at: u64,
}

/// Numbers optimizers, so that bindings know which optimizer made them.
static OPTIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl std::fmt::Debug for Optim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optim")
            .field("optimizer", &self.optimizer)
            .field("len", &self.len)
            .field("steps", &self.steps)
            .finish()
    }
}

impl Optim {
    /// The optimizer for `len` parameters, its state zero (blocking: see
    /// [`Optim::new_async`]).
    pub fn new(ctx: &Context, optimizer: Optimizer, len: usize) -> Result<Self> {
        pollster::block_on(Self::new_async(ctx, optimizer, len))
    }

    /// [`Optim::new`], awaiting the device's verdict on the pipeline instead of blocking on it.
    pub async fn new_async(ctx: &Context, optimizer: Optimizer, len: usize) -> Result<Self> {
        optimizer.check()?;
        if len == 0 {
            return Err(Error::Empty("parameters"));
        }
        let len = elements("parameters", &[len])?;
        let limit = ctx.max_binding_bytes();
        if 4 * len > limit {
            return Err(Error::TooLarge {
                what: "parameters",
                bytes: 4 * len,
                limit,
                which: "storage binding",
            });
        }
        let (adam, decoupled, momentum, nesterov) = match optimizer {
            Optimizer::Sgd {
                momentum, nesterov, ..
            } => (false, false, momentum != 0.0, nesterov),
            Optimizer::Adam { decoupled, .. } => (true, decoupled, false, false),
        };
        let key = PipelineKey::new(&OPTIM, "main")
            .constant("WG", WG)
            .constant("SEG", WG)
            .constant("K", K)
            .constant("ADAM", adam as u32)
            .constant("DECOUPLED", decoupled as u32)
            .constant("MOMENTUM", momentum as u32)
            .constant("NESTEROV", nesterov as u32);
        let pipeline = ctx.pipeline(&key).await?;
        let state = |used: bool| {
            let _guard = ctx.lock();
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-loss.optim.state"),
                size: if used { 4 * len } else { 4 },
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        Ok(Optim {
            ctx: ctx.clone(),
            optimizer,
            len,
            pipeline,
            m: Locked::new(ctx, state(adam || momentum)),
            v: Locked::new(ctx, state(adam)),
            steps: 0,
            id: OPTIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The optimizer.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    /// Steps recorded so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The state buffers: momentum or first moment, and second moment (4 bytes when unused).
    pub fn state(&self) -> (&wgpu::Buffer, &wgpu::Buffer) {
        (&self.m, &self.v)
    }

    /// The uniforms of step `t` (1-based).
    fn params(&self, t: u64, wg_x: u32) -> OptimParams {
        let base = OptimParams {
            len: self.len as u32,
            wg_x,
            first: (t == 1) as u32,
            ..Default::default()
        };
        match self.optimizer {
            Optimizer::Sgd {
                lr,
                momentum,
                dampening,
                weight_decay,
                ..
            } => OptimParams {
                lr,
                weight_decay,
                momentum,
                one_minus_dampening: (1.0 - dampening as f64) as f32,
                ..base
            },
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                let (b1, b2) = (beta1 as f64, beta2 as f64);
                let bc1 = 1.0 - b1.powi(t.min(i32::MAX as u64) as i32);
                let bc2 = 1.0 - b2.powi(t.min(i32::MAX as u64) as i32);
                OptimParams {
                    lr,
                    weight_decay,
                    one_minus_beta1: (1.0 - b1) as f32,
                    beta2,
                    one_minus_beta2: (1.0 - b2) as f32,
                    eps,
                    step_size: (lr as f64 / bc1) as f32,
                    bc2_sqrt: bc2.sqrt() as f32,
                    decay: (1.0 - lr as f64 * weight_decay as f64) as f32,
                    ..base
                }
            }
        }
    }

    /// Checks `params` (f32, `len` of them, `STORAGE`, updated in place by each step) and
    /// `grad` (f32, `len`, `STORAGE`, another buffer) and binds them.
    pub fn bind<'a>(
        &self,
        params: impl IntoBinding<'a>,
        grad: impl IntoBinding<'a>,
    ) -> Result<OptimBindings> {
        let (p, g) = (params.into_binding(), grad.into_binding());
        for (what, b) in [("params", &p), ("grad", &g)] {
            let size = b
                .size
                .map_or(b.buffer.size().saturating_sub(b.offset), |s| s.get());
            if size < 4 * self.len {
                return Err(Error::BufferTooSmall {
                    binding: what,
                    needed: 4 * self.len,
                    actual: size,
                });
            }
            if !b.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
                return Err(Error::Binding(what, "needs BufferUsages::STORAGE"));
            }
        }
        if p.buffer == g.buffer {
            return Err(Error::Binding("grad", "aliases params"));
        }
        Ok(OptimBindings {
            optim: self.id,
            params: Locked::new(&self.ctx, p.buffer.clone()),
            params_at: p.offset,
            grad: Locked::new(&self.ctx, g.buffer.clone()),
            grad_at: g.offset,
        })
    }

    /// Records one step into `encoder` on the bound parameters. The step's scalars go in a
    /// uniform buffer of its own, so that several steps recorded into one encoder each have
    /// theirs. Nothing is submitted.
    pub fn record(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        bindings: &OptimBindings,
    ) -> Result<()> {
        if bindings.optim != self.id {
            return Err(Error::Binding("bindings", "made by another optimizer"));
        }
        let (x, y) = fold(&self.ctx, self.len.div_ceil(256 * K as u64))?;
        let t = self.steps + 1;
        let _guard = self.ctx.lock();
        let device = self.ctx.device();
        let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wgpu-loss.optim.params"),
            contents: bytemuck::bytes_of(&self.params(t, x)),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let bytes = wgpu::BufferSize::new(4 * self.len);
        let (pb, gb) = (
            wgpu::BufferBinding {
                buffer: &bindings.params,
                offset: bindings.params_at,
                size: bytes,
            },
            wgpu::BufferBinding {
                buffer: &bindings.grad,
                offset: bindings.grad_at,
                size: bytes,
            },
        );
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("wgpu-loss.optim"),
            layout: &self.pipeline.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniforms.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::Buffer(pb),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::Buffer(gb),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: self.m.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: self.v.as_entire_binding(),
                },
            ],
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu-loss.optim"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(x, y, 1);
        drop(pass);
        self.steps = t;
        Ok(())
    }

    /// One step on host slices: uploads `params` and `grad`, records, submits, waits, and
    /// writes the updated parameters back into `params`. The state stays on the GPU.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) -> Result<()> {
        for (what, len) in [("params", params.len()), ("grad", grad.len())] {
            crate::plan::check_count(what, self.len, len)?;
        }
        let ctx = self.ctx.clone();
        let p = crate::engine::transfer::upload(
            &ctx,
            "wgpu-loss.optim.p",
            bytemuck::cast_slice(params),
        );
        let g =
            crate::engine::transfer::upload(&ctx, "wgpu-loss.optim.g", bytemuck::cast_slice(grad));
        let mut encoder = {
            let _guard = ctx.lock();
            ctx.device().create_command_encoder(&Default::default())
        };
        let bindings = self.bind(&p, &g)?;
        self.record(&mut encoder, &bindings)?;
        {
            let _guard = ctx.lock();
            ctx.queue().submit([encoder.finish()]);
        }
        let bytes = crate::engine::transfer::read_back(&ctx, &p, 4 * self.len)?;
        params.copy_from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&bytes));
        Ok(())
    }
}
