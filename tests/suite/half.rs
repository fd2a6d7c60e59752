//! Half precision: every loss with f16 and bf16 inputs (and real-valued targets), gradients in
//! the input's dtype or f32, against the f64 twin of the upcast inputs.
//!
//! Tolerances: the kernels widen 16-bit inputs exactly and compute in f32, so the loss is held
//! to the f32 tests' tolerances. A 16-bit gradient is the f32 one rounded to nearest: within
//! the f32 tolerance plus half an ulp of the dtype (`eps / 2` relative; plus half the smallest
//! f16 subnormal, 2^-25, absolute).

use crate::common::*;
use wgpu_loss::{
    ClassicCrossEntropyDesc, Context, CrossEntropyDesc, DType, Error, Inputs, LossOutput, NllDesc,
    Plan, PointwiseDesc, Reduction, bf16, context::ContextOptions, cross_entropy::Targets, f16,
    plan::TensorLoss, pointwise::Pointwise,
};

const ROW: Tol = Tol::new(1e-5, 1e-5);
const VALUE: Tol = Tol::new(2e-5, 1e-5);
const HALVES: [DType; 2] = [DType::F16, DType::BF16];

/// The tolerance of a gradient written in `dtype`, around the f32 one.
fn grad_tol(reference: &[f64], dtype: DType) -> Tol {
    let half_ulp = if dtype == DType::F32 {
        0.0
    } else {
        dtype.epsilon() / 2.0
    };
    Tol::new(2e-5 + half_ulp, 1e-6 * largest(reference) + 2f64.powi(-25))
}

/// Runs `desc` on `inputs` and checks it against the twin; returns the output.
#[track_caller]
fn check<D: TensorLoss>(
    ctx: &Context,
    what: &str,
    desc: &D,
    inputs: &Inputs<'_>,
    grad_dtype: DType,
) -> LossOutput {
    let out = ctx
        .loss(desc, inputs)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let reference = wgpu_loss::cpu::reference(desc, inputs).unwrap();
    let loss = match out.value {
        Some(v) => vec![v],
        None => out.per_element.clone().unwrap_or_default(),
    };
    let grad = out.grad.clone().expect("the gradient");
    let tols = (ROW, VALUE, grad_tol(&reference.grad, grad_dtype));
    assert_loss_and_grad(what, (&loss, &grad), &reference, tols);
    // The errors the closing notes quote (`--nocapture`).
    let want_loss = reference
        .per_element
        .clone()
        .unwrap_or_else(|| reference.value.into_iter().collect());
    eprintln!(
        "worst relative error {what}: loss {:.2e} grad {:.2e}",
        worst_relative(&loss, &want_loss),
        worst_relative(&grad, &reference.grad)
    );
    // A 16-bit gradient holds values of its dtype only.
    for (i, &g) in grad.iter().enumerate() {
        assert!(
            g.is_nan() || grad_dtype.round(g) == g,
            "{what}: grad[{i}] = {g} is not a {grad_dtype} value"
        );
    }
    out
}

/// Shapes (N, C) that are not multiples of any tile: one row of one class; short rows; rows
/// a fused block holds; rows of an odd length too long for a 4-row block (which would be read
/// unaligned in f32); rows chunked over workgroups.
const SHAPES: [(usize, usize); 6] = [(1, 1), (5, 3), (33, 10), (7, 1003), (6, 9001), (3, 40000)];

// One shape of `SHAPES` in the fast suite (class weights, softcap and an f32 gradient beside
// the dtype's own), the rest in the extended suite.
fast_and_extended!(
    cross_entropy_in_every_dtype,
    cross_entropy_in_every_dtype_extended,
    |extended| {
        let shapes: Vec<_> = cases(&SHAPES, &[2], extended);
        let shapes: Vec<_> = shapes.into_iter().map(|(_, s)| s).collect();
        every_dtype(ctx(), &shapes, 16 + extended as u64);
    }
);

/// Rows longer than a workgroup holds, read once with the gradient (the sweep), in f16 and
/// bf16: an odd C (2 rows in a partial block of 4, the scalar variant), with class weights,
/// softcap, and an f32 gradient too.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn swept_rows_in_every_dtype() {
    every_dtype(&swept(None), &[(2, 40_001)], 17);
}

