//! Image losses for renderers: L1, MSE, PSNR, SSIM, D-SSIM and the photometric loss
//! `(1 - λ) L1 + λ (1 - SSIM)` of a rendered image against a target, with the gradient with
//! respect to the rendered image. Images are `[N, H, W, C]` f32 storage buffers (channels last,
//! C <= 4) or 2-D textures read directly by the kernels; the gradient goes to a buffer or to a
//! storage texture; an optional mask weights each pixel.
//!
//! Kernel: `shaders/image.wgsl` (its header has the formulas and the passes). CPU twin:
//! [`crate::cpu::image`].

use std::str::FromStr;

use crate::dtype::{DType, Values};
use crate::engine::context::Context;
use crate::engine::context::PipelineKey;
use crate::engine::kernel::{Binding, Kernel, modes, params};
use crate::engine::program::{Access, Bound, Builder, Program, Res, View, Windowing, elem_align};
use crate::engine::slots::{HostData, MAX_SLOTS, Slot, UserBindings};
use crate::error::{Error, Result, display_by_name};
use crate::plan::roles::{GRAD, LOSS, TARGET};
use crate::plan::sealed::Family;
use crate::plan::{IntoBinding, Plan, setters};
use crate::reduction::Reduction;
use crate::reduction::{LossOutput, Outputs};

/// Invocations of an image kernel's workgroup: one tile of 16 x 16 pixels.
const IMAGE_WG: u32 = 256;

modes! {
    /// The image loss a kernel computes (`params.loss`).
    ImageCode "IMAGE" { L1 = 0, MSE = 1, PSNR = 2, SSIM = 3, DSSIM = 4, PHOTOMETRIC = 5 }
}

modes! {
    /// The pixel term (`params.pix`).
    /// `ABS`: |d|; `SQUARE`: d².
    PixTerm "PIX" { NONE = 0, ABS = 1, SQUARE = 2 }
}

modes! {
    /// Where a pixel's weight comes from (`params.mask_mode`).
    /// `MASK`: the mask buffer or texture; `TARGET_ALPHA`: the target texture's alpha.
    MaskMode "MASK" { NONE = 0, MASK = 1, TARGET_ALPHA = 2 }
}

modes! {
    /// What the forward pass writes as per-element losses (`params.out_kind`).
    /// `NONE`: none (a reduced loss, or no loss); `SSIM`: S; `DSSIM`: 1 - S; `PIXEL`: the pixel
    /// term; `PHOTOMETRIC`: (1 - λ) |d| + λ (1 - S).
    ElementKind "ELEMENT" { NONE = 0, SSIM = 1, DSSIM = 2, PIXEL = 3, PHOTOMETRIC = 4 }
}

/// A sample of the SSIM window's `#expr GAUSS` (the host makes the real one from the twin's
/// taps), for validation.
pub(crate) const GAUSS_SAMPLE: &str = "GAUSS=const G = array<f32, 11>(0.001, 0.008, 0.038, 0.109, 0.213, 0.264, 0.213, 0.109, 0.038, 0.008, 0.001);";

/// `shaders/image.wgsl`: image losses (L1, MSE, PSNR, SSIM, the photometric loss). Bindings:
/// pred, target, mask (buffers or textures), dst, scratch, maps A, B, C, and the gradient
/// texture when the gradient goes to one.
pub(crate) static IMAGE: Kernel =
    Kernel::new("image.wgsl", include_str!("../../shaders/image.wgsl"))
        .params(ImageParams::INFO)
        .consts(&[
            ImageCode::WGSL,
            PixTerm::WGSL,
            MaskMode::WGSL,
            ElementKind::WGSL,
        ])
        .layout(|defines| {
            use Binding::{Read as R, ReadWrite as W, Uniform as U};
            let on = |name: &str| defines.iter().any(|d| d == name);
            let input = |tex| if on(tex) { Binding::Texture } else { R };
            let mut layout = vec![
                U,
                input("PRED_TEX"),
                input("TARGET_TEX"),
                input("MASK_TEX"),
                W,
                W,
                W,
                W,
                W,
            ];
            if on("GRAD_TEX") {
                let format = defines
                    .iter()
                    .find_map(|d| d.strip_prefix("GRAD_FORMAT="))
                    .and_then(storage_format)
                    .unwrap_or(wgpu::TextureFormat::Rgba32Float);
                layout.push(Binding::StorageTexture(format));
            }
            std::borrow::Cow::Owned(layout)
        })
        .defines(&[
            "PRED_TEX",
            "TARGET_TEX",
            "MASK_TEX",
            "GRAD_TEX",
            "SUBGROUPS",
        ])
        .values(&["GRAD_FORMAT=rgba32float", "TAPS=11", GAUSS_SAMPLE]);
const TILE_X: usize = 16;
const TILE_Y: usize = 16;
/// The SSIM window's side.
pub const SSIM_WINDOW: usize = 11;

/// Taps of the window: 11, sigma 1.5.
pub const WINDOW: usize = SSIM_WINDOW;
/// The window's radius.
pub const RADIUS: usize = 5;

/// The normalised 1-D Gaussian of 11 taps, sigma 1.5 (the 2-D window is its outer product):
/// the kernel's taps (printed into its WGSL) and the twin's.
pub fn gaussian() -> [f64; WINDOW] {
    let sigma = 1.5f64;
    let mut g = [0.0; WINDOW];
    for (k, v) in g.iter_mut().enumerate() {
        let d = k as f64 - RADIUS as f64;
        *v = (-(d * d) / (2.0 * sigma * sigma)).exp();
    }
    let total: f64 = g.iter().sum();
    g.map(|v| v / total)
}

/// Which image loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageLoss {
    /// Mean absolute error over pixels and channels.
    L1,
    /// Mean squared error over pixels and channels.
    Mse,
    /// `10 log10(data_range² / MSE)` (a metric; its gradient is that of this expression).
    Psnr,
    /// Mean SSIM over pixels and channels.
    Ssim,
    /// `1 - SSIM`.
    Dssim,
    /// `(1 - λ) L1 + λ (1 - SSIM)`, the 3D Gaussian splatting photometric loss.
    Photometric,
}

