//! `wgpu-loss tune`: the adapter's tuning against its neighbours, measured on this machine.
//!
//! `Tuning::for_adapter` picks a tuning from what the adapter says it is, and the same adapter
//! can want another one on another host: lavapipe's relative costs of a load, an `exp` and a
//! barrier move with the CPU under it (docs/tuning.md, "A tuning measured on the machine").
//! This command measures, one parameter at a time, the current choice against its neighbours
//! on the kernels that parameter shapes, and prints the fastest. It changes nothing by itself:
//! the result is pinned where a caller wants it (`--tuning`, `ContextOptions::tuning`), so that a
//! plan's layout, and so its bits, never depend on a measurement.

use clap::Args;
use wgpu_loss::{
    Context,
    context::{ContextOptions, Tuning},
};
use wgpu_loss_bench::{Bench, Case};

#[derive(Args)]
pub struct TuneArgs {
    /// Elements of each measured case (`2^24` allowed).
    #[arg(long, default_value = "2^24")]
    size: String,
    /// Class counts of the cross-entropy cases (comma-separated); rows = size / classes.
    #[arg(long, value_delimiter = ',', default_value = "1000,8000,32000,128000")]
    classes: Vec<usize>,
    /// Timed repetitions of each case, each round (at least 10).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Rounds: in each, every case runs under every candidate in turn; a case's time under a
    /// candidate is the fastest of its rounds' medians.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// A candidate replaces the current value only when it is faster by more than this many
    /// percent (the geometric mean of its cases' times against the current value's).
    #[arg(long, default_value_t = 3.0)]
    margin: f64,
    /// Start from this tuning instead of the adapter's own:
    /// lanes,stream_vecs,register_vecs[,chunk_wide_rows[,sweep_long_rows[,wide_vecs]]].
    #[arg(long, value_delimiter = ',')]
    tuning: Vec<u32>,
}

pub fn check(a: &TuneArgs) -> Result<(), String> {
    if a.reps < 10 {
        return Err(format!("--reps {}: at least 10 repetitions", a.reps));
    }
    if a.rounds == 0 {
        return Err("--rounds 0: at least one round".into());
    }
    if !(a.margin.is_finite() && (0.0..100.0).contains(&a.margin)) {
        return Err(format!("--margin {}: a percentage in [0, 100)", a.margin));
    }
    let size = size(a)?;
    if a.classes.is_empty() {
        return Err("--classes: at least one class count".into());
    }
    for &c in &a.classes {
        if c == 0 || c > size {
            return Err(format!("--classes: {c} classes in {size} elements"));
        }
    }
    super::check_tuning(&a.tuning)
}

fn size(a: &TuneArgs) -> Result<usize, String> {
    match super::bench::parse_size(&a.size) {
        Ok(0) | Err(_) => Err(format!(
            "--size: {:?} is not a count (e.g. 16777216 or 2^24)",
            a.size
        )),
        Ok(n) => Ok(n),
    }
}

/// The parameters `tune` varies, each with the cases it shapes.
#[derive(Clone, Copy)]
enum Param {
    RegisterVecs,
    WideVecs,
    ChunkWideRows,
    SweepLongRows,
    StreamVecs,
}

