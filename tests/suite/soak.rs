//! A soak: 20,000 convenience calls, optimizer steps and plan builds of every family and of
//! varying shapes in one process, on a context of its own. The first round holds each result to
//! its twin; every later round to the first round's bits. Resident memory and the context's
//! pipeline and plan caches are printed after the first round and at the end, and must not grow
//! past the first round's (the caches not at all). Requests beyond the device's limits come back
//! as `Error::TooLarge`.

use crate::common::*;
use wgpu_loss::{
    Context, CrossEntropyDesc, CustomLossDesc, Error, ImageDesc, Inputs, LinearCrossEntropyDesc,
    LossOutput, MixDesc, NllDesc, Plan, PointwiseDesc, Reduction, cpu,
    image::{ImageInputs, ImageLoss},
    optim::{Optim, Optimizer},
    plan::TensorLoss,
    pointwise::Pointwise,
};

/// One operation: runs on the context, checks itself against its twin when asked, and returns
/// the bits of what it computed.
type Op = Box<dyn Fn(&Context, bool) -> Vec<u32>>;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn output_bits(out: &LossOutput) -> Vec<u32> {
    let mut b = bits(&out.value.into_iter().collect::<Vec<_>>());
    for part in [&out.per_element, &out.grad, &out.grad_linear] {
        b.extend(bits(part.as_deref().unwrap_or_default()));
    }
    b
}

/// A loss of a tensor family on `inputs` by the convenience call, held to its twin when `check`.
fn tensor_loss<D: TensorLoss>(
    ctx: &Context,
    desc: &D,
    inputs: &Inputs<'_>,
    check: bool,
) -> Vec<u32> {
    let out = ctx.loss(desc, inputs).unwrap();
    if check {
        let r = cpu::reference(desc, inputs).unwrap();
        let loss = out
            .value
            .map_or_else(|| out.per_element.clone().unwrap(), |v| vec![v]);
        let want = r
            .value
            .map_or_else(|| r.per_element.clone().unwrap(), |v| vec![v]);
        assert_close("soak loss", &loss, &want, Tol::new(1e-4, 1e-5));
        if let Some(g) = &out.grad {
            assert_close(
                "soak grad",
                g,
                &r.grad,
                Tol::new(1e-3, 1e-5 * largest(&r.grad)),
            );
        }
    }
    output_bits(&out)
}

