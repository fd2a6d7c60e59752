//! The losses as a backend extension of Burn's cubecl backend: what runs on the wgpu tensors
//! (their buffers bound to a wgpu-loss plan, its passes submitted on the shared queue), the lazy
//! custom operations fusion makes of them (generated), and the autodiff rule (the gradient the
//! forward pass stored, scaled by the upstream gradient).
//!
//! The public functions of the loss modules check everything (the device, shapes, dtypes, the
//! plan itself, made and cached before anything is recorded), so what reaches this module is
//! valid: a failure here is the device's (lost, out of memory) and panics, as Burn's own kernels
//! do.

use std::num::NonZeroU64;
use std::sync::Arc;

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::backend::{AutodiffBackend, Backend, FloatDType, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::wgpu::{AutoCompiler, WgpuServer};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use wgpu::util::DeviceExt;
use wgpu_loss::{
    CrossEntropyDesc, ImageDesc, LinearCrossEntropyDesc, Outputs, PointwiseDesc, Reduction,
    cross_entropy::{CrossEntropyBuffers, Shard, Targets},
    image::{ImageBuffers, ImageInput, ImageLoss, ImageMask, Padding},
    linear_cross_entropy::LinearCrossEntropyBuffers,
    pointwise::{Pointwise, PointwiseBuffers},
};

use crate::device::{Shared, shared};

/// Cross-entropy's options, as the operation carries them (the shape and dtype come from the
/// tensors).
#[derive(Clone, Debug, PartialEq)]
pub struct CeOp {
    pub(crate) reduction: Reduction,
    pub(crate) ignore_index: i64,
    pub(crate) label_smoothing: f32,
    pub(crate) z_loss: f32,
    pub(crate) softcap: Option<f32>,
    pub(crate) weight: Option<Arc<Vec<f32>>>,
    /// The targets are probabilities `[N, C]` (in the logits' dtype), not class indices.
    pub(crate) soft: bool,
}

impl CeOp {
    /// The description of `[rows, classes]` logits in `dtype`, with the gradient or without.
    pub(crate) fn desc(
        &self,
        rows: usize,
        classes: usize,
        dtype: wgpu_loss::DType,
        grad: bool,
    ) -> CrossEntropyDesc {
        let mut desc = CrossEntropyDesc::new(rows, classes)
            .reduction(self.reduction)
            .ignore_index(self.ignore_index)
            .label_smoothing(self.label_smoothing)
            .z_loss(self.z_loss)
            .dtype(dtype)
            .lse(true)
            .outputs(if grad { Outputs::BOTH } else { Outputs::LOSS });
        if self.soft {
            desc = desc.targets(Targets::Probabilities);
        }
        if let Some(cap) = self.softcap {
            desc = desc.softcap(cap);
        }
        if self.weight.is_some() {
            desc = desc.weight(classes);
        }
        desc
    }
}

/// One shard of a vocabulary split over devices, as its steps carry it: cross-entropy's options
/// (the class weight the shard's slice of it) and the shard's first class and the vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardOp {
    pub(crate) ce: CeOp,
    pub(crate) offset: usize,
    pub(crate) vocab: usize,
}

impl ShardOp {
    /// The description of the shard's logits `[rows, classes]` in `dtype`: its statistics step,
    /// or its gradient step when `gradient`.
    pub(crate) fn desc(
        &self,
        rows: usize,
        classes: usize,
        dtype: wgpu_loss::DType,
        gradient: bool,
    ) -> CrossEntropyDesc {
        let ce = &self.ce;
        let mut desc = CrossEntropyDesc::new(rows, classes)
            .reduction(ce.reduction)
            .ignore_index(ce.ignore_index)
            .label_smoothing(ce.label_smoothing)
            .z_loss(ce.z_loss)
            .dtype(dtype)
            .shard(if gradient {
                Shard::gradient(self.offset, self.vocab)
            } else {
                Shard::statistics(self.offset, self.vocab)
            });
        if let Some(cap) = ce.softcap {
            desc = desc.softcap(cap);
        }
        if ce.weight.is_some() {
            desc = desc.weight(classes);
        }
        desc
    }
}

/// A pointwise loss and its reduction, as the operation carries them.
#[derive(Clone, Debug, PartialEq)]
pub struct PwOp {
    pub(crate) loss: Pointwise,
    pub(crate) reduction: Reduction,
}

impl PwOp {
    /// The description of `n` elements in `dtype`, with the gradient or without.
    pub(crate) fn desc(&self, n: usize, dtype: wgpu_loss::DType, grad: bool) -> PointwiseDesc {
        PointwiseDesc::new(self.loss, n)
            .reduction(self.reduction)
            .dtype(dtype)
            .outputs(if grad { Outputs::BOTH } else { Outputs::LOSS })
    }
}

/// Fused linear + cross-entropy's options, as the operation carries them.
#[derive(Clone, Debug, PartialEq)]
pub struct LceOp {
    pub(crate) reduction: Reduction,
    pub(crate) ignore_index: i64,
    pub(crate) label_smoothing: f32,
    pub(crate) z_loss: f32,
    pub(crate) softcap: Option<f32>,
}