impl Param {
    fn name(self) -> &'static str {
        match self {
            Param::RegisterVecs => "register_vecs",
            Param::WideVecs => "wide_vecs",
            Param::ChunkWideRows => "chunk_wide_rows",
            Param::SweepLongRows => "sweep_long_rows",
            Param::StreamVecs => "stream_vecs",
        }
    }

    fn value(self, t: Tuning) -> String {
        match self {
            Param::RegisterVecs => t.register_vecs.to_string(),
            Param::WideVecs => t.wide_vecs.to_string(),
            Param::ChunkWideRows => t.chunk_wide_rows.to_string(),
            Param::SweepLongRows => t.sweep_long_rows.to_string(),
            Param::StreamVecs => t.stream_vecs.to_string(),
        }
    }

    /// The current tuning first, then its neighbours: half and twice the vec4 counts (within
    /// what `Tuning` allows), the other layout of long rows.
    fn candidates(self, t: Tuning) -> Vec<Tuning> {
        // Half and twice `v`, where they lie in 1..=max.
        let halve_double = |v: u32, max: u32| {
            [v / 2, v * 2]
                .into_iter()
                .filter(move |n| (1..=max).contains(n))
        };
        let mut out = vec![t];
        match self {
            // wide_vecs is never below register_vecs.
            Param::RegisterVecs => out.extend(halve_double(t.register_vecs, 32).map(|r| Tuning {
                register_vecs: r,
                wide_vecs: t.wide_vecs.max(r),
                ..t
            })),
            Param::WideVecs => out.extend(
                halve_double(t.wide_vecs, 128)
                    .filter(|&w| w >= t.register_vecs)
                    .map(|w| Tuning { wide_vecs: w, ..t }),
            ),
            Param::ChunkWideRows => out.push(Tuning {
                chunk_wide_rows: !t.chunk_wide_rows,
                ..t
            }),
            Param::SweepLongRows => out.push(Tuning {
                sweep_long_rows: !t.sweep_long_rows,
                ..t
            }),
            Param::StreamVecs => out.extend(halve_double(t.stream_vecs, 64).map(|s| Tuning {
                stream_vecs: s,
                ..t
            })),
        }
        out
    }

    /// The cases whose plans the parameter changes: cross-entropy rows for the register tile,
    /// those longer than one lane group holds in it for the wide tile; forward + gradient of
    /// rows longer than one lane group holds and no longer than a workgroup holds for
    /// `chunk_wide_rows`, of longer rows for `sweep_long_rows`; the streaming (pointwise)
    /// kernels for `stream_vecs`.
    fn cases(self, t: Tuning, size: usize, classes: &[usize]) -> Vec<Case> {
        let ce = |grad| {
            classes
                .iter()
                .map(move |&c| Case::cross_entropy(size / c, c, grad))
        };
        let (lane_group, workgroup) = (t.lane_group_classes(), t.workgroup_classes());
        match self {
            Param::RegisterVecs => ce(false).chain(ce(true)).collect(),
            Param::WideVecs => ce(false)
                .chain(ce(true))
                .filter(|c| c.classes > t.register_tile_classes())
                .collect(),
            Param::ChunkWideRows => ce(true)
                .filter(|c| (lane_group + 1..=workgroup).contains(&c.classes))
                .collect(),
            Param::SweepLongRows => ce(true).filter(|c| c.classes > workgroup).collect(),
            Param::StreamVecs => vec![Case::mse(size, false), Case::mse(size, true)],
        }
    }
}

pub fn run(a: &TuneArgs) -> Result<(), String> {
    check(a)?;
    let size = size(a)?;
    let options = super::with_tuning(ContextOptions::default(), &a.tuning)?;
    let start = super::context_with(options.clone())?;
    let info = start.adapter_info();
    println!(
        "adapter: {} ({}, {} {}); starting from {:?}",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        start.tuning()
    );
    println!(
        "each case: median of {} repetitions by {}, the fastest of {} rounds; a candidate wins by \
         more than {}% (geometric mean over its cases)",
        a.reps,
        if start.has_timestamps() {
            "timestamps"
        } else {
            "the wall clock"
        },
        a.rounds,
        a.margin
    );
    let mut best = start.tuning();
    drop(start);
    // The wide tile after the two layouts of long rows: it pays where rows are read once
    // (a lane group or a workgroup holds more of them), so measured under chunks it would
    // lose the hosts where one read wins (docs/tuning.md, "Wide tiles for long rows").
    let params = [
        Param::RegisterVecs,
        Param::ChunkWideRows,
        Param::SweepLongRows,
        Param::WideVecs,
        Param::StreamVecs,
    ];
    for param in params {
        let cases = param.cases(best, size, &a.classes);
        println!();
        if cases.is_empty() {
            println!(
                "{}: no case it changes (no class count in its range)",
                param.name()
            );
            continue;
        }
        best = step(a, &options, param, best, &cases)?;
    }
    println!();
    println!("fastest here: {best:?}");
    println!(
        "pin it: `--tuning {}` (bench, eval), or ContextOptions::default().tuning(Tuning {{ \
         lanes: {}, stream_vecs: {}, register_vecs: {}, wide_vecs: {}, chunk_wide_rows: {}, \
         sweep_long_rows: {} }})",
        super::tuning_arg(best),
        best.lanes,
        best.stream_vecs,
        best.register_vecs,
        best.wide_vecs,
        best.chunk_wide_rows,
        best.sweep_long_rows
    );
    Ok(())
}

