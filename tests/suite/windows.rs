//! Inputs beyond one binding: logits, predictions, targets, gradients and element losses bound
//! a window of whole workgroups' rows (or elements) at a time, in every loss family. On a
//! device whose binding limit is lowered (many windows, cheaply) the results are bit for bit
//! those of a device that binds everything at once; and on the default device, inputs of three
//! times lavapipe's 128 MiB binding against the f64 twin. Custom losses too.

use crate::common::*;
use wgpu_loss::{
    ClassicCrossEntropyDesc, Context, CrossEntropyDesc, CustomLossDesc, DType, Error, ImageDesc,
    Inputs, LinearCrossEntropyDesc, NllDesc, Outputs, PointwiseDesc, Reduction, bf16,
    context::ContextOptions,
    f16,
    image::{ImageInputs, ImageLoss, ImageMask, Padding},
    plan::TensorLoss,
    pointwise::Pointwise,
};

/// A device on the default adapter, with its binding limit lowered to `bytes`.
fn lowered(bytes: u32) -> Context {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let mut limits = adapter.limits();
    limits.max_storage_buffer_binding_size = bytes as u64;
    let features = adapter.features() & wgpu::Features::SUBGROUP;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: features,
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap();
    let ctx = Context::from_device(device, queue).unwrap();
    assert_eq!(ctx.max_binding_bytes(), bytes as u64);
    ctx
}

