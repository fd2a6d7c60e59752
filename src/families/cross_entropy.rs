//! Cross-entropy from logits over rows of C classes, two ways:
//!
//! - with class-index targets ([`Targets::Classes`]), PyTorch's `cross_entropy(x, y)` with
//!   `weight`, `ignore_index`, `label_smoothing`, plus PaLM's z-loss and Gemma 2's logit softcap;
//! - with probability targets ([`Targets::Probabilities`]), PyTorch's `cross_entropy(x, p)`.
//!
//! (The classic form on probability *inputs*, `-sum y_true log(y_pred + eps)`, needs no softmax:
//! it is a streaming loss, [`crate::ClassicCrossEntropyDesc`] in [`crate::families::pointwise`].)
//!
//! Kernel: `shaders/cross_entropy.wgsl` (and [`crate::families::class_targets`]' passes for a weighted
//! mean's denominator when the gradient needs it first). CPU twin: [`crate::cpu::cross_entropy`].
//!
//! Mean denominators, as PyTorch: class targets divide by the sum of the target classes'
//! weights over rows that are not ignored (the count of such rows without weights; NaN when
//! every row is ignored, whose gradient is then all zeros); probability targets divide by the
//! row count N.
//!
//! The planner ([`Planner`]) picks one of three layouts from the shape: one workgroup for the
//! whole problem, fused blocks of rows (each read once), or rows chunked over workgroups
//! (statistics, then a second read that writes the gradient).

use crate::dtype::DType;
use crate::engine::context::PipelineKey;
use crate::engine::kernel::{Binding, Kernel, ScaleMode, params};
use crate::engine::program::{
    Access, After, Builder, Finish, Res, View, WG, Windowing, loss_bytes, loss_res, partial_group,
};
use crate::engine::slots::Slot;
use crate::error::{Error, Result};
use crate::families::class_targets::{CLASS_INVALID, ClassTargets, check_shape, class_targets_i32};
use crate::plan::roles::{GRAD, INPUT, LOSS, TARGET, WEIGHT};
use crate::plan::sealed::Tensors;
use crate::plan::{
    HostData, Inputs, buffers, bytes, check_count, check_declared, check_grad_dtype, setters,
    value_bytes,
};
use crate::reduction::{Field, Outputs, Reduction};

/// What the targets of cross-entropy from logits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Targets {
    /// One class index per row, i32 on the GPU (`Inputs::classes` on the host).
    Classes,
    /// A probability distribution per row, f32 `[N, C]` like the logits.
    Probabilities,
}

/// One shard of a vocabulary split over devices: the classes `[offset, offset + classes)` of
/// `vocab`, and which of its two steps a plan runs (see [`combine_shards`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The shard's first class in the vocabulary.
    pub offset: usize,
    /// The whole vocabulary's class count.
    pub vocab: usize,
    /// Statistics, or the gradient from the combined statistics.
    pub step: ShardStep,
}

/// The two steps of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardStep {
    /// Each row's statistics over the shard's classes (`CrossEntropyBuffers::shard_stats`, f32 `[N, 8]`).
    Statistics,
    /// The shard's gradient from every shard's combined statistics (`CrossEntropyBuffers::shard_scale`, f32
    /// `[N, 4]`, made by [`combine_shards`]).
    Gradient,
}

impl Shard {
    /// The statistics step of the shard holding classes `[offset, offset + C)` of `vocab`.
    pub fn statistics(offset: usize, vocab: usize) -> Self {
        Shard {
            offset,
            vocab,
            step: ShardStep::Statistics,
        }
    }

    /// The gradient step of the same shard.
    pub fn gradient(offset: usize, vocab: usize) -> Self {
        Shard {
            offset,
            vocab,
            step: ShardStep::Gradient,
        }
    }
}

/// Cross-entropy's own slots: inputs and outputs beside the pass, copied between the caller's
/// buffers and scratch ([`Builder::side`]), and the count of correct rows.
const GRAD_OUTPUT: Slot = Slot::new(5, "grad_output");
const LSE: Slot = Slot::new(6, "lse").result(Field::Lse);
const ROW_LOSS: Slot = Slot::new(7, "row_loss").result(Field::RowLoss);
const ARGMAX: Slot = Slot::new(8, "argmax").result(Field::Argmax);
const CORRECT: Slot = Slot::new(9, "correct").result(Field::Correct);
const SHARD_STATS: Slot = Slot::new(10, "shard_stats").result(Field::ShardStats);
const SHARD_SCALE: Slot = Slot::new(11, "shard_scale");

buffers! {
    /// The caller's buffers for a [`Plan`](crate::Plan) of a [`CrossEntropyDesc`]. `input`,
    /// `target`, `weight`, `loss` and `grad` are bound: each needs `BufferUsages::STORAGE`, an
    /// offset that is a multiple of the device's `min_storage_buffer_offset_alignment`, and at
    /// least the bytes of the plan's shape in its dtypes ([`crate::DType::bytes`]: 16-bit
    /// tensors rounded up to whole 4-byte words). The rest are side ranges, copied rather than
    /// bound: `COPY_SRC` for the inputs, `COPY_DST` for the outputs, 4-byte aligned offsets.
    /// Only the outputs are written (and `input`, when the plan is in place).
    CrossEntropyBuffers {
        /// The logits `[N, C]`, in the description's dtype. Read only, unless the plan writes
        /// the gradient in place.
        input: INPUT,
        /// The targets: class indices (i32 `[N]`) or probabilities (`[N, C]`, in the logits'
        /// dtype). Read only.
        target: TARGET,
        ;
        /// The class weight (f32 `[C]`), when the description declares one. Read only.
        weight: WEIGHT,
        /// Where the loss goes (f32): one value when reduced, one a row for
        /// [`Reduction::None`].
        loss: LOSS,
        /// Where the gradient with respect to the logits goes, in the description's
        /// `grad_dtype` (none in place).
        grad: GRAD,
        /// The upstream gradient (f32: one value, or one a row with [`Reduction::None`]); a
        /// side range.
        grad_output: GRAD_OUTPUT,
        /// Where each row's log-sum-exp goes (f32 `[N]`); a side range.
        lse: LSE,
        /// Where each row's loss goes when the loss is reduced (f32 `[N]`); a side range.
        row_loss: ROW_LOSS,
        /// Where each row's argmax goes (u32 `[N]`); a side range.
        argmax: ARGMAX,
        /// Where the count of rows whose argmax is their class target goes (u32 `[1]`); a
        /// side range.
        correct: CORRECT,
        /// A vocabulary shard's statistics step: where each row's statistics go (f32
        /// `[N, 8]`); a side range.
        shard_stats: SHARD_STATS,
        /// A vocabulary shard's gradient step: the combined statistics (f32 `[N, 4]`); a side
        /// range.
        shard_scale: SHARD_SCALE,
    }
}

