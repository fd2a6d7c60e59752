//! Weighted sums of losses: against the weighted sum of their terms' f64 twins (the mix's own
//! twin, src/cpu/mix.rs) and against each term run alone; terms of different families and
//! reductions, two gradient outputs, windows beyond one binding bit for bit, the recording
//! level over poisoned outputs (twice, the same bits), and the errors of bad mixes and buffers.

use crate::common::*;
use wgpu_loss::{
    Context, CrossEntropyDesc, DType, Error, Inputs, MixDesc, NllDesc, Outputs, Plan,
    PointwiseDesc, Reduction, context::ContextOptions, cpu, mix::MixBuffers, pointwise::Pointwise,
    pointwise::PointwiseBuffers,
};

const VALUE: Tol = Tol::new(2e-5, 1e-6);

fn grad_tol(reference: &[f64]) -> Tol {
    Tol::new(2e-5, 2e-6 * largest(reference))
}

fn pointwise(loss: Pointwise, n: usize, reduction: Reduction) -> PointwiseDesc {
    PointwiseDesc::new(loss, n).reduction(reduction)
}

#[test]
fn l1_and_mse_over_one_prediction_in_every_reduction() {
    let ctx = ctx();
    let mut rng = Rng::new(120);
    // Not a multiple of a workgroup's 1024 elements.
    let n = 10_003;
    let (pred, target) = (rng.vec(n, -3.0, 3.0), rng.vec(n, -3.0, 3.0));
    let inputs = Inputs::new(&pred[..], &target[..]);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let mix = MixDesc::new()
            .term(0.8, pointwise(Pointwise::L1, n, reduction))
            .term(0.2, pointwise(Pointwise::Mse, n, reduction));
        let out = ctx.mix(&mix, &[inputs, inputs]).unwrap();
        let twin = cpu::mix::reference(&mix, &[inputs, inputs]).unwrap();
        let what = format!("l1 + mse, {reduction:?}");
        match reduction {
            Reduction::None => assert_close(
                &what,
                out.per_element.as_ref().unwrap(),
                twin.per_element.as_ref().unwrap(),
                Tol::new(1e-6, 1e-6),
            ),
            _ => assert_scalar(&what, out.value.unwrap(), twin.value.unwrap(), VALUE),
        }
        let grad = out.grads[0].as_ref().unwrap();
        assert_close(
            &format!("{what} grad"),
            grad,
            &twin.grads[0],
            grad_tol(&twin.grads[0]),
        );
        // The twin of the mix is the weighted sum of the terms' own twins, and the GPU's sum is
        // the weighted sum of the terms run alone.
        let l1 = ctx
            .loss(&pointwise(Pointwise::L1, n, reduction), &inputs)
            .unwrap();
        let mse = ctx
            .loss(&pointwise(Pointwise::Mse, n, reduction), &inputs)
            .unwrap();
        if let (Some(a), Some(b)) = (l1.value, mse.value) {
            let alone = 0.8 * a as f64 + 0.2 * b as f64;
            assert_scalar(&format!("{what} alone"), out.value.unwrap(), alone, VALUE);
        }
        let alone: Vec<f64> = (l1.grad.unwrap().iter())
            .zip(mse.grad.as_ref().unwrap())
            .map(|(&a, &b)| 0.8 * a as f64 + 0.2 * b as f64)
            .collect();
        assert_close(
            &format!("{what} grad alone"),
            grad,
            &alone,
            Tol::new(1e-6, 1e-9),
        );
    }
}

