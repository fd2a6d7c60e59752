//! Cross-entropy from logits with class targets on the GPU against the f64 reference, through
//! the recording API with poisoned outputs. (The classic form on probabilities is a streaming
//! loss: tests/suite/pointwise.rs.)
//!
//! Tolerances, with eps = 2^-24: Vulkan lets exp err by (3 + 2|x|) ulp and log by 3 ulp
//! (2^-21 absolute near 1). With logits in [-8, 8], |x - m| <= 16, so each exp(x - m) is within
//! 35 ulp ~ 2e-6 relative; the row sum keeps that, log adds ~5e-7 absolute, so a row loss
//! (`lse - x_y`) is within ~3e-6 (1 + |lse|) absolute. We allow 1e-5 relative + 1e-5 absolute
//! per row and 2e-5 on reduced values (a fixed-order tree adds (log2 N + 20) eps relative).
//! Gradients `p - onehot`: p inherits exp's and lse's errors, ~4e-6 relative; we allow 2e-5
//! relative plus 1e-6 of the largest gradient magnitude absolute.

use crate::common::*;
use wgpu_loss::{
    Context, CrossEntropyDesc, Outputs, Plan, Reduction,
    context::{ContextOptions, Tuning},
    cpu,
};

const ROW: Tol = Tol::new(1e-5, 1e-5);
const VALUE: Tol = Tol::new(2e-5, 1e-5);

fn grad_tol(reference: &[f64]) -> Tol {
    Tol::new(2e-5, 1e-6 * largest(reference))
}

/// Inputs of one class-target case.
struct Case {
    rows: usize,
    classes: usize,
    logits: Vec<f32>,
    targets: Vec<i64>,
    weight: Option<Vec<f32>>,
    options: CeOptions,
}

impl Case {
    fn random(rows: usize, classes: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let logits = rng.vec(rows * classes, -8.0, 8.0);
        let mut targets = rng.classes(rows, classes);
        // Every 11th row is ignored (PyTorch's default ignore_index).
        for t in targets.iter_mut().skip(5).step_by(11) {
            *t = -100;
        }
        Case {
            rows,
            classes,
            logits,
            targets,
            weight: None,
            options: CeOptions::default(),
        }
    }

    /// Runs through the recording API on `ctx` with poisoned outputs; returns (loss, grad).
    fn record_on(
        &self,
        ctx: &Context,
        reduction: Reduction,
        in_place: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        self.record_outputs(ctx, reduction, in_place, Outputs::BOTH)
    }

    /// As `record_on`, asking for `outputs` only (the gradient comes back poisoned without it).
    fn record_outputs(
        &self,
        ctx: &Context,
        reduction: Reduction,
        in_place: bool,
        outputs: Outputs,
    ) -> (Vec<f32>, Vec<f32>) {
        let options = CeOptions {
            reduction,
            ..self.options
        };
        let desc = (options)
            .desc(self.rows, self.classes)
            .weighted(self.weight.is_some())
            .in_place(in_place)
            .outputs(outputs);
        let plan = Plan::new(ctx, &desc).unwrap();
        let logits = upload(ctx, &self.logits);
        let y: Vec<i32> = self.targets.iter().map(|&t| t as i32).collect();
        let targets = upload(ctx, &y);
        let weight = self.weight.as_ref().map(|w| upload(ctx, w));
        let loss_len = if reduction == Reduction::None {
            self.rows
        } else {
            1
        };
        let loss = poisoned(ctx, loss_len);
        let grad = poisoned(ctx, self.logits.len());
        submit(ctx, |e| {
            plan.record_buffers(
                e,
                &buffers(
                    &logits,
                    &targets,
                    weight.as_deref(),
                    None,
                    Some(&loss),
                    (!in_place && outputs.grad).then_some(&grad),
                ),
            )
            .unwrap()
        });
        plan.read_status().unwrap().check("targets").unwrap();
        let g = read(
            ctx,
            if in_place { &logits } else { &grad },
            self.logits.len(),
        );
        (read(ctx, &loss, loss_len), g)
    }

    fn record(&self, reduction: Reduction) -> (Vec<f32>, Vec<f32>) {
        self.record_on(ctx(), reduction, false)
    }