/// What cross-entropy from logits computes, with PyTorch's defaults. Plan it with
/// [`Plan::new`](crate::Plan::new), or run it on host data with
/// [`Context::loss`](crate::Context::loss).
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropyDesc {
    /// Rows N.
    pub rows: usize,
    /// Classes C.
    pub classes: usize,
    /// Class indices (default) or probabilities.
    pub targets: Targets,
    /// The reduction (default mean; none: one loss per row).
    pub reduction: Reduction,
    /// What to compute (default both).
    pub outputs: Outputs,
    /// The class weight's length, C, when there is one.
    pub weight: Option<usize>,
    /// Rows whose class target equals this weigh nothing (class targets only; default -100).
    /// Must fit in an i32.
    pub ignore_index: i64,
    /// Mixes the target with the uniform distribution: `q = (1 - ls) target + ls / C`, in [0, 1].
    pub label_smoothing: f32,
    /// Adds `z_loss * lse^2` per row (PaLM's auxiliary loss; weighted by the row's class
    /// weight for class targets), >= 0.
    pub z_loss: f32,
    /// Replaces each logit x by `cap * tanh(x / cap)` before the softmax (Gemma 2), cap > 0.
    pub softcap: Option<f32>,
    /// Write the gradient over the logits (no second `[N, C]` buffer).
    pub in_place: bool,
    /// The dtype of the logits and of probability targets (default f32).
    pub dtype: DType,
    /// The gradient's dtype (default: the logits').
    pub grad_dtype: Option<DType>,
    /// Also write each row's log-sum-exp (`CrossEntropyBuffers::lse`, f32 `[N]`).
    pub lse: bool,
    /// Also write each row's loss beside a reduced loss (`CrossEntropyBuffers::row_loss`, f32 `[N]`).
    pub row_losses: bool,
    /// Scale the gradient by an upstream gradient (`CrossEntropyBuffers::grad_output`, f32: one value for
    /// sum and mean, one a row for none), as an autodiff engine's backward does.
    pub grad_output: bool,
    /// Also write each row's argmax (`CrossEntropyBuffers::argmax`, u32 `[N]`; of the capped logits with
    /// `softcap`) and, with class targets, how many rows' argmax is their target
    /// (`CrossEntropyBuffers::correct`, one u32: token accuracy is that over the rows not ignored).
    pub argmax: bool,
    /// A shard of a larger vocabulary: `classes` are the shard's, the class targets are the
    /// vocabulary's, and the plan runs one of the shard's steps (class targets only).
    pub shard: Option<Shard>,
}

setters! {
    CrossEntropyDesc {
        /// Sets the target kind.
        targets: Targets,
        /// Sets the reduction.
        reduction: Reduction,
        /// Sets what to compute.
        outputs: Outputs,
        /// Sets the ignored class target.
        ignore_index: i64,
        /// Sets the label smoothing.
        label_smoothing: f32,
        /// Sets the z-loss coefficient.
        z_loss: f32,
        /// Writes the gradient over the logits.
        in_place: bool,
        /// Sets the dtype of the logits (and probability targets).
        dtype: DType,
        /// Writes each row's log-sum-exp.
        lse: bool,
        /// Writes each row's loss beside a reduced loss.
        row_losses: bool,
        /// Scales the gradient by an upstream gradient.
        grad_output: bool,
        /// Writes each row's argmax (and the count of rows whose argmax is their target).
        argmax: bool,
    }
    optional {
        /// Softcaps the logits at this value.
        softcap: f32,
        /// Makes this a step of a shard of a larger vocabulary.
        shard: Shard,
        /// Declares a class weight of this many entries (must be C).
        weight: usize,
        /// Sets the gradient's dtype.
        grad_dtype: DType,
    }
}

impl CrossEntropyDesc {
    /// Class-index targets, PyTorch's default options, loss and gradient.
    pub fn new(rows: usize, classes: usize) -> Self {
        CrossEntropyDesc {
            rows,
            classes,
            targets: Targets::Classes,
            reduction: Reduction::Mean,
            outputs: Outputs::BOTH,
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            in_place: false,
            dtype: DType::F32,
            grad_dtype: None,
            lse: false,
            row_losses: false,
            grad_output: false,
            argmax: false,
            shard: None,
        }
    }

    /// The upstream gradient's length: one value, or one a row with `Reduction::None`.
    pub(crate) fn grad_output_len(&self) -> usize {
        if self.reduction.is_reduced() {
            1
        } else {
            self.rows
        }
    }

    pub(crate) fn check(&self) -> Result<ClassTargets> {
        if let Some(sh) = self.shard {
            let fits = sh
                .offset
                .checked_add(self.classes)
                .is_some_and(|end| end <= sh.vocab);
            if !fits || i32::try_from(sh.vocab).is_err() {
                return Err(Error::option(
                    "shard",
                    format!(
                        "classes [{}, {} + {}) do not lie in a vocabulary of {} (at most i32::MAX)",
                        sh.offset, sh.offset, self.classes, sh.vocab
                    ),
                ));
            }
            let extra = self.lse || self.row_losses || self.argmax || self.grad_output;
            if self.targets != Targets::Classes || extra {
                return Err(Error::option(
                    "shard",
                    "shards take class targets, and no side output or upstream gradient",
                ));
            }
            if self.in_place && sh.step == ShardStep::Statistics {
                return Err(Error::option(
                    "in_place",
                    "a shard's statistics step writes no gradient",
                ));
            }
            check_grad_dtype(self.dtype, self.grad_dtype, self.in_place)?;
            return ClassTargets::check(self.rows, self.classes, self.weight, self.ignore_index);
        }
        self.outputs.check()?;
        let shape = ClassTargets::check(self.rows, self.classes, self.weight, self.ignore_index)?;
        if self.reduction == Reduction::BatchMean {
            return Err(Error::option("reduction", "batchmean is for kl-div only"));
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
        check_grad_dtype(self.dtype, self.grad_dtype, self.in_place)?;
        if self.row_losses && !self.reduction.is_reduced() {
            return Err(Error::option(
                "row_losses",
                "with reduction none the loss is one a row already",
            ));
        }
        if self.grad_output && !self.outputs.grad {
            return Err(Error::option(
                "grad_output",
                "scales the gradient, which is not asked for",
            ));
        }
        if self.in_place && !self.outputs.grad {
            return Err(Error::option(
                "in_place",
                "writes the gradient, which is not asked for",
            ));
        }
        Ok(shape)
    }
}

impl Tensors for CrossEntropyDesc {
    type Ranges<'a> = CrossEntropyBuffers<'a>;

