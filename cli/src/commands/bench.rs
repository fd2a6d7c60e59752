//! `wgpu-loss bench`: every kernel on the current adapter, against the adapter's own ceilings
//! measured in the same run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use wgpu_loss::Context;
use wgpu_loss::plan::Target;
use wgpu_loss_bench::{Bench, Case, Ceilings, Family, Method, Timing};

use super::{adapter_json, npy};

mod image;
mod linear;
pub(super) mod row;

use row::{Row, Waits};

#[derive(Args)]
pub struct BenchArgs {
    /// Losses to measure (comma-separated): mse, cross-entropy, cross-entropy-probs,
    /// linear-cross-entropy (fused, against the unfused path: see --linear-shapes), and image
    /// (SSIM and the photometric loss against the five-convolution form: see --image-sizes).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mse,cross-entropy,cross-entropy-probs"
    )]
    loss: Vec<String>,
    /// Element counts (comma-separated; `2^20` allowed). Default: every power of two from 2^16
    /// to the largest the adapter binds.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Class counts for the cross-entropy losses (comma-separated); rows = size / classes.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,32000,128000")]
    classes: Vec<usize>,
    /// Element types of the inputs and gradient (comma-separated): f32, f16, bf16. Bytes are
    /// counted at the dtype's size.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    dtype: Vec<wgpu_loss::DType>,
    /// f16 through WGSL's f16 (true, where the adapter has SHADER_F16) or packed u32 pairs
    /// (false); default: the context's choice (see ContextOptions::native_f16).
    #[arg(long)]
    native_f16: Option<bool>,
    /// Only forward passes, or only forward + gradient (default: both).
    #[arg(long, value_parser = ["fwd", "grad", "both"], default_value = "both")]
    pass: String,
    /// Timed repetitions per case (at least 10).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Skip the CPU reference (no speedup column).
    #[arg(long)]
    no_cpu: bool,
    /// Write every figure, the adapter and the crate version to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw GB/s against bytes, with the ceilings, into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write the summary table (each kernel at its largest size) into this markdown file,
    /// between `<!-- bench:start -->` and `<!-- bench:end -->`.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Override the adapter's tuning:
    /// lanes,stream_vecs,register_vecs[,chunk_wide_rows[,sweep_long_rows[,wide_vecs]]] (see
    /// `Tuning`; the two flags 0 or 1; what is left out, the adapter's own choice).
    #[arg(long, value_delimiter = ',')]
    tuning: Vec<u32>,
    /// Also time what a caller waits for, by the wall clock: the convenience call on host data
    /// (upload, record, submit, read back) and its upload and read-back alone, and `eval` on
    /// .npy files of the case (a process each run), beside the CPU reference and a host memcpy
    /// of the same bytes.
    #[arg(long)]
    end_to_end: bool,
    /// Runs of `eval` per case with --end-to-end.
    #[arg(long, default_value_t = 3)]
    eval_reps: usize,
    /// Shapes of linear-cross-entropy, NxDxV (tokens x width x vocabulary), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096x512x32000,1024x256x128000"
    )]
    linear_shapes: Vec<String>,
    /// Timed repetitions of each linear-cross-entropy path (each runs seconds on a CPU driver).
    #[arg(long, default_value_t = 5)]
    linear_reps: usize,
    /// RGB image sizes of `--loss image`, WxH, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1920x1080,3840x2160")]
    image_sizes: Vec<String>,
    /// Timed repetitions of each image path.
    #[arg(long, default_value_t = 5)]
    image_reps: usize,
}

pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let bad = || format!("--sizes: {s:?} is not a count (e.g. 1048576 or 2^20)");
    match s.split_once('^') {
        Some((b, e)) => {
            let b: usize = b.parse().map_err(|_| bad())?;
            let e: u32 = e.parse().map_err(|_| bad())?;
            b.checked_pow(e).ok_or_else(bad)
        }
        None => s.parse().map_err(|_| bad()),
    }
}