    fn reference(&self, reduction: Reduction) -> cpu::Reference {
        let options = CeOptions {
            reduction,
            ..self.options
        };
        cpu_ce(
            &self.logits,
            &self.targets,
            self.classes,
            self.weight.as_deref(),
            &options,
        )
        .unwrap()
    }

    fn check_on(&self, ctx: &Context, what: &str) {
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let reference = self.reference(reduction);
            let (loss, grad) = self.record_on(ctx, reduction, false);
            let what = format!("{what} n={} c={} {reduction}", self.rows, self.classes);
            let tols = (ROW, VALUE, grad_tol(&reference.grad));
            assert_loss_and_grad(&what, (&loss, &grad), &reference, tols);
        }
    }

    fn check(&self, what: &str) {
        self.check_on(ctx(), what);
    }

    /// The mean and its gradient alone (for cases too large to run every reduction), the
    /// gradient written over the logits when `in_place`.
    fn check_mean_on(&self, ctx: &Context, what: &str, in_place: bool) {
        let reference = self.reference(Reduction::Mean);
        let (loss, grad) = self.record_on(ctx, Reduction::Mean, in_place);
        let tols = (ROW, VALUE, grad_tol(&reference.grad));
        assert_loss_and_grad(what, (&loss, &grad), &reference, tols);
    }

    /// The loss of a forward pass alone (no gradient asked for) against the reference.
    fn check_forward(&self, what: &str) {
        self.check_forward_on(ctx(), what);
    }

    fn check_forward_on(&self, ctx: &Context, what: &str) {
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let reference = self.reference(reduction);
            let (loss, _) = self.record_outputs(ctx, reduction, false, Outputs::LOSS);
            let what = format!("{what} n={} c={} {reduction}", self.rows, self.classes);
            assert_loss(&what, &loss, &reference, ROW, VALUE);
        }
    }
}

fast_and_extended!(small_shapes, small_shapes_extended, |extended| {
    for (i, (n, c)) in cases(
        &[
            (1, 1),
            (1, 2),
            (1, 7),
            (7, 1),
            (2, 2),
            (5, 2),
            (3, 3),
            (37, 10),
            (32, 10),
        ],
        &[0, 4, 7],
        extended,
    ) {
        Case::random(n, c, i as u64).check("small");
    }
});

// Rows per block of 1, 2 and 4 (C mod 4), one workgroup and many, with a partial last block.
fast_and_extended!(fused_layouts, fused_layouts_extended, |extended| {
    for (i, (n, c)) in cases(
        &[
            (1000, 10),
            (1001, 11),
            (2049, 13),
            (333, 1000),
            (257, 1002),
            (129, 4095),
            (65, 4097),
            (17, 16384),
        ],
        &[0, 3],
        extended,
    ) {
        Case::random(n, c, 100 + i as u64).check("fused");
    }
});

// C not a multiple of 4 whose blocks of 2 or 4 rows would not fit a workgroup: one row a
// block, unaligned, still read once by the fused kernel (the same dispatches as the next
// multiple of 4, whose rows span as many vec4s), under a tuning that reads wide rows once with
// the gradient (`chunk_wide_rows: false`, the GPU's; on the GL backend, without subgroups,
// every tuning does). Lavapipe's own tuning reads them in aligned chunks: checked too.
fast_and_extended!(
    unaligned_rows_are_read_once,
    unaligned_rows_are_read_once_extended,
    |extended| {
        let fused = Context::with_options(ContextOptions::default().tuning(Tuning {
            chunk_wide_rows: false,
            wide_vecs: ctx().tuning().register_vecs,
            ..ctx().tuning()
        }))
        .unwrap();
        for (i, (n, c)) in cases(
            &[
                (5, 10_001),
                (3, 16_386),
                (2, 32_767),
                (4, 8_193),
                (9, 8_199),
            ],
            &[0],
            extended,
        ) {
            let case = Case::random(n, c, 150 + i as u64);
            case.check("unaligned, default tuning");
            case.check_on(&fused, "unaligned");
            case.check_mean_on(&fused, "unaligned in place", true);
            for reduction in [Reduction::Mean, Reduction::None] {
                let options = CeOptions {
                    reduction,
                    ..Default::default()
                };
                let count = |c| {
                    Plan::new(&fused, &(options).desc(n, c))
                        .unwrap()
                        .dispatch_count()
                };
                assert_eq!(
                    count(c),
                    count(c.next_multiple_of(4)),
                    "C = {c}, {reduction}"
                );
            }
        }
    }
);