impl ImageLoss {
    /// Every image loss.
    pub const ALL: [ImageLoss; 6] = [
        ImageLoss::L1,
        ImageLoss::Mse,
        ImageLoss::Psnr,
        ImageLoss::Ssim,
        ImageLoss::Dssim,
        ImageLoss::Photometric,
    ];

    /// Its name (the CLI's).
    pub fn name(self) -> &'static str {
        match self {
            ImageLoss::L1 => "l1",
            ImageLoss::Mse => "mse",
            ImageLoss::Psnr => "psnr",
            ImageLoss::Ssim => "ssim",
            ImageLoss::Dssim => "dssim",
            ImageLoss::Photometric => "photometric",
        }
    }

    fn uses_ssim(self) -> bool {
        matches!(
            self,
            ImageLoss::Ssim | ImageLoss::Dssim | ImageLoss::Photometric
        )
    }

    /// The pixel term (`params.pix`).
    fn pix(self) -> u32 {
        match self {
            ImageLoss::L1 | ImageLoss::Photometric => PixTerm::ABS,
            ImageLoss::Mse | ImageLoss::Psnr => PixTerm::SQUARE,
            ImageLoss::Ssim | ImageLoss::Dssim => PixTerm::NONE,
        }
    }

    /// The loss's code in the kernel (`params.loss`).
    fn code(self) -> u32 {
        match self {
            ImageLoss::L1 => ImageCode::L1,
            ImageLoss::Mse => ImageCode::MSE,
            ImageLoss::Psnr => ImageCode::PSNR,
            ImageLoss::Ssim => ImageCode::SSIM,
            ImageLoss::Dssim => ImageCode::DSSIM,
            ImageLoss::Photometric => ImageCode::PHOTOMETRIC,
        }
    }

    /// What a per-element loss of it is (`params.out_kind`).
    fn element(self) -> u32 {
        match self {
            ImageLoss::Ssim => ElementKind::SSIM,
            ImageLoss::Dssim => ElementKind::DSSIM,
            ImageLoss::L1 | ImageLoss::Mse | ImageLoss::Psnr => ElementKind::PIXEL,
            ImageLoss::Photometric => ElementKind::PHOTOMETRIC,
        }
    }
}

display_by_name!(ImageLoss);

impl FromStr for ImageLoss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ImageLoss::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| Error::option("loss", format!("{s:?} is not an image loss")))
    }
}

/// Where SSIM's windows are: at every pixel with the image zero outside its bounds (`Same`,
/// the 3DGS reference's `conv2d(padding=5)`), or only where the window lies inside the image
/// (`Valid`: an `(H - 10) x (W - 10)` map, gsplat's and fused-ssim's convention).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Windows at every pixel, zero outside the image: an `H x W` map.
    #[default]
    Same,
    /// Windows inside the image only: an `(H - 10) x (W - 10)` map.
    Valid,
}

impl FromStr for Padding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "same" => Ok(Padding::Same),
            "valid" => Ok(Padding::Valid),
            other => Err(Error::option(
                "padding",
                format!("{other:?} is not same or valid"),
            )),
        }
    }
}

/// What an image input is: a `[N, H, W, C]` f32 buffer, or a 2-D texture of this format (one
/// image: `rgba8unorm`, `rgba8unorm-srgb`, `rgba16float`, `rgba32float`, `r32float`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// A `[N, H, W, C]` f32 buffer.
    #[default]
    Buffer,
    /// A 2-D texture of this format.
    Texture(wgpu::TextureFormat),
}

/// A per-pixel weight in [0, 1] (0 excludes the pixel from the loss and its gradient).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ImageMask {
    /// No mask: every pixel weighs 1.
    #[default]
    None,
    /// A `[N, H, W]` f32 buffer.
    Buffer,
    /// The red channel of a texture of this format, the images' size.
    Texture(wgpu::TextureFormat),
    /// The target texture's alpha (a 4-channel texture; the loss then takes at most 3 channels).
    TargetAlpha,
}

/// Where the gradient goes: a `[N, H, W, C]` f32 buffer, or a storage texture of this format
/// (`rgba32float`, `rgba16float`, or `r32float` for one channel; channels past C are zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GradTarget {
    /// A `[N, H, W, C]` f32 buffer.
    #[default]
    Buffer,
    /// A storage texture of this format.
    Texture(wgpu::TextureFormat),
}

/// The texture formats the kernels read.
const READ_FORMATS: [wgpu::TextureFormat; 5] = [
    wgpu::TextureFormat::Rgba8Unorm,
    wgpu::TextureFormat::Rgba8UnormSrgb,
    wgpu::TextureFormat::Rgba16Float,
    wgpu::TextureFormat::Rgba32Float,
    wgpu::TextureFormat::R32Float,
];

/// The WGSL name of a gradient texture's format, and back.
fn storage_name(format: wgpu::TextureFormat) -> Option<&'static str> {
    match format {
        wgpu::TextureFormat::Rgba32Float => Some("rgba32float"),
        wgpu::TextureFormat::Rgba16Float => Some("rgba16float"),
        wgpu::TextureFormat::R32Float => Some("r32float"),
        _ => None,
    }
}

pub(crate) fn storage_format(name: &str) -> Option<wgpu::TextureFormat> {
    [
        wgpu::TextureFormat::Rgba32Float,
        wgpu::TextureFormat::Rgba16Float,
        wgpu::TextureFormat::R32Float,
    ]
    .into_iter()
    .find(|&f| storage_name(f) == Some(name))
}

fn channels_of(format: wgpu::TextureFormat) -> usize {
    if format == wgpu::TextureFormat::R32Float {
        1
    } else {
        4
    }
}

