//! Benchmark support shared by `wgpu-loss bench` and the criterion benches in `benches/`: the
//! cases, their inputs on the GPU, GPU timing (timestamp queries where the adapter has them,
//! wall clock around submit-and-wait otherwise), and the two ceilings every figure is held
//! against, measured on the same adapter in the same run:
//!
//! - `copy_buffer_to_buffer` moving the same number of bytes: the memory system's limit;
//! - a trivial WGSL kernel with the same access pattern (`shaders/ceiling.wgsl`: a plain sum
//!   for a forward pass, a plain copy for forward + gradient): the compute path's limit.

use std::time::Instant;

use wgpu::util::DeviceExt;

mod image;
mod linear;

pub use image::{ImageBench, ImageShape, UnfusedParams};
pub use linear::{LinearBench, LinearResults, LinearShape, MatmulParams};

/// The harness's own kernels: the ceilings, the unfused SSIM and the matrix products.
pub const KERNELS: [&Kernel; 3] = [&CEILING, &linear::MATMUL, &image::SSIM_UNFUSED];

use wgpu_loss::kernel::PipelineKey;
use wgpu_loss::kernel::{Kernel, fixed_layout, params};
use wgpu_loss::kernel::{WG, partial_group};
use wgpu_loss::{
    ClassicCrossEntropyDesc, Context, CrossEntropyDesc, DType, Error, Inputs, LossOutput, Outputs,
    Plan, PointwiseDesc, Result, Values, cpu,
    cross_entropy::CrossEntropyBuffers,
    plan::Bindings,
    pointwise::{Pointwise, PointwiseBuffers},
};

/// Inputs of a case are copied into several buffer sets, used in turn, until together they
/// exceed this many bytes: a small case then cannot run from a cache its last repetition warmed.
const ROTATION_BYTES: u64 = 256 << 20;
/// The most buffer sets a case rotates through.
const MAX_SETS: usize = 8;
/// Timed repetitions per submission (two timestamp queries each).
const QUERY_BATCH: usize = 512;

/// Which loss a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// MSE over `rows` elements.
    Mse,
    /// Cross-entropy from logits `[rows, classes]` with class targets.
    CrossEntropy,
    /// The classic cross-entropy on probabilities `[rows, classes]`.
    CrossEntropyProbs,
}

impl Family {
    /// The CLI's name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Mse => "mse",
            Family::CrossEntropy => "cross-entropy",
            Family::CrossEntropyProbs => "cross-entropy-probs",
        }
    }
}

/// One benchmark case: a loss, a shape, forward or forward + gradient. Mean reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Case {
    /// The loss.
    pub family: Family,
    /// Rows (elements, for MSE).
    pub rows: usize,
    /// Classes (1 for MSE).
    pub classes: usize,
    /// Forward + gradient (else forward only).
    pub grad: bool,
    /// The dtype of the input, real-valued targets and gradient (f32 unless set).
    pub dtype: DType,
}

impl Case {
    /// MSE over `elements`.
    pub fn mse(elements: usize, grad: bool) -> Self {
        Case {
            family: Family::Mse,
            rows: elements,
            classes: 1,
            grad,
            dtype: DType::F32,
        }
    }

    /// Cross-entropy over `rows` x `classes` logits.
    pub fn cross_entropy(rows: usize, classes: usize, grad: bool) -> Self {
        Case {
            family: Family::CrossEntropy,
            rows,
            classes,
            grad,
            dtype: DType::F32,
        }
    }

    /// The classic cross-entropy on `rows` x `classes` probabilities.
    pub fn cross_entropy_probs(rows: usize, classes: usize, grad: bool) -> Self {
        Case {
            family: Family::CrossEntropyProbs,
            rows,
            classes,
            grad,
            dtype: DType::F32,
        }
    }

    /// The same case in `dtype`.
    pub fn in_dtype(self, dtype: DType) -> Self {
        Case { dtype, ..self }
    }

    /// Elements of the main input.
    pub fn elements(&self) -> usize {
        self.rows * self.classes
    }