impl LceOp {
    /// The description of hidden states `[rows, dim]` and a layer `[vocab, dim]` in `dtype`,
    /// with an f32 bias.
    pub(crate) fn desc(
        &self,
        rows: usize,
        dim: usize,
        vocab: usize,
        dtype: wgpu_loss::DType,
        grad: bool,
    ) -> LinearCrossEntropyDesc {
        let mut desc = LinearCrossEntropyDesc::new(rows, dim, vocab)
            .dtype(dtype)
            .bias(true)
            .reduction(self.reduction)
            .ignore_index(self.ignore_index)
            .label_smoothing(self.label_smoothing)
            .z_loss(self.z_loss)
            .lse(true)
            .outputs(if grad { Outputs::BOTH } else { Outputs::LOSS });
        if let Some(cap) = self.softcap {
            desc = desc.softcap(cap);
        }
        desc
    }
}

/// An image loss's options, as the operation carries them (the shape from the tensors).
#[derive(Clone, Debug, PartialEq)]
pub struct ImgOp {
    pub(crate) loss: ImageLoss,
    pub(crate) padding: Padding,
    pub(crate) data_range: f32,
    pub(crate) lambda: f32,
    pub(crate) reduction: Reduction,
    /// Whether the mask tensor is the pixels' weights (else a placeholder, unread).
    pub(crate) masked: bool,
}

impl ImgOp {
    /// The description of `[n, h, w, c]` f32 images, with the gradient or without.
    pub(crate) fn desc(&self, [n, h, w, c]: [usize; 4], grad: bool) -> ImageDesc {
        ImageDesc::new(self.loss, h, w, c)
            .batch(n)
            .padding(self.padding)
            .data_range(self.data_range)
            .lambda(self.lambda)
            .reduction(self.reduction)
            .mask(if self.masked {
                ImageMask::Buffer
            } else {
                ImageMask::None
            })
            .outputs(if grad { Outputs::BOTH } else { Outputs::LOSS })
    }
}

/// The kernels' dtype of a Burn float dtype, if they read it.
pub(crate) fn loss_dtype(dtype: DType) -> Option<wgpu_loss::DType> {
    match dtype {
        DType::F32 => Some(wgpu_loss::DType::F32),
        DType::F16 => Some(wgpu_loss::DType::F16),
        DType::BF16 => Some(wgpu_loss::DType::BF16),
        _ => None,
    }
}

/// The loss's shape: one value when reduced, else one per row (or element).
fn loss_shape(reduction: Reduction, rows: usize) -> Shape {
    match reduction {
        Reduction::None => Shape::new([rows]),
        _ => Shape::new([1]),
    }
}

fn ce_meta(logits: &TensorSpec, _targets: &TensorSpec, op: &CeOp) -> (TensorSpec, TensorSpec) {
    let rows = logits.shape[0];
    (
        TensorSpec::new(loss_shape(op.reduction, rows), DType::F32),
        TensorSpec::new(Shape::new([rows]), DType::F32),
    )
}

fn ce_grad_meta(
    logits: &TensorSpec,
    targets: &TensorSpec,
    op: &CeOp,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let (loss, lse) = ce_meta(logits, targets, op);
    (loss, lse, logits.clone())
}

fn shard_stats_meta(logits: &TensorSpec, _targets: &TensorSpec, _op: &ShardOp) -> TensorSpec {
    TensorSpec::new(Shape::new([logits.shape[0], 8]), DType::F32)
}

fn shard_grad_meta(
    logits: &TensorSpec,
    _targets: &TensorSpec,
    _scale: &TensorSpec,
    _op: &ShardOp,
) -> TensorSpec {
    logits.clone()
}

fn shard_part_meta(
    _logits: &TensorSpec,
    _targets: &TensorSpec,
    _scale: &TensorSpec,
    value: &TensorSpec,
    _op: &ShardOp,
) -> TensorSpec {
    value.clone()
}

fn pw_meta(pred: &TensorSpec, _target: &TensorSpec, op: &PwOp) -> TensorSpec {
    TensorSpec::new(loss_shape(op.reduction, pred.shape[0]), DType::F32)
}

fn pw_grad_meta(pred: &TensorSpec, target: &TensorSpec, op: &PwOp) -> (TensorSpec, TensorSpec) {
    (pw_meta(pred, target, op), pred.clone())
}

fn lce_meta(
    hidden: &TensorSpec,
    _linear: &TensorSpec,
    _bias: &TensorSpec,
    _targets: &TensorSpec,
    op: &LceOp,
) -> (TensorSpec, TensorSpec) {
    let rows = hidden.shape[0];
    (
        TensorSpec::new(loss_shape(op.reduction, rows), DType::F32),
        TensorSpec::new(Shape::new([rows]), DType::F32),
    )
}

type LceGradSpecs = (TensorSpec, TensorSpec, TensorSpec, TensorSpec, TensorSpec);