/// An image loss for one shape: `[N, H, W, C]` images (N = 1 for textures), the loss and its
/// options, the kinds of its inputs and outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageDesc {
    /// Which loss.
    pub loss: ImageLoss,
    /// Images N (1 for textures).
    pub n: usize,
    /// Height H.
    pub h: usize,
    /// Width W.
    pub w: usize,
    /// Channels C (1 to 4).
    pub c: usize,
    /// SSIM's windows at the border (default same).
    pub padding: Padding,
    /// `L` of PSNR and of SSIM's constants `C1 = (0.01 L)²`, `C2 = (0.03 L)²` (default 1).
    pub data_range: f32,
    /// The photometric loss's weight of D-SSIM (default 0.2).
    pub lambda: f32,
    /// Mean (default), sum, or none (per-element losses `[N, H', W', C]`, the SSIM map).
    pub reduction: Reduction,
    /// What to compute (default both).
    pub outputs: Outputs,
    /// Where the prediction comes from (default a buffer).
    pub pred: ImageSource,
    /// Where the target comes from (default a buffer).
    pub target: ImageSource,
    /// The pixels' weights (default none).
    pub mask: ImageMask,
    /// Where the gradient goes (default a buffer).
    pub grad_to: GradTarget,
    /// Read `rgba8unorm-srgb` textures as their stored, encoded values (`true`), or linear as
    /// `textureLoad` decodes them (`false`, the default).
    pub srgb_encoded: bool,
    /// The dtype of the prediction and target buffers (default f32; textures have their
    /// format): f32, f16 or bf16, read into f32 math.
    pub dtype: DType,
    /// The dtype of a gradient buffer (default: `dtype`); f32 with a gradient texture.
    pub grad_dtype: Option<DType>,
}

setters! {
    ImageDesc {
        /// Sets SSIM's padding.
        padding: Padding,
        /// Sets the data range `L`.
        data_range: f32,
        /// Sets the photometric loss's weight of D-SSIM.
        lambda: f32,
        /// Sets the reduction.
        reduction: Reduction,
        /// Sets what to compute.
        outputs: Outputs,
        /// Sets where the prediction comes from.
        pred: ImageSource,
        /// Sets where the target comes from.
        target: ImageSource,
        /// Sets the pixels' weights.
        mask: ImageMask,
        /// Sets where the gradient goes.
        grad_to: GradTarget,
        /// Sets whether sRGB textures are read encoded.
        srgb_encoded: bool,
        /// Sets the dtype of the prediction and target buffers.
        dtype: DType,
    }
    optional {
        /// Sets the gradient buffer's dtype.
        grad_dtype: DType,
    }
}

impl ImageDesc {
    /// `loss` over one `h x w` image of `c` channels; loss and gradient, the mean, padding
    /// `same`, data range 1, λ = 0.2, buffers in and out.
    pub fn new(loss: ImageLoss, h: usize, w: usize, c: usize) -> Self {
        ImageDesc {
            loss,
            n: 1,
            h,
            w,
            c,
            padding: Padding::Same,
            data_range: 1.0,
            lambda: 0.2,
            reduction: Reduction::Mean,
            outputs: Outputs::BOTH,
            pred: ImageSource::Buffer,
            target: ImageSource::Buffer,
            mask: ImageMask::None,
            grad_to: GradTarget::Buffer,
            srgb_encoded: false,
            dtype: DType::F32,
            grad_dtype: None,
        }
    }

    /// The gradient's dtype: `grad_dtype`, else `dtype`.
    fn gradient_dtype(&self) -> DType {
        self.grad_dtype.unwrap_or(self.dtype)
    }

    /// Sets the image count N (buffers only).
    pub fn batch(mut self, n: usize) -> Self {
        self.n = n;
        self
    }

    /// `(N, H, W, C)`.
    pub fn shape(&self) -> (usize, usize, usize, usize) {
        (self.n, self.h, self.w, self.c)
    }

    /// The per-element map's height and width: the image's, or with `Padding::Valid` and an
    /// SSIM loss, 10 less.
    pub fn out_dims(&self) -> (usize, usize) {
        match (self.loss.uses_ssim(), self.padding) {
            (true, Padding::Valid) => (
                self.h.saturating_sub(SSIM_WINDOW - 1),
                self.w.saturating_sub(SSIM_WINDOW - 1),
            ),
            _ => (self.h, self.w),
        }
    }

