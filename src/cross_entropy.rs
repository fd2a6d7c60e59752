//! Cross-entropy over rows of C classes, three ways:
//!
//! - from logits with integer class targets ([`TargetKind::Classes`]), PyTorch's
//!   `cross_entropy(x, y)` with `weight`, `ignore_index`, `label_smoothing`, plus PaLM's z-loss
//!   and Gemma 2's logit softcap;
//! - from logits with probability targets ([`TargetKind::Probabilities`]), PyTorch's
//!   `cross_entropy(x, p)`;
//! - from probabilities ([`CrossEntropyProbsPlan`]), the classic `-sum y_true log(y_pred + eps)`.
//!
//! Kernel: `shaders/cross_entropy.wgsl` (and `shaders/class_targets.wgsl` for a weighted mean's
//! denominator when the gradient needs it first). CPU twin: [`crate::cpu::cross_entropy`].
//!
//! Mean denominators, as PyTorch: class targets divide by the sum of the target classes'
//! weights over rows that are not ignored (the count of such rows without weights; NaN when
//! every row is ignored, whose gradient is then all zeros); probability targets and the
//! classic form divide by the row count N.

use bytemuck::{Pod, Zeroable};

use crate::context::{Binding, PipelineKey};
use crate::program::{Access, Builder, Finish, Program, Res, Status, View, WG, elements};
use crate::reduction::{LossOutput, Outputs, Reduction};
use crate::shader::Shader;
use crate::transfer::HostSlot;
use crate::{Context, Error, Result, transfer};

const LAYOUT: &[Binding] = &[
    Binding::Uniform,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
];
/// In place, x is written (with the gradient) and binding 5 is unused.
const LAYOUT_IN_PLACE: &[Binding] = &[
    Binding::Uniform,
    Binding::ReadWrite,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
];

/// The options of cross-entropy from logits, with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyOptions {
    /// The reduction (none: one loss per row).
    pub reduction: Reduction,
    /// Rows whose class target equals this weigh nothing (class targets only). PyTorch's
    /// default is -100. Must fit in an i32.
    pub ignore_index: i64,
    /// Mixes the target with the uniform distribution: `q = (1 - ls) target + ls / C`, in [0, 1].
    pub label_smoothing: f32,
    /// Adds `z_loss * lse^2` per row (PaLM's auxiliary loss; weighted by the row's class
    /// weight for class targets), >= 0.
    pub z_loss: f32,
    /// Replaces each logit x by `cap * tanh(x / cap)` before the softmax (Gemma 2), cap > 0.
    pub softcap: Option<f32>,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions {
            reduction: Reduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
        }
    }
}

impl CrossEntropyOptions {
    /// Sets the reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    fn check(&self) -> Result<()> {
        if self.reduction == Reduction::BatchMean {
            return Err(Error::option("reduction", "batchmean is for kl-div only"));
        }
        if i32::try_from(self.ignore_index).is_err() {
            return Err(Error::option(
                "ignore_index",
                format!("{} does not fit in an i32", self.ignore_index),
            ));
        }
        let ls = self.label_smoothing;
        if !(0.0..=1.0).contains(&ls) {
            return Err(Error::option(
                "label_smoothing",
                format!("{ls} is outside [0, 1]"),
            ));
        }
        if !(self.z_loss >= 0.0 && self.z_loss.is_finite()) {
            return Err(Error::option(
                "z_loss",
                format!("{} is not a non-negative finite number", self.z_loss),
            ));
        }
        if let Some(cap) = self.softcap
            && !(cap > 0.0 && cap.is_finite())
        {
            return Err(Error::option(
                "softcap",
                format!("{cap} is not a positive finite number"),
            ));
        }
        Ok(())
    }
}

/// What the targets of cross-entropy from logits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// One class index per row, i32 on the GPU.
    Classes,
    /// A probability distribution per row, f32 `[N, C]`.
    Probabilities,
}

/// What a [`CrossEntropyPlan`] computes.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropyDesc {
    /// Rows N.
    pub rows: usize,
    /// Classes C.
    pub classes: usize,
    /// Class indices or probabilities.
    pub targets: TargetKind,
    /// Whether a class weight `[C]` is given.
    pub weighted: bool,
    /// The options.
    pub options: CrossEntropyOptions,
    /// What to compute.
    pub outputs: Outputs,
    /// Write the gradient over the logits (no second `[N, C]` buffer).
    pub in_place: bool,
}