/// Cross-entropy from class and probability targets in f16 and bf16, with the options cycling
/// over `shapes`.
fn every_dtype(ctx: &Context, shapes: &[(usize, usize)], seed: u64) {
    let mut rng = Rng::new(seed);
    for (i, &(n, c)) in shapes.iter().enumerate() {
        let logits = rng.vec(n * c, -8.0, 8.0);
        let targets = rng.classes(n, c);
        let probs = rng.distributions(n, c);
        let weight = rng.vec(c, 0.5, 2.0);
        for dtype in HALVES {
            let x = Data::new(&logits, dtype);
            // An f32 gradient on every other shape (each variant compiles its own pipelines).
            let grad_dtypes: &[DType] = if i % 2 == 0 {
                &[dtype, DType::F32]
            } else {
                &[dtype]
            };
            for &grad_dtype in grad_dtypes {
                // Options cycle with the shape: every one meets both dtypes.
                let reduction = [Reduction::Mean, Reduction::None, Reduction::Sum][i % 3];
                let mut desc = CrossEntropyDesc::new(n, c)
                    .dtype(dtype)
                    .grad_dtype(grad_dtype)
                    .reduction(reduction)
                    .label_smoothing(if i % 2 == 1 { 0.1 } else { 0.0 })
                    .z_loss(if i % 3 == 2 { 1e-3 } else { 0.0 });
                let mut inputs = Inputs::classes(x.values(), &targets);
                if i % 2 == 0 {
                    desc = desc.weight(c);
                    inputs = inputs.weight(&weight);
                }
                let what = format!("ce {dtype}->{grad_dtype} [{n}, {c}] {reduction}");
                check(ctx, &what, &desc, &inputs, grad_dtype);

                let t = Data::new(&probs, dtype);
                let mut desc = CrossEntropyDesc::new(n, c)
                    .targets(Targets::Probabilities)
                    .dtype(dtype)
                    .grad_dtype(grad_dtype)
                    .reduction(reduction);
                if i % 2 == 0 {
                    desc = desc.softcap(5.0);
                }
                let inputs = Inputs::new(x.values(), t.values());
                let what = format!("ce soft {dtype}->{grad_dtype} [{n}, {c}] {reduction}");
                check(ctx, &what, &desc, &inputs, grad_dtype);
            }
        }
    }
}

// One shape in the fast suite, two more in the extended one.
fast_and_extended!(
    cross_entropy_in_place_in_half_precision,
    cross_entropy_in_place_in_half_precision_extended,
    |extended| {
        let ctx = ctx();
        let mut rng = Rng::new(17 + extended as u64);
        for (_, (n, c)) in cases(&[(33, 10), (7, 1003), (6, 9001)], &[0], extended) {
            let logits = rng.vec(n * c, -6.0, 6.0);
            let targets = rng.classes(n, c);
            for dtype in HALVES {
                let x = Data::new(&logits, dtype);
                let desc = CrossEntropyDesc::new(n, c).dtype(dtype).in_place(true);
                let inputs = Inputs::classes(x.values(), &targets);
                let what = format!("ce in place {dtype} [{n}, {c}]");
                let out = check(ctx, &what, &desc, &inputs, dtype);
                // The same bits as the out-of-place plan.
                let apart = ctx.loss(&desc.clone().in_place(false), &inputs).unwrap();
                assert_eq!(
                    bits(&out.grad.unwrap()),
                    bits(&apart.grad.unwrap()),
                    "{what}"
                );
            }
        }
        // In place, the gradient takes the logits' dtype.
        let desc = CrossEntropyDesc::new(2, 3)
            .dtype(DType::F16)
            .grad_dtype(DType::F32)
            .in_place(true);
        let err = Plan::new(ctx, &desc).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    option: "grad_dtype",
                    ..
                }
            ),
            "{err}"
        );
    }
);

