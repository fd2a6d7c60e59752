//! The convenience calls reuse a context's device and staging buffers: calls of different
//! families and sizes in any order give the bits of a fresh context (no stale data from a
//! larger call before them), the buffers grow only when a call needs more, and
//! `release_host_buffers` frees them.

use crate::common::*;
use wgpu_loss::{
    Context, CrossEntropyDesc, ImageDesc, Inputs, LossOutput, PointwiseDesc, Reduction,
    image::{ImageInputs, ImageLoss},
    pointwise::Pointwise,
};

fn bits(out: &LossOutput) -> Vec<u32> {
    let mut b: Vec<u32> = out.value.into_iter().map(f32::to_bits).collect();
    for part in [&out.per_element, &out.grad, &out.lse] {
        b.extend(
            part.as_deref()
                .unwrap_or_default()
                .iter()
                .map(|x| x.to_bits()),
        );
    }
    b
}

#[test]
fn calls_of_every_size_reuse_the_buffers_and_give_a_fresh_contexts_bits() {
    let mut rng = Rng::new(95);
    let (small, large) = (1_003, 300_007);
    let (xs, ys) = (rng.vec(small, -3.0, 3.0), rng.vec(small, -3.0, 3.0));
    let (xl, yl) = (rng.vec(large, -3.0, 3.0), rng.vec(large, -3.0, 3.0));
    let (n, c) = (37, 1000);
    let logits = rng.vec(n * c, -6.0, 6.0);
    let targets = rng.classes(n, c);
    let (h, w) = (41, 29);
    let (a, b) = (rng.vec(h * w * 3, 0.0, 1.0), rng.vec(h * w * 3, 0.0, 1.0));
    let mse = |len| PointwiseDesc::new(Pointwise::Mse, len).reduction(Reduction::None);
    let ce = CrossEntropyDesc::new(n, c).lse(true);
    let image = ImageDesc::new(ImageLoss::Photometric, h, w, 3);
    type Call<'a> = Box<dyn Fn(&Context) -> LossOutput + 'a>;
    let calls: Vec<(&str, Call)> = vec![
        (
            "small mse",
            Box::new(|ctx| ctx.loss(&mse(small), &Inputs::new(&xs, &ys)).unwrap()),
        ),
        (
            "large mse",
            Box::new(|ctx| ctx.loss(&mse(large), &Inputs::new(&xl, &yl)).unwrap()),
        ),
        (
            "cross-entropy",
            Box::new(|ctx| ctx.loss(&ce, &Inputs::classes(&logits, &targets)).unwrap()),
        ),
        (
            "image",
            Box::new(|ctx| ctx.loss(&image, &ImageInputs::new(&a[..], &b[..])).unwrap()),
        ),
    ];
    // Each call on a context of its own: what every later call must give.
    let fresh: Vec<Vec<u32>> = calls
        .iter()
        .map(|(_, f)| bits(&f(&Context::new().unwrap())))
        .collect();
    let ctx = Context::new().unwrap();
    assert_eq!(ctx.host_buffer_bytes(), 0);
    // Large before small, small before large, families interleaved.
    let order = [1, 0, 2, 3, 0, 1, 3, 2, 0];
    let mut sizes = Vec::new();
    for &k in &order {
        let (what, f) = &calls[k];
        assert!(
            bits(&f(&ctx)) == fresh[k],
            "{what} after the calls before it: other bits"
        );
        sizes.push(ctx.host_buffer_bytes());
    }
    // The buffers grew while calls needed more, then stayed.
    assert!(sizes.windows(2).all(|s| s[0] <= s[1]), "{sizes:?}");
    let grown = sizes[3];
    assert!(
        grown > 0 && sizes[4..].iter().all(|&s| s == grown),
        "{sizes:?}"
    );
    // A large call's buffers hold the large case's bytes at least (inputs, output, staging).
    assert!(grown >= 3 * 4 * large as u64, "{grown} bytes");
    ctx.release_host_buffers();
    assert_eq!(ctx.host_buffer_bytes(), 0);
    assert!(bits(&calls[0].1(&ctx)) == fresh[0], "after release");
}

/// The benchmark's upload helper uploads through the same buffers.
#[test]
fn the_reused_upload_grows_the_same_buffers() {
    let ctx = Context::new().unwrap();
    wgpu_loss::kernel::upload_reused(&ctx, &[&[1u8; 1000], &[2u8; 3]]).unwrap();
    let bytes = ctx.host_buffer_bytes();
    assert!(bytes >= 1004, "{bytes}");
    wgpu_loss::kernel::upload_reused(&ctx, &[&[1u8; 10]]).unwrap();
    assert_eq!(ctx.host_buffer_bytes(), bytes);
    let too_many = vec![&[0u8; 4][..]; 64];
    assert!(wgpu_loss::kernel::upload_reused(&ctx, &too_many).is_err());
}