fn cases(a: &BenchArgs, max_elements: usize) -> Result<Vec<Case>, String> {
    let sizes: Vec<usize> = if a.sizes.is_empty() {
        (16..=max_elements.ilog2()).map(|e| 1usize << e).collect()
    } else {
        a.sizes
            .iter()
            .map(|s| parse_size(s))
            .collect::<Result<_, _>>()?
    };
    let passes: &[bool] = match a.pass.as_str() {
        "fwd" => &[false],
        "grad" => &[true],
        _ => &[false, true],
    };
    let mut out = Vec::new();
    for loss in &a.loss {
        let family = match loss.as_str() {
            "mse" => Family::Mse,
            "cross-entropy" => Family::CrossEntropy,
            "cross-entropy-probs" => Family::CrossEntropyProbs,
            // Measured by their own tables (bench/linear.rs, bench/image.rs).
            "linear-cross-entropy" | "image" => continue,
            other => return Err(format!("--loss: unknown loss {other:?}")),
        };
        for &grad in passes {
            match family {
                Family::Mse => out.extend(sizes.iter().map(|&s| Case::mse(s, grad))),
                _ => {
                    for &c in &a.classes {
                        if c == 0 {
                            return Err("--classes: 0 classes".into());
                        }
                        let mut seen = Vec::new();
                        for &s in &sizes {
                            let rows = s / c;
                            if rows == 0 || seen.contains(&rows) {
                                continue;
                            }
                            seen.push(rows);
                            out.push(match family {
                                Family::CrossEntropy => Case::cross_entropy(rows, c, grad),
                                _ => Case::cross_entropy_probs(rows, c, grad),
                            });
                        }
                    }
                }
            }
        }
    }
    let out: Vec<Case> = a
        .dtype
        .iter()
        .flat_map(|&d| out.iter().map(move |c| c.in_dtype(d)))
        .filter(|c| c.elements() <= max_elements)
        .collect();
    if out.is_empty() && !only_separate(a) {
        return Err("no case to run (sizes above the adapter's binding limit?)".into());
    }
    Ok(out)
}

/// Checks the arguments without a device: repetitions, the tuning's shape, the cases.
pub fn check(a: &BenchArgs) -> Result<(), String> {
    if a.reps < 10 {
        return Err(format!("--reps {}: at least 10 repetitions", a.reps));
    }
    if a.eval_reps == 0 {
        return Err("--eval-reps 0: at least one run".into());
    }
    super::check_tuning(&a.tuning)?;
    if a.linear_reps == 0 {
        return Err("--linear-reps 0: at least one repetition".into());
    }
    if a.image_reps == 0 {
        return Err("--image-reps 0: at least one repetition".into());
    }
    linear::shapes(a)?;
    image::shapes(a)?;
    cases(a, usize::MAX).map(|_| ())
}

/// Whether only the losses with tables of their own (linear-cross-entropy, image) are asked
/// for.
fn only_separate(a: &BenchArgs) -> bool {
    a.loss
        .iter()
        .all(|l| l == "linear-cross-entropy" || l == "image")
}

pub fn run(a: &BenchArgs) -> Result<(), String> {
    check(a)?;
    let mut options = wgpu_loss::context::ContextOptions::default();
    if let Some(on) = a.native_f16 {
        options = options.native_f16(on);
    }
    options = super::with_tuning(options, &a.tuning)?;
    let ctx = super::context_with(options)?;
    if a.loss.iter().any(|l| l == "linear-cross-entropy") {
        linear::run(&ctx, a)?;
    }
    if a.loss.iter().any(|l| l == "image") {
        image::run(&ctx, a)?;
    }
    if only_separate(a) {
        return Ok(());
    }
    let cases = cases(a, (ctx.max_binding_bytes() / 4) as usize)?;
    let progress = ProgressBar::new(cases.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .map_err(|e| e.to_string())?,
    );
    let mut rows = Vec::with_capacity(cases.len());
    // Cases with the same traffic share their ceilings.
    let mut ceilings: HashMap<(u64, u64, bool), Ceilings> = HashMap::new();
    for (i, case) in cases.iter().enumerate() {
        progress.set_message(format!("{} {}", case.kernel(), case.shape()));
        let row = measure(&ctx, case, a, i as u64, &mut ceilings)
            .map_err(|e| format!("{} {}: {e}", case.kernel(), case.shape()))?;
        rows.push(row);
        progress.inc(1);
    }
    progress.finish_and_clear();
    print_table(&ctx, &rows, a.reps);
    if a.end_to_end {
        print_waits(&rows, a);
    }
    if let Some(path) = &a.json {
        let v = json(&ctx, &rows, a);
        write_json(path, &v)?;
    }
    if let Some(path) = &a.plot {
        super::plot::draw(path, &ctx.adapter_info().name, &rows)?;
    }
    if let Some(path) = &a.readme {
        write_readme(path, &ctx, &rows, a)?;
    }
    Ok(())
}

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

