//! Shared test machinery: the device, seeded random data, poisoned output buffers, readback, and
//! comparison against the f64 references with stated tolerances.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgpu::util::DeviceExt;
use wgpu_loss::{
    ClassicCrossEntropyDesc, Context, CrossEntropyDesc, Inputs, NllDesc, Outputs, Plan,
    PointwiseDesc, Reduction,
    context::{ContextOptions, Tuning},
    cross_entropy::CrossEntropyBuffers,
    cross_entropy::Targets,
    nll::NllBuffers,
    plan::LossDesc,
    pointwise::Pointwise,
    pointwise::PointwiseBuffers,
};

/// The context every GPU test uses. No adapter is a failure, never a skip: CI installs lavapipe.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new().unwrap_or_else(|e| {
            panic!(
                "GPU tests need an adapter and found none ({e}). Install a Vulkan driver, e.g. \
                 `apt-get install mesa-vulkan-drivers` (lavapipe), or set WGPU_ADAPTER_NAME."
            )
        })
    })
}

/// The cases of a matrix that a test runs, each with its index in the matrix (for its seed):
/// those at the indices `fast` in the fast suite, the others in the extended suite
/// (`extended`: the tests [`fast_and_extended!`] marks `#[ignore]`, which `cargo test --release
/// -- --include-ignored` runs).
pub fn cases<T: Copy>(all: &[T], fast: &[usize], extended: bool) -> Vec<(usize, T)> {
    all.iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| fast.contains(i) != extended)
        .collect()
}

/// One matrix, two tests: `$fast` runs `$body(false)` in the fast suite (`cargo test
/// --release`), `$extended` runs `$body(true)`, ignored but for the extended suite (`cargo test
/// --release -- --include-ignored`, which CI runs on both backends).
#[allow(unused_macros)]
macro_rules! fast_and_extended {
    ($(#[$m:meta])* $fast:ident, $extended:ident, $body:expr) => {
        $(#[$m])*
        #[test]
        fn $fast() {
            $body(false)
        }

        $(#[$m])*
        #[test]
        #[ignore = "extended suite: cargo test --release -- --include-ignored"]
        fn $extended() {
            $body(true)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use fast_and_extended;

/// A context on the same adapter whose tuning reads rows longer than a workgroup holds, with
/// the gradient, once (`sweep_long_rows: true`, the GPUs' choice: cross-entropy's sweep), a
/// workgroup holding `register_vecs` vec4s an invocation (`wide_vecs` no larger, as on GPUs, so
/// that rows past 32,768 classes are swept on lavapipe), and binds at most `max_binding` bytes
/// at a time when given.
pub fn swept(max_binding: Option<u64>) -> Context {
    let own = ctx().tuning();
    let mut options = ContextOptions::default().tuning(Tuning {
        sweep_long_rows: true,
        wide_vecs: own.register_vecs,
        ..own
    });
    if let Some(bytes) = max_binding {
        options = options.max_binding(bytes);
    }
    Context::with_options(options).unwrap()
}

/// SplitMix64: seeded, reproducible, and enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit() as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    pub fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// `rows` probability distributions over `classes` (positive, each row sums to 1).
    pub fn distributions(&mut self, rows: usize, classes: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(rows * classes);
        for _ in 0..rows {
            let row: Vec<f64> = (0..classes).map(|_| 0.05 + self.unit()).collect();
            let s: f64 = row.iter().sum();
            v.extend(row.iter().map(|x| (x / s) as f32));
        }
        v
    }

    /// Class targets in [0, C).
    pub fn classes(&mut self, rows: usize, classes: usize) -> Vec<i64> {
        (0..rows).map(|_| self.below(classes) as i64).collect()
    }
}

/// A finite, absurd value (about 1.15e38) that no kernel produces: outputs start as this, so
/// an element a kernel forgot to write fails the comparison.
pub const POISON: u32 = 0x7ead_beef;

/// A test's buffer. The tests share one context between threads, so like any caller that makes
/// wgpu calls of its own on a shared device they hold the context's device lock around them
/// (`Context::lock`: needed on GL, where another thread's long submission holds the one GL
/// context; free elsewhere), freeing buffers included.
pub struct Buf {
    ctx: Context,
    buffer: wgpu::Buffer,
}

impl Buf {
    pub fn new(ctx: &Context, buffer: wgpu::Buffer) -> Self {
        Buf {
            ctx: ctx.clone(),
            buffer,
        }
    }
}

impl std::ops::Deref for Buf {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let _guard = self.ctx.lock();
        self.buffer.destroy();
    }
}

/// Creates a buffer under the device lock.
pub fn create(ctx: &Context, desc: &wgpu::BufferDescriptor<'_>) -> Buf {
    let _guard = ctx.lock();
    Buf::new(ctx, ctx.device().create_buffer(desc))
}

pub fn upload<T: bytemuck::Pod>(ctx: &Context, data: &[T]) -> Buf {
    let _guard = ctx.lock();
    let buffer = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("test input"),
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        });
    Buf::new(ctx, buffer)
}

/// An output buffer of `len` f32 filled with [`POISON`].
pub fn poisoned(ctx: &Context, len: usize) -> Buf {
    let data = vec![POISON; len.max(1)];
    upload(ctx, &data)
}

/// Overwrites a buffer with [`POISON`] (before a repeated run).
pub fn poison(ctx: &Context, buffer: &wgpu::Buffer) {
    let data = vec![POISON; (buffer.size() / 4) as usize];
    let _guard = ctx.lock();
    ctx.queue()
        .write_buffer(buffer, 0, bytemuck::cast_slice(&data));
}

/// Reads `len` f32 from the start of `buffer`.
pub fn read(ctx: &Context, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    let bytes = (4 * len) as u64;
    let _guard = ctx.lock();
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    ctx.queue().submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r).unwrap());
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    rx.recv().unwrap().unwrap();
    let v = bytemuck::pod_collect_to_vec(&staging.get_mapped_range(..).unwrap());
    staging.unmap();
    v
}

