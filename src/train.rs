//! Training end to end, all four steps on the GPU: softmax regression (a linear layer with bias,
//! then cross-entropy) by the fused linear + cross-entropy kernel (steps 1-3: predictions, loss,
//! gradients of the weight and bias) and [`Optim`] (step 4), over mini-batches taken in the
//! data's order. An epoch is one submission; what comes back is the loss and the count of
//! correct rows of its first batch. The same bits on every run: every kernel is deterministic.
//!
//! CPU twin: [`crate::cpu::train`] (the same gradient descent in f64).

use std::mem::ManuallyDrop;

use crate::engine::context::Context;
use crate::engine::transfer;
use crate::error::{Error, Result};
use crate::families::linear_cross_entropy::{LinearCrossEntropyBuffers, LinearCrossEntropyDesc};
use crate::families::optim::{Optim, OptimBindings, Optimizer};
use crate::plan::{Bindings, Plan};

/// What to train: `rows` examples of `features` each, `classes` classes, mini-batches of
/// `batch_size` rows in the data's order (the last one shorter when it does not divide), and
/// the optimizer (the same for the weight and the bias).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainDesc {
    /// Examples.
    pub rows: usize,
    /// Features an example.
    pub features: usize,
    /// Classes.
    pub classes: usize,
    /// Rows a mini-batch.
    pub batch_size: usize,
    /// The optimizer of the weight and the bias.
    pub optimizer: Optimizer,
}

impl TrainDesc {
    /// Full-batch plain gradient descent at learning rate 0.1.
    pub fn new(rows: usize, features: usize, classes: usize) -> Self {
        TrainDesc {
            rows,
            features,
            classes,
            batch_size: rows,
            optimizer: Optimizer::sgd(0.1),
        }
    }

    /// Sets the mini-batch size.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the optimizer.
    pub fn optimizer(mut self, optimizer: Optimizer) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// The batches: first row and row count of each, in order.
    pub fn batches(&self) -> Vec<(usize, usize)> {
        (0..self.rows)
            .step_by(self.batch_size.max(1))
            .map(|r| (r, self.batch_size.min(self.rows - r)))
            .collect()
    }

    /// Checks the shape and the labels (each in `[0, classes)`).
    pub(crate) fn check(&self, features: &[f32], labels: &[i64]) -> Result<()> {
        for (what, n) in [
            ("rows", self.rows),
            ("features", self.features),
            ("classes", self.classes),
            ("batch size", self.batch_size),
        ] {
            if n == 0 {
                return Err(Error::Empty(what));
            }
        }
        let elements = self.rows.saturating_mul(self.features);
        crate::plan::check_count(
            "features (rows x features)",
            elements as u64,
            features.len(),
        )?;
        crate::plan::check_count("labels (one a row)", self.rows as u64, labels.len())?;
        if let Some((row, &value)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l < 0 || l >= self.classes as i64)
        {
            return Err(Error::TargetOutOfRange {
                row,
                value,
                classes: self.classes,
            });
        }
        if self.classes > 1 << 24 {
            return Err(Error::option("classes", "at most 2^24"));
        }
        Ok(())
    }
}

/// One epoch's figures: the mean loss of its first batch (the loss its first gradient step
/// was computed from), and the share of that batch's rows whose argmax is their label, both
/// with the parameters the epoch started from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// 1, 2, ...
    pub epoch: usize,
    /// The mean cross-entropy of the epoch's last batch.
    pub loss: f32,
    /// The share of that batch's rows whose argmax is their label.
    pub accuracy: f64,
}

/// A batch: its rows, its plan (full batches share one), and its bindings.
struct Batch {
    first: usize,
    rows: usize,
    plan: usize,
    bindings: Bindings,
}

/// The GPU objects, dropped under the device lock.
struct Gpu {
    plans: Vec<Plan<LinearCrossEntropyDesc>>,
    batches: Vec<Batch>,
    features: wgpu::Buffer,
    labels: wgpu::Buffer,
    /// The batch's rows, copied there when there is more than one batch.
    batch: Option<(wgpu::Buffer, wgpu::Buffer)>,
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
    /// Written by the fused kernel (it computes every gradient), unused here.
    _grad_hidden: wgpu::Buffer,
    /// The first batch's loss at 0 (the others' at one alignment further), and its correct count
    /// at 0 (the others' at 4).
    loss: wgpu::Buffer,
    correct: wgpu::Buffer,
    optim_weight: Optim,
    optim_bias: Optim,
    /// The weight and its gradient bound to `optim_weight`, the bias and its to `optim_bias`.
    step_weight: OptimBindings,
    step_bias: OptimBindings,
}

