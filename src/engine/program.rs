//! A planned loss: the dispatches that compute it, their parameters and scratch memory, recorded
//! into a command encoder against the caller's buffers.
//!
//! Every loss family (`pointwise`, `cross_entropy`, ...) describes its [`Program`] once per
//! shape and options to a [`Builder`]; binding it to the caller's buffers creates its bind
//! groups, and recording encodes one compute pass.

use std::num::NonZeroU64;

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use super::context::{Locked, Pipeline, PipelineKey};
pub(crate) use super::kernel::WG;
use super::kernel::{FinalMode, Kernel, fixed_layout, modes, params};
use super::slots::{MAX_SLOTS, Slot, UserBindings, UserTextures};
use crate::dtype::DType;
use crate::engine::context::Context;
use crate::error::{Error, Result};
use crate::reduction::Field;

/// How many invocations of a workgroup share one partial sum, for segments of `seg`
/// invocations: a lane group of the tuning, or one segment. It depends on the plan alone, never
/// on the subgroup size, so that sums are added in the same order on every adapter with the
/// same tuning. `group_sum` (shaders/common/segment.wgsl) and `store_group_partial`
/// (shaders/common/scratch.wgsl) take it as their `group`.
pub fn partial_group(ctx: &Context, seg: u32) -> u32 {
    seg.max(ctx.tuning().lanes).min(WG)
}
/// Partials one invocation of reduce.wgsl adds (its `K`).
const REDUCE_K: u32 = 16;
/// The status words at the start of the scratch buffer (see shaders/common/scratch.wgsl).
const STATUS_BYTES: u64 = 16;
/// Data words of scratch reserved before the first allocation: data[0] holds a weighted
/// mean's denominator.
const RESERVED_WORDS: u64 = 4;
/// The most workgroups along one dimension of a dispatch (WebGPU's and most adapters' limit).
const MAX_PER_DIM: u64 = 65_535;

modes! {
    /// What a level of reduce.wgsl does with its sums (`params.mode`).
    /// `PARTIAL`: writes them as the next level's partials; `SUM`: loss[g] = the sum of losses;
    /// `MEAN`: loss[g] = the sum of losses over `params.mean_den`; `WEIGHTED_MEAN`: loss[g] = the
    /// sum of losses over the sum of weights; `DENOMINATOR`: scratch.data[0] = the sum of weights
    /// (a weighted mean's denominator).
    ReduceMode "REDUCE" { PARTIAL = 0, SUM = 1, MEAN = 2, WEIGHTED_MEAN = 3, DENOMINATOR = 4 }
}

/// `shaders/reduce.wgsl`: fixed-order sums of partials. Bindings: scratch, loss.
pub(crate) static REDUCE: Kernel =
    Kernel::new("reduce.wgsl", include_str!("../../shaders/reduce.wgsl"))
        .params(ReduceParams::INFO)
        .consts(&[ReduceMode::WGSL])
        .layout(fixed_layout!(U, W, W));

