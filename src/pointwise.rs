//! Pointwise losses: MSE, L1, Huber, smooth L1, binary cross-entropy (on probabilities and on
//! logits) and KL divergence, whose loss at element i depends on `pred[i]`, `target[i]` and a
//! broadcast weight alone.
//!
//! Kernel: `shaders/pointwise.wgsl`. CPU twin: [`crate::cpu::pointwise`].
//!
//! Mean denominators: the element count M for `mean`; the batch size for KL's `batchmean`.

use bytemuck::{Pod, Zeroable};

use crate::context::{Binding, PipelineKey};
use crate::program::{Access, Builder, Finish, Program, Res, Status, View, WG};
use crate::reduction::{LossOutput, Outputs, Reduction};
use crate::shader::Shader;
use crate::transfer::HostSlot;
use crate::{Context, Error, Result, transfer};

/// The bindings of pointwise.wgsl.
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
            Pointwise::Mse => 0,
            Pointwise::L1 => 1,
            Pointwise::Huber { .. } => 2,
            Pointwise::SmoothL1 { .. } => 3,
            Pointwise::Bce => 4,
            Pointwise::BceWithLogits => 5,
            Pointwise::KlDiv { .. } => 6,
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

/// What a [`PointwisePlan`] computes: the loss, the element count, and which buffers it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct PointwiseDesc {
    /// The loss.
    pub loss: Pointwise,
    /// Elements in `pred` and `target`.
    pub len: usize,
    /// The reduction.
    pub reduction: Reduction,
    /// Length of the per-element `weight` (BCE and BCE with logits), broadcast so that element i
    /// takes `weight[i % weight_len]` (PyTorch's broadcasting of a trailing-dimension shape);
    /// `len` must be a multiple of it.
    pub weight_len: Option<usize>,
    /// Length of BCE-with-logits' `pos_weight` (the class count), broadcast the same way.
    pub pos_weight_len: Option<usize>,
    /// The batch size (the first dimension) that `batchmean` divides by.
    pub batch: Option<usize>,
    /// What to compute.
    pub outputs: Outputs,
}

impl PointwiseDesc {
    /// `loss` over `len` elements, mean reduction, loss and gradient.
    pub fn new(loss: Pointwise, len: usize) -> Self {
        PointwiseDesc {
            loss,
            len,
            reduction: Reduction::Mean,
            weight_len: None,
            pos_weight_len: None,
            batch: None,
            outputs: Outputs::BOTH,
        }
    }

    /// Sets the reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Sets what to compute.
    pub fn outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }

    /// Sets the weight's length.
    pub fn weight_len(mut self, len: usize) -> Self {
        self.weight_len = Some(len);
        self
    }

    /// Sets pos_weight's length.
    pub fn pos_weight_len(mut self, len: usize) -> Self {
        self.pos_weight_len = Some(len);
        self
    }

    /// Sets the batch size for `batchmean`.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = Some(batch);
        self
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
        crate::program::elements("pred", &[self.len])?;
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
        broadcast("weight", self.weight_len, bce)?;
        broadcast(
            "pos_weight",
            self.pos_weight_len,
            self.loss == Pointwise::BceWithLogits,
        )?;
        self.denominator().map(|_| ())
    }
}

/// Keep in sync with `Params` in shaders/pointwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PointwiseParams {
    len: u32,
    vecs: u32,
    vec_base: u32,
    wg_x: u32,
    partial_base: u32,
    weight_len: u32,
    pos_weight_len: u32,
    _pad0: u32,
    p0: f32,
    grad_scale: f32,
    mean_den: f32,
    _pad1: u32,
}

/// Slots of the user buffers, in the order [`PointwiseBuffers`] lists them.
const PRED: usize = 0;
const TARGET: usize = 1;
const WEIGHT: usize = 2;
const POS_WEIGHT: usize = 3;
const LOSS: usize = 4;
const GRAD: usize = 5;