    /// Elements of one image tensor.
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    /// Whether an image has no elements (refused by [`ImageDesc::check`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The host data of a run on this description (the convenience call's, the twin's): the
    /// prediction's and target's lengths `[N, H, W, C]`, and a mask `[N, H, W]` exactly when
    /// the description takes a buffer mask.
    pub(crate) fn check_host(&self, pred: usize, target: usize, mask: Option<usize>) -> Result<()> {
        let (n, h, w, _) = self.shape();
        for (what, actual, expected) in [
            ("prediction", Some(pred), self.len()),
            ("target", Some(target), self.len()),
            ("mask", mask, n * h * w),
        ] {
            if let Some(actual) = actual
                && actual != expected
            {
                return Err(Error::LengthMismatch {
                    what,
                    expected,
                    actual,
                });
            }
        }
        match (self.mask, mask) {
            (ImageMask::Buffer, None) => Err(Error::Binding("mask", "needed by this plan")),
            (ImageMask::Buffer, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err(Error::Binding("mask", "not used by this plan")),
        }
    }

    /// The checks every plan makes: shapes, options, and the kinds of inputs and outputs.
    pub fn check(&self) -> Result<()> {
        self.outputs.check()?;
        crate::engine::program::elements("image", &[self.n, self.h, self.w, self.c])?;
        if self.is_empty() {
            return Err(Error::Empty("image"));
        }
        if self.c > 4 {
            return Err(Error::option("channels", format!("{} > 4", self.c)));
        }
        if !(self.data_range.is_finite() && self.data_range > 0.0) {
            return Err(Error::option(
                "data_range",
                format!("{} is not a positive number", self.data_range),
            ));
        }
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(Error::option(
                "lambda",
                format!("{} is outside [0, 1]", self.lambda),
            ));
        }
        if self.loss.uses_ssim()
            && self.padding == Padding::Valid
            && (self.h < SSIM_WINDOW || self.w < SSIM_WINDOW)
        {
            return Err(Error::option(
                "padding",
                format!(
                    "valid needs images of at least 11 x 11 pixels, not {} x {}",
                    self.h, self.w
                ),
            ));
        }
        match (self.loss, self.reduction) {
            (ImageLoss::Psnr, r) if r != Reduction::Mean => {
                return Err(Error::option("reduction", "PSNR is over the mean only"));
            }
            (ImageLoss::Photometric, Reduction::None) if self.padding == Padding::Valid => {
                return Err(Error::option(
                    "reduction",
                    "per-element photometric losses need padding same (L1 and SSIM cover \
                     different pixels with valid)",
                ));
            }
            (_, Reduction::BatchMean) => {
                return Err(Error::option("reduction", "image losses have no batchmean"));
            }
            _ => {}
        }
        let buffers = [self.pred, self.target].contains(&ImageSource::Buffer);
        if self.dtype != DType::F32 && !buffers {
            return Err(Error::option(
                "dtype",
                "the prediction and target are textures, which have their format",
            ));
        }
        if self.grad_dtype.is_some_and(|g| g != DType::F32)
            && matches!(self.grad_to, GradTarget::Texture(_))
        {
            return Err(Error::option(
                "grad_dtype",
                "a gradient texture has its format: leave grad_dtype unset or f32",
            ));
        }
        let textures = [self.pred, self.target]
            .iter()
            .any(|s| matches!(s, ImageSource::Texture(_)))
            || matches!(self.mask, ImageMask::Texture(_))
            || matches!(self.grad_to, GradTarget::Texture(_));
        if textures && self.n != 1 {
            return Err(Error::option(
                "batch",
                "a texture holds one image: batches of N > 1 go through buffers",
            ));
        }
        for (what, source) in [("pred", self.pred), ("target", self.target)] {
            if let ImageSource::Texture(f) = source {
                if !READ_FORMATS.contains(&f) {
                    return Err(Error::option(
                        what,
                        format!("texture format {f:?} is not one of {READ_FORMATS:?}"),
                    ));
                }
                if self.c > channels_of(f) {
                    return Err(Error::option(
                        what,
                        format!("{f:?} has fewer than {} channels", self.c),
                    ));
                }
            }
        }
        match self.mask {
            ImageMask::Texture(f) if !READ_FORMATS.contains(&f) => {
                return Err(Error::option(
                    "mask",
                    format!("texture format {f:?} is not one of {READ_FORMATS:?}"),
                ));
            }
            ImageMask::TargetAlpha => match self.target {
                ImageSource::Texture(f) if channels_of(f) == 4 && self.c <= 3 => {}
                _ => {
                    return Err(Error::option(
                        "mask",
                        "the target's alpha needs a 4-channel target texture and at most 3 \
                         channels in the loss",
                    ));
                }
            },
            _ => {}
        }
        if let GradTarget::Texture(f) = self.grad_to {
            let Some(_) = storage_name(f) else {
                return Err(Error::option(
                    "grad",
                    format!(
                        "storage texture format {f:?} is not rgba32float, rgba16float or r32float"
                    ),
                ));
            };
            if self.c > channels_of(f) {
                return Err(Error::option(
                    "grad",
                    format!("{f:?} has fewer than {} channels", self.c),
                ));
            }
        }
        Ok(())
    }
}

params! {
    /// The parameters of image.wgsl.
    ImageParams {
        h: u32,
        w: u32,
        c: u32,
        tiles_x: u32,
        tiles_y: u32,
        tiles: u32,
        wg_x: u32,
        valid: u32,
        out_h: u32,
        out_w: u32,
        encode: u32,
        mask_mode: u32,
        pix: u32,
        ssim: u32,
        grad: u32,
        out_kind: u32,
        partials: u32,
        ssim_base: u32,
        pix_base: u32,
        ssim_total: u32,
        pix_total: u32,
        k_base: u32,
        loss: u32,
        mean: u32,
        write_loss: u32,
        c1: f32,
        c2: f32,
        lambda: f32,
        range2: f32,
        tile0: u32,
        x_off: u32,
        m_off: u32,
        o_off: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// An image input the caller binds: a buffer range, or a texture.
#[derive(Clone, Debug)]
pub enum ImageInput<'a> {
    /// A range of a buffer.
    Buffer(wgpu::BufferBinding<'a>),
    /// A texture (its first mip level and layer).
    Texture(&'a wgpu::Texture),
}

impl<'a> ImageInput<'a> {
    /// A buffer range (or a whole `&wgpu::Buffer`).
    pub fn buffer(b: impl IntoBinding<'a>) -> Self {
        ImageInput::Buffer(b.into_binding())
    }
}

impl<'a> From<&'a wgpu::Texture> for ImageInput<'a> {
    fn from(t: &'a wgpu::Texture) -> Self {
        ImageInput::Texture(t)
    }
}

/// An image loss's own slots: the prediction and the mask (the target, the loss and the gradient
/// are the shared roles').
const PRED: Slot = Slot::new(0, "pred");
const MASK: Slot = Slot::new(2, "mask");

/// The caller's images and outputs for a [`Plan`] of an [`ImageDesc`]: the prediction and
/// target, the mask when the plan has one, the loss (f32: one value, or the per-element map)
/// and the gradient (a buffer or a storage texture, as the plan says). Buffers need
/// `BufferUsages::STORAGE` and offsets that are multiples of the device's
/// `min_storage_buffer_offset_alignment`; textures are checked by [`Plan::bind`].
#[derive(Clone, Debug)]
pub struct ImageBuffers<'a> {
    /// The prediction: a buffer `[N, H, W, C]` (of the plan's dtype, whole 4-byte words) or a
    /// texture of the plan's format.
    pub pred: ImageInput<'a>,
    /// The target, like the prediction.
    pub target: ImageInput<'a>,
    /// The mask, when the plan has a buffer (f32 `[N, H, W]`) or texture mask.
    pub mask: Option<ImageInput<'a>>,
    /// Where the loss goes (f32): one value when reduced, else the per-element map.
    pub loss: Option<wgpu::BufferBinding<'a>>,
    /// Where the gradient with respect to the prediction goes: a buffer (of the plan's gradient
    /// dtype, shaped like the prediction; a 16-bit gradient's pad half past an odd count is left
    /// as it was) or a storage texture, as the plan says.
    pub grad: Option<ImageInput<'a>>,
}

impl<'a> ImageBuffers<'a> {
    /// The prediction and target; add the rest with the setters.
    pub fn new(pred: impl Into<ImageInput<'a>>, target: impl Into<ImageInput<'a>>) -> Self {
        ImageBuffers {
            pred: pred.into(),
            target: target.into(),
            mask: None,
            loss: None,
            grad: None,
        }
    }
    /// Sets the mask.
    pub fn mask(mut self, mask: impl Into<ImageInput<'a>>) -> Self {
        self.mask = Some(mask.into());
        self
    }
    /// Sets the loss output.
    pub fn loss(mut self, loss: impl IntoBinding<'a>) -> Self {
        self.loss = Some(loss.into_binding());
        self
    }
    /// Sets the gradient output.
    pub fn grad(mut self, grad: impl Into<ImageInput<'a>>) -> Self {
        self.grad = Some(grad.into());
        self
    }
}

impl<'a> From<&'a wgpu::Buffer> for ImageInput<'a> {
    fn from(b: &'a wgpu::Buffer) -> Self {
        ImageInput::Buffer(b.as_entire_buffer_binding())
    }
}

