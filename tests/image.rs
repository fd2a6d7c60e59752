//! Image losses (L1, MSE, PSNR, SSIM, D-SSIM, photometric) against their f64 twin
//! (`cpu::image`), the twin's gradients against central differences, and the GPU through
//! buffers and textures of every format.

mod common;

use common::{Rng, Tol, assert_close, assert_scalar, ctx, largest, poisoned, read, submit, upload};
use wgpu_loss::cpu::image::image_loss;
use wgpu_loss::{
    GradTarget, ImageBuffers, ImageDesc, ImageInput, ImageLoss, ImageMask, ImagePlan, ImageSource,
    Outputs, Padding, Reduction,
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
    let what = format!("{desc:?}");
    let out = ctx().image_loss(desc, x, y, mask).unwrap();
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
    if desc.outputs_value().grad {
        let gpu = out.grad.as_ref().expect("a gradient");
        assert_close(
            &format!("{what} grad"),
            gpu,
            &reference.grad,
            grad_tol(&reference.grad),
        );
        grad_err = common::worst_relative(gpu, &reference.grad);
    }
    (value_err, grad_err)
}

#[test]
fn every_loss_and_padding_matches_the_twin() {
    let mut rng = Rng::new(11);
    // Shapes that are not multiples of the 16 x 8 tile, a batch, one channel to four.
    for &(n, h, w, c) in &[(1, 37, 23, 3), (2, 19, 29, 1), (1, 12, 40, 4)] {
        let (x, y) = images(&mut rng, n, h, w, c);
        for loss in ImageLoss::ALL {
            for padding in [Padding::Same, Padding::Valid] {
                for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                    let desc = ImageDesc::new(loss, h, w, c)
                        .batch(n)
                        .padding(padding)
                        .reduction(reduction);
                    if desc.check().is_err() {
                        continue;
                    }
                    let (v, g) = check(&desc, &x, &y, None);
                    if reduction == Reduction::Mean {
                        println!(
                            "{loss} {padding:?} [{n}, {h}, {w}, {c}]: loss {v:.1e}, grad {g:.1e}"
                        );
                    }
                }
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
                    if loss == ImageLoss::L1 || loss == ImageLoss::Photometric {
                        if (x[i] - y[i]).abs() < 2.0 * eps {
                            continue;
                        }
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