fn lce_grad_meta(
    hidden: &TensorSpec,
    linear: &TensorSpec,
    bias: &TensorSpec,
    targets: &TensorSpec,
    op: &LceOp,
) -> LceGradSpecs {
    let (loss, lse) = lce_meta(hidden, linear, bias, targets, op);
    let f32_like = |t: &TensorSpec| TensorSpec::new(t.shape.clone(), DType::F32);
    (
        loss,
        lse,
        f32_like(hidden),
        f32_like(linear),
        f32_like(bias),
    )
}

fn img_meta(
    _pred: &TensorSpec,
    _target: &TensorSpec,
    _mask: &TensorSpec,
    _op: &ImgOp,
) -> TensorSpec {
    TensorSpec::new(Shape::new([1]), DType::F32)
}

fn img_grad_meta(
    pred: &TensorSpec,
    target: &TensorSpec,
    mask: &TensorSpec,
    op: &ImgOp,
) -> (TensorSpec, TensorSpec) {
    (img_meta(pred, target, mask, op), pred.clone())
}

/// The losses as operations of Burn's backends: implemented for the cubecl backend (run) and
/// for autodiff (the gradient rule); the macro makes the fusion backend's lazy operations and
/// the dispatch through Burn's `Tensor`.
#[backend_extension(Cube, Autodiff, Fusion)]
pub trait LossBackend: Backend {
    /// Cross-entropy of logits `[N, C]` and class targets `[N]` (i32): the loss (`[1]`, or
    /// `[N]` unreduced) and the per-row log-sum-exp `[N]`, both f32.
    #[fusion(meta = ce_meta)]
    fn wgpu_loss_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: CeOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`LossBackend::wgpu_loss_cross_entropy`] and the gradient with respect to the logits
    /// (`[N, C]`, in their dtype), from the same pass.
    #[fusion(meta = ce_grad_meta)]
    fn wgpu_loss_cross_entropy_grad(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: CeOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Cross-entropy of logits `[N, C]` and probability targets `[N, C]` (the logits' dtype):
    /// the loss and the per-row log-sum-exp, f32.
    #[fusion(meta = ce_meta)]
    fn wgpu_loss_cross_entropy_soft(
        logits: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        op: CeOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`LossBackend::wgpu_loss_cross_entropy_soft`] and the gradient with respect to the
    /// logits, from the same pass.
    #[fusion(meta = ce_grad_meta)]
    fn wgpu_loss_cross_entropy_soft_grad(
        logits: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        op: CeOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// A vocabulary shard's statistics step: each row's statistics over the shard's classes
    /// (`[N, 8]`, f32), from its logits `[N, C_shard]` and class targets `[N]` (i32, indices
    /// into the whole vocabulary).
    #[fusion(meta = shard_stats_meta)]
    fn wgpu_loss_shard_statistics(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: ShardOp,
    ) -> FloatTensor<Self>;

    /// A vocabulary shard's gradient step: the whole loss's gradient with respect to the
    /// shard's logits (`[N, C_shard]`, in their dtype), from every shard's combined statistics
    /// `scale` (`[N, 4]`, f32, `wgpu_loss::cross_entropy::combine_shards`).
    #[fusion(meta = shard_grad_meta)]
    fn wgpu_loss_shard_gradient(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        scale: FloatTensor<Self>,
        op: ShardOp,
    ) -> FloatTensor<Self>;

    /// A shard's part of the loss: `value` (`[1]` or `[N]`, f32, computed on the host from
    /// every shard's statistics), whose gradient with respect to the shard's logits is the
    /// shard's gradient step (on an autodiff device). Without autodiff, `value` itself.
    #[fusion(meta = shard_part_meta)]
    fn wgpu_loss_shard_part(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        scale: FloatTensor<Self>,
        value: FloatTensor<Self>,
        op: ShardOp,
    ) -> FloatTensor<Self>;

    /// A pointwise loss of predictions and targets `[n]`: `[1]` reduced, `[n]` unreduced, f32.
    #[fusion(meta = pw_meta)]
    fn wgpu_loss_pointwise(
        pred: FloatTensor<Self>,
        target: FloatTensor<Self>,
        op: PwOp,
    ) -> FloatTensor<Self>;

    /// [`LossBackend::wgpu_loss_pointwise`] and the gradient with respect to the predictions
    /// (`[n]`, in their dtype), from the same pass.
    #[fusion(meta = pw_grad_meta)]
    fn wgpu_loss_pointwise_grad(
        pred: FloatTensor<Self>,
        target: FloatTensor<Self>,
        op: PwOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Fused linear + cross-entropy of hidden states `[N, D]` and a layer `[V, D]` (one dtype:
    /// f32, f16 or bf16) with its bias `[V]` (f32) and class targets `[N]`: the loss (`[1]`) and the per-row log-sum-exp
    /// `[N]`, without the `[N, V]` logits.
    #[fusion(meta = lce_meta)]
    fn wgpu_loss_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        linear: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: LceOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`LossBackend::wgpu_loss_linear_cross_entropy`] and the gradients of the hidden
    /// states, the layer and the bias (f32), from the same pass.
    #[fusion(meta = lce_grad_meta)]
    #[allow(clippy::type_complexity)]
    fn wgpu_loss_linear_cross_entropy_grad(
        hidden: FloatTensor<Self>,
        linear: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: LceOp,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    /// An image loss of predictions and targets `[N, H, W, C]` (f32) with pixel weights
    /// `[N, H, W]` (read when the operation says so): `[1]`, f32.
    #[fusion(meta = img_meta)]
    fn wgpu_loss_image(
        pred: FloatTensor<Self>,
        target: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        op: ImgOp,
    ) -> FloatTensor<Self>;

    /// [`LossBackend::wgpu_loss_image`] and the gradient with respect to the predictions
    /// (`[N, H, W, C]`, f32), from the same pass.
    #[fusion(meta = img_grad_meta)]
    fn wgpu_loss_image_grad(
        pred: FloatTensor<Self>,
        target: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        op: ImgOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// A wgpu tensor's buffer range, its size rounded up to whole 4-byte words (16-bit tensors of
/// odd length) where the buffer has them.
fn range(r: &burn_cubecl::cubecl::wgpu::WgpuResource) -> wgpu::BufferBinding<'_> {
    let size = r.size.next_multiple_of(4).min(r.buffer.size() - r.offset);
    wgpu::BufferBinding {
        buffer: &r.buffer,
        offset: r.offset,
        size: NonZeroU64::new(size),
    }
}

/// The context shared with `t`'s device; the public functions made sure there is one.
fn shared_of(t: &CubeTensor) -> Arc<Shared> {
    shared(&t.device).expect("wgpu-loss-burn: the tensor's device was registered")
}

fn empty(like: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, dtype)
}

/// Submits one wgpu-loss run on the shared queue: Burn's work on these tensors is submitted
/// first (fetching a tensor's resource flushes its stream), the resources are held until our
/// submission is made, and Burn's later work follows it in queue order.
fn submit(
    shared: &Shared,
    tensors: &[&CubeTensor],
    record: impl FnOnce(
        &[&burn_cubecl::cubecl::wgpu::WgpuResource],
        &mut wgpu::CommandEncoder,
    ) -> wgpu_loss::Result<()>,
) {
    let client = &tensors[0].client;
    let held: Vec<_> = tensors
        .iter()
        .map(|t| {
            client
                .get_resource::<WgpuServer<AutoCompiler>>(t.handle.clone())
                .expect("wgpu-loss-burn: a wgpu tensor's buffer")
        })
        .collect();
    client.flush().expect("wgpu-loss-burn: Burn's pending work");
    let resources: Vec<_> = held.iter().map(|r| r.resource()).collect();
    let ctx = &shared.ctx;
    let _guard = ctx.lock();
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-loss-burn"),
        });
    record(&resources, &mut encoder).expect("wgpu-loss-burn: recording a checked plan");
    ctx.queue().submit([encoder.finish()]);
    drop(held);
}

/// The class weight's buffer, where the options have one.
fn class_weight(shared: &Shared, op: &CeOp) -> Option<wgpu::Buffer> {
    op.weight.as_ref().map(|w| {
        shared
            .ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgpu-loss-burn class weight"),
                contents: bytemuck::cast_slice(w.as_slice()),
                usage: wgpu::BufferUsages::STORAGE,
            })
    })
}

