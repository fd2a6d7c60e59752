//! The `wgpu-loss` command line: `info`, `eval`, `demo`, `bench`, `tune`, `train`.

mod bench;
mod demo;
mod eval;
mod images;
mod info;
mod npy;
mod plot;
mod train;
mod tune;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use wgpu_loss::Reduction;

/// Neural-network losses and their gradients on the GPU (wgpu + WGSL).
#[derive(Parser)]
#[command(name = "wgpu-loss", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the adapter, backend, driver, and the features and limits that matter here.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compute a loss (and its gradient) on .npy files (images also as PNG).
    Eval {
        #[command(subcommand)]
        loss: eval::LossArgs,
    },
    /// Compute cross-entropy and MSE on a large random batch, on the GPU and on the CPU
    /// reference, and compare.
    Demo(demo::DemoArgs),
    /// Measure every kernel on this adapter against its ceilings (a buffer copy and a trivial
    /// kernel of the same access pattern, measured in the same run).
    Bench(bench::BenchArgs),
    /// Measure the adapter's tuning against its neighbours (the layout of cross-entropy's long
    /// rows, the register tile, the vec4s a streaming invocation takes) and print the fastest,
    /// to pin with --tuning or ContextOptions::tuning.
    Tune(tune::TuneArgs),
    /// Train softmax regression (a linear layer with bias, then cross-entropy) on the GPU:
    /// the fused linear + cross-entropy kernel and the update step, from zero parameters.
    Train(train::TrainArgs),
}

/// Options every `eval` loss takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// none (per element / per row), sum, mean, or batchmean (kl-div).
    #[arg(long, default_value = "mean")]
    reduction: Reduction,
    /// Print JSON (the loss, the adapter, the time taken).
    #[arg(long)]
    json: bool,
    /// Write the loss to this .npy file (per element for --reduction none, else a 0-d array).
    #[arg(long)]
    loss_out: Option<PathBuf>,
    /// Write the gradient (shaped like the prediction) to this .npy file, in the input's dtype
    /// (bfloat16 as uint16 bits) unless --grad-dtype says otherwise.
    #[arg(long)]
    grad_out: Option<PathBuf>,
    /// The gradient's dtype: f32, f16 or bf16 (default: the input's).
    #[arg(long)]
    grad_dtype: Option<wgpu_loss::DType>,
    /// uint16 .npy inputs hold bfloat16 bits (numpy has no bfloat16). float16 .npy files are
    /// read as f16 without it.
    #[arg(long)]
    bf16: bool,
    /// Bind at most this many bytes of a buffer at once (default: the adapter's limit). Inputs
    /// larger than one binding go through windows with the same results; lowering it shows that
    /// cheaply, or what WebGPU's default of 134217728 (128 MiB) would do. At least 1048576.
    #[arg(long, value_name = "BYTES")]
    max_binding: Option<u64>,
    /// Override the adapter's tuning:
    /// lanes,stream_vecs,register_vecs[,chunk_wide_rows 0|1[,sweep_long_rows 0|1[,wide_vecs]]]
    /// (see `Tuning`, and `wgpu-loss tune` for the fastest on this machine). The layout, and
    /// so the last bits of a result, depends on it.
    #[arg(long, value_delimiter = ',')]
    tuning: Vec<u32>,
}

impl Cli {
    /// Checks what can be checked of the arguments before a device is opened (the fuzz target
    /// in `fuzz/` drives this after parsing).
    pub fn check(&self) -> Result<(), String> {
        match &self.cmd {
            Cmd::Bench(args) => bench::check(args),
            Cmd::Tune(args) => tune::check(args),
            _ => Ok(()),
        }
    }

    pub fn run(self) -> Result<(), String> {
        self.check()?;
        match self.cmd {
            Cmd::Info { json } => info::run(json),
            Cmd::Eval { loss } => eval::run(loss),
            Cmd::Demo(args) => demo::run(&args),
            Cmd::Bench(args) => bench::run(&args),
            Cmd::Tune(args) => tune::run(&args),
            Cmd::Train(args) => train::run(&args),
        }
    }
}

