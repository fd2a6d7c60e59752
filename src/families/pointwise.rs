//! The streaming losses, whose loss at element i depends on `pred[i]`, `target[i]` and a
//! broadcast weight alone: the pointwise catalogue (MSE, L1, Huber, smooth L1, binary
//! cross-entropy on probabilities and on logits, KL divergence), and the classic cross-entropy
//! on probability inputs, whose rows sum their elements' losses.
//!
//! Kernel: `shaders/pointwise.wgsl`. CPU twin: [`crate::cpu::pointwise`].
//!
//! Mean denominators: the element count M for `mean`; the batch size for KL's `batchmean`; the
//! row count N for the classic cross-entropy.

use crate::dtype::DType;
use crate::engine::context::PipelineKey;
use crate::engine::kernel::{FinalMode, Kernel, fixed_layout, modes, params};
use crate::engine::program::{
    Access, After, Builder, Finish, Res, View, WG, Windowing, loss_bytes, loss_res, partial_group,
};
use crate::engine::slots::Slot;
use crate::error::{Error, Result};
use crate::families::class_targets::check_shape;
use crate::plan::roles::{GRAD, INPUT, LOSS, TARGET, WEIGHT};
use crate::plan::sealed::Tensors;
use crate::plan::{
    HostData, Inputs, buffers, bytes, check_count, check_declared, setters, value_bytes,
};
use crate::reduction::{Outputs, Reduction};

/// BCE with logits' positive-class weight: the pointwise kernel's own slot.
const POS_WEIGHT: Slot = Slot::new(5, "pos_weight");

buffers! {
    /// The caller's buffers for a [`Plan`](crate::Plan) of a pointwise loss
    /// ([`PointwiseDesc`]), a classic cross-entropy ([`ClassicCrossEntropyDesc`]) or a custom
    /// loss ([`crate::CustomLossDesc`]). Each range needs `BufferUsages::STORAGE`, an offset
    /// that is a multiple of the device's `min_storage_buffer_offset_alignment`, and at least the
    /// bytes of the plan's shape in its dtypes ([`crate::DType::bytes`]: 16-bit tensors rounded
    /// up to whole 4-byte words). Only the outputs are written.
    PointwiseBuffers {
        /// The predictions (probabilities for the classic cross-entropy), in the description's
        /// dtype. Read only.
        input: INPUT,
        /// The target, shaped and typed like the input. Read only.
        target: TARGET,
        ;
        /// The weight (f32, broadcast over the elements), when the description declares one.
        /// Read only.
        weight: WEIGHT,
        /// BCE with logits' positive-class weight (f32), when declared. Read only.
        pos_weight: POS_WEIGHT,
        /// Where the loss goes (f32): one value when reduced; for [`Reduction::None`], one an
        /// element (one a row for the classic cross-entropy).
        loss: LOSS,
        /// Where the gradient with respect to the input goes, in the description's
        /// `grad_dtype`.
        grad: GRAD,
    }
}

/// A pointwise loss with its scalar options. `d = pred - target`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Pointwise {
    /// Mean squared error: `d^2`; gradient `2 d`.
    Mse,
    /// Mean absolute error: `|d|`; gradient `sign(d)`, 0 at 0.
    L1,
    /// Huber: `d^2 / 2` where `|d| < delta`, else `delta (|d| - delta / 2)`; gradient
    /// `clamp(d, -delta, delta)`. PyTorch's default `delta` is 1.
    Huber {
        /// The threshold, > 0.
        delta: f32,
    },
    /// Smooth L1: `d^2 / (2 beta)` where `|d| < beta`, else `|d| - beta / 2`; gradient
    /// `clamp(d / beta, -1, 1)`; `beta = 0` is L1. `huber(delta) = delta * smooth_l1(beta = delta)`.
    SmoothL1 {
        /// The threshold, >= 0.
        beta: f32,
    },
    /// Binary cross-entropy on probabilities `pred` in [0, 1]:
    /// `-w (y max(log x, -100) + (1 - y) max(log(1 - x), -100))` (logs clamped like PyTorch);
    /// gradient `w (x - y) / max(x (1 - x), 1e-12)`.
    Bce,
    /// Binary cross-entropy on logits, with optional `pos_weight` p (per class, broadcast over
    /// the last dimension): `w ((1 - y) x + (1 + (p - 1) y) softplus(-x))`, finite for any
    /// finite logit; gradient `w ((1 + (p - 1) y) sigmoid(x) - p y)`.
    BceWithLogits,
    /// KL divergence with `pred` = log-probabilities: `y (log y - x)` (0 where y = 0), or with
    /// `log_target` (target given as log-probabilities) `exp(y) (y - x)`; gradient `-y` or
    /// `-exp(y)`.
    KlDiv {
        /// The target holds log-probabilities.
        log_target: bool,
    },
}