    /// The kernel's name: loss, classes, pass, and the dtype when it is not f32.
    pub fn kernel(&self) -> String {
        let pass = if self.grad { "fwd+grad" } else { "fwd" };
        let dtype = match self.dtype {
            DType::F32 => String::new(),
            d => format!(" {d}"),
        };
        match self.family {
            Family::Mse => format!("mse {pass}{dtype}"),
            f => format!("{} C={} {pass}{dtype}", f.name(), self.classes),
        }
    }

    /// The shape, in words.
    pub fn shape(&self) -> String {
        match self.family {
            Family::Mse => format!("[{}]", self.rows),
            _ => format!("[{}, {}]", self.rows, self.classes),
        }
    }

    /// Byte sizes of the inputs that are read once (the main input, the second input) and of
    /// the output written once (the gradient; the 4-byte loss is counted too), at the dtype's
    /// size.
    fn traffic(&self) -> (u64, u64, u64) {
        let e = self.dtype.size() * self.elements() as u64;
        let second = match self.family {
            Family::CrossEntropy => 4 * self.rows as u64,
            _ => e,
        };
        let out = if self.grad { e } else { 0 } + 4;
        (e, second, out)
    }

    /// What the ceilings of this case depend on: the trivial kernel reads the main input, the
    /// second when it is as large, and writes a gradient-sized output or not.
    pub fn ceiling_key(&self) -> (u64, u64, bool) {
        let (a, b, _) = self.traffic();
        (a, if b == a { b } else { 0 }, self.grad)
    }

    /// Bytes moved at the least: every input read once, every output written once.
    pub fn bytes(&self) -> u64 {
        let (a, b, out) = self.traffic();
        a + b + out
    }
}

/// How a time was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GPU timestamp queries around the pass (or the copy).
    Timestamps,
    /// The wall clock around submit-and-wait.
    WallClock,
}

impl Method {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Timestamps => "timestamps",
            Method::WallClock => "wall clock",
        }
    }
}

/// Repeated timings of one thing, in seconds.
#[derive(Clone, Debug)]
pub struct Timing {
    /// One per repetition, sorted.
    pub samples: Vec<f64>,
    /// How they were taken.
    pub method: Method,
}

impl Timing {
    /// Timings from `samples` (seconds, any order) taken by `method`.
    pub fn new(mut samples: Vec<f64>, method: Method) -> Self {
        samples.sort_by(f64::total_cmp);
        Timing { samples, method }
    }

    /// NaN when there are no samples.
    fn quantile(&self, q: f64) -> f64 {
        let last = self.samples.len().saturating_sub(1);
        let i = (last as f64 * q).round() as usize;
        self.samples.get(i).copied().unwrap_or(f64::NAN)
    }

    /// The median.
    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// The fastest repetition.
    pub fn min(&self) -> f64 {
        self.quantile(0.0)
    }

    /// The slowest repetition.
    pub fn max(&self) -> f64 {
        self.quantile(1.0)
    }

    /// Half the distance between the 10th and 90th percentiles, relative to the median.
    pub fn spread(&self) -> f64 {
        (self.quantile(0.9) - self.quantile(0.1)) / 2.0 / self.median()
    }

    /// `bytes` over the median time, in GB/s.
    pub fn gbps(&self, bytes: u64) -> f64 {
        bytes as f64 / self.median() / 1e9
    }
}

/// The buffers of one input set, bound to the case's plan once.
struct Set {
    loss: wgpu::Buffer,
    grad: Option<wgpu::Buffer>,
    bindings: Bindings,
}

/// The plan of a case.
enum Runner {
    Pointwise(Plan<PointwiseDesc>),
    CrossEntropy(Plan<CrossEntropyDesc>),
    Classic(Plan<ClassicCrossEntropyDesc>),
}

impl Runner {
    /// Binds the case's two inputs, its loss and its gradient (when written).
    fn bind(
        &self,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        loss: &wgpu::Buffer,
        grad: Option<&wgpu::Buffer>,
    ) -> Result<Bindings> {
        let pointwise = || {
            let buffers = PointwiseBuffers::new(a, b).loss(loss);
            match grad {
                Some(g) => buffers.grad(g),
                None => buffers,
            }
        };
        match self {
            Runner::Pointwise(p) => p.bind(&pointwise()),
            Runner::Classic(p) => p.bind(&pointwise()),
            Runner::CrossEntropy(p) => {
                let buffers = CrossEntropyBuffers::new(a, b).loss(loss);
                p.bind(&match grad {
                    Some(g) => buffers.grad(g),
                    None => buffers,
                })
            }
        }
    }

    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bindings: &Bindings,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()> {
        match self {
            Runner::Pointwise(p) => p.record_timed(encoder, bindings, timestamps),
            Runner::CrossEntropy(p) => p.record_timed(encoder, bindings, timestamps),
            Runner::Classic(p) => p.record_timed(encoder, bindings, timestamps),
        }
    }