    fn layout(&self, b: &mut Builder<'_>) -> Result<()> {
        let shape = self.check()?;
        // A shard's steps compute no loss: statistics, or a gradient whose scale comes with the
        // combined statistics.
        let (reduction, outputs) = match self.shard.map(|s| s.step) {
            None => (self.reduction, self.outputs),
            Some(ShardStep::Statistics) => (Reduction::None, Outputs::NONE),
            Some(ShardStep::Gradient) => (Reduction::None, Outputs::GRAD),
        };
        let spec = RowsSpec {
            kind: match self.targets {
                Targets::Classes => Kind::Classes,
                Targets::Probabilities => Kind::Probabilities,
            },
            shape,
            label_smoothing: self.label_smoothing,
            z_loss: self.z_loss,
            softcap: self.softcap,
            reduction,
            outputs,
            in_place: self.in_place,
            dtype: self.dtype,
            grad_dtype: self.grad_dtype.unwrap_or(self.dtype),
            argmax: self.argmax,
            shard: self.shard,
        };
        let mut planner = Planner::new(b, &spec)?;
        planner.side(b, self)?;
        planner.plan(b)
    }

    fn results(&self) -> (Reduction, &'static str) {
        (self.reduction, CLASS_INVALID)
    }

    fn host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
        let total = check_shape(self.rows, self.classes)?;
        check_count("logits (N * C)", total, inputs.input.len())?;
        let input = value_bytes("logits", inputs.input, self.dtype)?;
        check_declared("weight (C)", self.weight, inputs.weight)?;
        let grad_output = self.grad_output.then(|| self.grad_output_len());
        check_declared("grad_output", grad_output, inputs.grad_output)?;
        let gradient_step = self.shard.filter(|sh| sh.step == ShardStep::Gradient);
        let scale = gradient_step.map(|_| 4 * self.rows);
        check_declared("shard_scale", scale, inputs.shard_scale)?;
        let target = match self.targets {
            Targets::Classes => {
                // A shard's targets index the whole vocabulary.
                let classes = self.shard.map_or(self.classes, |sh| sh.vocab);
                class_targets_i32(inputs, self.rows, classes, self.ignore_index)?
            }
            Targets::Probabilities => {
                let t = inputs.values()?;
                check_count("targets (N * C, like the logits)", total, t.len())?;
                value_bytes("probability targets", t, self.dtype)?
            }
        };
        self.check()?;
        Ok(HostData::default()
            .with(INPUT, input)
            .with(TARGET, target)
            .with(WEIGHT, bytes(inputs.weight))
            .with(GRAD_OUTPUT, bytes(inputs.grad_output))
            .with(SHARD_SCALE, bytes(inputs.shard_scale)))
    }
}

params! {
    /// The parameters of cross_entropy.wgsl.
    CeParams {
        rows: u32,
        classes: u32,
        /// Blocks this dispatch covers, and the first of them.
        blocks: u32,
        block_base: u32,
        /// Chunks of a block's rows (chunked layout).
        chunks: u32,
        wg_x: u32,
        partial_base: u32,
        stats_base: u32,
        total: u32,
        ignore_index: i32,
        label_smoothing: f32,
        z_loss: f32,
        softcap: f32,
        grad_scale: f32,
        mean_den: f32,
        /// What happens after the statistics (`After`).
        flags: u32,
        scale_mode: u32,
        final_mode: u32,
        /// Where the side outputs and inputs live in scratch (which ones: the `SIDE` constant).
        lse_base: u32,
        rows_base: u32,
        go_base: u32,
        /// Where each row's argmax goes in scratch (WANT_ARGMAX).
        argmax_base: u32,
        /// A shard's first class and the vocabulary's size, and where its statistics (or the
        /// combined coefficients) live in scratch.
        class_offset: u32,
        vocab: u32,
        shard_base: u32,
        /// The first element of the window of x, t and grad this dispatch binds.
        bind_base: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// The formula: `TARGETS` in the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Classes = 0,
    Probabilities = 1,
}

/// Everything the kernel family needs to plan one shape.
struct RowsSpec {
    kind: Kind,
    shape: ClassTargets,
    label_smoothing: f32,
    z_loss: f32,
    softcap: Option<f32>,
    reduction: Reduction,
    outputs: Outputs,
    in_place: bool,
    dtype: DType,
    grad_dtype: DType,
    argmax: bool,
    shard: Option<Shard>,
}

/// The most chunk records one invocation of the merge pass (`finish`) folds, whatever the row
/// length: far below lavapipe's loop cap.
const MAX_RECORDS_PER_LANE: u64 = 4096;

/// The most chunks the sweep reads a block in (each invocation loops over them twice): far
/// below lavapipe's loop cap. Longer blocks (over 4,096 × 256 × `register_vecs` vec4s) are
/// chunked over passes instead.
const MAX_SWEEP_CHUNKS: u64 = 4096;

/// `shaders/cross_entropy.wgsl`: cross-entropy from logits (class or probability targets).
/// Bindings: logits, class targets, probability targets, class weight, grad, loss, scratch; in
/// place (`INPLACE`) the logits are written with the gradient and the grad binding is unused.
pub(crate) static CROSS_ENTROPY: Kernel = Kernel::new(
    "cross_entropy.wgsl",
    include_str!("../../shaders/cross_entropy.wgsl"),
)
.params(CeParams::INFO)
.layout(|defines| {
    use Binding::{Read as R, ReadWrite as W, Uniform as U};
    std::borrow::Cow::Borrowed(if defines.iter().any(|d| d == "INPLACE") {
        &[U, W, R, R, R, W, W, W]
    } else {
        &[U, R, R, R, R, W, W, W]
    })
})
.defines(&["VEC4", "UNALIGNED", "INPLACE", "SUBGROUPS"])
// K, the register tile: every size the host asks for is 1..=32 vec4s (the tunings' 8
// and 32 among them); the contract test takes these in turn.
.values(&["K=1|3|8|17|32"]);

/// The partials layout of a pass (`Planner::partials`).
struct Partials {
    /// Invocations a partial.
    pg: u32,
    /// Partials in all.
    parts: u64,
    /// Where the full blocks' partials start in scratch, and the tail block's.
    base: u32,
    tail_base: u32,
}

/// A window of full blocks bound at once: its blocks, and the elements of x, t and grad bound
/// (`elems` from element `base` on).
#[derive(Clone, Copy, Debug)]
struct Window {
    first_block: u64,
    blocks: u64,
    base: u64,
    elems: u64,
}

impl Window {
    /// Every element at once.
    fn whole(elems: u64) -> Self {
        Window {
            first_block: 0,
            blocks: 0,
            base: 0,
            elems,
        }
    }
}

/// How the work is laid out over invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tiling {
    /// Invocations per block (a power of two up to WG), fused layout.
    seg: u32,
    /// vec4s per invocation, at most `Tuning::wide_vecs` (KMAX = 128 in the shader).
    k: u32,
}