fn ops() -> Vec<Op> {
    let mut rng = Rng::new(90);
    let mut ops: Vec<Op> = Vec::new();
    for len in [1, 1023, 4099, 30_011] {
        for loss in [
            Pointwise::Mse,
            Pointwise::Huber { delta: 0.5 },
            Pointwise::BceWithLogits,
        ] {
            let (x, y) = (rng.vec(len, -3.0, 3.0), rng.vec(len, 0.0, 1.0));
            let reduction = if len == 1023 {
                Reduction::None
            } else {
                Reduction::Mean
            };
            ops.push(Box::new(move |ctx, check| {
                let desc = PointwiseDesc::new(loss, len).reduction(reduction);
                tensor_loss(ctx, &desc, &Inputs::new(&x, &y), check)
            }));
        }
    }
    for (n, c) in [(1, 7), (37, 7), (300, 1000), (5, 1000)] {
        let logits = rng.vec(n * c, -6.0, 6.0);
        let targets = rng.classes(n, c);
        let probs = rng.distributions(n, c);
        let log_probs: Vec<f32> = probs.iter().map(|p| p.max(1e-30).ln()).collect();
        ops.push(Box::new(move |ctx, check| {
            let desc = CrossEntropyDesc::new(n, c).label_smoothing(0.1);
            tensor_loss(ctx, &desc, &Inputs::classes(&logits, &targets), check)
        }));
        let logits = rng.vec(n * c, -6.0, 6.0);
        ops.push(Box::new(move |ctx, check| {
            let desc = CrossEntropyDesc::new(n, c)
                .targets(wgpu_loss::cross_entropy::Targets::Probabilities)
                .reduction(Reduction::Sum);
            tensor_loss(ctx, &desc, &Inputs::new(&logits, &probs), check)
        }));
        let targets = rng.classes(n, c);
        ops.push(Box::new(move |ctx, check| {
            let desc = NllDesc::new(n, c).reduction(Reduction::None);
            tensor_loss(ctx, &desc, &Inputs::classes(&log_probs, &targets), check)
        }));
    }
    let len = 2_003;
    let (x, y) = (rng.vec(len, -2.0, 2.0), rng.vec(len, -2.0, 2.0));
    ops.push(Box::new(move |ctx, check| {
        let desc = CustomLossDesc::new("log(cosh(x - y))", "tanh(x - y)", len);
        let out = ctx.loss(&desc, &Inputs::new(&x, &y)).unwrap();
        if check {
            let (f, g) = (
                |x: f64, y: f64| (x - y).cosh().ln(),
                |x: f64, y: f64| (x - y).tanh(),
            );
            let r = cpu::pointwise::custom(&x, &y, None, Reduction::Mean, f, g).unwrap();
            assert_scalar(
                "soak custom",
                out.value.unwrap(),
                r.value.unwrap(),
                Tol::new(1e-4, 1e-6),
            );
            let grad = out.grad.as_ref().unwrap();
            assert_close("soak custom grad", grad, &r.grad, Tol::new(1e-4, 1e-7));
        }
        output_bits(&out)
    }));
    let (x, y) = (rng.vec(len, -2.0, 2.0), rng.vec(len, -2.0, 2.0));
    ops.push(Box::new(move |ctx, check| {
        let mix = MixDesc::new()
            .term(0.6, PointwiseDesc::new(Pointwise::L1, len))
            .term(0.4, PointwiseDesc::new(Pointwise::Mse, len));
        let inputs = Inputs::new(&x, &y);
        let out = ctx.mix(&mix, &[inputs, inputs]).unwrap();
        if check {
            let r = cpu::mix::reference(&mix, &[inputs, inputs]).unwrap();
            assert_scalar(
                "soak mix",
                out.value.unwrap(),
                r.value.unwrap(),
                Tol::new(1e-5, 1e-6),
            );
        }
        let mut b = bits(&out.value.into_iter().collect::<Vec<_>>());
        b.extend(bits(out.grads[0].as_deref().unwrap()));
        b
    }));
    for (n, d, v) in [(9, 33, 101), (40, 64, 700)] {
        let (h, w) = (rng.vec(n * d, -1.0, 1.0), rng.vec(v * d, -0.3, 0.3));
        let targets = rng.classes(n, v);
        ops.push(Box::new(move |ctx, check| {
            let desc = LinearCrossEntropyDesc::new(n, d, v).lse(true);
            tensor_loss(ctx, &desc, &Inputs::classes(&h, &targets).linear(&w), check)
        }));
    }
    for (n, h, w, c) in [(1, 20, 30, 3), (2, 37, 23, 1)] {
        let (x, y) = (
            rng.vec(n * h * w * c, 0.0, 1.0),
            rng.vec(n * h * w * c, 0.0, 1.0),
        );
        ops.push(Box::new(move |ctx, check| {
            let desc = ImageDesc::new(ImageLoss::Photometric, h, w, c).batch(n);
            let out = ctx.loss(&desc, &ImageInputs::new(&x[..], &y[..])).unwrap();
            if check {
                let r = cpu::image::image_loss(&desc, &x, &y, None).unwrap();
                assert_scalar(
                    "soak image",
                    out.value.unwrap(),
                    r.value.unwrap(),
                    Tol::new(1e-4, 1e-6),
                );
                let g = out.grad.as_ref().unwrap();
                assert_close(
                    "soak image grad",
                    g,
                    &r.grad,
                    Tol::new(2e-3, 2e-4 * largest(&r.grad)),
                );
            }
            output_bits(&out)
        }));
    }
    // The optimizer: made, two steps, dropped.
    let len = 3_001;
    let (p, g) = (rng.vec(len, -1.0, 1.0), rng.vec(len, -1.0, 1.0));
    ops.push(Box::new(move |ctx, check| {
        let mut params = p.clone();
        let mut optim = Optim::new(ctx, Optimizer::adam(0.01), len).unwrap();
        optim.step(&mut params, &g).unwrap();
        optim.step(&mut params, &g).unwrap();
        if check {
            let mut twin: Vec<f64> = p.iter().map(|&x| x as f64).collect();
            let grad: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            let mut state = cpu::optim::State::default();
            for _ in 0..2 {
                cpu::optim::step(Optimizer::adam(0.01), &mut twin, &grad, &mut state).unwrap();
            }
            assert_close("soak adam", &params, &twin, Tol::new(1e-5, 1e-6));
        }
        bits(&params)
    }));
    // Plan builds of shapes the calls above do not use (each a new plan, dropped at once).
    for n in [3, 1_000, 77_777] {
        ops.push(Box::new(move |ctx, _| {
            let plan = Plan::new(ctx, &CrossEntropyDesc::new(n, 1000)).unwrap();
            let other = Plan::new(ctx, &PointwiseDesc::new(Pointwise::L1, n)).unwrap();
            vec![plan.dispatch_count() as u32, other.dispatch_count() as u32]
        }));
    }
    ops
}

