//! CPU twin of `shaders/image.wgsl`: L1, MSE, PSNR, SSIM, D-SSIM and the photometric loss over
//! `[N, H, W, C]` images, with their gradients, in f64. SSIM directly from its definition (the
//! 11 x 11 Gaussian window applied as two 1-D passes, zero outside the image); its gradient from
//! the maps A, B, C of the shader's header, filtered with the same window (checked against
//! central differences of [`image_loss`] in the tests).

use crate::error::Result;
use crate::families::image::{ImageDesc, ImageLoss, Padding};
pub use crate::families::image::{RADIUS, WINDOW, gaussian, gaussian_wgsl};
use crate::reduction::Reduction;

use super::Reference;

/// `plane` (H x W) filtered with the 2-D window, zero outside the image: the value at every
/// pixel.
fn filter(plane: &[f64], h: usize, w: usize) -> Vec<f64> {
    pass(&pass(plane, h, w, true), h, w, false)
}

/// One 1-D pass of the window over an `h x w` plane, along x (`along_x`) or along y, zero
/// outside the image.
fn pass(src: &[f64], h: usize, w: usize, along_x: bool) -> Vec<f64> {
    let g = gaussian();
    let near = |i: usize, k: usize, n: usize| (i + k).checked_sub(RADIUS).filter(|&v| v < n);
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (0..WINDOW)
                .filter_map(|k| {
                    let (yy, xx) = if along_x {
                        (y, near(x, k, w)?)
                    } else {
                        (near(y, k, h)?, x)
                    };
                    Some(g[k] * src[yy * w + xx])
                })
                .sum();
        }
    }
    out
}

/// Whether pixel (y, x) is the centre of a window that counts.
fn counted(padding: Padding, h: usize, w: usize, y: usize, x: usize) -> bool {
    match padding {
        Padding::Same => true,
        Padding::Valid => y >= RADIUS && x >= RADIUS && y + RADIUS < h && x + RADIUS < w,
    }
}

/// SSIM of one channel plane at every pixel, and the derivatives dS/dmx, dS/dsxx, dS/dsxy with
/// mx and my: (S, A, B, C) before the mask.
fn ssim_plane(x: &[f64], y: &[f64], h: usize, w: usize, range: f64) -> [Vec<f64>; 4] {
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let prod = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).collect::<Vec<_>>();
    let (mx, my) = (filter(x, h, w), filter(y, h, w));
    let (exx, eyy, exy) = (
        filter(&prod(x, x), h, w),
        filter(&prod(y, y), h, w),
        filter(&prod(x, y), h, w),
    );
    let mut out = [
        vec![0.0; h * w],
        vec![0.0; h * w],
        vec![0.0; h * w],
        vec![0.0; h * w],
    ];
    for i in 0..h * w {
        let (mx, my) = (mx[i], my[i]);
        let (sxx, syy, sxy) = (exx[i] - mx * mx, eyy[i] - my * my, exy[i] - mx * my);
        let (n1, n2) = (2.0 * mx * my + c1, 2.0 * sxy + c2);
        let (d1, d2) = (mx * mx + my * my + c1, sxx + syy + c2);
        let s = n1 * n2 / (d1 * d2);
        let ds_dmx = 2.0 * my * n2 / (d1 * d2) - 2.0 * mx * s / d1;
        let ds_dsxx = -s / d2;
        let ds_dsxy = 2.0 * n1 / (d1 * d2);
        out[0][i] = s;
        out[1][i] = ds_dmx - 2.0 * mx * ds_dsxx - my * ds_dsxy;
        out[2][i] = ds_dsxx;
        out[3][i] = ds_dsxy;
    }
    out
}