params! {
    /// The parameters of reduce.wgsl.
    ReduceParams {
        count: u32,
        in_base: u32,
        out_base: u32,
        wg_x: u32,
        mode: u32,
        mean_den: f32,
        groups: u32,
        group_wgs: u32,
    }
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
pub enum Finish {
    /// The loss output gets the sum of losses.
    Sum,
    /// The loss output gets the sum of losses divided by a denominator known on the host.
    Mean(f64),
    /// The loss output gets the sum of losses divided by the sum of weights.
    WeightedMean,
    /// scratch.data[0] gets the sum of weights (for a gradient's scale).
    Denominator,
    /// The (loss, weight) total stays in scratch, at this index of `scratch.data`.
    Keep(u32),
}

impl Finish {
    fn mode(self) -> (u32, f32) {
        match self {
            Finish::Sum => (ReduceMode::SUM, 1.0),
            Finish::Mean(d) => (ReduceMode::MEAN, d as f32),
            Finish::WeightedMean => (ReduceMode::WEIGHTED_MEAN, 1.0),
            Finish::Denominator => (ReduceMode::DENOMINATOR, 1.0),
            Finish::Keep(_) => (ReduceMode::PARTIAL, 1.0),
        }
    }
}

/// How one user buffer is bound: its first `bytes`.
#[derive(Clone, Copy, Debug)]
pub enum View {
    /// An array of elements (or of the u32 words that pack them).
    Scalar(u64),
    /// An array of groups of 4 elements.
    Vec4(u64),
}

impl View {
    /// `elements` of `dtype`: whole groups of 4 when `vec4`, else every element (rounded up to
    /// a 4-byte word).
    pub fn of(vec4: bool, elements: u64, dtype: DType) -> Self {
        if vec4 {
            View::Vec4(elements / 4 * 4 * dtype.size())
        } else {
            View::Scalar(dtype.bytes(elements))
        }
    }
}

/// What one binding of a dispatch is bound to.
#[derive(Clone, Copy, Debug)]
pub enum Res {
    /// A user buffer, by slot.
    User(Slot, View),
    /// A window of a user buffer: `view` from this many bytes past the start of its range
    /// (inputs larger than one binding are bound a window at a time).
    Window(Slot, u64, View),
    /// The plan's scratch buffer.
    Scratch,
    /// A small buffer of the context's that the kernel never touches in this configuration.
    Dummy(bool),
    /// A buffer the plan owns (an intermediate of its own, [`Builder::owned`]), by index.
    Owned(usize),
    /// The caller's texture for a slot, sampled (`textureLoad`) or written as a storage
    /// texture: a view of its first mip level and layer ([`Program::bind_textures`]).
    Texture(Slot),
}

impl Res {
    /// The user slot when `used`, else a dummy of the same access.
    pub fn user_if(used: bool, slot: Slot, view: View, writable: bool) -> Self {
        if used {
            Res::User(slot, view)
        } else {
            Res::Dummy(writable)
        }
    }
}

/// What a loss kernel does after its loops (shaders/common/outputs.wgsl): the one place its
/// uniforms `flags`, `scale_mode` and `final_mode`, and its constants `ROW_LOSS` and `SINGLE`,
/// are chosen.
#[derive(Clone, Copy, Debug, Default)]
pub struct After {
    /// Write per-row (per-element) losses: the kernel's `ROW_LOSS` override constant, set on the
    /// dispatch's pipeline by [`After::key`].
    pub row_loss: bool,
    /// Write partial sums to scratch.
    pub partial: bool,
    /// One workgroup holds the whole problem and writes the reduced value itself: the kernel's
    /// `SINGLE` override constant, set on the dispatch's pipeline by [`After::key`].
    pub single: bool,
    /// The gradient's scale: 0 the host's, 1 from the denominator an earlier pass reduced, 2 from
    /// the weight sum this dispatch reduces (single only).
    pub scale_mode: u32,
    /// How a single dispatch finishes: 0 sum, 1 over the host's `mean_den`, 2 over the weight
    /// sum, 3 no reduced value.
    pub final_mode: u32,
}

impl After {
    /// `params.flags`.
    pub fn flags(&self) -> u32 {
        self.partial as u32
    }

    /// The pipeline of a dispatch that does this: `key` with `ROW_LOSS` set when it writes row
    /// losses and `SINGLE` when one workgroup reduces everything (pipelines of their own: see
    /// shaders/common/outputs.wgsl).
    pub fn key(&self, key: PipelineKey) -> PipelineKey {
        let key = if self.row_loss {
            key.constant("ROW_LOSS", 1u32)
        } else {
            key
        };
        if self.single {
            key.constant("SINGLE", 1u32)
        } else {
            key
        }
    }

    /// A single dispatch's `final_mode` for `finish`, or 3 when the loss is not reduced.
    pub fn final_mode(finish: Option<Finish>) -> u32 {
        match finish {
            Some(Finish::Sum) => FinalMode::SUM,
            Some(Finish::Mean(_)) => FinalMode::MEAN,
            Some(Finish::WeightedMean) => FinalMode::WEIGHTED,
            Some(Finish::Denominator | Finish::Keep(_)) | None => FinalMode::NONE,
        }
    }
}

/// A run of whole units (rows, blocks of rows, vec4s) bound at once: a window of the slots a
/// family binds a window at a time ([`Builder::windowed_slot`], [`Res::Window`]). The binding
/// starts at element `base`, at or before the first unit's first element (where the device's
/// offset alignment allows), and ends with the last unit (or with the tail, in the last span).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub units: u64,
    pub base: u64,
}

/// How a family cuts its windowed slots into windows: `units` whole units of `unit_elems`
/// elements, `per_wg` of them a workgroup, then `tail_elems` more elements (a tail dispatch's,
/// bound in the last window); `sizes` are the element sizes of the slots bound a window at a
/// time.
pub struct Windowing<'s> {
    pub units: u64,
    pub unit_elems: u64,
    pub per_wg: u64,
    pub tail_elems: u64,
    pub sizes: &'s [u64],
    /// What a window holds, in the error when not even one workgroup's fits a binding.
    pub what: &'static str,
}

