//! Property tests of the families `properties.rs` leaves out: image losses, fused linear +
//! cross-entropy, weighted sums, custom losses (from a small grammar of valid expressions, with
//! their derivatives), the optimizers over several steps, half precision and vocabulary shards,
//! each against its f64 twin; and shapes that are wrong, refused by the GPU API and the twin
//! alike, with the same error. Strategies draw from small sets where a value is a pipeline
//! constant (class counts, shard widths, the fused loss's options), so that the run compiles
//! few pipeline variants.

use crate::common::Rng;
use crate::common::*;
use crate::properties::{outputs, reduction};
use proptest::prelude::*;
use wgpu_loss::{
    CrossEntropyDesc, CustomLossDesc, DType, Error, ImageDesc, Inputs, LinearCrossEntropyDesc,
    LossOutput, MixDesc, NllDesc, Outputs, PointwiseDesc, Reduction, cpu,
    cross_entropy::{Shard, combine_shards},
    image::{ImageInputs, ImageLoss, ImageMask, Padding},
    optim::{Optim, Optimizer},
    pointwise::Pointwise,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)]
}

/// The loss (reduced, or per element) and the gradient against the twin's, a gradient in a
/// 16-bit dtype within half its ulp more.
#[track_caller]
fn agree(what: &str, out: &LossOutput, twin: &cpu::Reference, outputs: Outputs, grad_dtype: DType) {
    let value_tol = Tol::new(1e-4, 1e-5);
    if outputs.loss {
        match (&out.per_element, twin.per_element.as_deref()) {
            (Some(v), Some(want)) => assert_close(what, v, want, value_tol),
            _ => assert_scalar(what, out.value.unwrap(), twin.value.unwrap(), value_tol),
        }
    }
    if outputs.grad {
        let half_ulp = if grad_dtype == DType::F32 {
            0.0
        } else {
            grad_dtype.epsilon() / 2.0
        };
        let tol = Tol::new(1e-3 + half_ulp, 1e-4 * largest(&twin.grad).max(1e-3));
        assert_close(
            &format!("{what} grad"),
            out.grad.as_deref().unwrap(),
            &twin.grad,
            tol,
        );
    }
}

/// An expression in x and y of the grammar custom losses take, with its value and its
/// derivative with respect to x.
#[derive(Clone, Debug)]
enum Expr {
    X,
    Y,
    Const(f32),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    Tanh(Box<Expr>),
    Sin(Box<Expr>),
    Cos(Box<Expr>),
}

impl Expr {
    fn wgsl(&self) -> String {
        match self {
            Expr::X => "x".into(),
            Expr::Y => "y".into(),
            Expr::Const(c) => format!("{c:?}"),
            Expr::Add(a, b) => format!("({} + {})", a.wgsl(), b.wgsl()),
            Expr::Sub(a, b) => format!("({} - {})", a.wgsl(), b.wgsl()),
            Expr::Mul(a, b) => format!("({} * {})", a.wgsl(), b.wgsl()),
            Expr::Tanh(a) => format!("tanh({})", a.wgsl()),
            Expr::Sin(a) => format!("sin({})", a.wgsl()),
            Expr::Cos(a) => format!("cos({})", a.wgsl()),
        }
    }

    fn eval(&self, x: f64, y: f64) -> f64 {
        match self {
            Expr::X => x,
            Expr::Y => y,
            Expr::Const(c) => *c as f64,
            Expr::Add(a, b) => a.eval(x, y) + b.eval(x, y),
            Expr::Sub(a, b) => a.eval(x, y) - b.eval(x, y),
            Expr::Mul(a, b) => a.eval(x, y) * b.eval(x, y),
            Expr::Tanh(a) => a.eval(x, y).tanh(),
            Expr::Sin(a) => a.eval(x, y).sin(),
            Expr::Cos(a) => a.eval(x, y).cos(),
        }
    }

