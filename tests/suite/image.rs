//! Image losses (L1, MSE, PSNR, SSIM, D-SSIM, photometric) against their f64 twin
//! (`cpu::image`), the twin's gradients against central differences, and the GPU through
//! buffers and textures of every format.

use crate::common::{
    Rng, Tol, assert_close, assert_scalar, ctx, largest, poisoned, read, submit, upload,
};
use wgpu_loss::cpu::image::image_loss;
use wgpu_loss::{
    ImageDesc, Outputs, Plan, Reduction,
    image::{GradTarget, ImageBuffers, ImageInput, ImageLoss, ImageMask, ImageSource, Padding},
};

/// Sums over up to a few hundred thousand f32 terms in a fixed tree; per-pixel SSIM from 121-tap
/// f32 filters (statistics differences of close numbers: sxx = E[x²] - mx², relative error up to
/// ~1e-6 / variance). The gradient adds 121 more taps per map.
const VALUE: Tol = Tol::new(2e-5, 1e-6);

fn grad_tol(reference: &[f64]) -> Tol {
    Tol::new(2e-3, 2e-4 * largest(reference))
}

/// Random images in [0, 1] (the renderers' range), with structure: a smooth field plus noise, so
/// that windows hold both correlated and uncorrelated content.
fn images(rng: &mut Rng, n: usize, h: usize, w: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::with_capacity(n * h * w * c);
    let mut y = Vec::with_capacity(n * h * w * c);
    for i in 0..n {
        for yy in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    let base = 0.5
                        + 0.3
                            * ((xx as f32 * 0.31 + yy as f32 * 0.17 + ch as f32 + i as f32).sin());
                    let t = (base + rng.uniform(-0.1, 0.1)).clamp(0.0, 1.0);
                    x.push((t + rng.uniform(-0.15, 0.15)).clamp(0.0, 1.0));
                    y.push(t);
                }
            }
        }
    }
    (x, y)
}

/// Runs `desc` through the convenience call and checks loss (or per-element losses) and
/// gradient against the twin.
fn check(desc: &ImageDesc, x: &[f32], y: &[f32], mask: Option<&[f32]>) -> (f64, f64) {
    check_on(ctx(), desc, x, y, mask)
}

fn check_on(
    ctx: &wgpu_loss::Context,
    desc: &ImageDesc,
    x: &[f32],
    y: &[f32],
    mask: Option<&[f32]>,
) -> (f64, f64) {
    let what = format!("{desc:?}");
    let out = ctx.image_loss(desc, x, y, mask).unwrap();
    let reference = image_loss(desc, x, y, mask).unwrap();
    let mut value_err = 0.0;
    match (reference.value, &reference.per_element) {
        (Some(v), _) => {
            let gpu = out.value.expect("a reduced loss");
            assert_scalar(&format!("{what} loss"), gpu, v, VALUE);
            value_err = (gpu as f64 - v).abs() / v.abs().max(1e-12);
        }
        (None, Some(map)) => {
            let gpu = out.per_element.as_ref().expect("per-element losses");
            assert_close(
                &format!("{what} per element"),
                gpu,
                map,
                Tol::new(1e-4, 1e-5),
            );
        }
        _ => unreachable!(),
    }
    let mut grad_err = 0.0;
    if desc.outputs.grad {
        let gpu = out.grad.as_ref().expect("a gradient");
        assert_close(
            &format!("{what} grad"),
            gpu,
            &reference.grad,
            grad_tol(&reference.grad),
        );
        grad_err = crate::common::worst_relative(gpu, &reference.grad);
    }
    (value_err, grad_err)
}

/// Every loss, padding and reduction the crate accepts for `[n, h, w, c]` images.
fn every_desc(n: usize, h: usize, w: usize, c: usize, mask: ImageMask) -> Vec<ImageDesc> {
    let mut out = Vec::new();
    for loss in ImageLoss::ALL {
        for padding in [Padding::Same, Padding::Valid] {
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let desc = ImageDesc::new(loss, h, w, c)
                    .batch(n)
                    .padding(padding)
                    .reduction(reduction)
                    .mask(mask);
                if desc.check().is_ok() {
                    out.push(desc);
                }
            }
        }
    }
    out
}