// Rows longer than a workgroup holds: statistics per chunk, merged in a second pass.
fast_and_extended!(split_rows, split_rows_extended, |extended| {
    for (i, (n, c)) in cases(
        &[
            (3, 32_771),
            (3, 16385),
            (5, 32000),
            (64, 50_257),
            (2, 130_001),
            (1, 262_147),
        ],
        &[0],
        extended,
    ) {
        Case::random(n, c, 200 + i as u64).check("split");
    }
});

/// Rows longer than a workgroup holds, with the gradient, under a tuning that reads them once
/// (`sweep_long_rows: true`, the GPU's): one workgroup a block sweeps it twice, chunk by chunk
/// (statistics, then the gradient). A register tile of 4 vec4s makes a workgroup hold 4,096
/// classes, so these rows take 2 to 128 chunks: blocks of 4, 2 and 1 rows, a partial last block
/// (the scalar variant), chunks that end inside a row, ignored rows, then class weights (a
/// weighted mean), label smoothing, z-loss and softcap, and the gradient in place. The plan has
/// fewer dispatches than the chunked layout of the same rows: the sweep is what ran, whichever
/// way rows within a workgroup are read (`chunk_wide_rows`).
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn long_rows_swept_once() {
    let tuning = Tuning {
        register_vecs: 4,
        wide_vecs: 4,
        chunk_wide_rows: false,
        sweep_long_rows: true,
        ..ctx().tuning()
    };
    let with = |chunk_wide_rows, sweep_long_rows| {
        let t = Tuning {
            chunk_wide_rows,
            sweep_long_rows,
            ..tuning
        };
        Context::with_options(ContextOptions::default().tuning(t)).unwrap()
    };
    let swept = with(false, true);
    let also_swept = with(true, true);
    let chunked = with(false, false);
    let also_chunked = with(true, false);
    let shapes = [
        (3, 4_099),
        (5, 10_002),
        (4, 32_000),
        (2, 130_001),
        (9, 8_200),
    ];
    for (i, (n, c)) in shapes.into_iter().enumerate() {
        let mut case = Case::random(n, c, 1200 + i as u64);
        case.check_on(&swept, "swept");
        let count = |ctx: &Context| {
            let desc = case.options.desc(n, c);
            Plan::new(ctx, &desc).unwrap().dispatch_count()
        };
        assert!(
            count(&swept) < count(&chunked),
            "C = {c}: {} dispatches swept, {} chunked",
            count(&swept),
            count(&chunked)
        );
        assert_eq!(count(&also_swept), count(&swept), "C = {c}");
        assert_eq!(count(&also_chunked), count(&chunked), "C = {c}");
        if i % 2 == 1 {
            case.weight = Some(Rng::new(i as u64).vec(c, 0.1, 3.0));
            case.options.label_smoothing = 0.1;
            case.options.z_loss = 1e-3;
            case.options.softcap = Some(5.0);
            case.check_on(&swept, "swept, weighted, smoothed, z-loss, softcap");
        }
        case.check_mean_on(&swept, "swept in place", true);
    }
}

/// The sweep's loops run twice per chunk in every invocation: blocks of more than 4,096 chunks
/// take the chunked passes instead, so that no invocation nears lavapipe's loop cap. With a
/// register tile of 1 vec4 a chunk is 1,024 classes: a row of 4,194,304 is swept (4,096
/// chunks), one of 4,194,308 (4,097) is chunked, and is right.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn the_sweep_stays_below_the_loop_cap() {
    let tuning = Tuning {
        register_vecs: 1,
        wide_vecs: 1,
        sweep_long_rows: true,
        ..ctx().tuning()
    };
    let swept = Context::with_options(ContextOptions::default().tuning(tuning)).unwrap();
    let chunked = Context::with_options(ContextOptions::default().tuning(Tuning {
        sweep_long_rows: false,
        ..tuning
    }))
    .unwrap();
    let count = |ctx: &Context, c: usize| {
        Plan::new(ctx, &CeOptions::default().desc(1, c))
            .unwrap()
            .dispatch_count()
    };
    assert!(count(&swept, 4_194_304) < count(&chunked, 4_194_304));
    let c = 4_194_308;
    assert_eq!(count(&swept, c), count(&chunked, c));
    let case = Case::random(1, c, 1300);
    case.check_mean_on(&swept, "past the sweep's chunks", false);
}