    fn reference(&self, inputs: &Inputs<'_>) -> Result<cpu::Reference> {
        match self {
            Runner::Pointwise(p) => cpu::reference(p.desc(), inputs),
            Runner::CrossEntropy(p) => cpu::reference(p.desc(), inputs),
            Runner::Classic(p) => cpu::reference(p.desc(), inputs),
        }
    }

    /// The convenience call on host data: what [`Context::loss`] costs a caller.
    fn call(&self, ctx: &Context, inputs: &Inputs<'_>) -> Result<LossOutput> {
        match self {
            Runner::Pointwise(p) => ctx.loss(p.desc(), inputs),
            Runner::CrossEntropy(p) => ctx.loss(p.desc(), inputs),
            Runner::Classic(p) => ctx.loss(p.desc(), inputs),
        }
    }

    /// [`Runner::call`] with the gradient written into `grad`.
    fn call_into(
        &self,
        ctx: &Context,
        inputs: &Inputs<'_>,
        grad: wgpu_loss::ValuesMut<'_>,
    ) -> Result<LossOutput> {
        match self {
            Runner::Pointwise(p) => ctx.loss_into(p.desc(), inputs, grad),
            Runner::CrossEntropy(p) => ctx.loss_into(p.desc(), inputs, grad),
            Runner::Classic(p) => ctx.loss_into(p.desc(), inputs, grad),
        }
    }
}

/// What a caller of the convenience API waits for on a case, in parts, by the wall clock.
#[derive(Clone, Debug)]
pub struct EndToEnd {
    /// [`Context::loss`] on host slices: upload, record, submit, wait, read back (the plan is
    /// cached by then, as a caller's repeated calls find it).
    pub call: Timing,
    /// [`Context::loss_into`]: the call with the gradient written into a slice the caller
    /// keeps (cases with a gradient).
    pub call_into: Option<Timing>,
    /// Uploading the case's inputs as the call does, until the device is idle.
    pub upload: Timing,
    /// Reading the case's outputs (the loss; the gradient with it) back to the host.
    pub read_back: Timing,
    /// A host `memcpy` of the case's bytes (inputs read once, outputs written once).
    pub memcpy: Timing,
}

/// Host copies of the inputs, for the CPU reference: `a` and `b` hold values of the case's
/// dtype, and `a16`, `b16` their bits when it is a 16-bit one.
struct Host {
    a: Vec<f32>,
    b: Vec<f32>,
    a16: Vec<u16>,
    b16: Vec<u16>,
    targets: Vec<i64>,
    dtype: DType,
}

/// Rounds `v` to `dtype`; returns the 16-bit values' bits (none for f32).
fn narrow(v: &mut [f32], dtype: DType) -> Vec<u16> {
    match dtype {
        DType::F32 => Vec::new(),
        DType::F16 => v
            .iter_mut()
            .map(|x| {
                let h = wgpu_loss::f16::from_f32(*x);
                *x = h.to_f32();
                h.to_bits()
            })
            .collect(),
        DType::BF16 => v
            .iter_mut()
            .map(|x| {
                let h = wgpu_loss::bf16::from_f32(*x);
                *x = h.to_f32();
                h.to_bits()
            })
            .collect(),
    }
}

/// Host values as the dtype's slice: `f32s`, or the 16-bit `bits` of them.
fn values<'a>(f32s: &'a [f32], bits: &'a [u16], dtype: DType) -> Values<'a> {
    match dtype {
        DType::F32 => Values::F32(f32s),
        DType::F16 => Values::F16(bytemuck::cast_slice(bits)),
        DType::BF16 => Values::BF16(bytemuck::cast_slice(bits)),
    }
}