impl Windowing<'_> {
    /// One span over every unit when each slot fits one binding; else spans of whole
    /// workgroups' units (so that every workgroup reads what it would with one binding, and
    /// writes the same partials: the same bits), each bound from the last element before it
    /// at an offset the device's `min_storage_buffer_offset_alignment` allows (a multiple of 4
    /// elements), with room in the last for the tail.
    pub fn spans(&self, ctx: &Context) -> Result<Vec<Span>> {
        let limit = ctx.max_binding_bytes();
        let total = self.units * self.unit_elems + self.tail_elems;
        if self
            .sizes
            .iter()
            .all(|&z| (total * z).next_multiple_of(4) <= limit)
        {
            return Ok(vec![Span {
                first: 0,
                units: self.units,
                base: 0,
            }]);
        }
        let elem_align = elem_align(ctx, self.sizes);
        let widest = self.sizes.iter().copied().max().unwrap_or(4);
        let slack = elem_align * widest;
        let tail_bytes = (self.tail_elems * widest).next_multiple_of(4);
        let unit_bytes = self.unit_elems * widest;
        let per_window =
            limit.saturating_sub(slack + tail_bytes) / unit_bytes / self.per_wg * self.per_wg;
        if per_window == 0 {
            return Err(Error::TooLarge {
                what: self.what,
                bytes: self.per_wg * unit_bytes + slack + tail_bytes,
                limit,
                which: "storage binding",
            });
        }
        Ok((0..self.units)
            .step_by(per_window as usize)
            .map(|first| Span {
                first,
                units: per_window.min(self.units - first),
                base: first * self.unit_elems / elem_align * elem_align,
            })
            .collect())
    }
}

/// The element counts at which a binding of tensors of the given element sizes may start: a
/// multiple of 4 elements whose offset the device's `min_storage_buffer_offset_alignment`
/// allows for every size.
pub fn elem_align(ctx: &Context, sizes: &[u64]) -> u64 {
    let align = (ctx.limits().min_storage_buffer_offset_alignment as u64).max(4);
    sizes.iter().fold(4, |a, &z| lcm(a, align / gcd(align, z)))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

/// Splits `workgroups` into a two-dimensional dispatch (x * y >= workgroups); kernels number
/// their workgroup `wid.x + wid.y * x` and return when it is past the end.
pub fn fold(ctx: &Context, workgroups: u64) -> Result<(u32, u32)> {
    let per_dim = (ctx.limits().max_compute_workgroups_per_dimension as u64).clamp(1, MAX_PER_DIM);
    let x = workgroups.clamp(1, per_dim);
    let y = workgroups.div_ceil(x).max(1);
    if y > per_dim {
        return Err(Error::TooLarge {
            what: "dispatch (workgroups)",
            bytes: workgroups,
            limit: per_dim * per_dim,
            which: "workgroups per dispatch",
        });
    }
    Ok((x as u32, y as u32))
}

/// The bytes of the loss slot: none, one reduced value, or `per_item` (one f32 a row or
/// element, for `Reduction::None`).
pub fn loss_bytes(want_loss: bool, reduced: bool, items: u64) -> u64 {
    match (want_loss, reduced) {
        (false, _) => 0,
        (true, true) => 4,
        (true, false) => 4 * items,
    }
}

/// The loss binding of a dispatch: the per-item losses (`view`) of slot `loss`, the reduced
/// value when this dispatch writes it itself (`single`), or a dummy.
pub fn loss_res(loss: Slot, want_loss: bool, reduced: bool, single: bool, view: View) -> Res {
    match (want_loss, reduced) {
        (true, false) => Res::User(loss, view),
        (true, true) if single => Res::User(loss, View::Scalar(4)),
        _ => Res::Dummy(true),
    }
}

/// Whether a program writes a user buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A user buffer a program takes: its role, the bytes it must hold (0: unused), whether it is
/// written, and for a side slot the byte offset in scratch it is copied from (written) or to
/// (read).
#[derive(Clone, Copy, Debug)]
struct SlotUse {
    /// The slot, once declared.
    slot: Option<Slot>,
    name: &'static str,
    bytes: u64,
    access: Access,
    copy: Option<u64>,
}

const UNUSED: SlotUse = SlotUse {
    slot: None,
    name: "",
    bytes: 0,
    access: Access::Read,
    copy: None,
};

struct Dispatch<P> {
    pipeline: P,
    uniform_offset: u64,
    uniform_size: u64,
    entries: Vec<Res>,
    workgroups: (u32, u32),
}

/// Assembles a [`Program`]: the loss families describe their dispatches to it (no device
/// work), and [`Builder::finish`] compiles the pipelines and creates the plan's buffers.
pub struct Builder<'a> {
    ctx: &'a Context,
    slots: [SlotUse; MAX_SLOTS],
    /// The slot the gradient lands in when it is over the input (in place).
    in_place: Option<Slot>,
    grad_dtype: (DType, u64),
    grad_linear_dtype: (DType, u64),
    dispatches: Vec<Dispatch<PipelineKey>>,
    uniforms: Vec<u8>,
    scratch_words: u64,
    /// WGSL to compile alone before the pipelines, and the error to make of a failure.
    checks: Vec<WgslCheck>,
    /// The sizes of the buffers the plan owns ([`Res::Owned`]).
    owned: Vec<u64>,
}

