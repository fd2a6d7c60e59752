//! The peer, measured in the same run: Burn's `CrossEntropyLoss` and `MseLoss` (forward, and
//! forward + backward) and wgpu-loss's kernels on the same shapes, back to back in one process,
//! on the adapter wgpu picks for both; then the table, as Markdown and JSON.
//!
//! Both sides are timed the same way, by the wall clock from the first call until the device has
//! finished (Burn: the loss, `backward` and the gradient, then `Device::sync`; wgpu-loss: record,
//! submit, wait), with the inputs already on the device. wgpu-loss's GPU timestamps of its own
//! pass are reported beside. Each side's loss is checked against wgpu-loss's f64 CPU twin on the
//! very data it was given, so the table compares two right answers.
//!
//! Usage: burn-peer [--reps N] [--json FILE] [--readme FILE]; `--readme` writes the table
//! between `<!-- peers:start -->` and `<!-- peers:end -->` of FILE.

use std::time::Instant;

use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction as BurnReduction};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use wgpu_loss_bench::{Bench, Case};
use wgpu_loss::{Context, CrossEntropyDesc, Inputs, PointwiseDesc, cpu, pointwise::Pointwise};

/// One shape of one loss.
#[derive(Clone, Copy)]
enum Shape {
    /// Cross-entropy on `[rows, classes]` logits with class targets.
    Ce { rows: usize, classes: usize },
    /// MSE on `[rows, cols]` (Burn's 2-D form; see `mse_1d_check`).
    Mse { rows: usize, cols: usize },
}

impl Shape {
    fn name(self) -> String {
        match self {
            Shape::Ce { rows, classes } => format!("CE [{rows}, {classes}]"),
            Shape::Mse { rows, cols } => format!("MSE {} M ([{rows}, {cols}])", rows * cols >> 20),
        }
    }

    fn case(self, grad: bool) -> Case {
        match self {
            Shape::Ce { rows, classes } => Case::cross_entropy(rows, classes, grad),
            Shape::Mse { rows, cols } => Case::mse(rows * cols, grad),
        }
    }
}

const SHAPES: [Shape; 5] = [
    Shape::Ce {
        rows: 4096,
        classes: 1000,
    },
    Shape::Ce {
        rows: 32768,
        classes: 1000,
    },
    Shape::Ce {
        rows: 1024,
        classes: 32000,
    },
    Shape::Ce {
        rows: 256,
        classes: 128000,
    },
    Shape::Mse {
        rows: 4096,
        cols: 4096,
    },
];

fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// Times `run` (which must leave nothing pending) `reps` times after two warm-ups: (median, min)
/// in milliseconds.
fn time(reps: usize, mut run: impl FnMut()) -> (f64, f64) {
    for _ in 0..2 {
        run();
    }
    let samples = (0..reps)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(samples)
}

/// One call of `loss` on `x`, and with `grad` its backward pass and `x`'s gradient, until the
/// device is idle: what a Burn user waits for.
fn pass(
    device: &Device,
    x: &Tensor<2>,
    grad: bool,
    loss: impl Fn(Tensor<2>) -> Tensor<1>,
) -> Tensor<1> {
    let x = if grad {
        x.clone().require_grad()
    } else {
        x.clone()
    };
    let out = loss(x.clone());
    if grad {
        let grads = out.backward();
        std::hint::black_box(x.grad(&grads).expect("a gradient"));
    }
    device.sync().expect("sync");
    out
}