#[test]
fn every_loss_and_padding_matches_the_twin() {
    let mut rng = Rng::new(11);
    // Shapes that are not multiples of the 16 x 8 tile, a batch, one channel to four.
    for &(n, h, w, c) in &[(1, 37, 23, 3), (2, 19, 29, 1), (1, 12, 40, 4)] {
        let (x, y) = images(&mut rng, n, h, w, c);
        for desc in every_desc(n, h, w, c, ImageMask::None) {
            let (v, g) = check(&desc, &x, &y, None);
            if desc.reduction == Reduction::Mean {
                let (loss, padding) = (desc.loss, desc.padding);
                println!("{loss} {padding:?} [{n}, {h}, {w}, {c}]: loss {v:.1e}, grad {g:.1e}");
            }
        }
    }
}

/// The twin's analytic gradients against central differences of its own f64 loss.
#[test]
fn twin_gradients_match_central_differences() {
    let mut rng = Rng::new(5);
    let (n, h, w, c) = (1, 14, 13, 2);
    let (x, y) = images(&mut rng, n, h, w, c);
    let mask: Vec<f32> = (0..h * w)
        .map(|i| if i % 7 == 0 { 0.0 } else { 0.75 })
        .collect();
    for loss in ImageLoss::ALL {
        for padding in [Padding::Same, Padding::Valid] {
            for m in [None, Some(&mask[..])] {
                let desc = ImageDesc::new(loss, h, w, c)
                    .padding(padding)
                    .mask(if m.is_some() {
                        ImageMask::Buffer
                    } else {
                        ImageMask::None
                    });
                let reference = image_loss(&desc, &x, &y, m).unwrap();
                // f64 central differences (the twin reads f32: step in f32, evaluate in f64).
                for &i in &[0usize, 5, 40, 77, 150, 200, h * w * c - 1] {
                    let eps = 1e-3f32;
                    let at = |v: f32| {
                        let mut xp = x.clone();
                        xp[i] = v;
                        image_loss(&desc, &xp, &y, m).unwrap().value.unwrap()
                    };
                    let (lo, hi) = (x[i] - eps, x[i] + eps);
                    let numeric = (at(hi) - at(lo)) / (hi as f64 - lo as f64);
                    let analytic = reference.grad[i];
                    let scale = largest(&reference.grad);
                    // L1's kink: skip elements within eps of the target.
                    if matches!(loss, ImageLoss::L1 | ImageLoss::Photometric)
                        && (x[i] - y[i]).abs() < 2.0 * eps
                    {
                        continue;
                    }
                    assert!(
                        (numeric - analytic).abs() <= 1e-3 * scale + 1e-4 * analytic.abs(),
                        "{loss} {padding:?} mask {}: element {i}: analytic {analytic} numeric {numeric}",
                        m.is_some()
                    );
                }
            }
        }
    }
}

/// A texture of `format` holding `values` (`[H, W, 4]`, or `[H, W]` for r32float, in [0, 1]),
/// and the values the kernels read from it (decoded as `textureLoad` does, or as stored when
/// `encoded`).
fn texture(
    format: wgpu::TextureFormat,
    w: usize,
    h: usize,
    values: &[f32],
    usage: wgpu::TextureUsages,
) -> (wgpu::Texture, Vec<f32>) {
    use wgpu::TextureFormat as F;
    let ctx = ctx();
    let (bytes, seen): (Vec<u8>, Vec<f32>) = match format {
        F::Rgba8Unorm | F::Rgba8UnormSrgb => {
            let q: Vec<u8> = values.iter().map(|v| (v * 255.0).round() as u8).collect();
            let seen = q
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    let v = b as f32 / 255.0;
                    // The sRGB decode of the colour channels (alpha is linear).
                    if format == F::Rgba8UnormSrgb && i % 4 != 3 {
                        srgb_decode(v)
                    } else {
                        v
                    }
                })
                .collect();
            (q, seen)
        }
        F::Rgba16Float => {
            let q: Vec<wgpu_loss::f16> = values
                .iter()
                .map(|&v| wgpu_loss::f16::from_f32(v))
                .collect();
            (
                bytemuck::cast_slice(&q).to_vec(),
                q.iter().map(|v| v.to_f32()).collect(),
            )
        }
        _ => (bytemuck::cast_slice(values).to_vec(), values.to_vec()),
    };
    let _guard = ctx.lock();
    let t = ctx.device().create_texture(&wgpu::TextureDescriptor {
        label: Some("test image"),
        size: wgpu::Extent3d {
            width: w as u32,
            height: h as u32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: usage | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let row = bytes.len() / h;
    ctx.queue().write_texture(
        t.as_image_copy(),
        &bytes,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(row as u32),
            rows_per_image: None,
        },
        t.size(),
    );
    (t, seen)
}

fn srgb_decode(v: f32) -> f32 {
    let v = v as f64;
    (if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }) as f32
}