/// Host images for [`Context::loss`] on an [`ImageDesc`]: the prediction and target
/// (`[N, H, W, C]` f32) and, when the description has a buffer mask, the mask (`[N, H, W]`).
#[derive(Clone, Copy, Debug)]
pub struct ImageInputs<'a> {
    /// The prediction, in the description's dtype.
    pub pred: Values<'a>,
    /// The target, in the description's dtype.
    pub target: Values<'a>,
    /// The mask, when the description has a buffer mask.
    pub mask: Option<&'a [f32]>,
}

impl<'a> ImageInputs<'a> {
    /// A prediction and a target (slices of f32, f16 or bf16), no mask.
    pub fn new(pred: impl Into<Values<'a>>, target: impl Into<Values<'a>>) -> Self {
        ImageInputs {
            pred: pred.into(),
            target: target.into(),
            mask: None,
        }
    }

    /// Sets the mask.
    pub fn mask(mut self, mask: &'a [f32]) -> Self {
        self.mask = Some(mask);
        self
    }
}

impl Family for ImageDesc {
    type Buffers<'a> = ImageBuffers<'a>;
    type Inputs<'a> = ImageInputs<'a>;
    type Output = LossOutput;
    type Passes = Program;

    async fn plan(&self, ctx: &Context) -> Result<Program> {
        let desc = self;
        desc.check()?;
        // Eight storage buffers in the forward and backward passes (WebGPU's default).
        let limit = ctx.limits().max_storage_buffers_per_shader_stage;
        if limit < 8 {
            return Err(Error::DeviceLimit {
                limit: "max_storage_buffers_per_shader_stage",
                needed: 8,
                actual: limit as u64,
            });
        }
        plan(ctx, desc).await
    }

    /// Checks the caller's images against the plan and creates the bind groups. Buffers as for
    /// a [`crate::pointwise::PointwiseBuffers`]; textures 2-D, of the plan's format and the images' size, with
    /// `TEXTURE_BINDING` (inputs) or `STORAGE_BINDING` (the gradient), one sample; the
    /// gradient texture none of the inputs.
    fn bind(&self, program: &Program, b: &ImageBuffers<'_>) -> Result<Bound> {
        let d = self;
        let mut user = UserBindings::default();
        let mut views: [Option<wgpu::TextureView>; MAX_SLOTS] = [const { None }; MAX_SLOTS];
        let want_grad = d.outputs.grad;
        let mask_kind = match d.mask {
            ImageMask::Buffer => Some(ImageSource::Buffer),
            ImageMask::Texture(f) => Some(ImageSource::Texture(f)),
            ImageMask::None | ImageMask::TargetAlpha => None,
        };
        let grad_kind = want_grad.then_some(match d.grad_to {
            GradTarget::Buffer => ImageSource::Buffer,
            GradTarget::Texture(f) => ImageSource::Texture(f),
        });
        let slots = [
            (PRED, "pred", Some(d.pred), Some(b.pred.clone()), false),
            (
                TARGET,
                "target",
                Some(d.target),
                Some(b.target.clone()),
                false,
            ),
            (MASK, "mask", mask_kind, b.mask.clone(), false),
            (GRAD, "grad", grad_kind, b.grad.clone(), true),
        ];
        let mut textures: Vec<(&'static str, &wgpu::Texture)> = Vec::new();
        // Views are made under the device lock, as every use of the device (GL).
        let _guard = program.ctx().lock();
        for (slot, name, kind, given, storage) in slots {
            match (kind, given) {
                (None, None) => {}
                (None, Some(_)) => return Err(Error::Binding(name, "not used by this plan")),
                (Some(_), None) => return Err(Error::Binding(name, "needed by this plan")),
                (Some(ImageSource::Buffer), Some(ImageInput::Buffer(r))) => user.set(slot, Some(r)),
                (Some(ImageSource::Texture(format)), Some(ImageInput::Texture(t))) => {
                    check_texture(d, name, t, format, storage)?;
                    // A texture bound for writing may be no input (wgpu refuses a texture
                    // used both ways in one dispatch).
                    if let Some(&(input, _)) = textures.iter().find(|(_, u)| storage && *u == t) {
                        return Err(Error::Aliased { a: name, b: input });
                    }
                    textures.push((name, t));
                    views[slot.index()] = Some(t.create_view(&wgpu::TextureViewDescriptor {
                        label: Some("wgpu-loss.image"),
                        dimension: Some(wgpu::TextureViewDimension::D2),
                        base_mip_level: 0,
                        mip_level_count: Some(1),
                        base_array_layer: 0,
                        array_layer_count: Some(1),
                        ..Default::default()
                    }));
                }
                (Some(ImageSource::Buffer), Some(ImageInput::Texture(_))) => {
                    return Err(Error::Binding(
                        name,
                        "the plan takes a buffer, not a texture",
                    ));
                }
                (Some(ImageSource::Texture(_)), Some(ImageInput::Buffer(_))) => {
                    return Err(Error::Binding(
                        name,
                        "the plan takes a texture, not a buffer",
                    ));
                }
            }
        }
        match (program.slot_bytes(LOSS) > 0, b.loss.clone()) {
            (true, Some(l)) => user.set(LOSS, Some(l)),
            (true, None) => return Err(Error::Binding("loss", "needed by this plan")),
            (false, Some(_)) => return Err(Error::Binding("loss", "not used by this plan")),
            (false, None) => {}
        }
        let refs: [Option<&wgpu::TextureView>; MAX_SLOTS] =
            std::array::from_fn(|i| views[i].as_ref());
        crate::engine::transfer::scoped(program.ctx(), || program.bind_textures(&user, &refs))
    }

    fn invalid(&self) -> &'static str {
        "image"
    }