impl CrossEntropyDesc {
    /// Class-index targets, default options, loss and gradient.
    pub fn new(rows: usize, classes: usize) -> Self {
        CrossEntropyDesc {
            rows,
            classes,
            targets: TargetKind::Classes,
            weighted: false,
            options: CrossEntropyOptions::default(),
            outputs: Outputs::BOTH,
            in_place: false,
        }
    }

    /// Sets the target kind.
    pub fn targets(mut self, targets: TargetKind) -> Self {
        self.targets = targets;
        self
    }

    /// Sets the options.
    pub fn options(mut self, options: CrossEntropyOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets what to compute.
    pub fn outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }

    /// Declares a class weight.
    pub fn weighted(mut self, weighted: bool) -> Self {
        self.weighted = weighted;
        self
    }

    /// Writes the gradient over the logits.
    pub fn in_place(mut self, in_place: bool) -> Self {
        self.in_place = in_place;
        self
    }
}

/// Keep in sync with `Params` in shaders/cross_entropy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct CeParams {
    rows: u32,
    classes: u32,
    blocks: u32,
    block_base: u32,
    chunks: u32,
    wg_chunks: u32,
    wg_x: u32,
    partial_base: u32,
    stats_base: u32,
    total: u32,
    ignore_index: i32,
    flags: u32,
    label_smoothing: f32,
    z_loss: f32,
    softcap: f32,
    eps: f32,
    grad_scale: f32,
    mean_den: f32,
    scale_mode: u32,
    final_mode: u32,
}

/// `CeParams::flags` bits (keep in sync with cross_entropy.wgsl).
const ROW_LOSS: u32 = 1;
const PARTIAL: u32 = 2;
const SINGLE: u32 = 4;

/// User buffer slots of the program, in the order the record functions pass them.
const X: usize = 0;
const T: usize = 1;
const Y: usize = 2;
const W: usize = 3;
const LOSS: usize = 4;
const GRAD: usize = 5;

/// How the work is laid out over invocations. Chosen from the shape; `bench` can override it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tiling {
    /// Invocations per block (a power of two up to WG), fused layout.
    pub seg: u32,
    /// vec4s per invocation, at most `Tuning::register_vecs` (KMAX = 32 in cross_entropy.wgsl).
    pub k: u32,
}

/// Everything the cross-entropy kernel family needs to plan one shape.
struct RowsSpec {
    /// TARGETS in the shader: 0 class indices, 1 probability targets, 2 the classic form.
    kind: u32,
    rows: usize,
    classes: usize,
    weighted: bool,
    ignore_index: i32,
    label_smoothing: f32,
    z_loss: f32,
    softcap: Option<f32>,
    eps: f32,
    reduction: Reduction,
    outputs: Outputs,
    in_place: bool,
}

/// Rows per block: the fewest whose elements fill whole vec4s.
fn rows_per_block(classes: usize) -> usize {
    match classes % 4 {
        0 => 1,
        2 => 2,
        _ => 4,
    }
}

/// The fused layout's tiling for a block of `bv` vec4s (the fewest invocations per block that
/// hold it in at most `kmax` vec4s each), or None when a block is too long for one workgroup.
fn fused_tiling(bv: u64, kmax: u32) -> Option<Tiling> {
    if bv > (WG * kmax) as u64 {
        return None;
    }
    let seg = (bv.div_ceil(kmax as u64).max(1) as u32).next_power_of_two();
    Some(Tiling {
        seg,
        k: bv.div_ceil(seg as u64) as u32,
    })
}