// Every loss in both dtypes; the fast suite at one length a loss (several workgroups with a
// tail that is not a whole vec4), the extended suite at one workgroup and at many.
fast_and_extended!(
    nll_and_pointwise_in_every_dtype,
    nll_and_pointwise_in_every_dtype_extended,
    |extended| {
        let ctx = ctx();
        let mut rng = Rng::new(18 + extended as u64);
        for dtype in HALVES {
            for grad_dtype in [dtype, DType::F32] {
                for &(n, c) in &[(1, 1), (7, 1003), (40, 9)] {
                    let log_probs = rng.vec(n * c, -9.0, 0.0);
                    let targets = rng.classes(n, c);
                    let x = Data::new(&log_probs, dtype);
                    let desc = NllDesc::new(n, c).dtype(dtype).grad_dtype(grad_dtype);
                    let inputs = Inputs::classes(x.values(), &targets);
                    let what = format!("nll {dtype}->{grad_dtype} [{n}, {c}]");
                    check(ctx, &what, &desc, &inputs, grad_dtype);
                }
                let losses = [
                    Pointwise::Mse,
                    Pointwise::L1,
                    Pointwise::Huber { delta: 0.7 },
                    Pointwise::SmoothL1 { beta: 0.5 },
                    Pointwise::Bce,
                    Pointwise::BceWithLogits,
                    Pointwise::KlDiv { log_target: false },
                ];
                for (i, loss) in losses.into_iter().enumerate() {
                    // An f32 gradient for two of them (each variant compiles its own pipelines).
                    if grad_dtype == DType::F32 && i % 3 != 0 {
                        continue;
                    }
                    // One workgroup; several with a tail that is not a whole vec4; many.
                    for (_, len) in cases(&[1, 1001, 70_001], &[1], extended) {
                        let (pred, target) = match loss {
                            Pointwise::Bce => (rng.vec(len, 0.02, 0.98), rng.vec(len, 0.0, 1.0)),
                            Pointwise::KlDiv { .. } => {
                                (rng.vec(len, -5.0, 0.0), rng.vec(len, 0.0, 1.0))
                            }
                            _ => (rng.vec(len, -3.0, 3.0), rng.vec(len, -3.0, 3.0)),
                        };
                        let (p, t) = (Data::new(&pred, dtype), Data::new(&target, dtype));
                        let reduction = [Reduction::Mean, Reduction::None, Reduction::Sum][i % 3];
                        let desc = PointwiseDesc::new(loss, len)
                            .dtype(dtype)
                            .grad_dtype(grad_dtype)
                            .reduction(reduction);
                        let inputs = Inputs::new(p.values(), t.values());
                        let what = format!("{loss:?} {dtype}->{grad_dtype} {len} {reduction}");
                        check(ctx, &what, &desc, &inputs, grad_dtype);
                    }
                }
                // The classic form: per-row losses over rows of an odd length (the gradient then
                // has an element pass of its own), and a mean over even rows.
                for (n, c, reduction) in [(7, 1003, Reduction::None), (5, 8, Reduction::Mean)] {
                    let probs = rng.distributions(n, c);
                    let onehot = rng.distributions(n, c);
                    let (p, t) = (Data::new(&probs, dtype), Data::new(&onehot, dtype));
                    let desc = ClassicCrossEntropyDesc::new(n, c)
                        .dtype(dtype)
                        .grad_dtype(grad_dtype)
                        .reduction(reduction);
                    let inputs = Inputs::new(p.values(), t.values());
                    let what = format!("classic {dtype}->{grad_dtype} [{n}, {c}] {reduction}");
                    check(ctx, &what, &desc, &inputs, grad_dtype);
                }
            }
        }
    }
);

