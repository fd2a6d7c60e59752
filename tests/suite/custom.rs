//! Custom pointwise losses from WGSL expressions: against Rust closures of the same formula
//! (cpu::pointwise::custom), their derivatives against central differences on the GPU
//! (Context::check_gradient), and expressions that must be refused, each a typed error that
//! quotes it.

use crate::common::*;
use wgpu_loss::{CustomLossDesc, Error, Inputs, Reduction, cpu};

/// Log-cosh, pinball (quantile 0.9), and focal loss (gamma 2) on probabilities: docs/custom-losses.md's
/// examples, as WGSL and as Rust.
type Formula = fn(f64, f64) -> f64;
const EXAMPLES: [(&str, &str, &str, Formula, Formula); 3] = [
    (
        "log-cosh",
        "log(cosh(x - y))",
        "tanh(x - y)",
        |x, y| (x - y).cosh().ln(),
        |x, y| (x - y).tanh(),
    ),
    (
        "pinball",
        "max(0.9 * (y - x), -0.1 * (y - x))",
        "select(0.1, -0.9, y > x)",
        |x, y| (0.9 * (y - x)).max(-0.1 * (y - x)),
        |x, y| if y > x { -0.9 } else { 0.1 },
    ),
    (
        "focal",
        "-(y * pow(1.0 - x, 2.0) * log(x) + (1.0 - y) * pow(x, 2.0) * log(1.0 - x))",
        "-(y * (-2.0 * (1.0 - x) * log(x) + pow(1.0 - x, 2.0) / x) + (1.0 - y) * (2.0 * x * log(1.0 - x) - pow(x, 2.0) / (1.0 - x)))",
        |x, y| -(y * (1.0 - x).powi(2) * x.ln() + (1.0 - y) * x.powi(2) * (1.0 - x).ln()),
        |x, y| {
            -(y * (-2.0 * (1.0 - x) * x.ln() + (1.0 - x).powi(2) / x)
                + (1.0 - y) * (2.0 * x * (1.0 - x).ln() - x.powi(2) / (1.0 - x)))
        },
    ),
];

/// Predictions for an example: probabilities in (0.02, 0.98) for focal loss, else values.
fn data(rng: &mut Rng, name: &str, len: usize) -> (Vec<f32>, Vec<f32>) {
    if name == "focal" {
        let pred = rng.vec(len, 0.02, 0.98);
        let target = (0..len).map(|_| (rng.unit() < 0.5) as u8 as f32).collect();
        (pred, target)
    } else {
        (rng.vec(len, -3.0, 3.0), rng.vec(len, -3.0, 3.0))
    }
}

#[test]
fn the_examples_against_closures_of_the_same_formula() {
    let ctx = ctx();
    let mut rng = Rng::new(70);
    // One workgroup (the scalar path), and several with a tail; a broadcast weight.
    for len in [37, 100_003] {
        for (name, loss, grad, fl, fg) in EXAMPLES {
            let (pred, target) = data(&mut rng, name, len);
            let weight = rng.vec(11, 0.5, 2.0);
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                for weighted in [false, true] {
                    let mut desc = CustomLossDesc::new(loss, grad, len).reduction(reduction);
                    let mut inputs = Inputs::new(&pred, &target);
                    let w = if weighted && len % 11 == 0 {
                        Some(&weight[..])
                    } else {
                        None
                    };
                    if let Some(w) = w {
                        desc = desc.weight(w.len());
                        inputs = inputs.weight(w);
                    }
                    let out = ctx.loss(&desc, &inputs).unwrap();
                    let r = cpu::pointwise::custom(&pred, &target, w, reduction, fl, fg).unwrap();
                    let what = format!("{name} [{len}] {reduction}");
                    let loss_out = out
                        .value
                        .map_or_else(|| out.per_element.unwrap(), |v| vec![v]);
                    let tol = Tol::new(2e-5, 1e-6);
                    assert_loss(&what, &loss_out, &r, tol, tol);
                    let gtol = Tol::new(2e-5, 1e-6 * largest(&r.grad));
                    assert_close(&format!("{what} grad"), &out.grad.unwrap(), &r.grad, gtol);
                }
            }
        }
    }
}

#[test]
fn derivatives_against_central_differences() {
    let ctx = ctx();
    let mut rng = Rng::new(71);
    for (name, loss, grad, _, _) in EXAMPLES {
        let (pred, target) = data(&mut rng, name, 1001);
        // Focal loss's poles at 0 and 1: no probability within a few steps of them.
        let pred: Vec<f32> = if name == "focal" {
            pred.iter().map(|&x| x.clamp(0.05, 0.95)).collect()
        } else {
            pred
        };
        // Pinball's kink: no element within a step of it.
        let pred: Vec<f32> = if name == "pinball" {
            pred.iter()
                .zip(&target)
                .map(|(&x, &y)| if (x - y).abs() < 0.05 { y + 0.5 } else { x })
                .collect()
        } else {
            pred
        };
        let desc = CustomLossDesc::new(loss, grad, pred.len());
        let worst = ctx.check_gradient(&desc, &pred, &target).unwrap();
        eprintln!("{name}: derivative against central differences, worst relative error {worst:e}");
        assert!(worst < 1e-2, "{name}: worst relative error {worst:e}");
    }
    // A wrong derivative is caught.
    let (pred, target) = data(&mut rng, "log-cosh", 1001);
    let wrong = CustomLossDesc::new("log(cosh(x - y))", "x - y", pred.len());
    let worst = ctx.check_gradient(&wrong, &pred, &target).unwrap();
    assert!(worst > 0.5, "a wrong derivative passed: {worst:e}");
}

#[test]
fn expressions_that_must_be_refused() {
    let ctx = ctx();
    let (pred, target) = ([0.5f32, 1.0], [0.0f32, 2.0]);
    for (loss, why) in [
        ("x; return 0.0", "';'"),
        ("x } fn g() { ", "'}'"),
        ("scratch.data[0]", "'['"),
        ("params.p0 * x", "\"params.p0\""),
        ("foo(x)", "\"foo\""),
        ("(x - y", "not closed"),
        ("x - y)", "closes nothing"),
        ("x // y", "comments"),
        ("", "1 to"),
        // The compiler's own messages (naga, through wgpu).
        ("x +", "expected expression"),
        ("max(x)", "wrong number of arguments"),
    ] {
        let desc = CustomLossDesc::new(loss, "1.0", 2);
        let err = ctx
            .loss(&desc, &Inputs::new(&pred, &target))
            .expect_err(loss);
        match &err {
            Error::CustomLoss { which, expr, .. } => {
                assert_eq!((*which, expr.as_str()), ("loss", loss), "{err}");
            }
            other => panic!("{loss:?}: {other}"),
        }
        assert!(err.to_string().contains(why), "{loss:?}: {err}");
        // What the checker refuses without a device (all but the compiler's own messages).
        let checked = desc.check_expressions();
        assert_eq!(
            checked.is_err(),
            !why.starts_with("expected") && !why.starts_with("wrong"),
            "{loss:?}: {checked:?}"
        );
    }
    assert!(
        CustomLossDesc::new("x * log(y + 1.0)", "2.0 * x", 2)
            .check_expressions()
            .is_ok()
    );
    // The gradient's expression is checked too, and named.
    let desc = CustomLossDesc::new("x * x", "2.0 * z", 2);
    let err = ctx.loss(&desc, &Inputs::new(&pred, &target)).unwrap_err();
    assert!(
        matches!(err, Error::CustomLoss { which: "grad", .. }),
        "{err}"
    );
}