fn build(ctx: &Context, s: &RowsSpec) -> Result<Program> {
    let n = s.rows as u64;
    let c = s.classes as u64;
    let tuning = ctx.tuning();
    let kmax = tuning.register_vecs;
    let total = elements("logits", &[s.rows, s.classes])?;
    // Blocks of 2 or 4 rows keep every block on a vec4 boundary; when such a block is too long
    // for one workgroup but a single row is not, rows go one a block, unaligned, and are still
    // read once (scalar bindings: see UNALIGNED in the shader).
    let aligned_rows = rows_per_block(s.classes) as u64;
    let unaligned = aligned_rows > 1
        && fused_tiling(aligned_rows * c / 4, kmax).is_none()
        && fused_tiling(c.div_ceil(4), kmax).is_some();
    let rb = if unaligned { 1 } else { aligned_rows };
    let bv = if unaligned { c.div_ceil(4) } else { rb * c / 4 };
    let blocks = n.div_ceil(rb);
    let full_blocks = n / rb;
    let tail = !n.is_multiple_of(rb);
    let want_loss = s.outputs.loss;
    let want_grad = s.outputs.grad;
    let reduced = want_loss && s.reduction.is_reduced();
    let mean = s.reduction == Reduction::Mean;
    // Class targets divide their mean by a sum of weights that only the data knows.
    let weighted_mean = mean && s.kind == 0;
    let grad_scale = if mean && !weighted_mean {
        (1.0 / n as f64) as f32
    } else {
        1.0
    };
    let final_mode = match (reduced, s.reduction, weighted_mean) {
        (false, _, _) => 3,
        (true, Reduction::Sum, _) => 0,
        (true, _, true) => 2,
        (true, _, false) => 1,
    };
    let finish = match final_mode {
        0 => Finish::Sum,
        2 => Finish::WeightedMean,
        _ => Finish::Mean(n as f64),
    };

    let mut b = Builder::new(ctx);
    let logits_access = if s.in_place && want_grad {
        Access::Write
    } else {
        Access::Read
    };
    b.slot("logits", 4 * total, logits_access)?;
    b.slot(
        "targets",
        if s.kind == 0 { 0 } else { 4 * total },
        Access::Read,
    )?;
    b.slot("targets", if s.kind == 0 { 4 * n } else { 0 }, Access::Read)?;
    b.slot("weight", if s.weighted { 4 * c } else { 0 }, Access::Read)?;
    b.slot(
        "loss",
        match (want_loss, reduced) {
            (false, _) => 0,
            (true, true) => 4,
            (true, false) => 4 * n,
        },
        Access::Write,
    )?;
    b.slot(
        "grad",
        if want_grad && !s.in_place {
            4 * total
        } else {
            0
        },
        Access::Write,
    )?;

    let base_params = CeParams {
        rows: n as u32,
        classes: c as u32,
        total: total as u32,
        ignore_index: s.ignore_index,
        label_smoothing: s.label_smoothing,
        z_loss: s.z_loss,
        softcap: s.softcap.unwrap_or(1.0),
        eps: s.eps,
        grad_scale,
        mean_den: n as f32,
        flags: if want_loss && !reduced { ROW_LOSS } else { 0 },
        final_mode: 3,
        ..Default::default()
    };
    let key = |entry: &'static str, vec4: bool, t: Tiling| {
        PipelineKey::new(
            Shader::CrossEntropy,
            entry,
            if s.in_place { LAYOUT_IN_PLACE } else { LAYOUT },
        )
        .define("VEC4", vec4 && !unaligned)
        .define("UNALIGNED", unaligned)
        .define("INPLACE", s.in_place)
        .constant("WG", WG)
        .constant("SEG", t.seg)
        .value("K", t.k)
        .constant("LANES", tuning.lanes)
        .constant("ROWS", rb as u32)
        .constant("CLASSES", c as u32)
        .constant("TARGETS", s.kind)
        .constant("HAS_WEIGHT", s.weighted as u32)
        .constant("SMOOTH", (s.label_smoothing > 0.0) as u32)
        .constant("ZLOSS", (s.z_loss > 0.0) as u32)
        .constant("SOFTCAP", s.softcap.is_some() as u32)
    };
    // Bindings 1..=7; `single`: this dispatch writes the reduced value itself.
    let entries = |vec4: bool, single: bool| {
        let view = |bytes: u64| {
            if vec4 && !unaligned {
                View::Vec4(bytes)
            } else {
                View::Scalar(bytes)
            }
        };
        vec![
            Res::User(X, view(4 * total)),
            if s.kind == 0 {
                Res::Dummy(false)
            } else {
                Res::User(T, view(4 * total))
            },
            if s.kind == 0 {
                Res::User(Y, View::Scalar(4 * n))
            } else {
                Res::Dummy(false)
            },
            if s.weighted {
                Res::User(W, View::Scalar(4 * c))
            } else {
                Res::Dummy(false)
            },
            if want_grad && !s.in_place {
                Res::User(GRAD, view(4 * total))
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

    match fused_tiling(bv, kmax) {
        Some(t) => {
            let per_wg = (WG / t.seg) as u64;
            let wgs_all = blocks.div_ceil(per_wg);
            if wgs_all == 1 {
                // One workgroup holds everything: one dispatch, which also reduces, and finds a
                // weighted mean's denominator itself.
                let scale_in_kernel = want_grad && weighted_mean;
                let single = reduced || scale_in_kernel;
                let key = key("fused", false, t).constant("WANT_GRAD", want_grad as u32);
                let p = CeParams {
                    blocks: blocks as u32,
                    wg_x: 1,
                    chunks: 1,
                    wg_chunks: 1,
                    flags: base_params.flags | if single { SINGLE } else { 0 },
                    scale_mode: if scale_in_kernel { 2 } else { 0 },
                    final_mode,
                    ..base_params
                };
                b.dispatch(&key, &p, entries(false, single), (1, 1))?;
                return b.build();
            }
            let scale_mode = if want_grad && weighted_mean {
                b.class_denominator(
                    s.rows,
                    s.classes,
                    s.ignore_index,
                    Y,
                    s.weighted.then_some(W),
                )?;
                1u32
            } else {
                0
            };
            let main_wgs = full_blocks.div_ceil(per_wg);
            let pg = ctx.partial_group(t.seg, WG);
            let parts_per_wg = (WG / pg) as u64;
            let parts = (main_wgs + tail as u64) * parts_per_wg;
            let partial_base = if reduced { b.scratch(2 * parts)? } else { 0 };
            let key = |vec4| {
                key("fused", vec4, t)
                    .constant("PG", pg)
                    .constant("WANT_GRAD", want_grad as u32)
            };
            let base_params = CeParams {
                flags: base_params.flags | if reduced { PARTIAL } else { 0 },
                scale_mode,
                ..base_params
            };
            let (x, y) = b.fold(main_wgs)?;
            let p = CeParams {
                blocks: full_blocks as u32,
                wg_x: x,
                chunks: 1,
                wg_chunks: 1,
                partial_base,
                ..base_params
            };
            b.dispatch(&key(true), &p, entries(true, false), (x, y))?;
            if tail {
                let p = CeParams {
                    blocks: 1,
                    block_base: full_blocks as u32,
                    wg_x: 1,
                    chunks: 1,
                    wg_chunks: 1,
                    partial_base: partial_base + 2 * (main_wgs * parts_per_wg) as u32,
                    ..base_params
                };
                b.dispatch(&key(false), &p, entries(false, false), (1, 1))?;
            }
            if reduced {
                b.reduce(parts, partial_base, finish, Some(LOSS))?;
            }
        }
        None => {
            // Rows longer than a workgroup holds: per-chunk statistics, then a pass that merges
            // them and writes the gradient from a second read.
            let t = Tiling { seg: WG, k: kmax };
            let chunks = bv.div_ceil((WG * kmax) as u64);
            let scale_mode = if want_grad && weighted_mean {
                b.class_denominator(
                    s.rows,
                    s.classes,
                    s.ignore_index,
                    Y,
                    s.weighted.then_some(W),
                )?;
                1u32
            } else {
                0
            };
            let stats_base = b.scratch(blocks * chunks * rb * 8)?;
            // The classic form's gradient needs no statistics: the stats pass writes it.
            let grad_in_stats = want_grad && s.kind == 2;
            let grad_in_finish = want_grad && s.kind != 2;
            let finish_chunks = if grad_in_finish { chunks } else { 1 };
            let main_parts = full_blocks * finish_chunks;
            let parts = main_parts + if tail { finish_chunks } else { 0 };
            let partial_base = if reduced { b.scratch(2 * parts)? } else { 0 };
            let stats_key =
                |vec4| key("stats", vec4, t).constant("WANT_GRAD", grad_in_stats as u32);
            let finish_key =
                |vec4| key("finish", vec4, t).constant("WANT_GRAD", grad_in_finish as u32);
            let base = CeParams {
                chunks: chunks as u32,
                stats_base,
                flags: base_params.flags | if reduced { PARTIAL } else { 0 },
                scale_mode,
                ..base_params
            };
            let mut passes = Vec::new();
            if full_blocks > 0 {
                passes.push((true, full_blocks, 0u64, partial_base));
            }
            if tail {
                passes.push((false, 1, full_blocks, partial_base + 2 * main_parts as u32));
            }
            for &(vec4, nblocks, block_base, _) in &passes {
                let (x, y) = b.fold(nblocks * chunks)?;
                let p = CeParams {
                    blocks: nblocks as u32,
                    block_base: block_base as u32,
                    wg_chunks: chunks as u32,
                    wg_x: x,
                    ..base
                };
                b.dispatch(&stats_key(vec4), &p, entries(vec4, false), (x, y))?;
            }
            for &(vec4, nblocks, block_base, pbase) in &passes {
                let (x, y) = b.fold(nblocks * finish_chunks)?;
                let p = CeParams {
                    blocks: nblocks as u32,
                    block_base: block_base as u32,
                    wg_chunks: finish_chunks as u32,
                    wg_x: x,
                    partial_base: pbase,
                    ..base
                };
                b.dispatch(&finish_key(vec4), &p, entries(vec4, false), (x, y))?;
            }
            if reduced {
                b.reduce(parts, partial_base, finish, Some(LOSS))?;
            }
        }
    }
    b.build()
}

/// The caller's buffers for one run of a [`CrossEntropyPlan`]. Each needs
/// `BufferUsages::STORAGE` and at least the bytes of the plan's shape.
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropyBuffers<'a> {
    /// Logits, f32 `[N, C]` row-major. Read only, unless the plan is in place: then the
    /// gradient replaces them.
    pub logits: &'a wgpu::Buffer,
    /// Class indices, i32 `[N]`, or probabilities, f32 `[N, C]`.
    pub targets: &'a wgpu::Buffer,
    /// Class weights, f32 `[C]`, when the plan is weighted.
    pub weight: Option<&'a wgpu::Buffer>,
    /// The loss: one f32 when reduced, `[N]` for `Reduction::None`.
    pub loss: Option<&'a wgpu::Buffer>,
    /// The gradient, f32 `[N, C]` (None when in place).
    pub grad: Option<&'a wgpu::Buffer>,
}

/// Cross-entropy from logits planned for one shape. Record it as often as needed.
pub struct CrossEntropyPlan {
    desc: CrossEntropyDesc,
    program: Program,
}

impl CrossEntropyPlan {
    /// Plans `desc` on `ctx`.
    pub fn new(ctx: &Context, desc: &CrossEntropyDesc) -> Result<Self> {
        desc.options.check()?;
        desc.outputs.check()?;
        check_shape(desc.rows, desc.classes)?;
        if desc.in_place && !desc.outputs.grad {
            return Err(Error::option(
                "in_place",
                "writes the gradient, which is not asked for",
            ));
        }
        let o = &desc.options;
        let spec = RowsSpec {
            kind: match desc.targets {
                TargetKind::Classes => 0,
                TargetKind::Probabilities => 1,
            },
            rows: desc.rows,
            classes: desc.classes,
            weighted: desc.weighted,
            ignore_index: o.ignore_index as i32,
            label_smoothing: o.label_smoothing,
            z_loss: o.z_loss,
            softcap: o.softcap,
            eps: 0.0,
            reduction: o.reduction,
            outputs: desc.outputs,
            in_place: desc.in_place,
        };
        Ok(CrossEntropyPlan {
            desc: desc.clone(),
            program: build(ctx, &spec)?,
        })
    }

    /// What this plan computes.
    pub fn desc(&self) -> &CrossEntropyDesc {
        &self.desc
    }

    /// How many compute dispatches one run records.
    pub fn dispatch_count(&self) -> usize {
        self.program.dispatch_count()
    }

    /// Records the loss and gradient into `encoder`. Nothing is submitted.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &CrossEntropyBuffers<'_>,
    ) -> Result<()> {
        self.record_timed(encoder, buffers, None)
    }

    /// [`record`](Self::record) with timestamp writes around the compute pass.
    pub fn record_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &CrossEntropyBuffers<'_>,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()> {
        self.program
            .record(encoder, &self.user_buffers(buffers), timestamps)
    }

    /// The invalid class targets the last run counted (outside [0, C) and not ignore_index).
    /// Blocks on a small readback.
    pub fn read_status(&self) -> Result<Status> {
        transfer::read_status(&self.program)
    }

    /// The convenience level for GPU-resident data: records into an encoder of its own, submits
    /// on the context's queue, waits, and turns invalid class targets the kernel counted into
    /// [`Error::InvalidOnGpu`]. The results are in `buffers.loss` and `buffers.grad`.
    pub fn run(&self, buffers: &CrossEntropyBuffers<'_>) -> Result<()> {
        transfer::run_resident(&self.program, &self.user_buffers(buffers))?.check(CLASS_INVALID)
    }

    fn user_buffers<'a>(&self, buffers: &CrossEntropyBuffers<'a>) -> [Option<&'a wgpu::Buffer>; 6] {
        let classes = self.desc.targets == TargetKind::Classes;
        [
            Some(buffers.logits),
            (!classes).then_some(buffers.targets),
            classes.then_some(buffers.targets),
            buffers.weight,
            buffers.loss,
            buffers.grad,
        ]
    }

    fn run_host(
        &self,
        logits: &[f32],
        targets: &[u8],
        weight: Option<&[f32]>,
    ) -> Result<LossOutput> {
        let d = &self.desc;
        run_rows(
            &self.program,
            d.rows,
            d.classes,
            d.options.reduction,
            d.outputs,
            RowInputs {
                x: logits,
                targets,
                targets_are_classes: d.targets == TargetKind::Classes,
                weight,
                in_place: d.in_place,
                invalid: CLASS_INVALID,
            },
        )
    }
}