/// Reads a storage texture of 4 f32 (rgba32float) or 1 (r32float) a texel back, `[H, W, ch]`.
fn read_texture(t: &wgpu::Texture, ch: usize) -> Vec<f32> {
    let ctx = ctx();
    let (w, h) = (t.width() as usize, t.height() as usize);
    let row = (w * ch * 4).next_multiple_of(256);
    let buffer = crate::common::create(
        ctx,
        &wgpu::BufferDescriptor {
            label: Some("texture readback"),
            size: (row * h) as u64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        },
    );
    submit(ctx, |e| {
        e.copy_texture_to_buffer(
            t.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(row as u32),
                    rows_per_image: None,
                },
            },
            t.size(),
        )
    });
    let all = read(ctx, &buffer, row * h / 4);
    (0..h)
        .flat_map(|y| all[y * row / 4..y * row / 4 + w * ch].to_vec())
        .collect()
}

/// What the kernels read from a 4-channel texture: its per-element L1 distance from a zero
/// buffer, checked within 2e-3 of `expected` (the formula's decode).
fn as_read(t: &wgpu::Texture, format: wgpu::TextureFormat, expected: &[f32]) -> Vec<f32> {
    let ctx = ctx();
    let (w, h) = (t.width() as usize, t.height() as usize);
    let desc = ImageDesc::new(ImageLoss::L1, h, w, 4)
        .pred(ImageSource::Texture(format))
        .reduction(Reduction::None)
        .outputs(Outputs::LOSS);
    let plan = Plan::new(ctx, &desc).unwrap();
    let zero = upload(ctx, &vec![0.0f32; h * w * 4]);
    let out = poisoned(ctx, h * w * 4);
    let b = ImageBuffers::new(t, ImageInput::buffer(&*zero)).loss(&*out);
    let bound = plan.bind(&b).unwrap();
    submit(ctx, |e| plan.record(e, &bound).unwrap());
    let seen = read(ctx, &out, h * w * 4);
    let worst = seen
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // Lavapipe's decode is 1.2e-3 off the formula at 218/255 (0.7011): within half an 8-bit
    // step of the value decoded.
    assert!(
        worst <= 2e-3,
        "{format:?}: decode differs from the formula by {worst}"
    );
    seen
}

/// The first `c` of every `stride` values.
fn channels(v: &[f32], stride: usize, c: usize) -> Vec<f32> {
    v.chunks(stride).flat_map(|p| p[..c].to_vec()).collect()
}