/// WGSL a family has [`Builder::check_wgsl`] compile first, and its error maker.
type WgslCheck = (String, Box<dyn FnOnce(String) -> Error + Send>);

impl<'a> Builder<'a> {
    pub fn new(ctx: &'a Context) -> Self {
        Builder {
            ctx,
            slots: [UNUSED; MAX_SLOTS],
            in_place: None,
            grad_dtype: (DType::F32, 0),
            grad_linear_dtype: (DType::F32, 0),
            dispatches: Vec::new(),
            uniforms: Vec::new(),
            scratch_words: RESERVED_WORDS,
            checks: Vec::new(),
            owned: Vec::new(),
        }
    }

    /// Has [`Builder::finish`] compile `source` alone before the pipelines: a failure is the
    /// error `error` makes of the compiler's message (a custom loss's expression, named).
    pub fn check_wgsl(
        &mut self,
        source: String,
        error: impl FnOnce(String) -> Error + Send + 'static,
    ) {
        self.checks.push((source, Box::new(error)));
    }

    pub fn ctx(&self) -> &'a Context {
        self.ctx
    }

    /// Declares that the program uses slot `s`, naming it `name` in errors: `n` bytes of it (0:
    /// the program does not use it), read or written (`a`); at most one binding's worth.
    pub fn slot(&mut self, s: Slot, name: &'static str, n: u64, a: Access) -> Result<()> {
        let limit = self.ctx.max_binding_bytes();
        self.declare(s, name, n, a, (limit, "storage binding"))
    }

    /// [`Builder::slot`] for a slot the family binds a window at a time (`Res::Window`): it
    /// may hold up to the device's `max_buffer_size`, not one binding's worth.
    pub fn windowed_slot(&mut self, s: Slot, name: &'static str, n: u64, a: Access) -> Result<()> {
        let limit = self.ctx.limits().max_buffer_size;
        self.declare(s, name, n, a, (limit, "buffer size"))
    }

    fn declare(
        &mut self,
        slot: Slot,
        name: &'static str,
        bytes: u64,
        access: Access,
        (limit, which): (u64, &'static str),
    ) -> Result<()> {
        if bytes > limit {
            return Err(Error::TooLarge {
                what: name,
                bytes,
                limit,
                which,
            });
        }
        self.slots[slot.index()] = SlotUse {
            slot: Some(slot),
            name,
            bytes,
            access,
            copy: None,
        };
        Ok(())
    }

    /// Declares a side slot: `bytes` of the caller's buffer that the kernels never bind, but
    /// read or write in scratch (words allocated here; their index in `scratch.data` is
    /// returned), copied from the caller's buffer before the pass (`Access::Read`) or to it
    /// after the pass (`Access::Write`). Small per-row outputs and inputs this way add no
    /// binding to any kernel (WebGPU's default limit is 8 storage buffers a stage).
    pub fn side(
        &mut self,
        slot: Slot,
        name: &'static str,
        bytes: u64,
        access: Access,
    ) -> Result<u32> {
        let base = self.scratch(bytes.div_ceil(4))?;
        self.slots[slot.index()] = SlotUse {
            slot: Some(slot),
            name,
            bytes,
            access,
            copy: Some(STATUS_BYTES + 4 * base as u64),
        };
        Ok(base)
    }

    /// Declares a side output copied from the status words (`word` of 4): a count the kernels
    /// keep with integer atomics.
    pub fn status_output(&mut self, slot: Slot, name: &'static str, word: u64) {
        self.slots[slot.index()] = SlotUse {
            slot: Some(slot),
            name,
            bytes: 4,
            access: Access::Write,
            copy: Some(4 * word),
        };
    }

    /// The gradient is written over the input `input` (and read back from there by the
    /// convenience API).
    pub fn grad_in_place(&mut self, input: Slot) {
        self.in_place = Some(input);
    }

    /// The gradient's dtype (f32 unless set) and element count, for the convenience API's
    /// read-back (a 16-bit gradient's slot is padded to whole words).
    pub fn grad_dtype(&mut self, dtype: DType, elements: u64) {
        self.grad_dtype = (dtype, elements);
    }

    /// [`Builder::grad_dtype`] for the layer's gradient (`Field::GradLinear`).
    pub fn grad_linear_dtype(&mut self, dtype: DType, elements: u64) {
        self.grad_linear_dtype = (dtype, elements);
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
                which: "storage binding",
            });
        }
        Ok(base as u32)
    }

    /// A buffer of `bytes` the plan owns and binds as [`Res::Owned`] (an intermediate too large
    /// for scratch, at most one binding); its contents persist between runs, unset at first.
    pub fn owned(&mut self, what: &'static str, bytes: u64) -> Result<usize> {
        let limit = self.ctx.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge {
                what,
                bytes,
                limit,
                which: "storage binding",
            });
        }
        self.owned.push(bytes.max(4).next_multiple_of(4));
        Ok(self.owned.len() - 1)
    }

    /// [`fold`] on this builder's device.
    pub fn fold(&self, workgroups: u64) -> Result<(u32, u32)> {
        fold(self.ctx, workgroups)
    }

    /// Appends a dispatch. Binding 0 is the uniform `params`; `entries` are bindings 1..
    pub fn dispatch<P: Pod>(
        &mut self,
        key: &PipelineKey,
        params: &P,
        entries: Vec<Res>,
        workgroups: (u32, u32),
    ) {
        // The shader's bindings after the params, one entry each (a bug of this crate's
        // planner otherwise; the contract test checks the layouts against the shaders).
        let layout = (key.kernel.layout)(&key.defines);
        assert_eq!(
            entries.len() + 1,
            layout.len(),
            "wgpu-loss: {key:?} takes {} bindings",
            layout.len()
        );
        let align = self
            .ctx
            .limits()
            .min_uniform_buffer_offset_alignment
            .max(16) as usize;
        let offset = self.uniforms.len().next_multiple_of(align);
        self.uniforms.resize(offset, 0);
        self.uniforms.extend_from_slice(bytemuck::bytes_of(params));
        self.dispatches.push(Dispatch {
            pipeline: key.clone(),
            uniform_offset: offset as u64,
            uniform_size: std::mem::size_of::<P>() as u64,
            entries,
            workgroups,
        });
    }

    /// Appends the levels of a fixed-order tree that sums `count` (loss, weight) partials at
    /// `scratch.data[base]` and finishes as `finish`, into the user slot `loss` when the finish
    /// writes a loss. No invocation adds more than REDUCE_K partials, whatever `count` is.
    pub fn reduce(
        &mut self,
        count: u64,
        base: u32,
        finish: Finish,
        loss: Option<Slot>,
    ) -> Result<()> {
        self.reduce_groups(1, count, base, finish, loss)
    }

    /// [`Builder::reduce`] that leaves the total (loss, weight) pair in scratch for a later
    /// dispatch of the family's own to finish: returns its index in `scratch.data`.
    pub fn reduce_keep(&mut self, count: u64, base: u32) -> Result<u32> {
        let total = self.scratch(2)?;
        self.reduce_groups(1, count, base, Finish::Keep(total), None)?;
        Ok(total)
    }

    /// [`Builder::reduce`] of each of `groups` groups of `count` consecutive partials, group g
    /// finishing into element g of `loss` (one f32 a group): per-row sums of rows that several
    /// workgroups share.
    pub fn reduce_groups(
        &mut self,
        groups: u64,
        mut count: u64,
        mut base: u32,
        finish: Finish,
        loss: Option<Slot>,
    ) -> Result<()> {
        let per_wg = (WG * REDUCE_K) as u64;
        let out = match (finish, loss) {
            (Finish::Denominator | Finish::Keep(_), _) | (_, None) => Res::Dummy(true),
            (_, Some(slot)) => Res::User(slot, View::Scalar(4 * groups)),
        };
        let key = PipelineKey::new(&REDUCE, "main")
            .constant("WG", WG)
            .constant("SEG", WG)
            .constant("K", REDUCE_K);
        loop {
            let group_wgs = count.div_ceil(per_wg);
            let (wg_x, wg_y) = self.fold(groups * group_wgs)?;
            let (mode, mean_den, out_base) = if group_wgs == 1 {
                let (mode, den) = finish.mode();
                let out_base = match finish {
                    Finish::Keep(at) => at,
                    _ => 0,
                };
                (mode, den, out_base)
            } else {
                (0, 1.0, self.scratch(2 * groups * group_wgs)?)
            };
            let params = ReduceParams {
                count: count as u32,
                in_base: base,
                out_base,
                wg_x,
                mode,
                mean_den,
                groups: groups as u32,
                group_wgs: group_wgs as u32,
            };
            self.dispatch(&key, &params, vec![Res::Scratch, out], (wg_x, wg_y));
            if group_wgs == 1 {
                return Ok(());
            }
            count = group_wgs;
            base = out_base;
        }
    }

    /// Compiles the pipelines (each on its first use by the context) and creates the plan's
    /// parameter and scratch buffers. Running out of memory is an error, not a panic.
    pub async fn finish(self) -> Result<Program> {
        for (source, error) in self.checks {
            let scope = {
                let _guard = self.ctx.lock();
                let device = self.ctx.device();
                let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
                // Dropped here, under the device lock.
                let _module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("wgpu-loss.check"),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
                scope.pop()
            };
            if let Some(e) = scope.await {
                return Err(error(e.to_string()));
            }
        }
        let mut dispatches = Vec::with_capacity(self.dispatches.len());
        for d in self.dispatches {
            dispatches.push(Dispatch {
                pipeline: self.ctx.pipeline(&d.pipeline).await?,
                uniform_offset: d.uniform_offset,
                uniform_size: d.uniform_size,
                entries: d.entries,
                workgroups: d.workgroups,
            });
        }
        let (uniforms, scratch, owned, popped) = {
            let _guard = self.ctx.lock();
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
            let owned = self
                .owned
                .iter()
                .map(|&size| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("wgpu-loss.owned"),
                        size,
                        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    })
                })
                .collect();
            (uniforms, scratch, owned, scope.pop())
        };
        let program = Program {
            ctx: self.ctx.without_cache(),
            slots: self.slots,
            in_place: self.in_place,
            grad_dtype: self.grad_dtype,
            grad_linear_dtype: self.grad_linear_dtype,
            dispatches,
            uniforms: Locked::new(self.ctx, uniforms),
            scratch: Locked::new(self.ctx, scratch),
            owned: Locked::new(self.ctx, owned),
        };
        match popped.await {
            Some(e) => Err(Error::from_wgpu(e)),
            None => Ok(program),
        }
    }
}