/// `v` in a 16-bit dtype.
fn narrow<T>(v: &[f32], f: fn(f32) -> T) -> Vec<T> {
    v.iter().map(|&x| f(x)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The same loss on both contexts, bit for bit.
#[track_caller]
fn same_bits<D: TensorLoss>(what: &str, whole: &Context, windowed: &Context, desc: &D, i: &Inputs) {
    let a = whole.loss(desc, i).unwrap();
    let b = windowed.loss(desc, i).unwrap();
    assert_eq!(
        a.value.map(f32::to_bits),
        b.value.map(f32::to_bits),
        "{what} loss"
    );
    for (part, x, y) in [
        ("row losses", &a.per_element, &b.per_element),
        ("grad", &a.grad, &b.grad),
        ("lse", &a.lse, &b.lse),
        ("grad_linear", &a.grad_linear, &b.grad_linear),
        ("grad_bias", &a.grad_bias, &b.grad_bias),
    ] {
        assert_eq!(
            x.as_deref().map(bits),
            y.as_deref().map(bits),
            "{what} {part}"
        );
    }
}

// (N, C, binding limit): fused blocks of 4 rows; rows chunked over workgroups (with the
// gradient, and forward only, 32 rows a workgroup with subgroups of 8); odd rows read unaligned
// one a block. The fast suite takes the first.
fast_and_extended!(
    windows_give_the_bits_of_one_binding,
    windows_give_the_bits_of_one_binding_extended,
    |extended| {
        let mut rng = Rng::new(51 + extended as u64);
        let shapes = [
            (1001, 1003, 1 << 20),
            (120, 40_000, 8 << 20),
            (500, 10_001, 8 << 20),
        ];
        // The fast suite: per-row losses with the gradient (the reduced loss and the forward
        // pass alone differ only after the windows); the extended suite's shapes: reduced and
        // per row, with the gradient and without.
        let reductions: &[Reduction] = if extended {
            &[Reduction::Mean, Reduction::None]
        } else {
            &[Reduction::None]
        };
        for (_, (n, c, limit)) in cases(&shapes, &[0], extended) {
            let windowed = lowered(limit);
            ce_in_windows(
                ctx(),
                &windowed,
                (n, c),
                limit,
                reductions,
                extended,
                &mut rng,
            );
        }
    }
);

/// Rows longer than a workgroup holds, read once with the gradient (the sweep: a workgroup a
/// block), bound a window at a time: the bits of one binding.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn swept_rows_in_windows_give_the_bits_of_one_binding() {
    let limit = 2 << 20;
    let (whole, windowed) = (swept(None), swept(Some(limit as u64)));
    // Blocks of 4 rows (640 KB): 3 a window; 7 blocks, then a partial one. Not forward only:
    // a workgroup's worth of these rows in narrow chunks exceeds 2 MiB, so a forward pass
    // takes workgroup-wide chunks there (other bits, as docs/beyond-one-binding.md says).
    ce_in_windows(
        &whole,
        &windowed,
        (29, 40_001),
        limit,
        &[Reduction::Mean, Reduction::None],
        false,
        &mut Rng::new(53),
    );
}

/// Cross-entropy of `[n, c]` random logits on `whole` and on `windowed` (which binds at most
/// `limit` bytes at a time), bit for bit: class targets with ignored rows, label smoothing,
/// class weights and the log-sum-exp, in each of `reductions`, with the gradient (and with
/// `forward`, without); probability targets; bf16 logits with an f32 gradient.
fn ce_in_windows(
    whole: &Context,
    windowed: &Context,
    (n, c): (usize, usize),
    limit: u32,
    reductions: &[Reduction],
    forward: bool,
    rng: &mut Rng,
) {
    assert!((n * c * 4) as u64 > 2 * limit as u64, "several windows");
    let logits = rng.vec(n * c, -8.0, 8.0);
    let mut targets = rng.classes(n, c);
    targets[3] = -100;
    let weight = rng.vec(c, 0.5, 2.0);
    for &reduction in reductions {
        let desc = CrossEntropyDesc::new(n, c)
            .reduction(reduction)
            .label_smoothing(0.1)
            .weight(c)
            .lse(true);
        let inputs = Inputs::classes(&logits, &targets).weight(&weight);
        let what = format!("[{n}, {c}] {reduction} in {limit}-byte bindings");
        same_bits(&what, whole, windowed, &desc, &inputs);
        if forward {
            let desc = desc.clone().outputs(Outputs::LOSS);
            same_bits(&format!("{what}, forward"), whole, windowed, &desc, &inputs);
        }
    }
    // Probability targets, windowed like the logits; bf16 logits with an f32 gradient.
    let probs = rng.distributions(n, c);
    let desc =
        CrossEntropyDesc::new(n, c).targets(wgpu_loss::cross_entropy::Targets::Probabilities);
    let what = format!("[{n}, {c}] soft in {limit}-byte bindings");
    same_bits(&what, whole, windowed, &desc, &Inputs::new(&logits, &probs));
    let half: Vec<wgpu_loss::bf16> = logits.iter().map(|&x| bf16::from_f32(x)).collect();
    let desc = CrossEntropyDesc::new(n, c)
        .dtype(DType::BF16)
        .grad_dtype(DType::F32);
    let what = format!("[{n}, {c}] bf16 in {limit}-byte bindings");
    same_bits(
        &what,
        whole,
        windowed,
        &desc,
        &Inputs::classes(&half, &targets),
    );
}

#[test]
fn a_row_larger_than_a_window_is_an_error() {
    let windowed = lowered(1 << 16);
    let logits = vec![0.5f32; 2 * 40_000];
    let err = windowed
        .loss(
            &CrossEntropyDesc::new(2, 40_000),
            &Inputs::classes(&logits, &[0, 1]),
        )
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn three_times_one_binding() {
    // 3 x 128 MiB of logits on lavapipe (and its gradient): three windows there. Other
    // adapters may bind it whole; the result is held to the twin either way.
    let ctx = ctx();
    let (n, c) = (3 * 1024 + 1, 32_768);
    let mut rng = Rng::new(52);
    let logits = rng.vec(n * c, -6.0, 6.0);
    let targets = rng.classes(n, c);
    let desc = CrossEntropyDesc::new(n, c);
    let inputs = Inputs::classes(&logits, &targets);
    let out = ctx.loss(&desc, &inputs).unwrap();
    let reference = wgpu_loss::cpu::reference(&desc, &inputs).unwrap();
    assert_scalar(
        "3 x 128 MiB loss",
        out.value.unwrap(),
        reference.value.unwrap(),
        Tol::new(2e-5, 1e-5),
    );
    let grad_tol = Tol::new(2e-5, 1e-6 * largest(&reference.grad));
    assert_close(
        "3 x 128 MiB grad",
        &out.grad.unwrap(),
        &reference.grad,
        grad_tol,
    );
}

#[test]
fn pointwise_windows_give_the_bits_of_one_binding() {
    let whole = ctx();
    let windowed = lowered(1 << 20);
    let mut rng = Rng::new(53);
    // Not a multiple of 4 (a tail dispatch in the last window), 4 MB of f32.
    let m = 1_000_003;
    let pred = rng.vec(m, -3.0, 3.0);
    let target = rng.vec(m, -3.0, 3.0);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let desc = PointwiseDesc::new(Pointwise::Huber { delta: 0.7 }, m).reduction(reduction);
        let what = format!("huber {reduction}, {m} elements in 1 MiB bindings");
        same_bits(&what, whole, &windowed, &desc, &Inputs::new(&pred, &target));
    }
    // Broadcast weights index by the element's place in the problem, not in its window.
    let probs: Vec<f32> = target.iter().map(|t| (t.abs() / 3.0).min(1.0)).collect();
    let weight = rng.vec(1001, 0.5, 2.0);
    let pos_weight = rng.vec(1001, 0.5, 2.0);
    let (n, c) = (m / 1001, 1001);
    let desc = PointwiseDesc::new(Pointwise::BceWithLogits, n * c)
        .weight(c)
        .pos_weight(c);
    let inputs = Inputs::new(&pred[..n * c], &probs[..n * c])
        .weight(&weight)
        .pos_weight(&pos_weight);
    same_bits(
        "bce-with-logits, weighted",
        whole,
        &windowed,
        &desc,
        &inputs,
    );
    // Half precision: 2-byte elements, windows aligned for both x and an f32 gradient.
    let (half, half_t) = (narrow(&pred, f16::from_f32), narrow(&target, f16::from_f32));
    for grad_dtype in [DType::F16, DType::F32] {
        let desc = PointwiseDesc::new(Pointwise::Mse, m)
            .dtype(DType::F16)
            .grad_dtype(grad_dtype)
            .reduction(Reduction::None);
        let what = format!("f16 mse, {grad_dtype:?} grad");
        same_bits(&what, whole, &windowed, &desc, &Inputs::new(&half, &half_t));
    }
}

/// A custom loss (its own kernel, the caller's expressions) at a 1 MiB binding limit: a tail in
/// the last window, a broadcast weight indexed by the element's place in the problem, every
/// reduction, and f16 inputs with an f32 gradient.
#[test]
fn custom_windows_give_the_bits_of_one_binding() {
    let whole = ctx();
    let windowed = lowered(1 << 20);
    let mut rng = Rng::new(57);
    let m = 1_000_003;
    let (pred, target) = (rng.vec(m, -3.0, 3.0), rng.vec(m, -3.0, 3.0));
    let (loss, grad) = ("log(cosh(x - y))", "tanh(x - y)");
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let desc = CustomLossDesc::new(loss, grad, m).reduction(reduction);
        let what = format!("custom {reduction}, {m} elements in 1 MiB bindings");
        same_bits(&what, whole, &windowed, &desc, &Inputs::new(&pred, &target));
    }
    let weight = rng.vec(1001, 0.5, 2.0);
    let n = m / 1001 * 1001;
    let desc = CustomLossDesc::new(loss, grad, n).weight(1001);
    let inputs = Inputs::new(&pred[..n], &target[..n]).weight(&weight);
    same_bits("custom, weighted", whole, &windowed, &desc, &inputs);
    let (half, half_t) = (narrow(&pred, f16::from_f32), narrow(&target, f16::from_f32));
    let desc = CustomLossDesc::new(loss, grad, m)
        .dtype(DType::F16)
        .grad_dtype(DType::F32);
    same_bits(
        "custom f16, f32 grad",
        whole,
        &windowed,
        &desc,
        &Inputs::new(&half, &half_t),
    );
}