/// Prediction and target as textures of every format the kernels read, the mask as the target's
/// alpha or as a texture, the gradient into a storage texture or a buffer: the same numbers as
/// the twin on the values the kernels read.
#[test]
fn textures_of_every_format() {
    use wgpu::TextureFormat as F;
    use wgpu::TextureUsages as U;
    let ctx = ctx();
    let mut rng = Rng::new(21);
    let (h, w) = (21, 27);
    let (x4, y4) = images(&mut rng, 1, h, w, 4);
    // The target's alpha: a mask of 0 and 1 and fractions.
    let y4: Vec<f32> = y4
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i % 4 == 3 {
                [0.0, 1.0, 0.5][(i / 4) % 3]
            } else {
                v
            }
        })
        .collect();
    let mask_values: Vec<f32> = (0..h * w)
        .map(|i| if i % 5 == 0 { 0.0 } else { 1.0 })
        .collect();
    let formats = [
        F::Rgba8Unorm,
        F::Rgba8UnormSrgb,
        F::Rgba16Float,
        F::Rgba32Float,
        F::R32Float,
    ];
    for format in formats {
        for (loss, mask) in [
            (ImageLoss::Photometric, ImageMask::None),
            (ImageLoss::Ssim, ImageMask::TargetAlpha),
            (ImageLoss::Mse, ImageMask::Texture(F::R32Float)),
        ] {
            for encoded in [false, true] {
                if encoded && format != F::Rgba8UnormSrgb {
                    continue;
                }
                let one = format == F::R32Float;
                if one && mask == ImageMask::TargetAlpha {
                    continue;
                }
                let (c, stride) = if one { (1, 1) } else { (3, 4) };
                let (xs, ys) = if one {
                    (channels(&x4, 4, 1), channels(&y4, 4, 1))
                } else {
                    (x4.clone(), y4.clone())
                };
                let (xt, xseen) = texture(format, w, h, &xs, U::TEXTURE_BINDING);
                let (yt, yseen) = texture(format, w, h, &ys, U::TEXTURE_BINDING);
                let (mt, _) = texture(F::R32Float, w, h, &mask_values, U::TEXTURE_BINDING);
                let grad_format = if one { F::R32Float } else { F::Rgba32Float };
                let gt = ctx.device().create_texture(&wgpu::TextureDescriptor {
                    label: Some("grad"),
                    size: xt.size(),
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: grad_format,
                    usage: U::STORAGE_BINDING | U::COPY_SRC,
                    view_formats: &[],
                });
                let desc = ImageDesc::new(loss, h, w, c)
                    .pred(ImageSource::Texture(format))
                    .target(ImageSource::Texture(format))
                    .mask(mask)
                    .grad_to(GradTarget::Texture(grad_format))
                    .srgb_encoded(encoded);
                let plan = Plan::new(ctx, &desc).unwrap();
                let loss_buf = poisoned(ctx, 1);
                let mut b = ImageBuffers::new(&xt, &yt).loss(&*loss_buf).grad(&gt);
                if let ImageMask::Texture(_) = mask {
                    b = b.mask(&mt);
                }
                let bound = plan.bind(&b).unwrap();
                submit(ctx, |e| plan.record(e, &bound).unwrap());
                // What the kernels read: sRGB decoded, or the stored values when encoded.
                let (xv, yv) = if encoded {
                    let q = |v: &[f32]| {
                        v.iter()
                            .map(|v| (v * 255.0).round() / 255.0)
                            .collect::<Vec<f32>>()
                    };
                    (q(&xs), q(&ys))
                } else {
                    (xseen, yseen)
                };
                // The device's sRGB decode may differ from the formula by Vulkan's allowance:
                // take what the kernels read from the L1 map against zero, after checking it.
                let (xv, yv) = if format == F::Rgba8UnormSrgb && !encoded {
                    (as_read(&xt, format, &xv), as_read(&yt, format, &yv))
                } else {
                    (xv, yv)
                };
                let m: Option<Vec<f32>> = match mask {
                    ImageMask::TargetAlpha => Some(yv.chunks(4).map(|p| p[3]).collect()),
                    ImageMask::Texture(_) => Some(mask_values.clone()),
                    _ => None,
                };
                let twin_desc = ImageDesc::new(loss, h, w, c).mask(if m.is_some() {
                    ImageMask::Buffer
                } else {
                    ImageMask::None
                });
                let reference = image_loss(
                    &twin_desc,
                    &channels(&xv, stride, c),
                    &channels(&yv, stride, c),
                    m.as_deref(),
                )
                .unwrap();
                let what = format!("{loss} {format:?} {mask:?} encoded {encoded}");
                let value = read(ctx, &loss_buf, 1)[0];
                assert_scalar(&what, value, reference.value.unwrap(), VALUE);
                let g = read_texture(&gt, if one { 1 } else { 4 });
                assert_close(
                    &format!("{what} grad"),
                    &channels(&g, stride, c),
                    &reference.grad,
                    grad_tol(&reference.grad),
                );
                if !one {
                    assert!(
                        g.chunks(4).all(|p| p[3] == 0.0),
                        "{what}: channel past C written"
                    );
                }
            }
        }
    }
}

