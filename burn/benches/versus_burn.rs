//! Burn's own losses against wgpu-loss's inside a Burn autodiff graph, on one device: each
//! case is the loss's forward and backward (the input a leaf that requires its gradient, the
//! gradient read out of the graph), finished on the device, the median of several runs after
//! a warm-up. For the fused linear + cross-entropy, also what Burn's pools reserved (their peak).
//!
//! `cargo bench -p wgpu-loss-burn --bench versus_burn [-- --quick] [--reps N] [--json FILE]`
//!
//! Each case's progress goes to stderr as it finishes.
//!
//! Prints a Markdown table (with the adapter and the date) and writes the figures as JSON.

use std::time::Instant;

use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction as BurnReduction};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use wgpu_loss_burn::image::{ImageLoss, image_loss};
use wgpu_loss_burn::pointwise::Pointwise;
use wgpu_loss_burn::{
    CrossEntropy, Image, LinearCrossEntropy, Reduction, cross_entropy, linear_cross_entropy,
    pointwise,
};

/// One case's figures.
struct Row {
    case: String,
    shape: String,
    burn_ms: f64,
    ours_ms: f64,
    /// Burn's pools' reservation after the runs (their peak), Burn's loss and ours.
    peak: Option<(u64, u64)>,
}

/// The median seconds of `reps` runs of `f` (each finished on the device), after one warm-up,
/// and the bytes Burn's pools reserved by then: pools keep what they reserve until a cleanup, so
/// after `Device::memory_cleanup` this is the case's peak (to the pools' page size).
fn time(device: &Device, reps: usize, mut f: impl FnMut()) -> (f64, u64) {
    f();
    device.sync().expect("device");
    let mut seconds = Vec::with_capacity(reps);
    let mut peak = 0;
    for _ in 0..reps {
        device.sync().expect("device");
        let start = Instant::now();
        f();
        device.sync().expect("device");
        seconds.push(start.elapsed().as_secs_f64());
        peak = peak.max(device.memory_pool_usage().map_or(0, |u| u.bytes_reserved));
    }
    seconds.sort_by(f64::total_cmp);
    (seconds[reps / 2], peak)
}

/// Forward and backward of `loss` at the leaf `x`, the gradient read out.
fn fwd_bwd<const D: usize>(x: &Tensor<D>, loss: impl Fn(Tensor<D>) -> Tensor<1>) {
    let leaf = x.clone().require_grad();
    let grads = loss(leaf.clone()).backward();
    let g = leaf.grad(&grads).expect("the input takes part");
    drop(g);
}

/// The last case's figures, on stderr as it finishes.
fn progress(rows: &[Row]) {
    if let Some(r) = rows.last() {
        eprintln!(
            "{} {}: Burn {:.2} ms, wgpu-loss {:.2} ms",
            r.case, r.shape, r.burn_ms, r.ours_ms
        );
    }
}

fn classes(n: usize, c: usize, device: &Device) -> Tensor<1, Int> {
    let t: Vec<i32> = (0..n).map(|i| ((i * 7919) % c) as i32).collect();
    Tensor::from_data(TensorData::new(t, [n]), device)
}

/// SSIM's map with Burn's `conv2d` (11 x 11 Gaussian, zero padding 5, a group a channel), on
/// `[N, H, W, C]` images.
fn burn_ssim(x: Tensor<4>, y: Tensor<4>) -> Tensor<1> {
    let [_, _, _, c] = x.dims();
    let g: Vec<f32> = (0..11)
        .map(|i| (-((i as f32 - 5.0).powi(2)) / 4.5).exp())
        .collect();
    let s: f32 = g.iter().sum();
    let k: Vec<f32> = (0..c)
        .flat_map(|_| {
            g.iter()
                .flat_map(|a| g.iter().map(move |b| a * b / (s * s)))
        })
        .collect();
    let weight = Tensor::<4>::from_data(TensorData::new(k, [c, 1, 11, 11]), &x.device());
    let opts = ConvOptions {
        stride: [1, 1],
        padding: [(5, 5), (5, 5)],
        dilation: [1, 1],
        groups: c,
    };
    let blur = |t: Tensor<4>| conv2d(t, weight.clone(), None, opts.clone());
    let (x, y) = (x.permute([0, 3, 1, 2]), y.permute([0, 3, 1, 2]));
    let (mx, my) = (blur(x.clone()), blur(y.clone()));
    let sxx = blur(x.clone() * x.clone()) - mx.clone() * mx.clone();
    let syy = blur(y.clone() * y.clone()) - my.clone() * my.clone();
    let sxy = blur(x * y) - mx.clone() * my.clone();
    let num = (mx.clone() * my.clone() * 2.0 + 1e-4) * (sxy * 2.0 + 9e-4);
    let den = (mx.clone() * mx + my.clone() * my + 1e-4) * (sxx + syy + 9e-4);
    (num / den).mean()
}

