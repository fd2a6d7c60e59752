//! The one public shape of every loss: a description ([`LossDesc`]: what to compute, for one
//! shape), a [`Plan`] built from it (pipelines compiled, parameters and scratch memory
//! allocated), the caller's buffers (named by the family: [`crate::pointwise::PointwiseBuffers`],
//! ...) bound to it once ([`Bindings`]), and any number of
//! recordings into the caller's command encoders. The convenience level, [`Context::loss`],
//! takes host slices ([`Inputs`]) and returns a [`LossOutput`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dtype::{DType, Values, ValuesMut};
use crate::engine::context::Context;
use crate::engine::program::{Bound, Builder, Program, Status};
pub(crate) use crate::engine::slots::HostData;
use crate::engine::slots::{Slot, UserBindings};
use crate::engine::transfer;
use crate::error::{Error, Result};
use crate::reduction::Reference;
use crate::reduction::{Field, LossOutput, Reduction};
use sealed::Passes;

/// What a loss family's description does for the engine; sealed: the families are this crate's.
pub(crate) mod sealed {
    use super::*;

    /// What every family gives [`Plan`]: the caller's buffers it binds, what it plans on the
    /// device, and what its convenience call takes and returns.
    pub trait Family {
        /// The caller's buffers (or textures) for one plan.
        type Buffers<'a>;
        /// Host data for [`Context::loss`].
        type Inputs<'a>: ?Sized;
        /// What [`Context::loss`] returns.
        type Output;
        /// What a plan owns on the device: its passes.
        type Passes: Passes;
        /// Checks the description and plans its passes on `ctx`.
        fn plan(&self, ctx: &Context) -> impl Future<Output = Result<Self::Passes>>;
        /// Checks the caller's buffers against the passes and creates their bind groups.
        fn bind(
            &self,
            passes: &Self::Passes,
            buffers: &Self::Buffers<'_>,
        ) -> Result<<Self::Passes as Passes>::Bound>;
        /// What the kernels count as invalid input (for [`Error::InvalidOnGpu`]).
        fn invalid(&self) -> &'static str;
        /// Checks `inputs` against the description (before anything is planned).
        fn check_inputs(&self, inputs: &Self::Inputs<'_>) -> Result<()>;
        /// Uploads `inputs`, runs the passes and reads the results back; the gradient into
        /// `grad` when given (a family whose output holds several gradients refuses it).
        fn run_host(
            &self,
            passes: &Self::Passes,
            inputs: &Self::Inputs<'_>,
            grad: Option<&mut ValuesMut<'_>>,
        ) -> Result<Self::Output>;
    }

    /// A family's passes on the device.
    pub trait Passes: Send + Sync + 'static {
        /// The bind groups of the caller's buffers.
        type Bound: std::fmt::Debug + Send + Sync + 'static;
        /// Records one run into `encoder`.
        fn record(
            &self,
            encoder: &mut wgpu::CommandEncoder,
            bound: &Self::Bound,
            timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
        ) -> Result<()>;
        /// Compute dispatches one run records.
        fn dispatch_count(&self) -> usize;
        /// Device memory the passes own beside the caller's buffers.
        fn device_bytes(&self) -> u64;
        /// Records, submits, waits; invalid inputs the kernels counted are
        /// [`Error::InvalidOnGpu`] naming `invalid`.
        fn run(&self, bound: &Self::Bound, invalid: &'static str) -> Result<()>;
        /// The invalid inputs the last run counted.
        fn read_status(&self) -> Result<Status>;
    }

    /// A family's buffers struct: its fields mapped onto the family's slots.
    pub trait Slotted<'a> {
        /// The ranges given, each at its slot.
        fn bindings(&self) -> UserBindings<'a>;
    }

    /// A loss over tensors in buffers, with host data in [`Inputs`]: one program of dispatches.
    pub trait Tensors {
        /// The caller's buffers, named by the family.
        type Ranges<'a>: Slotted<'a>;
        /// Checks the description and describes its program to `b`: the slots it uses and the
        /// dispatches that compute it.
        fn layout(&self, b: &mut Builder<'_>) -> Result<()>;
        /// The reduction (how the convenience level shapes its output), and what the kernels
        /// count as invalid input (for [`Error::InvalidOnGpu`]).
        fn results(&self) -> (Reduction, &'static str);
        /// Checks host inputs against the description; returns the bytes of each input slot.
        fn host<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>>;

        /// [`Tensors::host`], refusing an optional input given to a loss that takes none (one
        /// for which the family's host data has no slot of its name).
        fn host_data<'a>(&self, inputs: &Inputs<'a>) -> Result<HostData<'a>> {
            let host = self.host(inputs)?;
            let given = [
                ("weight", inputs.weight.is_some()),
                ("pos_weight", inputs.pos_weight.is_some()),
                ("grad_output", inputs.grad_output.is_some()),
                ("shard_scale", inputs.shard_scale.is_some()),
                ("linear", inputs.linear.is_some()),
                ("bias", inputs.bias.is_some()),
            ];
            match given.iter().find(|&&(name, g)| g && !host.has(name)) {
                Some(&(name, _)) => Err(Error::Binding(
                    name,
                    "given, not declared by the description",
                )),
                None => Ok(host),
            }
        }
    }

