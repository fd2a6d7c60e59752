//! Custom pointwise losses: the per-element loss and its derivative with respect to the
//! prediction as WGSL `f32` expressions in `x` (the prediction) and `y` (the target), spliced
//! into the pointwise kernel (`LOSS` 8 of `shaders/pointwise.wgsl`), so that they get its
//! layout, reductions, weights, windows and determinism.
//!
//! An expression may hold `x`, `y`, numbers, operators, parentheses, commas and WGSL's built-in
//! functions (a fixed list): nothing that could leave the expression (`;`, braces, brackets,
//! attributes, comments) or reach anything but its two arguments. It is then compiled alone
//! (wgpu's WGSL front end, naga) before any pipeline is made; a bad one is
//! [`Error::CustomLoss`], quoting it and the compiler's message.
//!
//! CPU twin: none can evaluate a WGSL expression; [`crate::cpu::pointwise::custom`] takes the
//! same formula as Rust closures. [`Context::check_gradient`] holds the derivative to central
//! differences of the loss on the GPU.

use crate::dtype::DType;
use crate::engine::context::Context;
use crate::engine::program::Builder;
use crate::error::{Error, Result};
use crate::families::pointwise::{LossCode, PointwiseBuffers, Stream};
use crate::plan::roles::{INPUT, TARGET, WEIGHT};
use crate::plan::sealed::Tensors;
use crate::plan::{HostData, Inputs, bytes, check_count, check_declared, setters, value_bytes};
use crate::reduction::{Outputs, Reduction};

/// WGSL's built-in functions a custom expression may call (those of scalars in f32).
const BUILTINS: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "ceil",
    "clamp",
    "cos",
    "cosh",
    "degrees",
    "exp",
    "exp2",
    "f32",
    "floor",
    "fma",
    "fract",
    "inverseSqrt",
    "log",
    "log2",
    "max",
    "min",
    "mix",
    "pow",
    "radians",
    "round",
    "saturate",
    "select",
    "sign",
    "sin",
    "sinh",
    "smoothstep",
    "sqrt",
    "step",
    "tan",
    "tanh",
    "trunc",
];

/// The longest expression taken.
const MAX_LEN: usize = 1000;

/// A custom pointwise loss: `loss(x, y)` and its derivative `grad(x, y)` with respect to `x`,
/// as WGSL expressions, over `len` elements. Plan it with [`Plan::new`](crate::Plan::new), or
/// run it on host data with [`Context::loss`].
///
/// ```no_run
/// # let ctx = wgpu_loss::Context::new()?;
/// use wgpu_loss::{CustomLossDesc, Inputs};
/// let (pred, target) = ([0.5f32, -1.0, 2.0], [0.0f32, 0.0, 1.0]);
/// let log_cosh = CustomLossDesc::new("log(cosh(x - y))", "tanh(x - y)", 3);
/// let out = ctx.loss(&log_cosh, &Inputs::new(&pred, &target))?;
/// let worst = ctx.check_gradient(&log_cosh, &pred, &target)?;
/// # Ok::<(), wgpu_loss::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CustomLossDesc {
    /// The per-element loss, a WGSL `f32` expression in `x` and `y`.
    pub loss: String,
    /// Its derivative with respect to `x`, likewise.
    pub grad: String,
    /// Elements in `pred` and `target`.
    pub len: usize,
    /// The reduction (default mean).
    pub reduction: Reduction,
    /// What to compute (default both).
    pub outputs: Outputs,
    /// Length of a per-element weight broadcast over the trailing dimensions (element i takes
    /// `weight[i % weight]`), multiplying loss and gradient.
    pub weight: Option<usize>,
    /// The dtype of `pred` and `target` (default f32).
    pub dtype: DType,
    /// The gradient's dtype (default: `pred`'s).
    pub grad_dtype: Option<DType>,
}

setters! {
    CustomLossDesc {
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
        /// Sets the gradient's dtype.
        grad_dtype: DType,
    }
}

