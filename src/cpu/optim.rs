//! CPU twin of `shaders/optim.wgsl`: the same update in f64, state kept by the caller.

use crate::error::{Error, Result};
use crate::families::optim::Optimizer;

/// An optimizer's state on the host: momentum or first moment, second moment, steps taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// SGD's momentum buffer, or Adam's first moment.
    pub m: Vec<f64>,
    /// Adam's second moment.
    pub v: Vec<f64>,
    /// Steps taken.
    pub steps: u64,
}

/// One step of `optimizer` on `params` from `grad`, in f64 (PyTorch's formulas; `state` empty
/// before the first step).
///
/// # Errors
/// [`Error::InvalidOption`] for an optimizer [`crate::optim::Optim::new`] refuses;
/// [`Error::LengthMismatch`] when `grad` or a non-empty `state` does not have one entry per
/// parameter. Nothing is changed on error.
pub fn step(
    optimizer: Optimizer,
    params: &mut [f64],
    grad: &[f64],
    state: &mut State,
) -> Result<()> {
    optimizer.check()?;
    let n = params.len();
    let check = |what, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(Error::LengthMismatch {
                what,
                expected: n,
                actual: len,
            })
        }
    };
    check("grad (one per parameter)", grad.len())?;
    if state.steps == 0 && state.m.is_empty() && state.v.is_empty() {
        state.m = vec![0.0; n];
        state.v = vec![0.0; n];
    }
    check("state.m (one per parameter)", state.m.len())?;
    check("state.v (one per parameter)", state.v.len())?;
    state.steps += 1;
    let t = state.steps;
    match optimizer {
        Optimizer::Sgd {
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay,
        } => {
            let (lr, mo, da, wd) = (
                lr as f64,
                momentum as f64,
                dampening as f64,
                weight_decay as f64,
            );
            for i in 0..n {
                let mut d = grad[i] + wd * params[i];
                if mo != 0.0 {
                    let buf = if t == 1 {
                        d
                    } else {
                        mo * state.m[i] + (1.0 - da) * d
                    };
                    state.m[i] = buf;
                    d = if nesterov { d + mo * buf } else { buf };
                }
                params[i] -= lr * d;
            }
        }
        Optimizer::Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
        } => {
            let (lr, b1, b2, eps, wd) = (
                lr as f64,
                beta1 as f64,
                beta2 as f64,
                eps as f64,
                weight_decay as f64,
            );
            let bc1 = 1.0 - b1.powi(t as i32);
            let bc2 = 1.0 - b2.powi(t as i32);
            for i in 0..n {
                let mut d = grad[i];
                if decoupled {
                    params[i] *= 1.0 - lr * wd;
                } else {
                    d += wd * params[i];
                }
                state.m[i] += (1.0 - b1) * (d - state.m[i]);
                state.v[i] = b2 * state.v[i] + (1.0 - b2) * d * d;
                let denom = state.v[i].sqrt() / bc2.sqrt() + eps;
                params[i] -= lr / bc1 * (state.m[i] / denom);
            }
        }
    }
    Ok(())
}