    impl<T: Tensors> Family for T {
        type Buffers<'a> = T::Ranges<'a>;
        type Inputs<'a> = Inputs<'a>;
        type Output = LossOutput;
        type Passes = Program;

        async fn plan(&self, ctx: &Context) -> Result<Program> {
            let mut b = Builder::new(ctx);
            self.layout(&mut b)?;
            b.finish().await
        }

        fn bind(&self, passes: &Program, buffers: &T::Ranges<'_>) -> Result<Bound> {
            passes.bind(&buffers.bindings())
        }

        fn invalid(&self) -> &'static str {
            self.results().1
        }

        fn check_inputs(&self, inputs: &Inputs<'_>) -> Result<()> {
            self.host_data(inputs).map(drop)
        }

        fn run_host(
            &self,
            passes: &Program,
            inputs: &Inputs<'_>,
            grad: Option<&mut ValuesMut<'_>>,
        ) -> Result<LossOutput> {
            let host = self.host_data(inputs)?;
            let (reduction, invalid) = self.results();
            transfer::run_host(passes, &host, reduction, invalid, grad)
        }
    }

    impl Passes for Program {
        type Bound = Bound;

        fn record(
            &self,
            encoder: &mut wgpu::CommandEncoder,
            bound: &Bound,
            timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
        ) -> Result<()> {
            Program::record(self, encoder, bound, timestamps);
            Ok(())
        }

        fn dispatch_count(&self) -> usize {
            Program::dispatch_count(self)
        }

        fn device_bytes(&self) -> u64 {
            Program::device_bytes(self)
        }

        fn run(&self, bound: &Bound, invalid: &'static str) -> Result<()> {
            transfer::run_resident(self, bound)?.check(invalid)
        }

        fn read_status(&self) -> Result<Status> {
            transfer::read_status(self)
        }
    }

    /// The f64 CPU twin of a family's plan on host inputs, implemented beside the twin in
    /// `cpu/` (so that no family depends on its twin).
    pub trait Twin {
        /// The twin's result on `inputs`.
        fn reference(&self, inputs: &Inputs<'_>) -> Result<Reference>;
    }
}

