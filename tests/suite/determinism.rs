//! The order of every sum depends on the plan (shape, options, tuning) alone: never on the
//! subgroup size the driver picks, and for the pointwise and NLL kernels not on whether
//! subgroups are used at all. Also: kernels under tunings other than this adapter's default
//! (the GPU tuning of 32 lanes and 8 vec4s among them) and without subgroups, against the f64
//! twins.
//!
//! Lavapipe's subgroup size follows its SIMD width, which LP_NATIVE_VECTOR_WIDTH sets when the
//! driver loads: 128 bits gives subgroups of 4, 256 of 8. A process has one of them, so the
//! comparison runs this file's `forced_tuning_against_twins` in two child processes.

use crate::common::*;
use wgpu_loss::{
    Context, Outputs, Reduction,
    context::{ContextOptions, Tuning},
    cpu,
    pointwise::Pointwise,
};

/// Where a child writes the bits it computed (and its adapter's subgroup size).
const BITS_OUT: &str = "WGPU_LOSS_TEST_BITS_OUT";

const ROW: Tol = Tol::new(1e-5, 1e-5);

fn grad_tol(reference: &[f64]) -> Tol {
    Tol::new(2e-5, 1e-6 * largest(reference))
}

fn context(tuning: Tuning, subgroups: bool) -> Context {
    Context::with_options(
        ContextOptions::default()
            .tuning(tuning)
            .subgroups(subgroups),
    )
    .expect("an adapter")
}

/// Runs every kernel layout once on `ctx`, checks each result against its f64 twin, and returns
/// all the bits computed.
fn run_all(ctx: &Context) -> Vec<u32> {
    let mut bits = Vec::new();
    let mut keep = |out: &wgpu_loss::LossOutput| {
        bits.extend(out.value.iter().map(|v| v.to_bits()));
        bits.extend(out.per_element.iter().flatten().map(|v| v.to_bits()));
        bits.extend(out.grad.iter().flatten().map(|v| v.to_bits()));
    };
    let mut rng = Rng::new(2024);

    // Pointwise: many workgroups plus a scalar tail (M % 4 = 3), and one workgroup.
    for m in [300_007, 777] {
        let (pred, target) = (rng.vec(m, 0.01, 0.99), rng.vec(m, 0.0, 1.0));
        for loss in [Pointwise::Mse, Pointwise::Bce] {
            let inputs = PwInputs {
                pred: &pred,
                target: &target,
                ..Default::default()
            };
            let out =
                pointwise_loss(ctx, loss, &inputs, Reduction::Mean, None, Outputs::BOTH).unwrap();
            let twin =
                cpu::pointwise::pointwise(loss, &pred, &target, None, None, Reduction::Mean, None)
                    .unwrap();
            assert_scalar(
                "pointwise mean",
                out.value.unwrap(),
                twin.value.unwrap(),
                ROW,
            );
            let g = out.grad.as_deref().unwrap();
            assert_close("pointwise grad", g, &twin.grad, grad_tol(&twin.grad));
            keep(&out);
        }
    }

    // Cross-entropy: small C (blocks of 4 rows), odd C, a row per segment, split rows; a
    // reduced and a per-row run each, with label smoothing on one.
    for (n, c) in [(5003, 10), (1001, 999), (300, 4096), (3, 100_003)] {
        let logits = rng.vec(n * c, -8.0, 8.0);
        let targets = rng.classes(n, c);
        for (reduction, ls) in [(Reduction::Mean, 0.0), (Reduction::None, 0.1)] {
            let options = CeOptions {
                reduction,
                label_smoothing: ls,
                ..Default::default()
            };
            let out = ce_classes(ctx, &logits, &targets, c, None, &options, Outputs::BOTH).unwrap();
            let twin = cpu_ce(&logits, &targets, c, None, &options).unwrap();
            match reduction {
                Reduction::None => assert_close(
                    "cross-entropy rows",
                    out.per_element.as_deref().unwrap(),
                    twin.per_element.as_deref().unwrap(),
                    ROW,
                ),
                _ => assert_scalar(
                    "cross-entropy",
                    out.value.unwrap(),
                    twin.value.unwrap(),
                    ROW,
                ),
            }
            let g = out.grad.as_deref().unwrap();
            assert_close("cross-entropy grad", g, &twin.grad, grad_tol(&twin.grad));
            keep(&out);
        }
    }

    // NLL with class weights: a weighted mean.
    let (n, c) = (70_001, 13);
    let log_probs = rng.vec(n * c, -9.0, 0.0);
    let targets = rng.classes(n, c);
    let weight = rng.vec(c, 0.5, 2.0);
    let options = NllOptions::default();
    let out = nll_classes(
        ctx,
        &log_probs,
        &targets,
        c,
        Some(&weight),
        &options,
        Outputs::BOTH,
    )
    .unwrap();
    let twin = cpu::nll::nll(
        &log_probs,
        &targets,
        c,
        Some(&weight),
        -100,
        Reduction::Mean,
    )
    .unwrap();
    assert_scalar("nll", out.value.unwrap(), twin.value.unwrap(), ROW);
    keep(&out);
    bits
}