impl Host {
    /// The main input, in the case's dtype.
    fn first(&self) -> Values<'_> {
        values(&self.a, &self.a16, self.dtype)
    }

    /// The second input as the GPU takes it: the target values, or the class indices narrowed
    /// to i32 (as the convenience call uploads them).
    fn second_bytes(&self, case: &Case) -> std::borrow::Cow<'_, [u8]> {
        match case.family {
            Family::CrossEntropy => self
                .targets
                .iter()
                .flat_map(|&t| (t as i32).to_ne_bytes())
                .collect(),
            _ => values(&self.b, &self.b16, self.dtype).bytes().into(),
        }
    }
}

/// A case made ready on a context: its plan, its input sets on the GPU, and the same inputs on
/// the host for the CPU reference.
pub struct Bench {
    ctx: Context,
    case: Case,
    runner: Runner,
    sets: Vec<Set>,
    host: Host,
}

/// A small xorshift generator: benchmark data needs to be random, not cryptographic.
struct XorShift(u64);

impl XorShift {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Random inputs for `case`: logits or predictions in [-4, 4), class targets, or positive
/// probability-like values.
fn host_inputs(case: &Case, seed: u64) -> Host {
    let mut host = host_f32(case, seed);
    host.a16 = narrow(&mut host.a, case.dtype);
    host.b16 = narrow(&mut host.b, case.dtype);
    host.dtype = case.dtype;
    host
}

fn host_f32(case: &Case, seed: u64) -> Host {
    let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let e = case.elements();
    let (a16, b16, dtype) = (Vec::new(), Vec::new(), DType::F32);
    match case.family {
        Family::Mse => Host {
            a: (0..e).map(|_| rng.unit() * 8.0 - 4.0).collect(),
            b: (0..e).map(|_| rng.unit() * 8.0 - 4.0).collect(),
            a16,
            b16,
            dtype,
            targets: Vec::new(),
        },
        Family::CrossEntropy => Host {
            a: (0..e).map(|_| rng.unit() * 8.0 - 4.0).collect(),
            b: Vec::new(),
            a16,
            b16,
            dtype,
            targets: (0..case.rows)
                .map(|_| ((rng.unit() * case.classes as f32) as i64).min(case.classes as i64 - 1))
                .collect(),
        },
        Family::CrossEntropyProbs => {
            let c = case.classes as f32;
            Host {
                a: (0..e).map(|_| (0.05 + rng.unit()) / c).collect(),
                b: (0..e).map(|_| (0.05 + rng.unit()) / c).collect(),
                a16,
                b16,
                dtype,
                targets: Vec::new(),
            }
        }
    }
}

fn buffer(ctx: &Context, contents: &[u8]) -> wgpu::Buffer {
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wgpu-loss.bench"),
            contents,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}

fn empty(ctx: &Context, bytes: u64) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu-loss.bench"),
        size: bytes.max(16).next_multiple_of(16),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// How many buffer sets a case of `bytes` rotates through.
fn set_count(bytes: u64) -> usize {
    (ROTATION_BYTES / bytes.max(1)).clamp(1, MAX_SETS as u64) as usize
}

impl Bench {
    /// Plans `case` on `ctx` and uploads its inputs (random, from `seed`).
    pub fn new(ctx: &Context, case: Case, seed: u64) -> Result<Self> {
        if case.elements() == 0 {
            return Err(Error::Empty("benchmark case"));
        }
        let outputs = if case.grad {
            Outputs::BOTH
        } else {
            Outputs::LOSS
        };
        let runner = match case.family {
            Family::Mse => Runner::Pointwise(Plan::new(
                ctx,
                &PointwiseDesc::new(Pointwise::Mse, case.rows)
                    .outputs(outputs)
                    .dtype(case.dtype),
            )?),
            Family::CrossEntropy => Runner::CrossEntropy(Plan::new(
                ctx,
                &CrossEntropyDesc::new(case.rows, case.classes)
                    .outputs(outputs)
                    .dtype(case.dtype),
            )?),
            Family::CrossEntropyProbs => Runner::Classic(Plan::new(
                ctx,
                &ClassicCrossEntropyDesc::new(case.rows, case.classes)
                    .outputs(outputs)
                    .dtype(case.dtype),
            )?),
        };
        let host = host_inputs(&case, seed);
        let _guard = ctx.lock();
        let b_bytes = host.second_bytes(&case);
        let sets = (0..set_count(case.bytes()))
            .map(|_| {
                let a = buffer(ctx, host.first().bytes());
                let b = buffer(ctx, &b_bytes);
                let loss = empty(ctx, 4);
                let grad = case
                    .grad
                    .then(|| empty(ctx, case.dtype.bytes(case.elements() as u64)));
                let bindings = runner.bind(&a, &b, &loss, grad.as_ref())?;
                Ok(Set {
                    loss,
                    grad,
                    bindings,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Bench {
            ctx: ctx.clone(),
            case,
            runner,
            sets,
            host,
        })
    }

    /// The case.
    pub fn case(&self) -> &Case {
        &self.case
    }

    /// How many input sets the repetitions rotate through.
    pub fn sets(&self) -> usize {
        self.sets.len()
    }

    /// Records one run on input set `set % sets()`.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        set: usize,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()> {
        let s = &self.sets[set % self.sets.len()];
        self.runner.record(encoder, &s.bindings, timestamps)
    }

    /// Times `reps` runs after `warmup` untimed ones, rotating through the input sets.
    pub fn time(&self, warmup: usize, reps: usize) -> Result<Timing> {
        time_passes(&self.ctx, warmup, reps, |encoder, i, ts| {
            self.record(encoder, i, ts)
        })
    }

    /// The loss the GPU computed on the first input set, and the f64 reference's, so a
    /// benchmark can show that what it timed is right.
    pub fn verify(&self) -> Result<(f32, f64)> {
        let _guard = self.ctx.lock();
        let mut encoder = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        self.record(&mut encoder, 0, None)?;
        self.ctx.queue().submit([encoder.finish()]);
        let gpu = read_f32(&self.ctx, &self.sets[0].loss)?;
        let reference = self.cpu_reference()?.value.unwrap_or(f64::NAN);
        Ok((gpu, reference))
    }

    /// The case's inputs on the host (the same data as on the GPU).
    pub fn inputs(&self) -> Inputs<'_> {
        let h = &self.host;
        match self.case.family {
            Family::CrossEntropy => Inputs::classes(h.first(), &h.targets),
            _ => Inputs::new(h.first(), values(&h.b, &h.b16, self.case.dtype)),
        }
    }

    fn cpu_reference(&self) -> Result<cpu::Reference> {
        self.runner.reference(&self.inputs())
    }

    /// Times what a caller of the convenience API waits for, `reps` times after `warmup`
    /// untimed calls, by the wall clock: the whole call, and its upload (as the call makes it,
    /// [`wgpu_loss::kernel::upload_reused`]) and read-back alone;
    /// and a host memcpy of the case's bytes, to hold them against.
    pub fn end_to_end(&self, warmup: usize, reps: usize) -> Result<EndToEnd> {
        check_reps(reps)?;
        let inputs = self.inputs();
        let call = wall_clock(warmup, reps, || {
            self.runner.call(&self.ctx, &inputs).map(drop)
        })?;
        let call_into = if self.case.grad {
            let n = self.case.elements();
            let (mut g32, mut g16, mut gb16) = (Vec::new(), Vec::new(), Vec::new());
            let timing = wall_clock(warmup, reps, || {
                let grad = match self.case.dtype {
                    DType::F32 => {
                        g32.resize(n, 0.0f32);
                        wgpu_loss::ValuesMut::from(&mut g32)
                    }
                    DType::F16 => {
                        g16.resize(n, wgpu_loss::f16::ZERO);
                        wgpu_loss::ValuesMut::from(&mut g16)
                    }
                    DType::BF16 => {
                        gb16.resize(n, wgpu_loss::bf16::ZERO);
                        wgpu_loss::ValuesMut::from(&mut gb16)
                    }
                };
                self.runner.call_into(&self.ctx, &inputs, grad).map(drop)
            })?;
            Some(timing)
        } else {
            None
        };
        let (a, b) = (
            self.host.first().bytes(),
            self.host.second_bytes(&self.case),
        );
        // The call's own upload: into the context's reused buffers through its staging buffer.
        let upload = wall_clock(warmup, reps, || {
            wgpu_loss::kernel::upload_reused(&self.ctx, &[a, &b])
        })?;
        let set = &self.sets[0];
        let read_back = wall_clock(warmup, reps, || {
            wgpu_loss::kernel::read_back(&self.ctx, &set.loss, 4)?;
            if let Some(g) = &set.grad {
                let bytes = self.case.dtype.bytes(self.case.elements() as u64);
                wgpu_loss::kernel::read_back(&self.ctx, g, bytes)?;
            }
            Ok(())
        })?;
        let src = vec![1u8; self.case.bytes() as usize];
        let mut dst = vec![0u8; src.len()];
        let memcpy = wall_clock(warmup, reps, || {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            Ok(())
        })?;
        Ok(EndToEnd {
            call,
            call_into,
            upload,
            read_back,
            memcpy,
        })
    }

    /// Seconds the CPU reference takes on the same inputs (the fastest of up to three runs,
    /// fewer when one run is long).
    pub fn cpu_seconds(&self) -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            let _ = std::hint::black_box(self.cpu_reference());
            best = best.min(start.elapsed().as_secs_f64());
            if best > 0.2 {
                break;
            }
        }
        best
    }