impl Pointwise {
    /// The CLI's name for the loss.
    pub fn name(&self) -> &'static str {
        match self {
            Pointwise::Mse => "mse",
            Pointwise::L1 => "l1",
            Pointwise::Huber { .. } => "huber",
            Pointwise::SmoothL1 { .. } => "smooth-l1",
            Pointwise::Bce => "bce",
            Pointwise::BceWithLogits => "bce-with-logits",
            Pointwise::KlDiv { .. } => "kl-div",
        }
    }

    fn code(&self) -> u32 {
        match self {
            Pointwise::Mse => LossCode::MSE,
            Pointwise::L1 => LossCode::L1,
            Pointwise::Huber { .. } => LossCode::HUBER,
            Pointwise::SmoothL1 { .. } => LossCode::SMOOTH_L1,
            Pointwise::Bce => LossCode::BCE,
            Pointwise::BceWithLogits => LossCode::BCE_LOGITS,
            Pointwise::KlDiv { .. } => LossCode::KL_DIV,
        }
    }

    fn param(&self) -> f32 {
        match *self {
            Pointwise::Huber { delta } => delta,
            Pointwise::SmoothL1 { beta } => beta,
            _ => 0.0,
        }
    }

    fn check(&self) -> Result<()> {
        match *self {
            Pointwise::Huber { delta } if !(delta > 0.0 && delta.is_finite()) => Err(
                Error::option("delta", format!("{delta} is not a positive finite number")),
            ),
            Pointwise::SmoothL1 { beta } if !(beta >= 0.0 && beta.is_finite()) => {
                Err(Error::option(
                    "beta",
                    format!("{beta} is not a non-negative finite number"),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// What a pointwise loss computes: the loss, the element count, and which buffers it takes.
/// Plan it with [`Plan::new`](crate::Plan::new), or run it on host data with
/// [`Context::loss`](crate::Context::loss).
#[derive(Clone, Debug, PartialEq)]
pub struct PointwiseDesc {
    /// The loss.
    pub loss: Pointwise,
    /// Elements in `pred` and `target`.
    pub len: usize,
    /// The reduction (default mean).
    pub reduction: Reduction,
    /// What to compute (default both).
    pub outputs: Outputs,
    /// Length of the per-element `weight` (BCE and BCE with logits), broadcast so that element i
    /// takes `weight[i % weight]` (PyTorch's broadcasting of a trailing-dimension shape); `len`
    /// must be a multiple of it.
    pub weight: Option<usize>,
    /// Length of BCE-with-logits' `pos_weight` (the class count), broadcast the same way.
    pub pos_weight: Option<usize>,
    /// The batch size (the first dimension) that `batchmean` divides by.
    pub batch: Option<usize>,
    /// The dtype of `pred` and `target` (default f32).
    pub dtype: DType,
    /// The gradient's dtype (default: `pred`'s).
    pub grad_dtype: Option<DType>,
}

setters! {
    PointwiseDesc {
        /// Sets the reduction.
        reduction: Reduction,
        /// Sets what to compute.
        outputs: Outputs,
        /// Sets the dtype of `pred` and `target`.
        dtype: DType,
    }
    optional {
        /// Declares a broadcast weight of this many elements.
        weight: usize,
        /// Declares a broadcast positive-class weight of this many elements.
        pos_weight: usize,
        /// Sets the batch size for `batchmean`.
        batch: usize,
        /// Sets the gradient's dtype.
        grad_dtype: DType,
    }
}

impl PointwiseDesc {
    /// `loss` over `len` elements, mean reduction, loss and gradient.
    pub fn new(loss: Pointwise, len: usize) -> Self {
        PointwiseDesc {
            loss,
            len,
            reduction: Reduction::Mean,
            outputs: Outputs::BOTH,
            weight: None,
            pos_weight: None,
            batch: None,
            dtype: DType::F32,
            grad_dtype: None,
        }
    }

    /// The mean's denominator.
    fn denominator(&self) -> Result<f64> {
        match self.reduction {
            Reduction::BatchMean => {
                if !matches!(self.loss, Pointwise::KlDiv { .. }) {
                    return Err(Error::option("reduction", "batchmean is for kl-div only"));
                }
                match self.batch {
                    Some(b) if b > 0 && self.len.is_multiple_of(b) => Ok(b as f64),
                    Some(b) => Err(Error::option(
                        "batch",
                        format!("{b} does not divide the {} elements", self.len),
                    )),
                    None => Err(Error::option("batch", "batchmean needs the batch size")),
                }
            }
            _ => Ok(self.len as f64),
        }
    }

    fn check(&self) -> Result<()> {
        self.loss.check()?;
        self.outputs.check()?;
        if self.len == 0 {
            return Err(Error::Empty("pred"));
        }
        crate::engine::program::elements("pred", &[self.len])?;
        let broadcast = |name: &'static str, len: Option<usize>, allowed: bool| match len {
            None => Ok(()),
            Some(_) if !allowed => Err(Error::option(
                name,
                format!("{} takes no {name}", self.loss.name()),
            )),
            Some(0) => Err(Error::Empty(name)),
            Some(l) if !self.len.is_multiple_of(l) => Err(Error::option(
                name,
                format!("length {l} does not broadcast over {} elements", self.len),
            )),
            Some(_) => Ok(()),
        };
        let bce = matches!(self.loss, Pointwise::Bce | Pointwise::BceWithLogits);
        broadcast("weight", self.weight, bce)?;
        broadcast(
            "pos_weight",
            self.pos_weight,
            self.loss == Pointwise::BceWithLogits,
        )?;
        self.denominator().map(|_| ())
    }
}

params! {
    /// The parameters of pointwise.wgsl.
    PointwiseParams {
        /// Elements in the whole problem.
        len: u32,
        /// vec4s covered by this dispatch, and the first of them.
        vecs: u32,
        vec_base: u32,
        wg_x: u32,
        partial_base: u32,
        weight_len: u32,
        pos_weight_len: u32,
        /// The loss's parameter (Huber's delta, smooth L1's beta).
        p0: f32,
        grad_scale: f32,
        mean_den: f32,
        /// What happens after the loop (`After`).
        flags: u32,
        scale_mode: u32,
        final_mode: u32,
        /// ROWS: elements a row, chunks a row, the end of this dispatch's row chunks and the
        /// first of them.
        row_len: u32,
        chunks: u32,
        row_chunks: u32,
        chunk_base: u32,
        /// The first element of the window of x, y, grad and element losses bound.
        bind_base: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

impl Tensors for PointwiseDesc {
    type Ranges<'a> = PointwiseBuffers<'a>;

    fn layout(&self, b: &mut Builder<'_>) -> Result<()> {
        self.check()?;
        let grad_dtype = self.grad_dtype.unwrap_or(self.dtype);
        Stream {
            p0: self.loss.param(),
            log_target: matches!(self.loss, Pointwise::KlDiv { log_target: true }),
            weight: self.weight,
            pos_weight: self.pos_weight,
            den: self.denominator()?,
            ..Stream::new(
                self.loss.code(),
                self.len as u64,
                self.reduction,
                self.outputs,
            )
        }
        .dtypes(self.dtype, grad_dtype)
        .plan(b)
    }

    fn results(&self) -> (Reduction, &'static str) {
        (self.reduction, PROBS_INVALID)
    }

    fn host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
        let target = inputs.values()?;
        check_count("pred", self.len as u64, inputs.input.len())?;
        check_count("target (must match pred)", self.len as u64, target.len())?;
        check_declared("weight", self.weight, inputs.weight)?;
        check_declared("pos_weight", self.pos_weight, inputs.pos_weight)?;
        self.check()?;
        if self.loss == Pointwise::Bce {
            check_probabilities("pred (bce probabilities)", &inputs.input.to_f32())?;
        }
        Ok(HostData::default()
            .with(INPUT, value_bytes("pred", inputs.input, self.dtype)?)
            .with(TARGET, value_bytes("target", target, self.dtype)?)
            .with(WEIGHT, bytes(inputs.weight))
            .with(POS_WEIGHT, bytes(inputs.pos_weight)))
    }
}

/// Binary cross-entropy needs probabilities: every element in [0, 1] (NaN is not), as
/// PyTorch checks.
pub fn check_probabilities(what: &'static str, pred: &[f32]) -> Result<()> {
    match pred.iter().position(|p| !(0.0..=1.0).contains(p)) {
        Some(index) => Err(Error::ValueOutOfRange {
            what,
            index,
            value: pred[index] as f64,
            domain: "[0, 1]",
        }),
        None => Ok(()),
    }
}

/// What the kernels count as invalid probabilities, in [`Error::InvalidOnGpu`].
const PROBS_INVALID: &str = "probabilities (outside [0, 1])";

/// What the classic cross-entropy on probability *inputs* computes: per row
/// `-sum_c y_true log(y_pred + eps)`; `mean` divides by the row count N, like PyTorch and
/// Keras. (numpy's one-liner `-np.mean(y_true * np.log(y_pred + eps))` divides by N * C: that
/// is this sum divided by N * C.) The gradient is with respect to the probabilities. A streaming
/// loss (`LOSS` 7 of the pointwise kernel) whose rows sum their elements' losses.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassicCrossEntropyDesc {
    /// Rows N.
    pub rows: usize,
    /// Classes C.
    pub classes: usize,
    /// Added to the probabilities inside the log, >= 0 (default 1e-7, Keras' epsilon).
    pub eps: f32,
    /// The reduction (default mean).
    pub reduction: Reduction,
    /// What to compute (default both).
    pub outputs: Outputs,
    /// The dtype of the probabilities and targets (default f32).
    pub dtype: DType,
    /// The gradient's dtype (default: the probabilities').
    pub grad_dtype: Option<DType>,
}

setters! {
    ClassicCrossEntropyDesc {
        /// Sets eps.
        eps: f32,
        /// Sets the reduction.
        reduction: Reduction,
        /// Sets what to compute.
        outputs: Outputs,
        /// Sets the dtype of the probabilities and targets.
        dtype: DType,
    }
    optional {
        /// Sets the gradient's dtype.
        grad_dtype: DType,
    }
}

impl ClassicCrossEntropyDesc {
    /// Keras' epsilon, mean, loss and gradient.
    pub fn new(rows: usize, classes: usize) -> Self {
        ClassicCrossEntropyDesc {
            rows,
            classes,
            eps: 1e-7,
            reduction: Reduction::Mean,
            outputs: Outputs::BOTH,
            dtype: DType::F32,
            grad_dtype: None,
        }
    }

    /// Checks the options; returns N * C.
    fn check(&self) -> Result<u64> {
        let total = check_shape(self.rows, self.classes)?;
        self.outputs.check()?;
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(Error::option(
                "eps",
                format!("{} is not a non-negative finite number", self.eps),
            ));
        }
        if self.reduction == Reduction::BatchMean {
            return Err(Error::option("reduction", "batchmean is for kl-div only"));
        }
        Ok(total)
    }
}

impl Tensors for ClassicCrossEntropyDesc {
    type Ranges<'a> = PointwiseBuffers<'a>;

    fn layout(&self, b: &mut Builder<'_>) -> Result<()> {
        let grad_dtype = self.grad_dtype.unwrap_or(self.dtype);
        Stream {
            p0: self.eps,
            names: ["probs", "targets"],
            rows: Some((self.rows as u64, self.classes as u64)),
            den: self.rows as f64,
            ..Stream::new(
                LossCode::CLASSIC,
                self.check()?,
                self.reduction,
                self.outputs,
            )
        }
        .dtypes(self.dtype, grad_dtype)
        .plan(b)
    }

    fn results(&self) -> (Reduction, &'static str) {
        (self.reduction, PROBS_INVALID)
    }

    fn host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
        let total = self.check()?;
        check_count("probs (N * C)", total, inputs.input.len())?;
        let t = inputs.values()?;
        check_count("targets (N * C, like the probabilities)", total, t.len())?;
        check_probabilities("probs", &inputs.input.to_f32())?;
        Ok(HostData::default()
            .with(INPUT, value_bytes("probs", inputs.input, self.dtype)?)
            .with(TARGET, value_bytes("targets", t, self.dtype)?))
    }
}

modes! {
    /// The pointwise kernel's loss (its `LOSS` override constant).
    /// `CLASSIC`: the classic cross-entropy's term on probabilities; `CUSTOM`: a custom loss's
    /// WGSL expressions.
    LossCode "LOSS" {
        MSE = 0, L1 = 1, HUBER = 2, SMOOTH_L1 = 3, BCE = 4, BCE_LOGITS = 5, KL_DIV = 6,
        CLASSIC = 7, CUSTOM = 8
    }
}

/// `shaders/pointwise.wgsl`: every streaming loss, MSE to KL divergence, the classic
/// cross-entropy's terms and custom losses. Bindings: pred, target, weight, pos_weight, grad,
/// loss, scratch.
pub(crate) static POINTWISE: Kernel = Kernel::new(
    "pointwise.wgsl",
    include_str!("../../shaders/pointwise.wgsl"),
)
.params(PointwiseParams::INFO)
.consts(&[LossCode::WGSL])
.layout(fixed_layout!(U, R, R, R, R, W, W, W))
.defines(&["VEC4", "ROWS", "CUSTOM", "SUBGROUPS"])
.values(&["CUSTOM_LOSS=log(cosh(x - y))", "CUSTOM_GRAD=tanh(x - y)"]);

/// One streaming problem, as the kernel sees it.
#[derive(Clone, Copy)]
pub(crate) struct Stream<'e> {
    /// `LOSS`, its parameter `p0`, and KL's `LOG_TARGET`.
    pub(crate) code: u32,
    pub(crate) p0: f32,
    pub(crate) log_target: bool,
    /// The input's and the target's names in errors.
    pub(crate) names: [&'static str; 2],
    /// Elements M.
    pub(crate) len: u64,
    /// Rows and elements a row, when the losses of a row add up to its loss (`Reduction::None`
    /// then gives one a row, not one an element).
    pub(crate) rows: Option<(u64, u64)>,
    pub(crate) weight: Option<usize>,
    pub(crate) pos_weight: Option<usize>,
    pub(crate) reduction: Reduction,
    pub(crate) outputs: Outputs,
    /// The mean's denominator.
    pub(crate) den: f64,
    /// The dtypes of the input and target, and of the gradient.
    pub(crate) dtype: DType,
    pub(crate) grad_dtype: DType,
    /// A custom loss's WGSL expressions (loss, gradient), checked (`LOSS` 8).
    pub(crate) custom: Option<(&'e str, &'e str)>,
}

impl<'e> Stream<'e> {
    /// `len` elements of the loss `code`: no parameter, one loss an element, no weights, f32,
    /// the mean over `len`.
    pub(crate) fn new(code: u32, len: u64, reduction: Reduction, outputs: Outputs) -> Self {
        Stream {
            code,
            p0: 0.0,
            log_target: false,
            names: ["pred", "target"],
            len,
            rows: None,
            weight: None,
            pos_weight: None,
            reduction,
            outputs,
            den: if reduction == Reduction::Mean {
                len as f64
            } else {
                1.0
            },
            dtype: DType::F32,
            grad_dtype: DType::F32,
            custom: None,
        }
    }

    /// The stream with the inputs' and the gradient's dtypes.
    pub(crate) fn dtypes(self, dtype: DType, grad_dtype: DType) -> Self {
        Stream {
            dtype,
            grad_dtype,
            ..self
        }
    }

    /// A custom loss (`crate::families::custom`, its expressions checked): `LOSS` 8.
    fn key(&self, b: &Builder<'_>, entry: &'static str, vec4: bool) -> PipelineKey {
        let tuning = b.ctx().tuning();
        let mut key = PipelineKey::new(&POINTWISE, entry);
        if let Some((loss, grad)) = self.custom {
            key = key
                .define("CUSTOM", true)
                .text("CUSTOM_LOSS", loss)
                .text("CUSTOM_GRAD", grad);
        }
        key.define("VEC4", vec4)
            .define("ROWS", entry == "rows")
            .value("DTYPE_x", self.dtype.code())
            .value("DTYPE_y", self.dtype.code())
            .value("DTYPE_grad", self.grad_dtype.code())
            .constant("WG", WG)
            .constant("SEG", WG)
            .constant("K", tuning.stream_vecs)
            .constant("LANES", tuning.lanes)
            .constant("PG", partial_group(b.ctx(), 1))
            .constant("LOSS", self.code)
            .constant("HAS_WEIGHT", self.weight.is_some() as u32)
            .constant("HAS_POS_WEIGHT", self.pos_weight.is_some() as u32)
            .constant("LOG_TARGET", self.log_target as u32)
            .constant("WANT_GRAD", self.outputs.grad as u32)
    }

    /// The element sizes of the slots bound a window at a time: x and y, the gradient, and
    /// element losses (`per_element`).
    fn window_sizes(&self, per_element: bool) -> Vec<u64> {
        let mut sizes = vec![self.dtype.size()];
        if self.outputs.grad {
            sizes.push(self.grad_dtype.size());
        }
        if per_element {
            sizes.push(4);
        }
        sizes
    }

    /// Bindings 1..=7 with x, y, grad (and element losses, when `loss` is `None`) bound to the
    /// window of `elems` elements from element `base` on; `loss`: the loss binding otherwise.
    fn entries(&self, vec4: bool, loss: Option<Res>, base: u64, elems: u64) -> Vec<Res> {
        let view = |slot, dtype: DType| {
            Res::Window(slot, base * dtype.size(), View::of(vec4, elems, dtype))
        };
        let broadcast = |slot, len: Option<usize>| {
            let bytes = 4 * len.unwrap_or(0) as u64;
            Res::user_if(bytes > 0, slot, View::Scalar(bytes), false)
        };
        vec![
            view(INPUT, self.dtype),
            view(TARGET, self.dtype),
            broadcast(WEIGHT, self.weight),
            broadcast(POS_WEIGHT, self.pos_weight),
            if self.outputs.grad {
                view(GRAD, self.grad_dtype)
            } else {
                Res::Dummy(true)
            },
            loss.unwrap_or_else(|| view(LOSS, DType::F32)),
            Res::Scratch,
        ]
    }

    pub(crate) fn plan(&self, b: &mut Builder<'_>) -> Result<()> {
        let m = self.len;
        let want_loss = self.outputs.loss;
        let reduced = want_loss && self.reduction.is_reduced();
        let row_losses = (want_loss && !reduced).then_some(self.rows).flatten();
        let [input, target] = self.names;
        // x, y, grad and element losses may be larger than one binding: bound a window at a
        // time.
        b.windowed_slot(INPUT, input, self.dtype.bytes(m), Access::Read)?;
        b.windowed_slot(TARGET, target, self.dtype.bytes(m), Access::Read)?;
        let weight_bytes = 4 * self.weight.unwrap_or(0) as u64;
        b.slot(WEIGHT, "weight", weight_bytes, Access::Read)?;
        let pos_weight_bytes = 4 * self.pos_weight.unwrap_or(0) as u64;
        b.slot(POS_WEIGHT, "pos_weight", pos_weight_bytes, Access::Read)?;
        let loss = match row_losses {
            Some((n, _)) => b.slot(
                LOSS,
                "loss",
                loss_bytes(want_loss, reduced, n),
                Access::Write,
            ),
            None => b.windowed_slot(
                LOSS,
                "loss",
                loss_bytes(want_loss, reduced, m),
                Access::Write,
            ),
        };
        loss?;
        let grad_bytes = if self.outputs.grad {
            self.grad_dtype.bytes(m)
        } else {
            0
        };
        b.windowed_slot(GRAD, "grad", grad_bytes, Access::Write)?;
        b.grad_dtype(self.grad_dtype, m);
        match row_losses {
            // Rows of an odd length start inside a 32-bit word: a 16-bit gradient, whose words
            // the row passes would share, is written by an element pass of its own.
            Some((n, c)) if self.grad_dtype != DType::F32 && self.outputs.grad && c % 2 == 1 => {
                let loss_only = Stream {
                    outputs: Outputs::LOSS,
                    ..*self
                };
                loss_only.rows(b, n, c)?;
                let grad_only = Stream {
                    outputs: Outputs::GRAD,
                    ..*self
                };
                grad_only.elements(b, false)
            }
            Some((n, c)) => self.rows(b, n, c),
            None => self.elements(b, reduced),
        }
    }

    /// The parameters every dispatch shares.
    fn params(&self) -> PointwiseParams {
        let mean = matches!(self.reduction, Reduction::Mean | Reduction::BatchMean);
        PointwiseParams {
            len: self.len as u32,
            weight_len: self.weight.unwrap_or(1) as u32,
            pos_weight_len: self.pos_weight.unwrap_or(1) as u32,
            p0: self.p0,
            grad_scale: if mean { (1.0 / self.den) as f32 } else { 1.0 },
            mean_den: if mean { self.den as f32 } else { 1.0 },
            ..Default::default()
        }
    }

    /// The elements as one stream (`main`): element losses, or partials and their reduction.
    fn elements(&self, b: &mut Builder<'_>, reduced: bool) -> Result<()> {
        let m = self.len;
        let want_loss = self.outputs.loss;
        // Elements one workgroup covers.
        let per_wg = (WG * b.ctx().tuning().stream_vecs * 4) as u64;
        let pg = partial_group(b.ctx(), 1);
        let mean = matches!(self.reduction, Reduction::Mean | Reduction::BatchMean);
        let per_element = want_loss && !reduced;
        // The window of `elems` elements from `base` on; element losses are windowed too.
        let entries = |vec4: bool, single: bool, base: u64, elems: u64| {
            let loss =
                (!per_element).then(|| loss_res(LOSS, want_loss, reduced, single, View::Scalar(4)));
            self.entries(vec4, loss, base, elems)
        };
        // What each dispatch does after its loop: element losses, partials, or (one workgroup)
        // the reduced value, the sum over `mean_den`.
        let params = |vecs: u64, vec_base: u64, wg_x: u32, partial_base: u32, after: After| {
            PointwiseParams {
                vecs: vecs as u32,
                vec_base: vec_base as u32,
                wg_x,
                partial_base,
                flags: after.flags(),
                final_mode: FinalMode::MEAN,
                ..self.params()
            }
        };
        let spans = Windowing {
            units: m / 4,
            unit_elems: 4,
            per_wg: per_wg / 4,
            tail_elems: m % 4,
            sizes: &self.window_sizes(per_element),
            what: "a window of whole workgroups' elements",
        }
        .spans(b.ctx())?;
        if m <= per_wg && spans.len() == 1 {
            // One workgroup: the scalar variant does everything, the reduction included, with
            // no more vec4s per invocation than the problem needs.
            let after = After {
                single: reduced,
                row_loss: per_element,
                ..Default::default()
            };
            let k = m.div_ceil(4 * WG as u64).max(1) as u32;
            b.dispatch(
                &after.key(self.key(b, "main", false).constant("K", k)),
                &params(m.div_ceil(4), 0, 1, 0, after),
                entries(false, reduced, 0, m),
                (1, 1),
            );
            return Ok(());
        }
        let full = m / 4;
        let tail = m % 4;
        let vecs_per_wg = per_wg / 4;
        let wgs = full.div_ceil(vecs_per_wg);
        let parts_per_wg = (WG / pg) as u64;
        let parts = (wgs + (tail > 0) as u64) * parts_per_wg;
        let partial_base = if reduced { b.scratch(2 * parts)? } else { 0 };
        let after = After {
            partial: reduced,
            row_loss: per_element,
            ..Default::default()
        };
        // Each window's workgroups write the partials they would with one binding.
        for w in &spans {
            let (x, y) = b.fold(w.units.div_ceil(vecs_per_wg))?;
            let first_part = w.first / vecs_per_wg * parts_per_wg;
            let p = PointwiseParams {
                bind_base: w.base as u32,
                ..params(
                    w.units,
                    w.first,
                    x,
                    partial_base + 2 * first_part as u32,
                    after,
                )
            };
            let e = entries(true, false, w.base, 4 * (w.first + w.units) - w.base);
            b.dispatch(&after.key(self.key(b, "main", true)), &p, e, (x, y));
        }
        if tail > 0 {
            // The tail is bound in the last window, from its first element to the end.
            let base = spans.last().map_or(0, |w| w.base);
            let tail_base = partial_base + 2 * (wgs * parts_per_wg) as u32;
            let p = PointwiseParams {
                bind_base: base as u32,
                ..params(1, full, 1, tail_base, after)
            };
            let e = entries(false, false, base, m - base);
            b.dispatch(&after.key(self.key(b, "main", false)), &p, e, (1, 1));
        }
        if reduced {
            let finish = if mean {
                Finish::Mean(self.den)
            } else {
                Finish::Sum
            };
            b.reduce(parts, partial_base, finish, Some(LOSS))?;
        }
        Ok(())
    }

    /// One loss a row (`rows`): `n` rows of `c` elements, each in chunks of at most SEG * K
    /// vec4s that a segment of SEG invocations sums; rows of several chunks are summed by a
    /// per-row reduction of their chunks' partials.
    fn rows(&self, b: &mut Builder<'_>, n: u64, c: u64) -> Result<()> {
        let kmax = b.ctx().tuning().stream_vecs as u64;
        // Rows of whole vec4s are read as vec4s.
        let vec4 = c.is_multiple_of(4);
        let cv = c.div_ceil(4);
        let wg = WG as u64;
        let (seg, k, chunks) = if cv <= wg * kmax {
            let seg = cv.div_ceil(kmax).next_power_of_two();
            (seg, cv.div_ceil(seg), 1)
        } else {
            (wg, kmax, cv.div_ceil(wg * kmax))
        };
        let row_chunks = n * chunks;
        let partial_base = if chunks > 1 {
            b.scratch(2 * row_chunks)?
        } else {
            0
        };
        let key = self
            .key(b, "rows", vec4)
            .constant("SEG", seg as u32)
            .constant("K", k as u32);
        // Windows of whole rows (of whole workgroups' rows when a workgroup takes several).
        let chunks_per_wg = wg / seg;
        let spans = Windowing {
            units: n,
            unit_elems: c,
            per_wg: if chunks == 1 { chunks_per_wg } else { 1 },
            tail_elems: 0,
            sizes: &self.window_sizes(false),
            what: "a window of whole rows",
        }
        .spans(b.ctx())?;
        for w in spans {
            let (first, end) = (w.first * chunks, (w.first + w.units) * chunks);
            let (x, y) = b.fold((end - first).div_ceil(chunks_per_wg))?;
            let p = PointwiseParams {
                wg_x: x,
                partial_base,
                row_len: c as u32,
                chunks: chunks as u32,
                row_chunks: end as u32,
                chunk_base: first as u32,
                bind_base: w.base as u32,
                ..self.params()
            };
            let loss = Res::User(LOSS, View::Scalar(4 * n));
            let e = self.entries(vec4, Some(loss), w.base, (w.first + w.units) * c - w.base);
            b.dispatch(&key, &p, e, (x, y));
        }
        if chunks > 1 {
            b.reduce_groups(n, chunks, partial_base, Finish::Sum, Some(LOSS))?;
        }
        Ok(())
    }
}