impl Tiling {
    /// Blocks a workgroup covers.
    fn per_wg(self) -> u64 {
        (WG / self.seg) as u64
    }
}

/// Rows per block: the fewest whose elements fill whole vec4s.
fn rows_per_block(classes: usize) -> usize {
    match classes % 4 {
        0 => 1,
        2 => 2,
        _ => 4,
    }
}

/// The fused layout's tiling for a block of `bv` vec4s: the fewest invocations per block that
/// hold it in at most `register_vecs` vec4s each where one lane group does, otherwise in at most
/// `wide_vecs` each (see `Tuning`); None when a block is too long for one workgroup.
fn fused_tiling(bv: u64, t: crate::engine::context::Tuning) -> Option<Tiling> {
    let kmax = if 4 * bv <= t.register_tile_classes() as u64 {
        t.register_vecs
    } else {
        t.wide_vecs
    };
    if bv > (WG * kmax) as u64 {
        return None;
    }
    let seg = (bv.div_ceil(kmax as u64).max(1) as u32).next_power_of_two();
    Some(Tiling {
        seg,
        k: bv.div_ceil(seg as u64) as u32,
    })
}

/// Plans one shape of the kernel family: the layout (blocks of rows, vec4 or unaligned), the
/// slots, and the dispatches of one of four paths (`single`, `fused`, `sweep`, `chunked`).
struct Planner<'s> {
    s: &'s RowsSpec,
    kmax: u32,
    lanes: u32,
    /// Rows a block, and vec4s a block.
    rb: u64,
    bv: u64,
    /// Rows go one a block, unaligned, read as scalars (see UNALIGNED in the shader).
    unaligned: bool,
    blocks: u64,
    full_blocks: u64,
    tail: bool,
    reduced: bool,
    /// How the reduced value is finished, when there is one.
    finish: Option<Finish>,
    /// The mean divides by a sum of class weights that only the data knows.
    weighted_mean: bool,
    /// Side outputs and inputs, the shader's `SIDE` constant (bit 0 lse, 1 row losses beside a
    /// reduced loss, 2 one upstream gradient, 3 one a row).
    side: u32,
    base: CeParams,
}

impl<'s> Planner<'s> {
    fn new(b: &Builder<'_>, s: &'s RowsSpec) -> Result<Self> {
        let tuning = b.ctx().tuning();
        let kmax = tuning.register_vecs;
        let n = s.shape.rows as u64;
        let c = s.shape.classes as u64;
        // Blocks of 2 or 4 rows keep every block on a vec4 boundary; when such a block is too
        // long for one workgroup but a single row is not, rows go one a block, unaligned, and
        // are still read once by the fused kernel. Where rows that long are read in lane-group
        // chunks anyway (see `plan`), the aligned blocks are, in vec4s.
        let aligned_rows = rows_per_block(s.shape.classes) as u64;
        let chunked_anyway =
            b.ctx().uses_subgroups() && (!s.outputs.grad || tuning.chunk_wide_rows);
        // (Half-precision rows share 32-bit words at their ends: never unaligned.)
        let all_f32 = s.dtype == DType::F32 && s.grad_dtype == DType::F32;
        let unaligned = all_f32
            && !chunked_anyway
            && aligned_rows > 1
            && fused_tiling(aligned_rows * c / 4, tuning).is_none()
            && fused_tiling(c.div_ceil(4), tuning).is_some();
        let rb = if unaligned { 1 } else { aligned_rows };
        let reduced = s.outputs.loss && s.reduction.is_reduced();
        let mean = s.reduction == Reduction::Mean;
        let weighted_mean = mean && s.kind == Kind::Classes;
        let finish = reduced.then_some(match (s.reduction, weighted_mean) {
            (Reduction::Sum, _) => Finish::Sum,
            (_, true) => Finish::WeightedMean,
            (_, false) => Finish::Mean(n as f64),
        });
        let grad_scale = if mean && !weighted_mean {
            (1.0 / n as f64) as f32
        } else {
            1.0
        };
        Ok(Planner {
            s,
            kmax,
            lanes: tuning.lanes,
            rb,
            bv: if unaligned { c.div_ceil(4) } else { rb * c / 4 },
            unaligned,
            blocks: n.div_ceil(rb),
            full_blocks: n / rb,
            tail: !n.is_multiple_of(rb),
            reduced,
            finish,
            weighted_mean,
            side: 0,
            base: CeParams {
                rows: n as u32,
                classes: c as u32,
                total: s.shape.total as u32,
                ignore_index: s.shape.ignore_index,
                label_smoothing: s.label_smoothing,
                z_loss: s.z_loss,
                softcap: s.softcap.unwrap_or(1.0),
                grad_scale,
                mean_den: n as f32,
                ..Default::default()
            },
        })
    }