/// Records with `record`, submits, and waits.
pub fn submit(ctx: &Context, record: impl FnOnce(&mut wgpu::CommandEncoder)) {
    let _guard = ctx.lock();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    record(&mut encoder);
    ctx.queue().submit([encoder.finish()]);
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
}

/// A tolerance: `|gpu - cpu| <= abs + rel * |cpu|`. NaN must meet NaN and an infinity the same
/// infinity.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rel: f64,
    pub abs: f64,
}

impl Tol {
    pub const fn new(rel: f64, abs: f64) -> Self {
        Tol { rel, abs }
    }
}

/// The largest finite magnitude in a reference (the scale of a gradient's absolute tolerance).
pub fn largest(reference: &[f64]) -> f64 {
    reference
        .iter()
        .filter(|g| g.is_finite())
        .fold(0.0f64, |a, g| a.max(g.abs()))
}

/// The worst relative error seen, over elements whose reference is not tiny.
pub fn worst_relative(gpu: &[f32], cpu: &[f64]) -> f64 {
    let scale = cpu
        .iter()
        .filter(|c| c.is_finite())
        .fold(0.0f64, |a, c| a.max(c.abs()));
    gpu.iter()
        .zip(cpu)
        .filter(|(_, c)| c.is_finite())
        .map(|(&g, &c)| (g as f64 - c).abs() / c.abs().max(scale * 1e-3).max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

fn same(g: f64, c: f64, tol: Tol) -> bool {
    if c.is_nan() {
        return g.is_nan();
    }
    if c.is_infinite() {
        return g == c;
    }
    g.is_finite() && (g - c).abs() <= tol.abs + tol.rel * c.abs()
}

#[track_caller]
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f64], tol: Tol) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let bad: Vec<usize> = (0..gpu.len())
        .filter(|&i| !same(gpu[i] as f64, cpu[i], tol))
        .collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} elements outside {tol:?}; first at {i}: gpu {} cpu {} (worst relative {:e})",
            bad.len(),
            gpu.len(),
            gpu[i],
            cpu[i],
            worst_relative(gpu, cpu)
        );
    }
}

#[track_caller]
pub fn assert_scalar(what: &str, gpu: f32, cpu: f64, tol: Tol) {
    assert!(
        same(gpu as f64, cpu, tol),
        "{what}: gpu {gpu} cpu {cpu} outside {tol:?}"
    );
}

/// Checks a run's loss against its twin: per item (`Reduction::None`) within `items`, else the
/// reduced value within `value`.
#[allow(dead_code)]
#[track_caller]
pub fn assert_loss(
    what: &str,
    loss: &[f32],
    reference: &wgpu_loss::cpu::Reference,
    items: Tol,
    value: Tol,
) {
    match (&reference.per_element, reference.value) {
        (Some(per_item), _) => assert_close(what, loss, per_item, items),
        (None, Some(v)) => assert_scalar(what, loss[0], v, value),
        (None, None) => panic!("{what}: the reference has no loss"),
    }
}