fn write_readme(path: &Path, ctx: &Context, rows: &[Row], a: &BenchArgs) -> Result<(), String> {
    let info = ctx.adapter_info();
    let mut md = String::new();
    md.push_str(&format!(
        "Measured by `wgpu-loss bench` on {} ({}, {} {}), {:?}; median of {} repetitions timed with {}, \
         ceilings measured in the same run on the same adapter. Each kernel at the largest size of \
         the default sweep:\n\n",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        ctx.tuning(),
        a.reps,
        rows[0].kernel.method.name()
    ));
    md.push_str("| kernel | shape | MB moved | median ms (spread) | GB/s | % of copy_buffer_to_buffer | % of trivial kernel | % of trivial + exp | × CPU reference |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for k in &kernels(rows) {
        let Some(r) = rows
            .iter()
            .filter(|r| &r.case.kernel() == k)
            .max_by_key(|r| r.case.bytes())
        else {
            continue;
        };
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.2} (±{:.0}%) | {:.2} | {:.0}% | {:.0}% ({}) | {:.0}% | {} |\n",
            r.case.kernel(),
            r.case.shape(),
            r.case.bytes() as f64 / 1e6,
            r.kernel.median() * 1e3,
            r.kernel.spread() * 100.0,
            r.gbps(),
            100.0 * r.gbps() / r.copy_gbps(),
            100.0 * r.gbps() / r.trivial_gbps(),
            r.ceilings.trivial_kind,
            100.0 * r.gbps() / r.exp_gbps(),
            r.cpu
                .map_or("-".into(), |c| format!("{:.1}", c / r.kernel.median())),
        ));
    }
    replace_block(path, START, END, &md)?;
    if a.end_to_end {
        replace_block(path, E2E_START, E2E_END, &waits_markdown(ctx, rows, a))?;
    }
    Ok(())
}

/// Writes `v` to `path`, pretty-printed.
fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces what lies between the `start` and `end` marker lines of the file at `path` by `md`
/// (a marker counts only as a line of its own, not where prose quotes it).
fn replace_block(path: &Path, start: &str, end: &str, md: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = |marker: &str| {
        let mut at = 0;
        text.split_inclusive('\n').find_map(|l| {
            let here = at;
            at += l.len();
            (l.trim_end() == marker).then_some(here)
        })
    };
    let (Some(i), Some(j)) = (line(start), line(end)) else {
        return Err(format!("{}: no {start} ... {end} block", path.display()));
    };
    if j < i {
        return Err(format!("{}: {end} comes before {start}", path.display()));
    }
    let updated = format!("{}{start}\n{md}{}", &text[..i], &text[j..]);
    std::fs::write(path, updated).map_err(|e| format!("{}: {e}", path.display()))
}

const E2E_START: &str = "<!-- end-to-end:start -->";
const E2E_END: &str = "<!-- end-to-end:end -->";

/// The kernels of `rows`, in their first order.
fn kernels(rows: &[Row]) -> Vec<String> {
    let mut kernels: Vec<String> = Vec::new();
    for r in rows {
        if !kernels.contains(&r.case.kernel()) {
            kernels.push(r.case.kernel());
        }
    }
    kernels
}

