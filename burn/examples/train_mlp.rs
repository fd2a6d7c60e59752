//! A small Burn MLP trained on synthetic data (made here: a fixed random teacher labels random
//! inputs), once with Burn's `CrossEntropyLoss` and once with wgpu-loss's, from the same
//! initial weights. Each step prints both losses and the time of the loss step alone (forward
//! and backward of the loss on the step's logits); the end prints the speedup and the largest
//! memory Burn's pools held during a loss step, for each.
//!
//! `cargo run --release -p wgpu-loss-burn --example train_mlp`

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Int, Tensor};
use wgpu_loss_burn::{CrossEntropy, cross_entropy};

#[derive(Module, Debug)]
struct Mlp {
    a: Linear,
    b: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.b.forward(relu(self.a.forward(x)))
    }
}

/// The loss of one run: Burn's or ours.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    Burn,
    Ours,
}

fn loss_of(which: Loss, logits: Tensor<2>, targets: Tensor<1, Int>, device: &Device) -> Tensor<1> {
    match which {
        Loss::Burn => CrossEntropyLossConfig::new()
            .init(device)
            .forward(logits, targets),
        Loss::Ours => cross_entropy(logits, targets, &CrossEntropy::new()).expect("checked shapes"),
    }
}

/// Per step: the loss, the loss step's seconds, the pool's bytes in use during it.
fn train(
    which: Loss,
    init: &Mlp,
    x: &Tensor<2>,
    y: &Tensor<1, Int>,
    steps: usize,
    device: &Device,
) -> Vec<(f32, f64, u64)> {
    let mut model = init.clone();
    let mut optim = SgdConfig::new().init();
    let mut out = Vec::new();
    for _ in 0..steps {
        let logits = model.forward(x.clone());
        // The loss step alone, on the logits as a leaf: forward, backward, finished.
        let leaf = logits.clone().detach().require_grad();
        device.sync().expect("device");
        let start = Instant::now();
        let grads = loss_of(which, leaf.clone(), y.clone(), device).backward();
        let grad = leaf.grad(&grads).expect("the logits take part");
        device.sync().expect("device");
        let seconds = start.elapsed().as_secs_f64();
        let bytes = device.memory_pool_usage().map_or(0, |u| u.bytes_in_use);
        drop((grad, grads));
        // The training step, through the model.
        let loss = loss_of(which, logits, y.clone(), device);
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.5, model, grads);
        out.push((value, seconds, bytes));
    }
    out
}

fn main() -> Result<(), wgpu_loss_burn::Error> {
    let device = wgpu_loss_burn::init()?.autodiff();
    let (n, d, h, c, steps) = (4096, 64, 256, 1000, 10);
    // Synthetic data: random inputs, labelled by a fixed random teacher.
    let x = Tensor::<2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
    let teacher = Tensor::<2>::random([d, c], Distribution::Normal(0.0, 1.0), &device);
    let y = x.clone().matmul(teacher).argmax(1).reshape([n]);
    let init = Mlp {
        a: LinearConfig::new(d, h).init(&device),
        b: LinearConfig::new(h, c).init(&device),
    };
    // One step of each first, so that neither pays for compiling its kernels in the table.
    for which in [Loss::Burn, Loss::Ours] {
        train(which, &init, &x, &y, 1, &device);
    }
    let burn = train(Loss::Burn, &init, &x, &y, steps, &device);
    let ours = train(Loss::Ours, &init, &x, &y, steps, &device);
    println!("MLP {d} -> {h} -> {c}, batch {n}, SGD lr 0.5");
    println!("step  Burn's loss  our loss   Burn's loss step  our loss step");
    for (i, (b, o)) in burn.iter().zip(&ours).enumerate() {
        println!(
            "{i:>4}  {:>11.6}  {:>9.6}  {:>13.2} ms  {:>10.2} ms",
            b.0,
            o.0,
            b.1 * 1e3,
            o.1 * 1e3
        );
    }
    let total = |r: &[(f32, f64, u64)]| r.iter().map(|s| s.1).sum::<f64>();
    let peak = |r: &[(f32, f64, u64)]| r.iter().map(|s| s.2).max().unwrap_or(0);
    println!(
        "loss step: Burn {:.2} ms, ours {:.2} ms a step: {:.2}x",
        total(&burn) * 1e3 / steps as f64,
        total(&ours) * 1e3 / steps as f64,
        total(&burn) / total(&ours)
    );
    println!(
        "Burn's pools in use during the loss step, at most: Burn's loss {:.1} MiB, ours {:.1} MiB",
        peak(&burn) as f64 / (1 << 20) as f64,
        peak(&ours) as f64 / (1 << 20) as f64
    );
    Ok(())
}