/// `loss_into` writes the gradient into the caller's slice: the bits `loss` returns, in the
/// gradient's dtype; slices of another length or dtype, and plans without one gradient, are
/// refused before anything runs, the slice untouched.
#[test]
fn the_gradient_into_the_callers_slice() {
    use wgpu_loss::{DType, Error, MixDesc, Outputs, f16};
    let ctx = ctx();
    let mut rng = Rng::new(96);
    let len = 10_007;
    let (x, y) = (rng.vec(len, -3.0, 3.0), rng.vec(len, -3.0, 3.0));
    let inputs = Inputs::new(&x, &y);
    let desc = PointwiseDesc::new(Pointwise::Huber { delta: 0.5 }, len);
    let want = ctx.loss(&desc, &inputs).unwrap();
    let mut grad = vec![f32::NAN; len];
    let out = ctx.loss_into(&desc, &inputs, &mut grad).unwrap();
    assert_eq!(out.grad, None);
    assert_eq!(out.value.map(f32::to_bits), want.value.map(f32::to_bits));
    let bits = |v: &[f32]| v.iter().map(|g| g.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&grad), bits(want.grad.as_deref().unwrap()));
    // Short, long, another dtype, no gradient, a weighted sum: refused, the slice untouched.
    for n in [len - 1, len + 1, 0] {
        let mut other = vec![7.0f32; n];
        let e = ctx.loss_into(&desc, &inputs, &mut other).unwrap_err();
        assert!(
            matches!(e, Error::LengthMismatch { expected, actual, .. } if expected == len && actual == n),
            "{e}"
        );
        assert!(other.iter().all(|&g| g == 7.0));
    }
    let mut halves = vec![f16::from_f32(7.0); len];
    let e = ctx.loss_into(&desc, &inputs, &mut halves).unwrap_err();
    assert!(matches!(e, Error::InvalidOption { .. }), "{e}");
    let e = ctx
        .loss_into(&desc.clone().outputs(Outputs::LOSS), &inputs, &mut grad)
        .unwrap_err();
    assert!(matches!(e, Error::Binding("grad", _)), "{e}");
    let mix = MixDesc::new().term(1.0, desc.clone());
    let e = ctx.loss_into(&mix, &[inputs], &mut grad).unwrap_err();
    assert!(matches!(e, Error::Binding("grad", _)), "{e}");
    // An f16 gradient into an f16 slice.
    let (xh, yh): (Vec<f16>, Vec<f16>) = (
        x.iter().map(|&v| f16::from_f32(v)).collect(),
        y.iter().map(|&v| f16::from_f32(v)).collect(),
    );
    let desc = PointwiseDesc::new(Pointwise::Mse, len).dtype(DType::F16);
    let inputs = Inputs::new(&xh, &yh);
    let want = ctx.loss(&desc, &inputs).unwrap();
    let out = ctx.loss_into(&desc, &inputs, &mut halves).unwrap();
    assert_eq!(out.value.map(f32::to_bits), want.value.map(f32::to_bits));
    let got: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    assert_eq!(bits(&got), bits(want.grad.as_deref().unwrap()));
    // An image loss.
    let (h, w) = (23, 31);
    let (a, b) = (rng.vec(h * w * 3, 0.0, 1.0), rng.vec(h * w * 3, 0.0, 1.0));
    let desc = ImageDesc::new(ImageLoss::Photometric, h, w, 3);
    let inputs = ImageInputs::new(&a[..], &b[..]);
    let want = ctx.loss(&desc, &inputs).unwrap();
    let mut grad = vec![0.0f32; h * w * 3];
    ctx.loss_into(&desc, &inputs, &mut grad).unwrap();
    assert_eq!(bits(&grad), bits(want.grad.as_deref().unwrap()));
}

/// Inputs that together exceed the device's largest buffer are staged in groups that fit it
/// (here two 800 KB inputs on a device whose buffers hold at most 1 MiB): the bits of a device
/// that stages them at once. And an upload of nothing leaves the staging buffer usable.
#[test]
fn inputs_larger_together_than_a_buffer_are_staged_in_groups() {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let mut limits = adapter.limits();
    limits.max_buffer_size = 1 << 20;
    limits.max_storage_buffer_binding_size = 1 << 20;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap();
    let small = Context::from_device(device, queue).unwrap();
    let mut rng = Rng::new(97);
    let len = 200_003;
    let (x, y) = (rng.vec(len, -3.0, 3.0), rng.vec(len, -3.0, 3.0));
    let desc = PointwiseDesc::new(Pointwise::Mse, len);
    let want = ctx().loss(&desc, &Inputs::new(&x, &y)).unwrap();
    for _ in 0..2 {
        let got = small.loss(&desc, &Inputs::new(&x, &y)).unwrap();
        assert!(bits(&got) == bits(&want), "staged in groups: other bits");
    }
    wgpu_loss::kernel::upload_reused(&small, &[]).unwrap();
    let got = small.loss(&desc, &Inputs::new(&x, &y)).unwrap();
    assert!(bits(&got) == bits(&want), "after an empty upload");
}