/// Runs cross-entropy on wgpu tensors: `(loss, lse, grad)`, the gradient when asked for.
fn cross_entropy(
    logits: CubeTensor,
    targets: CubeTensor,
    op: &CeOp,
    grad: bool,
) -> (CubeTensor, CubeTensor, Option<CubeTensor>) {
    let logits = into_contiguous(logits);
    let targets = into_contiguous(targets);
    let shape = logits.shape();
    let (rows, classes) = (shape[0], shape[1]);
    let shared = shared_of(&logits);
    let dtype = loss_dtype(logits.dtype).expect("wgpu-loss-burn: a checked dtype");
    let plan = shared
        .plan(&op.desc(rows, classes, dtype, grad))
        .expect("wgpu-loss-burn: a checked plan");
    let loss = empty(&logits, loss_shape(op.reduction, rows), DType::F32);
    let lse = empty(&logits, Shape::new([rows]), DType::F32);
    let gradient = grad.then(|| empty(&logits, shape.clone(), logits.dtype));
    let weight = class_weight(&shared, op);
    let mut tensors = vec![&logits, &targets, &loss, &lse];
    tensors.extend(gradient.as_ref());
    submit(&shared, &tensors, |r, encoder| {
        let mut buffers = CrossEntropyBuffers::new(range(r[0]), range(r[1]))
            .loss(range(r[2]))
            .lse(range(r[3]));
        if grad {
            buffers = buffers.grad(range(r[4]));
        }
        if let Some(w) = &weight {
            buffers = buffers.weight(w);
        }
        let bindings = plan.bind(&buffers)?;
        plan.record(encoder, &bindings)
    });
    (loss, lse, gradient)
}