#[test]
fn half_precision_extremes() {
    let ctx = ctx();
    let mut rng = Rng::new(19);
    let (n, c) = (9, 517);
    let targets = rng.classes(n, c);
    // f16 logits up to its largest finite value, and -inf entries.
    let mut logits: Vec<f32> = (0..n * c)
        .map(|_| [65504.0, -65504.0, 60000.0, -1.0][rng.below(4)] * rng.uniform(0.9, 1.0))
        .collect();
    for r in 0..n {
        if targets[r] as usize != 3 {
            logits[r * c + 3] = f32::NEG_INFINITY;
        }
    }
    for grad_dtype in [DType::F16, DType::F32] {
        let x = Data::new(&logits, DType::F16);
        let desc = CrossEntropyDesc::new(n, c)
            .dtype(DType::F16)
            .grad_dtype(grad_dtype)
            .reduction(Reduction::None);
        let inputs = Inputs::classes(x.values(), &targets);
        check(ctx, "ce f16 near 65504", &desc, &inputs, grad_dtype);
    }
    // bf16 logits of +-1e4, and a row of +-3e38 whose target is its largest logit.
    let mut logits = rng.vec(n * c, -1e4, 1e4);
    let mut targets = targets.clone();
    for (j, l) in logits[..c].iter_mut().enumerate() {
        *l = if j % 3 == 0 { 3e38 } else { -3e38 };
    }
    targets[0] = 0;
    logits[c + 5] = f32::NEG_INFINITY;
    for grad_dtype in [DType::BF16, DType::F32] {
        let x = Data::new(&logits, DType::BF16);
        let desc = CrossEntropyDesc::new(n, c)
            .dtype(DType::BF16)
            .grad_dtype(grad_dtype)
            .reduction(Reduction::None);
        let inputs = Inputs::classes(x.values(), &targets);
        check(ctx, "ce bf16 +-1e4, +-3e38", &desc, &inputs, grad_dtype);
    }
    // f16 subnormals (down to 2^-24) in a pointwise loss, summed so that they matter.
    let tiny: Vec<f32> = (0..999).map(|i| (i % 37) as f32 * 2f32.powi(-24)).collect();
    let zero = vec![0.0f32; tiny.len()];
    let (p, t) = (Data::new(&tiny, DType::F16), Data::new(&zero, DType::F16));
    let desc = PointwiseDesc::new(Pointwise::L1, tiny.len())
        .dtype(DType::F16)
        .reduction(Reduction::Sum);
    let out = check(
        ctx,
        "l1 f16 subnormals",
        &desc,
        &Inputs::new(p.values(), t.values()),
        DType::F16,
    );
    let exact: f64 = tiny.iter().map(|&v| v as f64).sum();
    assert_eq!(
        out.value.unwrap() as f64,
        exact,
        "f16 subnormals read exactly"
    );
    // Gradients that overflow f16 become infinities, not arbitrary values.
    let big = [40000.0f32, -40000.0, 1.0];
    let zero = [0.0f32; 3];
    let (p, t) = (Data::new(&big, DType::F16), Data::new(&zero, DType::F16));
    let desc = PointwiseDesc::new(Pointwise::Mse, 3)
        .dtype(DType::F16)
        .reduction(Reduction::Sum);
    let out = ctx
        .loss(&desc, &Inputs::new(p.values(), t.values()))
        .unwrap();
    assert_eq!(
        out.grad.unwrap(),
        vec![f32::INFINITY, f32::NEG_INFINITY, 2.0]
    );
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn packed_f16_gives_the_native_bits() {
    // Through packed u32 pairs, held to the twin on every adapter; and through WGSL's f16 where
    // the adapter has SHADER_F16 (lavapipe has; llvmpipe's GL has not: there the native context
    // is packed too, and the comparison of bits has nothing to compare).
    let native = &Context::with_options(ContextOptions::default().native_f16(true)).unwrap();
    let packed = &Context::with_options(ContextOptions::default().native_f16(false)).unwrap();
    assert!(!packed.uses_native_f16());
    let has_f16 = native.features().contains(wgpu::Features::SHADER_F16);
    assert_eq!(native.uses_native_f16(), has_f16);
    if !has_f16 {
        eprintln!("no SHADER_F16 on this adapter: the packed path against the twin only");
    }
    let same_bits = |what: &str, a: &LossOutput, b: &LossOutput| {
        let loss = |o: &LossOutput| {
            let v: Vec<f32> = (o.value.into_iter())
                .chain(o.per_element.clone().unwrap_or_default())
                .collect();
            bits(&v)
        };
        assert_eq!(loss(a), loss(b), "{what}: loss");
        let grad = |o: &LossOutput| bits(o.grad.as_ref().unwrap());
        assert_eq!(grad(a), grad(b), "{what}: grad");
    };
    let mut rng = Rng::new(20);
    let (n, c) = (7, 1003);
    let logits = Data::new(&rng.vec(n * c, -8.0, 8.0), DType::F16);
    let targets = rng.classes(n, c);
    let desc = CrossEntropyDesc::new(n, c)
        .dtype(DType::F16)
        .reduction(Reduction::None);
    let inputs = Inputs::classes(logits.values(), &targets);
    let b = check(
        packed,
        "packed f16 cross-entropy",
        &desc,
        &inputs,
        DType::F16,
    );
    if has_f16 {
        let a = check(
            native,
            "native f16 cross-entropy",
            &desc,
            &inputs,
            DType::F16,
        );
        same_bits("cross-entropy", &a, &b);
    }
    let len = 4099;
    let (p, t) = (
        Data::new(&rng.vec(len, -3.0, 3.0), DType::F16),
        Data::new(&rng.vec(len, -3.0, 3.0), DType::F16),
    );
    let desc = PointwiseDesc::new(Pointwise::Mse, len).dtype(DType::F16);
    let inputs = Inputs::new(p.values(), t.values());
    let b = check(packed, "packed f16 mse", &desc, &inputs, DType::F16);
    if has_f16 {
        let a = check(native, "native f16 mse", &desc, &inputs, DType::F16);
        same_bits("mse", &a, &b);
    }
}

#[test]
fn recorded_with_the_callers_half_buffers() {
    // An odd count of bf16 elements: the buffers hold whole 4-byte words, and the pad half of
    // the gradient's last word is left as it was.
    let ctx = ctx();
    let mut rng = Rng::new(21);
    let (n, c) = (3, 7);
    let logits: Vec<bf16> = rng
        .vec(n * c, -4.0, 4.0)
        .iter()
        .map(|&v| bf16::from_f32(v))
        .collect();
    let targets = rng.classes(n, c);
    let desc = CrossEntropyDesc::new(n, c).dtype(DType::BF16);
    let plan = Plan::new(ctx, &desc).unwrap();
    let mut padded = logits.clone();
    padded.push(bf16::from_f32(1.0));
    let x = upload(ctx, &padded);
    let y = upload(ctx, &targets.iter().map(|&t| t as i32).collect::<Vec<_>>());
    let loss = poisoned(ctx, 1);
    let grad = poisoned(ctx, (n * c).div_ceil(2));
    let buffers = wgpu_loss::cross_entropy::CrossEntropyBuffers::new(&*x, &*y)
        .loss(&*loss)
        .grad(&*grad);
    plan.run_buffers(&buffers).unwrap();
    let words: Vec<u32> = read(ctx, &grad, (n * c).div_ceil(2))
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(
        words.last().unwrap() >> 16,
        POISON >> 16,
        "the pad is untouched"
    );
    let got: Vec<f32> = words
        .iter()
        .flat_map(|w| [w & 0xffff, w >> 16])
        .take(n * c)
        .map(|h| f32::from_bits(h << 16))
        .collect();
    let inputs = Inputs::classes(&logits, &targets);
    let reference = wgpu_loss::cpu::reference(&desc, &inputs).unwrap();
    assert_close(
        "bf16 grad (recorded)",
        &got,
        &reference.grad,
        grad_tol(&reference.grad, DType::BF16),
    );
    let value = read(ctx, &loss, 1)[0];
    assert_scalar(
        "bf16 loss (recorded)",
        value,
        reference.value.unwrap(),
        VALUE,
    );
    // The buffers' sizes are counted in the dtype.
    let short = upload(ctx, &logits[..n * c - 3]);
    let buffers = wgpu_loss::cross_entropy::CrossEntropyBuffers::new(&*short, &*y)
        .loss(&*loss)
        .grad(&*grad);
    let err = plan.bind(&buffers).unwrap_err();
    assert!(matches!(err, Error::BufferTooSmall { .. }), "{err}");
}

#[test]
fn dtype_mismatch_is_an_error() {
    let ctx = ctx();
    let logits = [0.5f32; 6];
    let desc = CrossEntropyDesc::new(2, 3).dtype(DType::BF16);
    let err = ctx
        .loss(&desc, &Inputs::classes(&logits, &[0, 1]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "dtype",
                ..
            }
        ),
        "{err}"
    );
    let half = [f16::from_f32(0.5); 6];
    let desc = PointwiseDesc::new(Pointwise::Mse, 6).dtype(DType::F16);
    let err = ctx.loss(&desc, &Inputs::new(&half, &logits)).unwrap_err();
    assert!(err.to_string().contains("target"), "{err}");
    assert!("bf17".parse::<DType>().is_err());
    assert_eq!("bfloat16".parse::<DType>().unwrap(), DType::BF16);
}