/// A block of exactly 4,096 chunks is swept, and right: with a register tile of 4 vec4s (a chunk
/// of 4,096 classes, each invocation's loops over its tile run inside both sweeps) a row of
/// 16,777,216 classes, whose loss and gradient checked against the twin show that no loop of
/// any invocation was cut short. (With the bound lifted, this test failed on lavapipe at
/// 32,768 chunks of a 1-vec4 tile, 65,536 iterations of the two sweeps: the gradient of the
/// row's last 12,288 classes was wrong. At 16,000 chunks of a 2-vec4 tile it passed: the
/// tile's own loops, unrolled, do not count. The bound leaves a margin of eight.)
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn the_sweep_at_its_bound() {
    let swept = Context::with_options(ContextOptions::default().tuning(Tuning {
        register_vecs: 4,
        wide_vecs: 4,
        sweep_long_rows: true,
        ..ctx().tuning()
    }))
    .unwrap();
    let chunked = Context::with_options(ContextOptions::default().tuning(Tuning {
        register_vecs: 4,
        wide_vecs: 4,
        sweep_long_rows: false,
        ..ctx().tuning()
    }))
    .unwrap();
    let c = 4_096 * 256 * 4 * 4;
    let count = |ctx: &Context| {
        Plan::new(ctx, &CeOptions::default().desc(1, c))
            .unwrap()
            .dispatch_count()
    };
    assert!(count(&swept) < count(&chunked), "C = {c} is swept");
    let case = Case::random(1, c, 1310);
    case.check_mean_on(&swept, "4,096 chunks swept", false);
}

/// The wide tile (`Tuning::wide_vecs`): a row block longer than one lane group holds in
/// `register_vecs` vec4s an invocation is read once by the fewest invocations that hold it in
/// `wide_vecs` each: one lane group or less (no barrier) up to `lanes * wide_vecs` vec4s, more
/// (merging through workgroup memory) up to a workgroup's 256 times as many. Under lavapipe's
/// own tile of 128 vec4s (a lane group holds 4,096 classes, a workgroup 131,072) and a tile of 40
/// with a register tile of 8, against the twin: rows past the register tile's lane group and
/// past its workgroup (32,768 classes), blocks of 1, 2 and 4 rows, a partial last block (the
/// scalar variant), unaligned rows of one a block, a row of exactly a workgroup's 131,072
/// classes; with the gradient (every reduction, or the mean; in place) and forward only. The
/// gradient's plan is the fused one, with fewer dispatches than the chunked passes that rows as
/// long take when `wide_vecs` is no larger than `register_vecs`.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn wide_tiles_read_rows_once() {
    let with = |register_vecs, wide_vecs| {
        let t = Tuning {
            register_vecs,
            wide_vecs,
            chunk_wide_rows: false,
            sweep_long_rows: false,
            ..ctx().tuning()
        };
        Context::with_options(ContextOptions::default().tuning(t)).unwrap()
    };
    let (wide, odd) = (with(32, 128), with(8, 40));
    let narrow = with(32, 32);
    let count = |ctx: &Context, case: &Case| {
        let desc = case.options.desc(case.rows, case.classes);
        Plan::new(ctx, &desc).unwrap().dispatch_count()
    };
    // Each shape a path (the tile's pipelines are slow to compile on lavapipe: few shapes).
    let one_group = Case::random(3, 2_000, 1400);
    one_group.check_on(&wide, "wide tile, one lane group");
    one_group.check_forward_on(&wide, "wide tile, one lane group, forward");
    Case::random(7, 9_999, 1401).check_mean_on(&wide, "wide tile, 4-row blocks", false);
    Case::random(3, 50_001, 1402).check_mean_on(&wide, "wide tile, unaligned, in place", true);
    Case::random(5, 4_098, 1403).check_mean_on(&odd, "wide tile of 40, 2-row blocks", false);
    for (case, ctx) in [
        (Case::random(2, 131_072, 1404), &wide),
        (Case::random(4, 40_000, 1405), &odd),
    ] {
        let what = format!("wide tile, C = {}", case.classes);
        case.check_mean_on(ctx, &what, false);
        assert!(
            count(ctx, &case) < count(&narrow, &case),
            "{what}: {} dispatches, {} without the wide tile",
            count(ctx, &case),
            count(&narrow, &case)
        );
    }
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn a_million_classes() {
    Case::random(2, 1_000_000, 300).check("C = 1e6");
    // Odd C: the two rows form one partial block, handled by the scalar variant.
    Case::random(2, 1_000_003, 301).check("C = 1e6 + 3");
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn millions_of_rows() {
    Case::random(2_000_003, 3, 400).check("N = 2e6");
}

/// 16,385 x 1,025 = 16.8 M logits.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn sixteen_million_logits() {
    Case::random(16_385, 1_025, 500).check("16.8 M");
}