    /// Declares the side slots the description asks for, and puts where they live in scratch
    /// into every dispatch's parameters.
    fn side(&mut self, b: &mut Builder<'_>, d: &CrossEntropyDesc) -> Result<()> {
        let n = d.rows as u64;
        let p = &mut self.base;
        if d.lse {
            p.lse_base = b.side(LSE, "lse", 4 * n, Access::Write)?;
            self.side |= 1;
        }
        if d.row_losses {
            p.rows_base = b.side(ROW_LOSS, "row_loss", 4 * n, Access::Write)?;
            self.side |= 2;
        }
        if d.grad_output {
            let len = d.grad_output_len() as u64;
            p.go_base = b.side(GRAD_OUTPUT, "grad_output", 4 * len, Access::Read)?;
            self.side |= if d.reduction.is_reduced() { 4 } else { 8 };
        }
        if let Some(sh) = d.shard {
            p.class_offset = sh.offset as u32;
            p.vocab = sh.vocab as u32;
            p.shard_base = match sh.step {
                ShardStep::Statistics => {
                    b.side(SHARD_STATS, "shard_stats", 32 * n, Access::Write)?
                }
                ShardStep::Gradient => b.side(SHARD_SCALE, "shard_scale", 16 * n, Access::Read)?,
            };
        }
        if d.argmax {
            p.argmax_base = b.side(ARGMAX, "argmax", 4 * n, Access::Write)?;
            if d.targets == Targets::Classes {
                b.status_output(CORRECT, "correct", 3);
            }
        }
        Ok(())
    }

    fn plan(&self, b: &mut Builder<'_>) -> Result<()> {
        self.slots(b)?;
        // A segment of one lane group merges by shuffles alone where subgroups are as wide
        // (Tuning::for_adapter makes them so), and a kernel with no barrier compiled in runs
        // faster on lavapipe (docs/performance.md): a forward pass whose rows need wider segments
        // reads them in such chunks instead (its second pass reads only their statistics), and
        // so does forward + gradient where the tuning says so (`Tuning::chunk_wide_rows`: the
        // gradient then costs a second read of the logits). The tuning, not the subgroup size,
        // picks the layout, so the bits never depend on the latter. Without subgroups every
        // merge has barriers anyway. Rows longer than a workgroup holds are, with the gradient,
        // swept (a workgroup a block, both reads in one dispatch) where the tuning says so
        // (`Tuning::sweep_long_rows`), and chunked over passes otherwise.
        //
        // The merge pass folds each block's chunk records once, chunks / SEG a lane: bounded
        // for lavapipe's loop cap.
        let ctx = b.ctx();
        let narrow = ctx
            .uses_subgroups()
            .then(|| ctx.tuning().lanes.min(WG))
            .filter(|&seg| {
                let chunks = self.bv.div_ceil((seg * self.kmax) as u64);
                chunks.div_ceil(seg as u64) <= MAX_RECORDS_PER_LANE
            })
            // Rows so long that a workgroup's worth of them exceeds one binding cannot be
            // bound a window at a time in narrow chunks: those take workgroup-wide ones.
            .filter(|&seg| self.windows(b, (WG / seg) as u64).is_ok());
        let grad = self.s.outputs.grad;
        let split = !grad || ctx.tuning().chunk_wide_rows;
        let sweep = grad && ctx.tuning().sweep_long_rows;
        match (fused_tiling(self.bv, ctx.tuning()), narrow) {
            (Some(t), _) if t.per_wg() >= self.blocks => self.single(b, t),
            (Some(t), Some(seg)) if t.seg > seg && split && !self.unaligned => self.chunked(b, seg),
            (Some(t), _) => self.fused(b, t),
            (None, _) if sweep && self.sweep_chunks() <= MAX_SWEEP_CHUNKS => self.sweep(b),
            (None, narrow) => self.chunked(b, narrow.unwrap_or(WG)),
        }
    }

    fn slots(&self, b: &mut Builder<'_>) -> Result<()> {
        let s = self.s;
        let (n, c, total) = (s.shape.rows as u64, s.shape.classes as u64, s.shape.total);
        let want_grad = s.outputs.grad;
        let classes = s.kind == Kind::Classes;
        let access = if s.in_place {
            Access::Write
        } else {
            Access::Read
        };
        // x, t and grad may be larger than one binding: bound a window at a time.
        b.windowed_slot(INPUT, "logits", s.dtype.bytes(total), access)?;
        if classes {
            b.slot(TARGET, "targets", 4 * n, Access::Read)?;
        } else {
            b.windowed_slot(TARGET, "targets", s.dtype.bytes(total), Access::Read)?;
        }
        let weight_bytes = if s.shape.weighted { 4 * c } else { 0 };
        b.slot(WEIGHT, "weight", weight_bytes, Access::Read)?;
        let loss = loss_bytes(s.outputs.loss, self.reduced, n);
        b.slot(LOSS, "loss", loss, Access::Write)?;
        let grad_bytes = if want_grad && !s.in_place {
            s.grad_dtype.bytes(total)
        } else {
            0
        };
        b.windowed_slot(GRAD, "grad", grad_bytes, Access::Write)?;
        b.grad_dtype(s.grad_dtype, total);
        if s.in_place {
            b.grad_in_place(INPUT);
        }
        Ok(())
    }