/// Every finite 16-bit value of `dtype`, the midpoints between neighbours (ties), and the f32
/// values either side of each midpoint, both signs; then infinities, NaN and zeros. For bf16,
/// only values whose half stays a normal f32 (the test halves them).
fn rounding_cases(dtype: DType) -> Vec<f32> {
    let (widen, last, first): (fn(u16) -> f32, u16, u16) = match dtype {
        DType::F16 => (|h| f16::from_bits(h).to_f32(), 0x7bff, 0),
        _ => (|h| bf16::from_bits(h).to_f32(), 0x7f7f, 0x0180),
    };
    let mut v = Vec::new();
    for h in first..last {
        let (lo, hi) = (widen(h), widen(h + 1));
        let mid = ((lo as f64 + hi as f64) / 2.0) as f32;
        let up = f32::from_bits(mid.to_bits() + 1);
        let down = f32::from_bits(mid.to_bits() - 1);
        v.extend([lo, mid, up, down]);
    }
    v.push(widen(last));
    // Past the largest finite value: up to the rounding boundary, and beyond.
    let top = widen(last) as f64;
    let ulp = top - widen(last - 1) as f64;
    v.extend([
        (top + ulp / 2.0) as f32,
        (top + ulp / 4.0) as f32,
        1e38,
        f32::MAX / 2.0,
    ]);
    let negated: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(negated);
    v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0]);
    v
}