// A forward pass alone, where rows are longer than a lane group holds, reads them in chunks of
// one lane group each, then merges their statistics (no barrier in the pass that reads the
// logits): chunks that end inside a row, blocks of 2 and 4 rows, a partial last block, many
// chunks a row, class weights (a weighted mean), ignored rows, label smoothing, z-loss and
// softcap.
fast_and_extended!(
    forward_only_layouts,
    forward_only_layouts_extended,
    |extended| {
        let shapes = [
            (37, 1030),
            (7, 2050),
            (65, 4097),
            (17, 16384),
            (3, 32_771),
            (2, 130_001),
        ];
        for (i, (n, c)) in cases(&shapes, &[1], extended) {
            let mut case = Case::random(n, c, 900 + i as u64);
            if i % 2 == 0 {
                case.check_forward("forward only");
                continue;
            }
            case.weight = Some(Rng::new(i as u64).vec(c, 0.1, 3.0));
            case.options.label_smoothing = 0.1;
            case.options.z_loss = 1e-3;
            case.options.softcap = (i % 2 == 0).then_some(5.0);
            case.check_forward("forward only, weighted, smoothed, z-loss, softcap");
        }
    }
);

fast_and_extended!(class_weights, class_weights_extended, |extended| {
    for (i, (n, c)) in cases(
        &[(1, 1), (37, 10), (300, 1000), (7, 20_000)],
        &[1],
        extended,
    ) {
        let mut case = Case::random(n, c, 600 + i as u64);
        case.weight = Some(Rng::new(i as u64).vec(c, 0.1, 3.0));
        case.check("weighted");
    }
});

// Logits of +-1e4 stay finite and correct.
fast_and_extended!(huge_logits, huge_logits_extended, |extended| {
    for (i, (n, c)) in cases(
        &[(1, 2), (37, 10), (100, 1000), (4, 20_000)],
        &[1, 3],
        extended,
    ) {
        let mut case = Case::random(n, c, 700 + i as u64);
        let mut rng = Rng::new(i as u64);
        for x in &mut case.logits {
            *x = if rng.unit() < 0.5 { -1e4 } else { 1e4 };
        }
        case.targets = rng.classes(n, c);
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let (loss, grad) = case.record(reduction);
            assert!(
                loss.iter().all(|l| l.is_finite()),
                "n={n} c={c} {reduction}: {loss:?}"
            );
            assert!(grad.iter().all(|g| g.is_finite()));
        }
        case.check("+-1e4");
    }
});

// A -inf logit among finite ones: zero probability, finite loss unless it is the target.
fast_and_extended!(
    minus_infinity_logits,
    minus_infinity_logits_extended,
    |extended| {
        for (i, (n, c)) in cases(
            &[(5, 4), (37, 10), (20, 1000), (3, 20_000)],
            &[0, 3],
            extended,
        ) {
            let mut case = Case::random(n, c, 800 + i as u64);
            for r in 0..n {
                let t = case.targets[r];
                // A -inf that is not the target in every row...
                let k = if t == 0 { 1 } else { 0 };
                case.logits[r * c + k] = f32::NEG_INFINITY;
            }
            case.check("-inf");
            // ...and one row whose target is -inf: an infinite loss, as in PyTorch.
            case.targets[1] = 0;
            case.logits[c] = f32::NEG_INFINITY;
            let reference = case.reference(Reduction::None);
            assert_eq!(reference.per_element.as_ref().unwrap()[1], f64::INFINITY);
            case.check("-inf target");
        }
    }
);

