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

use crate::dtype::DType;
use crate::engine::context::PipelineKey;
use crate::engine::kernel::{Kernel, ScaleMode, fixed_layout, params};
use crate::engine::program::{
    Access, After, Builder, Finish, Res, View, WG, Windowing, loss_bytes, loss_res,
};
use crate::error::{Error, Result};
use crate::families::class_targets::{CLASS_INVALID, ClassTargets, check_shape, class_targets_i32};
use crate::plan::roles::{GRAD, INPUT, LOSS, TARGET, WEIGHT};
use crate::plan::sealed::Tensors;
use crate::plan::{
    HostData, Inputs, buffers, bytes, check_count, check_declared, setters, value_bytes,
};
use crate::reduction::{Outputs, Reduction};

/// Rows per invocation of the loss part.
const KR: u32 = 4;

/// `shaders/nll.wgsl`. Bindings: log-probabilities, targets, class weight, grad, loss, scratch.
pub(crate) static NLL: Kernel = Kernel::new("nll.wgsl", include_str!("../../shaders/nll.wgsl"))
    .params(NllParams::INFO)
    .layout(fixed_layout!(U, R, R, R, W, W, W))
    .defines(&["VEC4", "SUBGROUPS"]);

buffers! {
    /// The caller's buffers for a [`Plan`](crate::Plan) of an [`NllDesc`]. Each range needs
    /// `BufferUsages::STORAGE`, an offset that is a multiple of the device's
    /// `min_storage_buffer_offset_alignment`, and at least the bytes of the plan's shape in its
    /// dtypes ([`crate::DType::bytes`]). Only the outputs are written.
    NllBuffers {
        /// The log-probabilities `[N, C]`, in the description's dtype. Read only.
        input: INPUT,
        /// The class targets (i32 `[N]`). Read only.
        target: TARGET,
        ;
        /// The class weight (f32 `[C]`), when the description declares one. Read only.
        weight: WEIGHT,
        /// Where the loss goes (f32): one value when reduced, one a row for
        /// [`Reduction::None`].
        loss: LOSS,
        /// Where the gradient with respect to the log-probabilities goes, in the description's
        /// `grad_dtype`.
        grad: GRAD,
    }
}

/// What negative log-likelihood computes, with PyTorch's defaults. Plan it with
/// [`Plan::new`](crate::Plan::new), or run it on host data with
/// [`Context::loss`](crate::Context::loss) and [`Inputs::classes`].
#[derive(Clone, Debug, PartialEq)]
pub struct NllDesc {
    /// Rows N.
    pub rows: usize,
    /// Classes C.
    pub classes: usize,
    /// The reduction (default mean; none: one loss per row).
    pub reduction: Reduction,
    /// What to compute (default both).
    pub outputs: Outputs,
    /// The class weight's length, C, when there is one.
    pub weight: Option<usize>,
    /// Rows whose target equals this weigh nothing (default -100). Must fit in an i32.
    pub ignore_index: i64,
    /// The dtype of the log-probabilities (default f32).
    pub dtype: DType,
    /// The gradient's dtype (default: the log-probabilities').
    pub grad_dtype: Option<DType>,
}

setters! {
    NllDesc {
        /// Sets the reduction.
        reduction: Reduction,
        /// Sets what to compute.
        outputs: Outputs,
        /// Sets the ignored target.
        ignore_index: i64,
        /// Sets the dtype of the log-probabilities.
        dtype: DType,
    }
    optional {
        /// Declares a class weight of this many entries (must be C).
        weight: usize,
        /// Sets the gradient's dtype.
        grad_dtype: DType,
    }
}

impl NllDesc {
    /// Default options, loss and gradient.
    pub fn new(rows: usize, classes: usize) -> Self {
        NllDesc {
            rows,
            classes,
            reduction: Reduction::Mean,
            outputs: Outputs::BOTH,
            weight: None,
            ignore_index: -100,
            dtype: DType::F32,
            grad_dtype: None,
        }
    }
}

params! {
    /// The parameters of nll.wgsl.
    NllParams {
        rows: u32,
        /// Rows whose loss this dispatch computes (0 for the gradient's tail dispatch).
        loss_rows: u32,
        /// Gradient vec4s this dispatch writes, and the first of them.
        vecs: u32,
        vec_base: u32,
        total: u32,
        wg_x: u32,
        partial_base: u32,
        ignore_index: i32,
        grad_scale: f32,
        /// What happens after the loops (`After`).
        flags: u32,
        scale_mode: u32,
        final_mode: u32,
        mean_den: f32,
        /// The first row of this dispatch's loss rows (`loss_rows` is the end).
        row_base: u32,
        /// The first element of the window of x (or of the gradient) bound.
        bind_base: u32,
        _pad0: u32,
    }
}