/// [`assert_loss`], and the gradient against the reference's within `grad` (named
/// "`what` grad").
#[allow(dead_code)]
#[track_caller]
pub fn assert_loss_and_grad(
    what: &str,
    (loss, grad): (&[f32], &[f32]),
    reference: &wgpu_loss::cpu::Reference,
    (items, value, grad_tol): (Tol, Tol, Tol),
) {
    assert_loss(what, loss, reference, items, value);
    assert_close(&format!("{what} grad"), grad, &reference.grad, grad_tol);
}

/// A family's buffers made from the roles the tensor losses share: whole buffers, the optional
/// ones where given.
pub trait Roles<'a>: Sized {
    fn roles(
        input: &'a wgpu::Buffer,
        target: &'a wgpu::Buffer,
        weight: Option<&'a wgpu::Buffer>,
        pos_weight: Option<&'a wgpu::Buffer>,
        loss: Option<&'a wgpu::Buffer>,
        grad: Option<&'a wgpu::Buffer>,
    ) -> Self;
}

/// [`Roles`] for the families' buffers structs: `pos_weight` for those that take one, `none` for
/// those that must not be given one.
macro_rules! roles {
    (@pos_weight pos_weight, $b:ident, $given:ident) => {
        $b.pos_weight = $given.map(wgpu::Buffer::as_entire_buffer_binding)
    };
    (@pos_weight none, $b:ident, $given:ident) => {
        assert!($given.is_none(), "{:?} has no pos_weight", $b)
    };
    ($($ty:ident: $pos_weight:ident),*) => {$(
        impl<'a> Roles<'a> for $ty<'a> {
            fn roles(
                input: &'a wgpu::Buffer,
                target: &'a wgpu::Buffer,
                weight: Option<&'a wgpu::Buffer>,
                pos_weight: Option<&'a wgpu::Buffer>,
                loss: Option<&'a wgpu::Buffer>,
                grad: Option<&'a wgpu::Buffer>,
            ) -> Self {
                #[allow(unused_mut)] // assigned for the families with a pos_weight only
                let mut b = $ty {
                    weight: weight.map(wgpu::Buffer::as_entire_buffer_binding),
                    loss: loss.map(wgpu::Buffer::as_entire_buffer_binding),
                    grad: grad.map(wgpu::Buffer::as_entire_buffer_binding),
                    ..$ty::new(input, target)
                };
                roles!(@pos_weight $pos_weight, b, pos_weight);
                b
            }
        }
    )*};
}
roles!(PointwiseBuffers: pos_weight, CrossEntropyBuffers: none, NllBuffers: none);

/// The buffers of one run by role, as the family of the plan they go to takes them.
#[allow(dead_code)]
pub fn buffers<'a, B: Roles<'a>>(
    input: &'a wgpu::Buffer,
    target: &'a wgpu::Buffer,
    weight: Option<&'a wgpu::Buffer>,
    pos_weight: Option<&'a wgpu::Buffer>,
    loss: Option<&'a wgpu::Buffer>,
    grad: Option<&'a wgpu::Buffer>,
) -> B {
    B::roles(input, target, weight, pos_weight, loss, grad)
}

/// Binding and recording (or running) in one step, for tests that use each binding once.
#[allow(dead_code)]
pub trait PlanExt<D: LossDesc> {
    /// `bind`, then `record`.
    fn record_buffers(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &D::Buffers<'_>,
    ) -> wgpu_loss::Result<()>;
    /// `bind`, then `run`.
    fn run_buffers(&self, buffers: &D::Buffers<'_>) -> wgpu_loss::Result<()>;
}

impl<D: LossDesc> PlanExt<D> for Plan<D> {
    fn record_buffers(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: &D::Buffers<'_>,
    ) -> wgpu_loss::Result<()> {
        let bindings = self.bind(buffers)?;
        self.record(encoder, &bindings)
    }

