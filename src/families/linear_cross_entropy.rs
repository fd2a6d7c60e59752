//! Fused linear + cross-entropy: a language model's loss from its hidden states `[N, D]` and
//! its output layer (`weight [V, D]`, optional `bias [V]`), without the `[N, V]` logits, and
//! the gradients of the hidden states, the weight and the bias.
//!
//! Kernel: `shaders/linear_cross_entropy.wgsl` (four passes over tiles of logits that live in
//! workgroup memory; see there), `shaders/class_targets.wgsl` (a weighted mean's denominator)
//! and `shaders/reduce.wgsl`. CPU twin: [`crate::cpu::linear_cross_entropy`].
//!
//! Extra memory: 5 floats a row of statistics, 4 a row of gradient coefficients, 2 a row for a
//! reduced loss, and `[V]` for the bias and its gradient: `O(N + V)`, never `N × V`.

use crate::dtype::DType;
use crate::engine::context::Context;
use crate::engine::context::PipelineKey;
use crate::engine::kernel::{Kernel, fixed_layout, params};
use crate::engine::program::{
    Access, Builder, Finish, Res, Span, View, Windowing, elem_align, elements,
};
use crate::engine::slots::Slot;
use crate::error::{Error, Result};
use crate::families::class_targets::{CLASS_INVALID, ClassTargets, class_targets_i32};
use crate::families::cross_entropy::CrossEntropyDesc;
use crate::plan::roles::{LOSS, TARGET, WEIGHT};
use crate::plan::sealed::Tensors;
use crate::plan::{
    HostData, Inputs, buffers, bytes, check_count, check_declared, setters, value_bytes,
};
use crate::reduction::{Field, LossOutput, Outputs, Reduction};

/// The fused loss's slots: its input is the hidden states, its gradient theirs, and the
/// layer's weight and bias with their gradients are its own.
const HIDDEN: Slot = Slot::new(0, "hidden");
const GRAD_HIDDEN: Slot = Slot::new(4, "grad_hidden").result(Field::Grad);
const LINEAR: Slot = Slot::new(5, "linear");
const BIAS: Slot = Slot::new(6, "bias");
const GRAD_LINEAR: Slot = Slot::new(7, "grad_linear").result(Field::GradLinear);
const GRAD_BIAS: Slot = Slot::new(8, "grad_bias").result(Field::GradBias);
const LSE: Slot = Slot::new(9, "lse").result(Field::Lse);
const CORRECT: Slot = Slot::new(10, "correct").result(Field::Correct);

buffers! {
    /// The caller's buffers for a [`Plan`](crate::Plan) of a [`LinearCrossEntropyDesc`].
    /// `hidden`, `linear`, `target`, `weight`, the reduced `loss`, `grad_hidden` and
    /// `grad_linear` are bound: each needs `BufferUsages::STORAGE`, an offset that is a multiple
    /// of the device's `min_storage_buffer_offset_alignment`, and at least the bytes of the
    /// plan's shape ([`crate::DType::bytes`]). The bias, its gradient, the per-row losses and
    /// log-sum-exps and the count of correct rows are side ranges, copied rather than bound:
    /// `COPY_SRC` for the bias, `COPY_DST` for the outputs, 4-byte aligned offsets. Only the
    /// outputs are written.
    LinearCrossEntropyBuffers {
        /// The hidden states `[N, D]`, in the description's dtype. Read only.
        hidden: HIDDEN,
        /// The layer's weight `[V, D]`, in the description's dtype. Read only.
        linear: LINEAR,
        /// The class targets (i32 `[N]`). Read only.
        target: TARGET,
        ;
        /// The class weight (f32 `[V]`), when the description declares one. Read only.
        weight: WEIGHT,
        /// The layer's bias (f32 `[V]`), when the description declares one; a side range.
        bias: BIAS,
        /// Where the loss goes (f32): one value when reduced; one a row for
        /// [`Reduction::None`] (then a side range).
        loss: LOSS,
        /// Where the hidden states' gradient goes (f32 `[N, D]`).
        grad_hidden: GRAD_HIDDEN,
        /// Where the layer weight's gradient goes (f32 `[V, D]`).
        grad_linear: GRAD_LINEAR,
        /// Where the bias's gradient goes (f32 `[V]`); a side range.
        grad_bias: GRAD_BIAS,
        /// Where each row's log-sum-exp goes (f32 `[N]`); a side range.
        lse: LSE,
        /// Where the count of rows whose argmax is their target goes (u32 `[1]`); a side range.
        correct: CORRECT,
    }
}