/// Builder-style setters of a description's fields: `name(value)` sets the field, or for the
/// `optional` ones (declared as `Option<T>`, given as `T`) sets `Some(value)`.
macro_rules! setters {
    (
        $ty:ident { $($(#[$m:meta])* $name:ident: $t:ty),* $(,)? }
        $(optional { $($(#[$om:meta])* $oname:ident: $ot:ty),* $(,)? })?
    ) => {
        impl $ty {
            $(
                $(#[$m])*
                pub fn $name(mut self, $name: $t) -> Self {
                    self.$name = $name;
                    self
                }
            )*
            $($(
                $(#[$om])*
                pub fn $oname(mut self, $oname: $ot) -> Self {
                    self.$oname = Some($oname);
                    self
                }
            )*)?
        }
    };
}
pub(crate) use setters;

/// The setters of [`Inputs`]' optional f32 slices.
macro_rules! slice_setters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$m])*
            pub fn $name(mut self, $name: &'a [f32]) -> Self {
                self.$name = Some($name);
                self
            }
        )*
    };
}

/// A loss description: what to compute for one shape, and what a [`Plan`] of it binds and
/// [`Context::loss`] takes ([`crate::PointwiseDesc`], [`crate::CrossEntropyDesc`],
/// [`crate::NllDesc`], [`crate::ClassicCrossEntropyDesc`], [`crate::LinearCrossEntropyDesc`],
/// [`crate::CustomLossDesc`], [`crate::ImageDesc`], [`crate::MixDesc`]). Every description has
/// the same builder methods for what every loss shares: `reduction`, `outputs` and `weight`.
pub trait LossDesc:
    sealed::Family + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
}

impl<D: sealed::Family + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static> LossDesc
    for D
{
}

/// A loss over tensors in buffers, with host data in [`Inputs`] and an f64 twin
/// ([`crate::cpu::reference`]): every description but the image losses' and the weighted sums'.
/// A [`crate::MixDesc`]'s terms are these.
pub trait TensorLoss:
    LossDesc
    + sealed::Tensors
    + sealed::Twin
    + for<'a> sealed::Family<Inputs<'a> = Inputs<'a>, Output = LossOutput>
{
}

impl<D> TensorLoss for D where
    D: sealed::Tensors + sealed::Twin + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
}

/// Host data for [`Context::loss`] and [`crate::cpu::reference`]: the input (predictions,
/// logits, log-probabilities or probabilities, as the loss takes) and real-valued targets in the
/// description's dtype ([`Values`]: f32, f16 or bf16 slices), class indices, and the optional
/// weights (f32), laid out like the GPU buffers.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The input, shaped as the description says.
    pub input: Values<'a>,
    /// The target.
    pub target: Target<'a>,
    /// The weight the description declares.
    pub weight: Option<&'a [f32]>,
    /// BCE with logits' positive-class weight.
    pub pos_weight: Option<&'a [f32]>,
    /// The upstream gradient of a description that takes one (`grad_output`): one value for a
    /// reduced loss, one a row for [`crate::Reduction::None`].
    pub grad_output: Option<&'a [f32]>,
    /// A vocabulary shard's gradient step: the combined statistics of every shard
    /// ([`crate::cross_entropy::combine_shards`]'s `scale`, 4 a row).
    pub shard_scale: Option<&'a [f32]>,
    /// Fused linear + cross-entropy's layer weight `[V, D]` (the input is then the hidden
    /// states `[N, D]`), in the description's dtype.
    pub linear: Option<Values<'a>>,
    /// Fused linear + cross-entropy's layer bias `[V]`.
    pub bias: Option<&'a [f32]>,
}

/// A target on the host: values shaped like the input, or one class index a row.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// Values (pointwise targets, probability targets, target distributions), in the input's
    /// dtype.
    Values(Values<'a>),
    /// Class indices, checked on the host (each in `[0, C)` or the ignore index).
    Classes(&'a [i64]),
}

impl<'a> Inputs<'a> {
    /// An input and a target of values (slices of `f32`, [`crate::f16`] or [`crate::bf16`]).
    pub fn new(input: impl Into<Values<'a>>, target: impl Into<Values<'a>>) -> Self {
        Inputs {
            input: input.into(),
            target: Target::Values(target.into()),
            weight: None,
            pos_weight: None,
            grad_output: None,
            shard_scale: None,
            linear: None,
            bias: None,
        }
    }

    /// An input and class-index targets.
    pub fn classes(input: impl Into<Values<'a>>, targets: &'a [i64]) -> Self {
        Inputs {
            target: Target::Classes(targets),
            ..Inputs::new(input, &[] as &[f32])
        }
    }

    slice_setters!(
        /// Sets the weight.
        weight,
        /// Sets the positive-class weight.
        pos_weight,
        /// Sets the upstream gradient.
        grad_output,
        /// Sets a shard's combined statistics (its gradient step).
        shard_scale,
    );

    /// Sets a linear layer's weight `[V, D]` (fused linear + cross-entropy).
    pub fn linear(mut self, linear: impl Into<Values<'a>>) -> Self {
        self.linear = Some(linear.into());
        self
    }

    slice_setters!(
        /// Sets a linear layer's bias `[V]` (fused linear + cross-entropy).
        bias,
    );

    /// The target values, or an error for a loss that takes values.
    pub(crate) fn values(&self) -> Result<Values<'a>> {
        match self.target {
            Target::Values(v) => Ok(v),
            Target::Classes(_) => Err(Error::option(
                "targets",
                "class indices given to a loss whose targets are values",
            )),
        }
    }

    /// The class indices, or an error for a loss that takes class indices.
    pub(crate) fn class_indices(&self) -> Result<&'a [i64]> {
        match self.target {
            Target::Classes(c) => Ok(c),
            Target::Values(_) => Err(Error::option(
                "targets",
                "values given to a loss whose targets are class indices",
            )),
        }
    }
}

/// A range of a buffer to bind: `&wgpu::Buffer` (the whole buffer) or a
/// [`wgpu::BufferBinding`] (an offset and size within it, e.g. a slice of an arena).
pub trait IntoBinding<'a> {
    /// The range.
    fn into_binding(self) -> wgpu::BufferBinding<'a>;
}