    fn run_buffers(&self, buffers: &D::Buffers<'_>) -> wgpu_loss::Result<()> {
        self.run(&self.bind(buffers)?)
    }
}

/// Cross-entropy's options as the tests vary them (PyTorch's defaults), made into a
/// description of a shape with [`CeOptions::desc`].
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CeOptions {
    pub reduction: Reduction,
    pub ignore_index: i64,
    pub label_smoothing: f32,
    pub z_loss: f32,
    pub softcap: Option<f32>,
}

impl Default for CeOptions {
    fn default() -> Self {
        CeOptions {
            reduction: Reduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
        }
    }
}

#[allow(dead_code)]
impl CeOptions {
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The description of `rows` x `classes` with these options.
    pub fn desc(&self, rows: usize, classes: usize) -> CrossEntropyDesc {
        let mut desc = CrossEntropyDesc::new(rows, classes)
            .reduction(self.reduction)
            .ignore_index(self.ignore_index)
            .label_smoothing(self.label_smoothing)
            .z_loss(self.z_loss);
        desc.softcap = self.softcap;
        desc
    }
}

/// Cross-entropy on host data through [`Context::loss`], in the argument order of the old
/// convenience call: class targets with an optional class weight.
#[allow(dead_code)]
pub fn ce_classes(
    ctx: &Context,
    logits: &[f32],
    targets: &[i64],
    classes: usize,
    weight: Option<&[f32]>,
    options: &CeOptions,
    outputs: Outputs,
) -> wgpu_loss::Result<wgpu_loss::LossOutput> {
    let (desc, inputs) = ce_case(logits, targets, classes, weight, options, outputs);
    ctx.loss(&desc, &inputs)
}

/// The description and inputs of a class-target cross-entropy on host data. Rows are
/// `targets.len()`.
#[allow(dead_code)]
pub fn ce_case<'a>(
    logits: &'a [f32],
    targets: &'a [i64],
    classes: usize,
    weight: Option<&'a [f32]>,
    options: &CeOptions,
    outputs: Outputs,
) -> (CrossEntropyDesc, Inputs<'a>) {
    let mut desc = options.desc(targets.len(), classes).outputs(outputs);
    let mut inputs = Inputs::classes(logits, targets);
    if let Some(w) = weight {
        desc = desc.weight(w.len());
        inputs = inputs.weight(w);
    }
    (desc, inputs)
}

/// The same with probability targets `[N, C]` (rows are `logits.len() / classes`).
#[allow(dead_code)]
pub fn ce_soft_case<'a>(
    logits: &'a [f32],
    targets: &'a [f32],
    classes: usize,
    weight: Option<&'a [f32]>,
    options: &CeOptions,
    outputs: Outputs,
) -> (CrossEntropyDesc, Inputs<'a>) {
    let rows = logits.len() / classes.max(1);
    let mut desc = options
        .desc(rows, classes)
        .targets(Targets::Probabilities)
        .outputs(outputs);
    let mut inputs = Inputs::new(logits, targets);
    if let Some(w) = weight {
        desc = desc.weight(w.len());
        inputs = inputs.weight(w);
    }
    (desc, inputs)
}

/// [`ce_classes`] with probability targets.
#[allow(dead_code)]
pub fn ce_soft(
    ctx: &Context,
    logits: &[f32],
    targets: &[f32],
    classes: usize,
    weight: Option<&[f32]>,
    options: &CeOptions,
    outputs: Outputs,
) -> wgpu_loss::Result<wgpu_loss::LossOutput> {
    if classes == 0 {
        return Err(wgpu_loss::Error::Empty("classes (C)"));
    }
    let (desc, inputs) = ce_soft_case(logits, targets, classes, weight, options, outputs);
    ctx.loss(&desc, &inputs)
}

/// The classic cross-entropy on probabilities `[N, C]` through [`Context::loss`].
#[allow(dead_code)]
pub fn ce_probs(
    ctx: &Context,
    probs: &[f32],
    targets: &[f32],
    classes: usize,
    eps: f32,
    reduction: Reduction,
    outputs: Outputs,
) -> wgpu_loss::Result<wgpu_loss::LossOutput> {
    if classes == 0 {
        return Err(wgpu_loss::Error::Empty("classes (C)"));
    }
    let desc = ClassicCrossEntropyDesc::new(probs.len() / classes, classes)
        .eps(eps)
        .reduction(reduction)
        .outputs(outputs);
    ctx.loss(&desc, &Inputs::new(probs, targets))
}

/// The CPU twins of the three, through [`wgpu_loss::cpu::reference`].
#[allow(dead_code)]
pub fn cpu_ce(
    logits: &[f32],
    targets: &[i64],
    classes: usize,
    weight: Option<&[f32]>,
    options: &CeOptions,
) -> wgpu_loss::Result<wgpu_loss::cpu::Reference> {
    let (desc, inputs) = ce_case(logits, targets, classes, weight, options, Outputs::BOTH);
    wgpu_loss::cpu::reference(&desc, &inputs)
}

#[allow(dead_code)]
pub fn cpu_ce_soft(
    logits: &[f32],
    targets: &[f32],
    classes: usize,
    weight: Option<&[f32]>,
    options: &CeOptions,
) -> wgpu_loss::Result<wgpu_loss::cpu::Reference> {
    let (desc, inputs) = ce_soft_case(logits, targets, classes, weight, options, Outputs::BOTH);
    wgpu_loss::cpu::reference(&desc, &inputs)
}