struct RowInputs<'a> {
    x: &'a [f32],
    targets: &'a [u8],
    targets_are_classes: bool,
    weight: Option<&'a [f32]>,
    in_place: bool,
    /// What the kernels count as invalid, for the error.
    invalid: &'static str,
}

/// What the kernels count as invalid, in [`Error::InvalidOnGpu`].
const CLASS_INVALID: &str = "class targets (outside [0, C))";
const PROBS_INVALID: &str = "probabilities (outside [0, 1])";

fn run_rows(
    program: &Program,
    rows: usize,
    classes: usize,
    reduction: Reduction,
    outputs: Outputs,
    inp: RowInputs<'_>,
) -> Result<LossOutput> {
    let n = rows as u64;
    let total = elements("logits", &[rows, classes])?;
    let loss_bytes = if reduction.is_reduced() { 4 } else { 4 * n };
    let targets = |classes: bool| {
        if classes == inp.targets_are_classes {
            HostSlot::Input("targets", inp.targets)
        } else {
            HostSlot::Unused
        }
    };
    let slots = [
        HostSlot::input("logits", Some(inp.x)),
        targets(false),
        targets(true),
        HostSlot::input("weight", inp.weight),
        HostSlot::output("loss", outputs.loss, loss_bytes),
        HostSlot::output("grad", outputs.grad && !inp.in_place, 4 * total),
    ];
    // In place, the gradient is read back from the logits' buffer.
    let grad = outputs.grad.then_some(if inp.in_place { X } else { GRAD });
    transfer::run_host(
        program,
        &slots,
        outputs.loss.then_some(LOSS),
        grad,
        reduction,
        inp.invalid,
    )
}