/// Softmax regression on data held on the GPU: the weight `[C, D]` and bias `[C]` start at zero
/// and each [`SoftmaxRegression::epoch`] trains one epoch.
pub struct SoftmaxRegression {
    ctx: Context,
    desc: TrainDesc,
    gpu: ManuallyDrop<Gpu>,
    epochs: usize,
}

impl std::fmt::Debug for SoftmaxRegression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftmaxRegression")
            .field("desc", &self.desc)
            .field("epochs", &self.epochs)
            .finish()
    }
}

/// `bytes` of `buffer` from `offset`.
fn range(buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> wgpu::BufferBinding<'_> {
    wgpu::BufferBinding {
        buffer,
        offset,
        size: wgpu::BufferSize::new(bytes),
    }
}

/// A storage buffer of `bytes` (zeroed), copyable both ways.
fn zeroed(ctx: &Context, label: &str, bytes: u64) -> wgpu::Buffer {
    transfer::output(ctx, label, bytes)
}

impl SoftmaxRegression {
    /// Uploads `features` (`[rows, features]`, row-major) and `labels` (`[rows]`, each in
    /// `[0, classes)`), plans the batches and the optimizers; the parameters start at zero.
    pub fn new(ctx: &Context, desc: TrainDesc, features: &[f32], labels: &[i64]) -> Result<Self> {
        desc.check(features, labels)?;
        let (d, c) = (desc.features as u64, desc.classes as u64);
        let batches = desc.batches();
        let layer = |rows| {
            LinearCrossEntropyDesc::new(rows, desc.features, desc.classes)
                .bias(true)
                .correct(true)
        };
        let mut plans = vec![Plan::new(ctx, &layer(batches[0].1))?];
        let last = batches[batches.len() - 1].1;
        if last != batches[0].1 {
            plans.push(Plan::new(ctx, &layer(last))?);
        }
        let optim_weight = Optim::new(ctx, desc.optimizer, desc.classes * desc.features)?;
        let optim_bias = Optim::new(ctx, desc.optimizer, desc.classes)?;
        let align = (ctx.limits().min_storage_buffer_offset_alignment as u64).max(4);
        let labels32: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let b = batches[0].1 as u64;
        let gpu = transfer::scoped(ctx, || {
            let features = transfer::upload(
                ctx,
                "wgpu-loss.train.features",
                bytemuck::cast_slice(features),
            );
            let labels = transfer::upload(
                ctx,
                "wgpu-loss.train.labels",
                bytemuck::cast_slice(&labels32),
            );
            let batch = (batches.len() > 1).then(|| {
                (
                    zeroed(ctx, "wgpu-loss.train.batch", 4 * b * d),
                    zeroed(ctx, "wgpu-loss.train.batch_labels", 4 * b),
                )
            });
            let weight = zeroed(ctx, "wgpu-loss.train.weight", 4 * c * d);
            let bias = zeroed(ctx, "wgpu-loss.train.bias", 4 * c);
            let grad_weight = zeroed(ctx, "wgpu-loss.train.grad_weight", 4 * c * d);
            let grad_bias = zeroed(ctx, "wgpu-loss.train.grad_bias", 4 * c);
            let grad_hidden = zeroed(ctx, "wgpu-loss.train.grad_hidden", 4 * b * d);
            let loss = zeroed(ctx, "wgpu-loss.train.loss", 2 * align);
            let correct = zeroed(ctx, "wgpu-loss.train.correct", 8);
            let mut bound = Vec::with_capacity(batches.len());
            for (k, &(first, rows)) in batches.iter().enumerate() {
                let plan = usize::from(rows != batches[0].1);
                let (x, y) = match &batch {
                    Some((x, y)) => (x, y),
                    None => (&features, &labels),
                };
                let slot = u64::from(k > 0);
                let buffers = LinearCrossEntropyBuffers::new(
                    range(x, 0, 4 * rows as u64 * d),
                    &weight,
                    range(y, 0, 4 * rows as u64),
                )
                .bias(&bias)
                .loss(range(&loss, slot * align, 4))
                .correct(range(&correct, slot * 4, 4))
                .grad_hidden(range(&grad_hidden, 0, 4 * rows as u64 * d))
                .grad_linear(&grad_weight)
                .grad_bias(&grad_bias);
                bound.push(Batch {
                    first,
                    rows,
                    plan,
                    bindings: plans[plan].bind(&buffers)?,
                });
            }
            let step_weight = optim_weight.bind(&weight, &grad_weight)?;
            let step_bias = optim_bias.bind(&bias, &grad_bias)?;
            Ok(Gpu {
                step_weight,
                step_bias,
                plans,
                batches: bound,
                features,
                labels,
                batch,
                weight,
                bias,
                _grad_hidden: grad_hidden,
                loss,
                correct,
                optim_weight,
                optim_bias,
            })
        })?;
        Ok(SoftmaxRegression {
            ctx: ctx.clone(),
            desc,
            gpu: ManuallyDrop::new(gpu),
            epochs: 0,
        })
    }