fn main() -> Result<(), wgpu_loss_burn::Error> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "target/versus_burn.json".into());
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse::<usize>().ok())
        .filter(|&r| r > 0)
        .unwrap_or(if quick { 3 } else { 5 });
    let device = wgpu_loss_burn::init()?.autodiff();
    let info = wgpu_loss_burn::context(&device)
        .expect("made by init")
        .adapter_info()
        .clone();
    let mut rows = Vec::new();

    let ce_shapes: &[(usize, usize)] = if quick {
        &[(4096, 1000)]
    } else {
        &[(4096, 1000), (1024, 32000), (256, 128000)]
    };
    for &(n, c) in ce_shapes {
        let x = Tensor::<2>::random([n, c], Distribution::Uniform(-4.0, 4.0), &device);
        let t = classes(n, c, &device);
        let burn = CrossEntropyLossConfig::new().init(&device);
        let (b, _) = time(&device, reps, || {
            fwd_bwd(&x, |x| burn.forward(x, t.clone()))
        });
        let opts = CrossEntropy::new();
        let (o, _) = time(&device, reps, || {
            fwd_bwd(&x, |x| cross_entropy(x, t.clone(), &opts).expect("checked"))
        });
        rows.push(Row {
            case: "cross-entropy".into(),
            shape: format!("[{n}, {c}]"),
            burn_ms: b * 1e3,
            ours_ms: o * 1e3,
            peak: None,
        });
        progress(&rows);
    }

    let len = if quick { 1 << 20 } else { 1 << 24 };
    let a = Tensor::<1>::random([len], Distribution::Uniform(-1.0, 1.0), &device);
    let y = Tensor::<1>::random([len], Distribution::Uniform(-1.0, 1.0), &device);
    let (b, _) = time(&device, reps, || {
        fwd_bwd(&a, |x| {
            MseLoss::new().forward(x, y.clone(), BurnReduction::Mean)
        })
    });
    let (o, _) = time(&device, reps, || {
        fwd_bwd(&a, |x| {
            pointwise(Pointwise::Mse, x, y.clone(), Reduction::Mean).expect("checked")
        })
    });
    rows.push(Row {
        case: "MSE".into(),
        shape: format!("[{len}]"),
        burn_ms: b * 1e3,
        ours_ms: o * 1e3,
        peak: None,
    });
    progress(&rows);

    let (n, d, v) = if quick {
        (128, 128, 8000)
    } else {
        (512, 512, 32000)
    };
    let h = Tensor::<2>::random([n, d], Distribution::Uniform(-1.0, 1.0), &device);
    let w = Tensor::<2>::random([v, d], Distribution::Uniform(-0.05, 0.05), &device);
    let t = classes(n, v, &device);
    let burn = CrossEntropyLossConfig::new().init(&device);
    device.memory_cleanup();
    let (b, bp) = time(&device, reps, || {
        let (h, w) = (h.clone().require_grad(), w.clone().require_grad());
        let grads = burn
            .forward(h.clone().matmul(w.clone().transpose()), t.clone())
            .backward();
        drop((h.grad(&grads), w.grad(&grads)));
    });
    device.memory_cleanup();
    let opts = LinearCrossEntropy::new();
    let (o, op) = time(&device, reps, || {
        let (h, w) = (h.clone().require_grad(), w.clone().require_grad());
        let grads = linear_cross_entropy(h.clone(), w.clone(), None, t.clone(), &opts)
            .expect("checked")
            .backward();
        drop((h.grad(&grads), w.grad(&grads)));
    });
    rows.push(Row {
        case: "linear + cross-entropy (Burn: matmul + CrossEntropyLoss)".into(),
        shape: format!("N {n}, D {d}, V {v}"),
        burn_ms: b * 1e3,
        ours_ms: o * 1e3,
        peak: Some((bp, op)),
    });
    progress(&rows);

    let (ih, iw) = if quick { (270, 480) } else { (1080, 1920) };
    let x = Tensor::<4>::random([1, ih, iw, 3], Distribution::Uniform(0.0, 1.0), &device);
    let y = (x.clone()
        + Tensor::<4>::random([1, ih, iw, 3], Distribution::Uniform(-0.1, 0.1), &device))
    .clamp(0.0, 1.0);
    let (b, _) = time(&device, reps, || fwd_bwd(&x, |x| burn_ssim(x, y.clone())));
    let opts = Image::new(ImageLoss::Ssim);
    let (o, _) = time(&device, reps, || {
        fwd_bwd(&x, |x| {
            image_loss(x, y.clone(), None, &opts).expect("checked")
        })
    });
    rows.push(Row {
        case: "SSIM (Burn: conv2d)".into(),
        shape: format!("{iw} x {ih} x 3"),
        burn_ms: b * 1e3,
        ours_ms: o * 1e3,
        peak: None,
    });
    progress(&rows);

    // The command that gave these figures (cargo passes `--bench` to the binary).
    let given: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let mut command = "cargo bench -p wgpu-loss-burn --bench versus_burn".to_string();
    if !given.is_empty() {
        command = format!("{command} -- {}", given.join(" "));
    }
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "{} ({:?}, {}), {date}, forward + backward in Burn 0.22.1's autodiff graph, median of {reps}",
        info.name, info.backend, info.driver_info
    );
    println!(
        "\n| loss | shape | Burn (ms) | wgpu-loss (ms) | speedup | Burn's pools reserved, Burn / ours (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = Vec::new();
    for r in &rows {
        let peak = r
            .peak
            .map_or("".into(), |(b, o)| format!("{:.1} / {:.1}", mib(b), mib(o)));
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2}x | {peak} |",
            r.case,
            r.shape,
            r.burn_ms,
            r.ours_ms,
            r.burn_ms / r.ours_ms
        );
        out.push(serde_json::json!({
            "case": r.case,
            "shape": r.shape,
            "burn_ms": r.burn_ms,
            "ours_ms": r.ours_ms,
            "burn_peak_bytes": r.peak.map(|p| p.0),
            "ours_peak_bytes": r.peak.map(|p| p.1),
        }));
    }
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "adapter": info.name,
        "backend": format!("{:?}", info.backend),
        "driver": info.driver_info,
        "date": date,
        "reps": reps,
        "command": command,
        "rows": out,
    }))
    .expect("plain values");
    if let Err(e) = std::fs::write(&json, text) {
        eprintln!("{json}: {e}");
    }
    Ok(())
}