/// Checks a `[rows, classes]` shape: no empty dimension, an element count the kernels index,
/// and classes that class targets (i32 on the GPU) can name.
pub(crate) fn check_shape(rows: usize, classes: usize) -> Result<u64> {
    if rows == 0 {
        return Err(Error::Empty("rows (N)"));
    }
    if classes == 0 {
        return Err(Error::Empty("classes (C)"));
    }
    if i32::try_from(classes).is_err() {
        return Err(Error::option(
            "classes",
            format!("{classes} is more than class targets (i32) can name"),
        ));
    }
    elements("rows x classes", &[rows, classes])
}

/// Checks that host data of `actual` elements has the `expected` count of a shape.
fn check_count(what: &'static str, expected: u64, actual: usize) -> Result<()> {
    if expected == actual as u64 {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
            actual,
        })
    }
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}

/// Checks host class targets: each in [0, C) or equal to `ignore_index`; returns them as i32.
pub(crate) fn class_targets_i32(
    targets: &[i64],
    classes: usize,
    ignore_index: i64,
) -> Result<Vec<i32>> {
    targets
        .iter()
        .enumerate()
        .map(|(row, &t)| {
            let in_range = i64::try_from(classes).is_ok_and(|c| (0..c).contains(&t));
            match i32::try_from(t) {
                Ok(t32) if t == ignore_index || in_range => Ok(t32),
                _ => Err(Error::TargetOutOfRange {
                    row,
                    value: t,
                    classes,
                }),
            }
        })
        .collect()
}

