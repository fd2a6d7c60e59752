//! Negative log-likelihood over log-probabilities `[N, C]` with class targets, PyTorch's
//! `nll_loss`: per row `-w_y x[n, y_n]`, rows whose target is `ignore_index` weigh nothing.
//!
//! Kernel: `shaders/nll.wgsl` (and `shaders/class_targets.wgsl` for a weighted mean's
//! denominator when the gradient needs it first). CPU twin: [`crate::cpu::nll`].
//!
//! `mean` divides by the sum of the target classes' weights over rows that are not ignored (the
//! count of such rows without weights), as PyTorch: NaN when every row is ignored, with an
//! all-zero gradient. The forward pass reads one log-probability per row; the gradient is
//! written from the targets alone.

use bytemuck::{Pod, Zeroable};

use crate::context::{Binding, PipelineKey};
use crate::program::{Access, Builder, Finish, Program, Res, Status, View, WG};
use crate::reduction::{LossOutput, Outputs, Reduction};
use crate::shader::Shader;
use crate::transfer::HostSlot;
use crate::{Context, Error, Result, transfer};

/// Rows per invocation of the loss part.
const KR: u32 = 4;

const LAYOUT: &[Binding] = &[
    Binding::Uniform,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
];

/// The options of negative log-likelihood, with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NllOptions {
    /// The reduction (none: one loss per row).
    pub reduction: Reduction,
    /// Rows whose target equals this weigh nothing. Must fit in an i32.
    pub ignore_index: i64,
}

impl Default for NllOptions {
    fn default() -> Self {
        NllOptions {
            reduction: Reduction::Mean,
            ignore_index: -100,
        }
    }
}

/// What an [`NllPlan`] computes.
#[derive(Clone, Debug, PartialEq)]
pub struct NllDesc {
    /// Rows N.
    pub rows: usize,
    /// Classes C.
    pub classes: usize,
    /// Whether a class weight `[C]` is given.
    pub weighted: bool,
    /// The options.
    pub options: NllOptions,
    /// What to compute.
    pub outputs: Outputs,
}

impl NllDesc {
    /// Default options, loss and gradient.
    pub fn new(rows: usize, classes: usize) -> Self {
        NllDesc {
            rows,
            classes,
            weighted: false,
            options: NllOptions::default(),
            outputs: Outputs::BOTH,
        }
    }
}

/// Keep in sync with `Params` in shaders/nll.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct NllParams {
    rows: u32,
    loss_rows: u32,
    vecs: u32,
    vec_base: u32,
    total: u32,
    wg_x: u32,
    partial_base: u32,
    ignore_index: i32,
    grad_scale: f32,
    _pad: [u32; 3],
}

const X: usize = 0;
const Y: usize = 1;
const W: usize = 2;
const LOSS: usize = 3;
const GRAD: usize = 4;

/// The caller's buffers for an [`NllPlan`]: `log_probs` f32 `[N, C]`, `targets` i32 `[N]`,
/// `weight` f32 `[C]`, `loss` one f32 (reduced) or `[N]`, `grad` `[N, C]`; all
/// `BufferUsages::STORAGE`.
#[derive(Clone, Copy, Debug)]
pub struct NllBuffers<'a> {
    /// Log-probabilities. Read only.
    pub log_probs: &'a wgpu::Buffer,
    /// Class indices. Read only.
    pub targets: &'a wgpu::Buffer,
    /// Class weights, when the plan is weighted.
    pub weight: Option<&'a wgpu::Buffer>,
    /// Where the loss goes.
    pub loss: Option<&'a wgpu::Buffer>,
    /// Where the gradient with respect to the log-probabilities goes.
    pub grad: Option<&'a wgpu::Buffer>,
}

/// Negative log-likelihood planned for one shape.
pub struct NllPlan {
    desc: NllDesc,
    program: Program,
}