impl CustomLossDesc {
    /// `loss` and its derivative `grad` over `len` elements, mean reduction, loss and gradient.
    pub fn new(loss: impl Into<String>, grad: impl Into<String>, len: usize) -> Self {
        CustomLossDesc {
            loss: loss.into(),
            grad: grad.into(),
            len,
            reduction: Reduction::Mean,
            outputs: Outputs::BOTH,
            weight: None,
            dtype: DType::F32,
            grad_dtype: None,
        }
    }

    /// Checks the two expressions as a plan does before anything else, with no device: their
    /// characters, their identifiers (`x`, `y` and WGSL's built-in functions) and their
    /// parentheses. A plan then compiles each alone on its device, which this does not.
    ///
    /// # Errors
    /// [`Error::CustomLoss`] naming the expression and what is wrong with it.
    pub fn check_expressions(&self) -> Result<()> {
        check_expression("loss", &self.loss)?;
        check_expression("grad", &self.grad)
    }

    fn check(&self) -> Result<()> {
        self.check_expressions()?;
        self.outputs.check()?;
        if self.len == 0 {
            return Err(Error::Empty("pred"));
        }
        crate::engine::program::elements("pred", &[self.len])?;
        if self.reduction == Reduction::BatchMean {
            return Err(Error::option("reduction", "batchmean is for kl-div only"));
        }
        match self.weight {
            Some(0) => Err(Error::Empty("weight")),
            Some(l) if !self.len.is_multiple_of(l) => Err(Error::option(
                "weight",
                format!("length {l} does not broadcast over {} elements", self.len),
            )),
            _ => Ok(()),
        }
    }
}

/// Checks that `expr` is one expression in `x` and `y`: its characters, its identifiers (x, y
/// and [`BUILTINS`]) and its parentheses.
fn check_expression(which: &'static str, expr: &str) -> Result<()> {
    let bad = |why: String| Error::CustomLoss {
        which,
        expr: expr.to_string(),
        message: why,
    };
    if expr.trim().is_empty() || expr.len() > MAX_LEN {
        return Err(bad(format!(
            "an expression of 1 to {MAX_LEN} characters is needed"
        )));
    }
    if let Some(c) = expr
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || " _.+-*/%<>=!&|(),".contains(c)))
    {
        return Err(bad(format!("{c:?} may not appear in an expression")));
    }
    if expr.contains("//") || expr.contains("/*") {
        return Err(bad("comments may not appear in an expression".into()));
    }
    let mut depth = 0i32;
    for c in expr.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            return Err(bad("a ')' closes nothing".into()));
        }
    }
    if depth != 0 {
        return Err(bad("a '(' is not closed".into()));
    }
    // Identifiers: runs of letters, digits and '_' that start with a letter or '_' (numbers,
    // with their suffixes and exponents, start with a digit or '.').
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        let token_len = rest[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + token_len];
        let first = token.chars().next().unwrap_or('0');
        if (first.is_ascii_alphabetic() || first == '_')
            && !(token == "x" || token == "y" || BUILTINS.contains(&token))
        {
            return Err(bad(format!(
                "{token:?} is neither x, y nor one of WGSL's built-in functions {BUILTINS:?}"
            )));
        }
        rest = &rest[start + token_len..];
    }
    Ok(())
}

/// Has the plan compile both expressions alone in a module of their own first, so that a bad
/// one is an error that names it (with the compiler's message) rather than a failed pipeline.
fn compile_first(b: &mut Builder<'_>, desc: &CustomLossDesc) {
    for (which, expr) in [("loss", &desc.loss), ("grad", &desc.grad)] {
        let source = format!(
            "fn f(x: f32, y: f32) -> f32 {{\n    return (\n{expr}\n    );\n}}\n\
             @group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\
             @compute @workgroup_size(1)\nfn main() {{\n    out[0] = f(out[1], out[2]);\n}}\n"
        );
        let expr = expr.clone();
        b.check_wgsl(source, move |message| Error::CustomLoss {
            which,
            expr,
            message: compiler_message(&message),
        });
    }
}