/// Measures `param`'s candidates around `current` on `cases`, prints the table and returns the
/// tuning that wins (`current` unless a candidate beats it by more than the margin).
fn step(
    a: &TuneArgs,
    options: &ContextOptions,
    param: Param,
    current: Tuning,
    cases: &[Case],
) -> Result<Tuning, String> {
    let candidates = param.candidates(current);
    let contexts = candidates
        .iter()
        .map(|&t| super::context_with(options.clone().tuning(t)))
        .collect::<Result<Vec<_>, _>>()?;
    // ms[candidate][case]
    let mut ms = vec![vec![f64::INFINITY; cases.len()]; candidates.len()];
    for (j, case) in cases.iter().enumerate() {
        let what = |e: String| format!("{} {}: {e}", case.kernel(), case.shape());
        // The same inputs under every candidate; the benches of one case only, at a time.
        let benches = contexts
            .iter()
            .map(|ctx| Bench::new(ctx, *case, 1).map_err(|e| what(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        for (ctx, bench) in contexts.iter().zip(&benches) {
            verify(ctx, bench).map_err(what)?;
        }
        for _ in 0..a.rounds {
            for (i, bench) in benches.iter().enumerate() {
                let t = bench
                    .time(a.warmup, a.reps)
                    .map_err(|e| what(e.to_string()))?;
                ms[i][j] = ms[i][j].min(t.median() * 1e3);
            }
        }
    }
    let ratio = |i: usize| {
        let logs: f64 = (0..cases.len()).map(|j| (ms[i][j] / ms[0][j]).ln()).sum();
        (logs / cases.len() as f64).exp()
    };
    // A row per case, a column per candidate.
    let width = cases
        .iter()
        .map(|c| c.kernel().len())
        .max()
        .unwrap_or(0)
        .max(28);
    print!("{:<width$}", param.name());
    for &t in &candidates {
        print!(" {:>12}", param.value(t));
    }
    println!();
    for (j, case) in cases.iter().enumerate() {
        print!("{:<width$}", case.kernel());
        for m in &ms {
            print!(" {:>9.3} ms", m[j]);
        }
        println!();
    }
    print!("{:<width$}", "geometric mean vs current");
    for i in 0..candidates.len() {
        print!(" {:>12.3}", ratio(i));
    }
    println!();
    let (winner, r) = (1..candidates.len())
        .map(|i| (i, ratio(i)))
        .fold((0, 1.0), |b, c| if c.1 < b.1 { c } else { b });
    let keep = r >= 1.0 - a.margin / 100.0;
    let chosen = if keep { current } else { candidates[winner] };
    println!(
        "{} = {}{}",
        param.name(),
        param.value(chosen),
        if keep && winner != 0 {
            format!(
                " (kept: {} was {:.1}% faster, within the margin)",
                param.value(candidates[winner]),
                (1.0 - r) * 100.0
            )
        } else {
            String::new()
        }
    );
    Ok(chosen)
}

/// A candidate that is fast but wrong must not win: its loss against the f64 reference.
fn verify(ctx: &Context, bench: &Bench) -> Result<(), String> {
    let (gpu, cpu) = bench.verify().map_err(|e| e.to_string())?;
    let err = (f64::from(gpu) - cpu).abs();
    if err.is_nan() || err > 1e-4 * cpu.abs().max(1.0) {
        return Err(format!(
            "under {:?} the loss is {gpu} against the reference's {cpu}",
            ctx.tuning()
        ));
    }
    Ok(())
}