#[test]
fn gradients_round_to_nearest_even() {
    // MSE's summed gradient of pred = v / 2 against 0 is exactly v in f32; written in f16 or
    // bf16 it must be the `half` crate's rounding of v (IEEE round to nearest even, overflow to
    // infinity), on the packed path and through WGSL's f16.
    let contexts = [
        Context::with_options(ContextOptions::default().native_f16(true)).unwrap(),
        Context::with_options(ContextOptions::default().native_f16(false)).unwrap(),
    ];
    for ctx in &contexts {
        for dtype in HALVES {
            let v = rounding_cases(dtype);
            let pred: Vec<f32> = v.iter().map(|x| x / 2.0).collect();
            let zero = vec![0.0f32; v.len()];
            let desc = PointwiseDesc::new(Pointwise::Mse, v.len())
                .reduction(Reduction::Sum)
                .grad_dtype(dtype);
            let out = ctx.loss(&desc, &Inputs::new(&pred, &zero)).unwrap();
            let grad = out.grad.unwrap();
            let path = if ctx.uses_native_f16() {
                "native"
            } else {
                "packed"
            };
            for (i, (&x, &g)) in v.iter().zip(&grad).enumerate() {
                let want = dtype.round(x);
                assert!(
                    want.to_bits() == g.to_bits() || (want.is_nan() && g.is_nan()),
                    "{dtype} ({path}) [{i}]: {x:e} ({:#010x}) became {g:e}, not {want:e}",
                    x.to_bits()
                );
            }
        }
    }
}