impl NllPlan {
    /// Plans `desc` on `ctx`.
    pub fn new(ctx: &Context, desc: &NllDesc) -> Result<Self> {
        desc.outputs.check()?;
        if desc.rows == 0 {
            return Err(Error::Empty("rows (N)"));
        }
        if desc.classes == 0 {
            return Err(Error::Empty("classes (C)"));
        }
        let o = &desc.options;
        if o.reduction == Reduction::BatchMean {
            return Err(Error::option("reduction", "batchmean is for kl-div only"));
        }
        let ignore_index = i32::try_from(o.ignore_index).map_err(|_| {
            Error::option(
                "ignore_index",
                format!("{} does not fit in an i32", o.ignore_index),
            )
        })?;
        let n = desc.rows as u64;
        let c = desc.classes as u64;
        let total = crate::cross_entropy::check_shape(desc.rows, desc.classes)?;
        let want_loss = desc.outputs.loss;
        let want_grad = desc.outputs.grad;
        let reduced = want_loss && o.reduction.is_reduced();
        let mean = o.reduction == Reduction::Mean;
        let tuning = ctx.tuning();
        let k = tuning.stream_vecs;

        let mut b = Builder::new(ctx);
        b.slot("log_probs", 4 * total, Access::Read)?;
        b.slot("targets", 4 * n, Access::Read)?;
        b.slot(
            "weight",
            if desc.weighted { 4 * c } else { 0 },
            Access::Read,
        )?;
        b.slot(
            "loss",
            match (want_loss, reduced) {
                (false, _) => 0,
                (true, true) => 4,
                (true, false) => 4 * n,
            },
            Access::Write,
        )?;
        b.slot("grad", if want_grad { 4 * total } else { 0 }, Access::Write)?;

        let pg = ctx.partial_group(1, WG);
        let key = |vec4: bool| {
            PipelineKey::new(Shader::Nll, "main", LAYOUT)
                .define("VEC4", vec4)
                .constant("WG", WG)
                .constant("SEG", WG)
                .constant("PG", pg)
                .constant("KR", KR)
                .constant("K", k)
                .constant("LANES", tuning.lanes)
                .constant("CLASSES", c as u32)
                .constant("HAS_WEIGHT", desc.weighted as u32)
                .constant("WANT_GRAD", want_grad as u32)
                .constant("WANT_ROW_LOSS", (want_loss && !reduced) as u32)
        };
        let entries = |vec4: bool, single: bool| {
            vec![
                Res::User(X, View::Scalar(4 * total)),
                Res::User(Y, View::Scalar(4 * n)),
                if desc.weighted {
                    Res::User(W, View::Scalar(4 * c))
                } else {
                    Res::Dummy(false)
                },
                if want_grad {
                    Res::User(
                        GRAD,
                        if vec4 {
                            View::Vec4(4 * total)
                        } else {
                            View::Scalar(4 * total)
                        },
                    )
                } else {
                    Res::Dummy(true)
                },
                match (want_loss, reduced) {
                    (true, false) => Res::User(LOSS, View::Scalar(4 * n)),
                    (true, true) if single => Res::User(LOSS, View::Scalar(4)),
                    _ => Res::Dummy(true),
                },
                Res::Scratch,
            ]
        };
        let base = NllParams {
            rows: n as u32,
            total: total as u32,
            ignore_index,
            grad_scale: 1.0,
            ..Default::default()
        };
        let rows_per_wg = (WG * KR) as u64;
        let vecs_per_wg = (WG * k) as u64;
        let full = total / 4;
        let tail = !total.is_multiple_of(4);
        let grad_vecs = if want_grad { total.div_ceil(4) } else { 0 };
        let single = n <= rows_per_wg && grad_vecs <= vecs_per_wg;

        if single {
            // One workgroup: everything, the weighted mean's denominator and the reduced value
            // included, in one dispatch.
            let scale_in_kernel = want_grad && mean;
            let is_single = reduced || scale_in_kernel;
            let final_mode = match (reduced, mean) {
                (false, _) => 3u32,
                (true, true) => 2,
                (true, false) => 0,
            };
            let key = key(false)
                .constant("WANT_LOSS", want_loss as u32)
                .constant("WANT_PARTIAL", 0u32)
                .constant("SINGLE", is_single as u32)
                .constant("SCALE_MODE", if scale_in_kernel { 2u32 } else { 0 })
                .constant("FINAL_MODE", final_mode);
            let p = NllParams {
                loss_rows: n as u32,
                vecs: grad_vecs as u32,
                wg_x: 1,
                ..base
            };
            b.dispatch(&key, &p, entries(false, is_single), (1, 1))?;
        } else {
            let scale_mode = if want_grad && mean {
                b.class_denominator(
                    desc.rows,
                    desc.classes,
                    ignore_index,
                    Y,
                    desc.weighted.then_some(W),
                )?;
                1u32
            } else {
                0
            };
            let loss_wgs = if want_loss {
                n.div_ceil(rows_per_wg)
            } else {
                0
            };
            let grad_wgs = if want_grad {
                full.div_ceil(vecs_per_wg)
            } else {
                0
            };
            let wgs = loss_wgs.max(grad_wgs).max(1);
            let parts = wgs * (WG / pg) as u64;
            let partial_base = if reduced { b.scratch(2 * parts)? } else { 0 };
            let (x, y) = b.fold(wgs)?;
            let key = |vec4| {
                key(vec4)
                    .constant("WANT_LOSS", want_loss as u32)
                    .constant("WANT_PARTIAL", reduced as u32)
                    .constant("SINGLE", 0u32)
                    .constant("SCALE_MODE", scale_mode)
                    .constant("FINAL_MODE", 3u32)
            };
            let p = NllParams {
                loss_rows: if want_loss { n as u32 } else { 0 },
                vecs: if want_grad { full as u32 } else { 0 },
                wg_x: x,
                partial_base,
                ..base
            };
            b.dispatch(&key(true), &p, entries(true, false), (x, y))?;
            if want_grad && tail {
                // The last, partial vec4 of the gradient.
                let p = NllParams {
                    loss_rows: 0,
                    vecs: 1,
                    vec_base: full as u32,
                    wg_x: 1,
                    ..base
                };
                let key = key(false)
                    .constant("WANT_LOSS", 0u32)
                    .constant("WANT_PARTIAL", 0u32);
                b.dispatch(&key, &p, entries(false, false), (1, 1))?;
            }
            if reduced {
                let finish = if mean {
                    Finish::WeightedMean
                } else {
                    Finish::Sum
                };
                b.reduce(parts, partial_base, finish, Some(LOSS))?;
            }
        }
        Ok(NllPlan {
            desc: desc.clone(),
            program: b.build()?,
        })
    }