#[allow(dead_code)]
pub fn cpu_ce_probs(
    probs: &[f32],
    targets: &[f32],
    classes: usize,
    eps: f32,
    reduction: Reduction,
) -> wgpu_loss::Result<wgpu_loss::cpu::Reference> {
    let desc = ClassicCrossEntropyDesc::new(probs.len() / classes.max(1), classes)
        .eps(eps)
        .reduction(reduction);
    wgpu_loss::cpu::reference(&desc, &Inputs::new(probs, targets))
}

/// Negative log-likelihood's options as the tests vary them (PyTorch's defaults).
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NllOptions {
    pub reduction: Reduction,
    pub ignore_index: i64,
}

impl Default for NllOptions {
    fn default() -> Self {
        NllOptions {
            reduction: Reduction::Mean,
            ignore_index: -100,
        }
    }
}

/// Negative log-likelihood on host data through [`Context::loss`].
#[allow(dead_code)]
pub fn nll_classes(
    ctx: &Context,
    log_probs: &[f32],
    targets: &[i64],
    classes: usize,
    weight: Option<&[f32]>,
    options: &NllOptions,
    outputs: Outputs,
) -> wgpu_loss::Result<wgpu_loss::LossOutput> {
    let mut desc = NllDesc::new(targets.len(), classes)
        .reduction(options.reduction)
        .outputs(outputs)
        .ignore_index(options.ignore_index);
    let mut inputs = Inputs::classes(log_probs, targets);
    if let Some(w) = weight {
        desc = desc.weight(w.len());
        inputs = inputs.weight(w);
    }
    ctx.loss(&desc, &inputs)
}

/// Host data of a pointwise loss, by role.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PwInputs<'a> {
    pub pred: &'a [f32],
    pub target: &'a [f32],
    pub weight: Option<&'a [f32]>,
    pub pos_weight: Option<&'a [f32]>,
}

/// A pointwise loss on host data through [`Context::loss`] (`batch` for batchmean).
#[allow(dead_code)]
pub fn pointwise_loss(
    ctx: &Context,
    loss: Pointwise,
    i: &PwInputs<'_>,
    reduction: Reduction,
    batch: Option<usize>,
    outputs: Outputs,
) -> wgpu_loss::Result<wgpu_loss::LossOutput> {
    let mut desc = PointwiseDesc::new(loss, i.pred.len())
        .reduction(reduction)
        .outputs(outputs);
    desc.batch = batch;
    let mut inputs = Inputs::new(i.pred, i.target);
    if let Some(w) = i.weight {
        desc = desc.weight(w.len());
        inputs = inputs.weight(w);
    }
    if let Some(w) = i.pos_weight {
        desc = desc.pos_weight(w.len());
        inputs = inputs.pos_weight(w);
    }
    ctx.loss(&desc, &inputs)
}

/// Mean squared error on host data.
#[allow(dead_code)]
pub fn mse(
    ctx: &Context,
    pred: &[f32],
    target: &[f32],
    reduction: Reduction,
    outputs: Outputs,
) -> wgpu_loss::Result<wgpu_loss::LossOutput> {
    let i = PwInputs {
        pred,
        target,
        ..Default::default()
    };
    pointwise_loss(ctx, Pointwise::Mse, &i, reduction, None, outputs)
}

/// Declares (or not) a class weight of C entries, as the old `weighted(bool)` did.
#[allow(dead_code)]
pub trait Weighted {
    fn weighted(self, on: bool) -> Self;
}

impl Weighted for CrossEntropyDesc {
    fn weighted(self, on: bool) -> Self {
        let classes = self.classes;
        if on { self.weight(classes) } else { self }
    }
}

/// Host data in one dtype: `v` rounded to it.
#[allow(dead_code)]
pub enum Data {
    F32(Vec<f32>),
    F16(Vec<wgpu_loss::f16>),
    BF16(Vec<wgpu_loss::bf16>),
}

#[allow(dead_code)]
impl Data {
    /// `v` rounded to `dtype`.
    pub fn new(v: &[f32], dtype: wgpu_loss::DType) -> Self {
        use wgpu_loss::{DType, bf16, f16};
        match dtype {
            DType::F32 => Data::F32(v.to_vec()),
            DType::F16 => Data::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => Data::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }

    /// The values, as the GPU reads them.
    pub fn values(&self) -> wgpu_loss::Values<'_> {
        match self {
            Data::F32(v) => v.into(),
            Data::F16(v) => v.into(),
            Data::BF16(v) => v.into(),
        }
    }
}
