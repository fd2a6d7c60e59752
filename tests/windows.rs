//! Cross-entropy beyond one binding: logits, probability targets and gradients bound a window
//! of whole workgroups' rows at a time. On a device whose binding limit is lowered (many
//! windows, cheaply) the results are bit for bit those of a device that binds everything at
//! once; and on the default device, logits of three times lavapipe's 128 MiB binding against
//! the f64 twin.

mod common;

use common::*;
use wgpu_loss::{Context, CrossEntropyDesc, DType, Error, Inputs, LossDesc, Outputs, Reduction};

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

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The same loss on both contexts, bit for bit.
#[track_caller]
fn same_bits<D: LossDesc>(what: &str, whole: &Context, windowed: &Context, desc: &D, i: &Inputs) {
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
        "{what} row losses"
    );
    assert_eq!(
        a.grad.as_deref().map(bits),
        b.grad.as_deref().map(bits),
        "{what} grad"
    );
}

#[test]
fn windows_give_the_bits_of_one_binding() {
    let whole = ctx();
    let mut rng = Rng::new(51);
    // (N, C, binding limit): fused blocks of 4 rows; rows chunked over workgroups (with the
    // gradient, and forward only, 32 rows a workgroup with subgroups of 8); odd rows read
    // unaligned one a block.
    for (n, c, limit) in [
        (1001, 1003, 1 << 20),
        (120, 40_000, 8 << 20),
        (500, 10_001, 8 << 20),
    ] {
        let windowed = lowered(limit);
        assert!((n * c * 4) as u64 > 2 * limit as u64, "several windows");
        let logits = rng.vec(n * c, -8.0, 8.0);
        let mut targets = rng.classes(n, c);
        targets[3] = -100;
        let weight = rng.vec(c, 0.5, 2.0);
        for reduction in [Reduction::Mean, Reduction::None] {
            let desc = CrossEntropyDesc::new(n, c)
                .reduction(reduction)
                .label_smoothing(0.1)
                .weight(c)
                .lse(true);
            let inputs = Inputs::classes(&logits, &targets).weight(&weight);
            let what = format!("[{n}, {c}] {reduction} in {limit}-byte bindings");
            same_bits(&what, whole, &windowed, &desc, &inputs);
            let forward = desc.clone().outputs(Outputs::LOSS);
            same_bits(
                &format!("{what}, forward"),
                whole,
                &windowed,
                &forward,
                &inputs,
            );
        }
        // Probability targets, windowed like the logits; bf16 logits with an f32 gradient.
        let probs = rng.distributions(n, c);
        let desc = CrossEntropyDesc::new(n, c).targets(wgpu_loss::Targets::Probabilities);
        let what = format!("[{n}, {c}] soft in {limit}-byte bindings");
        same_bits(
            &what,
            whole,
            &windowed,
            &desc,
            &Inputs::new(&logits, &probs),
        );
        let half: Vec<wgpu_loss::bf16> = logits
            .iter()
            .map(|&x| wgpu_loss::bf16::from_f32(x))
            .collect();
        let desc = CrossEntropyDesc::new(n, c)
            .dtype(DType::BF16)
            .grad_dtype(DType::F32);
        let what = format!("[{n}, {c}] bf16 in {limit}-byte bindings");
        same_bits(
            &what,
            whole,
            &windowed,
            &desc,
            &Inputs::classes(&half, &targets),
        );
    }
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
