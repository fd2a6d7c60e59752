//! `wgpu-loss eval ssim|dssim|psnr|photometric`: image losses on .npy arrays or PNG files.

use std::path::{Path, PathBuf};

use clap::Args;
use wgpu_loss::{
    Context, DType, ImageDesc, LossOutput, Outputs,
    image::{ImageInputs, ImageLoss, ImageMask, Padding},
};

use super::Common;
use super::npy;

#[derive(Args)]
pub struct ImageArgs {
    /// The prediction (the rendered image): a float32, float16 (or with --bf16 bfloat16) .npy
    /// array [H, W], [H, W, C] or [N, H, W, C] (C <= 4), or a PNG file (8 or 16 bits, scaled to
    /// [0, 1], read as float32).
    #[arg(long)]
    pred: PathBuf,
    /// The target image, the same shape and dtype.
    #[arg(long)]
    target: PathBuf,
    /// SSIM's windows: same (every pixel, zero padding: the 3DGS reference) or valid (only
    /// windows inside the image: gsplat, fused-ssim).
    #[arg(long, default_value = "same", value_parser = parse_padding)]
    padding: Padding,
    /// The data range L: PSNR's 10 log10(L^2 / MSE), SSIM's C1 = (0.01 L)^2, C2 = (0.03 L)^2.
    #[arg(long, default_value_t = 1.0)]
    data_range: f32,
    /// photometric: (1 - lambda) L1 + lambda (1 - SSIM).
    #[arg(long, default_value_t = 0.2)]
    lambda: f32,
    /// Per-pixel weights in [0, 1] (0 excludes a pixel): a float32 .npy [H, W] or [N, H, W], or
    /// a PNG (its first channel).
    #[arg(long)]
    mask: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

fn parse_padding(s: &str) -> Result<Padding, String> {
    s.parse().map_err(|e: wgpu_loss::Error| e.to_string())
}

/// An image read from a file: `[N, H, W, C]` values in the file's dtype and the shape as the
/// file had it.
struct Image {
    data: npy::Floats,
    nhwc: (usize, usize, usize, usize),
    shape: Vec<usize>,
}

fn is_png(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// Reads a PNG (scaled to [0, 1], f32) or a .npy image of rank 2 to 4 in its dtype (`bf16`:
/// uint16 arrays hold bfloat16 bits).
fn read_image(path: &Path, bf16: bool) -> Result<Image, String> {
    if is_png(path) {
        let (data, h, w, c) = read_png(path)?;
        return Ok(Image {
            data: npy::Floats::F32(data),
            nhwc: (1, h, w, c),
            shape: vec![h, w, c],
        });
    }
    let a = npy::read_floats(path, bf16)?;
    let nhwc = match a.shape[..] {
        [h, w] => (1, h, w, 1),
        [h, w, c] => (1, h, w, c),
        [n, h, w, c] => (n, h, w, c),
        _ => {
            return Err(format!(
                "{}: shape {:?}, an image [H, W], [H, W, C] or [N, H, W, C] is needed",
                path.display(),
                a.shape
            ));
        }
    };
    Ok(Image {
        data: a.data,
        nhwc,
        shape: a.shape,
    })
}

/// A PNG's samples scaled to [0, 1], with its height, width and channels: palettes and bit
/// depths below 8 expanded to 8-bit samples (a transparency chunk to an alpha channel), 16-bit
/// samples kept at their precision (8-bit ones are exact in f32 either way).
fn read_png(path: &Path) -> Result<(Vec<f32>, usize, usize, usize), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| err(&e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err(&"the image is too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| err(&e))?;
    let bytes = &buf[..info.buffer_size()];
    let data = match info.bit_depth {
        png::BitDepth::Sixteen => bytes
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as f32 / 65535.0)
            .collect(),
        _ => bytes.iter().map(|&b| b as f32 / 255.0).collect(),
    };
    let (h, w) = (info.height as usize, info.width as usize);
    Ok((data, h, w, info.color_type.samples()))
}

/// The mask as `[N, H, W]` weights, for images of `nhwc`: a PNG's first channel, or an .npy
/// array `[H, W]` (one image) or `[N, H, W]`.
fn read_mask(path: &Path, (n, h, w, _): (usize, usize, usize, usize)) -> Result<Vec<f32>, String> {
    let m = read_image(path, false)?;
    let (fits, stride) = if is_png(path) {
        (n == 1 && m.shape[..2] == [h, w], m.nhwc.3)
    } else {
        ((n == 1 && m.shape == [h, w]) || m.shape == [n, h, w], 1)
    };
    if !fits {
        return Err(format!(
            "{}: shape {:?}, the mask must be [H, W] = [{h}, {w}] (or [N, H, W] = [{n}, {h}, {w}])",
            path.display(),
            m.shape
        ));
    }
    let values = m.data.values().to_f32();
    Ok(values.iter().step_by(stride).copied().collect())
}

/// The evaluation of `loss` on the files of `a`.
pub struct Evaluation {
    pub out: LossOutput,
    /// The per-element map's shape, the gradient's shape and dtype.
    pub loss_shape: Vec<usize>,
    pub grad_shape: Vec<usize>,
    pub grad_dtype: DType,
    pub seconds: f64,
}

/// Evaluates `loss` on the files of `a`.
pub fn evaluate(ctx: &Context, loss: ImageLoss, a: &ImageArgs) -> Result<Evaluation, String> {
    let common = &a.common;
    let pred = read_image(&a.pred, common.bf16)?;
    let target = read_image(&a.target, common.bf16)?;
    let dtype = pred.data.values().dtype();
    if target.data.values().dtype() != dtype {
        return Err(format!(
            "{}: {} values, the prediction's are {dtype}",
            a.target.display(),
            target.data.values().dtype()
        ));
    }
    let grad_dtype = common.grad_dtype.unwrap_or(dtype);
    if pred.nhwc != target.nhwc {
        return Err(format!(
            "{}: shape {:?} does not match {:?}",
            a.target.display(),
            target.shape,
            pred.shape
        ));
    }
    let (n, h, w, c) = pred.nhwc;
    let mask = a
        .mask
        .as_deref()
        .map(|m| read_mask(m, pred.nhwc))
        .transpose()?;
    let desc = ImageDesc::new(loss, h, w, c)
        .batch(n)
        .padding(a.padding)
        .data_range(a.data_range)
        .lambda(a.lambda)
        .reduction(common.reduction)
        .outputs(Outputs {
            loss: true,
            grad: common.grad_out.is_some(),
        })
        .mask(if mask.is_some() {
            ImageMask::Buffer
        } else {
            ImageMask::None
        })
        .dtype(dtype)
        .grad_dtype(grad_dtype);
    let mut inputs = ImageInputs::new(pred.data.values(), target.data.values());
    if let Some(m) = &mask {
        inputs = inputs.mask(m);
    }
    let (out, seconds) = super::timed(|| ctx.loss(&desc, &inputs))?;
    // The per-element map: the prediction's shape with H and W of the counted windows.
    let (oh, ow) = desc.out_dims();
    let mut loss_shape = pred.shape.clone();
    let at = if pred.shape.len() == 4 { 1 } else { 0 };
    loss_shape[at] = oh;
    loss_shape[at + 1] = ow;
    Ok(Evaluation {
        out,
        loss_shape,
        grad_shape: pred.shape,
        grad_dtype,
        seconds,
    })
}
