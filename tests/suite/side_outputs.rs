//! Cross-entropy's side outputs, written by the same pass without another read of the logits:
//! each row's log-sum-exp, each row's loss beside a reduced loss, each row's argmax and the
//! count of rows whose argmax is their target; and an upstream gradient folded into the
//! gradient. Against the f64 twin (argmax against the first largest f32 logit, exactly).

use crate::common::*;
use wgpu_loss::{
    Context, CrossEntropyDesc, Error, Inputs, LossOutput, Outputs, Plan, Reduction,
    context::ContextOptions, cpu, cross_entropy::CrossEntropyBuffers, cross_entropy::Targets,
};

const ROW: Tol = Tol::new(1e-5, 1e-5);
const VALUE: Tol = Tol::new(2e-5, 1e-5);

fn grad_tol(reference: &[f64]) -> Tol {
    Tol::new(2e-5, 1e-6 * largest(reference))
}

/// The first column of each row's largest logit (0 for a row with none above -inf), as
/// torch.argmax.
fn argmax(logits: &[f32], classes: usize) -> Vec<u32> {
    logits
        .chunks(classes)
        .map(|row| {
            let mut best = 0;
            for (c, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = c;
                }
            }
            best as u32
        })
        .collect()
}

/// Logits with hard rows: a tie for the max (the first wins), a row of -inf but one entry, and
/// a row all -inf (argmax 0, log-sum-exp -inf).
fn hard_logits(rng: &mut Rng, n: usize, c: usize) -> Vec<f32> {
    let mut logits = rng.vec(n * c, -8.0, 8.0);
    if n >= 3 && c >= 3 {
        logits[c - 1] = 9.0;
        logits[c - 2] = 9.0;
        logits[c..2 * c].fill(f32::NEG_INFINITY);
        logits[2 * c - 2] = 1.5;
        logits[2 * c..3 * c].fill(f32::NEG_INFINITY);
    }
    logits
}

/// Checks every side output of `out` against the twins.
#[track_caller]
fn check_sides(what: &str, desc: &CrossEntropyDesc, inputs: &Inputs<'_>, out: &LossOutput) {
    let logits = inputs.input.to_f32();
    if desc.lse {
        let lse = cpu::cross_entropy::row_lse(desc, inputs).unwrap();
        assert_close(&format!("{what} lse"), out.lse.as_ref().unwrap(), &lse, ROW);
    }
    if desc.row_losses {
        let none = desc
            .clone()
            .reduction(Reduction::None)
            .row_losses(false)
            .grad_output(false);
        let plain = Inputs {
            grad_output: None,
            ..*inputs
        };
        let reference = cpu::reference(&none, &plain).unwrap();
        let rows = out.row_losses.as_ref().unwrap();
        assert_close(
            &format!("{what} row losses"),
            rows,
            reference.per_element.as_ref().unwrap(),
            ROW,
        );
    }
    if desc.argmax {
        let want = argmax(&logits, desc.classes);
        assert_eq!(out.argmax.as_ref().unwrap(), &want, "{what} argmax");
        if let wgpu_loss::plan::Target::Classes(t) = inputs.target {
            let correct = want
                .iter()
                .zip(t)
                .filter(|&(&a, &y)| y != desc.ignore_index && a as i64 == y)
                .count();
            assert_eq!(out.correct, Some(correct as u32), "{what} correct");
        } else {
            assert_eq!(out.correct, None, "{what}: no count without class targets");
        }
    }
}

/// Runs `desc` and checks the loss, the gradient and the side outputs.
#[track_caller]
fn check(ctx: &Context, what: &str, desc: &CrossEntropyDesc, inputs: &Inputs<'_>) {
    let out = ctx
        .loss(desc, inputs)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let reference = cpu::reference(desc, inputs).unwrap();
    if desc.outputs.loss {
        let loss = match out.value {
            Some(v) => vec![v],
            None => out.per_element.clone().unwrap(),
        };
        assert_loss(what, &loss, &reference, ROW, VALUE);
    }
    if desc.outputs.grad {
        let g = out.grad.as_ref().unwrap();
        assert_close(
            &format!("{what} grad"),
            g,
            &reference.grad,
            grad_tol(&reference.grad),
        );
    }
    check_sides(what, desc, inputs, &out);
}

/// Shapes that take every layout: one workgroup, fused blocks of 4 and 2 rows, rows chunked
/// over workgroups (with the gradient, and forward only, which reads them in lane-group
/// chunks), odd rows too long for a 4-row block.
const SHAPES: [(usize, usize); 7] = [
    (1, 1),
    (5, 3),
    (33, 10),
    (300, 6),
    (7, 1003),
    (6, 9001),
    (3, 40_000),
];

fast_and_extended!(
    class_targets_with_every_side_output,
    class_targets_with_every_side_output_extended,
    |extended| {
        let shapes: Vec<_> = cases(&SHAPES, &[2], extended);
        let shapes: Vec<_> = shapes.into_iter().map(|(_, s)| s).collect();
        every_side_output(ctx(), &shapes, 31 + extended as u64);
    }
);