    /// What this plan computes.
    pub fn desc(&self) -> &NllDesc {
        &self.desc
    }

    /// How many compute dispatches one run records.
    pub fn dispatch_count(&self) -> usize {
        self.program.dispatch_count()
    }

    fn user_buffers<'a>(buffers: &NllBuffers<'a>) -> [Option<&'a wgpu::Buffer>; 5] {
        [
            Some(buffers.log_probs),
            Some(buffers.targets),
            buffers.weight,
            buffers.loss,
            buffers.grad,
        ]
    }

    /// Records the loss and gradient into `encoder`. Nothing is submitted.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &NllBuffers<'_>,
    ) -> Result<()> {
        self.program
            .record(encoder, &Self::user_buffers(buffers), None)
    }

    /// The invalid class targets the last run counted. Blocks on a small readback.
    pub fn read_status(&self) -> Result<Status> {
        transfer::read_status(&self.program)
    }

    /// Records, submits, waits, and turns invalid class targets into [`Error::InvalidOnGpu`].
    pub fn run(&self, buffers: &NllBuffers<'_>) -> Result<()> {
        transfer::run_resident(&self.program, &Self::user_buffers(buffers))?
            .check("class targets (outside [0, C))")
    }
}

impl Context {
    /// Negative log-likelihood of `log_probs` `[N, C]` (N = `targets.len()`) and class indices
    /// `targets`, with an optional class `weight` `[C]`. Targets are checked on the host.
    pub fn nll(
        &self,
        log_probs: &[f32],
        targets: &[i64],
        classes: usize,
        weight: Option<&[f32]>,
        options: &NllOptions,
        outputs: Outputs,
    ) -> Result<LossOutput> {
        let total = crate::cross_entropy::check_shape(targets.len(), classes)?;
        if log_probs.len() as u64 != total {
            return Err(Error::LengthMismatch {
                what: "log_probs (N * C)",
                expected: usize::try_from(total).unwrap_or(usize::MAX),
                actual: log_probs.len(),
            });
        }
        if let Some(w) = weight
            && w.len() != classes
        {
            return Err(Error::LengthMismatch {
                what: "weight (C)",
                expected: classes,
                actual: w.len(),
            });
        }
        let y = crate::cross_entropy::class_targets_i32(targets, classes, options.ignore_index)?;
        let desc = NllDesc {
            rows: targets.len(),
            classes,
            weighted: weight.is_some(),
            options: *options,
            outputs,
        };
        let plan = NllPlan::new(self, &desc)?;
        let n = targets.len() as u64;
        let loss_bytes = if options.reduction.is_reduced() {
            4
        } else {
            4 * n
        };
        let slots = [
            HostSlot::input("log_probs", Some(log_probs)),
            HostSlot::input("targets", Some(&y[..])),
            HostSlot::input("weight", weight),
            HostSlot::output("loss", outputs.loss, loss_bytes),
            HostSlot::output("grad", outputs.grad, 4 * total),
        ];
        transfer::run_host(
            &plan.program,
            &slots,
            outputs.loss.then_some(LOSS),
            outputs.grad.then_some(GRAD),
            options.reduction,
            "class targets (outside [0, C))",
        )
    }
}
