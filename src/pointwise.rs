//! Pointwise losses: MSE, L1, Huber, smooth L1, binary cross-entropy (on probabilities and on
//! logits) and KL divergence, whose loss at element i depends on `pred[i]`, `target[i]` and a
//! broadcast weight alone.
//!
//! Kernel: `shaders/pointwise.wgsl`. CPU twin: [`crate::cpu::pointwise`].
//!
//! Mean denominators: the element count M for `mean`; the batch size for KL's `batchmean`.

use crate::context::PipelineKey;
use crate::cpu::{self, Reference};
use crate::plan::sealed::Family;
use crate::plan::{HostData, Inputs, bytes, check_count, check_declared, setters};
use crate::program::{
    Access, After, Builder, Finish, Res, Slot, View, WG, loss_bytes, loss_res, partial_group,
};
use crate::reduction::{Outputs, Reduction};
use crate::shader::{Shader, params};
use crate::{Error, Result};

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
}

setters! {
    PointwiseDesc {
        /// Sets the reduction.
        reduction: Reduction,
        /// Sets what to compute.
        outputs: Outputs,
    }
    optional {
        /// Declares a broadcast weight of this many elements.
        weight: usize,
        /// Declares a broadcast positive-class weight of this many elements.
        pos_weight: usize,
        /// Sets the batch size for `batchmean`.
        batch: usize,
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
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

impl Family for PointwiseDesc {
    fn plan(&self, b: &mut Builder<'_>) -> Result<()> {
        self.check()?;
        let ctx = b.ctx();
        let m = self.len as u64;
        let tuning = ctx.tuning();
        // Elements one workgroup covers.
        let per_wg = (WG * tuning.stream_vecs * 4) as u64;
        let pg = partial_group(ctx, 1);
        let want_loss = self.outputs.loss;
        let reduced = want_loss && self.reduction.is_reduced();
        let den = self.denominator()?;
        let mean = matches!(self.reduction, Reduction::Mean | Reduction::BatchMean);
        let grad_scale = if mean { (1.0 / den) as f32 } else { 1.0 };

        let weight_bytes = 4 * self.weight.unwrap_or(0) as u64;
        let pos_weight_bytes = 4 * self.pos_weight.unwrap_or(0) as u64;
        b.slot(Slot::Input, "pred", 4 * m, Access::Read)?;
        b.slot(Slot::Target, "target", 4 * m, Access::Read)?;
        b.slot(Slot::Weight, "weight", weight_bytes, Access::Read)?;
        b.slot(
            Slot::PosWeight,
            "pos_weight",
            pos_weight_bytes,
            Access::Read,
        )?;
        let loss_slot = loss_bytes(want_loss, reduced, m);
        b.slot(Slot::Loss, "loss", loss_slot, Access::Write)?;
        let grad_bytes = if self.outputs.grad { 4 * m } else { 0 };
        b.slot(Slot::Grad, "grad", grad_bytes, Access::Write)?;

        let key = |vec4: bool| {
            PipelineKey::new(Shader::Pointwise, "main")
                .define("VEC4", vec4)
                .constant("WG", WG)
                .constant("SEG", WG)
                .constant("K", tuning.stream_vecs)
                .constant("LANES", tuning.lanes)
                .constant("PG", pg)
                .constant("LOSS", self.loss.code())
                .constant("HAS_WEIGHT", self.weight.is_some() as u32)
                .constant("HAS_POS_WEIGHT", self.pos_weight.is_some() as u32)
                .constant(
                    "LOG_TARGET",
                    matches!(self.loss, Pointwise::KlDiv { log_target: true }) as u32,
                )
                .constant("WANT_GRAD", self.outputs.grad as u32)
        };
        let entries = |vec4: bool, single: bool| {
            let view = |bytes: u64| View::of(vec4, bytes);
            vec![
                Res::User(Slot::Input, view(4 * m)),
                Res::User(Slot::Target, view(4 * m)),
                Res::user_if(
                    weight_bytes > 0,
                    Slot::Weight,
                    View::Scalar(weight_bytes),
                    false,
                ),
                Res::user_if(
                    pos_weight_bytes > 0,
                    Slot::PosWeight,
                    View::Scalar(pos_weight_bytes),
                    false,
                ),
                Res::user_if(self.outputs.grad, Slot::Grad, view(4 * m), true),
                loss_res(want_loss, reduced, single, view(4 * m)),
                Res::Scratch,
            ]
        };
        let params = |vecs: u64, vec_base: u64, wg_x: u32, partial_base: u32| PointwiseParams {
            len: m as u32,
            vecs: vecs as u32,
            vec_base: vec_base as u32,
            wg_x,
            partial_base,
            weight_len: self.weight.unwrap_or(1) as u32,
            pos_weight_len: self.pos_weight.unwrap_or(1) as u32,
            p0: self.loss.param(),
            grad_scale,
            mean_den: if mean { den as f32 } else { 1.0 },
            ..Default::default()
        };
        // What each dispatch does after its loop: element losses, partials, or (one workgroup)
        // the reduced value, the sum over `mean_den`.
        let after = |p: PointwiseParams, partial: bool, single: bool| PointwiseParams {
            flags: After {
                row_loss: want_loss && !reduced,
                partial,
                single,
                ..Default::default()
            }
            .flags(),
            final_mode: 1,
            ..p
        };

        if m <= per_wg {
            // One workgroup: the scalar variant does everything, the reduction included, with
            // no more vec4s per invocation than the problem needs.
            let p = after(params(m.div_ceil(4), 0, 1, 0), false, reduced);
            let k = m.div_ceil(4 * WG as u64).max(1) as u32;
            b.dispatch(
                &key(false).constant("K", k),
                &p,
                entries(false, reduced),
                (1, 1),
            );
        } else {
            let full = m / 4;
            let tail = m % 4;
            let wgs = full.div_ceil(per_wg / 4);
            let parts_per_wg = (WG / pg) as u64;
            let parts = (wgs + (tail > 0) as u64) * parts_per_wg;
            let partial_base = if reduced { b.scratch(2 * parts)? } else { 0 };
            let (x, y) = b.fold(wgs)?;
            let p = after(params(full, 0, x, partial_base), reduced, false);
            b.dispatch(&key(true), &p, entries(true, false), (x, y));
            if tail > 0 {
                let p = params(1, full, 1, partial_base + 2 * (wgs * parts_per_wg) as u32);
                b.dispatch(
                    &key(false),
                    &after(p, reduced, false),
                    entries(false, false),
                    (1, 1),
                );
            }
            if reduced {
                let finish = if mean { Finish::Mean(den) } else { Finish::Sum };
                b.reduce(parts, partial_base, finish, Some(Slot::Loss))?;
            }
        }
        Ok(())
    }

    fn results(&self) -> (Reduction, &'static str) {
        (self.reduction, "probabilities (outside [0, 1])")
    }

    fn host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
        let target = inputs.values()?;
        check_count("pred", self.len as u64, inputs.input.len())?;
        check_count("target (must match pred)", self.len as u64, target.len())?;
        check_declared("weight", self.weight, inputs.weight)?;
        check_declared("pos_weight", self.pos_weight, inputs.pos_weight)?;
        self.check()?;
        if self.loss == Pointwise::Bce {
            cpu::pointwise::check_probabilities("pred (bce probabilities)", inputs.input)?;
        }
        Ok([
            bytes(Some(inputs.input)),
            bytes(Some(target)),
            bytes(inputs.weight),
            bytes(inputs.pos_weight),
        ])
    }

    fn reference(&self, inputs: &Inputs<'_>) -> Result<Reference> {
        cpu::pointwise::pointwise(
            self.loss,
            inputs.input,
            inputs.values()?,
            inputs.weight,
            inputs.pos_weight,
            self.reduction,
            self.batch,
        )
    }
}
