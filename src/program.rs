//! A planned loss: the dispatches that compute it, their parameters and scratch memory, recorded
//! into a command encoder against the caller's buffers.
//!
//! Every loss family (`pointwise`, `cross_entropy`, ...) builds a [`Program`] once per shape and
//! options with a [`Builder`]; recording it then only creates bind groups (cached while the same
//! buffers come back) and encodes one compute pass.

use std::mem::ManuallyDrop;
use std::num::NonZeroU64;
use std::sync::Mutex;

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::context::{Binding, DeviceGuard, Pipeline, PipelineKey, lock};
use crate::shader::Shader;
use crate::{Context, Error, Result};

/// Invocations per workgroup of every kernel.
pub(crate) const WG: u32 = 256;
/// Partials one invocation of reduce.wgsl adds (keep in sync with `K` there).
const REDUCE_K: u32 = 16;
/// Rows one invocation of class_targets.wgsl adds (its `K`).
const TARGETS_K: u32 = 16;
/// The status words at the start of the scratch buffer (see shaders/common/scratch.wgsl).
const STATUS_BYTES: u64 = 16;
/// Data words of scratch reserved before the first allocation: data[0] holds a weighted
/// mean's denominator.
const RESERVED_WORDS: u64 = 4;
/// The most workgroups along one dimension of a dispatch (WebGPU's and most adapters' limit).
const MAX_PER_DIM: u64 = 65_535;

/// The bindings of reduce.wgsl.
const REDUCE_LAYOUT: &[Binding] = &[Binding::Uniform, Binding::ReadWrite, Binding::ReadWrite];
/// The bindings of class_targets.wgsl.
const TARGETS_LAYOUT: &[Binding] = &[
    Binding::Uniform,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
];

/// Keep in sync with `Params` in shaders/reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    count: u32,
    in_base: u32,
    out_base: u32,
    wg_x: u32,
    mode: u32,
    mean_den: f32,
    _pad: [u32; 2],
}

/// Keep in sync with `Params` in shaders/class_targets.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TargetParams {
    rows: u32,
    classes: u32,
    ignore_index: i32,
    wg_x: u32,
    partial_base: u32,
    _pad: [u32; 3],
}

/// The element count of a shape, checked: the product must not overflow, and the kernels
/// index elements with a u32. Every size a caller gives goes through this before any product
/// of it is taken; products of dimensions that passed it (times 4 bytes) then fit a u64.
pub(crate) fn elements(what: &'static str, dims: &[usize]) -> Result<u64> {
    let limit = u32::MAX as u64;
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
        .filter(|&n| n <= limit)
        .ok_or_else(|| Error::ShapeTooLarge {
            what,
            dims: dims.to_vec(),
            limit,
        })
}

/// How the last level of a reduction turns the sums (of losses, of weights) into its output.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Finish {
    /// The loss output gets the sum of losses.
    Sum,
    /// The loss output gets the sum of losses divided by a denominator known on the host.
    Mean(f64),
    /// The loss output gets the sum of losses divided by the sum of weights.
    WeightedMean,
    /// scratch.data[0] gets the sum of weights (for a gradient's scale).
    Denominator,
}

impl Finish {
    fn mode(self) -> (u32, f32) {
        match self {
            Finish::Sum => (1, 1.0),
            Finish::Mean(d) => (2, d as f32),
            Finish::WeightedMean => (3, 1.0),
            Finish::Denominator => (4, 1.0),
        }
    }
}

/// How one user buffer is bound.
#[derive(Clone, Copy, Debug)]
pub(crate) enum View {
    /// `array<f32>` (or i32) over the first `bytes`.
    Scalar(u64),
    /// `array<vec4<f32>>` over the first `bytes` rounded down to 16.
    Vec4(u64),
}

/// What one binding of a dispatch is bound to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Res {
    /// A user buffer, by slot.
    User(usize, View),
    /// The plan's scratch buffer.
    Scratch,
    /// A small buffer of the context's that the kernel never touches in this configuration.
    Dummy(bool),
}

/// Whether a program writes a user buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// A user buffer a program takes: its role, the bytes it must hold, and whether it is written.
#[derive(Clone, Debug)]
struct Slot {
    name: &'static str,
    bytes: u64,
    access: Access,
}

struct Dispatch {
    pipeline: Pipeline,
    uniform_offset: u64,
    uniform_size: u64,
    entries: Vec<Res>,
    workgroups: (u32, u32),
}