    /// The pipeline of `entry` for this plan, with the variant's constants, for a dispatch that
    /// does `after` after its statistics.
    fn key(
        &self,
        entry: &'static str,
        vec4: bool,
        t: Tiling,
        grad: bool,
        after: After,
    ) -> PipelineKey {
        let s = self.s;
        let key = PipelineKey::new(&CROSS_ENTROPY, entry)
            .define("VEC4", vec4 && !self.unaligned)
            .define("UNALIGNED", self.unaligned)
            .define("INPLACE", s.in_place)
            .value("DTYPE_x", s.dtype.code())
            .value("DTYPE_t", s.dtype.code())
            .value("DTYPE_grad", s.grad_dtype.code())
            .constant("WG", WG)
            .constant("SEG", t.seg)
            .value("K", t.k)
            .constant("LANES", self.lanes)
            .constant("ROWS", self.rb as u32)
            .constant("CLASSES", s.shape.classes as u32)
            .constant("TARGETS", s.kind as u32)
            .constant("HAS_WEIGHT", s.shape.weighted as u32)
            .constant("SMOOTH", (s.label_smoothing > 0.0) as u32)
            .constant("ZLOSS", (s.z_loss > 0.0) as u32)
            .constant("SOFTCAP", s.softcap.is_some() as u32)
            .constant("WANT_GRAD", grad as u32)
            .constant("WANT_ARGMAX", s.argmax as u32)
            .constant(
                "SHARD",
                match s.shard.map(|sh| sh.step) {
                    None => 0u32,
                    Some(ShardStep::Statistics) => 1,
                    Some(ShardStep::Gradient) => 2,
                },
            )
            .constant("SIDE", self.side);
        after.key(key)
    }

    /// `a`, writing row losses where the plan has them (every dispatch that finishes rows).
    fn after(&self, a: After) -> After {
        After {
            row_loss: self.s.outputs.loss && !self.reduced,
            ..a
        }
    }

    /// The parameters of a dispatch that does `after` after its loops.
    fn params(&self, after: After) -> CeParams {
        CeParams {
            flags: after.flags(),
            scale_mode: after.scale_mode,
            final_mode: after.final_mode,
            ..self.base
        }
    }

    /// Bindings 1..=7; `single`: this dispatch writes the reduced value itself.
    fn entries(&self, vec4: bool, single: bool) -> Vec<Res> {
        self.entries_at(vec4, single, Window::whole(self.s.shape.total))
    }

    /// [`Planner::entries`] with x, t and grad bound to the window of rows `w` (the rest is
    /// bound whole: targets, row losses and scratch are indexed by the problem's rows).
    fn entries_at(&self, vec4: bool, single: bool, w: Window) -> Vec<Res> {
        let s = self.s;
        let (n, c) = (s.shape.rows as u64, s.shape.classes as u64);
        let view = |slot, dtype: DType| {
            let v = View::of(vec4 && !self.unaligned, w.elems, dtype);
            Res::Window(slot, w.base * dtype.size(), v)
        };
        let classes = s.kind == Kind::Classes;
        let unused = |writable| Res::Dummy(writable);
        vec![
            view(INPUT, s.dtype),
            if classes {
                unused(false)
            } else {
                view(TARGET, s.dtype)
            },
            Res::user_if(classes, TARGET, View::Scalar(4 * n), false),
            Res::user_if(s.shape.weighted, WEIGHT, View::Scalar(4 * c), false),
            if s.outputs.grad && !s.in_place {
                view(GRAD, s.grad_dtype)
            } else {
                unused(true)
            },
            loss_res(
                LOSS,
                s.outputs.loss,
                self.reduced,
                single,
                View::Scalar(4 * n),
            ),
            Res::Scratch,
        ]
    }

    /// The gradient's scale (`After::scale_mode`): a weighted mean's needs the denominator, reduced by
    /// passes of its own before the main ones.
    fn scale_mode(&self, b: &mut Builder<'_>) -> Result<u32> {
        if self.s.outputs.grad && self.weighted_mean {
            self.s.shape.denominator(b)?;
            Ok(ScaleMode::REDUCED)
        } else {
            Ok(ScaleMode::HOST)
        }
    }

    /// The windows of full blocks the passes bind one at a time (`Windowing::spans`): one over
    /// everything when x, t and grad each fit one binding, else windows of whole workgroups
    /// (`per_wg` blocks each) with room in the last one for the tail block.
    fn windows(&self, b: &Builder<'_>, per_wg: u64) -> Result<Vec<Window>> {
        let s = self.s;
        let c = s.shape.classes as u64;
        let mut sizes = vec![s.dtype.size()];
        if s.outputs.grad && !s.in_place {
            sizes.push(s.grad_dtype.size());
        }
        let block_elems = self.rb * c;
        let spans = Windowing {
            units: self.full_blocks,
            unit_elems: block_elems,
            per_wg,
            tail_elems: s.shape.total - self.full_blocks * block_elems,
            sizes: &sizes,
            what: "a window of whole workgroups' rows (logits)",
        }
        .spans(b.ctx())?;
        Ok(spans
            .into_iter()
            .map(|w| Window {
                first_block: w.first,
                blocks: w.units,
                base: w.base,
                elems: ((w.first + w.units) * block_elems).min(s.shape.total) - w.base,
            })
            .collect())
    }

    /// The window the tail block is bound in: from the last window's start to the end.
    fn tail_window(&self, windows: &[Window]) -> Window {
        let base = windows.last().map_or(0, |w| w.base);
        Window {
            first_block: self.full_blocks,
            blocks: 1,
            base,
            elems: self.s.shape.total - base,
        }
    }

    /// Where the partials of a pass go: `main` segments of `seg` invocations over the full
    /// blocks, then `tail` over the partial block, WG / seg a workgroup and each pass's
    /// workgroups starting afresh, one partial per group of `pg` invocations (scratch only
    /// when the loss is reduced).
    fn partials(&self, b: &mut Builder<'_>, seg: u32, main: u64, tail: u64) -> Result<Partials> {
        let per_wg = (WG / seg) as u64;
        let pg = partial_group(b.ctx(), seg);
        let parts_per_wg = (WG / pg) as u64;
        let main_wgs = main.div_ceil(per_wg);
        let parts = (main_wgs + tail.div_ceil(per_wg)) * parts_per_wg;
        let base = if self.reduced {
            b.scratch(2 * parts)?
        } else {
            0
        };
        Ok(Partials {
            pg,
            parts,
            base,
            tail_base: base + 2 * (main_wgs * parts_per_wg) as u32,
        })
    }

    /// Appends the reduction of `parts` partials at `base`, when the loss is reduced.
    fn reduce(&self, b: &mut Builder<'_>, parts: u64, base: u32) -> Result<()> {
        match self.finish {
            Some(finish) => b.reduce(parts, base, finish, Some(LOSS)),
            None => Ok(()),
        }
    }