impl<'a> IntoBinding<'a> for &'a wgpu::Buffer {
    fn into_binding(self) -> wgpu::BufferBinding<'a> {
        self.as_entire_buffer_binding()
    }
}

impl<'a> IntoBinding<'a> for wgpu::BufferBinding<'a> {
    fn into_binding(self) -> wgpu::BufferBinding<'a> {
        self
    }
}

/// The slots every loss over tensors shares, at the same places (a family adds its own from
/// index 5, and may name these differently: the fused loss's `hidden`).
pub(crate) mod roles {
    use super::{Field, Slot};

    /// The input: predictions, logits, log-probabilities or probabilities.
    pub const INPUT: Slot = Slot::new(0, "input");
    /// The target: values in the input's dtype, or class indices (i32).
    pub const TARGET: Slot = Slot::new(1, "target");
    /// The weight the description declares.
    pub const WEIGHT: Slot = Slot::new(2, "weight");
    /// The loss output.
    pub const LOSS: Slot = Slot::new(3, "loss").result(Field::Loss);
    /// The gradient output.
    pub const GRAD: Slot = Slot::new(4, "grad").result(Field::Grad);
}

/// A family's buffers struct: `pub struct $name<'a>` with its required ranges (given to `new`)
/// and its optional ones (each with a setter of its name), each field bound at its slot.
macro_rules! buffers {
    (
        $(#[$m:meta])*
        $name:ident {
            $($(#[$rm:meta])* $req:ident: $rslot:expr,)*
            ;
            $($(#[$om:meta])* $opt:ident: $oslot:expr,)*
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Debug)]
        pub struct $name<'a> {
            $($(#[$rm])* pub $req: wgpu::BufferBinding<'a>,)*
            $($(#[$om])* pub $opt: Option<wgpu::BufferBinding<'a>>,)*
        }

        impl<'a> $name<'a> {
            /// The ranges every plan of the family reads; add the rest with the setters.
            pub fn new($($req: impl $crate::plan::IntoBinding<'a>),*) -> Self {
                $name {
                    $($req: $req.into_binding(),)*
                    $($opt: None,)*
                }
            }

            $(
                $(#[$om])*
                pub fn $opt(mut self, $opt: impl $crate::plan::IntoBinding<'a>) -> Self {
                    self.$opt = Some($opt.into_binding());
                    self
                }
            )*
        }

        impl<'a> $crate::plan::sealed::Slotted<'a> for $name<'a> {
            fn bindings(&self) -> $crate::engine::slots::UserBindings<'a> {
                $crate::engine::slots::UserBindings::default()
                    $(.with($rslot, Some(self.$req.clone())))*
                    $(.with($oslot, self.$opt.clone()))*
            }
        }
    };
}
pub(crate) use buffers;

/// A loss planned for one description: pipelines compiled, parameters and scratch memory
/// allocated. Bind buffers to it ([`Plan::bind`]) and record it as often as needed. Every
/// family's plan has the same methods; what [`Plan::bind`] takes is the family's buffers struct
/// ([`crate::pointwise::PointwiseBuffers`], [`crate::cross_entropy::CrossEntropyBuffers`],
/// [`crate::nll::NllBuffers`], [`crate::linear_cross_entropy::LinearCrossEntropyBuffers`],
/// [`crate::image::ImageBuffers`], [`crate::mix::MixBuffers`]).
pub struct Plan<D: LossDesc> {
    desc: D,
    passes: D::Passes,
    id: u64,
}

/// The caller's buffers bound to one [`Plan`] (its bind groups): made by [`Plan::bind`], held
/// by the caller (they keep the buffers alive while held), and recorded with that plan only.
pub struct Bindings {
    plan: u64,
    bound: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bindings")
            .field("plan", &self.plan)
            .finish()
    }
}

/// Numbers plans, so that bindings know which plan made them.
static PLANS: AtomicU64 = AtomicU64::new(0);

impl<D: LossDesc> std::fmt::Debug for Plan<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("desc", &self.desc)
            .field("dispatches", &self.passes.dispatch_count())
            .finish()
    }
}

impl<D: LossDesc> Plan<D> {
    /// Plans `desc` on `ctx` (blocking: see [`Plan::new_async`]).
    pub fn new(ctx: &Context, desc: &D) -> Result<Self> {
        pollster::block_on(Self::new_async(ctx, desc))
    }

    /// Plans `desc` on `ctx`, awaiting the device's verdict on the pipelines and buffers
    /// instead of blocking on it (for executors that must not block, such as the browser's).
    pub async fn new_async(ctx: &Context, desc: &D) -> Result<Self> {
        Ok(Plan {
            desc: desc.clone(),
            passes: desc.plan(ctx).await?,
            id: PLANS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// What this plan computes.
    pub fn desc(&self) -> &D {
        &self.desc
    }

    /// The family's passes (for the family's own methods on its plans).
    pub(crate) fn passes(&self) -> &D::Passes {
        &self.passes
    }

    /// How many compute dispatches one run records.
    pub fn dispatch_count(&self) -> usize {
        self.passes.dispatch_count()
    }

    /// The bytes of device memory the plan allocates (its scratch and its parameters), beside
    /// the caller's buffers: what a loss costs in memory beyond its inputs and outputs.
    pub fn device_bytes(&self) -> u64 {
        self.passes.device_bytes()
    }

    /// Checks `buffers` against the plan (present exactly where used, usage, alignment, sizes,
    /// no written range overlapping another) and creates their bind groups.
    pub fn bind(&self, buffers: &<D as sealed::Family>::Buffers<'_>) -> Result<Bindings> {
        Ok(Bindings {
            plan: self.id,
            bound: Box::new(self.desc.bind(&self.passes, buffers)?),
        })
    }

    fn groups<'b>(&self, bindings: &'b Bindings) -> Result<&'b <D::Passes as Passes>::Bound> {
        let other = Error::Binding("bindings", "made by another plan");
        if bindings.plan != self.id {
            return Err(other);
        }
        bindings.bound.downcast_ref().ok_or(other)
    }

    /// Records the loss into `encoder`: its compute passes (and a clear of the plan's status
    /// words). Nothing is submitted; the results stay on the GPU.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder, bindings: &Bindings) -> Result<()> {
        self.record_timed(encoder, bindings, None)
    }

    /// [`Plan::record`] with timestamp writes around the compute pass (a weighted sum's: at the
    /// start of its first pass and the end of its last).
    pub fn record_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bindings: &Bindings,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) -> Result<()> {
        let groups = self.groups(bindings)?;
        self.passes.record(encoder, groups, timestamps)
    }

    /// The convenience level for GPU-resident data: records into an encoder of its own,
    /// submits on the context's queue, waits, and turns invalid inputs the kernels counted
    /// into [`Error::InvalidOnGpu`]. The results are in the bound outputs.
    pub fn run(&self, bindings: &Bindings) -> Result<()> {
        let groups = self.groups(bindings)?;
        self.passes.run(groups, self.desc.invalid())
    }

    /// The invalid inputs the last run counted (class indices out of range, probabilities
    /// outside [0, 1]). Blocks on a small readback.
    pub fn read_status(&self) -> Result<Status> {
        self.passes.read_status()
    }
}

impl Context {
    /// Computes a loss on host data: checks `inputs` against `desc`, uploads them, runs the
    /// plan, and reads the results back. Plans are kept per description in a small cache on
    /// the context (the last few used), so a loop over the same shapes plans once. What it
    /// takes and returns is the family's: [`Inputs`] and a [`LossOutput`] for the losses over
    /// tensors, [`crate::image::ImageInputs`] and a [`LossOutput`] for image losses, one
    /// [`Inputs`] a term and a [`crate::mix::MixOutput`] for weighted sums.
    pub fn loss<D: LossDesc>(
        &self,
        desc: &D,
        inputs: &<D as sealed::Family>::Inputs<'_>,
    ) -> Result<<D as sealed::Family>::Output> {
        desc.check_inputs(inputs)?;
        let plan = self.cached_plan(desc)?;
        desc.run_host(&plan.passes, inputs, None)
    }

    /// [`Context::loss`] with the gradient written into `grad`, the caller's slice, straight
    /// from the read-back (no `Vec` of it is made; the output's `grad` is `None`). `grad` holds
    /// the gradient's elements in its dtype (the description's gradient dtype); for losses
    /// over tensors and image losses.
    ///
    /// # Errors
    /// What [`Context::loss`] returns; [`Error::LengthMismatch`] when `grad` is shorter or
    /// longer than the gradient, [`Error::InvalidOption`] when it is of another dtype, and
    /// [`Error::Binding`] when the description computes no gradient (or several: a weighted
    /// sum's): nothing is computed then, and `grad` is left as it was. After an error of the
    /// kernels' ([`Error::InvalidOnGpu`]) `grad` holds what they computed.
    pub fn loss_into<'g, D: LossDesc>(
        &self,
        desc: &D,
        inputs: &<D as sealed::Family>::Inputs<'_>,
        grad: impl Into<ValuesMut<'g>>,
    ) -> Result<<D as sealed::Family>::Output> {
        let mut grad = grad.into();
        desc.check_inputs(inputs)?;
        let plan = self.cached_plan(desc)?;
        desc.run_host(&plan.passes, inputs, Some(&mut grad))
    }

    /// The plan for `desc` from the convenience calls' cache, planned on a miss. The cache
    /// holds the plans used last.
    pub(crate) fn cached_plan<D: LossDesc>(&self, desc: &D) -> Result<std::sync::Arc<Plan<D>>> {
        self.cached(|p: &Plan<D>| p.desc() == desc, |ctx| Plan::new(ctx, desc))
    }
}

/// The bytes of an optional f32 slice.
pub(crate) fn bytes(data: Option<&[f32]>) -> Option<Cow<'_, [u8]>> {
    data.map(|d| Cow::Borrowed(bytemuck::cast_slice(d)))
}

/// The bytes of host values that must be of the description's `dtype` (`what` names them).
pub(crate) fn value_bytes<'a>(
    what: &'static str,
    values: Values<'a>,
    dtype: DType,
) -> Result<Option<Cow<'a, [u8]>>> {
    values.expect(what, dtype)?;
    Ok(Some(Cow::Borrowed(values.bytes())))
}