fast_and_extended!(every_row_ignored, every_row_ignored_extended, |extended| {
    for (_, c) in cases(&[3, 1000, 20_000], &[1], extended) {
        let mut case = Case::random(9, c, 900);
        case.targets = vec![-100; 9];
        let (mean, grad) = case.record(Reduction::Mean);
        assert!(mean[0].is_nan(), "mean over no rows is NaN, as in PyTorch");
        assert!(
            grad.iter().all(|&g| g == 0.0),
            "all-ignored gradient is zero"
        );
        let (sum, _) = case.record(Reduction::Sum);
        assert_eq!(sum[0], 0.0);
    }
});

#[test]
fn nan_logit_propagates() {
    let mut case = Case::random(4, 6, 950);
    case.targets = vec![1, 2, 3, 4];
    case.logits[7] = f32::NAN;
    let (loss, grad) = case.record(Reduction::None);
    assert!(loss[1].is_nan() && !loss[0].is_nan());
    assert!(grad[6..12].iter().all(|g| g.is_nan()));
    let (mean, _) = case.record(Reduction::Mean);
    assert!(mean[0].is_nan());
}

fast_and_extended!(gradient_in_place, gradient_in_place_extended, |extended| {
    // Fused blocks of 4, 1 and 2 rows, and split rows (the second read overwrites what it read).
    for (i, (n, c)) in cases(
        &[(37, 10), (300, 1000), (5, 32_000), (7, 1001), (3, 70_002)],
        &[0, 2],
        extended,
    ) {
        Case::random(n, c, 1000 + i as u64).check_mean_on(ctx(), "in place", true);
    }
});

#[test]
fn repeated_runs_are_bitwise_equal() {
    for (n, c) in [(20_000, 100), (7, 100_000)] {
        let case = Case::random(n, c, 1100);
        let first = case.record(Reduction::Mean);
        for _ in 0..3 {
            let again = case.record(Reduction::Mean);
            assert_eq!(first.0[0].to_bits(), again.0[0].to_bits());
            assert!(
                first
                    .1
                    .iter()
                    .zip(&again.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    }
}

/// The reductions without subgroup operations (workgroup-memory trees) give the same results.
#[test]
fn without_subgroups() {
    let ctx = Context::with_options(ContextOptions::default().subgroups(false)).unwrap();
    assert!(!ctx.uses_subgroups());
    for (i, (n, c)) in [(37, 10), (300, 1000), (5, 32_000), (1001, 7)]
        .into_iter()
        .enumerate()
    {
        Case::random(n, c, 1200 + i as u64).check_on(&ctx, "no subgroups");
    }
}

/// A device that allows few workgroups per dimension makes every dispatch fold into two
/// dimensions, as inputs past 65,535 workgroups do on real GPUs.
#[test]
fn folded_dispatches() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits {
            max_compute_workgroups_per_dimension: 7,
            ..adapter.limits()
        },
        required_features: adapter.features() & wgpu::Features::SUBGROUP,
        ..Default::default()
    }))
    .unwrap();
    let ctx = Context::from_device(device, queue).unwrap();
    for (i, (n, c)) in [(20_000, 10), (300, 1000), (9, 40_000)]
        .into_iter()
        .enumerate()
    {
        Case::random(n, c, 1300 + i as u64).check_on(&ctx, "folded");
    }
}

/// A small batch from the recording API costs at most two dispatches.
#[test]
fn small_batches_take_few_dispatches() {
    let ctx = ctx();
    let plan = Plan::new(ctx, &CrossEntropyDesc::new(32, 10)).unwrap();
    assert_eq!(plan.dispatch_count(), 1);
}

#[test]
fn convenience_matches_reference() {
    let ctx = ctx();
    let case = Case::random(123, 45, 1400);
    for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
        let options = CeOptions::default().reduction(reduction);
        let out = ce_classes(
            ctx,
            &case.logits,
            &case.targets,
            case.classes,
            None,
            &options,
            Outputs::BOTH,
        )
        .unwrap();
        let reference = case.reference(reduction);
        match reduction {
            Reduction::None => assert_close(
                "rows",
                out.per_element.as_ref().unwrap(),
                reference.per_element.as_ref().unwrap(),
                ROW,
            ),
            _ => assert_scalar("value", out.value.unwrap(), reference.value.unwrap(), VALUE),
        }
        assert_close(
            "grad",
            out.grad.as_ref().unwrap(),
            &reference.grad,
            grad_tol(&reference.grad),
        );
    }
}

