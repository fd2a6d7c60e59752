//! `wgpu-loss train`: softmax regression trained on the GPU (fused linear + cross-entropy and
//! the update step), on .npy files or a generated data set.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wgpu_loss::{
    optim::Optimizer,
    train::{EpochStats, SoftmaxRegression, TrainDesc},
};

use super::eval::{class_targets, json_f32};
use super::{adapter_json, context, npy};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerName {
    /// Plain gradient descent: w -= lr * grad.
    Sgd,
    /// SGD with momentum 0.9.
    Momentum,
    /// Adam (betas 0.9, 0.999; eps 1e-8).
    Adam,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Synthetic {
    /// Gaussian blobs: --samples points of --dims dimensions around --classes centres.
    Blobs,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Features [N, D], float32 .npy.
    #[arg(
        long,
        required_unless_present = "synthetic",
        conflicts_with = "synthetic"
    )]
    features: Option<PathBuf>,
    /// Labels [N], class indices (int64, int32 or uint32 .npy), each in [0, C).
    #[arg(
        long,
        required_unless_present = "synthetic",
        conflicts_with = "synthetic"
    )]
    labels: Option<PathBuf>,
    /// Train on a generated data set instead of files.
    #[arg(long)]
    synthetic: Option<Synthetic>,
    /// Rows of the generated data set.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Features of the generated data set.
    #[arg(long, default_value_t = 2)]
    dims: usize,
    /// The generated data set's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Classes C (default: the largest label + 1; 3 for --synthetic).
    #[arg(long)]
    classes: Option<usize>,
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// The learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f32,
    /// Rows a gradient step, taken in the file's order (default: all rows).
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: OptimizerName,
    /// Write the trained weight [C, D] to this .npy file.
    #[arg(long)]
    weights_out: Option<PathBuf>,
    /// Write the trained bias [C] to this .npy file.
    #[arg(long)]
    bias_out: Option<PathBuf>,
    /// Draw the loss and the accuracy per epoch to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print JSON: every epoch's loss and accuracy, the data, the adapter.
    #[arg(long)]
    json: bool,
}

/// The data set: features [N, D] row-major, labels [N] in [0, C).
struct Data {
    x: Vec<f32>,
    y: Vec<i64>,
    n: usize,
    d: usize,
    classes: usize,
}

/// The data, from files or generated.
fn data(a: &TrainArgs) -> Result<Data, String> {
    let (x, y, n, d) = match (&a.features, &a.labels, a.synthetic) {
        (_, _, Some(Synthetic::Blobs)) => {
            let classes = a.classes.unwrap_or(3);
            if a.samples == 0 || a.dims == 0 || classes == 0 {
                return Err("--samples, --dims and --classes must be positive".into());
            }
            let (x, y) = wgpu_loss::train::blobs(a.samples, a.dims, classes, a.seed);
            (x, y, a.samples, a.dims)
        }
        (Some(features), Some(labels), None) => {
            let x = npy::read_f32(features)?;
            let [n, d] = x.shape[..] else {
                return Err(format!(
                    "{}: shape {:?}, a [N, D] array (rank 2) is needed",
                    features.display(),
                    x.shape
                ));
            };
            let y = class_targets(labels, n)?;
            (x.data, y, n, d)
        }
        _ => return Err("--features and --labels, or --synthetic, are needed".into()),
    };
    let largest = y.iter().copied().max().unwrap_or(0);
    let classes = a.classes.unwrap_or((largest.max(0) + 1) as usize);
    if let Some((row, label)) = y
        .iter()
        .enumerate()
        .find(|&(_, &l)| l < 0 || l >= classes as i64)
    {
        return Err(format!(
            "label {label} at row {row} is outside [0, {classes}){}",
            if a.classes.is_some() {
                " (--classes)"
            } else {
                ""
            }
        ));
    }
    Ok(Data {
        x,
        y,
        n,
        d,
        classes,
    })
}

pub fn run(a: &TrainArgs) -> Result<(), String> {
    let Data {
        x,
        y,
        n,
        d,
        classes,
    } = data(a)?;
    let optimizer = match a.optimizer {
        OptimizerName::Sgd => Optimizer::sgd(a.lr),
        OptimizerName::Momentum => Optimizer::momentum(a.lr, 0.9, false),
        OptimizerName::Adam => Optimizer::adam(a.lr),
    };
    let batch_size = a.batch_size.unwrap_or(n);
    let desc = TrainDesc::new(n, d, classes)
        .batch_size(batch_size)
        .optimizer(optimizer);
    let ctx = context()?;
    let start = Instant::now();
    let mut model = SoftmaxRegression::new(&ctx, desc, &x, &y).map_err(|e| e.to_string())?;
    let progress = ProgressBar::new(a.epochs as u64).with_style(
        ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {elapsed} {msg}")
            .map_err(|e| e.to_string())?,
    );
    let mut epochs: Vec<EpochStats> = Vec::with_capacity(a.epochs);
    for _ in 0..a.epochs {
        let e = model.epoch().map_err(|e| e.to_string())?;
        progress.set_message(format!("loss {:.4} accuracy {:.3}", e.loss, e.accuracy));
        progress.inc(1);
        epochs.push(e);
    }
    progress.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let (w, b) = model.read_parameters().map_err(|e| e.to_string())?;
    if let Some(path) = &a.weights_out {
        npy::write(path, &[classes, d], &w)?;
    }
    if let Some(path) = &a.bias_out {
        npy::write(path, &[classes], &b)?;
    }
    if let Some(path) = &a.plot {
        super::plot::training(path, &ctx.adapter_info().name, &epochs)?;
    }
    if a.json {
        let v = serde_json::json!({
            "epochs": epochs.iter().map(|e| serde_json::json!({
                "epoch": e.epoch,
                "loss": json_f32(e.loss),
                "accuracy": e.accuracy,
            })).collect::<Vec<_>>(),
            "rows": n,
            "features": d,
            "classes": classes,
            "batch_size": batch_size,
            "optimizer": format!("{:?}", a.optimizer).to_lowercase(),
            "lr": a.lr.to_string().parse::<f64>().unwrap_or(f64::NAN),
            "adapter": adapter_json(&ctx),
            "seconds": seconds,
        });
        println!("{v}");
        return Ok(());
    }
    if let (Some(first), Some(last)) = (epochs.first(), epochs.last()) {
        println!(
            "{n} rows x {d} features, {classes} classes, batches of {batch_size}, {:?} lr {}",
            a.optimizer, a.lr
        );
        for e in [first, last] {
            println!(
                "epoch {:>4}: loss {:.6} accuracy {:.4}",
                e.epoch, e.loss, e.accuracy
            );
        }
        println!("{} epochs in {seconds:.2} s", epochs.len());
    }
    Ok(())
}
