//! `wgpu-loss eval <loss>`: a loss and its gradient on .npy files.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use wgpu_loss::{
    ClassicCrossEntropyDesc, Context, CrossEntropyDesc, CustomLossDesc, DType, Inputs,
    LinearCrossEntropyDesc, LossOutput, MixDesc, NllDesc, Outputs, PointwiseDesc,
    context::ContextOptions, cross_entropy::Targets as TargetKind, image::ImageLoss,
    pointwise::Pointwise,
};

use super::images::{self, ImageArgs};
use super::npy::{self, Floats, Targets};
use super::{Common, adapter_json, context_with, timed, with_tuning};

#[derive(Subcommand)]
pub enum LossArgs {
    /// Mean squared error: (pred - target)^2.
    Mse(Pair),
    /// Mean absolute error: |pred - target|.
    L1(Pair),
    /// Huber: d^2 / 2 where |d| < delta, else delta (|d| - delta / 2).
    Huber(HuberArgs),
    /// Smooth L1: d^2 / (2 beta) where |d| < beta, else |d| - beta / 2.
    SmoothL1(SmoothL1Args),
    /// Binary cross-entropy on probabilities in --pred.
    Bce(BceArgs),
    /// Binary cross-entropy on logits in --pred.
    BceWithLogits(BceWithLogitsArgs),
    /// KL divergence with log-probabilities in --pred.
    KlDiv(KlDivArgs),
    /// Cross-entropy from logits [N, C]: integer targets [N] are class indices, float targets
    /// [N, C] are probabilities (as in PyTorch).
    CrossEntropy(CrossEntropyArgs),
    /// Cross-entropy from probabilities [N, C]: -sum y_true log(y_pred + eps) per row.
    CrossEntropyProbs(ProbsArgs),
    /// Negative log-likelihood of log-probabilities [N, C] and class indices [N].
    Nll(NllArgs),
    /// Cross-entropy of the logits hidden @ weight^T + bias, fused: hidden states [N, D], a
    /// layer's weight [V, D] and bias [V], class indices [N]; the [N, V] logits are never
    /// made.
    LinearCrossEntropy(LinearArgs),
    /// A custom pointwise loss: --loss and --grad are WGSL f32 expressions in x (the
    /// prediction) and y (the target), e.g. --loss 'log(cosh(x - y))' --grad 'tanh(x - y)'.
    Custom(CustomArgs),
    /// A weighted sum of pointwise losses over one prediction and target, e.g. --term 0.8:l1
    /// --term 0.2:mse: the sum of the weighted losses and of their weighted gradients, in one
    /// submission.
    Mix(MixArgs),
    /// SSIM of images (.npy [H, W], [H, W, C], [N, H, W, C], or PNG) with an 11 x 11 Gaussian
    /// window (sigma 1.5), averaged over pixels and channels; --reduction none gives the map.
    Ssim(ImageArgs),
    /// D-SSIM: 1 - SSIM.
    Dssim(ImageArgs),
    /// PSNR: 10 log10(data_range^2 / MSE).
    Psnr(ImageArgs),
    /// The photometric loss of Gaussian splatting: (1 - lambda) L1 + lambda (1 - SSIM).
    Photometric(ImageArgs),
}

#[derive(Args)]
pub struct MixArgs {
    /// A term WEIGHT:LOSS (LOSS one of mse, l1, huber, smooth-l1, bce, bce-with-logits,
    /// kl-div); repeat for each term.
    #[arg(long = "term", required = true, value_parser = parse_term, allow_hyphen_values = true)]
    terms: Vec<(f32, String)>,
    /// huber's delta.
    #[arg(long, default_value_t = 1.0)]
    delta: f32,
    /// smooth-l1's beta.
    #[arg(long, default_value_t = 1.0)]
    beta: f32,
    /// kl-div's --target holds log-probabilities.
    #[arg(long)]
    log_target: bool,
    /// Weights broadcast over the trailing dimensions of --pred (float32 .npy), for bce and
    /// bce-with-logits terms.
    #[arg(long)]
    weight: Option<PathBuf>,
    #[command(flatten)]
    pair: Pair,
}

/// `WEIGHT:LOSS`.
fn parse_term(s: &str) -> Result<(f32, String), String> {
    let (w, loss) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: a term is WEIGHT:LOSS, e.g. 0.8:l1"))?;
    let w: f32 = w
        .parse()
        .map_err(|_| format!("{s:?}: the weight {w:?} is not a number"))?;
    Ok((w, loss.to_string()))
}