/// Cross-entropy of logits and an MSE on the same logits (a negative weight) add into one
/// gradient; a Huber loss on another prediction into a second; NLL on log-probabilities into a
/// third; the four losses into one sum.
#[test]
fn terms_of_different_families_and_gradient_outputs() {
    let ctx = ctx();
    let mut rng = Rng::new(121);
    let (rows, classes) = (37, 29);
    let logits = rng.vec(rows * classes, -6.0, 6.0);
    let classes_t = rng.classes(rows, classes);
    let soft = rng.vec(rows * classes, -1.0, 1.0);
    let m = 1_501;
    let (pred, target) = (rng.vec(m, -4.0, 4.0), rng.vec(m, -4.0, 4.0));
    let log_probs: Vec<f32> = rng.vec(rows * classes, -5.0, -0.01);
    for reduction in [Reduction::Mean, Reduction::Sum] {
        let mix = MixDesc::new()
            .term(
                1.0,
                CrossEntropyDesc::new(rows, classes).reduction(reduction),
            )
            .term_into(
                0.5,
                pointwise(Pointwise::Huber { delta: 0.7 }, m, reduction),
                1,
            )
            .term(-0.25, pointwise(Pointwise::Mse, rows * classes, reduction))
            .term_into(3.0, NllDesc::new(rows, classes).reduction(reduction), 2);
        let inputs = [
            Inputs::classes(&logits[..], &classes_t),
            Inputs::new(&pred[..], &target[..]),
            Inputs::new(&logits[..], &soft[..]),
            Inputs::classes(&log_probs[..], &classes_t),
        ];
        let out = ctx.mix(&mix, &inputs).unwrap();
        let twin = cpu::mix::reference(&mix, &inputs).unwrap();
        let what = format!("four families, {reduction:?}");
        assert_scalar(&what, out.value.unwrap(), twin.value.unwrap(), VALUE);
        assert_eq!(out.grads.len(), 3);
        for (g, (gpu, cpu)) in out.grads.iter().zip(&twin.grads).enumerate() {
            let gpu = gpu.as_ref().unwrap();
            assert_close(&format!("{what} grad {g}"), gpu, cpu, grad_tol(cpu));
        }
    }
}