/// Burn's side of one case: (median ms, min ms, relative error of its loss against the twin).
fn burn_case(device: &Device, shape: Shape, grad: bool, reps: usize) -> (f64, f64, f64) {
    let device = if grad {
        device.clone().autodiff()
    } else {
        device.clone()
    };
    match shape {
        Shape::Ce { rows, classes } => {
            let logits =
                Tensor::<2>::random([rows, classes], Distribution::Uniform(-8.0, 8.0), &device);
            let t: Vec<i64> = (0..rows).map(|i| ((i * 7919) % classes) as i64).collect();
            let targets = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [rows]), &device);
            let loss_fn = CrossEntropyLossConfig::new().init(&device);
            let run = || {
                pass(&device, &logits, grad, |x| {
                    loss_fn.forward(x, targets.clone())
                })
            };
            let (med, min) = time(reps, || {
                run();
            });
            let value: f32 = run().into_scalar();
            let host: Vec<f32> = logits.clone().into_data().try_to_vec().expect("f32 logits");
            let twin = cpu::reference(
                &CrossEntropyDesc::new(rows, classes),
                &Inputs::classes(&host, &t),
            )
            .expect("twin");
            (med, min, rel(value, twin.value.unwrap()))
        }
        Shape::Mse { rows, cols } => {
            let pred = Tensor::<2>::random([rows, cols], Distribution::Uniform(-3.0, 3.0), &device);
            let target =
                Tensor::<2>::random([rows, cols], Distribution::Uniform(-3.0, 3.0), &device);
            let run = || {
                pass(&device, &pred, grad, |x| {
                    MseLoss::new().forward(x, target.clone(), BurnReduction::Mean)
                })
            };
            let (med, min) = time(reps, || {
                run();
            });
            let value: f32 = run().into_scalar();
            let (p, t) = host_pair(&pred, &target);
            let twin = cpu::reference(
                &PointwiseDesc::new(Pointwise::Mse, p.len()),
                &Inputs::new(&p, &t),
            )
            .expect("twin");
            (med, min, rel(value, twin.value.unwrap()))
        }
    }
}

fn host_pair(a: &Tensor<2>, b: &Tensor<2>) -> (Vec<f32>, Vec<f32>) {
    let a = a.clone().into_data().try_to_vec().expect("f32");
    let b = b.clone().into_data().try_to_vec().expect("f32");
    (a, b)
}

fn rel(gpu: f32, twin: f64) -> f64 {
    ((gpu as f64 - twin) / twin).abs()
}

/// Burn's MSE mean on the flat (1-D) view of `elements` values, against the twin: the form that
/// is wrong past lavapipe's loop cap (one invocation sums too many elements).
fn mse_1d_check(device: &Device, elements: usize) -> (f32, f64) {
    let pred = Tensor::<1>::random([elements], Distribution::Uniform(-3.0, 3.0), device);
    let target = Tensor::<1>::random([elements], Distribution::Uniform(-3.0, 3.0), device);
    let value: f32 = MseLoss::new()
        .forward(pred.clone(), target.clone(), BurnReduction::Mean)
        .into_scalar();
    let p: Vec<f32> = pred.into_data().try_to_vec().expect("f32");
    let t: Vec<f32> = target.into_data().try_to_vec().expect("f32");
    let twin = cpu::reference(
        &PointwiseDesc::new(Pointwise::Mse, elements),
        &Inputs::new(&p, &t),
    )
    .expect("twin");
    (value, twin.value.unwrap())
}

/// wgpu-loss's side: (wall-clock median ms, min ms, timestamp median ms, relative error).
fn ours_case(ctx: &Context, case: Case, reps: usize) -> (f64, f64, f64, f64) {
    let bench = Bench::new(ctx, case, 1).expect("bench case");
    let mut i = 0;
    let (med, min) = time(reps, || {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        bench.record(&mut encoder, i, None).expect("record");
        ctx.queue().submit([encoder.finish()]);
        ctx.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        i += 1;
    });
    let stamps = bench.time(2, reps).expect("timestamps");
    let (gpu, twin) = bench.verify().expect("verify");
    (med, min, stamps.median() * 1e3, rel(gpu, twin))
}

struct Row {
    case: String,
    burn: (f64, f64, f64),
    ours: (f64, f64, f64, f64),
}

