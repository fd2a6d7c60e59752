//! Weighted sums of losses: `sum_k w_k L_k` over terms that are any of the crate's losses, each
//! with its own inputs, options and reduction, and each term's gradient, scaled by its weight,
//! added into the gradient output it names (terms over the same prediction add into the same
//! one), in the terms' order: the same bits on every run. Recorded into the caller's encoder
//! like one loss; nothing is read back in the middle.
//!
//! How: each term is planned as usual ([`Plan`]'s engine), with its loss and gradient bound to
//! the mix's scratch (one loss and one gradient, reused by every term in turn); after each
//! term, `shaders/mix.wgsl` adds the scratch, times the weight, into the mix's outputs (the
//! first term of an output writes it). The cost beside the terms' own: one read of each term's
//! loss and gradient and one read-write of the outputs, and a scratch gradient of the largest
//! term's size. CPU twin: [`crate::cpu::mix`].

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::dtype::DType;
use crate::engine::context::Context;
use crate::engine::context::{Locked, Pipeline, PipelineKey};
use crate::engine::kernel::{Kernel, fixed_layout, params};
use crate::engine::program::{Bound, Builder, Program, Status, WG, Windowing, fold, range_len};
use crate::engine::slots::{Slot, UserBindings};
use crate::engine::transfer;
use crate::error::{Error, Result};
use crate::plan::sealed::{Family, Passes, Slotted};
use crate::plan::{HostData, Inputs, IntoBinding, Plan, TensorLoss};
use crate::reduction::Reference;
use crate::reduction::{Field, Reduction};

/// Elements an invocation adds.
const K: u32 = 4;

/// `shaders/mix.wgsl`: adds a weighted output into another. Bindings: dst, src.
pub(crate) static MIX: Kernel = Kernel::new("mix.wgsl", include_str!("../../shaders/mix.wgsl"))
    .params(MixParams::INFO)
    .layout(fixed_layout!(U, W, R));

params! {
    /// The parameters of mix.wgsl: one window of one output of one term.
    MixParams {
        len: u32,
        wg_x: u32,
        /// 1 for an output's first term (which writes it rather than adding to it).
        first: u32,
        weight: f32,
    }
}