/// Assembles a [`Program`].
pub(crate) struct Builder<'a> {
    ctx: &'a Context,
    /// Plans compile pipelines and create buffers: the device lock is held throughout.
    _guard: DeviceGuard<'a>,
    slots: Vec<Slot>,
    dispatches: Vec<Dispatch>,
    uniforms: Vec<u8>,
    scratch_words: u64,
}

impl<'a> Builder<'a> {
    pub fn new(ctx: &'a Context) -> Self {
        Builder {
            ctx,
            _guard: ctx.lock(),
            slots: Vec::new(),
            dispatches: Vec::new(),
            uniforms: Vec::new(),
            scratch_words: RESERVED_WORDS,
        }
    }

    /// Declares a user buffer of `bytes` (0: the program does not use this slot), read or
    /// written. Slots are numbered in declaration order.
    pub fn slot(&mut self, name: &'static str, bytes: u64, access: Access) -> Result<usize> {
        let limit = self.ctx.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge {
                what: name,
                bytes,
                limit,
            });
        }
        self.slots.push(Slot {
            name,
            bytes,
            access,
        });
        Ok(self.slots.len() - 1)
    }

    /// Allocates `words` f32 of scratch; returns their index in `scratch.data`.
    pub fn scratch(&mut self, words: u64) -> Result<u32> {
        let base = self.scratch_words;
        self.scratch_words += words;
        let bytes = STATUS_BYTES + 4 * self.scratch_words;
        let limit = self.ctx.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge {
                what: "scratch",
                bytes,
                limit,
            });
        }
        Ok(base as u32)
    }

    /// Splits `workgroups` into a two-dimensional dispatch (x * y >= workgroups); kernels
    /// number their workgroup `wid.x + wid.y * x` and return when it is past the end.
    pub fn fold(&self, workgroups: u64) -> Result<(u32, u32)> {
        let per_dim =
            (self.ctx.limits().max_compute_workgroups_per_dimension as u64).clamp(1, MAX_PER_DIM);
        let x = workgroups.clamp(1, per_dim);
        let y = workgroups.div_ceil(x).max(1);
        if y > per_dim {
            return Err(Error::TooLarge {
                what: "dispatch (workgroups)",
                bytes: workgroups,
                limit: per_dim * per_dim,
            });
        }
        Ok((x as u32, y as u32))
    }

    /// Appends a dispatch. Binding 0 is the uniform `params`; `entries` are bindings 1...
    pub fn dispatch<P: Pod>(
        &mut self,
        key: &PipelineKey,
        params: &P,
        entries: Vec<Res>,
        workgroups: (u32, u32),
    ) -> Result<()> {
        let pipeline = self.ctx.pipeline(key)?;
        let align = self
            .ctx
            .limits()
            .min_uniform_buffer_offset_alignment
            .max(16) as usize;
        let offset = self.uniforms.len().next_multiple_of(align);
        self.uniforms.resize(offset, 0);
        self.uniforms.extend_from_slice(bytemuck::bytes_of(params));
        self.dispatches.push(Dispatch {
            pipeline,
            uniform_offset: offset as u64,
            uniform_size: std::mem::size_of::<P>() as u64,
            entries,
            workgroups,
        });
        Ok(())
    }

    /// Appends the levels of a fixed-order tree that sums `count` (loss, weight) partials at
    /// `scratch.data[base]` and finishes as `finish`, into the user slot `loss` when the finish
    /// writes a loss. No invocation adds more than REDUCE_K partials, whatever `count` is.
    pub fn reduce(
        &mut self,
        mut count: u64,
        mut base: u32,
        finish: Finish,
        loss: Option<usize>,
    ) -> Result<()> {
        let per_wg = (WG * REDUCE_K) as u64;
        let out = match (finish, loss) {
            (Finish::Denominator, _) | (_, None) => Res::Dummy(true),
            (_, Some(slot)) => Res::User(slot, View::Scalar(4)),
        };
        let key = PipelineKey::new(Shader::Reduce, "main", REDUCE_LAYOUT)
            .constant("WG", WG)
            .constant("SEG", WG);
        loop {
            let wgs = count.div_ceil(per_wg);
            let (wg_x, wg_y) = self.fold(wgs)?;
            let (mode, mean_den, out_base) = if wgs == 1 {
                let (mode, den) = finish.mode();
                (mode, den, 0)
            } else {
                (0, 1.0, self.scratch(2 * wgs)?)
            };
            let params = ReduceParams {
                count: count as u32,
                in_base: base,
                out_base,
                wg_x,
                mode,
                mean_den,
                _pad: [0; 2],
            };
            self.dispatch(&key, &params, vec![Res::Scratch, out], (wg_x, wg_y))?;
            if wgs == 1 {
                return Ok(());
            }
            count = wgs;
            base = out_base;
        }
    }

    /// Appends the passes that leave the weighted mean's denominator of class targets (sum of
    /// `w[y_n]` over rows that are neither ignored nor out of range) in scratch.data[0].
    pub fn class_denominator(
        &mut self,
        rows: usize,
        classes: usize,
        ignore_index: i32,
        targets: usize,
        weight: Option<usize>,
    ) -> Result<()> {
        let wgs = (rows as u64).div_ceil((WG * TARGETS_K) as u64);
        let (wg_x, wg_y) = self.fold(wgs)?;
        let partial_base = self.scratch(2 * wgs)?;
        let key = PipelineKey::new(Shader::ClassTargets, "main", TARGETS_LAYOUT)
            .constant("WG", WG)
            .constant("SEG", WG)
            .constant("K", TARGETS_K)
            .constant("HAS_WEIGHT", weight.is_some() as u32);
        let params = TargetParams {
            rows: rows as u32,
            classes: classes as u32,
            ignore_index,
            wg_x,
            partial_base,
            _pad: [0; 3],
        };
        let w = match weight {
            Some(slot) => Res::User(slot, View::Scalar(4 * classes as u64)),
            None => Res::Dummy(false),
        };
        let entries = vec![
            Res::User(targets, View::Scalar(4 * rows as u64)),
            w,
            Res::Scratch,
        ];
        self.dispatch(&key, &params, entries, (wg_x, wg_y))?;
        self.reduce(wgs, partial_base, Finish::Denominator, None)
    }

    pub fn build(self) -> Result<Program> {
        let device = self.ctx.device();
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wgpu-loss.params"),
            contents: &self.uniforms,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let scratch = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-loss.scratch"),
            size: STATUS_BYTES + 4 * self.scratch_words,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::from_wgpu(e));
        }
        Ok(Program {
            ctx: self.ctx.clone(),
            slots: self.slots,
            dispatches: self.dispatches,
            uniforms: ManuallyDrop::new(uniforms),
            scratch: ManuallyDrop::new(scratch),
            bind_groups: Mutex::new(None),
        })
    }
}