/// The smallest element count of `kernel` from which the convenience call beats the CPU
/// reference at every larger size measured: `Some(None)` when it never does at the largest,
/// `None` without CPU figures.
fn crossover(rows: &[Row], kernel: &str) -> Option<Option<usize>> {
    let mut sizes: Vec<(usize, bool)> = rows
        .iter()
        .filter(|r| r.case.kernel() == kernel)
        .map(|r| {
            let w = r.waits.as_ref()?;
            Some((r.case.elements(), r.cpu? > w.parts.call.median()))
        })
        .collect::<Option<_>>()?;
    sizes.sort();
    let mut from = None;
    for &(elements, pays) in sizes.iter().rev() {
        if !pays {
            break;
        }
        from = Some(elements);
    }
    Some(from)
}

fn crossover_text(rows: &[Row], kernel: &str) -> String {
    match crossover(rows, kernel) {
        None => "-".into(),
        Some(None) => "not at the largest".into(),
        Some(Some(e)) => format!("{e}"),
    }
}

/// The end-to-end summary: each kernel at its largest size, and where the call starts to pay.
fn waits_markdown(ctx: &Context, rows: &[Row], a: &BenchArgs) -> String {
    let info = ctx.adapter_info();
    let mut md = format!(
        "Measured by `wgpu-loss bench --end-to-end` on {} ({}, {} {}); wall clock, median of {} \
         repetitions ({} for `eval`, each a process). Each kernel at its largest size; the last \
         column is the smallest size measured from which the call beats the CPU reference at \
         every larger size:\n\n",
        info.name, info.backend, info.driver, info.driver_info, a.reps, a.eval_reps,
    );
    md.push_str("| kernel | shape | MB | kernel ms | call ms | upload ms | read-back ms | `eval` ms | CPU reference ms | memcpy ms | call pays from (elements) |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for k in kernels(rows) {
        let Some(r) = rows
            .iter()
            .filter(|r| r.case.kernel() == k)
            .max_by_key(|r| r.case.bytes())
        else {
            continue;
        };
        let Some(w) = &r.waits else { continue };
        md.push_str(&format!(
            "| {k} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {:.2} | {} |\n",
            r.case.shape(),
            r.case.bytes() as f64 / 1e6,
            r.kernel.median() * 1e3,
            w.parts.call.median() * 1e3,
            w.parts.upload.median() * 1e3,
            w.parts.read_back.median() * 1e3,
            w.eval.median() * 1e3,
            r.cpu.map_or("-".into(), |c| format!("{:.1}", c * 1e3)),
            w.parts.memcpy.median() * 1e3,
            crossover_text(rows, &k),
        ));
    }
    md
}

fn print_waits(rows: &[Row], a: &BenchArgs) {
    println!(
        "\nend to end (wall clock, median of {} repetitions; eval: {} runs, a process each):",
        a.reps, a.eval_reps
    );
    println!(
        "{:<34} {:>15} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "kernel",
        "shape",
        "MB",
        "kernel ms",
        "call ms",
        "into ms",
        "upload",
        "read-back",
        "eval ms",
        "CPU ms",
        "memcpy",
        "CPU/call"
    );
    for r in rows {
        let Some(w) = &r.waits else { continue };
        let call = w.parts.call.median();
        println!(
            "{:<34} {:>15} {:>8.2} {:>10.3} {:>10.3} {:>10} {:>10.3} {:>10.3} {:>10.1} {:>10} {:>10.3} {:>9}",
            r.case.kernel(),
            r.case.shape(),
            r.case.bytes() as f64 / 1e6,
            r.kernel.median() * 1e3,
            call * 1e3,
            (w.parts.call_into.as_ref()).map_or("-".into(), |t| format!("{:.3}", t.median() * 1e3)),
            w.parts.upload.median() * 1e3,
            w.parts.read_back.median() * 1e3,
            w.eval.median() * 1e3,
            r.cpu.map_or("-".into(), |c| format!("{:.1}", c * 1e3)),
            w.parts.memcpy.median() * 1e3,
            r.cpu.map_or("-".into(), |c| format!("{:.2}x", c / call)),
        );
    }
    for k in kernels(rows) {
        if let Some(Some(e)) = crossover(rows, &k) {
            println!("{k}: the call beats the CPU reference from {e} elements on");
        }
    }
}