/// The caller's buffers for one run of a [`PointwisePlan`]. Every buffer needs
/// `BufferUsages::STORAGE`; sizes are those of the plan's shape (f32 each); `loss` holds one
/// f32 when reduced, `len` for [`Reduction::None`].
#[derive(Clone, Copy, Debug)]
pub struct PointwiseBuffers<'a> {
    /// The prediction (probabilities for BCE, logits for BCE with logits, log-probabilities
    /// for KL). Read only.
    pub pred: &'a wgpu::Buffer,
    /// The target. Read only.
    pub target: &'a wgpu::Buffer,
    /// The broadcast weight, when the plan has one.
    pub weight: Option<&'a wgpu::Buffer>,
    /// The broadcast positive-class weight, when the plan has one.
    pub pos_weight: Option<&'a wgpu::Buffer>,
    /// Where the loss goes, when the plan computes it.
    pub loss: Option<&'a wgpu::Buffer>,
    /// Where the gradient goes, when the plan computes it.
    pub grad: Option<&'a wgpu::Buffer>,
}

/// A pointwise loss planned for one shape: pipelines compiled, parameters and scratch memory
/// allocated. Record it as often as needed.
pub struct PointwisePlan {
    desc: PointwiseDesc,
    program: Program,
}

impl PointwisePlan {
    /// Plans `desc` on `ctx`.
    pub fn new(ctx: &Context, desc: &PointwiseDesc) -> Result<Self> {
        desc.check()?;
        let m = desc.len as u64;
        let tuning = ctx.tuning();
        // Elements one workgroup covers.
        let per_wg = (WG * tuning.stream_vecs * 4) as u64;
        let pg = ctx.partial_group(1, WG);
        let want_loss = desc.outputs.loss;
        let reduced = want_loss && desc.reduction.is_reduced();
        let den = desc.denominator()?;
        let mean = matches!(desc.reduction, Reduction::Mean | Reduction::BatchMean);
        let grad_scale = if mean { (1.0 / den) as f32 } else { 1.0 };

        let mut b = Builder::new(ctx);
        b.slot("pred", 4 * m, Access::Read)?;
        b.slot("target", 4 * m, Access::Read)?;
        b.slot(
            "weight",
            4 * desc.weight_len.unwrap_or(0) as u64,
            Access::Read,
        )?;
        b.slot(
            "pos_weight",
            4 * desc.pos_weight_len.unwrap_or(0) as u64,
            Access::Read,
        )?;
        let loss_bytes = match (want_loss, reduced) {
            (false, _) => 0,
            (true, true) => 4,
            (true, false) => 4 * m,
        };
        b.slot("loss", loss_bytes, Access::Write)?;
        b.slot(
            "grad",
            if desc.outputs.grad { 4 * m } else { 0 },
            Access::Write,
        )?;

        let key = |vec4: bool, single: bool, partial: bool| {
            PipelineKey::new(Shader::Pointwise, "main", LAYOUT)
                .define("VEC4", vec4)
                .constant("WG", WG)
                .constant("SEG", WG)
                .constant("K", tuning.stream_vecs)
                .constant("LANES", tuning.lanes)
                .constant("PG", pg)
                .constant("LOSS", desc.loss.code())
                .constant("HAS_WEIGHT", desc.weight_len.is_some() as u32)
                .constant("HAS_POS_WEIGHT", desc.pos_weight_len.is_some() as u32)
                .constant(
                    "LOG_TARGET",
                    matches!(desc.loss, Pointwise::KlDiv { log_target: true }) as u32,
                )
                .constant("WANT_GRAD", desc.outputs.grad as u32)
                .constant("WANT_ELEM_LOSS", (want_loss && !reduced) as u32)
                .constant("WANT_PARTIAL", partial as u32)
                .constant("SINGLE", single as u32)
        };
        let entries = |vec4: bool, single: bool| {
            let view = |bytes: u64| {
                if vec4 {
                    View::Vec4(bytes)
                } else {
                    View::Scalar(bytes)
                }
            };
            let opt = |slot: usize, len: Option<usize>| match len {
                Some(l) => Res::User(slot, View::Scalar(4 * l as u64)),
                None => Res::Dummy(false),
            };
            vec![
                Res::User(PRED, view(4 * m)),
                Res::User(TARGET, view(4 * m)),
                opt(WEIGHT, desc.weight_len),
                opt(POS_WEIGHT, desc.pos_weight_len),
                if desc.outputs.grad {
                    Res::User(GRAD, view(4 * m))
                } else {
                    Res::Dummy(true)
                },
                match (want_loss, reduced) {
                    (true, false) => Res::User(LOSS, view(4 * m)),
                    (true, true) if single => Res::User(LOSS, View::Scalar(4)),
                    _ => Res::Dummy(true),
                },
                Res::Scratch,
            ]
        };
        let params = |vecs: u64, vec_base: u64, wg_x: u32, partial_base: u32| PointwiseParams {
            len: m as u32,
            vecs: vecs as u32,
            vec_base: vec_base as u32,
            wg_x,
            partial_base,
            weight_len: desc.weight_len.unwrap_or(1) as u32,
            pos_weight_len: desc.pos_weight_len.unwrap_or(1) as u32,
            _pad0: 0,
            p0: desc.loss.param(),
            grad_scale,
            mean_den: if mean { den as f32 } else { 1.0 },
            _pad1: 0,
        };

        if m <= per_wg {
            // One workgroup: the scalar variant does everything, the reduction included, with
            // no more vec4s per invocation than the problem needs.
            let p = params(m.div_ceil(4), 0, 1, 0);
            let k = m.div_ceil(4 * WG as u64).max(1) as u32;
            b.dispatch(
                &key(false, reduced, false).constant("K", k),
                &p,
                entries(false, reduced),
                (1, 1),
            )?;
        } else {
            let full = m / 4;
            let tail = m % 4;
            let wgs = full.div_ceil(per_wg / 4);
            let parts_per_wg = (WG / pg) as u64;
            let parts = (wgs + (tail > 0) as u64) * parts_per_wg;
            let partial_base = if reduced { b.scratch(2 * parts)? } else { 0 };
            let (x, y) = b.fold(wgs)?;
            let p = params(full, 0, x, partial_base);
            b.dispatch(&key(true, false, reduced), &p, entries(true, false), (x, y))?;
            if tail > 0 {
                let p = params(1, full, 1, partial_base + 2 * (wgs * parts_per_wg) as u32);
                b.dispatch(
                    &key(false, false, reduced),
                    &p,
                    entries(false, false),
                    (1, 1),
                )?;
            }
            if reduced {
                let finish = if mean { Finish::Mean(den) } else { Finish::Sum };
                b.reduce(parts, partial_base, finish, Some(LOSS))?;
            }
        }
        Ok(PointwisePlan {
            desc: desc.clone(),
            program: b.build()?,
        })
    }