/// Runs one step of a vocabulary shard on wgpu tensors: its statistics `[N, 8]`, or, given the
/// combined statistics `scale`, its gradient.
fn shard_step(
    logits: CubeTensor,
    targets: CubeTensor,
    scale: Option<CubeTensor>,
    op: &ShardOp,
) -> CubeTensor {
    let logits = into_contiguous(logits);
    let targets = into_contiguous(targets);
    let scale = scale.map(into_contiguous);
    let shape = logits.shape();
    let (rows, classes) = (shape[0], shape[1]);
    let shared = shared_of(&logits);
    let dtype = loss_dtype(logits.dtype).expect("wgpu-loss-burn: a checked dtype");
    let plan = shared
        .plan(&op.desc(rows, classes, dtype, scale.is_some()))
        .expect("wgpu-loss-burn: a checked plan");
    let out = match scale {
        None => empty(&logits, Shape::new([rows, 8]), DType::F32),
        Some(_) => empty(&logits, shape.clone(), logits.dtype),
    };
    let weight = class_weight(&shared, &op.ce);
    let mut tensors = vec![&logits, &targets, &out];
    tensors.extend(scale.as_ref());
    submit(&shared, &tensors, |r, encoder| {
        let mut buffers = CrossEntropyBuffers::new(range(r[0]), range(r[1]));
        buffers = match r.get(3) {
            None => buffers.shard_stats(range(r[2])),
            Some(scale) => buffers.grad(range(r[2])).shard_scale(range(scale)),
        };
        if let Some(w) = &weight {
            buffers = buffers.weight(w);
        }
        let bindings = plan.bind(&buffers)?;
        plan.record(encoder, &bindings)
    });
    out
}

/// Runs a pointwise loss on flat wgpu tensors: `(loss, grad)`, the gradient when asked for.
fn pointwise(
    pred: CubeTensor,
    target: CubeTensor,
    op: &PwOp,
    grad: bool,
) -> (CubeTensor, Option<CubeTensor>) {
    let pred = into_contiguous(pred);
    let target = into_contiguous(target);
    let shape = pred.shape();
    let n = shape.num_elements();
    let shared = shared_of(&pred);
    let dtype = loss_dtype(pred.dtype).expect("wgpu-loss-burn: a checked dtype");
    let plan = shared
        .plan(&op.desc(n, dtype, grad))
        .expect("wgpu-loss-burn: a checked plan");
    let loss = empty(&pred, loss_shape(op.reduction, n), DType::F32);
    let gradient = grad.then(|| empty(&pred, shape.clone(), pred.dtype));
    let mut tensors = vec![&pred, &target, &loss];
    tensors.extend(gradient.as_ref());
    submit(&shared, &tensors, |r, encoder| {
        let mut buffers = PointwiseBuffers::new(range(r[0]), range(r[1])).loss(range(r[2]));
        if grad {
            buffers = buffers.grad(range(r[3]));
        }
        let bindings = plan.bind(&buffers)?;
        plan.record(encoder, &bindings)
    });
    (loss, gradient)
}

/// What fused linear + cross-entropy gives: the loss, the log-sum-exp and, when asked for,
/// the gradients of the hidden states, the layer and the bias.
type LceOut = (CubeTensor, CubeTensor, Option<[CubeTensor; 3]>);

/// Runs fused linear + cross-entropy on wgpu tensors.
fn linear_cross_entropy(
    hidden: CubeTensor,
    linear: CubeTensor,
    bias: CubeTensor,
    targets: CubeTensor,
    op: &LceOp,
    grad: bool,
) -> LceOut {
    let [hidden, linear, bias, targets] = [hidden, linear, bias, targets].map(into_contiguous);
    let (hs, ls) = (hidden.shape(), linear.shape());
    let (rows, dim, vocab) = (hs[0], hs[1], ls[0]);
    let shared = shared_of(&hidden);
    let dtype = loss_dtype(hidden.dtype).expect("wgpu-loss-burn: a checked dtype");
    let plan = shared
        .plan(&op.desc(rows, dim, vocab, dtype, grad))
        .expect("wgpu-loss-burn: a checked plan");
    let loss = empty(&hidden, loss_shape(op.reduction, rows), DType::F32);
    let lse = empty(&hidden, Shape::new([rows]), DType::F32);
    let grads = grad.then(|| {
        [
            empty(&hidden, hs.clone(), DType::F32),
            empty(&hidden, ls.clone(), DType::F32),
            empty(&hidden, Shape::new([vocab]), DType::F32),
        ]
    });
    let mut tensors = vec![&hidden, &linear, &bias, &targets, &loss, &lse];
    tensors.extend(grads.iter().flatten());
    submit(&shared, &tensors, |r, encoder| {
        let mut buffers = LinearCrossEntropyBuffers::new(range(r[0]), range(r[1]), range(r[3]))
            .bias(range(r[2]))
            .loss(range(r[4]))
            .lse(range(r[5]));
        if grad {
            buffers = buffers
                .grad_hidden(range(r[6]))
                .grad_linear(range(r[7]))
                .grad_bias(range(r[8]));
        }
        let bindings = plan.bind(&buffers)?;
        plan.record(encoder, &bindings)
    });
    (loss, lse, grads)
}