/// Rows and classes of a tile of logits (the shader's `TR`, `TV`), and the depth of `D` staged
/// in workgroup memory at a time (`TK`).
const TR: u64 = 32;
const TV: u64 = 64;
const TK: u32 = 16;

/// The largest model width `D`: a tile's loops run about D + 128 times an invocation (the
/// staging loops of the logits' product, 6 D / 16, and of a gradient's, about 0.45 D), which
/// must stay below lavapipe's loop cap even for one tile a dispatch.
pub const MAX_DIM: usize = 32_768;

/// The loop iterations one invocation may run in a dispatch: a dispatch takes as many tiles as
/// fit (lavapipe stops counting, silently, at about 65,535).
const LOOP_BUDGET: u64 = 48_000;

/// `shaders/linear_cross_entropy.wgsl`: fused linear + cross-entropy. Bindings: hidden states,
/// layer weight, targets, class weight, their gradients, scratch.
pub(crate) static LINEAR_CROSS_ENTROPY: Kernel = Kernel::new(
    "linear_cross_entropy.wgsl",
    include_str!("../../shaders/linear_cross_entropy.wgsl"),
)
.params(LinearParams::INFO)
.layout(fixed_layout!(U, R, R, R, R, W, W, W))
.values(&["TK=16"]);

/// What fused linear + cross-entropy computes, with PyTorch's cross-entropy options over the
/// logits `hidden @ linear^T + bias`. Plan it with [`Plan::new`](crate::Plan::new) and the
/// caller's buffers ([`LinearCrossEntropyBuffers`]: the hidden states, the layer's weight and
/// bias, the class indices (i32), and the outputs `loss`, `lse`, `grad_hidden`, `grad_linear`
/// and `grad_bias`), or run it on host slices with
/// [`Context::linear_cross_entropy`] or [`Context::loss`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearCrossEntropyDesc {
    /// Tokens N.
    pub rows: usize,
    /// Model width D (at most [`MAX_DIM`]).
    pub dim: usize,
    /// Vocabulary V.
    pub vocab: usize,
    /// The layer has a bias `[V]` (default false).
    pub bias: bool,
    /// The class weight's length, V, when there is one.
    pub weight: Option<usize>,
    /// Rows whose target equals this weigh nothing (default -100).
    pub ignore_index: i64,
    /// Label smoothing in [0, 1] (default 0).
    pub label_smoothing: f32,
    /// The z-loss coefficient: adds `z_loss * w_y * lse^2` a row (default 0).
    pub z_loss: f32,
    /// Softcap the logits: `cap * tanh(z / cap)` (default none).
    pub softcap: Option<f32>,
    /// The reduction (default mean).
    pub reduction: Reduction,
    /// What to compute (default both): the gradient is all three (hidden, weight, bias).
    pub outputs: Outputs,
    /// Also write each row's log-sum-exp (f32 `[N]`).
    pub lse: bool,
    /// Also count the rows (not ignored) whose argmax, the first class of the largest logit, is
    /// their target (`Buffers::correct`, one u32; [`crate::LossOutput::correct`]).
    pub correct: bool,
    /// The dtype of the hidden states and the layer's weight (default f32); products and sums
    /// are f32 whatever it is.
    pub dtype: DType,
    /// The dtype of the hidden states' and the weight's gradients (default f32, whatever
    /// `dtype` is): a 16-bit gradient is summed in f32 in a buffer of the plan's, a window at a
    /// time, and rounded once into the caller's.
    pub grad_dtype: DType,
}