fn measure(
    ctx: &Context,
    case: &Case,
    a: &BenchArgs,
    seed: u64,
    memo: &mut HashMap<(u64, u64, bool), Ceilings>,
) -> Result<Row, String> {
    let text = |e: wgpu_loss::Error| e.to_string();
    let bench = Bench::new(ctx, *case, seed + 1).map_err(text)?;
    let kernel = bench.time(a.warmup, a.reps).map_err(text)?;
    let ceilings = match memo.get(&case.ceiling_key()) {
        Some(c) => c.clone(),
        None => {
            let c = bench.ceilings(a.warmup, a.reps).map_err(text)?;
            memo.insert(case.ceiling_key(), c.clone());
            c
        }
    };
    let (loss_gpu, loss_cpu) = bench.verify().map_err(text)?;
    let cpu = (!a.no_cpu).then(|| bench.cpu_seconds());
    let waits = match a.end_to_end {
        true => Some(Waits {
            parts: bench.end_to_end(a.warmup, a.reps).map_err(text)?,
            eval: time_eval(&bench, a.eval_reps)?,
        }),
        false => None,
    };
    Ok(Row {
        case: *case,
        kernel,
        ceilings,
        cpu,
        loss_gpu,
        loss_cpu,
        waits,
    })
}

/// A scratch folder for the .npy files of `eval`, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the case's inputs to .npy files and times `runs` runs of this binary's `eval` on
/// them (writing the gradient to a file too for a forward + gradient case), by the wall clock
/// from the process's start to its exit.
fn time_eval(bench: &Bench, runs: usize) -> Result<Timing, String> {
    let case = bench.case();
    let dir = Scratch(std::env::temp_dir().join(format!("wgpu-loss-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).map_err(|e| format!("{}: {e}", dir.0.display()))?;
    let shape = match case.family {
        Family::Mse => vec![case.rows],
        _ => vec![case.rows, case.classes],
    };
    let inputs = bench.inputs();
    let (input, target) = (dir.0.join("input.npy"), dir.0.join("target.npy"));
    npy::write_values(&input, &shape, inputs.input)?;
    match inputs.target {
        Target::Values(t) => npy::write_values(&target, &shape, t)?,
        Target::Classes(t) => npy::write(&target, &[case.rows], t)?,
    }
    let (loss, input_flag, target_flag) = match case.family {
        Family::Mse => ("mse", "--pred", "--target"),
        Family::CrossEntropy => ("cross-entropy", "--logits", "--targets"),
        Family::CrossEntropyProbs => ("cross-entropy-probs", "--probs", "--targets"),
    };
    let mut command = std::process::Command::new(
        std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?,
    );
    command.arg("eval").arg(loss).arg(input_flag).arg(&input);
    command.arg(target_flag).arg(&target);
    if case.grad {
        command.arg("--grad-out").arg(dir.0.join("grad.npy"));
    }
    if case.dtype == wgpu_loss::DType::BF16 {
        command.arg("--bf16");
    }
    command.stdout(std::process::Stdio::null());
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = command.output().map_err(|e| format!("eval: {e}"))?;
        samples.push(start.elapsed().as_secs_f64());
        if !out.status.success() {
            return Err(format!(
                "eval failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(Timing::new(samples, Method::WallClock))
}

fn print_table(ctx: &Context, rows: &[Row], reps: usize) {
    let info = ctx.adapter_info();
    println!(
        "adapter: {} ({}, {} {}); {:?}; median of {reps} repetitions, timed with {}",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        ctx.tuning(),
        rows[0].kernel.method.name()
    );
    println!(
        "{:<34} {:>15} {:>8} {:>14} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>6} {:>9} {:>8}",
        "kernel",
        "shape",
        "MB",
        "ms (spread)",
        "GB/s",
        "copy",
        "%copy",
        "trivial",
        "%triv",
        "+exp",
        "%+exp",
        "CPU ms",
        "speedup"
    );
    for r in rows {
        let ms = r.kernel.median() * 1e3;
        let (cpu, speedup) = match r.cpu {
            Some(c) => (
                format!("{:.1}", c * 1e3),
                format!("{:.1}x", c / r.kernel.median()),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<34} {:>15} {:>8.2} {:>14} {:>7.2} {:>7.2} {:>5.0}% {:>7.2} {:>5.0}% {:>7.2} {:>5.0}% {:>9} {:>8}",
            r.case.kernel(),
            r.case.shape(),
            r.case.bytes() as f64 / 1e6,
            format!("{ms:.3} ±{:.0}%", r.kernel.spread() * 100.0),
            r.gbps(),
            r.copy_gbps(),
            100.0 * r.gbps() / r.copy_gbps(),
            r.trivial_gbps(),
            100.0 * r.gbps() / r.trivial_gbps(),
            r.exp_gbps(),
            100.0 * r.gbps() / r.exp_gbps(),
            cpu,
            speedup
        );
    }
    println!(
        "copy: copy_buffer_to_buffer moving the same bytes; trivial: the best trivial WGSL kernel of the \
         same access pattern (sum or copy); +exp: that kernel with one exp per element, the least \
         arithmetic a softmax or log needs (not a ceiling)"
    );
}

fn timing_json(t: &Timing, bytes: u64) -> serde_json::Value {
    serde_json::json!({
        "median_s": t.median(),
        "min_s": t.min(),
        "max_s": t.max(),
        "spread": t.spread(),
        "gbps": t.gbps(bytes),
        "method": t.method.name(),
        "samples_s": t.samples,
    })
}

fn json(ctx: &Context, rows: &[Row], a: &BenchArgs) -> serde_json::Value {
    let cases: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let bytes = r.case.bytes();
            serde_json::json!({
                "kernel": r.case.kernel(),
                "loss": r.case.family.name(),
                "rows": r.case.rows,
                "classes": r.case.classes,
                "grad": r.case.grad,
                "dtype": r.case.dtype.name(),
                "elements": r.case.elements(),
                "bytes": bytes,
                "time": timing_json(&r.kernel, bytes),
                "copy_ceiling": timing_json(&r.ceilings.copy, bytes),
                "trivial_ceiling": timing_json(&r.ceilings.trivial, bytes),
                "trivial_kind": r.ceilings.trivial_kind,
                "trivial_with_exp": timing_json(&r.ceilings.with_exp, bytes),
                "percent_of_trivial_with_exp": 100.0 * r.gbps() / r.exp_gbps(),
                "percent_of_copy": 100.0 * r.gbps() / r.copy_gbps(),
                "percent_of_trivial": 100.0 * r.gbps() / r.trivial_gbps(),
                "cpu_reference_s": r.cpu,
                "speedup_over_cpu": r.cpu.map(|c| c / r.kernel.median()),
                "loss_gpu": r.loss_gpu,
                "loss_cpu": r.loss_cpu,
                "end_to_end": r.waits.as_ref().map(|w| serde_json::json!({
                    "call": timing_json(&w.parts.call, bytes),
                    "call_into": w.parts.call_into.as_ref().map(|t| timing_json(t, bytes)),
                    "upload": timing_json(&w.parts.upload, bytes),
                    "read_back": timing_json(&w.parts.read_back, bytes),
                    "eval": timing_json(&w.eval, bytes),
                    "memcpy": timing_json(&w.parts.memcpy, bytes),
                })),
            })
        })
        .collect();
    serde_json::json!({
        "crate": "wgpu-loss",
        "version": env!("CARGO_PKG_VERSION"),
        "adapter": adapter_json(ctx),
        "reps": a.reps,
        "warmup": a.warmup,
        "cases": cases,
    })
}