/// Rows longer than a workgroup holds, read once with the gradient (the sweep, a tuning of
/// GPUs): 2 rows of an odd length (a partial block, the scalar variant), with class weights.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn swept_rows_with_every_side_output() {
    every_side_output(&swept(None), &[(2, 50_001)], 32);
}

/// Every side output with class targets, reduced and per row, with an upstream gradient, and
/// forward only, on `shapes`.
fn every_side_output(ctx: &Context, shapes: &[(usize, usize)], seed: u64) {
    let mut rng = Rng::new(seed);
    for (i, &(n, c)) in shapes.iter().enumerate() {
        let logits = hard_logits(&mut rng, n, c);
        let mut targets = rng.classes(n, c);
        if n > 4 {
            targets[4] = -100;
        }
        let weight = rng.vec(c, 0.5, 2.0);
        let upstream = [rng.uniform(0.25, 3.0)];
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let mut desc = CrossEntropyDesc::new(n, c)
                .reduction(reduction)
                .lse(true)
                .row_losses(true)
                .argmax(true)
                .grad_output(true)
                .label_smoothing(if i % 2 == 1 { 0.1 } else { 0.0 });
            let mut inputs = Inputs::classes(&logits, &targets).grad_output(&upstream);
            if i % 3 == 0 {
                desc = desc.weight(c);
                inputs = inputs.weight(&weight);
            }
            check(ctx, &format!("[{n}, {c}] {reduction}"), &desc, &inputs);
        }
        // One upstream gradient a row with reduction none.
        let upstream: Vec<f32> = rng.vec(n, -2.0, 2.0);
        let desc = CrossEntropyDesc::new(n, c)
            .reduction(Reduction::None)
            .lse(true)
            .argmax(true)
            .grad_output(true);
        let inputs = Inputs::classes(&logits, &targets).grad_output(&upstream);
        check(ctx, &format!("[{n}, {c}] none"), &desc, &inputs);
        // Forward only: the long rows' lane-group chunks.
        let desc = CrossEntropyDesc::new(n, c)
            .outputs(Outputs::LOSS)
            .lse(true)
            .row_losses(true)
            .argmax(true);
        check(
            ctx,
            &format!("[{n}, {c}] forward"),
            &desc,
            &Inputs::classes(&logits, &targets),
        );
    }
}

fast_and_extended!(
    probability_targets_and_half_precision,
    probability_targets_and_half_precision_extended,
    |extended| {
        let ctx = ctx();
        let mut rng = Rng::new(32 + extended as u64);
        for (_, (n, c)) in cases(&[(5, 3), (7, 1003), (3, 40_000)], &[1], extended) {
            let logits = hard_logits(&mut rng, n, c);
            let probs = rng.distributions(n, c);
            let upstream: Vec<f32> = rng.vec(n, 0.5, 1.5);
            let desc = CrossEntropyDesc::new(n, c)
                .targets(Targets::Probabilities)
                .reduction(Reduction::None)
                .lse(true)
                .argmax(true)
                .grad_output(true);
            let inputs = Inputs::new(&logits, &probs).grad_output(&upstream);
            check(ctx, &format!("soft [{n}, {c}]"), &desc, &inputs);
            // bf16 logits: the side outputs of the widened values.
            let half: Vec<wgpu_loss::bf16> = logits
                .iter()
                .map(|&x| wgpu_loss::bf16::from_f32(x))
                .collect();
            let targets = rng.classes(n, c);
            let desc = CrossEntropyDesc::new(n, c)
                .dtype(wgpu_loss::DType::BF16)
                .grad_dtype(wgpu_loss::DType::F32)
                .lse(true)
                .row_losses(true)
                .argmax(true);
            check(
                ctx,
                &format!("bf16 [{n}, {c}]"),
                &desc,
                &Inputs::classes(&half, &targets),
            );
        }
    }
);

fast_and_extended!(without_subgroups, without_subgroups_extended, |extended| {
    // The workgroup-memory merge has its own argmax (a min-index tree).
    let ctx = Context::with_options(ContextOptions::default().subgroups(false)).unwrap();
    let mut rng = Rng::new(33 + extended as u64);
    for (_, (n, c)) in cases(&[(33, 10), (7, 1003), (3, 40_000)], &[1], extended) {
        let logits = hard_logits(&mut rng, n, c);
        let targets = rng.classes(n, c);
        let desc = CrossEntropyDesc::new(n, c)
            .lse(true)
            .argmax(true)
            .row_losses(true);
        check(
            &ctx,
            &format!("no subgroups [{n}, {c}]"),
            &desc,
            &Inputs::classes(&logits, &targets),
        );
    }
});