    /// Host images in buffers only (for textures, plan and bind them), of the description's
    /// shape, with a mask exactly where the description has a buffer mask.
    fn check_inputs(&self, inputs: &ImageInputs<'_>) -> Result<()> {
        let desc = self;
        desc.check()?;
        let texture = !matches!(desc.pred, ImageSource::Buffer)
            || !matches!(desc.target, ImageSource::Buffer)
            || matches!(desc.mask, ImageMask::Texture(_) | ImageMask::TargetAlpha)
            || (desc.outputs.grad && desc.grad_to != GradTarget::Buffer);
        if texture {
            return Err(Error::option(
                "image_loss",
                "takes host data in buffers: plan textures with Plan::new",
            ));
        }
        inputs.pred.expect("predictions", desc.dtype)?;
        inputs.target.expect("targets", desc.dtype)?;
        desc.check_host(
            inputs.pred.len(),
            inputs.target.len(),
            inputs.mask.map(<[f32]>::len),
        )
    }

    fn run_host(
        &self,
        program: &Program,
        inputs: &ImageInputs<'_>,
        grad: Option<&mut crate::dtype::ValuesMut<'_>>,
    ) -> Result<LossOutput> {
        self.check_inputs(inputs)?;
        let bytes = |v: &[f32]| std::borrow::Cow::Owned(bytemuck::cast_slice(v).to_vec());
        let host = HostData::default()
            .with(PRED, Some(std::borrow::Cow::Borrowed(inputs.pred.bytes())))
            .with(
                TARGET,
                Some(std::borrow::Cow::Borrowed(inputs.target.bytes())),
            )
            .with(MASK, inputs.mask.map(bytes));
        crate::engine::transfer::run_host(program, &host, self.reduction, "image", grad)
    }
}

impl Plan<ImageDesc> {
    /// The loss buffer's bytes: 4, or the per-element map's (`Reduction::None`).
    pub fn loss_bytes(&self) -> u64 {
        self.passes().slot_bytes(LOSS)
    }
}

/// Checks a texture the caller binds as `name` against `desc`.
fn check_texture(
    desc: &ImageDesc,
    name: &'static str,
    t: &wgpu::Texture,
    format: wgpu::TextureFormat,
    storage: bool,
) -> Result<()> {
    let bad = |reason: String| Err(Error::option(name, reason));
    if t.format() != format {
        return bad(format!(
            "texture format {:?}, the plan's is {format:?}",
            t.format()
        ));
    }
    if t.dimension() != wgpu::TextureDimension::D2 || t.sample_count() != 1 {
        return bad("not a single-sampled 2-D texture".into());
    }
    if (t.width() as usize, t.height() as usize) != (desc.w, desc.h) {
        return bad(format!(
            "texture of {} x {}, the plan's images are {} x {} (W x H)",
            t.width(),
            t.height(),
            desc.w,
            desc.h
        ));
    }
    let needed = if storage {
        wgpu::TextureUsages::STORAGE_BINDING
    } else {
        wgpu::TextureUsages::TEXTURE_BINDING
    };
    if !t.usage().contains(needed) {
        return bad(format!(
            "texture lacks usage {needed:?} (it has {:?})",
            t.usage()
        ));
    }
    Ok(())
}

/// A window of whole images bound at once (one over the batch when its buffers fit one binding):
/// its first image and image count, and for each kind of tensor (x, y, the gradient and the maps;
/// the mask; the per-element losses) the element its binding starts at (at or before the
/// window's first image, where the device's offset alignment allows) and the elements bound.
#[derive(Clone, Copy, Debug)]
struct ImageWindow {
    first: u64,
    images: u64,
    x: (u64, u64),
    m: (u64, u64),
    o: (u64, u64),
}

/// The windows of whole images the passes bind one at a time: one over the batch when every
/// f32 tensor of it fits one binding, else as many images a window as fit one.
fn image_windows(ctx: &Context, d: &ImageDesc) -> Result<Vec<ImageWindow>> {
    let (n, h, w, c) = (d.n as u64, d.h as u64, d.w as u64, d.c as u64);
    let (oh, ow) = d.out_dims();
    // Every tensor windowed: x and y in their dtype, the gradient in its own, and f32 (the
    // maps, the mask, the per-element losses).
    let sizes = [d.dtype.size(), d.gradient_dtype().size(), 4];
    let spans = Windowing {
        units: n,
        unit_elems: h * w * c,
        per_wg: 1,
        tail_elems: 0,
        sizes: &sizes,
        what: "an image (as f32)",
    }
    .spans(ctx)?;
    let align = elem_align(ctx, &sizes);
    Ok(spans
        .into_iter()
        .map(|s| {
            // From the aligned element at or before the window's first image to its last.
            let cut = |per_image: u64| {
                let base = s.first * per_image / align * align;
                (base, (s.first + s.units) * per_image - base)
            };
            ImageWindow {
                first: s.first,
                images: s.units,
                x: cut(h * w * c),
                m: cut(h * w),
                o: cut(oh as u64 * ow as u64 * c),
            }
        })
        .collect())
}