fn main() {
    let mut reps = 7;
    let mut json_out = None;
    let mut readme = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--json" => json_out = args.next(),
            "--readme" => readme = args.next(),
            other => panic!(
                "unknown argument {other}; usage: burn-peer [--reps N] [--json FILE] [--readme FILE]"
            ),
        }
    }

    let device = Device::default();
    let burn_adapter = device
        .identity()
        .map(|i| i.name.to_string())
        .unwrap_or_else(|| format!("{device:?}"));
    let ctx = Context::new().expect("an adapter for wgpu-loss");
    let info = ctx.adapter_info();
    let ours_adapter = format!("{} ({:?})", info.name, info.backend);
    eprintln!("Burn 0.22.1 on {burn_adapter}; wgpu-loss on {ours_adapter}");
    assert!(
        ours_adapter.contains(&burn_adapter) || burn_adapter.contains(&info.name),
        "the two sides run on different adapters: {burn_adapter} and {ours_adapter}"
    );

    let started = Instant::now();
    let mut rows = Vec::new();
    for shape in SHAPES {
        for grad in [false, true] {
            let name = format!("{} {}", shape.name(), if grad { "fwd+grad" } else { "fwd" });
            let burn = burn_case(&device, shape, grad, reps);
            let ours = ours_case(&ctx, shape.case(grad), reps);
            eprintln!(
                "{name}: Burn {:.1} ms (min {:.1}, rel. error {:.1e}); wgpu-loss {:.1} ms (min {:.1}, kernel {:.1}, rel. error {:.1e})",
                burn.0, burn.1, burn.2, ours.0, ours.1, ours.2, ours.3
            );
            rows.push(Row {
                case: name,
                burn,
                ours,
            });
        }
    }
    let elements = 1 << 24;
    let (flat, twin) = mse_1d_check(&device, elements);
    let seconds = started.elapsed().as_secs_f64();

    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    let mut md = format!(
        "Burn 0.22.1 (`CrossEntropyLoss`, `MseLoss`, wgpu backend) and wgpu-loss, one run of \
         `peers/run` on {}, {} on {cpu} ({} CPUs), {} repetitions each, {:.0} s in all. Times are the wall \
         clock from the call until the device is idle (median; min in brackets), inputs already on \
         the device; \"kernel\" is wgpu-loss's own pass by GPU timestamps. Every loss was checked \
         against the f64 twin on its own data (largest relative error: Burn {:.1e}, wgpu-loss {:.1e}).\n\n",
        date.trim(),
        ours_adapter,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        reps,
        seconds,
        rows.iter().map(|r| r.burn.2).fold(0.0, f64::max),
        rows.iter().map(|r| r.ours.3).fold(0.0, f64::max),
    );
    md.push_str("| case | Burn ms | wgpu-loss ms | kernel ms | Burn / wgpu-loss |\n|---|---:|---:|---:|---:|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} | {:.1}× |\n",
            r.case,
            r.burn.0,
            r.burn.1,
            r.ours.0,
            r.ours.1,
            r.ours.2,
            r.burn.0 / r.ours.0
        ));
    }
    md.push_str(&format!(
        "\nBurn's MSE is timed on the 2-D view: its mean over a flat 1-D tensor of {elements} elements \
         gave {flat} in this run, where the f64 twin gives {twin:.6} (one invocation sums more \
         elements than lavapipe counts loop iterations).\n"
    ));
    print!("{md}");
    if let Some(path) = readme {
        let text = std::fs::read_to_string(&path).expect("read the README");
        let (start, end) = ("<!-- peers:start -->", "<!-- peers:end -->");
        let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
            panic!("{path} has no {start} ... {end}");
        };
        let text = format!("{}{start}\n{md}{}", &text[..a], &text[b..]);
        std::fs::write(&path, text).expect("write the README");
    }
    if let Some(path) = json_out {
        let json = serde_json::json!({
            "date": date.trim(),
            "adapter": ours_adapter,
            "burn_adapter": burn_adapter,
            "reps": reps,
            "seconds": seconds,
            "mse_1d": { "elements": elements, "burn": flat, "twin": twin },
            "cases": rows.iter().map(|r| serde_json::json!({
                "case": r.case,
                "burn_ms": r.burn.0, "burn_min_ms": r.burn.1, "burn_rel_error": r.burn.2,
                "ours_ms": r.ours.0, "ours_min_ms": r.ours.1, "ours_kernel_ms": r.ours.2,
                "ours_rel_error": r.ours.3,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).expect("write the JSON");
    }
}