#[derive(Args)]
pub struct CustomArgs {
    /// The per-element loss, a WGSL f32 expression in x and y.
    #[arg(long = "loss", allow_hyphen_values = true)]
    loss_expr: String,
    /// Its derivative with respect to x, likewise.
    #[arg(long = "grad", allow_hyphen_values = true)]
    grad_expr: String,
    /// Weights broadcast over the trailing dimensions of --pred (float32 .npy).
    #[arg(long)]
    weight: Option<PathBuf>,
    /// Also hold --grad to central differences of --loss on the GPU and report the worst
    /// relative error.
    #[arg(long)]
    check_grad: bool,
    #[command(flatten)]
    pair: Pair,
}

#[derive(Args)]
pub struct LinearArgs {
    /// Hidden states [N, D]: float32, float16 or (with --bf16) bfloat16 .npy.
    #[arg(long)]
    hidden: PathBuf,
    /// The layer's weight [V, D] (PyTorch's nn.Linear layout), in the hidden states' dtype.
    #[arg(long)]
    weight: PathBuf,
    /// The layer's bias [V], float32 .npy.
    #[arg(long)]
    bias: Option<PathBuf>,
    /// Class indices [N] (int64, int32 or uint32).
    #[arg(long)]
    targets: PathBuf,
    /// Class weights [V], float32 .npy.
    #[arg(long)]
    class_weight: Option<PathBuf>,
    #[command(flatten)]
    ce: ClassOptions,
    /// Write the hidden states' gradient to this .npy file ([N, D], in --grad-dtype, else the
    /// inputs' dtype).
    #[arg(long)]
    grad_hidden_out: Option<PathBuf>,
    /// Write the layer weight's gradient to this .npy file ([V, D], as the hidden states').
    #[arg(long)]
    grad_weight_out: Option<PathBuf>,
    /// Write the bias's gradient to this .npy file (float32 [V]; needs --bias).
    #[arg(long)]
    grad_bias_out: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub struct HuberArgs {
    #[command(flatten)]
    pair: Pair,
    /// Where the loss turns from quadratic to linear.
    #[arg(long, default_value_t = 1.0)]
    delta: f32,
}

#[derive(Args)]
pub struct SmoothL1Args {
    #[command(flatten)]
    pair: Pair,
    /// Where the loss turns from quadratic to linear (0: L1).
    #[arg(long, default_value_t = 1.0)]
    beta: f32,
}

#[derive(Args)]
pub struct BceArgs {
    #[command(flatten)]
    pair: Pair,
    /// Weights broadcast over the trailing dimensions of --pred (float32 .npy).
    #[arg(long)]
    weight: Option<PathBuf>,
}

#[derive(Args)]
pub struct BceWithLogitsArgs {
    #[command(flatten)]
    pair: Pair,
    /// Weights broadcast over the trailing dimensions of --pred (float32 .npy).
    #[arg(long)]
    weight: Option<PathBuf>,
    /// Positive-class weights [C], broadcast over the last dimension (float32 .npy).
    #[arg(long)]
    pos_weight: Option<PathBuf>,
}

#[derive(Args)]
pub struct KlDivArgs {
    #[command(flatten)]
    pair: Pair,
    /// --target holds log-probabilities.
    #[arg(long)]
    log_target: bool,
}

#[derive(Args)]
pub struct NllArgs {
    /// Log-probabilities [N, C], float32 .npy.
    #[arg(long)]
    log_probs: PathBuf,
    /// Class indices [N] (int64, int32 or uint32).
    #[arg(long)]
    targets: PathBuf,
    /// Class weights [C], float32 .npy.
    #[arg(long)]
    weight: Option<PathBuf>,
    /// Rows whose target is this class index weigh nothing.
    #[arg(long, default_value_t = -100, allow_hyphen_values = true)]
    ignore_index: i64,
    #[command(flatten)]
    common: Common,
}

/// A prediction and a target of the same shape.
#[derive(Args)]
pub struct Pair {
    /// Prediction, float32 .npy.
    #[arg(long)]
    pred: PathBuf,
    /// Target, float32 .npy of the same shape.
    #[arg(long)]
    target: PathBuf,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub struct CrossEntropyArgs {
    /// Logits [N, C], float32 .npy.
    #[arg(long)]
    logits: PathBuf,
    /// Class indices [N] (int64, int32 or uint32), or probabilities [N, C] (float32).
    #[arg(long)]
    targets: PathBuf,
    /// Class weights [C], float32 .npy.
    #[arg(long)]
    weight: Option<PathBuf>,
    #[command(flatten)]
    ce: ClassOptions,
    /// Write each row's argmax to this .npy file (int64 [N]); --json then gives the accuracy
    /// (class targets: the share of rows not ignored whose argmax is their target).
    #[arg(long)]
    argmax_out: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub struct ProbsArgs {
    /// Predicted probabilities [N, C], float32 .npy.
    #[arg(long)]
    probs: PathBuf,
    /// Target distributions [N, C], float32 .npy.
    #[arg(long)]
    targets: PathBuf,
    /// Added to the probabilities inside the log.
    #[arg(long, default_value_t = 1e-7)]
    eps: f32,
    #[command(flatten)]
    common: Common,
}

/// The cross-entropy options `cross-entropy` and `linear-cross-entropy` share.
#[derive(Args)]
pub struct ClassOptions {
    /// Rows whose target is this class index weigh nothing (class targets).
    #[arg(long, default_value_t = -100, allow_hyphen_values = true)]
    ignore_index: i64,
    /// Mix targets with the uniform distribution over the C classes: (1 - ls) y + ls / C.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Add z * logsumexp^2 per row (PaLM's z-loss).
    #[arg(long, default_value_t = 0.0)]
    z_loss: f32,
    /// Cap logits at cap * tanh(x / cap) before the softmax (Gemma 2).
    #[arg(long)]
    softcap: Option<f32>,
    /// Write each row's log-sum-exp to this .npy file (float32 [N]).
    #[arg(long)]
    lse_out: Option<PathBuf>,
}

/// One evaluation, ready to report.
pub(super) struct Evaluated {
    name: &'static str,
    out: LossOutput,
    /// Shape of the per-element losses for --reduction none.
    loss_shape: Vec<usize>,
    /// Shape of the gradient, and its dtype.
    grad_shape: Vec<usize>,
    grad_dtype: DType,
    /// Cross-entropy with --argmax-out and class targets: the share of rows (not ignored) whose
    /// argmax is their target.
    accuracy: Option<f64>,
    /// A custom loss with --check-grad: the worst relative error of its derivative against
    /// central differences.
    gradient_check: Option<f64>,
    /// A mix's terms: weight and loss.
    terms: Vec<(f32, &'static str)>,
    seconds: f64,
}

/// An image loss on the files of `a`.
fn image(ctx: &Context, loss: ImageLoss, a: &ImageArgs) -> Result<Evaluated, String> {
    let e = images::evaluate(ctx, loss, a)?;
    Ok(Evaluated::new(
        loss.name(),
        e.out,
        e.loss_shape,
        e.grad_shape,
        e.grad_dtype,
        e.seconds,
    ))
}

impl Evaluated {
    /// An evaluation with no accuracy, gradient check or terms.
    pub(super) fn new(
        name: &'static str,
        out: LossOutput,
        loss_shape: Vec<usize>,
        grad_shape: Vec<usize>,
        grad_dtype: DType,
        seconds: f64,
    ) -> Self {
        Evaluated {
            name,
            out,
            loss_shape,
            grad_shape,
            grad_dtype,
            accuracy: None,
            gradient_check: None,
            terms: Vec::new(),
            seconds,
        }
    }
}

impl LossArgs {
    fn common(&self) -> &Common {
        match self {
            LossArgs::Mse(a) | LossArgs::L1(a) => &a.common,
            LossArgs::Huber(a) => &a.pair.common,
            LossArgs::SmoothL1(a) => &a.pair.common,
            LossArgs::Bce(a) => &a.pair.common,
            LossArgs::BceWithLogits(a) => &a.pair.common,
            LossArgs::KlDiv(a) => &a.pair.common,
            LossArgs::CrossEntropy(a) => &a.common,
            LossArgs::CrossEntropyProbs(a) => &a.common,
            LossArgs::Nll(a) => &a.common,
            LossArgs::LinearCrossEntropy(a) => &a.common,
            LossArgs::Custom(a) => &a.pair.common,
            LossArgs::Mix(a) => &a.pair.common,
            LossArgs::Ssim(a)
            | LossArgs::Dssim(a)
            | LossArgs::Psnr(a)
            | LossArgs::Photometric(a) => &a.common,
        }
    }
}

pub fn run(args: LossArgs) -> Result<(), String> {
    let mut options = ContextOptions::default();
    options.max_binding = args.common().max_binding;
    let options = with_tuning(options, &args.common().tuning)?;
    let ctx = context_with(options)?;
    let (evaluated, common) = match args {
        LossArgs::Mse(a) => (pointwise(&ctx, Pointwise::Mse, &a, None, None)?, a.common),
        LossArgs::L1(a) => (pointwise(&ctx, Pointwise::L1, &a, None, None)?, a.common),
        LossArgs::Huber(a) => {
            let loss = Pointwise::Huber { delta: a.delta };
            (pointwise(&ctx, loss, &a.pair, None, None)?, a.pair.common)
        }
        LossArgs::SmoothL1(a) => {
            let loss = Pointwise::SmoothL1 { beta: a.beta };
            (pointwise(&ctx, loss, &a.pair, None, None)?, a.pair.common)
        }
        LossArgs::Bce(a) => {
            let e = pointwise(&ctx, Pointwise::Bce, &a.pair, a.weight.as_deref(), None)?;
            (e, a.pair.common)
        }
        LossArgs::BceWithLogits(a) => {
            let (w, pw) = (a.weight.as_deref(), a.pos_weight.as_deref());
            let e = pointwise(&ctx, Pointwise::BceWithLogits, &a.pair, w, pw)?;
            (e, a.pair.common)
        }
        LossArgs::KlDiv(a) => {
            let loss = Pointwise::KlDiv {
                log_target: a.log_target,
            };
            (pointwise(&ctx, loss, &a.pair, None, None)?, a.pair.common)
        }
        LossArgs::CrossEntropy(a) => (cross_entropy(&ctx, &a)?, a.common),
        LossArgs::CrossEntropyProbs(a) => (cross_entropy_probs(&ctx, &a)?, a.common),
        LossArgs::Nll(a) => (nll(&ctx, &a)?, a.common),
        LossArgs::LinearCrossEntropy(a) => (linear_cross_entropy(&ctx, &a)?, a.common),
        LossArgs::Custom(a) => (custom(&ctx, &a)?, a.pair.common),
        LossArgs::Mix(a) => (mix(&ctx, &a)?, a.pair.common),
        LossArgs::Ssim(a) => (image(&ctx, ImageLoss::Ssim, &a)?, a.common),
        LossArgs::Dssim(a) => (image(&ctx, ImageLoss::Dssim, &a)?, a.common),
        LossArgs::Psnr(a) => (image(&ctx, ImageLoss::Psnr, &a)?, a.common),
        LossArgs::Photometric(a) => (image(&ctx, ImageLoss::Photometric, &a)?, a.common),
    };
    report(&ctx, &evaluated, &common)
}

fn outputs(common: &Common) -> Outputs {
    Outputs {
        loss: true,
        grad: common.grad_out.is_some(),
    }
}

fn same_shape(a: &[usize], b: &[usize], what: &Path) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(format!(
            "{}: shape {b:?} does not match {a:?}",
            what.display()
        ))
    }
}

/// The dtype of the input a file holds, and the gradient's (`--grad-dtype`, else the input's).
fn dtypes(input: &Floats, common: &Common) -> (DType, DType) {
    let dtype = input.values().dtype();
    (dtype, common.grad_dtype.unwrap_or(dtype))
}

fn rank2(shape: &[usize], what: &Path) -> Result<(usize, usize), String> {
    match shape[..] {
        [n, c] => Ok((n, c)),
        _ => Err(format!(
            "{}: shape {:?}, a [N, C] array (rank 2) is needed",
            what.display(),
            shape
        )),
    }
}

/// Reads a weight that broadcasts over the trailing dimensions of `shape` (numpy's rule for a
/// weight of fewer dimensions), or exactly `[shape's last]` when `last_only`.
fn broadcast_weight(path: &Path, shape: &[usize], last_only: bool) -> Result<Vec<f32>, String> {
    let w = npy::read_f32(path)?;
    let fits = if last_only {
        w.shape.len() == 1 && shape.last() == Some(&w.shape[0])
    } else {
        w.shape.len() <= shape.len() && shape.ends_with(&w.shape)
    };
    if fits && !w.data.is_empty() {
        Ok(w.data)
    } else {
        Err(format!(
            "{}: shape {:?} does not broadcast over {shape:?}{}",
            path.display(),
            w.shape,
            if last_only {
                " (it must be [C], the last dimension)"
            } else {
                " (a trailing part of it is needed)"
            }
        ))
    }
}

/// A pair's prediction and target (of one shape), a weight that broadcasts over them, and the
/// input's and gradient's dtypes.
struct PairData {
    pred: npy::FloatArray,
    target: npy::FloatArray,
    weight: Option<Vec<f32>>,
    dtype: DType,
    grad_dtype: DType,
}

fn read_pair(p: &Pair, weight: Option<&Path>) -> Result<PairData, String> {
    let pred = npy::read_floats(&p.pred, p.common.bf16)?;
    let target = npy::read_floats(&p.target, p.common.bf16)?;
    same_shape(&pred.shape, &target.shape, &p.target)?;
    let (dtype, grad_dtype) = dtypes(&pred.data, &p.common);
    let weight = weight
        .map(|w| broadcast_weight(w, &pred.shape, false))
        .transpose()?;
    Ok(PairData {
        pred,
        target,
        weight,
        dtype,
        grad_dtype,
    })
}

fn pointwise(
    ctx: &Context,
    loss: Pointwise,
    a: &Pair,
    weight: Option<&Path>,
    pos_weight: Option<&Path>,
) -> Result<Evaluated, String> {
    let PairData {
        pred,
        target,
        weight,
        dtype,
        grad_dtype,
    } = read_pair(a, weight)?;
    let pos_weight = pos_weight
        .map(|p| broadcast_weight(p, &pred.shape, true))
        .transpose()?;
    let mut inputs = Inputs::new(pred.data.values(), target.data.values());
    let mut desc = PointwiseDesc::new(loss, pred.data.len())
        .reduction(a.common.reduction)
        .outputs(outputs(&a.common))
        .dtype(dtype)
        .grad_dtype(grad_dtype);
    desc.batch = pred.shape.first().copied();
    if let Some(w) = &weight {
        inputs = inputs.weight(w);
        desc = desc.weight(w.len());
    }
    if let Some(w) = &pos_weight {
        inputs = inputs.pos_weight(w);
        desc = desc.pos_weight(w.len());
    }
    let (out, seconds) = timed(|| ctx.loss(&desc, &inputs))?;
    Ok(Evaluated::new(
        loss.name(),
        out,
        pred.shape.clone(),
        pred.shape,
        grad_dtype,
        seconds,
    ))
}

fn custom(ctx: &Context, a: &CustomArgs) -> Result<Evaluated, String> {
    let p = &a.pair;
    let PairData {
        pred,
        target,
        weight,
        dtype,
        grad_dtype,
    } = read_pair(p, a.weight.as_deref())?;
    let mut desc = CustomLossDesc::new(a.loss_expr.as_str(), a.grad_expr.as_str(), pred.data.len())
        .reduction(p.common.reduction)
        .outputs(outputs(&p.common))
        .dtype(dtype)
        .grad_dtype(grad_dtype);
    let mut inputs = Inputs::new(pred.data.values(), target.data.values());
    if let Some(w) = &weight {
        inputs = inputs.weight(w);
        desc = desc.weight(w.len());
    }
    let (out, seconds) = timed(|| ctx.loss(&desc, &inputs))?;
    let gradient_check = if a.check_grad {
        let (x, y) = (pred.data.values().to_f32(), target.data.values().to_f32());
        Some(
            ctx.check_gradient(&desc, &x, &y)
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    Ok(Evaluated {
        gradient_check,
        ..Evaluated::new(
            "custom",
            out,
            pred.shape.clone(),
            pred.shape,
            grad_dtype,
            seconds,
        )
    })
}

fn mix(ctx: &Context, a: &MixArgs) -> Result<Evaluated, String> {
    let p = &a.pair;
    let PairData {
        pred,
        target,
        weight,
        dtype,
        grad_dtype,
    } = read_pair(p, a.weight.as_deref())?;
    let mut desc = MixDesc::new();
    let mut terms = Vec::new();
    for (w, name) in &a.terms {
        let catalogue = [
            Pointwise::Mse,
            Pointwise::L1,
            Pointwise::Huber { delta: a.delta },
            Pointwise::SmoothL1 { beta: a.beta },
            Pointwise::Bce,
            Pointwise::BceWithLogits,
            Pointwise::KlDiv {
                log_target: a.log_target,
            },
        ];
        let Some(loss) = catalogue.into_iter().find(|l| l.name() == name) else {
            let names: Vec<&str> = catalogue.iter().map(Pointwise::name).collect();
            return Err(format!(
                "--term {w}:{name}: unknown loss ({})",
                names.join(", ")
            ));
        };
        // The mix adds gradients in f32; --grad-dtype applies when the sum is written.
        let mut term = PointwiseDesc::new(loss, pred.data.len())
            .reduction(p.common.reduction)
            .outputs(outputs(&p.common))
            .dtype(dtype)
            .grad_dtype(DType::F32);
        term.batch = pred.shape.first().copied();
        if let (Some(w), Pointwise::Bce | Pointwise::BceWithLogits) = (&weight, loss) {
            term = term.weight(w.len());
        }
        desc = desc.term(*w, term);
        terms.push((*w, loss.name()));
    }
    if weight.is_some() && !terms.iter().any(|t| t.1.starts_with("bce")) {
        return Err("--weight: no bce or bce-with-logits term takes it".into());
    }
    let plain = Inputs::new(pred.data.values(), target.data.values());
    let inputs: Vec<Inputs> = terms
        .iter()
        .map(|t| match &weight {
            Some(w) if t.1.starts_with("bce") => plain.weight(w),
            _ => plain,
        })
        .collect();
    let (out, seconds) = timed(|| ctx.mix(&desc, &inputs))?;
    let out = LossOutput {
        value: out.value,
        per_element: out.per_element,
        grad: out.grads.into_iter().next().flatten(),
        ..Default::default()
    };
    Ok(Evaluated {
        terms,
        ..Evaluated::new(
            "mix",
            out,
            pred.shape.clone(),
            pred.shape,
            grad_dtype,
            seconds,
        )
    })
}

fn class_weight(path: &Option<PathBuf>, classes: usize) -> Result<Option<Vec<f32>>, String> {
    match path {
        Some(path) => {
            let w = npy::read_f32(path)?;
            same_shape(&[classes], &w.shape, path)?;
            Ok(Some(w.data))
        }
        None => Ok(None),
    }
}

pub(super) fn class_targets(path: &Path, rows: usize) -> Result<Vec<i64>, String> {
    match npy::read_targets(path, false)? {
        Targets::Classes(t) => {
            same_shape(&[rows], &t.shape, path)?;
            Ok(t.data)
        }
        Targets::Floats(_) => Err(format!(
            "{}: class indices (int64, int32 or uint32) are needed",
            path.display()
        )),
    }
}

fn nll(ctx: &Context, a: &NllArgs) -> Result<Evaluated, String> {
    let x = npy::read_floats(&a.log_probs, a.common.bf16)?;
    let (n, c) = rank2(&x.shape, &a.log_probs)?;
    let targets = class_targets(&a.targets, n)?;
    let weight = class_weight(&a.weight, c)?;
    let (dtype, grad_dtype) = dtypes(&x.data, &a.common);
    let mut desc = NllDesc::new(n, c)
        .reduction(a.common.reduction)
        .outputs(outputs(&a.common))
        .ignore_index(a.ignore_index)
        .dtype(dtype)
        .grad_dtype(grad_dtype);
    let mut inputs = Inputs::classes(x.data.values(), &targets);
    if let Some(w) = &weight {
        desc = desc.weight(w.len());
        inputs = inputs.weight(w);
    }
    let (out, seconds) = timed(|| ctx.loss(&desc, &inputs))?;
    Ok(Evaluated::new(
        "nll",
        out,
        vec![n],
        x.shape,
        grad_dtype,
        seconds,
    ))
}

fn cross_entropy(ctx: &Context, a: &CrossEntropyArgs) -> Result<Evaluated, String> {
    let logits = npy::read_floats(&a.logits, a.common.bf16)?;
    let (n, c) = rank2(&logits.shape, &a.logits)?;
    let weight = class_weight(&a.weight, c)?;
    let (dtype, grad_dtype) = dtypes(&logits.data, &a.common);
    let mut desc = CrossEntropyDesc::new(n, c)
        .dtype(dtype)
        .grad_dtype(grad_dtype)
        .reduction(a.common.reduction)
        .outputs(outputs(&a.common))
        .ignore_index(a.ce.ignore_index)
        .label_smoothing(a.ce.label_smoothing)
        .z_loss(a.ce.z_loss)
        .lse(a.ce.lse_out.is_some())
        .argmax(a.argmax_out.is_some());
    desc.softcap = a.ce.softcap;
    if let Some(w) = &weight {
        desc = desc.weight(w.len());
    }
    let targets = npy::read_targets(&a.targets, a.common.bf16)?;
    let mut inputs = match &targets {
        Targets::Classes(t) => {
            same_shape(&[n], &t.shape, &a.targets)?;
            Inputs::classes(logits.data.values(), &t.data)
        }
        Targets::Floats(t) => {
            same_shape(&logits.shape, &t.shape, &a.targets)?;
            desc = desc.targets(TargetKind::Probabilities);
            Inputs::new(logits.data.values(), t.data.values())
        }
    };
    if let Some(w) = &weight {
        inputs = inputs.weight(w);
    }
    let (out, seconds) = timed(|| ctx.loss(&desc, &inputs))?;
    if let (Some(path), Some(lse)) = (&a.ce.lse_out, &out.lse) {
        npy::write(path, &[n], lse)?;
    }
    if let (Some(path), Some(argmax)) = (&a.argmax_out, &out.argmax) {
        let wide: Vec<i64> = argmax.iter().map(|&i| i64::from(i)).collect();
        npy::write(path, &[n], &wide)?;
    }
    // Token accuracy: over the rows that are not ignored.
    let accuracy = match (&targets, out.correct) {
        (Targets::Classes(t), Some(correct)) => {
            let counted = t.data.iter().filter(|&&y| y != a.ce.ignore_index).count();
            Some(correct as f64 / counted as f64)
        }
        _ => None,
    };
    Ok(Evaluated {
        accuracy,
        ..Evaluated::new(
            "cross-entropy",
            out,
            vec![n],
            logits.shape,
            grad_dtype,
            seconds,
        )
    })
}

fn linear_cross_entropy(ctx: &Context, a: &LinearArgs) -> Result<Evaluated, String> {
    if a.common.grad_out.is_some() {
        return Err(
            "linear-cross-entropy writes --grad-hidden-out, --grad-weight-out and --grad-bias-out"
                .into(),
        );
    }
    if a.grad_bias_out.is_some() && a.bias.is_none() {
        return Err("--grad-bias-out needs --bias".into());
    }
    let hidden = npy::read_floats(&a.hidden, a.common.bf16)?;
    let (n, d) = rank2(&hidden.shape, &a.hidden)?;
    let weight = npy::read_floats(&a.weight, a.common.bf16)?;
    let (v, dw) = rank2(&weight.shape, &a.weight)?;
    let (dtype, grad_dtype) = dtypes(&hidden.data, &a.common);
    if weight.data.values().dtype() != dtype {
        return Err(format!(
            "{}: {} values, the hidden states are {dtype}",
            a.weight.display(),
            weight.data.values().dtype()
        ));
    }
    if dw != d {
        return Err(format!(
            "{}: shape {:?}, [V, {d}] is needed (the hidden states' width is {d})",
            a.weight.display(),
            weight.shape
        ));
    }
    let targets = class_targets(&a.targets, n)?;
    let bias = class_weight(&a.bias, v)?;
    let class_w = class_weight(&a.class_weight, v)?;
    let grads = [&a.grad_hidden_out, &a.grad_weight_out, &a.grad_bias_out];
    let mut desc = LinearCrossEntropyDesc::new(n, d, v)
        .bias(bias.is_some())
        .reduction(a.common.reduction)
        .outputs(Outputs {
            loss: true,
            grad: grads.iter().any(|g| g.is_some()),
        })
        .ignore_index(a.ce.ignore_index)
        .label_smoothing(a.ce.label_smoothing)
        .z_loss(a.ce.z_loss)
        .lse(a.ce.lse_out.is_some())
        .dtype(dtype)
        .grad_dtype(grad_dtype);
    desc.softcap = a.ce.softcap;
    let mut inputs = Inputs::classes(hidden.data.values(), &targets).linear(weight.data.values());
    if let Some(b) = &bias {
        inputs = inputs.bias(b);
    }
    if let Some(w) = &class_w {
        desc = desc.weight(v);
        inputs = inputs.weight(w);
    }
    let (out, seconds) = timed(|| ctx.loss(&desc, &inputs))?;
    // The gradients of the hidden states and the weight in their dtype; the log-sum-exps and
    // the bias's gradient in f32.
    let writes = [
        (&a.ce.lse_out, vec![n], &out.lse, DType::F32),
        (&a.grad_hidden_out, vec![n, d], &out.grad, grad_dtype),
        (&a.grad_weight_out, vec![v, d], &out.grad_linear, grad_dtype),
        (&a.grad_bias_out, vec![v], &out.grad_bias, DType::F32),
    ];
    for (path, shape, data, dtype) in writes {
        if let (Some(path), Some(data)) = (path, data) {
            npy::write_in(path, &shape, data, dtype)?;
        }
    }
    Ok(Evaluated::new(
        "linear-cross-entropy",
        out,
        vec![n],
        vec![n, d],
        grad_dtype,
        seconds,
    ))
}

fn cross_entropy_probs(ctx: &Context, a: &ProbsArgs) -> Result<Evaluated, String> {
    let probs = npy::read_floats(&a.probs, a.common.bf16)?;
    let (n, c) = rank2(&probs.shape, &a.probs)?;
    let targets = npy::read_floats(&a.targets, a.common.bf16)?;
    same_shape(&probs.shape, &targets.shape, &a.targets)?;
    let (dtype, grad_dtype) = dtypes(&probs.data, &a.common);
    let desc = ClassicCrossEntropyDesc::new(n, c)
        .eps(a.eps)
        .reduction(a.common.reduction)
        .outputs(outputs(&a.common))
        .dtype(dtype)
        .grad_dtype(grad_dtype);
    let inputs = Inputs::new(probs.data.values(), targets.data.values());
    let (out, seconds) = timed(|| ctx.loss(&desc, &inputs))?;
    Ok(Evaluated::new(
        "cross-entropy-probs",
        out,
        vec![n],
        probs.shape,
        grad_dtype,
        seconds,
    ))
}

fn report(ctx: &Context, e: &Evaluated, common: &Common) -> Result<(), String> {
    if let (Some(path), Some(grad)) = (&common.grad_out, &e.out.grad) {
        npy::write_in(path, &e.grad_shape, grad, e.grad_dtype)?;
    }
    if let Some(path) = &common.loss_out {
        match (&e.out.value, &e.out.per_element) {
            (Some(v), _) => npy::write(path, &[], &[*v])?,
            (None, Some(values)) => npy::write(path, &e.loss_shape, values)?,
            (None, None) => {}
        }
    }
    let reduction = common.reduction;
    if common.json {
        let mut v = serde_json::json!({
            "loss": e.name,
            "reduction": reduction.name(),
            "adapter": adapter_json(ctx),
            "seconds": e.seconds,
        });
        if let Some(value) = e.out.value {
            v["value"] = json_f32(value);
        }
        if let Some(accuracy) = e.accuracy {
            v["accuracy"] = serde_json::json!(accuracy);
            v["correct"] = e.out.correct.into();
        }
        if !e.terms.is_empty() {
            v["terms"] = (e.terms.iter())
                .map(|&(w, loss)| serde_json::json!({"weight": w, "loss": loss}))
                .collect();
        }
        if let Some(worst) = e.gradient_check {
            v["gradient_check_worst_relative_error"] = json_f64(worst, serde_json::json!(worst));
        }
        if let Some(values) = &e.out.per_element {
            v["shape"] = e.loss_shape.clone().into();
            if common.loss_out.is_none() {
                v["values"] = values.iter().map(|&x| json_f32(x)).collect();
            }
        }
        if let Some(path) = &common.loss_out {
            v["loss_out"] = path.display().to_string().into();
        }
        if let Some(path) = &common.grad_out {
            v["grad_out"] = path.display().to_string().into();
            v["grad_dtype"] = e.grad_dtype.name().into();
        }
        println!("{v}");
        return Ok(());
    }
    match (&e.out.value, &e.out.per_element) {
        (Some(value), _) => println!("{value}"),
        (None, Some(values)) if common.loss_out.is_some() => {
            println!("{} {} losses written", values.len(), reduction.name())
        }
        (None, Some(values)) => {
            for v in values {
                println!("{v}");
            }
        }
        (None, None) => {}
    }
    if let Some(worst) = e.gradient_check {
        println!("gradient check: worst relative error {worst:e}");
    }
    Ok(())
}

/// JSON has no NaN or infinity: those become strings, as Python's json module reads them back
/// with `float()`.
pub(super) fn json_f32(x: f32) -> serde_json::Value {
    json_f64(x as f64, serde_json::json!(x))
}

/// An f64 for JSON: `finite` where `x` is finite, else `x` as a string.
fn json_f64(x: f64, finite: serde_json::Value) -> serde_json::Value {
    if x.is_finite() {
        finite
    } else {
        serde_json::json!(x.to_string())
    }
}