/// Image losses on f16 and bf16 buffers (f32 math), the gradient in the input's dtype or in f32,
/// against the twin on the same (rounded) values: an odd element count (C = 3: neighbouring
/// pixels and tiles share words of the gradient), a batch of two, a mask, both paddings.
#[test]
fn image_losses_in_every_dtype() {
    use wgpu_loss::ImageDesc;
    use wgpu_loss::image::{ImageInputs, ImageLoss, ImageMask, Padding};
    let ctx = ctx();
    let mut rng = Rng::new(23);
    let cases = [
        (
            ImageLoss::Photometric,
            Padding::Same,
            Reduction::Mean,
            1,
            true,
        ),
        (ImageLoss::Ssim, Padding::Valid, Reduction::None, 2, false),
        (ImageLoss::L1, Padding::Same, Reduction::Sum, 2, true),
        (ImageLoss::Psnr, Padding::Same, Reduction::Mean, 1, false),
    ];
    let (h, w, c) = (37, 23, 3);
    for dtype in [DType::F16, DType::BF16] {
        for grad_dtype in [dtype, DType::F32] {
            for (loss, padding, reduction, n, masked) in cases {
                let len = n * h * w * c;
                let x = Data::new(&rng.vec(len, 0.0, 1.0), dtype);
                let y = Data::new(&rng.vec(len, 0.0, 1.0), dtype);
                let mask = rng.vec(n * h * w, 0.0, 1.0);
                let mut desc = ImageDesc::new(loss, h, w, c)
                    .batch(n)
                    .padding(padding)
                    .reduction(reduction)
                    .dtype(dtype)
                    .grad_dtype(grad_dtype);
                let mut inputs = ImageInputs::new(x.values(), y.values());
                if masked {
                    desc = desc.mask(ImageMask::Buffer);
                    inputs = inputs.mask(&mask);
                }
                let what = format!(
                    "{loss:?} {padding:?} {reduction} [{n}, {h}, {w}, {c}] {dtype}, {grad_dtype} grad"
                );
                let out = ctx
                    .loss(&desc, &inputs)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let (xs, ys) = (x.values().to_f32(), y.values().to_f32());
                let r =
                    wgpu_loss::cpu::image::image_loss(&desc, &xs, &ys, masked.then_some(&mask[..]))
                        .unwrap();
                match reduction {
                    Reduction::None => assert_close(
                        &what,
                        out.per_element.as_ref().unwrap(),
                        r.per_element.as_ref().unwrap(),
                        Tol::new(1e-4, 1e-5),
                    ),
                    _ => assert_scalar(&what, out.value.unwrap(), r.value.unwrap(), VALUE),
                }
                let grad = out.grad.unwrap();
                let half_ulp = if grad_dtype == DType::F32 {
                    0.0
                } else {
                    grad_dtype.epsilon() / 2.0
                };
                let tol = Tol::new(2e-3 + half_ulp, 2e-4 * largest(&r.grad));
                assert_close(&format!("{what} grad"), &grad, &r.grad, tol);
                assert!(
                    grad.iter().all(|&g| grad_dtype.round(g) == g),
                    "{what}: not {grad_dtype} values"
                );
                eprintln!(
                    "worst relative error {what}: grad {:.2e}",
                    worst_relative(&grad, &r.grad)
                );
            }
        }
    }
    // The dtype is the description's.
    let x = Data::new(&rng.vec(h * w * c, 0.0, 1.0), DType::F16);
    let desc = ImageDesc::new(ImageLoss::L1, h, w, c);
    let err = ctx
        .loss(&desc, &ImageInputs::new(x.values(), x.values()))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
}

/// A plan over the caller's f16 buffers of an odd element count: the gradient's pad half is
/// left as it was, and the recorded gradient is the convenience call's, bit for bit.
#[test]
fn image_gradient_into_the_callers_half_buffer() {
    use wgpu_loss::ImageDesc;
    use wgpu_loss::image::{ImageBuffers, ImageInputs, ImageLoss};
    let ctx = ctx();
    let mut rng = Rng::new(24);
    let (h, w, c) = (19, 29, 3);
    let len = h * w * c;
    let half = |v: Vec<f32>| -> Vec<f16> { v.iter().map(|&x| f16::from_f32(x)).collect() };
    let (x, y) = (half(rng.vec(len, 0.0, 1.0)), half(rng.vec(len, 0.0, 1.0)));
    let desc = ImageDesc::new(ImageLoss::Photometric, h, w, c).dtype(DType::F16);
    let plan = Plan::new(ctx, &desc).unwrap();
    let pad = |v: &[f16]| {
        let mut p = v.to_vec();
        p.push(f16::from_f32(0.5));
        upload(ctx, &p)
    };
    let (xb, yb) = (pad(&x), pad(&y));
    let loss = poisoned(ctx, 1);
    let grad = poisoned(ctx, len.div_ceil(2));
    plan.run_buffers(&ImageBuffers::new(&*xb, &*yb).loss(&*loss).grad(&*grad))
        .unwrap();
    let words: Vec<u32> = read(ctx, &grad, len.div_ceil(2))
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(
        words.last().unwrap() >> 16,
        POISON >> 16,
        "the pad is untouched"
    );
    let got: Vec<u32> = words
        .iter()
        .flat_map(|w| [w & 0xffff, w >> 16])
        .take(len)
        .collect();
    let host = ctx.loss(&desc, &ImageInputs::new(&x[..], &y[..])).unwrap();
    let want: Vec<u32> = host
        .grad
        .unwrap()
        .iter()
        .map(|&g| f16::from_f32(g).to_bits() as u32)
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        read(ctx, &loss, 1)[0].to_bits(),
        host.value.unwrap().to_bits()
    );
}
