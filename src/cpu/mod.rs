//! CPU reference implementations of every kernel, accumulating in f64.
//!
//! Each file mirrors a shader of the same name in `shaders/` and is written to be read side by
//! side with it; the tests hold every GPU result against these. They take the same inputs as
//! the GPU API (f32 data) and return f64 results.

pub mod cross_entropy;
pub mod image;
pub mod linear_cross_entropy;
pub mod mix;
pub mod nll;
pub mod optim;
pub mod pointwise;
pub mod train;

use crate::plan::{Inputs, TensorLoss};
pub use crate::reduction::Reference;

/// The CPU twin of `desc` on `inputs`: what [`crate::Context::loss`] computes on the GPU, in
/// f64.
///
/// # Errors
/// Inputs the GPU refuses, with the same error: the description and the inputs' shapes are
/// checked as [`crate::Context::loss`] checks them, before the twin's own checks.
pub fn reference<D: TensorLoss>(desc: &D, inputs: &Inputs<'_>) -> crate::error::Result<Reference> {
    desc.check_inputs(inputs)?;
    desc.reference(inputs)
}

/// Checks the shape of row data: `classes` > 0, `data` holds whole rows (`rows` of them when
/// given), and an optional per-class `weight` has `classes` entries. Returns the row count.
pub(crate) fn check_rows(
    what: &'static str,
    data: usize,
    rows: Option<usize>,
    classes: usize,
    weight: Option<&[f32]>,
) -> crate::error::Result<usize> {
    use crate::error::Error;
    if classes == 0 {
        return Err(Error::Empty("classes (C)"));
    }
    let n = rows.unwrap_or(data / classes);
    if n.checked_mul(classes) != Some(data) {
        return Err(Error::LengthMismatch {
            what,
            expected: n.saturating_mul(classes),
            actual: data,
        });
    }
    check_len("weight (C)", classes, weight.map(<[f32]>::len))?;
    Ok(n)
}

/// Checks an optional input's length.
pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    len: Option<usize>,
) -> crate::error::Result<()> {
    match len {
        Some(actual) if actual != expected => Err(crate::error::Error::LengthMismatch {
            what,
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Reduces per-element (per-row) losses as the kernels do: `sum` adds, `mean` and `batchmean`
/// divide the sum by `den`, `none` keeps them. The gradient comes already scaled.
pub(crate) fn reduce(
    reduction: crate::reduction::Reduction,
    losses: Vec<f64>,
    grad: Vec<f64>,
    den: f64,
) -> Reference {
    use crate::reduction::Reduction;
    let sum: f64 = losses.iter().sum();
    let (value, per_element) = match reduction {
        Reduction::None => (None, Some(losses)),
        Reduction::Sum => (Some(sum), None),
        Reduction::Mean | Reduction::BatchMean => (Some(sum / den), None),
    };
    Reference {
        value,
        per_element,
        grad,
        ..Default::default()
    }
}