impl Context {
    /// Cross-entropy from `logits` `[N, C]` (row-major, N = `logits.len() / classes`) and class
    /// indices `targets` `[N]`, with an optional class `weight` `[C]`. Targets are checked on
    /// the host: each in `[0, C)` or equal to `options.ignore_index`.
    pub fn cross_entropy(
        &self,
        logits: &[f32],
        targets: &[i64],
        classes: usize,
        weight: Option<&[f32]>,
        options: &CrossEntropyOptions,
        outputs: Outputs,
    ) -> Result<LossOutput> {
        let total = check_shape(targets.len(), classes)?;
        check_count("logits (N * C)", total, logits.len())?;
        if let Some(w) = weight {
            check_len("weight (C)", classes, w.len())?;
        }
        options.check()?;
        let y = class_targets_i32(targets, classes, options.ignore_index)?;
        let desc = CrossEntropyDesc::new(targets.len(), classes)
            .options(*options)
            .outputs(outputs)
            .weighted(weight.is_some());
        CrossEntropyPlan::new(self, &desc)?.run_host(logits, bytemuck::cast_slice(&y), weight)
    }

    /// Cross-entropy from `logits` `[N, C]` and probability targets `[N, C]` (PyTorch's
    /// `cross_entropy` with a float target): `-sum_c w_c q_c log_softmax(x)_c` per row; the mean
    /// divides by N. `ignore_index` does not apply.
    pub fn cross_entropy_soft(
        &self,
        logits: &[f32],
        target_probs: &[f32],
        classes: usize,
        weight: Option<&[f32]>,
        options: &CrossEntropyOptions,
        outputs: Outputs,
    ) -> Result<LossOutput> {
        if classes == 0 {
            return Err(Error::Empty("classes (C)"));
        }
        check_shape(logits.len() / classes, classes)?;
        if !logits.len().is_multiple_of(classes) {
            return Err(Error::option(
                "classes",
                format!("{} logits are not rows of {classes}", logits.len()),
            ));
        }
        check_len(
            "targets (N * C, like the logits)",
            logits.len(),
            target_probs.len(),
        )?;
        if let Some(w) = weight {
            check_len("weight (C)", classes, w.len())?;
        }
        let desc = CrossEntropyDesc::new(logits.len() / classes, classes)
            .targets(TargetKind::Probabilities)
            .options(*options)
            .outputs(outputs)
            .weighted(weight.is_some());
        CrossEntropyPlan::new(self, &desc)?.run_host(
            logits,
            bytemuck::cast_slice(target_probs),
            weight,
        )
    }

