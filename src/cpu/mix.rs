//! CPU twin of `shaders/mix.wgsl` and `src/mix.rs`: a weighted sum of losses is the sum, in the
//! terms' order, of each term's twin times its weight, and each gradient output the weighted sum
//! of its terms' gradients.

use crate::error::Result;
use crate::families::mix::MixDesc;
use crate::plan::Inputs;

/// What [`reference()`] returns: the weighted sum of the losses (reduced, or per element) and each
/// gradient output (empty where its terms write none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MixReference {
    /// The reduced sum, when the terms are reduced.
    pub value: Option<f64>,
    /// The per-element sum, when the terms are not reduced.
    pub per_element: Option<Vec<f64>>,
    /// Each gradient output.
    pub grads: Vec<Vec<f64>>,
}

/// The f64 twin of [`crate::Context::mix`] on the same inputs, one [`Inputs`] a term.
pub fn reference(desc: &MixDesc, inputs: &[Inputs<'_>]) -> Result<MixReference> {
    let terms = desc.references(inputs)?;
    let outputs = desc.grad_outputs().into_iter().max().map_or(0, |g| g + 1);
    let mut out = MixReference {
        grads: vec![Vec::new(); outputs],
        ..Default::default()
    };
    let axpy = |acc: &mut Vec<f64>, w: f64, x: &[f64]| {
        if acc.is_empty() {
            acc.extend(x.iter().map(|v| w * v));
        } else {
            acc.iter_mut().zip(x).for_each(|(a, v)| *a += w * v);
        }
    };
    for (w, g, r) in terms {
        if let Some(v) = r.value {
            *out.value.get_or_insert(0.0) += w * v;
        }
        if let Some(v) = &r.per_element {
            axpy(out.per_element.get_or_insert_with(Vec::new), w, v);
        }
        axpy(&mut out.grads[g], w, &r.grad);
    }
    Ok(out)
}
