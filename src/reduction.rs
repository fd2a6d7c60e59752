//! How per-element losses become the loss, and what a run returns.

use std::str::FromStr;

use crate::error::{Error, Result, display_by_name};

/// How per-element (or per-row) losses are reduced, as in PyTorch's `reduction=`.
///
/// The gradient is always that of the reduced loss; for [`Reduction::None`] it is the gradient
/// of the sum of the per-element losses (PyTorch's `backward` with a `grad_output` of ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// One loss per element (pointwise losses) or per row (class losses).
    None,
    /// The sum.
    Sum,
    /// The sum divided by the loss's mean denominator (see each loss: the element count, the
    /// row count, or the sum of the target classes' weights).
    #[default]
    Mean,
    /// The sum divided by the batch size (the first dimension). KL divergence only, where it is
    /// the mathematically correct mean.
    BatchMean,
}

impl Reduction {
    /// The name PyTorch gives it.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
            Reduction::BatchMean => "batchmean",
        }
    }

    pub(crate) fn is_reduced(self) -> bool {
        self != Reduction::None
    }
}

display_by_name!(Reduction);

impl FromStr for Reduction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Reduction::None),
            "sum" => Ok(Reduction::Sum),
            "mean" => Ok(Reduction::Mean),
            "batchmean" => Ok(Reduction::BatchMean),
            other => Err(Error::option(
                "reduction",
                format!("{other:?} is not one of none, sum, mean, batchmean"),
            )),
        }
    }
}

/// Which results a plan computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Outputs {
    /// The loss (reduced, or per element for [`Reduction::None`]).
    pub loss: bool,
    /// The gradient with respect to the prediction / logits / input.
    pub grad: bool,
}

impl Outputs {
    /// The loss alone.
    pub const LOSS: Outputs = Outputs {
        loss: true,
        grad: false,
    };
    /// The gradient alone.
    pub const GRAD: Outputs = Outputs {
        loss: false,
        grad: true,
    };
    /// Loss and gradient, from one pass.
    pub const BOTH: Outputs = Outputs {
        loss: true,
        grad: true,
    };
    /// Neither (a shard's statistics step, whose output is its statistics).
    pub(crate) const NONE: Outputs = Outputs {
        loss: false,
        grad: false,
    };

    pub(crate) fn check(self) -> Result<()> {
        if self.loss || self.grad {
            Ok(())
        } else {
            Err(Error::option(
                "outputs",
                "asks for neither loss nor gradient",
            ))
        }
    }
}

/// What the convenience API returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossOutput {
    /// The reduced loss (sum, mean, batchmean), when asked for.
    pub value: Option<f32>,
    /// The per-element (per-row for class losses) losses, for [`Reduction::None`].
    pub per_element: Option<Vec<f32>>,
    /// The gradient, shaped like the prediction, when asked for.
    pub grad: Option<Vec<f32>>,
    /// Each row's log-sum-exp, when asked for (cross-entropy).
    pub lse: Option<Vec<f32>>,
    /// Each row's loss beside a reduced one, when asked for (cross-entropy).
    pub row_losses: Option<Vec<f32>>,
    /// Each row's argmax, when asked for (cross-entropy).
    pub argmax: Option<Vec<u32>>,
    /// How many rows' argmax is their class target, when asked for (cross-entropy).
    pub correct: Option<u32>,
    /// A vocabulary shard's statistics step: each row's statistics, 8 a row (cross-entropy).
    pub shard_stats: Option<Vec<f32>>,
    /// Fused linear + cross-entropy: the gradient of the layer's weight `[V, D]` (`grad` is
    /// the hidden states').
    pub grad_linear: Option<Vec<f32>>,
    /// Fused linear + cross-entropy: the gradient of the layer's bias `[V]`.
    pub grad_bias: Option<Vec<f32>>,
}

impl LossOutput {
    pub(crate) fn from_parts(
        reduction: Reduction,
        loss: Option<Vec<f32>>,
        grad: Option<Vec<f32>>,
    ) -> Self {
        let (value, per_element) = match (reduction.is_reduced(), loss) {
            (true, Some(l)) => (l.first().copied(), None),
            (false, l) => (None, l),
            (true, None) => (None, None),
        };
        LossOutput {
            value,
            per_element,
            grad,
            lse: None,
            row_losses: None,
            argmax: None,
            correct: None,
            shard_stats: None,
            grad_linear: None,
            grad_bias: None,
        }
    }
}

/// A field of [`LossOutput`] that a program's output buffer is read back into (the slot of an
/// output names its field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Loss,
    Grad,
    Lse,
    RowLoss,
    Argmax,
    Correct,
    ShardStats,
    GradLinear,
    GradBias,
}

impl LossOutput {
    /// Sets `field` from the f32 (u32 for `Argmax` and `Correct`) values of `bytes`; the loss
    /// as the reduction shapes it.
    pub(crate) fn fill(&mut self, field: Field, reduction: Reduction, bytes: &[u8]) {
        let f32s = || bytemuck::pod_collect_to_vec::<u8, f32>(bytes);
        match field {
            Field::Loss if reduction.is_reduced() => self.value = f32s().first().copied(),
            Field::Loss => self.per_element = Some(f32s()),
            Field::Grad => self.grad = Some(f32s()),
            Field::Lse => self.lse = Some(f32s()),
            Field::RowLoss => self.row_losses = Some(f32s()),
            Field::Argmax => self.argmax = Some(bytemuck::pod_collect_to_vec(bytes)),
            Field::Correct => {
                self.correct = bytemuck::pod_collect_to_vec::<u8, u32>(bytes)
                    .first()
                    .copied()
            }
            Field::ShardStats => self.shard_stats = Some(f32s()),
            Field::GradLinear => self.grad_linear = Some(f32s()),
            Field::GradBias => self.grad_bias = Some(f32s()),
        }
    }
}

/// A reference result: the loss (reduced or per element) and the gradient.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reference {
    /// The reduced loss (sum, mean, batchmean).
    pub value: Option<f64>,
    /// Per-element (per-row for class losses) losses, for `Reduction::None`.
    pub per_element: Option<Vec<f64>>,
    /// The gradient of the reduced loss (of the sum, for `Reduction::None`).
    pub grad: Vec<f64>,
    /// Fused linear + cross-entropy (whose `grad` is the hidden states'): the gradient of the
    /// layer's weight `[V, D]` (empty for the other losses).
    pub grad_linear: Vec<f64>,
    /// Fused linear + cross-entropy: the gradient of the layer's bias `[V]` (empty for the
    /// other losses, and without a bias).
    pub grad_bias: Vec<f64>,
    /// Each row's log-sum-exp, where the twin gives it (fused linear + cross-entropy).
    pub lse: Option<Vec<f64>>,
}