/// A side slot's copy between the caller's buffer and scratch.
#[derive(Debug)]
struct SideCopy {
    buffer: wgpu::Buffer,
    offset: u64,
    /// Byte offset in scratch.
    scratch: u64,
    bytes: u64,
    /// Into scratch before the pass (an input), else out of it after the pass.
    before: bool,
}

/// A program bound to the caller's buffers: a bind group per dispatch, and the side slots'
/// copies.
#[derive(Debug)]
pub struct Bound {
    groups: Locked<Vec<wgpu::BindGroup>>,
    copies: Locked<Vec<SideCopy>>,
}

/// A planned loss, ready to bind and record.
pub struct Program {
    ctx: Context,
    slots: [SlotUse; MAX_SLOTS],
    /// The slot the gradient lands in when it is over the input (in place).
    in_place: Option<Slot>,
    grad_dtype: (DType, u64),
    grad_linear_dtype: (DType, u64),
    dispatches: Vec<Dispatch<Pipeline>>,
    /// Dropped under the device lock (see `Drop`).
    uniforms: Locked<wgpu::Buffer>,
    scratch: Locked<wgpu::Buffer>,
    owned: Locked<Vec<wgpu::Buffer>>,
}

/// The bytes a binding range spans: its size, or the rest of its buffer.
pub fn range_len(b: &wgpu::BufferBinding<'_>) -> u64 {
    match b.size {
        Some(s) => s.get(),
        None => b.buffer.size().saturating_sub(b.offset),
    }
}