/// The program of `desc`: forward; with a reduced loss, the two fixed-order reductions of its
/// partials; finish; with a gradient, backward. A batch beyond one binding runs forward and
/// backward once a window of whole images ([`image_windows`]); its maps then hold one window,
/// written by a pass of forward just before each window's backward.
async fn plan(ctx: &Context, desc: &ImageDesc) -> Result<Program> {
    let d = desc;
    let mut b = Builder::new(ctx);
    let (n, h, w, c) = (d.n as u64, d.h as u64, d.w as u64, d.c as u64);
    let len = n * h * w * c;
    let (oh, ow) = d.out_dims();
    let reduced = d.reduction.is_reduced();
    let want_loss = d.outputs.loss;
    let want_grad = d.outputs.grad;
    let ssim = d.loss.uses_ssim();
    let windows = image_windows(ctx, d)?;
    let windowed = windows.len() > 1;
    let (dtype, grad_dtype) = (d.dtype, d.gradient_dtype());
    b.windowed_slot(PRED, "pred", input_bytes(d.pred, dtype, len), Access::Read)?;
    b.windowed_slot(
        TARGET,
        "target",
        input_bytes(d.target, dtype, len),
        Access::Read,
    )?;
    if d.mask == ImageMask::Buffer {
        b.windowed_slot(MASK, "mask", 4 * n * h * w, Access::Read)?;
    }
    let loss_bytes = match (want_loss, reduced) {
        (false, _) => 0,
        (true, true) => 4,
        (true, false) => 4 * n * (oh * ow) as u64 * c,
    };
    b.windowed_slot(LOSS, "loss", loss_bytes, Access::Write)?;
    let grad_buffer = want_grad && d.grad_to == GradTarget::Buffer;
    if grad_buffer {
        b.windowed_slot(GRAD, "grad", grad_dtype.bytes(len), Access::Write)?;
        b.grad_dtype(grad_dtype, len);
    }
    let maps = if want_grad && ssim {
        let images = windows.iter().map(|win| win.images).max().unwrap_or(n);
        let mut m = [0; 3];
        for slot in &mut m {
            *slot = b.owned("SSIM gradient map", 4 * images * h * w * c)?;
        }
        Some(m)
    } else {
        None
    };
    let tiles_x = d.w.div_ceil(TILE_X) as u64;
    let tiles_y = d.h.div_ceil(TILE_Y) as u64;
    let per_image = tiles_x * tiles_y;
    let tiles = n * per_image;
    let partials = reduced && (want_loss || want_grad);
    // Partial sums: one a lane group of each workgroup.
    let pg = ctx.tuning().lanes.clamp(1, IMAGE_WG);
    let count = tiles * (IMAGE_WG / pg) as u64;
    let (ssim_base, pix_base) = if partials {
        (b.scratch(2 * count)?, b.scratch(2 * count)?)
    } else {
        (0, 0)
    };
    let k_base = b.scratch(2)?;
    let range = d.data_range;
    let encode = |s: ImageSource| {
        (d.srgb_encoded && s == ImageSource::Texture(wgpu::TextureFormat::Rgba8UnormSrgb)) as u32
    };
    let mut params = ImageParams {
        h: d.h as u32,
        w: d.w as u32,
        c: d.c as u32,
        tiles_x: tiles_x as u32,
        tiles_y: tiles_y as u32,
        valid: (ssim && d.padding == Padding::Valid) as u32,
        out_h: oh as u32,
        out_w: ow as u32,
        encode: encode(d.pred) | encode(d.target) << 1,
        mask_mode: match d.mask {
            ImageMask::None => MaskMode::NONE,
            ImageMask::Buffer | ImageMask::Texture(_) => MaskMode::MASK,
            ImageMask::TargetAlpha => MaskMode::TARGET_ALPHA,
        },
        pix: d.loss.pix(),
        ssim: ssim as u32,
        out_kind: ElementKind::NONE,
        partials: partials as u32,
        ssim_base,
        pix_base,
        ssim_total: 0,
        pix_total: 0,
        k_base,
        loss: d.loss.code(),
        mean: (d.reduction == Reduction::Mean) as u32,
        write_loss: 0,
        c1: (0.01 * range).powi(2),
        c2: (0.03 * range).powi(2),
        lambda: d.lambda,
        range2: range * range,
        ..Default::default()
    };
    let grad_format = match d.grad_to {
        GradTarget::Texture(f) if want_grad => storage_name(f),
        _ => None,
    };
    let key = |entry: &'static str| {
        let code = |s: ImageSource| match s {
            ImageSource::Buffer => dtype.code(),
            ImageSource::Texture(_) => 0,
        };
        let mut k = PipelineKey::new(&IMAGE, entry)
            .value("DTYPE_x", code(d.pred))
            .value("DTYPE_y", code(d.target))
            .constant("WG", IMAGE_WG)
            .constant("SEG", IMAGE_WG)
            .constant("PG", pg)
            .value("TAPS", SSIM_WINDOW as u32)
            .text("GAUSS", &gaussian_wgsl())
            .define("PRED_TEX", matches!(d.pred, ImageSource::Texture(_)))
            .define("TARGET_TEX", matches!(d.target, ImageSource::Texture(_)))
            .define("MASK_TEX", matches!(d.mask, ImageMask::Texture(_)));
        if let Some(f) = grad_format {
            k = k.define("GRAD_TEX", true).text("GRAD_FORMAT", f);
        }
        // A 16-bit gradient buffer: the backward pass's dst in words (shaders/image.wgsl).
        if entry == "backward" && grad_buffer && grad_dtype != DType::F32 {
            k = k.value("DTYPE_grad", grad_dtype.code());
        }
        k
    };
    let (a, bm, cm) = match maps {
        Some([a, bb, cc]) => (Res::Owned(a), Res::Owned(bb), Res::Owned(cc)),
        None => (Res::Dummy(true), Res::Dummy(true), Res::Dummy(true)),
    };
    let window = |slot: Slot, (base, elems): (u64, u64), dtype: DType| {
        Res::Window(slot, dtype.size() * base, View::Scalar(dtype.bytes(elems)))
    };
    // A window's bindings, with `dst` at binding 4.
    let entries = |win: &ImageWindow, dst: Res| {
        let input = |slot: Slot, source: ImageSource| match source {
            ImageSource::Buffer => window(slot, win.x, dtype),
            ImageSource::Texture(_) => Res::Texture(slot),
        };
        let mut e = vec![
            input(PRED, d.pred),
            input(TARGET, d.target),
            match d.mask {
                ImageMask::Buffer => window(MASK, win.m, DType::F32),
                ImageMask::Texture(_) => Res::Texture(MASK),
                _ => Res::Dummy(false),
            },
            dst,
            Res::Scratch,
            a,
            bm,
            cm,
        ];
        if grad_format.is_some() {
            e.push(Res::Texture(GRAD));
        }
        e
    };
    // A window's workgroups, and its place in the batch.
    let at =
        |b: &Builder<'_>, win: &ImageWindow, p: ImageParams| -> Result<(ImageParams, (u32, u32))> {
            let tiles = win.images * per_image;
            let (wg_x, wg_y) = b.fold(tiles)?;
            let p = ImageParams {
                tiles: tiles as u32,
                wg_x,
                tile0: (win.first * per_image) as u32,
                x_off: (win.first * h * w * c - win.x.0) as u32,
                m_off: (win.first * h * w - win.m.0) as u32,
                o_off: (win.first * oh as u64 * ow as u64 * c - win.o.0) as u32,
                ..p
            };
            Ok((p, (wg_x, wg_y)))
        };
    // Forward: per-element losses into the loss buffer, or nothing there; the maps when one
    // window holds the batch.
    let per_element = want_loss && !reduced;
    let forward = ImageParams {
        out_kind: if per_element {
            d.loss.element()
        } else {
            ElementKind::NONE
        },
        grad: (want_grad && !windowed) as u32,
        ..params
    };
    for win in &windows {
        let dst = if per_element {
            window(LOSS, win.o, DType::F32)
        } else {
            Res::Dummy(true)
        };
        let (p, groups) = at(&b, win, forward)?;
        b.dispatch(&key("forward"), &p, entries(win, dst), groups);
    }
    if partials {
        params.ssim_total = b.reduce_keep(count, ssim_base)?;
        params.pix_total = b.reduce_keep(count, pix_base)?;
    }
    let scalar_dst = if want_loss && reduced {
        params.write_loss = 1;
        Res::User(LOSS, View::Scalar(4))
    } else {
        Res::Dummy(true)
    };
    let (p, _) = at(&b, &windows[0], params)?;
    b.dispatch(&key("finish"), &p, entries(&windows[0], scalar_dst), (1, 1));
    params.write_loss = 0;
    if want_grad {
        for win in &windows {
            if windowed && ssim {
                // This window's maps (its losses and partials are written).
                let maps_only = ImageParams {
                    grad: 1,
                    partials: 0,
                    ..params
                };
                let (p, groups) = at(&b, win, maps_only)?;
                b.dispatch(&key("forward"), &p, entries(win, Res::Dummy(true)), groups);
            }
            let dst = match d.grad_to {
                GradTarget::Buffer => window(GRAD, win.x, grad_dtype),
                GradTarget::Texture(_) => Res::Dummy(true),
            };
            let (p, groups) = at(&b, win, params)?;
            b.dispatch(&key("backward"), &p, entries(win, dst), groups);
        }
    }
    b.finish().await
}