/// The loss of `desc` on `x` and `y` (`[N, H, W, C]`, as the kernels read them: an sRGB
/// texture's values after decoding, or after encoding back when the plan asks) and an optional
/// per-pixel `mask` (`[N, H, W]`): the reduced loss or per-element losses, and the gradient with
/// respect to `x` (of the sum, for `Reduction::None`).
pub fn image_loss(
    desc: &ImageDesc,
    x: &[f32],
    y: &[f32],
    mask: Option<&[f32]>,
) -> Result<Reference> {
    // The description first, then the data, as the GPU API checks them.
    desc.check()?;
    desc.check_host(x.len(), y.len(), mask.map(<[f32]>::len))?;
    let (n, h, w, c) = desc.shape();
    let len = n * h * w * c;
    let range = desc.data_range as f64;
    let lambda = desc.lambda as f64;
    let loss = desc.loss;
    let ssim = matches!(
        loss,
        ImageLoss::Ssim | ImageLoss::Dssim | ImageLoss::Photometric
    );
    let square = matches!(loss, ImageLoss::Mse | ImageLoss::Psnr);
    let pix = !matches!(loss, ImageLoss::Ssim | ImageLoss::Dssim);
    // Padding places SSIM's windows; the pixel losses cover every pixel.
    let padding = if ssim { desc.padding } else { Padding::Same };
    let (oh, ow) = desc.out_dims();
    let m = |i: usize, yy: usize, xx: usize| mask.map_or(1.0, |m| m[(i * h + yy) * w + xx] as f64);

    // Totals: sum(m S), sum(m) over counted centres; sum(m pix), sum(m) over the image.
    let (mut ts, mut tsw, mut tp, mut tpw) = (0.0, 0.0, 0.0, 0.0);
    let mut per_element = vec![0.0; n * oh * ow * c];
    // The unscaled gradients of the two terms.
    let mut g_pix = vec![0.0; len];
    let mut g_ssim = vec![0.0; len];
    for i in 0..n {
        for yy in 0..h {
            for xx in 0..w {
                let mm = m(i, yy, xx);
                tpw += mm;
                if counted(padding, h, w, yy, xx) {
                    tsw += mm;
                }
            }
        }
        for ch in 0..c {
            let plane = |v: &[f32]| -> Vec<f64> {
                (0..h * w)
                    .map(|p| v[(i * h * w + p) * c + ch] as f64)
                    .collect()
            };
            let (px, py) = (plane(x), plane(y));
            let maps = if ssim {
                Some(ssim_plane(&px, &py, h, w, range))
            } else {
                None
            };
            // The maps A, B, C weighted by the mask, zero where no window counts.
            let mut abc = [vec![0.0; h * w], vec![0.0; h * w], vec![0.0; h * w]];
            for yy in 0..h {
                for xx in 0..w {
                    let p = yy * w + xx;
                    let e = ((i * h + yy) * w + xx) * c + ch;
                    let mm = m(i, yy, xx);
                    let d = px[p] - py[p];
                    let pv = if square { d * d } else { d.abs() };
                    if pix {
                        tp += mm * pv;
                        g_pix[e] = mm
                            * match (square, d) {
                                (true, _) => 2.0 * d,
                                (false, d) if d > 0.0 => 1.0,
                                (false, d) if d < 0.0 => -1.0,
                                _ => 0.0,
                            };
                    }
                    let s = maps.as_ref().map_or(0.0, |mp| mp[0][p]);
                    let is_counted = counted(padding, h, w, yy, xx);
                    if let (Some(mp), true) = (&maps, is_counted) {
                        ts += mm * s;
                        for k in 0..3 {
                            abc[k][p] = mm * mp[k + 1][p];
                        }
                    }
                    if is_counted {
                        let value = match loss {
                            ImageLoss::Ssim => s,
                            ImageLoss::Dssim => 1.0 - s,
                            ImageLoss::L1 | ImageLoss::Mse | ImageLoss::Psnr => pv,
                            ImageLoss::Photometric => (1.0 - lambda) * d.abs() + lambda * (1.0 - s),
                        };
                        let (oy, ox) = match padding {
                            Padding::Same => (yy, xx),
                            Padding::Valid => (yy - RADIUS, xx - RADIUS),
                        };
                        per_element[((i * oh + oy) * ow + ox) * c + ch] = mm * value;
                    }
                }
            }
            if ssim {
                let [fa, fb, fc] = [&abc[0], &abc[1], &abc[2]].map(|a| filter(a, h, w));
                for p in 0..h * w {
                    let e = (i * h * w + p) * c + ch;
                    g_ssim[e] = fa[p] + 2.0 * px[p] * fb[p] + py[p] * fc[p];
                }
            }
        }
    }
    let cf = c as f64;
    let mean = desc.reduction == Reduction::Mean;
    let (pix_value, ssim_value, one, mut k_pix, mut k_ssim) = if mean {
        (
            tp / (cf * tpw),
            ts / (cf * tsw),
            1.0,
            1.0 / (cf * tpw),
            1.0 / (cf * tsw),
        )
    } else {
        (tp, ts, cf * tsw, 1.0, 1.0)
    };
    let value = match loss {
        ImageLoss::L1 | ImageLoss::Mse => pix_value,
        ImageLoss::Psnr => {
            k_pix *= -10.0 / (std::f64::consts::LN_10 * pix_value);
            10.0 * (range * range / pix_value).log10()
        }
        ImageLoss::Ssim => ssim_value,
        ImageLoss::Dssim => {
            k_ssim = -k_ssim;
            one - ssim_value
        }
        ImageLoss::Photometric => {
            k_pix *= 1.0 - lambda;
            k_ssim *= -lambda;
            (1.0 - lambda) * pix_value + lambda * (one - ssim_value)
        }
    };
    let grad = g_pix
        .iter()
        .zip(&g_ssim)
        .map(|(p, s)| k_pix * p + k_ssim * s)
        .collect();
    let reduced = desc.reduction != Reduction::None;
    Ok(Reference {
        value: reduced.then_some(value),
        per_element: (!reduced).then_some(per_element),
        grad,
        ..Reference::default()
    })
}

/// SSIM's map (`[N, H', W', C]`, H' = H and W' = W with `Padding::Same`, H - 10 and W - 10 with
/// `Padding::Valid`) and its mean, of `x` against `y` with data range `range`.
pub fn ssim(
    x: &[f32],
    y: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    padding: Padding,
    range: f32,
) -> Result<(f64, Vec<f64>)> {
    let desc = ImageDesc::new(ImageLoss::Ssim, h, w, c)
        .batch(n)
        .padding(padding)
        .data_range(range)
        .reduction(Reduction::None);
    desc.check()?;
    let map = image_loss(&desc, x, y, None)?
        .per_element
        .expect("reduction none");
    let mean = map.iter().sum::<f64>() / map.len() as f64;
    Ok((mean, map))
}