/// 1 x 1 and 11 x 11 images, constant images (SSIM 1 where x = y), fractional masks, a mask
/// of zeros (the mean of nothing: NaN, as PyTorch's mean of an empty tensor).
#[test]
fn small_constant_and_masked_images() {
    let mut rng = Rng::new(3);
    // One pixel (same padding: its window is the zero border but for its centre), one window.
    for &(h, w, c, padding) in &[
        (1, 1, 3, Padding::Same),
        (11, 11, 2, Padding::Valid),
        (11, 11, 1, Padding::Same),
    ] {
        let (x, y) = images(&mut rng, 1, h, w, c);
        for loss in ImageLoss::ALL {
            check(
                &ImageDesc::new(loss, h, w, c).padding(padding),
                &x,
                &y,
                None,
            );
        }
    }
    // Constant images: where x = y, S = 1 at every pixel (variances 0 inside, the same zero
    // border on both), D-SSIM 0 and the SSIM gradient 0.
    let (h, w, c) = (13, 18, 3);
    let flat = vec![0.4f32; h * w * c];
    for padding in [Padding::Same, Padding::Valid] {
        let out = ctx()
            .image_loss(
                &ImageDesc::new(ImageLoss::Ssim, h, w, c).padding(padding),
                &flat,
                &flat,
                None,
            )
            .unwrap();
        assert!(
            (out.value.unwrap() - 1.0).abs() <= 1e-6,
            "{padding:?}: {:?}",
            out.value
        );
        assert!(out.grad.unwrap().iter().all(|g| g.abs() <= 1e-6));
        let other = vec![0.7f32; h * w * c];
        check(
            &ImageDesc::new(ImageLoss::Dssim, h, w, c).padding(padding),
            &flat,
            &other,
            None,
        );
    }
    // Masks: fractions and zeros, every loss and both paddings, a batch of two.
    let (n, h, w, c) = (2, 17, 22, 3);
    let (x, y) = images(&mut rng, n, h, w, c);
    let mask: Vec<f32> = (0..n * h * w)
        .map(|i| [0.0, 1.0, 0.25, 1.0, 0.6][i % 5])
        .collect();
    for desc in every_desc(n, h, w, c, ImageMask::Buffer) {
        check(&desc, &x, &y, Some(&mask));
    }
    let zeros = vec![0.0f32; n * h * w];
    let desc = ImageDesc::new(ImageLoss::Photometric, h, w, c)
        .batch(n)
        .mask(ImageMask::Buffer);
    let out = ctx().image_loss(&desc, &x, &y, Some(&zeros)).unwrap();
    assert!(out.value.unwrap().is_nan());
}

/// An image past lavapipe's loop cap (every invocation's loops are bounded by the tile, not the
/// image: 1,500 tiles here), the photometric loss and its gradient against the twin.
#[test]
fn large_image() {
    let mut rng = Rng::new(8);
    let (h, w, c) = (241, 397, 3);
    let (x, y) = images(&mut rng, 1, h, w, c);
    for padding in [Padding::Same, Padding::Valid] {
        let (v, g) = check(
            &ImageDesc::new(ImageLoss::Photometric, h, w, c).padding(padding),
            &x,
            &y,
            None,
        );
        println!("photometric {padding:?} {h} x {w} x {c}: loss {v:.1e}, grad {g:.1e}");
    }
}

/// The recording API on the caller's buffers, poisoned before each run: the same bits twice,
/// the inputs untouched.
#[test]
fn recording_on_buffers_is_deterministic() {
    let ctx = ctx();
    let mut rng = Rng::new(13);
    let (n, h, w, c) = (2, 30, 35, 3);
    let (x, y) = images(&mut rng, n, h, w, c);
    let desc = ImageDesc::new(ImageLoss::Photometric, h, w, c).batch(n);
    let plan = Plan::new(ctx, &desc).unwrap();
    let (xb, yb) = (upload(ctx, &x), upload(ctx, &y));
    let (loss, grad) = (poisoned(ctx, 1), poisoned(ctx, x.len()));
    let b = ImageBuffers::new(&*xb, &*yb).loss(&*loss).grad(&*grad);
    let bound = plan.bind(&b).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        crate::common::poison(ctx, &loss);
        crate::common::poison(ctx, &grad);
        submit(ctx, |e| plan.record(e, &bound).unwrap());
        runs.push((read(ctx, &loss, 1), read(ctx, &grad, x.len())));
    }
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&runs[0].0), bits(&runs[1].0));
    assert_eq!(bits(&runs[0].1), bits(&runs[1].1));
    let reference = image_loss(&desc, &x, &y, None).unwrap();
    assert_scalar("photometric", runs[0].0[0], reference.value.unwrap(), VALUE);
    assert_close(
        "photometric grad",
        &runs[0].1,
        &reference.grad,
        grad_tol(&reference.grad),
    );
    assert_eq!(read(ctx, &xb, x.len()), x, "the prediction was modified");
}