    /// d/dx, by the chain rule.
    fn dx(&self) -> Expr {
        use Expr::*;
        let b = Box::new;
        match self {
            X => Const(1.0),
            Y | Const(_) => Const(0.0),
            Add(p, q) => Add(b(p.dx()), b(q.dx())),
            Sub(p, q) => Sub(b(p.dx()), b(q.dx())),
            Mul(p, q) => Add(b(Mul(b(p.dx()), q.clone())), b(Mul(p.clone(), b(q.dx())))),
            Tanh(p) => Mul(
                b(Sub(
                    b(Const(1.0)),
                    b(Mul(b(Tanh(p.clone())), b(Tanh(p.clone())))),
                )),
                b(p.dx()),
            ),
            Sin(p) => Mul(b(Cos(p.clone())), b(p.dx())),
            Cos(p) => Mul(b(Sub(b(Const(0.0)), b(Sin(p.clone())))), b(p.dx())),
        }
    }
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        Just(Expr::X),
        Just(Expr::Y),
        prop::sample::select(vec![0.5f32, 1.5, 2.0, 3.0]).prop_map(Expr::Const),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Add(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Sub(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Mul(Box::new(a), Box::new(b))),
            inner.clone().prop_map(|a| Expr::Tanh(Box::new(a))),
            inner.prop_map(|a| Expr::Sin(Box::new(a))),
        ]
    })
}

fn image_loss() -> impl Strategy<Value = ImageLoss> {
    prop::sample::select(vec![
        ImageLoss::L1,
        ImageLoss::Mse,
        ImageLoss::Psnr,
        ImageLoss::Ssim,
        ImageLoss::Dssim,
        ImageLoss::Photometric,
    ])
}

fn optimizer() -> impl Strategy<Value = Optimizer> {
    prop_oneof![
        (
            0.001f32..0.5,
            prop::sample::select(vec![0.0f32, 0.9]),
            any::<bool>(),
            0.0f32..0.1
        )
            .prop_map(|(lr, momentum, nesterov, weight_decay)| Optimizer::Sgd {
                lr,
                momentum,
                dampening: 0.0,
                nesterov: nesterov && momentum > 0.0,
                weight_decay,
            }),
        (
            0.001f32..0.1,
            0.5f32..0.95,
            0.9f32..0.9999,
            any::<bool>(),
            0.0f32..0.1
        )
            .prop_map(
                |(lr, beta1, beta2, decoupled, weight_decay)| Optimizer::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps: 1e-8,
                    weight_decay,
                    decoupled,
                }
            ),
    ]
}