    /// Cross-entropy from probabilities, the classic formula: per row
    /// `-sum_c y_true log(y_pred + eps)`; `mean` divides by the row count N, like PyTorch and
    /// Keras. (numpy's one-liner `-np.mean(y_true * np.log(y_pred + eps))` divides by N * C:
    /// that is this sum divided by N * C.) The gradient is with respect to `probs`.
    pub fn cross_entropy_probs(
        &self,
        probs: &[f32],
        targets: &[f32],
        classes: usize,
        eps: f32,
        reduction: Reduction,
        outputs: Outputs,
    ) -> Result<LossOutput> {
        if classes == 0 {
            return Err(Error::Empty("classes (C)"));
        }
        if !probs.len().is_multiple_of(classes) {
            return Err(Error::option(
                "classes",
                format!("{} probabilities are not rows of {classes}", probs.len()),
            ));
        }
        check_len(
            "targets (N * C, like the probabilities)",
            probs.len(),
            targets.len(),
        )?;
        crate::cpu::pointwise::check_probabilities("probs", probs)?;
        let desc = CrossEntropyProbsDesc {
            rows: probs.len() / classes,
            classes,
            eps,
            reduction,
            outputs,
        };
        let plan = CrossEntropyProbsPlan::new(self, &desc)?;
        run_rows(
            &plan.program,
            desc.rows,
            classes,
            reduction,
            outputs,
            RowInputs {
                x: probs,
                targets: bytemuck::cast_slice(targets),
                targets_are_classes: false,
                weight: None,
                in_place: false,
                invalid: PROBS_INVALID,
            },
        )
    }
}