/// A term's loss description, its family erased (any [`TensorLoss`]).
pub(crate) trait Term: std::fmt::Debug + Send + Sync {
    fn program<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> Pin<Box<dyn Future<Output = Result<Program>> + 'a>>;
    fn term_results(&self) -> (Reduction, &'static str);
    fn term_host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>>;
    fn term_reference(&self, inputs: &Inputs<'_>) -> Result<Reference>;
    fn as_any(&self) -> &dyn std::any::Any;
    /// The same description (of the same family).
    fn same(&self, other: &dyn Term) -> bool;
}

impl<D: TensorLoss> Term for D {
    fn program<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> Pin<Box<dyn Future<Output = Result<Program>> + 'a>> {
        Box::pin(async move {
            let mut b = Builder::new(ctx);
            self.layout(&mut b)?;
            b.finish().await
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn same(&self, other: &dyn Term) -> bool {
        other.as_any().downcast_ref::<D>() == Some(self)
    }

    fn term_results(&self) -> (Reduction, &'static str) {
        self.results()
    }

    fn term_host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
        self.host_data(inputs)
    }

    fn term_reference(&self, inputs: &Inputs<'_>) -> Result<Reference> {
        self.reference(inputs)
    }
}

/// One weighted term of a [`MixDesc`].
#[derive(Clone, Debug)]
struct MixTerm {
    weight: f32,
    loss: Arc<dyn Term>,
    grad: usize,
}

impl PartialEq for MixTerm {
    fn eq(&self, other: &Self) -> bool {
        self.weight.to_bits() == other.weight.to_bits()
            && self.grad == other.grad
            && self.loss.same(other.loss.as_ref())
    }
}

/// A weighted sum of losses: terms added with [`MixDesc::term`] (gradient into the mix's
/// gradient output 0) or [`MixDesc::term_into`] (into output `grad`). Every term writes the loss
/// (all reduced, or all per element of one length) or none does; the terms of one gradient
/// output all write a gradient of one length (in f32) or none does.
///
/// ```no_run
/// use wgpu_loss::{Context, Inputs, MixDesc, PointwiseDesc, pointwise::Pointwise};
///
/// let ctx = Context::new()?;
/// let (pred, target) = ([0.5f32, -1.0, 2.0], [0.0f32, 0.0, 1.0]);
/// let mix = MixDesc::new()
///     .term(0.8, PointwiseDesc::new(Pointwise::L1, 3))
///     .term(0.2, PointwiseDesc::new(Pointwise::Mse, 3));
/// let inputs = Inputs::new(&pred[..], &target[..]);
/// let out = ctx.mix(&mix, &[inputs, inputs])?;
/// println!("loss {:?}, grad {:?}", out.value, out.grads[0]);
/// # Ok::<(), wgpu_loss::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MixDesc {
    terms: Vec<MixTerm>,
}

impl MixDesc {
    /// No terms yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `weight` times `loss`, its gradient into the mix's gradient output 0.
    pub fn term(self, weight: f32, loss: impl TensorLoss) -> Self {
        self.term_into(weight, loss, 0)
    }

    /// Adds `weight` times `loss`, its gradient into the mix's gradient output `grad` (one per
    /// prediction the terms differentiate; outputs are numbered from 0, each with a term).
    pub fn term_into(mut self, weight: f32, loss: impl TensorLoss, grad: usize) -> Self {
        self.terms.push(MixTerm {
            weight,
            loss: Arc::new(loss),
            grad,
        });
        self
    }

    /// How many terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether there are no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms' weights, in order.
    pub fn weights(&self) -> Vec<f32> {
        self.terms.iter().map(|t| t.weight).collect()
    }

    /// The gradient output of each term, in order.
    pub fn grad_outputs(&self) -> Vec<usize> {
        self.terms.iter().map(|t| t.grad).collect()
    }

    /// Checks the terms' weights and gradient outputs; returns how many gradient outputs.
    fn check(&self) -> Result<usize> {
        if self.terms.is_empty() {
            return Err(Error::Empty("mix terms"));
        }
        if let Some(t) = self.terms.iter().find(|t| !t.weight.is_finite()) {
            return Err(Error::option(
                "weight",
                format!("{} is not finite", t.weight),
            ));
        }
        let outputs = self.terms.iter().map(|t| t.grad).max().unwrap_or(0) + 1;
        if let Some(g) = (0..outputs).find(|&g| self.terms.iter().all(|t| t.grad != g)) {
            return Err(Error::option(
                "grad",
                format!("gradient output {g} has no term (outputs are numbered from 0)"),
            ));
        }
        Ok(outputs)
    }

    /// The checks of the terms' inputs, and their bytes.
    fn host<'a>(&self, inputs: &[Inputs<'a>]) -> Result<Vec<HostData<'a>>> {
        crate::plan::check_count("mix inputs (one a term)", self.len() as u64, inputs.len())?;
        self.terms
            .iter()
            .zip(inputs)
            .map(|(t, i)| t.loss.term_host(i))
            .collect()
    }

    /// Each term's CPU twin on its inputs, with its weight (for [`crate::cpu::mix`]).
    pub(crate) fn references(&self, inputs: &[Inputs<'_>]) -> Result<Vec<(f64, usize, Reference)>> {
        self.check()?;
        self.host(inputs)?;
        self.terms
            .iter()
            .zip(inputs)
            .map(|(t, i)| Ok((t.weight as f64, t.grad, t.loss.term_reference(i)?)))
            .collect()
    }
}

/// Where a step of the mix kernel adds: the loss output, or a gradient output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dst {
    Loss,
    Grad(usize),
}

/// One dispatch of the mix kernel: a window of one output, its uniforms at `uniform`.
#[derive(Clone, Copy, Debug)]
struct Step {
    dst: Dst,
    /// The window's first element and length.
    first: u64,
    len: u64,
    uniform: u64,
    workgroups: (u32, u32),
}

/// A term planned: its program (loss and gradient into the mix's scratch), and the steps that
/// add them into the outputs.
struct TermPlan {
    program: Program,
    invalid: &'static str,
    /// Elements of its loss and gradient (0: not written), and their slots.
    loss: u64,
    grad: u64,
    loss_slot: Option<Slot>,
    grad_slot: Option<Slot>,
    steps: Vec<Step>,
}