// Rows in one chunk (several a workgroup), odd rows read as scalars, and rows of several
// chunks; reduction none takes the row kernel, mean the element stream. The fast suite takes the
// first.
fast_and_extended!(
    classic_cross_entropy_windows_give_the_bits_of_one_binding,
    classic_cross_entropy_windows_give_the_bits_of_one_binding_extended,
    |extended| {
        let whole = ctx();
        let windowed = lowered(1 << 20);
        let mut rng = Rng::new(54 + extended as u64);
        for (_, (n, c)) in cases(&[(1001, 1003), (700, 1000), (37, 40_001)], &[0], extended) {
            let probs = rng.distributions(n, c);
            let targets = rng.distributions(n, c);
            for reduction in [Reduction::None, Reduction::Mean] {
                let desc = ClassicCrossEntropyDesc::new(n, c).reduction(reduction);
                let what = format!("classic [{n}, {c}] {reduction} in 1 MiB bindings");
                same_bits(
                    &what,
                    whole,
                    &windowed,
                    &desc,
                    &Inputs::new(&probs, &targets),
                );
            }
            // bf16 probabilities with a bf16 gradient: odd rows take the element pass for it.
            let (half, half_t) = (
                narrow(&probs, bf16::from_f32),
                narrow(&targets, bf16::from_f32),
            );
            let desc = ClassicCrossEntropyDesc::new(n, c)
                .dtype(DType::BF16)
                .reduction(Reduction::None);
            let what = format!("classic [{n}, {c}] bf16 in 1 MiB bindings");
            same_bits(&what, whole, &windowed, &desc, &Inputs::new(&half, &half_t));
        }
    }
);