/// The buffers a program was last recorded with, and their bind groups.
type Cached = (Vec<Option<wgpu::Buffer>>, Vec<wgpu::BindGroup>);

/// A planned loss, ready to record.
pub(crate) struct Program {
    ctx: Context,
    slots: Vec<Slot>,
    dispatches: Vec<Dispatch>,
    /// Dropped under the device lock (see `Drop`).
    uniforms: ManuallyDrop<wgpu::Buffer>,
    scratch: ManuallyDrop<wgpu::Buffer>,
    bind_groups: Mutex<Option<Cached>>,
}

impl Program {
    pub fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// How many dispatches one run records.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// Checks the user buffers against the slots: present exactly where used, `STORAGE`, and
    /// large enough.
    fn check(&self, user: &[Option<&wgpu::Buffer>]) -> Result<()> {
        for (i, slot) in self.slots.iter().enumerate() {
            let given = user.get(i).copied().flatten();
            match (slot.bytes, given) {
                (0, None) => {}
                (0, Some(_)) => return Err(Error::Binding(slot.name, "not used by this plan")),
                (_, None) => return Err(Error::Binding(slot.name, "needed by this plan")),
                (bytes, Some(b)) => {
                    if !b.usage().contains(wgpu::BufferUsages::STORAGE) {
                        return Err(Error::MissingUsage {
                            binding: slot.name,
                            needed: wgpu::BufferUsages::STORAGE,
                            actual: b.usage(),
                        });
                    }
                    if b.size() < bytes {
                        return Err(Error::BufferTooSmall {
                            binding: slot.name,
                            needed: bytes,
                            actual: b.size(),
                        });
                    }
                }
            }
        }
        // A written range may overlap no other range the program binds: the kernels would read
        // what they are writing (a wrong result), and wgpu rejects a buffer bound both
        // read-only and writable in one dispatch (a panic at the caller's submit).
        let used: Vec<(&Slot, &wgpu::Buffer)> = self
            .slots
            .iter()
            .zip(user)
            .filter_map(|(s, b)| Some((s, (*b)?)).filter(|_| s.bytes > 0))
            .collect();
        for (i, &(a, ba)) in used.iter().enumerate() {
            for &(b, bb) in &used[i + 1..] {
                let written = a.access == Access::Write || b.access == Access::Write;
                // Every range starts at offset 0 of its buffer, so two ranges of the same
                // buffer overlap.
                if written && ba == bb {
                    return Err(Error::Aliased {
                        a: a.name,
                        b: b.name,
                    });
                }
            }
        }
        Ok(())
    }