setters! {
    LinearCrossEntropyDesc {
        /// Sets whether the layer has a bias.
        bias: bool,
        /// Sets the ignored target.
        ignore_index: i64,
        /// Sets label smoothing.
        label_smoothing: f32,
        /// Sets the z-loss coefficient.
        z_loss: f32,
        /// Sets the reduction.
        reduction: Reduction,
        /// Sets what to compute.
        outputs: Outputs,
        /// Asks for each row's log-sum-exp.
        lse: bool,
        /// Asks for the count of rows whose argmax is their target.
        correct: bool,
        /// Sets the dtype of the hidden states and the layer's weight.
        dtype: DType,
        /// Sets the dtype of the hidden states' and the weight's gradients.
        grad_dtype: DType,
    }
    optional {
        /// Declares a class weight of this many entries (must be V).
        weight: usize,
        /// Softcaps the logits at this value.
        softcap: f32,
    }
}

impl LinearCrossEntropyDesc {
    /// `rows` tokens of width `dim` over a vocabulary of `vocab`: no bias, PyTorch's defaults,
    /// loss and gradients.
    pub fn new(rows: usize, dim: usize, vocab: usize) -> Self {
        LinearCrossEntropyDesc {
            rows,
            dim,
            vocab,
            bias: false,
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            reduction: Reduction::Mean,
            outputs: Outputs::BOTH,
            lse: false,
            correct: false,
            dtype: DType::F32,
            grad_dtype: DType::F32,
        }
    }

    /// The cross-entropy of the `[N, V]` logits that this computes without them.
    pub fn cross_entropy(&self) -> CrossEntropyDesc {
        let mut ce = CrossEntropyDesc::new(self.rows, self.vocab)
            .ignore_index(self.ignore_index)
            .label_smoothing(self.label_smoothing)
            .z_loss(self.z_loss)
            .reduction(self.reduction)
            .outputs(self.outputs);
        ce.weight = self.weight;
        ce.softcap = self.softcap;
        ce
    }

    /// Checks the shape and the options (those of cross-entropy, checked by its own rules).
    fn check(&self) -> Result<ClassTargets> {
        if self.dim == 0 {
            return Err(Error::Empty("dim (D)"));
        }
        if self.dim > MAX_DIM {
            return Err(Error::option(
                "dim",
                format!("{} is more than the kernels take ({MAX_DIM})", self.dim),
            ));
        }
        elements("hidden (N x D)", &[self.rows, self.dim])?;
        elements("linear (V x D)", &[self.vocab, self.dim])?;
        if self.correct && self.vocab > 1 << 24 {
            return Err(Error::option(
                "correct",
                "the argmax is kept as an f32, exact for at most 2^24 classes",
            ));
        }
        // The options on one row of logits (N x V may be more than a tensor's elements).
        let one_row = CrossEntropyDesc {
            rows: 1,
            ..self.cross_entropy()
        };
        let mut shape = one_row.check()?;
        if self.rows == 0 {
            return Err(Error::Empty("rows (N)"));
        }
        shape.rows = self.rows;
        Ok(shape)
    }
}