/// Bad descriptions and bindings are typed errors, never panics.
#[test]
fn refused() {
    use wgpu::TextureFormat as F;
    use wgpu::TextureUsages as U;
    let ctx = ctx();
    let bad = [
        ImageDesc::new(ImageLoss::Ssim, 0, 5, 3),
        ImageDesc::new(ImageLoss::Ssim, 5, 5, 5),
        ImageDesc::new(ImageLoss::Ssim, 10, 30, 1).padding(Padding::Valid),
        ImageDesc::new(ImageLoss::Psnr, 5, 5, 1).reduction(Reduction::Sum),
        ImageDesc::new(ImageLoss::Photometric, 20, 20, 1)
            .padding(Padding::Valid)
            .reduction(Reduction::None),
        ImageDesc::new(ImageLoss::Photometric, 5, 5, 1).lambda(1.5),
        ImageDesc::new(ImageLoss::Ssim, 5, 5, 1).data_range(0.0),
        ImageDesc::new(ImageLoss::Ssim, 5, 5, 1)
            .batch(2)
            .pred(ImageSource::Texture(F::Rgba8Unorm)),
        ImageDesc::new(ImageLoss::Ssim, 5, 5, 2).pred(ImageSource::Texture(F::R32Float)),
        ImageDesc::new(ImageLoss::Ssim, 5, 5, 1).pred(ImageSource::Texture(F::Bgra8Unorm)),
        ImageDesc::new(ImageLoss::Ssim, 5, 5, 4).mask(ImageMask::TargetAlpha),
        ImageDesc::new(ImageLoss::Ssim, 5, 5, 1).grad_to(GradTarget::Texture(F::Rgba8Unorm)),
    ];
    for desc in bad {
        let err = Plan::new(ctx, &desc).unwrap_err();
        assert!(
            matches!(
                err,
                wgpu_loss::Error::InvalidOption { .. } | wgpu_loss::Error::Empty(_)
            ),
            "{desc:?}: {err}"
        );
    }
    let (h, w) = (9, 10);
    let x = vec![0.5f32; h * w * 4];
    // Wrong lengths through the convenience call.
    let desc = ImageDesc::new(ImageLoss::L1, h, w, 4);
    assert!(ctx.image_loss(&desc, &x[1..], &x, None).is_err());
    assert!(ctx.image_loss(&desc, &x, &x, Some(&x)).is_err());
    // Textures of the wrong format, size or usage; a buffer for a texture; the gradient texture
    // also an input.
    let desc = ImageDesc::new(ImageLoss::Ssim, h, w, 3)
        .pred(ImageSource::Texture(F::Rgba32Float))
        .grad_to(GradTarget::Texture(F::Rgba32Float));
    let plan = Plan::new(ctx, &desc).unwrap();
    let (good, _) = texture(
        F::Rgba32Float,
        w,
        h,
        &x,
        U::TEXTURE_BINDING | U::STORAGE_BINDING,
    );
    let (small, _) = texture(
        F::Rgba32Float,
        w - 1,
        h,
        &x[..(w - 1) * h * 4],
        U::TEXTURE_BINDING,
    );
    let (other, _) = texture(F::Rgba16Float, w, h, &x, U::TEXTURE_BINDING);
    let (no_storage, _) = texture(F::Rgba32Float, w, h, &x, U::TEXTURE_BINDING);
    let (grad_tex, _) = texture(F::Rgba32Float, w, h, &x, U::STORAGE_BINDING);
    let yb = upload(ctx, &x[..h * w * 3]);
    let loss = poisoned(ctx, 1);
    let attempts: Vec<ImageBuffers<'_>> = vec![
        ImageBuffers::new(&small, &*yb).loss(&*loss).grad(&grad_tex),
        ImageBuffers::new(&other, &*yb).loss(&*loss).grad(&grad_tex),
        ImageBuffers::new(&good, &*yb)
            .loss(&*loss)
            .grad(&no_storage),
        ImageBuffers::new(&good, &*yb).loss(&*loss).grad(&good),
        ImageBuffers::new(&*yb, &*yb).loss(&*loss).grad(&grad_tex),
        ImageBuffers::new(&good, &*yb).grad(&grad_tex),
        ImageBuffers::new(&good, &*yb).loss(&*loss),
        ImageBuffers::new(&good, &good).loss(&*loss).grad(&grad_tex),
    ];
    for b in &attempts {
        assert!(plan.bind(b).is_err(), "{b:?} was accepted");
    }
    let err = plan
        .bind(&ImageBuffers::new(&good, &*yb).loss(&*loss).grad(&good))
        .unwrap_err();
    assert!(
        matches!(
            err,
            wgpu_loss::Error::Aliased {
                a: "grad",
                b: "pred"
            }
        ),
        "{err}"
    );
    assert!(
        plan.bind(&ImageBuffers::new(&good, &*yb).loss(&*loss).grad(&grad_tex))
            .is_ok()
    );
}

