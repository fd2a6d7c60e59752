//! The worst relative error of every kernel against its f64 CPU twin, on random data of a
//! million elements or so (`cargo test --release --test suite accuracy:: -- --nocapture` prints the
//! table). Relative error is taken against the larger of the element's magnitude and 1e-3 of
//! the largest (elements that are zero up to rounding have no meaningful relative error).
//! The bound asserted is the loosest tolerance the kernel's own test file justifies.

use crate::common::*;
use wgpu_loss::{Outputs, Reduction, cpu, pointwise::Pointwise};

struct Row {
    kernel: String,
    per_element: f64,
    value: f64,
    grad: f64,
}

fn report(rows: &[Row]) {
    println!("worst relative error against the f64 reference");
    println!(
        "  {:<42} {:>12} {:>12} {:>12}",
        "kernel", "per element", "mean", "gradient"
    );
    for r in rows {
        println!(
            "  {:<42} {:>12.2e} {:>12.2e} {:>12.2e}",
            r.kernel, r.per_element, r.value, r.grad
        );
    }
}

fn measure(
    kernel: String,
    run: impl Fn(Reduction) -> (wgpu_loss::LossOutput, cpu::Reference),
) -> Row {
    let (none, reference) = run(Reduction::None);
    let per_element = worst_relative(
        none.per_element.as_ref().unwrap(),
        reference.per_element.as_ref().unwrap(),
    );
    let (mean, reference) = run(Reduction::Mean);
    let v = reference.value.unwrap();
    let value = (mean.value.unwrap() as f64 - v).abs() / v.abs();
    let grad = worst_relative(mean.grad.as_ref().unwrap(), &reference.grad);
    Row {
        kernel,
        per_element,
        value,
        grad,
    }
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn worst_relative_errors() {
    let ctx = ctx();
    let mut rows = Vec::new();
    let m = 1 << 20;
    let mut rng = Rng::new(1);
    let pred = rng.vec(m, -4.0, 4.0);
    let target = rng.vec(m, -4.0, 4.0);
    let probs = rng.vec(m, 0.01, 0.99);
    let soft = rng.vec(m, 0.0, 1.0);
    for (loss, p, t) in [
        (Pointwise::Mse, &pred, &target),
        (Pointwise::L1, &pred, &target),
        (Pointwise::Huber { delta: 1.0 }, &pred, &target),
        (Pointwise::SmoothL1 { beta: 1.0 }, &pred, &target),
        (Pointwise::Bce, &probs, &soft),
        (Pointwise::BceWithLogits, &pred, &soft),
    ] {
        rows.push(measure(format!("{} [{m}]", loss.name()), |reduction| {
            let inputs = PwInputs {
                pred: p,
                target: t,
                ..Default::default()
            };
            let out = pointwise_loss(ctx, loss, &inputs, reduction, None, Outputs::BOTH).unwrap();
            (
                out,
                cpu::pointwise::pointwise(loss, p, t, None, None, reduction, None).unwrap(),
            )
        }));
    }
    let log_probs: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let loss = Pointwise::KlDiv { log_target: false };
    rows.push(measure(format!("kl-div [{m}]"), |reduction| {
        let inputs = PwInputs {
            pred: &log_probs,
            target: &soft,
            ..Default::default()
        };
        let out = pointwise_loss(ctx, loss, &inputs, reduction, None, Outputs::BOTH).unwrap();
        (
            out,
            cpu::pointwise::pointwise(loss, &log_probs, &soft, None, None, reduction, None)
                .unwrap(),
        )
    }));

    for (n, c) in [(100_000, 10), (1000, 1000), (32, 32_000), (8, 128_000)] {
        let logits = rng.vec(n * c, -8.0, 8.0);
        let targets = rng.classes(n, c);
        rows.push(measure(format!("cross-entropy [{n}, {c}]"), |reduction| {
            let o = CeOptions::default().reduction(reduction);
            let out = ce_classes(ctx, &logits, &targets, c, None, &o, Outputs::BOTH).unwrap();
            (out, cpu_ce(&logits, &targets, c, None, &o).unwrap())
        }));
        let dist = rng.distributions(n, c);
        rows.push(measure(
            format!("cross-entropy, probability targets [{n}, {c}]"),
            |reduction| {
                let o = CeOptions::default().reduction(reduction);
                let out = ce_soft(ctx, &logits, &dist, c, None, &o, Outputs::BOTH).unwrap();
                (out, cpu_ce_soft(&logits, &dist, c, None, &o).unwrap())
            },
        ));
        let p = rng.distributions(n, c);
        rows.push(measure(
            format!("cross-entropy-probs [{n}, {c}]"),
            |reduction| {
                let out = ce_probs(ctx, &p, &dist, c, 1e-7, reduction, Outputs::BOTH).unwrap();
                (out, cpu_ce_probs(&p, &dist, c, 1e-7, reduction).unwrap())
            },
        ));
        let lp: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        rows.push(measure(format!("nll [{n}, {c}]"), |reduction| {
            let o = NllOptions {
                reduction,
                ..Default::default()
            };
            let out = nll_classes(ctx, &lp, &targets, c, None, &o, Outputs::BOTH).unwrap();
            (
                out,
                cpu::nll::nll(&lp, &targets, c, None, -100, reduction).unwrap(),
            )
        }));
    }
    report(&rows);
    for r in &rows {
        // Per element and gradient: errors of a few ulp of the terms that cancel to a small
        // result (y log y - y x, p - 1) show against the 1e-3 floor as up to ~1e-4.
        assert!(
            r.per_element < 1e-4 && r.value < 2e-5 && r.grad < 1e-3,
            "{}: {:e} {:e} {:e}",
            r.kernel,
            r.per_element,
            r.value,
            r.grad
        );
    }
}
