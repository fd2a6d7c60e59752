//! Cross-entropy over a vocabulary split by classes over several Burn devices: each device
//! holds the logits of its shard of the classes, and the loss, the log-sum-exp and every
//! shard's gradient come out as if one device held them all.
//!
//! Three steps, with wgpu-loss's vocabulary shards (its `docs/vocabulary-shards.md`):
//! 1. on each shard's device, each row's statistics over the shard's classes (`[N, 8]`);
//! 2. on the host, the statistics merged in a fixed order, in f64
//!    ([`wgpu_loss::cross_entropy::combine_shards`]): the loss, each row's log-sum-exp, and the
//!    coefficients every shard's gradient needs (`[N, 4]`);
//! 3. on each shard's device, its gradient from those coefficients (on an autodiff device,
//!    computed in the forward pass and scaled by the upstream gradient in the backward pass).
//!
//! Step 2 reads the statistics back to the host, a wait between the two halves: Burn 0.22's
//! collective operations (`burn-collective`) sum or average tensors across devices, and the merge needs a
//! maximum and a log-sum-exp as well, so the host combines. A trainer whose shards live on
//! several machines all-gathers the `[N, 8]` statistics of each shard with its own collective
//! library, combines them on every machine with `combine_shards`, and runs each shard's
//! gradient step where its logits are: `8 N` floats a shard cross the network, not `N × V`.

use burn::backend::Dispatch;
use burn::tensor::{Device, Int, Tensor, TensorData};
use wgpu_loss::Reduction;
use wgpu_loss::cross_entropy::combine_shards;

use crate::backend::{LossBackend, ShardOp, loss_dtype};
use crate::cross_entropy::{CrossEntropy, check_classes};
use crate::device::shared_of;
use crate::{Error, Result};

/// Cross-entropy of a vocabulary split by classes: `shards` are the logits `[N, C_k]` of the
/// classes `[C_0 + ... + C_(k-1), ... + C_k)`, in the order of their classes, each on a device
/// of [`crate::init`] or [`crate::adopt`] (several shards may share one); `targets` `[N]` (i32)
/// index the whole vocabulary `V = C_0 + ... + C_(K-1)`; every option of [`CrossEntropy`] (a
/// class weight has `V` values). Gives the loss (`[1]` reduced, `[N]` for
/// [`Reduction::None`]; f32) and each row's log-sum-exp over the vocabulary (`[N]`, f32), both
/// on the first shard's device: the loss and gradients of [`crate::cross_entropy()`] on the
/// concatenated logits, merged in a fixed order in f64. On autodiff devices each shard's logits
/// get their gradient (`[N, C_k]`, in their dtype, on their device); the targets take none.
///
/// The statistics are read back to the host between the two steps (a wait for every shard's
/// first step); see the [module](self) for why, and for a trainer across machines.
///
/// # Errors
/// No shards; a shard not on a device of this crate; shards of different row counts or an
/// empty one; targets that are not `[N]` i32; a dtype the kernels do not read; options
/// wgpu-loss refuses (a class weight count other than `V`); what Burn refuses while reading
/// the statistics back.
pub fn cross_entropy_sharded(
    shards: Vec<Tensor<2>>,
    targets: Tensor<1, Int>,
    options: &CrossEntropy,
) -> Result<(Tensor<1>, Tensor<1>)> {
    let op = options.op();
    let Some(first) = shards.first() else {
        return Err(Error::Shape {
            what: "shards",
            detail: "no shard".into(),
        });
    };
    let rows = first.dims()[0];
    let vocab: usize = shards.iter().map(|s| s.dims()[1]).sum();
    check_classes(&targets, rows)?;
    if let Some(w) = op.weight.as_ref().filter(|w| w.len() != vocab) {
        return Err(Error::Shape {
            what: "weight",
            detail: format!("{} values for a vocabulary of {vocab} classes", w.len()),
        });
    }
    // Each shard's options (its slice of the class weight) and the checks of its plans.
    let mut ops = Vec::with_capacity(shards.len());
    let mut offset = 0;
    for logits in &shards {
        let shared = shared_of(&logits.device()).ok_or(Error::Device("a shard's logits"))?;
        let [n, classes] = logits.dims();
        if n != rows || classes == 0 {
            return Err(Error::Shape {
                what: "shards",
                detail: format!("[{n}, {classes}] beside a first shard of {rows} rows"),
            });
        }
        let dtype = loss_dtype(logits.dtype()).ok_or(Error::DType {
            what: "a shard's logits",
            dtype: logits.dtype(),
        })?;
        let mut ce = op.clone();
        ce.weight = op
            .weight
            .as_ref()
            .map(|w| w[offset..offset + classes].to_vec().into());
        let shard = ShardOp { ce, offset, vocab };
        shared.plan(&shard.desc(rows, classes, dtype, false))?;
        if logits.is_require_grad() {
            shared.plan(&shard.desc(rows, classes, dtype, true))?;
        }
        ops.push(shard);
        offset += classes;
    }
    let devices: Vec<Device> = shards.iter().map(|s| s.device()).collect();
    let targets: Vec<Tensor<1, Int>> = devices
        .iter()
        .map(|d| targets.clone().to_device(d))
        .collect();

    // 1. Each shard's statistics on its device, all recorded before the first is read.
    let stats: Vec<Tensor<2>> = shards
        .iter()
        .zip(&targets)
        .zip(&ops)
        .map(|((logits, t), op)| {
            Tensor::from_dispatch(<Dispatch as LossBackend>::wgpu_loss_shard_statistics(
                logits.clone().detach().into_dispatch(),
                t.clone().into_dispatch(),
                op.clone(),
            ))
        })
        .collect();
    let stats = stats
        .into_iter()
        .map(|s| {
            s.into_data()
                .try_into_vec::<f32>()
                .map_err(|e| Error::Burn(format!("reading a shard's statistics: {e:?}")))
        })
        .collect::<Result<Vec<_>>>()?;

    // 2. Merged on the host.
    let views: Vec<&[f32]> = stats.iter().map(Vec::as_slice).collect();
    let full = op.desc(rows, vocab, wgpu_loss::DType::F32, false);
    let combined = combine_shards(&full, &views)?;
    let value = match op.reduction {
        Reduction::None => combined.per_row.unwrap_or_default(),
        _ => combined.value.into_iter().collect(),
    };
    let len = value.len();
    let lse = Tensor::<1>::from_data(TensorData::new(combined.lse, [rows]), &devices[0]);

    // 3. Each shard's part of the loss: the loss on the first, zeros on the others, each with
    // its shard's gradient step; their sum on the first device is the loss.
    let mut loss: Option<Tensor<1>> = None;
    for (k, ((logits, t), op)) in shards.into_iter().zip(targets).zip(ops).enumerate() {
        let device = &devices[k];
        let part = if k == 0 {
            value.clone()
        } else {
            vec![0.0; len]
        };
        let part = Tensor::<1>::from_data(TensorData::new(part, [len]), device);
        let part = if logits.is_require_grad() {
            let scale = TensorData::new(combined.scale.clone(), [rows, 4]);
            let scale = Tensor::<2>::from_data(scale, device);
            Tensor::from_dispatch(<Dispatch as LossBackend>::wgpu_loss_shard_part(
                logits.into_dispatch(),
                t.into_dispatch(),
                scale.into_dispatch(),
                part.into_dispatch(),
                op,
            ))
        } else {
            part
        };
        let part = part.to_device(&devices[0]);
        loss = Some(match loss {
            None => part,
            Some(sum) => sum + part,
        });
    }
    Ok((loss.expect("at least one shard"), lse))
}