/// SSIM, PSNR and the photometric loss against reference implementations: the 3DGS
/// reference's convention in PyTorch (padding same, with autograd's gradients), pytorch-msssim
/// and scikit-image (padding valid), scikit-image's PSNR (tests/fixtures/ssim.json, made once by
/// tests/fixtures/ssim_fixtures.py). The f64 twin agrees to 1e-9 with the f64 references (1e-6
/// with the valid ones, which differ from each other by 1e-7), the GPU within its f32
/// tolerances.
#[test]
fn reference_implementations() {
    use serde_json::Value;
    let doc: Value =
        serde_json::from_str(include_str!("../fixtures/ssim.json")).expect("ssim.json parses");
    let f64s = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let close = |what: &str, a: f64, b: f64, rel: f64| {
        assert!(
            (a - b).abs() <= rel * b.abs().max(1e-12),
            "{what}: {a} against {b}"
        );
    };
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let shape: Vec<usize> = f64s(&case["shape"]).iter().map(|&v| v as usize).collect();
        let (n, h, w, c) = (shape[0], shape[1], shape[2], shape[3]);
        let range = case["data_range"].as_f64().unwrap() as f32;
        let x: Vec<f32> = f64s(&case["x"]).iter().map(|&v| v as f32).collect();
        let y: Vec<f32> = f64s(&case["y"]).iter().map(|&v| v as f32).collect();
        let desc = |loss| ImageDesc::new(loss, h, w, c).batch(n).data_range(range);
        let mut expect = vec![
            (desc(ImageLoss::Ssim), "same_ssim", Some("same_grad_ssim")),
            (
                desc(ImageLoss::Photometric),
                "photometric",
                Some("grad_photometric"),
            ),
            (desc(ImageLoss::Psnr), "psnr", None),
        ];
        for key in ["valid_ssim_msssim", "valid_ssim_skimage"] {
            if !case[key].is_null() {
                expect.push((desc(ImageLoss::Ssim).padding(Padding::Valid), key, None));
            }
        }
        for (desc, key, grad) in expect {
            let what = format!("{name}: {key}");
            let value = case[key].as_f64().unwrap();
            let twin = image_loss(&desc, &x, &y, None).unwrap();
            let rel = if key.starts_with("valid") { 1e-6 } else { 1e-9 };
            close(&format!("{what} twin"), twin.value.unwrap(), value, rel);
            let gpu = ctx().image_loss(&desc, &x, &y, None).unwrap();
            assert_scalar(&format!("{what} gpu"), gpu.value.unwrap(), value, VALUE);
            if let Some(g) = grad {
                let reference = f64s(&case[g]);
                let scale = largest(&reference);
                for (i, (t, r)) in twin.grad.iter().zip(&reference).enumerate() {
                    assert!(
                        (t - r).abs() <= 1e-9 * scale,
                        "{what} twin grad {i}: {t} against {r}"
                    );
                }
                assert_close(
                    &format!("{what} gpu grad"),
                    gpu.grad.as_ref().unwrap(),
                    &reference,
                    grad_tol(&reference),
                );
                println!(
                    "{what}: gpu loss {:.1e}, grad worst relative {:.1e}",
                    (gpu.value.unwrap() as f64 - value).abs() / value.abs(),
                    crate::common::worst_relative(gpu.grad.as_ref().unwrap(), &reference)
                );
            } else {
                println!(
                    "{what}: gpu {:.1e}",
                    (gpu.value.unwrap() as f64 - value).abs() / value.abs()
                );
            }
        }
    }
}