/// Runs an image loss on `[N, H, W, C]` wgpu tensors: the loss and, when asked for, the
/// prediction's gradient.
fn image(
    pred: CubeTensor,
    target: CubeTensor,
    mask: CubeTensor,
    op: &ImgOp,
    grad: bool,
) -> (CubeTensor, Option<CubeTensor>) {
    let [pred, target, mask] = [pred, target, mask].map(into_contiguous);
    let shape = pred.shape();
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    let shared = shared_of(&pred);
    let plan = shared
        .plan(&op.desc(dims, grad))
        .expect("wgpu-loss-burn: a checked plan");
    let loss = empty(&pred, Shape::new([1]), DType::F32);
    let gradient = grad.then(|| empty(&pred, shape.clone(), DType::F32));
    let mut tensors = vec![&pred, &target, &mask, &loss];
    tensors.extend(gradient.as_ref());
    submit(&shared, &tensors, |r, encoder| {
        let mut buffers = ImageBuffers::new(
            ImageInput::Buffer(range(r[0])),
            ImageInput::Buffer(range(r[1])),
        )
        .loss(range(r[3]));
        if op.masked {
            buffers = buffers.mask(ImageInput::Buffer(range(r[2])));
        }
        if grad {
            buffers = buffers.grad(ImageInput::Buffer(range(r[4])));
        }
        let bindings = plan.bind(&buffers)?;
        plan.record(encoder, &bindings)
    });
    (loss, gradient)
}

impl LossBackend for CubeBackend {
    fn wgpu_loss_cross_entropy(
        logits: CubeTensor,
        targets: CubeTensor,
        op: CeOp,
    ) -> (CubeTensor, CubeTensor) {
        let (loss, lse, _) = cross_entropy(logits, targets, &op, false);
        (loss, lse)
    }

    fn wgpu_loss_cross_entropy_grad(
        logits: CubeTensor,
        targets: CubeTensor,
        op: CeOp,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (loss, lse, grad) = cross_entropy(logits, targets, &op, true);
        (loss, lse, grad.expect("asked for"))
    }

    fn wgpu_loss_cross_entropy_soft(
        logits: CubeTensor,
        probs: CubeTensor,
        op: CeOp,
    ) -> (CubeTensor, CubeTensor) {
        let (loss, lse, _) = cross_entropy(logits, probs, &op, false);
        (loss, lse)
    }

    fn wgpu_loss_cross_entropy_soft_grad(
        logits: CubeTensor,
        probs: CubeTensor,
        op: CeOp,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (loss, lse, grad) = cross_entropy(logits, probs, &op, true);
        (loss, lse, grad.expect("asked for"))
    }

    fn wgpu_loss_shard_statistics(
        logits: CubeTensor,
        targets: CubeTensor,
        op: ShardOp,
    ) -> CubeTensor {
        shard_step(logits, targets, None, &op)
    }

    fn wgpu_loss_shard_gradient(
        logits: CubeTensor,
        targets: CubeTensor,
        scale: CubeTensor,
        op: ShardOp,
    ) -> CubeTensor {
        shard_step(logits, targets, Some(scale), &op)
    }

    fn wgpu_loss_shard_part(
        _logits: CubeTensor,
        _targets: CubeTensor,
        _scale: CubeTensor,
        value: CubeTensor,
        _op: ShardOp,
    ) -> CubeTensor {
        value
    }

    fn wgpu_loss_pointwise(pred: CubeTensor, target: CubeTensor, op: PwOp) -> CubeTensor {
        pointwise(pred, target, &op, false).0
    }

    fn wgpu_loss_pointwise_grad(
        pred: CubeTensor,
        target: CubeTensor,
        op: PwOp,
    ) -> (CubeTensor, CubeTensor) {
        let (loss, grad) = pointwise(pred, target, &op, true);
        (loss, grad.expect("asked for"))
    }

    fn wgpu_loss_linear_cross_entropy(
        hidden: CubeTensor,
        linear: CubeTensor,
        bias: CubeTensor,
        targets: CubeTensor,
        op: LceOp,
    ) -> (CubeTensor, CubeTensor) {
        let (loss, lse, _) = linear_cross_entropy(hidden, linear, bias, targets, &op, false);
        (loss, lse)
    }

    fn wgpu_loss_linear_cross_entropy_grad(
        hidden: CubeTensor,
        linear: CubeTensor,
        bias: CubeTensor,
        targets: CubeTensor,
        op: LceOp,
    ) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
        let (loss, lse, grads) = linear_cross_entropy(hidden, linear, bias, targets, &op, true);
        let [gh, gw, gb] = grads.expect("asked for");
        (loss, lse, gh, gw, gb)
    }

    fn wgpu_loss_image(
        pred: CubeTensor,
        target: CubeTensor,
        mask: CubeTensor,
        op: ImgOp,
    ) -> CubeTensor {
        image(pred, target, mask, &op, false).0
    }

    fn wgpu_loss_image_grad(
        pred: CubeTensor,
        target: CubeTensor,
        mask: CubeTensor,
        op: ImgOp,
    ) -> (CubeTensor, CubeTensor) {
        let (loss, grad) = image(pred, target, mask, &op, true);
        (loss, grad.expect("asked for"))
    }
}