    /// What is trained.
    pub fn desc(&self) -> &TrainDesc {
        &self.desc
    }

    /// Epochs trained so far.
    pub fn epochs(&self) -> usize {
        self.epochs
    }

    /// The parameters on the GPU: the weight `[C, D]` and the bias `[C]` (f32).
    pub fn parameters(&self) -> (&wgpu::Buffer, &wgpu::Buffer) {
        (&self.gpu.weight, &self.gpu.bias)
    }

    /// Records one epoch into `encoder`: for each batch in order, its rows copied into the
    /// batch buffers (when there are several), the loss and gradients, and the update of the
    /// weight and the bias. Nothing is submitted.
    pub fn record_epoch(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let d = self.desc.features as u64;
        let g = &mut *self.gpu;
        for batch in &g.batches {
            if let Some((x, y)) = &g.batch {
                let _guard = self.ctx.lock();
                let rows = batch.rows as u64;
                let first = batch.first as u64;
                encoder.copy_buffer_to_buffer(&g.features, 4 * first * d, x, 0, 4 * rows * d);
                encoder.copy_buffer_to_buffer(&g.labels, 4 * first, y, 0, 4 * rows);
            }
            g.plans[batch.plan].record(encoder, &batch.bindings)?;
            g.optim_weight.record(encoder, &g.step_weight)?;
            g.optim_bias.record(encoder, &g.step_bias)?;
        }
        self.epochs += 1;
        Ok(())
    }

    /// Trains one epoch (one submission) and returns its figures (a small readback).
    pub fn epoch(&mut self) -> Result<EpochStats> {
        let ctx = self.ctx.clone();
        let data = transfer::scoped(&ctx, || {
            let device = ctx.device();
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-loss.train.readback"),
                size: 8,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            self.record_epoch(&mut encoder)?;
            encoder.copy_buffer_to_buffer(&self.gpu.loss, 0, &staging, 0, 4);
            encoder.copy_buffer_to_buffer(&self.gpu.correct, 0, &staging, 4, 4);
            ctx.queue().submit([encoder.finish()]);
            transfer::map_read(&ctx, &staging)
        })?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&data);
        Ok(EpochStats {
            epoch: self.epochs,
            loss: f32::from_bits(words[0]),
            accuracy: words[1] as f64 / self.gpu.batches[0].rows as f64,
        })
    }

    /// Reads the parameters back: the weight `[C, D]` and the bias `[C]`.
    pub fn read_parameters(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (c, d) = (self.desc.classes as u64, self.desc.features as u64);
        let w = transfer::read_back(&self.ctx, &self.gpu.weight, 4 * c * d)?;
        let b = transfer::read_back(&self.ctx, &self.gpu.bias, 4 * c)?;
        Ok((
            bytemuck::pod_collect_to_vec(&w),
            bytemuck::pod_collect_to_vec(&b),
        ))
    }
}

impl Drop for SoftmaxRegression {
    fn drop(&mut self) {
        // On GL, freeing GPU memory takes the GL context: release under the device lock.
        let _guard = self.ctx.lock();
        // SAFETY: dropped once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.gpu) };
    }
}

/// A synthetic data set: `rows` points of `features` dimensions around `classes` centres
/// (uniform in [-4, 4] each way) with unit Gaussian noise, labels in turn 0, 1, ..., C - 1, 0,
/// ...; the same for the same seed on every machine.
pub fn blobs(rows: usize, features: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    // SplitMix64, and Box-Muller for the noise.
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let centres: Vec<f64> = (0..classes * features)
        .map(|_| 8.0 * next() - 4.0)
        .collect();
    let mut x = Vec::with_capacity(rows * features);
    let labels: Vec<i64> = (0..rows).map(|r| (r % classes.max(1)) as i64).collect();
    for &l in &labels {
        for j in 0..features {
            let (u, v) = (next().max(f64::MIN_POSITIVE), next());
            let noise = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            x.push((centres[l as usize * features + j] + noise) as f32);
        }
    }
    (x, labels)
}