    /// What this plan computes.
    pub fn desc(&self) -> &PointwiseDesc {
        &self.desc
    }

    /// How many compute dispatches one run records.
    pub fn dispatch_count(&self) -> usize {
        self.program.dispatch_count()
    }

    /// Records the loss into `encoder`: reads `pred`, `target` (and weights), writes `loss` and
    /// `grad`. Nothing is submitted; the results stay on the GPU.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &PointwiseBuffers<'_>,
    ) -> Result<()> {
        self.record_timed(encoder, buffers, None)
    }

    /// [`record`](Self::record) with timestamp writes around the compute pass.
    pub fn record_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &PointwiseBuffers<'_>,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()> {
        self.program
            .record(encoder, &Self::user_buffers(buffers), timestamps)
    }

    fn user_buffers<'a>(buffers: &PointwiseBuffers<'a>) -> [Option<&'a wgpu::Buffer>; 6] {
        [
            Some(buffers.pred),
            Some(buffers.target),
            buffers.weight,
            buffers.pos_weight,
            buffers.loss,
            buffers.grad,
        ]
    }

    /// The convenience level for GPU-resident data: records into an encoder of its own, submits
    /// on the context's queue, waits, and turns invalid inputs the kernel counted (BCE
    /// probabilities outside [0, 1]) into [`Error::InvalidOnGpu`]. The results are in
    /// `buffers.loss` and `buffers.grad`.
    pub fn run(&self, buffers: &PointwiseBuffers<'_>) -> Result<()> {
        transfer::run_resident(&self.program, &Self::user_buffers(buffers))?
            .check("probabilities (outside [0, 1])")
    }

    /// The invalid inputs the last run counted (BCE probabilities outside [0, 1]). Blocks on a
    /// small readback.
    pub fn read_status(&self) -> Result<Status> {
        transfer::read_status(&self.program)
    }

    /// Uploads host data, runs, and reads the results back.
    fn run_host(&self, inputs: &PointwiseInputs<'_>) -> Result<LossOutput> {
        let d = &self.desc;
        let m = d.len as u64;
        let loss_bytes = if d.reduction.is_reduced() { 4 } else { 4 * m };
        let slots = [
            HostSlot::input("pred", Some(inputs.pred)),
            HostSlot::input("target", Some(inputs.target)),
            HostSlot::input("weight", inputs.weight),
            HostSlot::input("pos_weight", inputs.pos_weight),
            HostSlot::output("loss", d.outputs.loss, loss_bytes),
            HostSlot::output("grad", d.outputs.grad, 4 * m),
        ];
        transfer::run_host(
            &self.program,
            &slots,
            d.outputs.loss.then_some(LOSS),
            d.outputs.grad.then_some(GRAD),
            d.reduction,
            "probabilities (outside [0, 1])",
        )
    }
}