/// A [`MixDesc`]'s passes on a context: each term's program, the mix kernel's dispatches, and
/// the scratch the terms write into (what a [`Plan`] of a [`MixDesc`] holds).
pub struct MixPasses {
    ctx: Context,
    terms: Vec<TermPlan>,
    /// Elements of the loss output (0: no loss), and whether it is a reduced value.
    loss: u64,
    reduced: bool,
    /// Elements of each gradient output (0: none written).
    grads: Vec<u64>,
    /// Byte offset of the terms' gradient in the scratch (their loss is at 0).
    grad_at: u64,
    pipeline: Pipeline,
    /// Released under the device lock.
    scratch: Locked<wgpu::Buffer>,
    uniforms: Locked<wgpu::Buffer>,
}

impl std::fmt::Debug for MixPasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixPasses")
            .field("terms", &self.terms.len())
            .field("loss", &self.loss)
            .field("grads", &self.grads)
            .finish()
    }
}

/// The caller's buffers for a [`Plan`] of a [`MixDesc`]: each term's inputs (its family's buffers without `loss` and
/// `grad`, which the mix binds to its scratch; a term's side outputs, such as cross-entropy's
/// `lse`, are the term's own), and the mix's outputs: the loss (f32: one value when the terms
/// are reduced, else one a term's element) and one gradient (f32) a gradient output. Outputs need
/// `STORAGE` and offsets that are multiples of `min_storage_buffer_offset_alignment`.
#[derive(Clone, Debug)]
pub struct MixBuffers<'a> {
    /// The inputs of each term, in order.
    pub terms: Vec<TermBuffers<'a>>,
    /// Where the weighted sum of the losses goes.
    pub loss: Option<wgpu::BufferBinding<'a>>,
    /// Where each gradient output goes.
    pub grads: Vec<Option<wgpu::BufferBinding<'a>>>,
}

impl<'a> MixBuffers<'a> {
    /// The terms' inputs (each the buffers struct of its term's family, such as
    /// [`crate::pointwise::PointwiseBuffers`]; `.into()` one of another family in a list of them); add the
    /// outputs with the setters.
    pub fn new<T: Into<TermBuffers<'a>>>(terms: impl IntoIterator<Item = T>) -> Self {
        MixBuffers {
            terms: terms.into_iter().map(Into::into).collect(),
            loss: None,
            grads: Vec::new(),
        }
    }

    /// Sets the loss output.
    pub fn loss(mut self, loss: impl IntoBinding<'a>) -> Self {
        self.loss = Some(loss.into_binding());
        self
    }

    /// Sets the next gradient output (0, 1, ... in the order of the calls).
    pub fn grad(mut self, grad: impl IntoBinding<'a>) -> Self {
        self.grads.push(Some(grad.into_binding()));
        self
    }
}

/// One term's buffers in a [`MixBuffers`]: the buffers struct of the term's family
/// ([`crate::pointwise::PointwiseBuffers`], [`crate::cross_entropy::CrossEntropyBuffers`], ...), made with `.into()`.
#[derive(Clone, Debug)]
pub struct TermBuffers<'a>(UserBindings<'a>);

impl<'a, B: Slotted<'a>> From<B> for TermBuffers<'a> {
    fn from(b: B) -> Self {
        TermBuffers(b.bindings())
    }
}

/// The caller's buffers bound to a mix's passes.
#[derive(Debug)]
pub struct MixBound {
    terms: Vec<Bound>,
    /// The bind group of each term's steps.
    steps: Locked<Vec<Vec<wgpu::BindGroup>>>,
}

/// What [`Context::loss`] on a [`MixDesc`] returns: the weighted sum of the losses (reduced, or per element) and
/// each gradient output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MixOutput {
    /// The reduced sum, when the terms are reduced.
    pub value: Option<f32>,
    /// The per-element sum, when the terms are not reduced.
    pub per_element: Option<Vec<f32>>,
    /// Each gradient output (None where its terms write no gradient).
    pub grads: Vec<Option<Vec<f32>>>,
}

