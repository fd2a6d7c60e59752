//! The benchmark harness: its kernels keep their contracts with the host (naga, no GPU), its
//! timings refuse nothing to time, and its unfused baseline of fused linear + cross-entropy
//! computes what the fused kernel and the twin do.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use wgpu_loss::{Error, Inputs, LinearCrossEntropyDesc, cpu};
use wgpu_loss_bench::{Bench, Case, LinearBench, LinearShape, Method, Timing};

fn message(e: &Error, parts: &[&str]) {
    let text = e.to_string();
    for p in parts {
        assert!(text.contains(p), "{text:?} should mention {p:?}");
    }
}

#[test]
fn ceiling_kernels_keep_their_contracts() {
    for kernel in wgpu_loss_bench::KERNELS {
        let variants = wgpu_loss::kernel::check(kernel).unwrap_or_else(|e| panic!("{e}"));
        assert!(variants >= 2, "{kernel:?}: {variants} variants");
    }
}

/// A benchmark needs at least one repetition; timings of nothing are NaN, not a panic.
#[test]
fn bench_rejects_zero_repetitions() {
    let ctx = ctx();
    let bench = Bench::new(ctx, Case::mse(1000, true), 1).unwrap();
    let e = bench.time(0, 0).unwrap_err();
    message(&e, &["reps", "at least one"]);
    let e = bench.ceilings(0, 0).unwrap_err();
    message(&e, &["reps"]);
    let e = bench.end_to_end(0, 0).unwrap_err();
    message(&e, &["reps"]);
    let empty = Timing {
        samples: Vec::new(),
        method: Method::WallClock,
    };
    assert!(empty.median().is_nan() && empty.min().is_nan() && empty.max().is_nan());
    assert!(bench.time(0, 1).unwrap().median() > 0.0);
}

#[test]
fn the_benchmarks_unfused_path_agrees() {
    // The bench's baseline (matmul to logits, the cross-entropy kernel, the gradients'
    // matmuls), with its logits in windows of 64 rows on a 1 MiB-binding context, and the fused
    // path beside it: both against the twin.
    let ctx = wgpu_loss::Context::with_options(
        wgpu_loss::context::ContextOptions::default().max_binding(1 << 20),
    )
    .unwrap();
    let shape = LinearShape {
        rows: 200,
        dim: 37,
        vocab: 3001,
    };
    let bench = LinearBench::new(&ctx, shape, 7).unwrap();
    let (hidden, linear, targets) = bench.inputs();
    let desc = LinearCrossEntropyDesc::new(shape.rows, shape.dim, shape.vocab);
    let inputs = Inputs::classes(hidden, targets).linear(linear);
    let r = cpu::reference(&desc, &inputs).unwrap();
    let tol = Tol::new(2e-4, 2e-6);
    for (path, out) in ["fused", "unfused"].iter().zip(bench.results().unwrap()) {
        assert_scalar(&format!("{path} loss"), out.loss, r.value.unwrap(), tol);
        let gtol = |g: &[f64]| Tol::new(2e-4, 1e-5 * largest(g));
        assert_close(
            &format!("{path} grad hidden"),
            &out.grad_hidden,
            &r.grad,
            gtol(&r.grad),
        );
        let what = format!("{path} grad linear");
        assert_close(
            &what,
            &out.grad_linear,
            &r.grad_linear,
            gtol(&r.grad_linear),
        );
    }
    assert!(bench.unfused_bytes() > 4 * 200 * 3001);
    assert!(bench.fused_bytes() < bench.unfused_bytes() / 10);
}