    /// The ceilings for this case, timed like the case itself.
    pub fn ceilings(&self, warmup: usize, reps: usize) -> Result<Ceilings> {
        ceilings(&self.ctx, &self.case, warmup, reps)
    }
}

fn read_f32(ctx: &Context, buffer: &wgpu::Buffer) -> Result<f32> {
    let bytes = wgpu_loss::kernel::read_back(ctx, buffer, 4)?;
    Ok(f32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Times `reps` recordings (after `warmup`): with timestamp queries around each one's pass when
/// the device has them (all repetitions in one submission), else the wall clock around each
/// submit-and-wait. `record(encoder, repetition, timestamps)` must put `timestamps` on its pass.
fn time_passes(
    ctx: &Context,
    warmup: usize,
    reps: usize,
    record: impl Fn(
        &mut wgpu::CommandEncoder,
        usize,
        Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()>,
) -> Result<Timing> {
    time_recorded(ctx, warmup, reps, ctx.has_timestamps(), |e, i, q| {
        record(e, i, q.map(|(q, j)| q.writes(j)))
    })
}

/// Times `reps` recordings (after `warmup`): with `timestamps`, all repetitions in submissions
/// of at most QUERY_BATCH, `record(encoder, repetition, Some((queries, j)))` writing queries
/// 2j and 2j + 1 around its work; else the wall clock around each submit-and-wait.
fn time_recorded(
    ctx: &Context,
    warmup: usize,
    reps: usize,
    timestamps: bool,
    record: impl Fn(&mut wgpu::CommandEncoder, usize, Option<(&Queries, usize)>) -> Result<()>,
) -> Result<Timing> {
    check_reps(reps)?;
    let _guard = ctx.lock();
    for i in 0..warmup {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        record(&mut encoder, i, None)?;
        ctx.queue().submit([encoder.finish()]);
    }
    wait(ctx)?;
    if timestamps {
        // At most QUERY_BATCH repetitions a submission (query sets are bounded).
        let mut samples = Vec::with_capacity(reps);
        let mut done = 0;
        while done < reps {
            let batch = (reps - done).min(QUERY_BATCH);
            let queries = Queries::new(ctx, batch);
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            for i in 0..batch {
                record(&mut encoder, warmup + done + i, Some((&queries, i)))?;
            }
            queries.resolve(&mut encoder);
            ctx.queue().submit([encoder.finish()]);
            samples.extend(queries.read(ctx)?);
            done += batch;
        }
        return Ok(Timing::new(samples, Method::Timestamps));
    }
    let mut samples = Vec::with_capacity(reps);
    for i in 0..reps {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        record(&mut encoder, warmup + i, None)?;
        let start = Instant::now();
        ctx.queue().submit([encoder.finish()]);
        wait(ctx)?;
        samples.push(start.elapsed().as_secs_f64());
    }
    Ok(Timing::new(samples, Method::WallClock))
}

/// Times `reps` runs of `f` by the wall clock, after `warmup` untimed ones.
fn wall_clock(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64());
    }
    Ok(Timing::new(samples, Method::WallClock))
}

/// A timing needs at least one repetition.
fn check_reps(reps: usize) -> Result<()> {
    if reps == 0 {
        return Err(Error::option("reps", "at least one repetition is needed"));
    }
    Ok(())
}

fn wait(ctx: &Context) -> Result<()> {
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map(|_| ())
        .map_err(|e| Error::Readback(e.to_string()))
}

/// A timestamp query set of two queries per repetition and the buffers to read it back.
struct Queries {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    count: u32,
}

impl Queries {
    fn new(ctx: &Context, reps: usize) -> Self {
        let count = 2 * reps as u32;
        let bytes = 8 * count as u64;
        Queries {
            set: ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("wgpu-loss.bench"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-loss.bench.resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            staging: ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-loss.bench.timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            count,
        }
    }

    fn writes(&self, i: usize) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(2 * i as u32),
            end_of_pass_write_index: Some(2 * i as u32 + 1),
        }
    }

    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.set, 0..self.count, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, 8 * self.count as u64);
    }

    fn read(&self, ctx: &Context) -> Result<Vec<f64>> {
        let bytes = wgpu_loss::kernel::map_read(ctx, &self.staging)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = ctx.queue().get_timestamp_period() as f64 * 1e-9;
        Ok(ticks
            .chunks_exact(2)
            .map(|t| t[1].saturating_sub(t[0]) as f64 * period)
            .collect())
    }
}