/// The windows of an output of `elements` f32 (first element, length): the engine's windows of
/// whole workgroups' elements, each bound from its first element.
fn windows(ctx: &Context, elements: u64) -> Result<Vec<(u64, u64)>> {
    let spans = Windowing {
        units: elements,
        unit_elems: 1,
        per_wg: (WG * K) as u64,
        tail_elems: 0,
        sizes: &[4],
        what: "mix output",
    }
    .spans(ctx)?;
    debug_assert!(spans.iter().all(|s| s.base == s.first));
    Ok(spans.iter().map(|s| (s.first, s.units)).collect())
}

impl MixPasses {
    /// Plans every term and the kernel that adds them.
    async fn new(ctx: &Context, desc: &MixDesc) -> Result<Self> {
        let outputs = desc.check()?;
        let mut terms = Vec::with_capacity(desc.len());
        for t in &desc.terms {
            let program = t.loss.program(ctx).await?;
            if program.in_place() {
                return Err(Error::option(
                    "in_place",
                    "a mix's term writes its gradient into the mix's scratch, not over its input",
                ));
            }
            if program.result_slot(Field::GradLinear).is_some() {
                return Err(Error::option(
                    "terms",
                    "fused linear + cross-entropy writes three gradients; a mix's term writes one",
                ));
            }
            let (loss_slot, grad_slot) = (
                program.result_slot(Field::Loss),
                program.result_slot(Field::Grad),
            );
            let grad_bytes = grad_slot.map_or(0, |s| program.slot_bytes(s));
            if grad_bytes > 0 && program.grad_dtype().0 != DType::F32 {
                return Err(Error::option(
                    "grad_dtype",
                    format!(
                        "{} in a term: a mix adds its terms' gradients in f32",
                        program.grad_dtype().0
                    ),
                ));
            }
            let (_, invalid) = t.loss.term_results();
            terms.push(TermPlan {
                loss: loss_slot.map_or(0, |s| program.slot_bytes(s)) / 4,
                grad: grad_bytes / 4,
                loss_slot,
                grad_slot,
                program,
                invalid,
                steps: Vec::new(),
            });
        }
        // One loss length (or none) over every term, one reduction shape.
        let loss = terms[0].loss;
        let reduced = desc.terms[0].loss.term_results().0.is_reduced();
        for (t, d) in terms.iter().zip(&desc.terms) {
            if t.loss != loss || (loss > 0 && d.loss.term_results().0.is_reduced() != reduced) {
                return Err(Error::option(
                    "reduction",
                    "a mix's terms all write their loss (all reduced, or all per element of one \
                     length) or none does",
                ));
            }
        }
        // One gradient length (or none) over the terms of each output.
        let mut grads = vec![None; outputs];
        for (t, d) in terms.iter().zip(&desc.terms) {
            match grads[d.grad] {
                None => grads[d.grad] = Some(t.grad),
                Some(n) if n == t.grad => {}
                Some(_) => {
                    return Err(Error::option(
                        "grad",
                        format!(
                            "the terms of gradient output {} write gradients of different \
                             lengths (or some none)",
                            d.grad
                        ),
                    ));
                }
            }
        }
        let grads: Vec<u64> = grads.into_iter().map(|g| g.unwrap_or(0)).collect();
        // The steps, and their uniforms at offsets a uniform binding allows.
        let stride = (ctx.limits().min_uniform_buffer_offset_alignment as u64)
            .max(std::mem::size_of::<MixParams>() as u64);
        let mut uniforms: Vec<u8> = Vec::new();
        let mut seen_loss = false;
        let mut seen_grad = vec![false; outputs];
        for (t, d) in terms.iter_mut().zip(&desc.terms) {
            let mut outs = Vec::new();
            if t.loss > 0 {
                outs.push((Dst::Loss, t.loss, !std::mem::replace(&mut seen_loss, true)));
            }
            if t.grad > 0 {
                let first = !std::mem::replace(&mut seen_grad[d.grad], true);
                outs.push((Dst::Grad(d.grad), t.grad, first));
            }
            for (dst, elements, first) in outs {
                for (start, len) in windows(ctx, elements)? {
                    let workgroups = fold(ctx, len.div_ceil((WG * K) as u64))?;
                    let params = MixParams {
                        len: len as u32,
                        wg_x: workgroups.0,
                        first: first as u32,
                        weight: d.weight,
                    };
                    let uniform = uniforms.len() as u64;
                    uniforms.extend_from_slice(bytemuck::bytes_of(&params));
                    uniforms.resize((uniform + stride) as usize, 0);
                    t.steps.push(Step {
                        dst,
                        first: start,
                        len,
                        uniform,
                        workgroups,
                    });
                }
            }
        }
        let key = PipelineKey::new(&MIX, "main")
            .constant("WG", WG)
            .constant("SEG", WG)
            .constant("K", K);
        let pipeline = ctx.pipeline(&key).await?;
        let align = (ctx.limits().min_storage_buffer_offset_alignment as u64).max(4);
        let grad_at = (4 * loss).next_multiple_of(align);
        let scratch_bytes = grad_at + 4 * terms.iter().map(|t| t.grad).max().unwrap_or(0);
        let (scratch, uniforms, popped) = {
            let _guard = ctx.lock();
            let device = ctx.device();
            let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let scratch = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-loss.mix.scratch"),
                size: scratch_bytes.max(4),
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgpu-loss.mix.params"),
                contents: if uniforms.is_empty() {
                    &[0; 16]
                } else {
                    &uniforms
                },
                usage: wgpu::BufferUsages::UNIFORM,
            });
            (scratch, uniforms, scope.pop())
        };
        if let Some(e) = popped.await {
            return Err(Error::from_wgpu(e));
        }
        Ok(MixPasses {
            ctx: ctx.clone(),
            terms,
            loss,
            reduced,
            grads,
            grad_at,
            pipeline,
            scratch: Locked::new(ctx, scratch),
            uniforms: Locked::new(ctx, uniforms),
        })
    }

    /// Checks `buffers` against the mix (each term's inputs as its plan does, the outputs present
    /// exactly where written, large enough, overlapping no other range) and creates their bind
    /// groups.
    fn bind(&self, buffers: &MixBuffers<'_>) -> Result<MixBound> {
        for b in &buffers.terms {
            let written = |s: &Slot| matches!(s.field(), Some(Field::Loss | Field::Grad));
            if let Some((s, _)) = b.0.iter().find(|(s, _)| written(s)) {
                return Err(Error::Binding(
                    s.name(),
                    "a mix's term writes into the mix: set MixBuffers' outputs instead",
                ));
            }
        }
        let slots: Vec<UserBindings<'_>> = buffers.terms.iter().map(|t| t.0.clone()).collect();
        self.bind_slots(&slots, buffers.loss.clone(), &buffers.grads)
    }

    /// [`MixPasses::bind`] on each term's ranges in slot order.
    fn bind_slots(
        &self,
        terms: &[UserBindings<'_>],
        loss: Option<wgpu::BufferBinding<'_>>,
        grads: &[Option<wgpu::BufferBinding<'_>>],
    ) -> Result<MixBound> {
        crate::plan::check_count(
            "mix term buffers (one a term)",
            self.terms.len() as u64,
            terms.len(),
        )?;
        if grads.len() > self.grads.len() {
            return Err(Error::Binding(
                "grads",
                "more gradient outputs than the mix has",
            ));
        }
        let align = (self.ctx.limits().min_storage_buffer_offset_alignment as u64).max(4);
        let mut outputs: Vec<(&'static str, Dst, &wgpu::BufferBinding<'_>)> = Vec::new();
        let wanted = std::iter::once(("loss", Dst::Loss, self.loss, loss.as_ref())).chain(
            self.grads.iter().enumerate().map(|(g, &n)| {
                let given = grads.get(g).and_then(|b| b.as_ref());
                ("grad", Dst::Grad(g), n, given)
            }),
        );
        for (name, dst, elements, given) in wanted {
            match (elements, given) {
                (0, None) => {}
                (0, Some(_)) => return Err(Error::Binding(name, "not written by this mix")),
                (_, None) => return Err(Error::Binding(name, "written by this mix, not given")),
                (n, Some(b)) => {
                    let usage = b.buffer.usage();
                    if !usage.contains(wgpu::BufferUsages::STORAGE) {
                        return Err(Error::MissingUsage {
                            binding: name,
                            needed: wgpu::BufferUsages::STORAGE,
                            actual: usage,
                        });
                    }
                    if !b.offset.is_multiple_of(align) {
                        return Err(Error::Misaligned {
                            binding: name,
                            offset: b.offset,
                            alignment: align,
                        });
                    }
                    if b.offset.saturating_add(range_len(b)) > b.buffer.size() {
                        return Err(Error::Binding(
                            name,
                            "range runs past the end of its buffer",
                        ));
                    }
                    if range_len(b) < 4 * n {
                        return Err(Error::BufferTooSmall {
                            binding: name,
                            needed: 4 * n,
                            actual: range_len(b),
                        });
                    }
                    outputs.push((name, dst, b));
                }
            }
        }
        // An output may overlap no other output, and no range a term reads or writes (a later
        // term would read what the mix wrote).
        let elements = |dst: Dst| match dst {
            Dst::Loss => self.loss,
            Dst::Grad(g) => self.grads[g],
        };
        let overlap =
            |a: &wgpu::BufferBinding<'_>, an: u64, b: &wgpu::BufferBinding<'_>, bn: u64| {
                a.buffer == b.buffer && a.offset < b.offset + bn && b.offset < a.offset + an
            };
        for (i, &(name, dst, b)) in outputs.iter().enumerate() {
            for &(other, odst, o) in &outputs[i + 1..] {
                if overlap(b, 4 * elements(dst), o, 4 * elements(odst)) {
                    return Err(Error::Aliased { a: name, b: other });
                }
            }
            for term in terms {
                for (role, r) in term.iter() {
                    if overlap(b, 4 * elements(dst), r, range_len(r)) {
                        return Err(Error::Aliased {
                            a: name,
                            b: role.name(),
                        });
                    }
                }
            }
        }
        let scratch_range = |at: u64, elements: u64| wgpu::BufferBinding {
            buffer: &self.scratch,
            offset: at,
            size: NonZeroU64::new(4 * elements),
        };
        let mut bound = Vec::with_capacity(self.terms.len());
        for (t, b) in self.terms.iter().zip(terms) {
            let mut slots = b.clone();
            if let Some(s) = t.loss_slot {
                slots.set(s, Some(scratch_range(0, t.loss)));
            }
            if let Some(s) = t.grad_slot {
                slots.set(s, Some(scratch_range(self.grad_at, t.grad)));
            }
            bound.push(t.program.bind(&slots)?);
        }
        let output = |dst: Dst| {
            outputs
                .iter()
                .find(|o| o.1 == dst)
                .map(|o| o.2)
                .expect("checked above")
        };
        let _guard = self.ctx.lock();
        let device = self.ctx.device();
        let steps = self
            .terms
            .iter()
            .map(|t| {
                t.steps
                    .iter()
                    .map(|s| {
                        let (dst, src_at) = match s.dst {
                            Dst::Loss => (output(Dst::Loss), 0),
                            Dst::Grad(g) => (output(Dst::Grad(g)), self.grad_at),
                        };
                        let window = |buffer, offset| {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer,
                                offset,
                                size: NonZeroU64::new(4 * s.len),
                            })
                        };
                        device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("wgpu-loss.mix"),
                            layout: &self.pipeline.layout,
                            entries: &[
                                wgpu::BindGroupEntry {
                                    binding: 0,
                                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                        buffer: &self.uniforms,
                                        offset: s.uniform,
                                        size: NonZeroU64::new(
                                            std::mem::size_of::<MixParams>() as u64
                                        ),
                                    }),
                                },
                                wgpu::BindGroupEntry {
                                    binding: 1,
                                    resource: window(dst.buffer, dst.offset + 4 * s.first),
                                },
                                wgpu::BindGroupEntry {
                                    binding: 2,
                                    resource: window(&self.scratch, src_at + 4 * s.first),
                                },
                            ],
                        })
                    })
                    .collect()
            })
            .collect();
        Ok(MixBound {
            terms: bound,
            steps: Locked::new(&self.ctx, steps),
        })
    }

    /// Records the mix into `encoder`: each term's passes, then its weighted addition into the
    /// outputs, in the terms' order; timestamps at the start of the first pass and the end of
    /// the last. Nothing is submitted; the results stay on the GPU.
    fn record_mix(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bindings: &MixBound,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) {
        let last = self.terms.len() - 1;
        for (k, ((t, bound), groups)) in self
            .terms
            .iter()
            .zip(&bindings.terms)
            .zip(bindings.steps.iter())
            .enumerate()
        {
            let start =
                timestamps
                    .as_ref()
                    .filter(|_| k == 0)
                    .map(|ts| wgpu::ComputePassTimestampWrites {
                        query_set: ts.query_set,
                        beginning_of_pass_write_index: ts.beginning_of_pass_write_index,
                        end_of_pass_write_index: None,
                    });
            t.program.record(encoder, bound, start);
            let end = timestamps.as_ref().filter(|_| k == last).map(|ts| {
                wgpu::ComputePassTimestampWrites {
                    query_set: ts.query_set,
                    beginning_of_pass_write_index: None,
                    end_of_pass_write_index: ts.end_of_pass_write_index,
                }
            });
            let _guard = self.ctx.lock();
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgpu-loss.mix"),
                timestamp_writes: end,
            });
            pass.set_pipeline(&self.pipeline.pipeline);
            for (s, group) in t.steps.iter().zip(groups) {
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(s.workgroups.0, s.workgroups.1, 1);
            }
        }
    }

    /// Records the mix, then copies of the terms' status words and of `reads` (the first
    /// `bytes` of each buffer) into one staging buffer; submits, waits, checks the statuses and
    /// returns the bytes of `reads`, each at a multiple of 4. Within error scopes, so that
    /// running out of memory is an error.
    fn submit(&self, bindings: &MixBound, reads: &[(&wgpu::Buffer, u64)]) -> Result<Vec<u8>> {
        let ctx = &self.ctx;
        let device = ctx.device();
        let data = transfer::scoped(ctx, || {
            let statuses = 16 * self.terms.len() as u64;
            let total = statuses + reads.iter().map(|r| r.1.next_multiple_of(4)).sum::<u64>();
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-loss.mix.readback"),
                size: total,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgpu-loss.mix"),
            });
            self.record_mix(&mut encoder, bindings, None);
            for (k, t) in self.terms.iter().enumerate() {
                encoder.copy_buffer_to_buffer(t.program.scratch(), 0, &staging, 16 * k as u64, 16);
            }
            let mut at = statuses;
            for &(buffer, bytes) in reads {
                let bytes = bytes.next_multiple_of(4);
                encoder.copy_buffer_to_buffer(buffer, 0, &staging, at, bytes);
                at += bytes;
            }
            ctx.queue().submit([encoder.finish()]);
            transfer::map_read(ctx, &staging)
        })?;
        for (k, t) in self.terms.iter().enumerate() {
            let words = bytemuck::pod_collect_to_vec(&data[16 * k..16 * (k + 1)]);
            Status::from_words(&words).check(t.invalid)?;
        }
        Ok(data[16 * self.terms.len()..].to_vec())
    }
}