/// The recording level: the caller's buffers, outputs poisoned, recorded twice into one
/// encoder (the second overwrites the first: each output's first term writes it), then again in
/// another submission: the same bits.
#[test]
fn recorded_into_the_callers_encoder_over_poisoned_outputs() {
    let ctx = ctx();
    let mut rng = Rng::new(122);
    let n = 4_099;
    let (pred, target) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
    let desc = MixDesc::new()
        .term(
            0.3,
            pointwise(Pointwise::SmoothL1 { beta: 0.5 }, n, Reduction::Mean),
        )
        .term(0.7, pointwise(Pointwise::Mse, n, Reduction::Mean));
    let mix = Plan::new(ctx, &desc).unwrap();
    assert_eq!(mix.output_elements(), (1, &[n as u64][..]));
    let (p, t) = (upload(ctx, &pred), upload(ctx, &target));
    let (loss, grad) = (poisoned(ctx, 1), poisoned(ctx, n));
    let buffers = MixBuffers::new(vec![
        PointwiseBuffers::new(&*p, &*t),
        PointwiseBuffers::new(&*p, &*t),
    ])
    .loss(&*loss)
    .grad(&*grad);
    let bindings = mix.bind(&buffers).unwrap();
    submit(ctx, |e| {
        mix.record(e, &bindings).unwrap();
        mix.record(e, &bindings).unwrap();
    });
    let (first_loss, first_grad) = (read(ctx, &loss, 1), read(ctx, &grad, n));
    let inputs = Inputs::new(&pred[..], &target[..]);
    let twin = cpu::mix::reference(&desc, &[inputs, inputs]).unwrap();
    assert_scalar("recorded", first_loss[0], twin.value.unwrap(), VALUE);
    assert_close(
        "recorded grad",
        &first_grad,
        &twin.grads[0],
        grad_tol(&twin.grads[0]),
    );
    poison(ctx, &loss);
    poison(ctx, &grad);
    mix.run(&bindings).unwrap();
    assert_eq!(read(ctx, &loss, 1)[0].to_bits(), first_loss[0].to_bits());
    let again = read(ctx, &grad, n);
    assert!(
        again
            .iter()
            .zip(&first_grad)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    // The inputs are untouched.
    assert_eq!(read(ctx, &p, n), pred);
    assert_eq!(read(ctx, &t, n), target);
    // The convenience level gives the same bits.
    let host = ctx.mix(&desc, &[inputs, inputs]).unwrap();
    assert_eq!(host.value.unwrap().to_bits(), first_loss[0].to_bits());
    assert!(
        host.grads[0]
            .as_ref()
            .unwrap()
            .iter()
            .zip(&first_grad)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

/// Outputs larger than a binding go through windows: on a device whose binding limit is 1 MiB,
/// the same bits as on one that binds everything.
#[test]
fn beyond_one_binding_the_same_bits() {
    let whole = ctx();
    let windowed = Context::with_options(ContextOptions::default().max_binding(1 << 20)).unwrap();
    let mut rng = Rng::new(123);
    let n = 300_007; // 1.2 MB of f32
    let (pred, target) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
    let inputs = Inputs::new(&pred[..], &target[..]);
    for reduction in [Reduction::Mean, Reduction::None] {
        let desc = MixDesc::new()
            .term(0.6, pointwise(Pointwise::L1, n, reduction))
            .term(
                0.4,
                pointwise(Pointwise::Huber { delta: 1.0 }, n, reduction),
            );
        let a = whole.mix(&desc, &[inputs, inputs]).unwrap();
        let b = windowed.mix(&desc, &[inputs, inputs]).unwrap();
        assert_eq!(a.value.map(f32::to_bits), b.value.map(f32::to_bits));
        let bits = |v: &Option<Vec<f32>>| {
            v.as_ref()
                .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(
            bits(&a.per_element),
            bits(&b.per_element),
            "{reduction:?} losses"
        );
        assert_eq!(bits(&a.grads[0]), bits(&b.grads[0]), "{reduction:?} grad");
        let twin = cpu::mix::reference(&desc, &[inputs, inputs]).unwrap();
        assert_close(
            "windowed grad",
            b.grads[0].as_ref().unwrap(),
            &twin.grads[0],
            grad_tol(&twin.grads[0]),
        );
    }
}

/// A mix of gradients alone writes no loss; of losses alone, no gradient.
#[test]
fn loss_alone_and_gradient_alone() {
    let ctx = ctx();
    let mut rng = Rng::new(124);
    let n = 777;
    let (pred, target) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
    let inputs = Inputs::new(&pred[..], &target[..]);
    for outputs in [Outputs::LOSS, Outputs::GRAD] {
        let desc = MixDesc::new()
            .term(
                2.0,
                pointwise(Pointwise::L1, n, Reduction::Sum).outputs(outputs),
            )
            .term(
                0.5,
                pointwise(Pointwise::Mse, n, Reduction::Sum).outputs(outputs),
            );
        let out = ctx.mix(&desc, &[inputs, inputs]).unwrap();
        let twin = cpu::mix::reference(&desc, &[inputs, inputs]).unwrap();
        assert_eq!(out.value.is_some(), outputs.loss);
        assert_eq!(out.grads[0].is_some(), outputs.grad);
        if let Some(v) = out.value {
            assert_scalar("loss alone", v, twin.value.unwrap(), VALUE);
        }
        if let Some(g) = &out.grads[0] {
            assert_close("grad alone", g, &twin.grads[0], grad_tol(&twin.grads[0]));
        }
    }
}

#[test]
fn bad_mixes_and_buffers_are_typed_errors() {
    let ctx = ctx();
    let n = 64;
    let (pred, target) = (vec![0.5f32; n], vec![0.25f32; n]);
    let inputs = Inputs::new(&pred[..], &target[..]);
    let l1 = pointwise(Pointwise::L1, n, Reduction::Mean);
    let option = |r: Result<Plan<MixDesc>, Error>, name: &str| match r {
        Err(Error::InvalidOption { option, .. }) => assert_eq!(option, name),
        other => panic!("{name}: {other:?}"),
    };
    assert!(matches!(
        Plan::new(ctx, &MixDesc::new()),
        Err(Error::Empty(_))
    ));
    option(
        Plan::new(ctx, &MixDesc::new().term(f32::NAN, l1.clone())),
        "weight",
    );
    option(
        Plan::new(ctx, &MixDesc::new().term_into(1.0, l1.clone(), 1)),
        "grad",
    );
    // Gradients of different lengths into one output; losses of different shapes.
    let short = pointwise(Pointwise::Mse, n - 1, Reduction::Mean);
    option(
        Plan::new(ctx, &MixDesc::new().term(1.0, l1.clone()).term(1.0, short)),
        "grad",
    );
    let none = pointwise(Pointwise::Mse, n, Reduction::None);
    option(
        Plan::new(ctx, &MixDesc::new().term(1.0, l1.clone()).term(1.0, none)),
        "reduction",
    );
    let half = pointwise(Pointwise::Mse, n, Reduction::Mean).dtype(DType::F16);
    option(
        Plan::new(ctx, &MixDesc::new().term(1.0, half)),
        "grad_dtype",
    );
    let in_place = CrossEntropyDesc::new(8, 8).in_place(true);
    option(
        Plan::new(ctx, &MixDesc::new().term(1.0, in_place)),
        "in_place",
    );
    // One Inputs a term.
    let desc = MixDesc::new().term(1.0, l1.clone()).term(1.0, l1.clone());
    assert!(matches!(
        ctx.mix(&desc, &[inputs]),
        Err(Error::LengthMismatch { .. })
    ));
    // Buffers: a term's own loss, a missing output, an output over an input.
    let mix = Plan::new(ctx, &desc).unwrap();
    let (p, t) = (upload(ctx, &pred), upload(ctx, &target));
    let (loss, grad) = (poisoned(ctx, 1), poisoned(ctx, n));
    let terms = || {
        vec![
            PointwiseBuffers::new(&*p, &*t),
            PointwiseBuffers::new(&*p, &*t),
        ]
    };
    let own = MixBuffers::new(vec![
        PointwiseBuffers::new(&*p, &*t).loss(&*loss),
        PointwiseBuffers::new(&*p, &*t),
    ])
    .loss(&*loss)
    .grad(&*grad);
    assert!(matches!(mix.bind(&own), Err(Error::Binding("loss", _))));
    let missing = MixBuffers::new(terms()).loss(&*loss);
    assert!(matches!(mix.bind(&missing), Err(Error::Binding("grad", _))));
    let over_input = MixBuffers::new(terms()).loss(&*loss).grad(&*p);
    assert!(matches!(mix.bind(&over_input), Err(Error::Aliased { .. })));
    let small = poisoned(ctx, n - 1);
    let too_small = MixBuffers::new(terms()).loss(&*loss).grad(&*small);
    assert!(matches!(
        mix.bind(&too_small),
        Err(Error::BufferTooSmall { .. })
    ));
    // Invalid inputs: checked on the host at the convenience level, counted by a term's
    // kernel at the recording level (an error of the run).
    let bce = pointwise(Pointwise::Bce, n, Reduction::Mean);
    let probs = vec![1.5f32; n];
    let bad = Inputs::new(&probs[..], &target[..]);
    let desc = MixDesc::new().term(1.0, l1).term(1.0, bce);
    let e = ctx.mix(&desc, &[inputs, bad]).unwrap_err();
    assert!(matches!(e, Error::ValueOutOfRange { .. }), "{e:?}");
    let mix = Plan::new(ctx, &desc).unwrap();
    let q = upload(ctx, &probs);
    let buffers = MixBuffers::new(vec![
        PointwiseBuffers::new(&*p, &*t),
        PointwiseBuffers::new(&*q, &*t),
    ])
    .loss(&*loss)
    .grad(&*grad);
    let e = mix.run(&mix.bind(&buffers).unwrap()).unwrap_err();
    assert!(
        matches!(e, Error::InvalidOnGpu { count, .. } if count as usize == n),
        "{e:?}"
    );
}
