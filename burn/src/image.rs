//! Image losses for renderers and Gaussian-splatting trainers: L1, MSE, PSNR, SSIM, D-SSIM and
//! the photometric `(1 - λ) L1 + λ (1 - SSIM)`, on `[N, H, W, C]` or `[H, W, C]` f32 tensors
//! with optional pixel weights, the gradient to the prediction.

use burn::backend::Dispatch;
use burn::tensor::{DType, Tensor};
use wgpu_loss::Reduction;
pub use wgpu_loss::image::{ImageLoss, Padding};

use crate::backend::{ImgOp, LossBackend};
use crate::device::{shared_of, wgpu_device};
use crate::{Error, Result};

/// An image loss and its options: by default SSIM's 11 × 11 Gaussian windows at every pixel
/// (`Padding::Same`), a data range of 1, λ = 0.2, the mean.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    op: ImgOp,
}

impl Image {
    /// `loss` with the defaults.
    pub fn new(loss: ImageLoss) -> Self {
        Image {
            op: ImgOp {
                loss,
                padding: Padding::Same,
                data_range: 1.0,
                lambda: 0.2,
                reduction: Reduction::Mean,
                masked: false,
            },
        }
    }

    /// SSIM's windows at the border: every pixel (`Same`) or inside the image (`Valid`).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.op.padding = padding;
        self
    }

    /// `L` of PSNR and of SSIM's constants.
    pub fn data_range(mut self, l: f32) -> Self {
        self.op.data_range = l;
        self
    }

    /// The photometric loss's weight of D-SSIM.
    pub fn lambda(mut self, lambda: f32) -> Self {
        self.op.lambda = lambda;
        self
    }

    /// [`Reduction::Mean`] or [`Reduction::Sum`] over pixels and channels.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.op.reduction = reduction;
        self
    }
}

/// The image loss of `pred` and `target` (`[N, H, W, C]` or `[H, W, C]`, f32, C from 1 to 4),
/// with `mask` the pixels' weights (the same shape with C = 1) or none: `[1]`, f32. On an
/// autodiff device the prediction gets its gradient (f32), computed in the forward pass; the
/// target and the mask take none.
///
/// # Errors
/// A rank other than 3 or 4; tensors not on one device of [`crate::init`] or
/// [`crate::adopt`]; shapes that differ; a dtype other than f32; [`Reduction::None`]; what
/// wgpu-loss refuses (C outside 1..=4, images smaller than SSIM's window with `Valid`).
pub fn image_loss<const D: usize>(
    pred: Tensor<D>,
    target: Tensor<D>,
    mask: Option<Tensor<D>>,
    options: &Image,
) -> Result<Tensor<1>> {
    let dims = pred.dims();
    let [n, h, w, c] = match dims[..] {
        [h, w, c] => [1, h, w, c],
        [n, h, w, c] => [n, h, w, c],
        _ => {
            return Err(Error::Shape {
                what: "pred",
                detail: format!("{dims:?}: [N, H, W, C] or [H, W, C]"),
            });
        }
    };
    let device = pred.device();
    let shared = shared_of(&device).ok_or(Error::Device("pred"))?;
    let on = wgpu_device(&device);
    let others_on = wgpu_device(&target.device()) == on
        && mask.as_ref().is_none_or(|m| wgpu_device(&m.device()) == on);
    if !others_on {
        return Err(Error::Device(
            "target or mask (not on the prediction's device)",
        ));
    }
    if target.dims() != dims {
        return Err(Error::Shape {
            what: "target",
            detail: format!("{:?}, the prediction is {dims:?}", target.dims()),
        });
    }
    let mut mask_dims = dims;
    mask_dims[D - 1] = 1;
    if let Some(m) = mask.as_ref().filter(|m| m.dims() != mask_dims) {
        return Err(Error::Shape {
            what: "mask",
            detail: format!("{:?}, the prediction's pixels are {mask_dims:?}", m.dims()),
        });
    }
    let dtypes = [("pred", pred.dtype()), ("target", target.dtype())];
    for (what, dtype) in dtypes
        .into_iter()
        .chain(mask.as_ref().map(|m| ("mask", m.dtype())))
    {
        if dtype != DType::F32 {
            return Err(Error::DType { what, dtype });
        }
    }
    if options.op.reduction == Reduction::None {
        return Err(Error::Loss(wgpu_loss::Error::option(
            "reduction",
            "None: the loss of a batch is reduced here",
        )));
    }
    let op = ImgOp {
        masked: mask.is_some(),
        ..options.op.clone()
    };
    shared.plan(&op.desc([n, h, w, c], pred.is_require_grad()))?;
    let mask = match mask {
        Some(m) => m.reshape([n * h * w]),
        None => Tensor::zeros([1], &device),
    };
    let out = <Dispatch as LossBackend>::wgpu_loss_image(
        pred.reshape([n, h, w, c]).into_dispatch(),
        target.reshape([n, h, w, c]).into_dispatch(),
        mask.into_dispatch(),
        op,
    );
    Ok(Tensor::from_dispatch(out))
}