/// The compiler's message on one line: the shader's error line where there is one (naga's
/// "parsing error: ..."), else every non-empty line joined.
fn compiler_message(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines
        .iter()
        .find(|l| l.starts_with("Shader '") && l.contains("error"))
    {
        Some(line) => line
            .split_once("' ")
            .map_or(*line, |(_, rest)| rest)
            .to_string(),
        None => lines.join(" "),
    }
}

impl Tensors for CustomLossDesc {
    type Ranges<'a> = PointwiseBuffers<'a>;

    fn layout(&self, b: &mut Builder<'_>) -> Result<()> {
        self.check()?;
        compile_first(b, self);
        Stream {
            weight: self.weight,
            custom: Some((&self.loss, &self.grad)),
            ..Stream::new(
                LossCode::CUSTOM,
                self.len as u64,
                self.reduction,
                self.outputs,
            )
        }
        .dtypes(self.dtype, self.grad_dtype.unwrap_or(self.dtype))
        .plan(b)
    }

    fn results(&self) -> (Reduction, &'static str) {
        (self.reduction, "inputs")
    }

    fn host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
        self.check()?;
        let target = inputs.values()?;
        check_count("pred", self.len as u64, inputs.input.len())?;
        check_count("target (must match pred)", self.len as u64, target.len())?;
        check_declared("weight", self.weight, inputs.weight)?;
        Ok(HostData::default()
            .with(INPUT, value_bytes("pred", inputs.input, self.dtype)?)
            .with(TARGET, value_bytes("target", target, self.dtype)?)
            .with(WEIGHT, bytes(inputs.weight)))
    }
}

impl Context {
    /// Holds a custom loss's derivative to central differences of its loss, on the GPU, at
    /// `pred` and `target` (f32): the loss per element at `x ± h` (`h = max(|x|, 1/16) / 256`,
    /// the difference taken between the f32 values actually evaluated) against the gradient of
    /// the sum. Returns the worst relative error, each element's relative to the larger of its
    /// difference quotient and a thousandth of the largest one (where the derivative is near
    /// zero, its error counts against the derivative's scale).
    pub fn check_gradient(
        &self,
        desc: &CustomLossDesc,
        pred: &[f32],
        target: &[f32],
    ) -> Result<f64> {
        let desc = CustomLossDesc {
            reduction: Reduction::None,
            weight: None,
            dtype: DType::F32,
            grad_dtype: None,
            ..desc.clone()
        };
        let step = |x: f32| x.abs().max(1.0 / 16.0) / 256.0;
        let (up, down): (Vec<f32>, Vec<f32>) =
            pred.iter().map(|&x| (x + step(x), x - step(x))).unzip();
        let loss_at = |x: &[f32]| -> Result<Vec<f32>> {
            let out = self.loss(
                &desc.clone().outputs(Outputs::LOSS),
                &Inputs::new(x, target),
            )?;
            out.per_element
                .ok_or(Error::option("outputs", "the loss came back empty"))
        };
        let (lu, ld) = (loss_at(&up)?, loss_at(&down)?);
        let grad = self
            .loss(
                &desc.clone().outputs(Outputs::GRAD),
                &Inputs::new(pred, target),
            )?
            .grad
            .ok_or(Error::option("outputs", "the gradient came back empty"))?;
        let quotients: Vec<f64> = (0..pred.len())
            .map(|i| (lu[i] as f64 - ld[i] as f64) / (up[i] as f64 - down[i] as f64))
            .collect();
        let scale = quotients
            .iter()
            .filter(|q| q.is_finite())
            .fold(0.0f64, |a, q| a.max(q.abs()));
        Ok(grad
            .iter()
            .zip(&quotients)
            .map(|(&g, &q)| {
                let err = (g as f64 - q).abs() / q.abs().max(scale * 1e-3).max(f64::MIN_POSITIVE);
                if err.is_nan() { f64::INFINITY } else { err }
            })
            .fold(0.0, f64::max))
    }
}