/// The backward pass of a loss whose forward pass stored its gradient: that gradient times the
/// upstream one (a scalar for a reduced loss; one a row, broadcast over the row, or one an
/// element for an unreduced one), in the gradient's dtype.
#[derive(Debug)]
struct ScaleStoredGrad;

impl<B: Backend> Backward<B, 1> for ScaleStoredGrad {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        let Some(node) = parent else { return };
        let grad = ops.state;
        let (gshape, ushape) = (grad.shape(), upstream.shape());
        // The upstream gradient's dims, then ones: [1] -> [1, 1], [N] -> [N, 1].
        let mut dims = vec![1usize; gshape.num_dims()];
        if ushape.num_elements() > 1 {
            for (i, d) in ushape.iter().enumerate() {
                dims[i] = *d;
            }
        }
        let upstream = B::float_reshape(upstream, Shape::from(dims));
        let upstream = if upstream.dtype() != grad.dtype() {
            B::float_cast(upstream, FloatDType::from(grad.dtype()))
        } else {
            upstream
        };
        grads.register::<B>(node.id, B::float_mul(grad, upstream));
    }
}

/// The backward pass of fused linear + cross-entropy (reduced): each stored gradient (hidden
/// states, layer, bias; f32) times the upstream scalar, cast to its parent's dtype (the state's
/// second half).
#[derive(Debug)]
struct ScaleStoredGrads3;

impl<B: Backend> Backward<B, 3> for ScaleStoredGrads3 {
    type State = ([FloatTensor<B>; 3], [DType; 3]);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let upstream = grads.consume::<B>(&ops.node);
        let (stored, dtypes) = ops.state;
        for ((parent, grad), dtype) in ops.parents.into_iter().zip(stored).zip(dtypes) {
            let Some(node) = parent else { continue };
            let dims = vec![1usize; grad.shape().num_dims()];
            let up = B::float_reshape(upstream.clone(), Shape::from(dims));
            let grad = B::float_mul(grad, up);
            let grad = if grad.dtype() != dtype {
                B::float_cast(grad, FloatDType::from(dtype))
            } else {
                grad
            };
            grads.register::<B>(node.id, grad);
        }
    }
}

/// An autodiff operation of `x` whose forward pass computes its gradient: `run` is the
/// operation on `x`'s inner tensor, asked for the gradient with respect to `x` (`true`) when
/// the graph tracks `x`, and gives the output and that gradient; the backward pass scales the
/// stored gradient by the upstream one.
fn with_stored_grad<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    run: impl FnOnce(FloatTensor<B>, bool) -> (FloatTensor<B>, Option<FloatTensor<B>>),
) -> FloatTensor<Autodiff<B, C>> {
    match ScaleStoredGrad
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, grad) = run(x.into_primitive(), true);
            prep.finish(grad.expect("wgpu-loss-burn: a gradient asked for"), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(run(x.into_primitive(), false).0),
    }
}

/// [`with_stored_grad`] for an operation with a second output that takes no gradient (the
/// per-row log-sum-exp): `run` gives the output, that second output and the gradient.
#[allow(clippy::type_complexity)]
fn with_stored_grad_and_lse<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    run: impl FnOnce(FloatTensor<B>, bool) -> (FloatTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>),
) -> (FloatTensor<Autodiff<B, C>>, FloatTensor<Autodiff<B, C>>) {
    let mut lse = None;
    let loss = with_stored_grad::<B, C>(x, |x, grad| {
        let (loss, l, g) = run(x, grad);
        lse = Some(l);
        (loss, g)
    });
    (
        loss,
        Autodiff::<B, C>::from_inner(lse.expect("run gives it")),
    )
}