    fn bind_groups(&self, user: &[Option<&wgpu::Buffer>]) -> Vec<wgpu::BindGroup> {
        let key: Vec<Option<wgpu::Buffer>> = user.iter().map(|b| b.cloned()).collect();
        let mut cache = lock(&self.bind_groups);
        if let Some((k, groups)) = cache.as_ref()
            && *k == key
        {
            return groups.clone();
        }
        let device = self.ctx.device();
        let groups: Vec<wgpu::BindGroup> = self
            .dispatches
            .iter()
            .map(|d| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.uniforms,
                        offset: d.uniform_offset,
                        size: NonZeroU64::new(d.uniform_size),
                    }),
                }];
                for (i, res) in d.entries.iter().enumerate() {
                    let (buffer, size) = match *res {
                        Res::Scratch => (&*self.scratch, None),
                        Res::Dummy(w) => (self.ctx.dummy(w), None),
                        Res::User(slot, View::Scalar(bytes)) => {
                            (user[slot].expect("checked"), NonZeroU64::new(bytes))
                        }
                        Res::User(slot, View::Vec4(bytes)) => (
                            user[slot].expect("checked"),
                            NonZeroU64::new(bytes / 16 * 16),
                        ),
                    };
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset: 0,
                            size,
                        }),
                    });
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgpu-loss"),
                    layout: &d.pipeline.layout,
                    entries: &entries,
                })
            })
            .collect();
        *cache = Some((key, groups.clone()));
        groups
    }

    /// Records the program into `encoder`: one clear of the status words, then one compute pass
    /// holding every dispatch (with `timestamps` around it, if given).
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        user: &[Option<&wgpu::Buffer>],
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()> {
        self.check(user)?;
        let _guard = self.ctx.lock();
        let groups = self.bind_groups(user);
        encoder.clear_buffer(&self.scratch, 0, Some(STATUS_BYTES));
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu-loss"),
            timestamp_writes: timestamps,
        });
        for (d, g) in self.dispatches.iter().zip(&groups) {
            pass.set_pipeline(&d.pipeline.pipeline);
            pass.set_bind_group(0, g, &[]);
            pass.dispatch_workgroups(d.workgroups.0, d.workgroups.1, 1);
        }
        Ok(())
    }

    /// The plan's scratch buffer; its first 16 bytes are the status words of the last run.
    pub fn scratch(&self) -> &wgpu::Buffer {
        &self.scratch
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // On GL, freeing GPU memory takes the GL context: release the handles under the device
        // lock. (Not `destroy`: a caller may drop a plan before submitting what it recorded;
        // the recorded commands keep the buffers alive until then.)
        let _guard = self.ctx.lock();
        lock(&self.bind_groups).take();
        // SAFETY: each is dropped once, here, and never used again.
        unsafe {
            ManuallyDrop::drop(&mut self.uniforms);
            ManuallyDrop::drop(&mut self.scratch);
        }
    }
}

/// The invalid inputs a run's kernels counted (class indices out of range, probabilities outside
/// [0, 1]), read back from the status words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// How many.
    pub invalid: u32,
    /// The first invalid row or element, when there is one.
    pub first: Option<u32>,
}

impl Status {
    pub(crate) fn from_words(words: &[u32]) -> Self {
        Status {
            invalid: words[0],
            first: (words[1] != 0).then(|| u32::MAX - words[1]),
        }
    }

    /// `Ok` when nothing was invalid, else [`Error::InvalidOnGpu`].
    pub fn check(self, what: &'static str) -> Result<()> {
        match self.first {
            Some(first) if self.invalid > 0 => Err(Error::InvalidOnGpu {
                what,
                count: self.invalid,
                first,
            }),
            _ => Ok(()),
        }
    }
}