    /// One workgroup holds everything: one dispatch, which also reduces, and finds a weighted
    /// mean's denominator itself.
    fn single(&self, b: &mut Builder<'_>, t: Tiling) -> Result<()> {
        let want_grad = self.s.outputs.grad;
        let scale_in_kernel = want_grad && self.weighted_mean;
        let single = self.reduced || scale_in_kernel;
        let after = self.after(After {
            single,
            scale_mode: if scale_in_kernel {
                ScaleMode::OWN
            } else {
                ScaleMode::HOST
            },
            final_mode: After::final_mode(self.finish),
            ..Default::default()
        });
        let key = self.key("fused", false, t, want_grad, after);
        let p = CeParams {
            blocks: self.blocks as u32,
            wg_x: 1,
            chunks: 1,
            ..self.params(after)
        };
        b.dispatch(&key, &p, self.entries(false, single), (1, 1));
        Ok(())
    }

    /// Blocks of rows, each read once by SEG invocations: the full blocks in vec4s, a tail
    /// block (rows that do not fill one) in scalars, then the reduction of the partials.
    fn fused(&self, b: &mut Builder<'_>, t: Tiling) -> Result<()> {
        self.read_once(b, t, "fused", 1)
    }

    /// Blocks longer than a workgroup holds, with the gradient, read once from memory where a
    /// cache holds a block (`Tuning::sweep_long_rows`): one workgroup a block sweeps it
    /// twice, `chunks` chunks of WG × K vec4s, the statistics first, then the gradient.
    fn sweep(&self, b: &mut Builder<'_>) -> Result<()> {
        let t = Tiling {
            seg: WG,
            k: self.kmax,
        };
        self.read_once(b, t, "sweep", self.sweep_chunks() as u32)
    }

    /// The chunks of WG × K vec4s the sweep reads a block in.
    fn sweep_chunks(&self) -> u64 {
        self.bv.div_ceil((WG * self.kmax) as u64)
    }

    /// The dispatches of `fused` (`chunks` 1) and `sweep`: windows of full blocks, the scalar
    /// variant for a partial last block, then the reduction of the partials.
    fn read_once(
        &self,
        b: &mut Builder<'_>,
        t: Tiling,
        entry: &'static str,
        chunks: u32,
    ) -> Result<()> {
        let scale_mode = self.scale_mode(b)?;
        let Partials {
            pg,
            parts,
            base: partial_base,
            tail_base,
            ..
        } = self.partials(b, t.seg, self.full_blocks, self.tail as u64)?;
        let after = self.after(After {
            partial: self.reduced,
            scale_mode,
            ..Default::default()
        });
        let key = |vec4| {
            self.key(entry, vec4, t, self.s.outputs.grad, after)
                .constant("PG", pg)
        };
        let base = self.params(after);
        let per_wg = t.per_wg();
        let parts_per_wg = (WG / pg) as u64;
        let windows = self.windows(b, per_wg)?;
        for w in &windows {
            let (x, y) = b.fold(w.blocks.div_ceil(per_wg))?;
            let p = CeParams {
                blocks: w.blocks as u32,
                block_base: w.first_block as u32,
                wg_x: x,
                chunks,
                partial_base: partial_base + 2 * (w.first_block / per_wg * parts_per_wg) as u32,
                bind_base: w.base as u32,
                total: w.elems as u32,
                ..base
            };
            b.dispatch(&key(true), &p, self.entries_at(true, false, *w), (x, y));
        }
        if self.tail {
            let w = self.tail_window(&windows);
            let p = CeParams {
                blocks: 1,
                block_base: self.full_blocks as u32,
                wg_x: 1,
                chunks,
                partial_base: tail_base,
                bind_base: w.base as u32,
                total: w.elems as u32,
                ..base
            };
            b.dispatch(&key(false), &p, self.entries_at(false, false, w), (1, 1));
        }
        self.reduce(b, parts, partial_base)
    }

    /// Rows read in chunks of `seg` invocations: per-chunk statistics, a pass that merges each
    /// block's and writes its losses and partial, then, for the gradient, a pass that reads
    /// every chunk again with its block's merged statistics.
    fn chunked(&self, b: &mut Builder<'_>, seg: u32) -> Result<()> {
        let s = self.s;
        let t = Tiling { seg, k: self.kmax };
        let per_wg = t.per_wg();
        let chunks = self.bv.div_ceil((seg * self.kmax) as u64);
        let scale_mode = self.scale_mode(b)?;
        let stats_base = b.scratch(self.blocks * chunks * self.rb * 8)?;
        let Partials {
            pg,
            parts,
            base: partial_base,
            tail_base,
            ..
        } = self.partials(b, seg, self.full_blocks, self.tail as u64)?;
        // The statistics and gradient passes write neither row losses nor partials: the
        // finish pass does.
        let after = self.after(After {
            partial: self.reduced,
            scale_mode,
            ..Default::default()
        });
        let quiet = After {
            scale_mode,
            ..Default::default()
        };
        let key =
            |entry, vec4, grad, after| self.key(entry, vec4, t, grad, after).constant("PG", pg);
        let base = CeParams {
            chunks: chunks as u32,
            stats_base,
            ..self.params(after)
        };
        // (vec4, window, first partial) of the full blocks' windows and of the tail.
        let parts_per_wg = (WG / pg) as u64;
        let mut passes = Vec::new();
        let windows = if self.full_blocks > 0 {
            self.windows(b, per_wg)?
        } else {
            Vec::new()
        };
        for w in &windows {
            let first_wg = w.first_block / per_wg;
            passes.push((
                true,
                *w,
                partial_base + 2 * (first_wg * parts_per_wg) as u32,
            ));
        }
        if self.tail {
            passes.push((false, self.tail_window(&windows), tail_base));
        }
        let at = |w: &Window| CeParams {
            blocks: w.blocks as u32,
            block_base: w.first_block as u32,
            bind_base: w.base as u32,
            total: w.elems as u32,
            ..base
        };
        let grad = s.outputs.grad;
        for (vec4, w, _) in &passes {
            let (x, y) = b.fold((w.blocks * chunks).div_ceil(per_wg))?;
            let p = CeParams { wg_x: x, ..at(w) };
            let key = key("stats", *vec4, false, quiet);
            b.dispatch(&key, &p, self.entries_at(*vec4, false, *w), (x, y));
        }
        for (vec4, w, pbase) in &passes {
            let (x, y) = b.fold(w.blocks.div_ceil(per_wg))?;
            let p = CeParams {
                wg_x: x,
                partial_base: *pbase,
                ..at(w)
            };
            let key = key("finish", *vec4, grad, after);
            b.dispatch(&key, &p, self.entries_at(*vec4, false, *w), (x, y));
        }
        if grad {
            for (vec4, w, _) in &passes {
                let (x, y) = b.fold((w.blocks * chunks).div_ceil(per_wg))?;
                let p = CeParams {
                    wg_x: x,
                    flags: quiet.flags(),
                    ..at(w)
                };
                let key = key("gradient", *vec4, true, quiet);
                b.dispatch(&key, &p, self.entries_at(*vec4, false, *w), (x, y));
            }
        }
        self.reduce(b, parts, partial_base)
    }
}