/// Checks a description's gradient dtype against its input's: in place, the gradient is
/// written in the input's dtype (over it).
pub(crate) fn check_grad_dtype(dtype: DType, grad: Option<DType>, in_place: bool) -> Result<()> {
    match grad {
        Some(g) if in_place && g != dtype => Err(Error::option(
            "grad_dtype",
            format!("{g} differs from the input's {dtype}, over which the gradient is written"),
        )),
        _ => Ok(()),
    }
}

/// Checks that host data of `actual` elements has the `expected` count of a shape.
pub(crate) fn check_count(what: &'static str, expected: u64, actual: usize) -> Result<()> {
    if expected == actual as u64 {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
            actual,
        })
    }
}

/// Checks an optional input against an optional declared length: both or neither, equal.
pub(crate) fn check_declared(
    what: &'static str,
    declared: Option<usize>,
    given: Option<&[f32]>,
) -> Result<()> {
    match (declared, given) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(Error::Binding(
            what,
            "declared by the description, not given",
        )),
        (None, Some(_)) => Err(Error::Binding(
            what,
            "given, not declared by the description",
        )),
        (Some(n), Some(d)) => check_count(what, n as u64, d.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::context::PLAN_CACHE;
    use crate::families::pointwise::{Pointwise, PointwiseDesc};
    use std::sync::Arc;

    /// The convenience calls plan once per description, keep the last few plans, and the cache
    /// keeps nothing alive once the context's handles are gone.
    #[test]
    fn convenience_calls_reuse_a_bounded_cache_of_plans() {
        let ctx = Context::new().expect("an adapter (CI installs lavapipe)");
        let desc = |len| PointwiseDesc::new(Pointwise::Mse, len);
        let first = ctx.cached_plan(&desc(10)).unwrap();
        assert!(Arc::ptr_eq(&first, &ctx.cached_plan(&desc(10)).unwrap()));
        let other = ctx.cached_plan(&desc(11)).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        // `loss` goes through the cache, and a clone of the context shares it.
        let (x, y) = ([0.5f32; 10], [0.25f32; 10]);
        let out = ctx.clone().loss(&desc(10), &Inputs::new(&x, &y)).unwrap();
        assert_eq!(out.value, Some(0.0625));
        assert!(Arc::ptr_eq(&first, &ctx.cached_plan(&desc(10)).unwrap()));
        // Bounded: PLAN_CACHE other descriptions push the first one out.
        for len in 100..100 + PLAN_CACHE {
            ctx.cached_plan(&desc(len)).unwrap();
        }
        assert_eq!(ctx.cached_plans(), PLAN_CACHE);
        assert!(!Arc::ptr_eq(&first, &ctx.cached_plan(&desc(10)).unwrap()));
        // Cached plans hold the device, not the cache: no cycle keeps the device alive.
        let device = ctx.weak();
        drop((first, other));
        drop(ctx);
        assert!(
            device.upgrade().is_none(),
            "the device outlived its last context"
        );
    }
}