/// What a [`CrossEntropyProbsPlan`] computes: the classic cross-entropy on probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropyProbsDesc {
    /// Rows N.
    pub rows: usize,
    /// Classes C.
    pub classes: usize,
    /// Added to the probabilities inside the log, >= 0 (1e-7 is Keras' epsilon).
    pub eps: f32,
    /// The reduction; `mean` divides by N.
    pub reduction: Reduction,
    /// What to compute.
    pub outputs: Outputs,
}

/// The caller's buffers for a [`CrossEntropyProbsPlan`]: `probs` and `targets` f32 `[N, C]`,
/// `loss` one f32 (reduced) or `[N]`, `grad` `[N, C]`; all `BufferUsages::STORAGE`.
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropyProbsBuffers<'a> {
    /// Predicted probabilities. Read only.
    pub probs: &'a wgpu::Buffer,
    /// Target distributions. Read only.
    pub targets: &'a wgpu::Buffer,
    /// Where the loss goes.
    pub loss: Option<&'a wgpu::Buffer>,
    /// Where the gradient with respect to `probs` goes.
    pub grad: Option<&'a wgpu::Buffer>,
}

/// Cross-entropy from probabilities planned for one shape.
pub struct CrossEntropyProbsPlan {
    desc: CrossEntropyProbsDesc,
    program: Program,
}

impl CrossEntropyProbsPlan {
    /// Plans `desc` on `ctx`.
    pub fn new(ctx: &Context, desc: &CrossEntropyProbsDesc) -> Result<Self> {
        check_shape(desc.rows, desc.classes)?;
        desc.outputs.check()?;
        if !(desc.eps >= 0.0 && desc.eps.is_finite()) {
            return Err(Error::option(
                "eps",
                format!("{} is not a non-negative finite number", desc.eps),
            ));
        }
        if desc.reduction == Reduction::BatchMean {
            return Err(Error::option("reduction", "batchmean is for kl-div only"));
        }
        let spec = RowsSpec {
            kind: 2,
            rows: desc.rows,
            classes: desc.classes,
            weighted: false,
            ignore_index: 0,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            eps: desc.eps,
            reduction: desc.reduction,
            outputs: desc.outputs,
            in_place: false,
        };
        Ok(CrossEntropyProbsPlan {
            desc: desc.clone(),
            program: build(ctx, &spec)?,
        })
    }

    /// What this plan computes.
    pub fn desc(&self) -> &CrossEntropyProbsDesc {
        &self.desc
    }

    /// How many compute dispatches one run records.
    pub fn dispatch_count(&self) -> usize {
        self.program.dispatch_count()
    }

    /// Records the loss and gradient into `encoder`. Nothing is submitted.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &CrossEntropyProbsBuffers<'_>,
    ) -> Result<()> {
        self.record_timed(encoder, buffers, None)
    }

    /// [`record`](Self::record) with timestamp writes around the compute pass.
    pub fn record_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &CrossEntropyProbsBuffers<'_>,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()> {
        self.program
            .record(encoder, &Self::user_buffers(buffers), timestamps)
    }

    fn user_buffers<'a>(buffers: &CrossEntropyProbsBuffers<'a>) -> [Option<&'a wgpu::Buffer>; 6] {
        [
            Some(buffers.probs),
            Some(buffers.targets),
            None,
            None,
            buffers.loss,
            buffers.grad,
        ]
    }

    /// Records, submits on the context's queue, waits, and turns probabilities the kernel
    /// counted outside [0, 1] into [`Error::InvalidOnGpu`].
    pub fn run(&self, buffers: &CrossEntropyProbsBuffers<'_>) -> Result<()> {
        transfer::run_resident(&self.program, &Self::user_buffers(buffers))?.check(PROBS_INVALID)
    }

    /// The probabilities outside [0, 1] the last run counted. Blocks on a small readback.
    pub fn read_status(&self) -> Result<Status> {
        transfer::read_status(&self.program)
    }
}