/// The adapter, and the tuning the context plans with (a result's layout depends on it), as
/// JSON.
pub fn adapter_json(ctx: &wgpu_loss::Context) -> serde_json::Value {
    let info = ctx.adapter_info();
    let t = ctx.tuning();
    serde_json::json!({
        "name": info.name,
        "backend": info.backend.to_string(),
        "device_type": format!("{:?}", info.device_type),
        "driver": info.driver,
        "driver_info": info.driver_info,
        "tuning": {
            "lanes": t.lanes,
            "stream_vecs": t.stream_vecs,
            "register_vecs": t.register_vecs,
            "wide_vecs": t.wide_vecs,
            "chunk_wide_rows": t.chunk_wide_rows,
            "sweep_long_rows": t.sweep_long_rows,
        },
    })
}

const TUNING_USAGE: &str = "--tuning takes three to six numbers: \
     lanes,stream_vecs,register_vecs[,chunk_wide_rows 0|1[,sweep_long_rows 0|1[,wide_vecs]]]";

/// Checks the shape of a `--tuning` argument (its values are the library's to check).
pub fn check_tuning(t: &[u32]) -> Result<(), String> {
    if !matches!(t.len(), 0 | 3..=6) || t.iter().skip(3).take(2).any(|&b| b > 1) {
        return Err(TUNING_USAGE.into());
    }
    Ok(())
}

/// `options` with the tuning of a `--tuning` argument (empty: unchanged). Without its fourth
/// or fifth number, chunk_wide_rows or sweep_long_rows is the adapter's own choice; without its
/// sixth, wide_vecs is the adapter's own, at least register_vecs.
pub fn with_tuning(
    options: wgpu_loss::context::ContextOptions,
    t: &[u32],
) -> Result<wgpu_loss::context::ContextOptions, String> {
    check_tuning(t)?;
    let [lanes, stream_vecs, register_vecs, ..] = t[..] else {
        return Ok(options);
    };
    // For what is left out, ask a context made without the override.
    let own = if t.len() < 6 {
        Some(context_with(options.clone())?.tuning())
    } else {
        None
    };
    let flag = |i: usize, pick: fn(wgpu_loss::context::Tuning) -> bool| {
        t.get(i).map_or_else(|| own.is_some_and(pick), |&b| b == 1)
    };
    Ok(options.tuning(wgpu_loss::context::Tuning {
        lanes,
        stream_vecs,
        register_vecs,
        wide_vecs: t
            .get(5)
            .copied()
            .unwrap_or_else(|| own.map_or(register_vecs, |o| o.wide_vecs.max(register_vecs))),
        chunk_wide_rows: flag(3, |t| t.chunk_wide_rows),
        sweep_long_rows: flag(4, |t| t.sweep_long_rows),
    }))
}

/// A tuning as the `--tuning` argument that pins it.
pub fn tuning_arg(t: wgpu_loss::context::Tuning) -> String {
    format!(
        "{},{},{},{},{},{}",
        t.lanes,
        t.stream_vecs,
        t.register_vecs,
        t.chunk_wide_rows as u32,
        t.sweep_long_rows as u32,
        t.wide_vecs
    )
}

/// Creates the context, as a one-line error when there is no adapter.
pub fn context() -> Result<wgpu_loss::Context, String> {
    context_with(wgpu_loss::context::ContextOptions::default())
}

/// The variable that points the command line at a directory of WGSL (a checkout's `shaders/`)
/// to run instead of the kernels built in, for experiments (`docs/experiments/`): the command
/// line opts in to it through `ContextOptions::shader_dir`; the library reads no environment.
pub const SHADER_DIR_VAR: &str = "WGPU_LOSS_SHADER_DIR";

/// [`context`] with options, and the kernels of [`SHADER_DIR_VAR`]'s directory where it is set.
pub fn context_with(
    mut options: wgpu_loss::context::ContextOptions,
) -> Result<wgpu_loss::Context, String> {
    if let Some(dir) = std::env::var_os(SHADER_DIR_VAR) {
        options = options.shader_dir(dir);
    }
    wgpu_loss::Context::with_options(options).map_err(|e| e.to_string())
}

/// Runs `f`, timing it; its error as a message.
pub(crate) fn timed<T>(f: impl FnOnce() -> wgpu_loss::Result<T>) -> Result<(T, f64), String> {
    let start = std::time::Instant::now();
    let v = f().map_err(|e| e.to_string())?;
    Ok((v, start.elapsed().as_secs_f64()))
}