// Rows in one workgroup, and rows split over many; the fast suite takes the first.
fast_and_extended!(
    nll_windows_give_the_bits_of_one_binding,
    nll_windows_give_the_bits_of_one_binding_extended,
    |extended| {
        let whole = ctx();
        let windowed = lowered(1 << 20);
        let mut rng = Rng::new(55 + extended as u64);
        for (_, (n, c)) in cases(&[(3001, 1001), (20, 70_001)], &[0], extended) {
            let x = rng.vec(n * c, -9.0, 0.0);
            let mut targets = rng.classes(n, c);
            targets[1] = -100;
            let weight = rng.vec(c, 0.5, 2.0);
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let desc = NllDesc::new(n, c).reduction(reduction).weight(c);
                let inputs = Inputs::classes(&x, &targets).weight(&weight);
                let what = format!("nll [{n}, {c}] {reduction} in 1 MiB bindings");
                same_bits(&what, whole, &windowed, &desc, &inputs);
            }
            let half = narrow(&x, f16::from_f32);
            let desc = NllDesc::new(n, c).dtype(DType::F16);
            let what = format!("nll [{n}, {c}] f16 in 1 MiB bindings");
            same_bits(
                &what,
                whole,
                &windowed,
                &desc,
                &Inputs::classes(&half, &targets),
            );
        }
    }
);