impl Program {
    pub fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// How many dispatches one run records.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// The bytes slot `slot` needs (0: unused).
    pub fn slot_bytes(&self, slot: Slot) -> u64 {
        self.slots[slot.index()].bytes
    }

    /// The slots the program uses, with their bytes.
    pub fn used_slots(&self) -> impl Iterator<Item = (Slot, u64)> + '_ {
        self.slots
            .iter()
            .filter_map(|u| Some((u.slot?, u.bytes)).filter(|&(_, b)| b > 0))
    }

    /// Whether the program writes slot `slot`.
    pub fn writes(&self, slot: Slot) -> bool {
        self.slots[slot.index()].access == Access::Write
    }

    /// The slot the program writes `field` into, when it writes it (the gradient: over the
    /// input when in place).
    pub fn result_slot(&self, field: Field) -> Option<Slot> {
        match (field, self.in_place) {
            (Field::Grad, Some(input)) => Some(input),
            _ => self
                .used_slots()
                .map(|(s, _)| s)
                .find(|s| s.field() == Some(field)),
        }
    }

    /// Whether the gradient is written over the input.
    pub fn in_place(&self) -> bool {
        self.in_place.is_some()
    }

    /// The gradient's dtype and, when it is not f32, its element count.
    pub fn grad_dtype(&self) -> (DType, u64) {
        self.grad_dtype
    }

    /// The layer's gradient's dtype and, when it is not f32, its element count.
    pub fn grad_linear_dtype(&self) -> (DType, u64) {
        self.grad_linear_dtype
    }

    /// Checks the user ranges against the slots: present exactly where used, `STORAGE`,
    /// aligned, inside their buffers, large enough, and no written range overlapping another.
    fn check(&self, user: &UserBindings<'_>) -> Result<()> {
        let alignment = (self.ctx.limits().min_storage_buffer_offset_alignment as u64).max(1);
        for (i, slot) in self.slots.iter().enumerate() {
            match (slot.bytes, user.get(i)) {
                (0, None) => {}
                (0, Some((role, _))) => {
                    return Err(Error::Binding(role.name(), "not used by this plan"));
                }
                (_, None) => return Err(Error::Binding(slot.name, "needed by this plan")),
                (bytes, Some((_, b))) => {
                    let usage = b.buffer.usage();
                    // Side slots are copied, not bound: copy usage, 4-byte offsets.
                    let (needed, alignment) = match (slot.copy, slot.access) {
                        (None, _) => (wgpu::BufferUsages::STORAGE, alignment),
                        (Some(_), Access::Read) => (wgpu::BufferUsages::COPY_SRC, 4),
                        (Some(_), Access::Write) => (wgpu::BufferUsages::COPY_DST, 4),
                    };
                    if !usage.contains(needed) {
                        return Err(Error::MissingUsage {
                            binding: slot.name,
                            needed,
                            actual: usage,
                        });
                    }
                    if !b.offset.is_multiple_of(alignment) {
                        return Err(Error::Misaligned {
                            binding: slot.name,
                            offset: b.offset,
                            alignment,
                        });
                    }
                    let inside = b
                        .offset
                        .checked_add(range_len(b))
                        .is_some_and(|end| end <= b.buffer.size());
                    if !inside {
                        return Err(Error::Binding(
                            slot.name,
                            "range runs past the end of its buffer",
                        ));
                    }
                    if range_len(b) < bytes {
                        return Err(Error::BufferTooSmall {
                            binding: slot.name,
                            needed: bytes,
                            actual: range_len(b),
                        });
                    }
                }
            }
        }
        // A written range may overlap no other range (the kernels would read what they are
        // writing: a wrong result), and a buffer the plan writes may hold no range it reads:
        // wgpu tracks usage per buffer, not per range, and rejects a buffer bound both
        // read-only and writable in one dispatch (a panic at the caller's submit), unless every
        // binding is read-write (a pooled context). Outputs may share a buffer at disjoint
        // ranges, inputs may share one freely.
        let used: Vec<(&SlotUse, &wgpu::BufferBinding<'_>)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s, &user.get(i)?.1)).filter(|_| s.bytes > 0))
            .collect();
        for (i, &(a, ra)) in used.iter().enumerate() {
            for &(b, rb) in &used[i + 1..] {
                let written = a.access == Access::Write || b.access == Access::Write;
                let same = ra.buffer == rb.buffer;
                let overlap =
                    same && ra.offset < rb.offset + b.bytes && rb.offset < ra.offset + a.bytes;
                let mixed = same && a.access != b.access && !self.ctx.is_pooled();
                if (written && overlap) || mixed {
                    return Err(Error::Aliased {
                        a: a.name,
                        b: b.name,
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks `user` and creates the bind group of each dispatch, and the copies of its side
    /// slots.
    pub fn bind(&self, user: &UserBindings<'_>) -> Result<Bound> {
        self.bind_textures(user, &[None; MAX_SLOTS])
    }

    /// [`Program::bind`] with the caller's textures for the dispatches' [`Res::Texture`]
    /// bindings (checked by the family: format, size, usage).
    pub fn bind_textures(
        &self,
        user: &UserBindings<'_>,
        textures: &UserTextures<'_>,
    ) -> Result<Bound> {
        self.check(user)?;
        for d in &self.dispatches {
            for res in &d.entries {
                if let Res::Texture(slot) = *res
                    && textures[slot.index()].is_none()
                {
                    return Err(Error::Binding(slot.name(), "needs a texture in this plan"));
                }
            }
        }
        let copies = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let (at, b) = (slot.copy?, &user.get(i)?.1);
                Some(SideCopy {
                    buffer: b.buffer.clone(),
                    offset: b.offset,
                    scratch: at,
                    bytes: slot.bytes.next_multiple_of(4),
                    before: slot.access == Access::Read,
                })
            })
            .collect();
        let _guard = self.ctx.lock();
        let device = self.ctx.device();
        let groups = self
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
                    let binding = match *res {
                        Res::Texture(slot) => {
                            entries.push(wgpu::BindGroupEntry {
                                binding: i as u32 + 1,
                                resource: wgpu::BindingResource::TextureView(
                                    textures[slot.index()].expect("checked above"),
                                ),
                            });
                            continue;
                        }
                        Res::Owned(k) => self.owned[k].as_entire_buffer_binding(),
                        Res::Scratch => self.scratch.as_entire_buffer_binding(),
                        Res::Dummy(w) => self.ctx.dummy(w).as_entire_buffer_binding(),
                        Res::User(slot, view) | Res::Window(slot, _, view) => {
                            let (View::Scalar(bytes) | View::Vec4(bytes)) = view;
                            let at = match *res {
                                Res::Window(_, at, _) => at,
                                _ => 0,
                            };
                            let range = &user.get(slot.index()).expect("checked").1;
                            wgpu::BufferBinding {
                                buffer: range.buffer,
                                offset: range.offset + at,
                                size: NonZeroU64::new(bytes),
                            }
                        }
                    };
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: wgpu::BindingResource::Buffer(binding),
                    });
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgpu-loss"),
                    layout: &d.pipeline.layout,
                    entries: &entries,
                })
            })
            .collect();
        Ok(Bound {
            groups: Locked::new(&self.ctx, groups),
            copies: Locked::new(&self.ctx, copies),
        })
    }

    /// Records the program into `encoder` with the bind groups of [`Program::bind`]: one clear
    /// of the status words, then one compute pass holding every dispatch (with `timestamps`
    /// around it, if given).
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bound: &Bound,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) {
        let _guard = self.ctx.lock();
        encoder.clear_buffer(&self.scratch, 0, Some(STATUS_BYTES));
        for c in bound.copies.iter().filter(|c| c.before) {
            encoder.copy_buffer_to_buffer(&c.buffer, c.offset, &self.scratch, c.scratch, c.bytes);
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu-loss"),
            timestamp_writes: timestamps,
        });
        for (d, g) in self.dispatches.iter().zip(bound.groups.iter()) {
            pass.set_pipeline(&d.pipeline.pipeline);
            pass.set_bind_group(0, g, &[]);
            pass.dispatch_workgroups(d.workgroups.0, d.workgroups.1, 1);
        }
        drop(pass);
        for c in bound.copies.iter().filter(|c| !c.before) {
            encoder.copy_buffer_to_buffer(&self.scratch, c.scratch, &c.buffer, c.offset, c.bytes);
        }
    }

    /// The plan's scratch buffer; its first 16 bytes are the status words of the last run.
    pub fn scratch(&self) -> &wgpu::Buffer {
        &self.scratch
    }

    /// The bytes of device memory the program owns: its scratch and its parameters.
    pub fn device_bytes(&self) -> u64 {
        self.scratch.size()
            + self.uniforms.size()
            + self.owned.iter().map(|b| b.size()).sum::<u64>()
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