/// Host data for the convenience API.
#[derive(Clone, Copy, Debug, Default)]
pub struct PointwiseInputs<'a> {
    /// The prediction.
    pub pred: &'a [f32],
    /// The target, as long as `pred`.
    pub target: &'a [f32],
    /// The broadcast weight (BCE, BCE with logits).
    pub weight: Option<&'a [f32]>,
    /// The broadcast positive-class weight (BCE with logits).
    pub pos_weight: Option<&'a [f32]>,
}

impl Context {
    /// Computes a pointwise loss on host data: uploads, runs one pass, reads back.
    /// `batch` is the first dimension, needed by `batchmean`.
    pub fn pointwise(
        &self,
        loss: Pointwise,
        inputs: &PointwiseInputs<'_>,
        reduction: Reduction,
        batch: Option<usize>,
        outputs: Outputs,
    ) -> Result<LossOutput> {
        let mut desc = PointwiseDesc::new(loss, inputs.pred.len())
            .reduction(reduction)
            .outputs(outputs);
        desc.batch = batch;
        desc.weight_len = inputs.weight.map(<[f32]>::len);
        desc.pos_weight_len = inputs.pos_weight.map(<[f32]>::len);
        if inputs.target.len() != inputs.pred.len() {
            return Err(Error::LengthMismatch {
                what: "target (must match pred)",
                expected: inputs.pred.len(),
                actual: inputs.target.len(),
            });
        }
        desc.check()?;
        if loss == Pointwise::Bce {
            crate::cpu::pointwise::check_probabilities("pred (bce probabilities)", inputs.pred)?;
        }
        PointwisePlan::new(self, &desc)?.run_host(inputs)
    }

    /// Mean squared error on host data (see [`Pointwise::Mse`]): the mean divides by the
    /// element count.
    pub fn mse(
        &self,
        pred: &[f32],
        target: &[f32],
        reduction: Reduction,
        outputs: Outputs,
    ) -> Result<LossOutput> {
        let inputs = PointwiseInputs {
            pred,
            target,
            ..Default::default()
        };
        self.pointwise(Pointwise::Mse, &inputs, reduction, None, outputs)
    }
}