#[test]
fn recorded_into_the_callers_buffers() {
    // Side outputs are copied out of the pass's scratch: the caller's ranges need COPY_DST
    // (COPY_SRC for the upstream gradient) and 4-byte offsets, and may sit in one arena.
    let ctx = ctx();
    let mut rng = Rng::new(34);
    let (n, c) = (37, 129);
    let logits = rng.vec(n * c, -5.0, 5.0);
    let targets = rng.classes(n, c);
    let desc = CrossEntropyDesc::new(n, c)
        .lse(true)
        .row_losses(true)
        .argmax(true)
        .grad_output(true);
    let plan = Plan::new(ctx, &desc).unwrap();
    let plain = Plan::new(ctx, &CrossEntropyDesc::new(n, c)).unwrap();
    assert_eq!(
        plan.dispatch_count(),
        plain.dispatch_count(),
        "no pass of their own"
    );
    let x = upload(ctx, &logits);
    let y = upload(ctx, &targets.iter().map(|&t| t as i32).collect::<Vec<_>>());
    let loss = poisoned(ctx, 1);
    let grad = poisoned(ctx, n * c);
    let upstream = upload(ctx, &[0.5f32]);
    // lse at 0, row losses at 64 words, argmax at 128 words, the count at 192 words.
    let arena = poisoned(ctx, 256);
    let range = |at: u64, words: u64| wgpu::BufferBinding {
        buffer: &arena,
        offset: 4 * at,
        size: std::num::NonZeroU64::new(4 * words),
    };
    let buffers = CrossEntropyBuffers::new(&*x, &*y)
        .loss(&*loss)
        .grad(&*grad)
        .grad_output(&*upstream)
        .lse(range(0, n as u64))
        .row_loss(range(64, n as u64))
        .argmax(range(128, n as u64))
        .correct(range(192, 1));
    plan.run_buffers(&buffers).unwrap();
    let words: Vec<u32> = read(ctx, &arena, 256).iter().map(|v| v.to_bits()).collect();
    let as_f32 = |w: &[u32]| w.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>();
    let inputs = Inputs::classes(&logits, &targets).grad_output(&[0.5]);
    let out = LossOutput {
        value: Some(read(ctx, &loss, 1)[0]),
        grad: Some(read(ctx, &grad, n * c)),
        lse: Some(as_f32(&words[..n])),
        row_losses: Some(as_f32(&words[64..64 + n])),
        argmax: Some(words[128..128 + n].to_vec()),
        correct: Some(words[192]),
        ..Default::default()
    };
    check_sides("recorded", &desc, &inputs, &out);
    let reference = cpu::reference(&desc, &inputs).unwrap();
    assert_close(
        "recorded grad",
        out.grad.as_ref().unwrap(),
        &reference.grad,
        grad_tol(&reference.grad),
    );
    assert_eq!(words[n], POISON, "nothing past the lse range");
    assert_eq!(words[193], POISON, "nothing past the count");
    // A side range without COPY_DST, or at an offset that is not whole words, is refused.
    let storage_only = {
        let _guard = ctx.lock();
        Buf::new(
            ctx,
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 4 * n as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
        )
    };
    let bad = buffers.clone().lse(&*storage_only);
    assert!(matches!(
        plan.bind(&bad).unwrap_err(),
        Error::MissingUsage { binding: "lse", .. }
    ));
    let odd = wgpu::BufferBinding {
        buffer: &arena,
        offset: 2,
        size: None,
    };
    let bad = buffers.clone().lse(odd);
    assert!(matches!(
        plan.bind(&bad).unwrap_err(),
        Error::Misaligned { binding: "lse", .. }
    ));
    // Not asked for, not taken.
    let bad = CrossEntropyBuffers::new(&*x, &*y)
        .loss(&*loss)
        .grad(&*grad)
        .lse(&*arena);
    assert!(matches!(
        plain.bind(&bad).unwrap_err(),
        Error::Binding("lse", _)
    ));
}

#[test]
fn bad_side_options_are_errors() {
    let ctx = ctx();
    let desc = CrossEntropyDesc::new(2, 3)
        .reduction(Reduction::None)
        .row_losses(true);
    assert!(matches!(
        Plan::new(ctx, &desc).unwrap_err(),
        Error::InvalidOption {
            option: "row_losses",
            ..
        }
    ));
    let desc = CrossEntropyDesc::new(2, 3)
        .outputs(Outputs::LOSS)
        .grad_output(true);
    assert!(matches!(
        Plan::new(ctx, &desc).unwrap_err(),
        Error::InvalidOption {
            option: "grad_output",
            ..
        }
    ));
    // The upstream gradient's length: one value for a reduced loss, one a row for none.
    let logits = [0.5f32; 6];
    let desc = CrossEntropyDesc::new(2, 3).grad_output(true);
    let err = ctx
        .loss(
            &desc,
            &Inputs::classes(&logits, &[0, 1]).grad_output(&[1.0, 2.0]),
        )
        .unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
    let err = ctx
        .loss(&desc, &Inputs::classes(&logits, &[0, 1]))
        .unwrap_err();
    assert!(matches!(err, Error::Binding("grad_output", _)), "{err}");
}