/// On a device with WebGPU's default limits (16 KiB of workgroup memory, 8 storage buffers a
/// stage), without subgroups, and with at most 5 workgroups a dimension (every dispatch folded):
/// the same numbers.
#[test]
fn webgpu_default_limits() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits {
            max_compute_workgroups_per_dimension: 5,
            ..wgpu::Limits::default()
        },
        ..Default::default()
    }))
    .unwrap();
    let ctx = wgpu_loss::Context::from_device(device, queue).unwrap();
    assert!(!ctx.uses_subgroups());
    let mut rng = Rng::new(41);
    let (n, h, w, c) = (2, 45, 38, 3);
    let (x, y) = images(&mut rng, n, h, w, c);
    let mask: Vec<f32> = (0..n * h * w).map(|i| [1.0, 0.3][i % 2]).collect();
    for desc in every_desc(n, h, w, c, ImageMask::Buffer) {
        check_on(&ctx, &desc, &x, &y, Some(&mask));
    }
}

/// The GPU's gradients against central differences of the GPU's own loss (f32: steps of 1e-2
/// on values in [0, 1], where the loss moves 1e-4 and its rounding 1e-8), on a small image so
/// that each element's share of the loss is large; L1's kink avoided.
#[test]
fn gpu_gradients_match_central_differences() {
    let mut rng = Rng::new(17);
    let (h, w, c) = (9, 8, 2);
    let (x, y) = images(&mut rng, 1, h, w, c);
    for loss in [
        ImageLoss::Mse,
        ImageLoss::Psnr,
        ImageLoss::Ssim,
        ImageLoss::Dssim,
        ImageLoss::Photometric,
    ] {
        for padding in [Padding::Same, Padding::Valid] {
            let (h, w) = if padding == Padding::Valid {
                (12, 13)
            } else {
                (h, w)
            };
            let (x, y) = if padding == Padding::Valid {
                images(&mut rng, 1, h, w, c)
            } else {
                (x.clone(), y.clone())
            };
            let desc = ImageDesc::new(loss, h, w, c).padding(padding);
            let grad = ctx().image_loss(&desc, &x, &y, None).unwrap().grad.unwrap();
            let value = |v: &[f32]| {
                let d = desc.outputs(Outputs::LOSS);
                ctx().image_loss(&d, v, &y, None).unwrap().value.unwrap() as f64
            };
            let scale = grad.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
            for i in (0..x.len()).step_by(7) {
                let eps = 1e-2f32;
                if (x[i] - y[i]).abs() < 2.0 * eps {
                    continue;
                }
                let (mut lo, mut hi) = (x.clone(), x.clone());
                lo[i] -= eps;
                hi[i] += eps;
                let numeric = (value(&hi) - value(&lo)) / (hi[i] as f64 - lo[i] as f64);
                let analytic = grad[i] as f64;
                assert!(
                    (numeric - analytic).abs() <= 2e-2 * scale,
                    "{loss} {padding:?} element {i}: gpu {analytic} central differences {numeric} (largest {scale})"
                );
            }
        }
    }
}

/// Values far from [0, 1]: images of ±1e4 with a data range of 2e4 (HDR renders, unnormalised
/// data) against the twin, subnormal values (the shift keeps their statistics), and a NaN pixel,
/// which makes the loss NaN (as PyTorch's).
#[test]
fn extreme_values() {
    let mut rng = Rng::new(23);
    let (h, w, c) = (21, 19, 3);
    let (x, y) = images(&mut rng, 1, h, w, c);
    let scale = |v: &[f32], s: f32| v.iter().map(|a| (a - 0.5) * s).collect::<Vec<f32>>();
    let (xb, yb) = (scale(&x, 2e4), scale(&y, 2e4));
    for loss in ImageLoss::ALL {
        check(
            &ImageDesc::new(loss, h, w, c).data_range(2e4),
            &xb,
            &yb,
            None,
        );
    }
    // Subnormal images (values of about 1e-38): finite losses.
    let (xs, ys) = (scale(&x, 1e-38), scale(&y, 1e-38));
    for loss in [ImageLoss::Ssim, ImageLoss::L1] {
        let desc = ImageDesc::new(loss, h, w, c).outputs(Outputs::LOSS);
        let out = ctx().image_loss(&desc, &xs, &ys, None).unwrap();
        assert!(out.value.unwrap().is_finite(), "{loss}: {:?}", out.value);
    }
    let mut xn = x.clone();
    xn[5 * w * c + 7] = f32::NAN;
    for loss in ImageLoss::ALL {
        let out = ctx()
            .image_loss(&ImageDesc::new(loss, h, w, c), &xn, &y, None)
            .unwrap();
        assert!(out.value.unwrap().is_nan(), "{loss}: {:?}", out.value);
    }
}