params! {
    /// The parameters of linear_cross_entropy.wgsl.
    LinearParams {
        rows: u32,
        dim: u32,
        vocab: u32,
        ignore_index: i32,
        wg_x: u32,
        /// The row tiles and class tiles of this dispatch (one of them by workgroup).
        row_tile0: u32,
        row_tile_end: u32,
        vocab_tile0: u32,
        vocab_tile_end: u32,
        /// 1: this dispatch starts its accumulation (writes rather than adds).
        first: u32,
        /// The first element of the windows of h and gh, and of W and gw, bound.
        h_base: u32,
        w_base: u32,
        /// Where in scratch: the rows' statistics, the gradient's coefficients, the row losses
        /// (or (loss, weight) pairs), the log-sum-exps, the bias, and the bias's gradient.
        stats_base: u32,
        coef_base: u32,
        out_base: u32,
        lse_base: u32,
        bias_base: u32,
        gbias_base: u32,
        /// 0 no loss, 1 row losses, 2 pairs for the reduction.
        want_loss: u32,
        /// 0 no gradient, 1 unscaled, 2 divided by the weighted mean's denominator.
        want_grad: u32,
        label_smoothing: f32,
        z_loss: f32,
        softcap: f32,
        /// The `narrow` pass's elements of the window, `[narrow_from, narrow_to)`.
        narrow_from: u32,
        narrow_to: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Tiles a dispatch takes so that an invocation's loops stay within [`LOOP_BUDGET`] and the
/// chunk of `unit_bytes`-sized tiles it binds within one binding (at least one).
fn tiles_per_dispatch(ctx: &Context, dim: u64, tile_bytes: u64, what: &'static str) -> Result<u64> {
    let by_loops = (LOOP_BUDGET / (dim + 128)).max(1);
    let limit = ctx.max_binding_bytes();
    let slack = elem_align(ctx, &[4]) * 4;
    let by_binding = limit.saturating_sub(slack) / tile_bytes;
    if by_binding == 0 {
        return Err(Error::TooLarge {
            what,
            bytes: tile_bytes + slack,
            limit,
            which: "storage binding",
        });
    }
    Ok(by_loops.min(by_binding))
}

/// A window of rows `[first, end)` of `[_, D]` tensors of the element sizes `sizes`, bound
/// from an element aligned for all of them: its first element and its element count.
fn rows_window(ctx: &Context, sizes: &[u64], first: u64, end: u64, dim: u64) -> (u64, u64) {
    let align = elem_align(ctx, sizes);
    let base = first * dim / align * align;
    (base, end * dim - base)
}

impl Tensors for LinearCrossEntropyDesc {
    type Ranges<'a> = LinearCrossEntropyBuffers<'a>;

    fn layout(&self, b: &mut Builder<'_>) -> Result<()> {
        let shape = self.check()?;
        let ctx = b.ctx();
        let (n, d, v) = (self.rows as u64, self.dim as u64, self.vocab as u64);
        let (want_loss, want_grad) = (self.outputs.loss, self.outputs.grad);
        let reduced = want_loss && self.reduction.is_reduced();
        let mean = self.reduction == Reduction::Mean;

        // Hidden states and the layer's weight (and their gradients) may be larger than one
        // binding: bound a window at a time. Bias, losses, log-sum-exps and the bias's gradient
        // go through scratch (side slots), keeping the kernel at seven storage bindings.
        let dtype = self.dtype;
        b.windowed_slot(HIDDEN, "hidden", dtype.bytes(n * d), Access::Read)?;
        b.slot(TARGET, "targets", 4 * n, Access::Read)?;
        let weight_bytes = if shape.weighted { 4 * v } else { 0 };
        b.slot(WEIGHT, "weight", weight_bytes, Access::Read)?;
        b.windowed_slot(LINEAR, "linear", dtype.bytes(v * d), Access::Read)?;
        let bias_base = if self.bias {
            b.side(BIAS, "bias", 4 * v, Access::Read)?
        } else {
            0
        };
        let out_base = match (want_loss, reduced) {
            (false, _) => 0,
            (true, true) => {
                b.slot(LOSS, "loss", 4, Access::Write)?;
                b.scratch(2 * n)?
            }
            (true, false) => b.side(LOSS, "loss", 4 * n, Access::Write)?,
        };
        let lse_base = if self.lse {
            b.side(LSE, "lse", 4 * n, Access::Write)?
        } else {
            0
        };
        let mut gbias_base = 0;
        let grad_dtype = self.grad_dtype;
        if want_grad {
            let (gh, gw) = (grad_dtype.bytes(n * d), grad_dtype.bytes(v * d));
            b.windowed_slot(GRAD_HIDDEN, "grad_hidden", gh, Access::Write)?;
            b.windowed_slot(GRAD_LINEAR, "grad_linear", gw, Access::Write)?;
            if self.bias {
                gbias_base = b.side(GRAD_BIAS, "grad_bias", 4 * v, Access::Write)?;
            }
        }
        b.grad_dtype(grad_dtype, n * d);
        b.grad_linear_dtype(grad_dtype, v * d);
        if self.correct {
            b.status_output(CORRECT, "correct", 3);
        }
        let stats_base = b.scratch(6 * n)?;
        let coef_base = if want_grad { b.scratch(4 * n)? } else { 0 };

        let key = |entry: &'static str| {
            PipelineKey::new(&LINEAR_CROSS_ENTROPY, entry)
                .value("TK", TK)
                .value("DTYPE_x", dtype.code())
                .value("DTYPE_lw", dtype.code())
                .constant("HAS_WEIGHT", shape.weighted as u32)
                .constant("HAS_BIAS", self.bias as u32)
                .constant("SOFTCAP", self.softcap.is_some() as u32)
                .constant("SMOOTH", (self.label_smoothing > 0.0) as u32)
                .constant("WANT_LSE", self.lse as u32)
        };
        let base = LinearParams {
            rows: n as u32,
            dim: d as u32,
            vocab: v as u32,
            ignore_index: shape.ignore_index,
            stats_base,
            coef_base,
            out_base,
            lse_base,
            bias_base,
            gbias_base,
            want_loss: match (want_loss, reduced) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            },
            want_grad: match (want_grad, mean) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            },
            label_smoothing: self.label_smoothing,
            z_loss: self.z_loss,
            softcap: self.softcap.unwrap_or(1.0),
            ..Default::default()
        };
        // The windowed tensors' element sizes: the inputs', the gradients', and f32 (a 16-bit
        // gradient's accumulators).
        let sizes = [dtype.size(), grad_dtype.size(), 4];
        // Windows of whole tiles of `per_wg` rows of D elements (of hidden states or weight).
        let windows = |units, per_wg, what| {
            Windowing {
                units,
                unit_elems: d,
                per_wg,
                tail_elems: 0,
                sizes: &sizes,
                what,
            }
            .spans(ctx)
        };
        // The window of a span of whole tiles: its first element and element count.
        let window_of = |span: &Span| (span.base, (span.first + span.units) * d - span.base);
        let row_spans = windows(n, TR, "a tile of hidden states")?;
        let class_spans = windows(v, TV, "a tile of the layer's weight")?;
        // A 16-bit gradient: the passes sum a window in f32 in accumulators of the plan's (gh's
        // and gw's), which the `narrow` pass rounds into the caller's window.
        let accumulators = if want_grad && grad_dtype != DType::F32 {
            let largest = |spans: &[Span]| spans.iter().map(|s| window_of(s).1).max().unwrap_or(0);
            Some((
                b.owned("grad_hidden's f32 sums", 4 * largest(&row_spans))?,
                b.owned("grad_linear's f32 sums", 4 * largest(&class_spans))?,
            ))
        } else {
            None
        };
        // Bindings 1..=7: h and W windows (each its first element and element count, or none),
        // targets, class weight, gh and gw (the caller's f32, over the same windows, or the
        // accumulators, where `writes` says the pass writes them), scratch.
        let entries = |windows: Option<((u64, u64), (u64, u64))>, writes: (bool, bool)| {
            let window = |slot, w: Option<(u64, u64)>, dtype: DType, writable| match w {
                Some((at, elems)) => {
                    Res::Window(slot, at * dtype.size(), View::Scalar(dtype.bytes(elems)))
                }
                None => Res::Dummy(writable),
            };
            let (hw, ww) = (windows.map(|w| w.0), windows.map(|w| w.1));
            vec![
                window(HIDDEN, hw, dtype, false),
                window(LINEAR, ww, dtype, false),
                Res::User(TARGET, View::Scalar(4 * n)),
                Res::user_if(shape.weighted, WEIGHT, View::Scalar(4 * v), false),
                match accumulators {
                    Some((h, _)) if writes.0 => Res::Owned(h),
                    _ => window(GRAD_HIDDEN, hw.filter(|_| writes.0), DType::F32, true),
                },
                match accumulators {
                    Some((_, w)) if writes.1 => Res::Owned(w),
                    _ => window(GRAD_LINEAR, ww.filter(|_| writes.1), DType::F32, true),
                },
                Res::Scratch,
            ]
        };
        // The `narrow` pass of a window `span` of a 16-bit gradient: accumulator `acc` into the
        // caller's `slot`, the span's own elements (its window may start in the span before).
        let narrow = |b: &mut Builder<'_>, acc: usize, slot: Slot, span: &Span| {
            let (at, elems) = window_of(span);
            let from = span.first * d - at;
            let (x, y) = b.fold((elems.div_ceil(2) - from / 2).div_ceil(256))?;
            let p = LinearParams {
                wg_x: x,
                narrow_from: from as u32,
                narrow_to: elems as u32,
                ..base
            };
            let mut e = entries(None, (false, false));
            e[4] = Res::Owned(acc);
            e[5] = Res::Window(
                slot,
                at * grad_dtype.size(),
                View::Scalar(grad_dtype.bytes(elems)),
            );
            let key = key("narrow").value("DTYPE_gw", grad_dtype.code());
            b.dispatch(&key, &p, e, (x, y));
            Ok::<(), Error>(())
        };
        // One dispatch of a tile pass over row tiles [r0, r1) and class tiles [t0, t1) with h
        // and W bound to the windows `hw`, `ww`, one workgroup a tile of `along` (rows or
        // classes); `first` starts the pass's accumulation.
        let tiles = |b: &mut Builder<'_>,
                     entry: &'static str,
                     (r0, r1, hw): (u64, u64, (u64, u64)),
                     (t0, t1, ww): (u64, u64, (u64, u64)),
                     first: bool| {
            let along_rows = entry != "grad_weight";
            let (x, y) = b.fold(if along_rows { r1 - r0 } else { t1 - t0 })?;
            let p = LinearParams {
                wg_x: x,
                row_tile0: r0 as u32,
                row_tile_end: r1 as u32,
                vocab_tile0: t0 as u32,
                vocab_tile_end: t1 as u32,
                first: first as u32,
                h_base: hw.0 as u32,
                w_base: ww.0 as u32,
                ..base
            };
            let writes = (entry == "grad_hidden", entry == "grad_weight");
            b.dispatch(&key(entry), &p, entries(Some((hw, ww)), writes), (x, y));
            Ok::<(), Error>(())
        };

        // The row-tile passes (stats, grad_hidden): chunks of class tiles in order, each over
        // windows of whole row tiles.
        let vocab_tiles = v.div_ceil(TV);
        let row_tiles = n.div_ceil(TR);
        let chunk = tiles_per_dispatch(ctx, d, 4 * TV * d, "a tile of the layer's weight")?;
        let by_classes = |b: &mut Builder<'_>, entry: &'static str| {
            for (j, t0) in (0..vocab_tiles).step_by(chunk as usize).enumerate() {
                let t1 = (t0 + chunk).min(vocab_tiles);
                let ww = rows_window(ctx, &sizes, t0 * TV, (t1 * TV).min(v), d);
                for span in &row_spans {
                    let rows = (span.first / TR, (span.first + span.units).div_ceil(TR));
                    let classes = (t0, t1, ww);
                    tiles(b, entry, (rows.0, rows.1, window_of(span)), classes, j == 0)?;
                }
            }
            Ok::<(), Error>(())
        };
        by_classes(b, "stats")?;

        // Each row's loss, log-sum-exp and gradient coefficients (scaled by the weighted
        // mean's denominator, found first when the gradient needs it), then the reduction.
        if want_grad && mean {
            shape.denominator(b)?;
        }
        let (x, y) = b.fold(n.div_ceil(256))?;
        let p = LinearParams { wg_x: x, ..base };
        b.dispatch(&key("finish"), &p, entries(None, (false, false)), (x, y));
        if reduced {
            let finish = if mean {
                Finish::WeightedMean
            } else {
                Finish::Sum
            };
            b.reduce(n, out_base, finish, Some(LOSS))?;
        }
        if !want_grad {
            return Ok(());
        }
        // The hidden states' gradient: a window of whole row tiles at a time, each over the
        // chunks of class tiles in order (each row sums the chunks in the order of the classes,
        // whatever the windows).
        for span in &row_spans {
            let rows = (span.first / TR, (span.first + span.units).div_ceil(TR));
            for (j, t0) in (0..vocab_tiles).step_by(chunk as usize).enumerate() {
                let t1 = (t0 + chunk).min(vocab_tiles);
                let ww = rows_window(ctx, &sizes, t0 * TV, (t1 * TV).min(v), d);
                let classes = (t0, t1, ww);
                tiles(
                    b,
                    "grad_hidden",
                    (rows.0, rows.1, window_of(span)),
                    classes,
                    j == 0,
                )?;
            }
            if let Some((acc, _)) = accumulators {
                narrow(b, acc, GRAD_HIDDEN, span)?;
            }
        }

        // The weight's (and bias's) gradient: a window of whole class tiles at a time, each over
        // the chunks of row tiles in order.
        let chunk = tiles_per_dispatch(ctx, d, 4 * TR * d, "a tile of hidden states")?;
        for span in &class_spans {
            let classes = (span.first / TV, (span.first + span.units).div_ceil(TV));
            let ww = window_of(span);
            for (i, r0) in (0..row_tiles).step_by(chunk as usize).enumerate() {
                let r1 = (r0 + chunk).min(row_tiles);
                let hw = rows_window(ctx, &sizes, r0 * TR, (r1 * TR).min(n), d);
                let rows = (r0, r1, hw);
                tiles(b, "grad_weight", rows, (classes.0, classes.1, ww), i == 0)?;
            }
            if let Some((_, acc)) = accumulators {
                narrow(b, acc, GRAD_LINEAR, span)?;
            }
        }
        Ok(())
    }

    fn results(&self) -> (Reduction, &'static str) {
        (self.reduction, CLASS_INVALID)
    }

    fn host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
        self.check()?;
        let (n, d, v) = (self.rows as u64, self.dim as u64, self.vocab as u64);
        check_count("hidden (N * D)", n * d, inputs.input.len())?;
        let linear = inputs
            .linear
            .ok_or(Error::Binding("linear", "needed by this loss, not given"))?;
        check_count("linear (V * D)", v * d, linear.len())?;
        let y = class_targets_i32(inputs, self.rows, self.vocab, self.ignore_index)?;
        check_declared("weight (V)", self.weight, inputs.weight)?;
        check_declared("bias (V)", self.bias.then_some(self.vocab), inputs.bias)?;
        Ok(HostData::default()
            .with(HIDDEN, value_bytes("hidden", inputs.input, self.dtype)?)
            .with(TARGET, y)
            .with(WEIGHT, bytes(inputs.weight))
            .with(LINEAR, value_bytes("linear", linear, self.dtype)?)
            .with(BIAS, bytes(inputs.bias)))
    }
}

impl Context {
    /// Fused linear + cross-entropy on host slices: `hidden [N, D]`, the layer's `linear
    /// [V, D]` and optional `bias [V]` (as `desc.bias` says), class `targets [N]`. The loss,
    /// the log-sum-exps when asked for, and the gradients (`grad`: the hidden states',
    /// `grad_linear`, `grad_bias`). For a class weight, give [`Inputs`] to [`Context::loss`].
    pub fn linear_cross_entropy(
        &self,
        desc: &LinearCrossEntropyDesc,
        hidden: &[f32],
        linear: &[f32],
        bias: Option<&[f32]>,
        targets: &[i64],
    ) -> Result<LossOutput> {
        let mut inputs = Inputs::classes(hidden, targets).linear(linear);
        inputs.bias = bias;
        self.loss(desc, &inputs)
    }
}