/// Class targets that only the GPU sees are counted into the status word.
/// The error of two bad targets, the first in row 2.
#[track_caller]
fn two_bad_rows(err: &wgpu_loss::Error) {
    assert!(
        matches!(
            err,
            wgpu_loss::Error::InvalidOnGpu {
                count: 2,
                first: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn gpu_resident_targets_out_of_range_are_reported() {
    let ctx = ctx();
    for (n, c) in [(10, 5), (3000, 10), (4, 20_000)] {
        let case = Case::random(n, c, 1500);
        let mut y: Vec<i32> = case.targets.iter().map(|&t| t as i32).collect();
        y[2] = c as i32;
        y[n - 1] = -7;
        let plan = Plan::new(ctx, &CrossEntropyDesc::new(n, c)).unwrap();
        let logits = upload(ctx, &case.logits);
        let targets = upload(ctx, &y);
        let loss = poisoned(ctx, 1);
        let grad = poisoned(ctx, n * c);
        submit(ctx, |e| {
            plan.record_buffers(
                e,
                &buffers(&logits, &targets, None, None, Some(&loss), Some(&grad)),
            )
            .unwrap()
        });
        let status = plan.read_status().unwrap();
        assert_eq!(status.invalid, 2, "n={n} c={c}");
        assert_eq!(status.first, Some(2));
        let err = status.check("class targets").unwrap_err();
        two_bad_rows(&err);
        assert!(read(ctx, &loss, 1)[0].is_nan());

        // Per row: exactly the rows with bad targets are NaN, in the loss and the gradient.
        let options = CeOptions {
            reduction: Reduction::None,
            ..Default::default()
        };
        let plan = Plan::new(ctx, &(options).desc(n, c)).unwrap();
        let rows = poisoned(ctx, n);
        let err = plan
            .run_buffers(&buffers(
                &logits,
                &targets,
                None,
                None,
                Some(&rows),
                Some(&grad),
            ))
            .unwrap_err();
        two_bad_rows(&err);
        let rows = read(ctx, &rows, n);
        let g = read(ctx, &grad, n * c);
        for r in 0..n {
            let bad = r == 2 || r == n - 1;
            assert_eq!(rows[r].is_nan(), bad, "row {r} loss {}", rows[r]);
            let row = &g[r * c..(r + 1) * c];
            if bad {
                assert!(
                    row.iter().all(|v| v.is_nan()),
                    "row {r}: gradient not all NaN"
                );
            } else {
                assert!(
                    row.iter().all(|v| v.is_finite()),
                    "row {r}: gradient not finite"
                );
            }
        }
    }
}

/// One plan bound to two sets of buffers (each bound once, kept by the caller), run on one set,
/// then the other holding other data, then the first again: each run reads and writes the
/// buffers of its bindings, and the plan's scratch serves them all.
#[test]
fn one_plan_other_buffers_and_data() {
    let ctx = ctx();
    for (n, c) in [(301, 1000), (3, 100_003)] {
        let plan = Plan::new(ctx, &CrossEntropyDesc::new(n, c)).unwrap();
        let cases: Vec<Case> = (0..2).map(|k| Case::random(n, c, 1600 + k)).collect();
        let sets: Vec<_> = cases
            .iter()
            .map(|case| {
                let y: Vec<i32> = case.targets.iter().map(|&t| t as i32).collect();
                (
                    upload(ctx, &case.logits),
                    upload(ctx, &y),
                    poisoned(ctx, 1),
                    poisoned(ctx, n * c),
                )
            })
            .collect();
        let bindings: Vec<_> = sets
            .iter()
            .map(|(x, y, loss, grad)| {
                plan.bind(&buffers(x, y, None, None, Some(loss), Some(grad)))
                    .unwrap()
            })
            .collect();
        for k in [0, 1, 0, 1] {
            let (_, _, loss, grad) = &sets[k];
            poison(ctx, loss);
            poison(ctx, grad);
            plan.run(&bindings[k]).unwrap();
            let reference = cases[k].reference(Reduction::Mean);
            assert_scalar(
                "reused plan",
                read(ctx, loss, 1)[0],
                reference.value.unwrap(),
                VALUE,
            );
            let g = read(ctx, grad, n * c);
            assert_close(
                "reused plan grad",
                &g,
                &reference.grad,
                grad_tol(&reference.grad),
            );
        }
    }
}