/// Resident memory, from /proc (Linux), in MiB.
fn resident_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

/// The soak, in a child process of this binary of its own (so that its resident memory is its
/// own, not that of the tests beside it).
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn twenty_thousand_calls_stay_right_and_bounded() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "soak::soak_in_this_process",
            "--exact",
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    for line in stderr.lines().filter(|l| l.starts_with("soak:")) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the soak's process: {}\n{stdout}\n{stderr}",
        out.status
    );
}

/// Set for the soak's own process.
const CHILD: &str = "WGPU_LOSS_SOAK_CHILD";

/// Run by [`twenty_thousand_calls_stay_right_and_bounded`] in a process of its own (with
/// [`CHILD`] set); elsewhere it says so and returns.
#[test]
#[ignore = "run by twenty_thousand_calls_stay_right_and_bounded in a process of its own"]
fn soak_in_this_process() {
    if std::env::var_os(CHILD).is_none() {
        eprintln!(
            "soak_in_this_process runs in the process twenty_thousand_calls_stay_right_and_bounded starts"
        );
        return;
    }
    let ctx = Context::new().unwrap();
    let ops = ops();
    let total: usize = 20_000;
    let rounds = total.div_ceil(ops.len());
    let start = (resident_mib(), ctx.cached_pipelines(), ctx.cached_plans());
    eprintln!(
        "soak: {} operations a round, {rounds} rounds; at the start {:.0} MiB resident, {} pipelines, {} plans",
        ops.len(),
        start.0,
        start.1,
        start.2
    );
    let first: Vec<Vec<u32>> = ops.iter().map(|op| op(&ctx, true)).collect();
    let warm = (resident_mib(), ctx.cached_pipelines(), ctx.cached_plans());
    let clock = std::time::Instant::now();
    for round in 1..rounds {
        for i in 0..ops.len() {
            // Every round's operations in another order.
            let k = (i * 7 + round) % ops.len();
            assert!(
                ops[k](&ctx, false) == first[k],
                "round {round}, operation {k}: other bits"
            );
        }
    }
    let end = (resident_mib(), ctx.cached_pipelines(), ctx.cached_plans());
    eprintln!(
        "soak: after the first round {:.0} MiB, {} pipelines, {} plans; after {} operations ({:.1} s) {:.0} MiB, {} pipelines, {} plans",
        warm.0,
        warm.1,
        warm.2,
        rounds * ops.len(),
        clock.elapsed().as_secs_f64(),
        end.0,
        end.1,
        end.2
    );
    assert_eq!(
        end.1, warm.1,
        "the pipeline cache grew after the first round"
    );
    assert!(end.2 <= 8, "the plan cache holds {} plans", end.2);
    // Allocators keep some memory: 64 MiB of slack over the first round's footprint.
    assert!(
        end.0 <= warm.0 + 64.0,
        "resident memory grew from {:.0} to {:.0} MiB",
        warm.0,
        end.0
    );
}

/// Requests beyond the device's limits are typed errors, on any thread, and the context works
/// after them.
#[test]
fn requests_beyond_the_device_are_typed_errors() {
    let ctx = ctx();
    let limits = ctx.limits();
    // A tensor larger than the device's largest buffer.
    let elements = (limits.max_buffer_size / 4 + 1) as usize;
    let e = Plan::new(ctx, &PointwiseDesc::new(Pointwise::Mse, elements)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                which: "buffer size",
                ..
            }
        ),
        "{e}"
    );
    // Targets (bound whole) larger than one binding.
    let rows = (ctx.max_binding_bytes() / 4 + 1) as usize;
    let e = Plan::new(ctx, &CrossEntropyDesc::new(rows, 2)).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    // An optimizer's state larger than one binding.
    let e = Optim::new(ctx, Optimizer::sgd(0.1), rows).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    // An image larger than a binding.
    let side = ((ctx.max_binding_bytes() / 16) as f64).sqrt() as usize + 1;
    let e = Plan::new(ctx, &ImageDesc::new(ImageLoss::Ssim, side, side, 4)).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let e = std::thread::spawn(move || {
        Plan::new(ctx, &PointwiseDesc::new(Pointwise::Mse, elements)).unwrap_err()
    })
    .join()
    .unwrap();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let out = mse(
        ctx,
        &[1.0, 2.0],
        &[0.0, 0.0],
        Reduction::Mean,
        wgpu_loss::Outputs::BOTH,
    )
    .unwrap();
    assert_eq!(out.value, Some(2.5));
}