/// The SSIM window's 1-D taps as the WGSL constant `G` (`#expr GAUSS`): the f32 values of the
/// twin's [`crate::cpu::image::gaussian`], printed so that they parse back to the same bits.
pub fn gaussian_wgsl() -> String {
    let taps: Vec<String> = gaussian()
        .iter()
        .map(|&v| format!("{:?}", v as f32))
        .collect();
    format!("const G = array<f32, {SSIM_WINDOW}>({});", taps.join(", "))
}

/// The bytes an input slot declares: its tensor's, or none for a texture (bound as a view).
fn input_bytes(source: ImageSource, dtype: DType, len: u64) -> u64 {
    match source {
        ImageSource::Buffer => dtype.bytes(len),
        ImageSource::Texture(_) => 0,
    }
}

impl Context {
    /// `desc` on host images: [`Context::loss`] with [`ImageInputs`] (`[N, H, W, C]` f32; the
    /// mask `[N, H, W]` when `desc` has a buffer mask). `desc`'s inputs and outputs must be
    /// buffers; for textures plan `desc` with [`Plan::new`].
    pub fn image_loss(
        &self,
        desc: &ImageDesc,
        pred: &[f32],
        target: &[f32],
        mask: Option<&[f32]>,
    ) -> Result<LossOutput> {
        let (pred, target) = (pred.into(), target.into());
        self.loss(desc, &ImageInputs { pred, target, mask })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convenience call plans once per description: a second call, and the cache itself,
    /// find the first call's plan.
    #[test]
    fn convenience_calls_reuse_their_plan() {
        let ctx = Context::new().expect("an adapter (CI installs lavapipe)");
        let desc = ImageDesc::new(ImageLoss::Photometric, 9, 13, 3);
        let x: Vec<f32> = (0..desc.len())
            .map(|i| (i as f32 * 0.37).sin().abs())
            .collect();
        let y: Vec<f32> = x.iter().map(|v| 1.0 - v).collect();
        let first = ctx.image_loss(&desc, &x, &y, None).unwrap();
        let plan = ctx
            .cached(
                |p: &Plan<ImageDesc>| *p.desc() == desc,
                |_| panic!("planned twice"),
            )
            .unwrap();
        assert_eq!(ctx.image_loss(&desc, &x, &y, None).unwrap(), first);
        let again = ctx
            .cached(
                |p: &Plan<ImageDesc>| *p.desc() == desc,
                |_| panic!("planned twice"),
            )
            .unwrap();
        assert!(std::sync::Arc::ptr_eq(&plan, &again));
    }
}