impl Tensors for NllDesc {
    type Ranges<'a> = NllBuffers<'a>;

    fn layout(&self, b: &mut Builder<'_>) -> Result<()> {
        let ctx = b.ctx();
        self.outputs.check()?;
        let classes = ClassTargets::check(self.rows, self.classes, self.weight, self.ignore_index)?;
        if self.reduction == Reduction::BatchMean {
            return Err(Error::option("reduction", "batchmean is for kl-div only"));
        }
        let ignore_index = classes.ignore_index;
        let n = self.rows as u64;
        let c = self.classes as u64;
        let total = classes.total;
        let weighted = self.weight.is_some();
        let want_loss = self.outputs.loss;
        let want_grad = self.outputs.grad;
        let reduced = want_loss && self.reduction.is_reduced();
        let mean = self.reduction == Reduction::Mean;
        let tuning = ctx.tuning();
        let k = tuning.stream_vecs;
        let (dtype, grad_dtype) = (self.dtype, self.grad_dtype.unwrap_or(self.dtype));

        // log_probs and grad may be larger than one binding: bound a window at a time.
        b.windowed_slot(INPUT, "log_probs", dtype.bytes(total), Access::Read)?;
        b.slot(TARGET, "targets", 4 * n, Access::Read)?;
        b.slot(
            WEIGHT,
            "weight",
            if weighted { 4 * c } else { 0 },
            Access::Read,
        )?;
        b.slot(
            LOSS,
            "loss",
            loss_bytes(want_loss, reduced, n),
            Access::Write,
        )?;
        b.windowed_slot(
            GRAD,
            "grad",
            if want_grad {
                grad_dtype.bytes(total)
            } else {
                0
            },
            Access::Write,
        )?;
        b.grad_dtype(grad_dtype, total);

        let key = |vec4: bool| {
            PipelineKey::new(&NLL, "main")
                .define("VEC4", vec4)
                .value("DTYPE_x", dtype.code())
                .value("DTYPE_grad", grad_dtype.code())
                .constant("WG", WG)
                .constant("SEG", WG)
                .constant("KR", KR)
                .constant("K", k)
                .constant("LANES", tuning.lanes)
                .constant("CLASSES", c as u32)
                .constant("HAS_WEIGHT", weighted as u32)
                .constant("WANT_GRAD", want_grad as u32)
                .constant("WANT_LOSS", want_loss as u32)
        };
        // x bound to `elems` elements from element `base` on (or not at all), the gradient to
        // `grad` (a window's first element and its view), `loss` as the loss binding.
        let entries = |x: Option<(u64, u64)>, grad: Option<(u64, View)>, loss: Res| {
            vec![
                match x {
                    Some((base, elems)) => {
                        Res::Window(INPUT, base * dtype.size(), View::of(false, elems, dtype))
                    }
                    None => Res::Dummy(false),
                },
                Res::User(TARGET, View::Scalar(4 * n)),
                Res::user_if(weighted, WEIGHT, View::Scalar(4 * c), false),
                match grad {
                    Some((at, view)) => Res::Window(GRAD, at * grad_dtype.size(), view),
                    None => Res::Dummy(true),
                },
                loss,
                Res::Scratch,
            ]
        };
        let finish = reduced.then_some(if mean {
            Finish::WeightedMean
        } else {
            Finish::Sum
        });
        // `a`, writing row losses where the plan has them (every dispatch of the loss).
        let with_rows = |a: After| After {
            row_loss: want_loss && !reduced,
            ..a
        };
        // The parameters of a dispatch that does `a` after its loops.
        let after = |a: After| NllParams {
            rows: n as u32,
            total: total as u32,
            ignore_index,
            grad_scale: 1.0,
            flags: a.flags(),
            scale_mode: a.scale_mode,
            final_mode: a.final_mode,
            ..Default::default()
        };
        let rows_per_wg = (WG * KR) as u64;
        let vecs_per_wg = (WG * k) as u64;
        let full = total / 4;
        let tail = total % 4;
        let grad_vecs = if want_grad { total.div_ceil(4) } else { 0 };
        let single = n <= rows_per_wg
            && grad_vecs <= vecs_per_wg
            && [dtype.size(), grad_dtype.size()]
                .iter()
                .all(|z| z * total <= ctx.max_binding_bytes());

        if single {
            // One workgroup: everything, the weighted mean's denominator and the reduced value
            // included, in one dispatch.
            let scale_in_kernel = want_grad && mean;
            let is_single = reduced || scale_in_kernel;
            let single_after = with_rows(After {
                single: is_single,
                scale_mode: if scale_in_kernel {
                    ScaleMode::OWN
                } else {
                    ScaleMode::HOST
                },
                final_mode: After::final_mode(finish),
                ..Default::default()
            });
            let p = NllParams {
                loss_rows: n as u32,
                vecs: grad_vecs as u32,
                wg_x: 1,
                ..after(single_after)
            };
            let loss = loss_res(LOSS, want_loss, reduced, is_single, View::Scalar(4 * n));
            let grad = want_grad.then_some((0, View::Scalar(grad_dtype.bytes(total))));
            b.dispatch(
                &single_after.key(key(false)),
                &p,
                entries(Some((0, total)), grad, loss),
                (1, 1),
            );
            return Ok(());
        }
        let scale_mode = if want_grad && mean {
            classes.denominator(b)?;
            ScaleMode::REDUCED
        } else {
            ScaleMode::HOST
        };
        let base_after = with_rows(After {
            partial: reduced,
            scale_mode,
            ..Default::default()
        });
        let base = after(base_after);
        let loss = loss_res(LOSS, want_loss, reduced, false, View::Scalar(4 * n));
        // The loss: windows of whole rows of x, each row's (loss, weight) to scratch when
        // reduced, then their reduction over rows.
        if want_loss {
            let pairs = if reduced { b.scratch(2 * n)? } else { 0 };
            let spans = Windowing {
                units: n,
                unit_elems: c,
                per_wg: 1,
                tail_elems: 0,
                sizes: &[dtype.size()],
                what: "a row of log_probs",
            }
            .spans(ctx)?;
            for w in spans {
                let (x, y) = b.fold(w.units.div_ceil(rows_per_wg))?;
                let p = NllParams {
                    loss_rows: (w.first + w.units) as u32,
                    row_base: w.first as u32,
                    wg_x: x,
                    partial_base: pairs,
                    bind_base: w.base as u32,
                    ..base
                };
                let key = base_after.key(key(false).constant("WANT_GRAD", 0u32));
                b.dispatch(
                    &key,
                    &p,
                    entries(Some((w.base, (w.first + w.units) * c - w.base)), None, loss),
                    (x, y),
                );
            }
            if let Some(finish) = finish {
                b.reduce(n, pairs, finish, Some(LOSS))?;
            }
        }
        // The gradient: windows of whole workgroups' vec4s, then the last, partial vec4.
        if want_grad {
            let spans = Windowing {
                units: full,
                unit_elems: 4,
                per_wg: vecs_per_wg,
                tail_elems: tail,
                sizes: &[grad_dtype.size()],
                what: "a window of whole workgroups' gradient",
            }
            .spans(ctx)?;
            let p = |vecs: u64, vec_base: u64, wg_x: u32, bind_base: u64| NllParams {
                vecs: vecs as u32,
                vec_base: vec_base as u32,
                wg_x,
                bind_base: bind_base as u32,
                flags: 0,
                ..base
            };
            let key = |vec4| key(vec4).constant("WANT_LOSS", 0u32);
            for w in spans.iter().filter(|w| w.units > 0) {
                let (x, y) = b.fold(w.units.div_ceil(vecs_per_wg))?;
                let view = View::of(true, 4 * (w.first + w.units) - w.base, grad_dtype);
                let e = entries(None, Some((w.base, view)), Res::Dummy(true));
                b.dispatch(&key(true), &p(w.units, w.first, x, w.base), e, (x, y));
            }
            if tail > 0 {
                let at = spans.last().map_or(0, |w| w.base);
                let grad = (at, View::of(false, total - at, grad_dtype));
                let e = entries(None, Some(grad), Res::Dummy(true));
                b.dispatch(&key(false), &p(1, full, 1, at), e, (1, 1));
            }
        }
        Ok(())
    }

    fn results(&self) -> (Reduction, &'static str) {
        (self.reduction, CLASS_INVALID)
    }

    fn host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
        let total = check_shape(self.rows, self.classes)?;
        check_count("log_probs (N * C)", total, inputs.input.len())?;
        let y = class_targets_i32(inputs, self.rows, self.classes, self.ignore_index)?;
        check_declared("weight (C)", self.weight, inputs.weight)?;
        let x = value_bytes("log_probs", inputs.input, self.dtype)?;
        Ok(HostData::default()
            .with(INPUT, x)
            .with(TARGET, y)
            .with(WEIGHT, bytes(inputs.weight)))
    }
}