/// The two ceilings of a case, on the same adapter.
#[derive(Clone, Debug)]
pub struct Ceilings {
    /// `copy_buffer_to_buffer` of half the case's bytes (so that it reads and writes as many
    /// bytes as the case moves).
    pub copy: Timing,
    /// The trivial kernel with the case's access pattern (its fastest tiling).
    pub trivial: Timing,
    /// Which trivial kernel: "sum" or "copy".
    pub trivial_kind: &'static str,
    /// The trivial kernel plus one exp per element: not a ceiling, but the least arithmetic a
    /// softmax (or the classic form's log) needs.
    pub with_exp: Timing,
}

/// `shaders/ceiling.wgsl`: the trivial kernels `bench` measures as ceilings. Bindings: a, b, c.
pub static CEILING: Kernel = Kernel::new("ceiling.wgsl", include_str!("../shaders/ceiling.wgsl"))
    .params(CeilingParams::INFO)
    .layout(fixed_layout!(U, R, R, W));

params! {
    /// The parameters of ceiling.wgsl.
    CeilingParams {
        vecs: u32,
        wg_x: u32,
        _pad0: u32,
        _pad1: u32,
    }
}
/// vec4s per invocation of the trivial kernels: the ceiling is the fastest of these.
const CEILING_K: [u32; 3] = [4, 16, 32];