impl Passes for MixPasses {
    type Bound = MixBound;

    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bound: &MixBound,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()> {
        self.record_mix(encoder, bound, timestamps);
        Ok(())
    }

    /// The terms' dispatches and the mix kernel's.
    fn dispatch_count(&self) -> usize {
        self.terms
            .iter()
            .map(|t| t.program.dispatch_count() + t.steps.len())
            .sum()
    }

    /// The terms' plans, the mix's scratch and parameters.
    fn device_bytes(&self) -> u64 {
        self.scratch.size()
            + self.uniforms.size()
            + self
                .terms
                .iter()
                .map(|t| t.program.device_bytes())
                .sum::<u64>()
    }

    /// Each term's invalid inputs are named by the term.
    fn run(&self, bound: &MixBound, _invalid: &'static str) -> Result<()> {
        self.submit(bound, &[]).map(drop)
    }

    /// The terms' invalid inputs together: their count, and the first term's first.
    fn read_status(&self) -> Result<Status> {
        let mut total = Status::default();
        for t in &self.terms {
            let s = transfer::read_status(&t.program)?;
            total.invalid += s.invalid;
            total.first = total.first.or(s.first);
        }
        Ok(total)
    }
}

impl Family for MixDesc {
    type Buffers<'a> = MixBuffers<'a>;
    type Inputs<'a> = [Inputs<'a>];
    type Output = MixOutput;
    type Passes = MixPasses;

    async fn plan(&self, ctx: &Context) -> Result<MixPasses> {
        MixPasses::new(ctx, self).await
    }

    fn bind(&self, passes: &MixPasses, buffers: &MixBuffers<'_>) -> Result<MixBound> {
        passes.bind(buffers)
    }

    fn invalid(&self) -> &'static str {
        "mix terms"
    }

    /// One [`Inputs`] a term (terms over the same prediction take the same slices), each
    /// checked against its term.
    fn check_inputs(&self, inputs: &[Inputs<'_>]) -> Result<()> {
        self.host(inputs).map(drop)
    }

    /// Uploads the terms' inputs, runs the mix in one submission, and reads the sum and the
    /// gradients back.
    fn run_host(
        &self,
        mix: &MixPasses,
        inputs: &[Inputs<'_>],
        grad: Option<&mut crate::dtype::ValuesMut<'_>>,
    ) -> Result<MixOutput> {
        if grad.is_some() {
            return Err(Error::Binding(
                "grad",
                "a weighted sum returns each of its gradient outputs in its MixOutput",
            ));
        }
        let host = self.host(inputs)?;
        let ctx = &mix.ctx;
        let made = transfer::scoped(ctx, || {
            // Each term's inputs, and buffers for the side outputs a term writes (unread).
            let terms: Vec<Vec<(Slot, wgpu::Buffer)>> = mix
                .terms
                .iter()
                .zip(&host)
                .map(|(t, h)| {
                    let p = &t.program;
                    p.used_slots()
                        .filter(|&(s, _)| Some(s) != t.loss_slot && Some(s) != t.grad_slot)
                        .filter_map(|(slot, bytes)| {
                            let buffer = match h.get(slot.index()) {
                                Some(d) => transfer::upload(ctx, &slot.label(), d),
                                None if p.writes(slot) => {
                                    transfer::output(ctx, &slot.label(), bytes)
                                }
                                None => return None,
                            };
                            Some((slot, buffer))
                        })
                        .collect()
                })
                .collect();
            let loss =
                (mix.loss > 0).then(|| transfer::output(ctx, "wgpu-loss.mix.loss", 4 * mix.loss));
            let grads: Vec<Option<wgpu::Buffer>> = mix
                .grads
                .iter()
                .map(|&n| (n > 0).then(|| transfer::output(ctx, "wgpu-loss.mix.grad", 4 * n)))
                .collect();
            let slots: Vec<UserBindings<'_>> = terms
                .iter()
                .map(|b| {
                    b.iter().fold(UserBindings::default(), |u, (s, b)| {
                        u.with(*s, Some(b.as_entire_buffer_binding()))
                    })
                })
                .collect();
            let bindings = mix.bind_slots(
                &slots,
                loss.as_ref().map(|b| b.as_entire_buffer_binding()),
                &grads
                    .iter()
                    .map(|g| g.as_ref().map(|b| b.as_entire_buffer_binding()))
                    .collect::<Vec<_>>(),
            )?;
            let mut reads = Vec::new();
            if let Some(l) = &loss {
                reads.push((l, 4 * mix.loss));
            }
            for (g, &n) in grads.iter().zip(&mix.grads) {
                if let Some(g) = g {
                    reads.push((g, 4 * n));
                }
            }
            mix.submit(&bindings, &reads)
        })?;
        let data: Vec<f32> = bytemuck::pod_collect_to_vec(&made);
        let (mut out, mut at) = (MixOutput::default(), 0);
        if mix.loss > 0 {
            let losses = data[..mix.loss as usize].to_vec();
            at = mix.loss as usize;
            if mix.reduced {
                out.value = losses.first().copied();
            } else {
                out.per_element = Some(losses);
            }
        }
        for &n in &mix.grads {
            out.grads.push((n > 0).then(|| {
                at += n as usize;
                data[at - n as usize..at].to_vec()
            }));
        }
        Ok(out)
    }
}

impl Plan<MixDesc> {
    /// Elements of the loss output (0: none), and of each gradient output (0: none).
    pub fn output_elements(&self) -> (u64, &[u64]) {
        (self.passes().loss, &self.passes().grads)
    }
}

impl Context {
    /// A weighted sum of losses on host data: [`Context::loss`] on `desc`, one [`Inputs`] a term.
    pub fn mix(&self, desc: &MixDesc, inputs: &[Inputs<'_>]) -> Result<MixOutput> {
        self.loss(desc, inputs)
    }
}