#[test]
fn the_binding_limit_is_an_option() {
    let ctx =
        Context::with_options(ContextOptions::default().max_binding((1 << 20) + 100)).unwrap();
    assert_eq!(ctx.max_binding_bytes(), 1 << 20);
    let err = Context::with_options(ContextOptions::default().max_binding(1000)).unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
    // Through the option, as through a caller's device: the bits of one binding.
    let mut rng = Rng::new(56);
    let m = 300_001;
    let (pred, target) = (rng.vec(m, -1.0, 1.0), rng.vec(m, -1.0, 1.0));
    let desc = PointwiseDesc::new(Pointwise::Mse, m);
    same_bits(
        "mse",
        crate::common::ctx(),
        &ctx,
        &desc,
        &Inputs::new(&pred, &target),
    );
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn mse_three_times_one_binding() {
    // 3 x 128 MiB of predictions (and targets, gradient and element losses) against the twin.
    let ctx = ctx();
    let m = 3 * (1 << 25) + 3;
    let mut rng = Rng::new(57);
    let pred = rng.vec(m, -2.0, 2.0);
    let target = rng.vec(m, -2.0, 2.0);
    let inputs = Inputs::new(&pred, &target);
    let desc = PointwiseDesc::new(Pointwise::Mse, m);
    let out = ctx.loss(&desc, &inputs).unwrap();
    let reference = wgpu_loss::cpu::reference(&desc, &inputs).unwrap();
    assert_scalar(
        "3 x 128 MiB mse",
        out.value.unwrap(),
        reference.value.unwrap(),
        Tol::new(2e-5, 1e-6),
    );
    assert_close(
        "3 x 128 MiB mse grad",
        &out.grad.unwrap(),
        &reference.grad,
        Tol::new(1e-6, 1e-12),
    );
    let desc = desc.reduction(Reduction::None).outputs(Outputs::LOSS);
    let out = ctx.loss(&desc, &inputs).unwrap();
    let per = out.per_element.unwrap();
    let reference = wgpu_loss::cpu::reference(&desc, &inputs).unwrap();
    let want = reference.per_element.unwrap();
    assert_close(
        "3 x 128 MiB mse per element",
        &per,
        &want,
        Tol::new(1e-6, 1e-12),
    );
}

#[test]
fn linear_cross_entropy_windows_give_the_bits_of_one_binding() {
    // Hidden states of 1.4 MB and a layer of 2.1 MB in 1 MiB bindings: windows of row tiles
    // for the passes over rows, of class tiles for the weight's gradient.
    let whole = ctx();
    let windowed = lowered(1 << 20);
    let mut rng = Rng::new(58);
    let (n, d, v) = (700, 515, 1030);
    let hidden = rng.vec(n * d, -1.0, 1.0);
    let linear = rng.vec(v * d, -0.1, 0.1);
    let bias = rng.vec(v, -0.5, 0.5);
    let mut targets = rng.classes(n, v);
    targets[5] = -100;
    for reduction in [Reduction::Mean, Reduction::None] {
        let desc = LinearCrossEntropyDesc::new(n, d, v)
            .bias(true)
            .label_smoothing(0.1)
            .lse(true)
            .reduction(reduction);
        let inputs = Inputs::classes(&hidden, &targets)
            .linear(&linear)
            .bias(&bias);
        let what = format!("linear [{n}, {d}] x [{v}, {d}] {reduction} in 1 MiB bindings");
        same_bits(&what, whole, &windowed, &desc, &inputs);
    }
    // bf16 inputs and gradients: the f32 sums a window at a time (d odd: a window's first row
    // shares a word with the one before), rounded into the caller's windows.
    let (hb, lb) = (
        narrow(&hidden, bf16::from_f32),
        narrow(&linear, bf16::from_f32),
    );
    let desc = LinearCrossEntropyDesc::new(n, d, v)
        .bias(true)
        .dtype(DType::BF16)
        .grad_dtype(DType::BF16);
    let inputs = Inputs::classes(&hb, &targets).linear(&lb).bias(&bias);
    same_bits(
        "linear bf16, bf16 gradients",
        whole,
        &windowed,
        &desc,
        &inputs,
    );
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn a_layer_larger_than_one_binding() {
    // A layer of 20,000 x 2,048 f32 (164 MB): in two windows on lavapipe, against the twin.
    let ctx = ctx();
    let (n, d, v) = (7, 2048, 20_000);
    let mut rng = Rng::new(59);
    let hidden = rng.vec(n * d, -1.0, 1.0);
    let linear = rng.vec(v * d, -0.05, 0.05);
    let targets = rng.classes(n, v);
    let desc = LinearCrossEntropyDesc::new(n, d, v).lse(true);
    let inputs = Inputs::classes(&hidden, &targets).linear(&linear);
    let out = ctx.loss(&desc, &inputs).unwrap();
    let r = wgpu_loss::cpu::reference(&desc, &inputs).unwrap();
    let tol = Tol::new(2e-4, 1e-5);
    assert_scalar(
        "164 MB layer loss",
        out.value.unwrap(),
        r.value.unwrap(),
        tol,
    );
    assert_close(
        "164 MB layer lse",
        &out.lse.unwrap(),
        r.lse.as_ref().unwrap(),
        tol,
    );
    let gtol = |g: &[f64]| Tol::new(2e-4, 1e-5 * largest(g));
    assert_close(
        "164 MB layer grad",
        &out.grad.unwrap(),
        &r.grad,
        gtol(&r.grad),
    );
    let gl = out.grad_linear.unwrap();
    assert_close(
        "164 MB layer grad_linear",
        &gl,
        &r.grad_linear,
        gtol(&r.grad_linear),
    );
}

/// Image losses on `whole` and on `windowed`, bit for bit: the loss (or the per-element map)
/// and the gradient.
#[track_caller]
fn same_image_bits(
    what: &str,
    whole: &Context,
    windowed: &Context,
    desc: &ImageDesc,
    i: &ImageInputs,
) {
    let a = whole.loss(desc, i).unwrap();
    let b = windowed.loss(desc, i).unwrap();
    assert_eq!(
        a.value.map(f32::to_bits),
        b.value.map(f32::to_bits),
        "{what} loss"
    );
    assert_eq!(
        a.per_element.as_deref().map(bits),
        b.per_element.as_deref().map(bits),
        "{what} map"
    );
    assert_eq!(
        a.grad.as_deref().map(bits),
        b.grad.as_deref().map(bits),
        "{what} grad"
    );
}

/// A batch of images beyond one binding, bound a window of whole images at a time at a 1 MiB
/// limit (9 images of 150 x 130 x 3 f32, 4 a window: 3 windows, the last short): every loss, a
/// mask, both paddings, every reduction, the bits of one binding.
#[test]
fn image_windows_give_the_bits_of_one_binding() {
    let whole = ctx();
    let windowed = lowered(1 << 20);
    let mut rng = Rng::new(58);
    let (n, h, w, c) = (9, 150, 130, 3);
    let x = rng.vec(n * h * w * c, 0.0, 1.0);
    let y = rng.vec(n * h * w * c, 0.0, 1.0);
    let mask = rng.vec(n * h * w, 0.0, 1.0);
    let cases = [
        (ImageLoss::Photometric, Padding::Same, Reduction::Mean, true),
        (
            ImageLoss::Photometric,
            Padding::Same,
            Reduction::None,
            false,
        ),
        (ImageLoss::Ssim, Padding::Valid, Reduction::None, true),
        (ImageLoss::Dssim, Padding::Valid, Reduction::Sum, false),
        (ImageLoss::L1, Padding::Same, Reduction::Sum, true),
        (ImageLoss::Psnr, Padding::Same, Reduction::Mean, false),
    ];
    for (loss, padding, reduction, masked) in cases {
        let mut desc = ImageDesc::new(loss, h, w, c)
            .batch(n)
            .padding(padding)
            .reduction(reduction);
        let mut inputs = ImageInputs::new(&x, &y);
        if masked {
            desc = desc.mask(ImageMask::Buffer);
            inputs = inputs.mask(&mask);
        }
        let what = format!(
            "{loss:?} {padding:?} {reduction} (mask {masked}), [{n}, {h}, {w}, {c}] in 1 MiB bindings"
        );
        same_image_bits(&what, whole, &windowed, &desc, &inputs);
        // Three windows: forward three times, not once.
        let dispatches = |ctx: &Context| wgpu_loss::Plan::new(ctx, &desc).unwrap().dispatch_count();
        assert!(
            dispatches(&windowed) >= dispatches(whole) + 2,
            "{what}: not windowed"
        );
        // The forward pass alone.
        let desc = desc.outputs(Outputs::LOSS);
        same_image_bits(
            &format!("{what}, forward"),
            whole,
            &windowed,
            &desc,
            &inputs,
        );
    }
}

/// f16 and bf16 images in windows (2-byte elements: windows aligned for them and for an f32
/// gradient; a 16-bit gradient's words shared across a window's edge).
#[test]
fn half_image_windows_give_the_bits_of_one_binding() {
    let whole = ctx();
    let windowed = lowered(1 << 20);
    let mut rng = Rng::new(61);
    // 5 images of 211 x 173 x 3 (219 KB each in f16; 2 or 4 a window with an f32 or a 16-bit
    // gradient; an odd element count an image). Few enough tiles that their partial sums fit
    // the 1 MiB scratch binding with GL's lane groups of 4.
    let (n, h, w, c) = (5, 211, 173, 3);
    let (x, y) = (
        rng.vec(n * h * w * c, 0.0, 1.0),
        rng.vec(n * h * w * c, 0.0, 1.0),
    );
    let (xh, yh) = (narrow(&x, f16::from_f32), narrow(&y, f16::from_f32));
    let (xb, yb) = (narrow(&x, bf16::from_f32), narrow(&y, bf16::from_f32));
    for (dtype, inputs) in [
        (DType::F16, ImageInputs::new(&xh[..], &yh[..])),
        (DType::BF16, ImageInputs::new(&xb[..], &yb[..])),
    ] {
        for grad_dtype in [dtype, DType::F32] {
            let desc = ImageDesc::new(ImageLoss::Photometric, h, w, c)
                .batch(n)
                .dtype(dtype)
                .grad_dtype(grad_dtype);
            let what = format!("photometric {dtype}, {grad_dtype} grad, in 1 MiB bindings");
            same_image_bits(&what, whole, &windowed, &desc, &inputs);
            let dispatches =
                |ctx: &Context| wgpu_loss::Plan::new(ctx, &desc).unwrap().dispatch_count();
            assert!(
                dispatches(&windowed) > dispatches(whole),
                "{what}: not windowed"
            );
        }
    }
}

#[test]
fn an_image_larger_than_a_window_is_an_error() {
    let windowed = lowered(1 << 20);
    let (h, w, c) = (400, 300, 3);
    let x = vec![0.5f32; h * w * c];
    let desc = ImageDesc::new(ImageLoss::Photometric, h, w, c);
    let err = windowed.image_loss(&desc, &x, &x, None).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn images_beyond_one_binding() {
    // 3 images of 2560 x 1440 x 3 f32 (133 MB): in two windows on lavapipe, against the twin.
    let ctx = ctx();
    let (n, h, w, c) = (3, 1440, 2560, 3);
    let mut rng = Rng::new(60);
    let x = rng.vec(n * h * w * c, 0.0, 1.0);
    let y: Vec<f32> = x
        .iter()
        .map(|&v| (v + rng.uniform(-0.1, 0.1)).clamp(0.0, 1.0))
        .collect();
    let desc = ImageDesc::new(ImageLoss::Photometric, h, w, c).batch(n);
    let out = ctx.image_loss(&desc, &x, &y, None).unwrap();
    let r = wgpu_loss::cpu::image::image_loss(&desc, &x, &y, None).unwrap();
    assert_scalar(
        "133 MB photometric loss",
        out.value.unwrap(),
        r.value.unwrap(),
        Tol::new(1e-4, 1e-6),
    );
    let g = out.grad.unwrap();
    assert_close(
        "133 MB photometric grad",
        &g,
        &r.grad,
        Tol::new(1e-3, 1e-4 * largest(&r.grad)),
    );
}