/// What [`combine_shards`] makes of every shard's statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CombinedShards {
    /// The reduced loss (sum, mean).
    pub value: Option<f32>,
    /// Each row's loss, for `Reduction::None`.
    pub per_row: Option<Vec<f32>>,
    /// Each row's log-sum-exp over the whole vocabulary.
    pub lse: Vec<f32>,
    /// What each shard's gradient step takes (`Inputs::shard_scale`, `CrossEntropyBuffers::shard_scale`):
    /// per row the log-sum-exp and the coefficients of p, of the one-hot target and of the
    /// class weight, scaled by the reduction (4 a row).
    pub scale: Vec<f32>,
}

/// Merges the statistics of a vocabulary's shards (each shard's `shard_stats`, 8 a row, from a
/// plan with [`Shard::statistics`]) into the loss and what every shard's gradient step needs.
/// `desc` describes the whole vocabulary: its rows, `classes` = the vocabulary's size, and the
/// options the shards were planned with (reduction, ignore_index, label smoothing, z-loss; the
/// class weight lives in the shards, each with its own slice of it). The shards are merged in
/// the order given, in f64, so that the result is the same on every run: give them in the
/// order of their classes. The statistics are small (`[N, 8]` a shard): a trainer whose shards
/// live on several machines gathers them with its own collective library (an all-gather of
/// `N * 8` floats a shard, NCCL's or MPI's), combines on each machine (or on one, and
/// broadcasts `scale`, `[N, 4]`), and runs each shard's gradient step where its logits are.
pub fn combine_shards(desc: &CrossEntropyDesc, shards: &[&[f32]]) -> Result<CombinedShards> {
    let n = desc.rows;
    if shards.is_empty() {
        return Err(Error::Empty("shards"));
    }
    for s in shards {
        check_count("shard_stats (8 N)", 8 * n as u64, s.len())?;
    }
    let ls = desc.label_smoothing as f64;
    let z = desc.z_loss as f64;
    let cf = desc.classes as f64;
    let mut losses = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    let mut coefficients = Vec::with_capacity(n);
    let mut lses = Vec::with_capacity(n);
    for row in 0..n {
        let rec = |k: usize, i: usize| shards[k][8 * row + i] as f64;
        let m = (0..shards.len())
            .map(|k| rec(k, 0))
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = (0..shards.len())
            .map(|k| (rec(k, 1) + (rec(k, 0) - m)).exp())
            .sum();
        let logs = s.ln();
        let lse = m + logs;
        lses.push(lse as f32);
        let at = |v: f64| (0..shards.len()).any(|k| rec(k, 3) == v);
        let here = (0..shards.len()).filter(|&k| rec(k, 3) == 1.0).count();
        if at(2.0) {
            losses.push(0.0);
            weights.push(0.0);
            coefficients.push(None);
            continue;
        }
        if at(3.0) || here != 1 {
            if !at(3.0) {
                return Err(Error::option(
                    "shards",
                    format!("row {row}'s target lies in {here} of the shards given, not one"),
                ));
            }
            losses.push(f64::NAN);
            weights.push(f64::NAN);
            coefficients.push(Some((f64::NAN, 0.0, 0.0)));
            continue;
        }
        let xy: f64 = (0..shards.len()).map(|k| rec(k, 2)).sum();
        let wy: f64 = (0..shards.len()).map(|k| rec(k, 6)).sum();
        let mut loss = (1.0 - ls) * wy * ((m - xy) + logs);
        let mut cp = (1.0 - ls) * wy;
        let mut cs = 0.0;
        if ls > 0.0 {
            let b: f64 = (0..shards.len())
                .map(|k| rec(k, 4) + (rec(k, 0) - m) * rec(k, 5))
                .sum();
            let ws: f64 = (0..shards.len()).map(|k| rec(k, 5)).sum();
            loss += ls / cf * (ws * logs - b);
            cp += ls / cf * ws;
            cs = ls / cf;
        }
        if z > 0.0 {
            loss += z * wy * lse * lse;
            cp += 2.0 * z * wy * lse;
        }
        losses.push(loss);
        weights.push(wy);
        coefficients.push(Some((cp, (1.0 - ls) * wy, cs)));
    }
    let (value, per_row, scale) = match desc.reduction {
        Reduction::None => (None, Some(losses.iter().map(|&l| l as f32).collect()), 1.0),
        Reduction::Sum => (Some(losses.iter().sum::<f64>() as f32), None, 1.0),
        _ => {
            let den: f64 = weights.iter().sum();
            (
                Some((losses.iter().sum::<f64>() / den) as f32),
                None,
                1.0 / den,
            )
        }
    };
    let scale = lses
        .iter()
        .zip(&coefficients)
        .flat_map(|(&lse, c)| match *c {
            Some((cp, ct, cs)) => [
                lse,
                (cp * scale) as f32,
                (ct * scale) as f32,
                (cs * scale) as f32,
            ],
            None => [lse, 0.0, 0.0, 0.0],
        })
        .collect();
    Ok(CombinedShards {
        value,
        per_row,
        lse: lses,
        scale,
    })
}