/// The tuning both children force (lavapipe's own at 256 bits).
const FORCED: Tuning = Tuning {
    lanes: 8,
    stream_vecs: 32,
    register_vecs: 32,
    wide_vecs: 32,
    chunk_wide_rows: true,
    sweep_long_rows: false,
};

/// Run as a child by `same_bits_whatever_the_subgroup_size` (and on its own, in the extended
/// suite, as a test of the forced tuning): writes the bits and the adapter's subgroup size
/// where BITS_OUT says.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn forced_tuning_against_twins() {
    let ctx = context(FORCED, true);
    let bits = run_all(&ctx);
    if let Ok(path) = std::env::var(BITS_OUT) {
        let info = ctx.adapter_info();
        let mut text = format!(
            "{} {:?} subgroups {} {}\n",
            info.name,
            info.backend,
            ctx.uses_subgroups(),
            info.subgroup_min_size
        );
        for b in &bits {
            text.push_str(&format!("{b:08x}\n"));
        }
        std::fs::write(path, text).unwrap();
    }
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn same_bits_whatever_the_subgroup_size() {
    let dir = std::env::temp_dir().join(format!("wgpu-loss-bits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runs: Vec<String> = ["128", "256"]
        .iter()
        .map(|width| {
            let out = dir.join(format!("bits-{width}"));
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "determinism::forced_tuning_against_twins",
                    "--include-ignored",
                    "--test-threads",
                    "1",
                ])
                .env("LP_NATIVE_VECTOR_WIDTH", width)
                .env(BITS_OUT, &out)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "the child with LP_NATIVE_VECTOR_WIDTH={width} failed"
            );
            std::fs::read_to_string(&out).unwrap()
        })
        .collect();
    let (head4, bits4) = runs[0].split_once('\n').unwrap();
    let (head8, bits8) = runs[1].split_once('\n').unwrap();
    eprintln!("child adapters: {head4:?} / {head8:?}");
    // On lavapipe's Vulkan the two children really had different subgroup sizes.
    if head4.contains("llvmpipe") && head4.contains("Vulkan") {
        assert!(head4.ends_with("subgroups true 4"), "{head4}");
        assert!(head8.ends_with("subgroups true 8"), "{head8}");
    }
    assert!(bits4.lines().count() > 1000);
    let first_difference = bits4.lines().zip(bits8.lines()).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "results differ between subgroups of 4 and of 8 ({head4} / {head8})"
    );
    assert_eq!(bits4.lines().count(), bits8.lines().count());
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn other_tunings_and_no_subgroups_against_twins() {
    // The GPU tuning that Tuning::for_adapter picks for discrete GPUs, a narrow one, and one
    // with the fewest registers (both ways of reading wide rows with the gradient, and long rows
    // swept or chunked); each with and without subgroups.
    let tunings = [
        Tuning {
            lanes: 32,
            stream_vecs: 8,
            register_vecs: 8,
            wide_vecs: 8,
            chunk_wide_rows: false,
            sweep_long_rows: true,
        },
        Tuning {
            lanes: 4,
            stream_vecs: 3,
            register_vecs: 5,
            wide_vecs: 40,
            chunk_wide_rows: true,
            sweep_long_rows: false,
        },
        Tuning {
            lanes: 16,
            stream_vecs: 64,
            register_vecs: 1,
            wide_vecs: 1,
            chunk_wide_rows: true,
            sweep_long_rows: true,
        },
    ];
    for tuning in tunings {
        let with = run_all(&context(tuning, true));
        let without = run_all(&context(tuning, false));
        // Pointwise and NLL add in the same tree either way; they come first and last.
        let pointwise = 2 * (300_007 + 1) + 2 * (777 + 1);
        assert!(
            with[..pointwise] == without[..pointwise],
            "{tuning:?}: pointwise bits differ with and without subgroups"
        );
        assert_eq!(with.last(), without.last(), "{tuning:?}: nll differs");
    }
}