impl<B: LossBackend, C: CheckpointStrategy> LossBackend for Autodiff<B, C> {
    fn wgpu_loss_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: CeOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        with_stored_grad_and_lse::<B, C>(logits, |x, grad| match grad {
            true => {
                let (loss, lse, g) = B::wgpu_loss_cross_entropy_grad(x, targets, op);
                (loss, lse, Some(g))
            }
            false => {
                let (loss, lse) = B::wgpu_loss_cross_entropy(x, targets, op);
                (loss, lse, None)
            }
        })
    }

    fn wgpu_loss_cross_entropy_grad(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: CeOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (loss, lse, grad) =
            B::wgpu_loss_cross_entropy_grad(logits.into_primitive(), targets, op);
        (
            Self::from_inner(loss),
            Self::from_inner(lse),
            Self::from_inner(grad),
        )
    }

    fn wgpu_loss_cross_entropy_soft(
        logits: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        op: CeOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // The probabilities take no gradient (they are data, as targets are).
        let probs = probs.into_primitive();
        with_stored_grad_and_lse::<B, C>(logits, |x, grad| match grad {
            true => {
                let (loss, lse, g) = B::wgpu_loss_cross_entropy_soft_grad(x, probs, op);
                (loss, lse, Some(g))
            }
            false => {
                let (loss, lse) = B::wgpu_loss_cross_entropy_soft(x, probs, op);
                (loss, lse, None)
            }
        })
    }

    fn wgpu_loss_cross_entropy_soft_grad(
        logits: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        op: CeOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (loss, lse, grad) = B::wgpu_loss_cross_entropy_soft_grad(
            logits.into_primitive(),
            probs.into_primitive(),
            op,
        );
        (
            Self::from_inner(loss),
            Self::from_inner(lse),
            Self::from_inner(grad),
        )
    }

    fn wgpu_loss_shard_statistics(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: ShardOp,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::wgpu_loss_shard_statistics(
            logits.into_primitive(),
            targets,
            op,
        ))
    }

    fn wgpu_loss_shard_gradient(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        scale: FloatTensor<Self>,
        op: ShardOp,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::wgpu_loss_shard_gradient(
            logits.into_primitive(),
            targets,
            scale.into_primitive(),
            op,
        ))
    }

    fn wgpu_loss_shard_part(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        scale: FloatTensor<Self>,
        value: FloatTensor<Self>,
        op: ShardOp,
    ) -> FloatTensor<Self> {
        // The targets, the combined statistics and the value take no gradient.
        let (scale, value) = (scale.into_primitive(), value.into_primitive());
        with_stored_grad::<B, C>(logits, |x, grad| {
            let g = grad.then(|| B::wgpu_loss_shard_gradient(x, targets, scale, op));
            (value, g)
        })
    }

    fn wgpu_loss_pointwise(
        pred: FloatTensor<Self>,
        target: FloatTensor<Self>,
        op: PwOp,
    ) -> FloatTensor<Self> {
        // The target takes no gradient (as in PyTorch's losses with a target of data).
        let target = target.into_primitive();
        with_stored_grad::<B, C>(pred, |x, grad| {
            if grad {
                let (loss, g) = B::wgpu_loss_pointwise_grad(x, target, op);
                (loss, Some(g))
            } else {
                (B::wgpu_loss_pointwise(x, target, op), None)
            }
        })
    }

    fn wgpu_loss_pointwise_grad(
        pred: FloatTensor<Self>,
        target: FloatTensor<Self>,
        op: PwOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (loss, grad) =
            B::wgpu_loss_pointwise_grad(pred.into_primitive(), target.into_primitive(), op);
        (Self::from_inner(loss), Self::from_inner(grad))
    }

    fn wgpu_loss_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        linear: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: LceOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match ScaleStoredGrads3
            .prepare::<C>([hidden.node(), linear.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let dtypes = [hidden.dtype(), linear.dtype(), bias.dtype()];
                let (loss, lse, gh, gw, gb) = B::wgpu_loss_linear_cross_entropy_grad(
                    hidden.into_primitive(),
                    linear.into_primitive(),
                    bias.into_primitive(),
                    targets,
                    op,
                );
                (
                    prep.finish(([gh, gw, gb], dtypes), loss),
                    Self::from_inner(lse),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (loss, lse) = B::wgpu_loss_linear_cross_entropy(
                    hidden.into_primitive(),
                    linear.into_primitive(),
                    bias.into_primitive(),
                    targets,
                    op,
                );
                (prep.finish(loss), Self::from_inner(lse))
            }
        }
    }

    fn wgpu_loss_linear_cross_entropy_grad(
        hidden: FloatTensor<Self>,
        linear: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        targets: IntTensor<Self>,
        op: LceOp,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let (loss, lse, gh, gw, gb) = B::wgpu_loss_linear_cross_entropy_grad(
            hidden.into_primitive(),
            linear.into_primitive(),
            bias.into_primitive(),
            targets,
            op,
        );
        (
            Self::from_inner(loss),
            Self::from_inner(lse),
            Self::from_inner(gh),
            Self::from_inner(gw),
            Self::from_inner(gb),
        )
    }

    fn wgpu_loss_image(
        pred: FloatTensor<Self>,
        target: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        op: ImgOp,
    ) -> FloatTensor<Self> {
        // The target and the mask take no gradient (a renderer's ground truth and weights).
        let (target, mask) = (target.into_primitive(), mask.into_primitive());
        with_stored_grad::<B, C>(pred, |x, grad| {
            if grad {
                let (loss, g) = B::wgpu_loss_image_grad(x, target, mask, op);
                (loss, Some(g))
            } else {
                (B::wgpu_loss_image(x, target, mask, op), None)
            }
        })
    }

    fn wgpu_loss_image_grad(
        pred: FloatTensor<Self>,
        target: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        op: ImgOp,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (loss, grad) = B::wgpu_loss_image_grad(
            pred.into_primitive(),
            target.into_primitive(),
            mask.into_primitive(),
            op,
        );
        (Self::from_inner(loss), Self::from_inner(grad))
    }
}