/// Measures the ceilings for `case`: a buffer copy moving as many bytes, and the trivial kernel
/// of its access pattern (reading the case's inputs, writing its output).
pub fn ceilings(ctx: &Context, case: &Case, warmup: usize, reps: usize) -> Result<Ceilings> {
    check_reps(reps)?;
    let _guard = ctx.lock();
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let oom = ctx
        .device()
        .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let result = measure_ceilings(ctx, case, warmup, reps);
    let oom = pollster::block_on(oom.pop());
    let validation = pollster::block_on(scope.pop());
    match oom.or(validation) {
        Some(e) => Err(Error::from_wgpu(e)),
        None => result,
    }
}

fn measure_ceilings(ctx: &Context, case: &Case, warmup: usize, reps: usize) -> Result<Ceilings> {
    let (a_bytes, b_bytes, _) = case.traffic();
    let total = case.bytes();
    let sets = set_count(total);
    let device = ctx.device();

    // copy_buffer_to_buffer: half the traffic copied reads and writes all of it.
    let copy_bytes = (total / 2).next_multiple_of(4);
    let pairs: Vec<(wgpu::Buffer, wgpu::Buffer)> = (0..sets)
        .map(|_| (empty(ctx, copy_bytes), empty(ctx, copy_bytes)))
        .collect();
    let copy = time_copies(ctx, warmup, reps, &pairs, copy_bytes)?;

    // The trivial kernel reads inputs of the case's sizes; `b` when the second input is a full
    // array too (MSE, probabilities), otherwise the small class targets are left out.
    let two = b_bytes == a_bytes;
    let vecs = (a_bytes / 16) as u32;
    let grad = case.grad;
    let entry = if grad { "copy" } else { "sum" };
    let most_workgroups = (vecs as u64).div_ceil((WG * CEILING_K[0]) as u64);
    let buffers: Vec<[wgpu::Buffer; 3]> = (0..sets)
        .map(|_| {
            [
                empty(ctx, a_bytes),
                if two {
                    empty(ctx, a_bytes)
                } else {
                    empty(ctx, 16)
                },
                if grad {
                    empty(ctx, a_bytes)
                } else {
                    empty(ctx, 16 * most_workgroups * WG as u64)
                },
            ]
        })
        .collect();
    let mut best = [None::<Timing>, None::<Timing>];
    for (e, with_exp) in [false, true].into_iter().enumerate() {
        for k in CEILING_K {
            let key = PipelineKey::new(&CEILING, entry)
                .constant("WG", WG)
                .constant("SEG", WG)
                .constant("K", k)
                .constant("LANES", ctx.tuning().lanes)
                .constant("PG", partial_group(ctx, 1))
                .constant("TWO", two as u32)
                .constant("EXP", with_exp as u32);
            let pipeline = pollster::block_on(ctx.pipeline(&key))?;
            let workgroups = (vecs as u64).div_ceil((WG * k) as u64);
            let per_dim = ctx.limits().max_compute_workgroups_per_dimension as u64;
            let x = workgroups.clamp(1, per_dim);
            let y = workgroups.div_ceil(x);
            let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgpu-loss.bench.ceiling"),
                contents: bytemuck::bytes_of(&CeilingParams {
                    vecs,
                    wg_x: x as u32,
                    ..Default::default()
                }),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let groups: Vec<wgpu::BindGroup> = buffers
                .iter()
                .map(|[a, b, c]| {
                    let entries: Vec<wgpu::BindGroupEntry> = [&params, a, b, c]
                        .into_iter()
                        .enumerate()
                        .map(|(i, buffer)| wgpu::BindGroupEntry {
                            binding: i as u32,
                            resource: buffer.as_entire_binding(),
                        })
                        .collect();
                    device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("wgpu-loss.bench.ceiling"),
                        layout: &pipeline.layout,
                        entries: &entries,
                    })
                })
                .collect();
            let t = time_passes(ctx, warmup, reps, |encoder, i, ts| {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("wgpu-loss.bench.ceiling"),
                    timestamp_writes: ts,
                });
                pass.set_pipeline(&pipeline.pipeline);
                pass.set_bind_group(0, &groups[i % groups.len()], &[]);
                pass.dispatch_workgroups(x as u32, y as u32, 1);
                Ok(())
            })?;
            if best[e].as_ref().is_none_or(|b| t.median() < b.median()) {
                best[e] = Some(t);
            }
        }
    }
    let [trivial, with_exp] = best.map(|t| t.expect("CEILING_K is not empty"));
    Ok(Ceilings {
        copy,
        trivial,
        trivial_kind: entry,
        with_exp,
    })
}

/// Times `copy_buffer_to_buffer` of `bytes`: with timestamps written by the encoder where the
/// device can, else the wall clock.
fn time_copies(
    ctx: &Context,
    warmup: usize,
    reps: usize,
    pairs: &[(wgpu::Buffer, wgpu::Buffer)],
    bytes: u64,
) -> Result<Timing> {
    let timestamps = ctx.features().contains(
        wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
    );
    time_recorded(ctx, warmup, reps, timestamps, |encoder, i, queries| {
        let (src, dst) = &pairs[i % pairs.len()];
        if let Some((q, j)) = queries {
            encoder.write_timestamp(&q.set, 2 * j as u32);
        }
        encoder.copy_buffer_to_buffer(src, 0, dst, 0, bytes);
        if let Some((q, j)) = queries {
            encoder.write_timestamp(&q.set, 2 * j as u32 + 1);
        }
        Ok(())
    })
}