/// The same error variant on both sides, or success on both.
#[track_caller]
fn same_verdict<A, B>(what: &str, gpu: &Result<A, Error>, twin: &Result<B, Error>) {
    match (gpu, twin) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "{what}: the GPU API says {a}, the twin {b}"
        ),
        (Err(a), Ok(_)) => panic!("{what}: the GPU API refuses ({a}), the twin accepts"),
        (Ok(_), Err(b)) => panic!("{what}: the twin refuses ({b}), the GPU API accepts"),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn image_losses_agree(
        loss in image_loss(),
        (n, h, w, c) in (1usize..3, 1usize..40, 1usize..40, 1usize..=4),
        valid in any::<bool>(),
        reduction in reduction(),
        masked in any::<bool>(),
        dtype in dtype(),
        f32_grad in any::<bool>(),
        outputs in outputs(),
        seed in any::<u64>(),
    ) {
        let ssim = matches!(loss, ImageLoss::Ssim | ImageLoss::Dssim | ImageLoss::Photometric);
        let padding = if valid && ssim && h >= 11 && w >= 11 { Padding::Valid } else { Padding::Same };
        let reduction = match (loss, reduction, padding) {
            (ImageLoss::Psnr, _, _) => Reduction::Mean,
            (ImageLoss::Photometric, Reduction::None, Padding::Valid) => Reduction::Sum,
            (_, r, _) => r,
        };
        let grad_dtype = if f32_grad { DType::F32 } else { dtype };
        let mut rng = Rng::new(seed);
        let len = n * h * w * c;
        let x = Data::new(&rng.vec(len, 0.0, 1.0), dtype);
        let y = Data::new(&rng.vec(len, 0.0, 1.0), dtype);
        let mask = rng.vec(n * h * w, 0.0, 1.0);
        let mut desc = ImageDesc::new(loss, h, w, c)
            .batch(n)
            .padding(padding)
            .reduction(reduction)
            .outputs(outputs)
            .dtype(dtype)
            .grad_dtype(grad_dtype);
        let mut inputs = ImageInputs::new(x.values(), y.values());
        if masked {
            desc = desc.mask(ImageMask::Buffer);
            inputs = inputs.mask(&mask);
        }
        let what = format!("{loss:?} {padding:?} {reduction} [{n}, {h}, {w}, {c}] {dtype} mask {masked}");
        let out = ctx().loss(&desc, &inputs).unwrap();
        let (xs, ys) = (x.values().to_f32(), y.values().to_f32());
        let twin = cpu::image::image_loss(&desc, &xs, &ys, masked.then_some(&mask[..])).unwrap();
        // PSNR of identical images is infinite on both sides; SSIM's loss is a mean of ratios.
        if twin.value.is_some_and(|v| !v.is_finite()) {
            prop_assert!(!outputs.loss || !out.value.unwrap().is_finite());
        } else {
            agree(&what, &out, &twin, outputs, grad_dtype);
        }
    }

    #[test]
    fn fused_linear_cross_entropy_agrees(
        (n, d, v) in (1usize..50, 1usize..80, 1usize..300),
        bias in any::<bool>(),
        preset in 0usize..3,
        lse in any::<bool>(),
        reduction in reduction(),
        outputs in outputs(),
        half in any::<bool>(),
        half_grad in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let dtype = if half { DType::BF16 } else { DType::F32 };
        let grad_dtype = if half && half_grad { DType::BF16 } else { DType::F32 };
        let hidden = Data::new(&rng.vec(n * d, -1.0, 1.0), dtype);
        let linear = Data::new(&rng.vec(v * d, -0.5, 0.5), dtype);
        let b = rng.vec(v, -0.5, 0.5);
        let mut targets = rng.classes(n, v);
        targets[0] = if preset == 2 { -100 } else { targets[0] };
        let mut desc = LinearCrossEntropyDesc::new(n, d, v)
            .bias(bias)
            .lse(lse)
            .reduction(reduction)
            .outputs(outputs)
            .dtype(dtype)
            .grad_dtype(grad_dtype);
        desc = match preset {
            0 => desc,
            1 => desc.label_smoothing(0.1).z_loss(1e-3),
            _ => desc.softcap(15.0),
        };
        let mut inputs = Inputs::classes(hidden.values(), &targets).linear(linear.values());
        if bias {
            inputs = inputs.bias(&b);
        }
        let what = format!("linear [{n}, {d}] x [{v}, {d}] preset {preset} {reduction} {dtype}, {grad_dtype} grads");
        let out = ctx().loss(&desc, &inputs).unwrap();
        let twin = cpu::reference(&desc, &inputs).unwrap();
        if twin.value.is_some_and(f64::is_nan) {
            // Every row ignored under the mean.
            prop_assert!(!outputs.loss || out.value.unwrap().is_nan());
        } else {
            agree(&what, &out, &twin, outputs, grad_dtype);
            if outputs.grad {
                let half_ulp = if grad_dtype == DType::F32 { 0.0 } else { grad_dtype.epsilon() / 2.0 };
                let tol = Tol::new(1e-3 + half_ulp, 1e-4 * largest(&twin.grad_linear).max(1e-3));
                assert_close(&format!("{what} grad_linear"), out.grad_linear.as_deref().unwrap(), &twin.grad_linear, tol);
            }
            if lse {
                assert_close(&format!("{what} lse"), out.lse.as_deref().unwrap(), twin.lse.as_deref().unwrap(), Tol::new(1e-5, 1e-5));
            }
        }
    }

    #[test]
    fn weighted_sums_agree(
        len in 1usize..20_000,
        (w1, w2) in (-2.0f32..2.0, -2.0f32..2.0),
        reduction in reduction(),
        two_outputs in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let (x, y, z) = (rng.vec(len, -3.0, 3.0), rng.vec(len, -3.0, 3.0), rng.vec(len, -3.0, 3.0));
        let a = PointwiseDesc::new(Pointwise::L1, len).reduction(reduction);
        let b = PointwiseDesc::new(Pointwise::Huber { delta: 0.7 }, len).reduction(reduction);
        let mix = MixDesc::new().term(w1, a).term_into(w2, b, two_outputs as usize);
        let inputs = [Inputs::new(&x, &y), Inputs::new(if two_outputs { &z } else { &x }, &y)];
        let out = ctx().mix(&mix, &inputs).unwrap();
        let twin = cpu::mix::reference(&mix, &inputs).unwrap();
        let tol = Tol::new(1e-4, 1e-5);
        match (out.value, twin.value) {
            (Some(v), Some(want)) => assert_scalar("mix", v, want, tol),
            _ => assert_close("mix", out.per_element.as_deref().unwrap(), twin.per_element.as_deref().unwrap(), tol),
        }
        for (k, want) in twin.grads.iter().enumerate() {
            let g = out.grads[k].as_deref().unwrap();
            assert_close(&format!("mix grad {k}"), g, want, Tol::new(1e-4, 1e-5 * largest(want).max(1e-3)));
        }
    }

    #[test]
    fn custom_expressions_agree(
        loss in expr(),
        len in 1usize..5_000,
        reduction in reduction(),
        seed in any::<u64>(),
    ) {
        let grad = loss.dx();
        let mut rng = Rng::new(seed);
        let (x, y) = (rng.vec(len, -2.0, 2.0), rng.vec(len, -2.0, 2.0));
        let desc = CustomLossDesc::new(loss.wgsl(), grad.wgsl(), len).reduction(reduction);
        desc.check_expressions().unwrap();
        let out = ctx().loss(&desc, &Inputs::new(&x, &y)).unwrap();
        let twin = cpu::pointwise::custom(
            &x, &y, None, reduction, |a, b| loss.eval(a, b), |a, b| grad.eval(a, b),
        ).unwrap();
        agree(&format!("custom {} {reduction}", loss.wgsl()), &out, &twin, Outputs::BOTH, DType::F32);
    }

    #[test]
    fn optimizers_agree_over_several_steps(
        optimizer in optimizer(),
        len in 1usize..5_000,
        steps in 1usize..5,
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let mut params = rng.vec(len, -2.0, 2.0);
        let mut twin: Vec<f64> = params.iter().map(|&p| p as f64).collect();
        let mut state = cpu::optim::State::default();
        let mut optim = Optim::new(ctx(), optimizer, len).unwrap();
        for step in 1..=steps {
            let grad = rng.vec(len, -1.0, 1.0);
            optim.step(&mut params, &grad).unwrap();
            let grad: Vec<f64> = grad.iter().map(|&g| g as f64).collect();
            cpu::optim::step(optimizer, &mut twin, &grad, &mut state).unwrap();
            assert_close(&format!("{optimizer:?} step {step}"), &params, &twin, Tol::new(1e-5, 1e-6));
        }
    }

    #[test]
    fn half_precision_agrees(
        half in prop_oneof![Just(DType::F16), Just(DType::BF16)],
        f32_grad in any::<bool>(),
        loss in prop_oneof![Just(Pointwise::Mse), Just(Pointwise::L1), Just(Pointwise::BceWithLogits)],
        len in 1usize..20_000,
        (n, c) in (1usize..40, prop::sample::select(vec![3usize, 7, 514])),
        reduction in reduction(),
        seed in any::<u64>(),
    ) {
        let grad_dtype = if f32_grad { DType::F32 } else { half };
        let mut rng = Rng::new(seed);
        let (x, y) = (Data::new(&rng.vec(len, -3.0, 3.0), half), Data::new(&rng.vec(len, 0.0, 1.0), half));
        let desc = PointwiseDesc::new(loss, len).reduction(reduction).dtype(half).grad_dtype(grad_dtype);
        let inputs = Inputs::new(x.values(), y.values());
        let out = ctx().loss(&desc, &inputs).unwrap();
        agree(&format!("{loss:?} {half}"), &out, &cpu::reference(&desc, &inputs).unwrap(), Outputs::BOTH, grad_dtype);
        let logits = Data::new(&rng.vec(n * c, -8.0, 8.0), half);
        let targets = rng.classes(n, c);
        let desc = CrossEntropyDesc::new(n, c).reduction(reduction).dtype(half).grad_dtype(grad_dtype);
        let inputs = Inputs::classes(logits.values(), &targets);
        let out = ctx().loss(&desc, &inputs).unwrap();
        agree(&format!("cross-entropy [{n}, {c}] {half}"), &out, &cpu::reference(&desc, &inputs).unwrap(), Outputs::BOTH, grad_dtype);
    }

    #[test]
    fn shards_give_the_unsharded_loss(
        n in 1usize..30,
        (v, cut) in prop_oneof![Just((36usize, 7usize)), Just((36, 18)), Just((514, 7)), Just((514, 257))],
        label_smoothing in prop_oneof![Just(0.0f32), 0.0f32..0.5],
        reduction in reduction(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let logits = rng.vec(n * v, -8.0, 8.0);
        let targets = rng.classes(n, v);
        let full = CrossEntropyDesc::new(n, v).label_smoothing(label_smoothing).reduction(reduction);
        let inputs = Inputs::classes(&logits, &targets);
        let twin = cpu::reference(&full, &inputs).unwrap();
        let bounds = [(0, cut), (cut, v)];
        let part = |a: usize, b: usize| -> Vec<f32> {
            logits.chunks(v).flat_map(|row| row[a..b].to_vec()).collect()
        };
        let step = |(a, b): (usize, usize), shard: Shard| {
            CrossEntropyDesc::new(n, b - a).label_smoothing(label_smoothing).reduction(reduction).shard(shard)
        };
        let stats: Vec<Vec<f32>> = bounds.iter().map(|&(a, b)| {
            let x = part(a, b);
            let out = ctx().loss(&step((a, b), Shard::statistics(a, v)), &Inputs::classes(&x, &targets)).unwrap();
            out.shard_stats.unwrap()
        }).collect();
        let views: Vec<&[f32]> = stats.iter().map(Vec::as_slice).collect();
        let combined = combine_shards(&full, &views).unwrap();
        let tol = Tol::new(1e-4, 1e-5);
        match (combined.value, &combined.per_row) {
            (Some(v), _) => assert_scalar("sharded loss", v, twin.value.unwrap(), tol),
            (None, Some(rows)) => assert_close("sharded rows", rows, twin.per_element.as_deref().unwrap(), tol),
            _ => panic!("no loss"),
        }
        let mut grad = vec![0.0f32; n * v];
        for &(a, b) in &bounds {
            let x = part(a, b);
            let inputs = Inputs::classes(&x, &targets).shard_scale(&combined.scale);
            let g = ctx().loss(&step((a, b), Shard::gradient(a, v)), &inputs).unwrap().grad.unwrap();
            for (row, piece) in g.chunks(b - a).enumerate() {
                grad[row * v + a..row * v + b].copy_from_slice(piece);
            }
        }
        assert_close("sharded grad", &grad, &twin.grad, Tol::new(1e-4, 1e-5 * largest(&twin.grad)));
    }

    /// Shapes that are wrong, for several families: the GPU API and the twin give the same
    /// verdict, and the same error when they refuse.
    #[test]
    fn bad_shapes_get_one_verdict(
        data_len in 0usize..50,
        target_len in 0usize..10,
        c in 0usize..8,
        weight_len in prop::option::of(0usize..8),
        (h, w, ch) in (0usize..6, 0usize..6, 0usize..6),
        image_len in 0usize..120,
        mask_len in prop::option::of(0usize..40),
        (d, v) in (0usize..5, 0usize..5),
        linear_len in 0usize..30,
    ) {
        let data = vec![0.25f32; data_len];
        let targets: Vec<i64> = (0..target_len as i64).map(|t| t % c.max(1) as i64).collect();
        let weight = weight_len.map(|l| vec![1.0f32; l]);
        let ctx = ctx();
        // Cross-entropy and NLL with class targets.
        let mut desc = CrossEntropyDesc::new(target_len, c);
        let mut inputs = Inputs::classes(&data, &targets);
        if let Some(wt) = &weight {
            desc = desc.weight(c);
            inputs = inputs.weight(wt);
        }
        same_verdict("cross-entropy", &ctx.loss(&desc, &inputs), &cpu::reference(&desc, &inputs));
        let mut desc = NllDesc::new(target_len, c);
        if weight.is_some() {
            desc = desc.weight(c);
        }
        same_verdict("nll", &ctx.loss(&desc, &inputs), &cpu::reference(&desc, &inputs));
        // Pointwise: a prediction of data_len elements against targets of c.
        let target = vec![0.5f32; c];
        let desc = PointwiseDesc::new(Pointwise::Mse, data_len);
        let inputs = Inputs::new(&data, &target);
        same_verdict("mse", &ctx.loss(&desc, &inputs), &cpu::reference(&desc, &inputs));
        // The fused loss: hidden states of data_len, a layer of linear_len, targets of target_len.
        let layer = vec![0.1f32; linear_len];
        let desc = LinearCrossEntropyDesc::new(target_len, d, v);
        let inputs = Inputs::classes(&data, &targets).linear(&layer);
        same_verdict("linear", &ctx.loss(&desc, &inputs), &cpu::reference(&desc, &inputs));
        // Image losses: images of image_len elements, a mask of mask_len.
        let pixels = vec![0.5f32; image_len];
        let mask = mask_len.map(|l| vec![1.0f32; l]);
        let mut desc = ImageDesc::new(ImageLoss::Photometric, h, w, ch);
        let mut inputs = ImageInputs::new(&pixels[..], &pixels[..]);
        if let Some(m) = &mask {
            desc = desc.mask(ImageMask::Buffer);
            inputs = inputs.mask(m);
        }
        same_verdict(
            "image",
            &ctx.loss(&desc, &inputs),
            &cpu::image::image_loss(&desc, &pixels, &pixels, mask.as_deref()),
        );
    }
}
