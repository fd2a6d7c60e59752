//! The device, its queue, and the pipelines compiled for it.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

use super::kernel::{Binding, Kernel, WG};
use super::wgsl;
use crate::error::{Error, Result};

/// What identifies a compiled pipeline: the kernel, its variant, its entry point and its
/// override constants. Its bindings follow from the kernel and variant ([`Kernel::layout`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// The kernel.
    pub kernel: &'static Kernel,
    /// Its entry point.
    pub entry: &'static str,
    /// Preprocessor names and `NAME=value`s, sorted (the context adds `SUBGROUPS` itself).
    pub defines: Vec<String>,
    /// Override constants, sorted by name, values as f64 bits (the context adds `SG_MIN`).
    pub constants: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    /// The pipeline of `entry` of `kernel`, with no defines and no constants.
    pub fn new(kernel: &'static Kernel, entry: &'static str) -> Self {
        PipelineKey {
            kernel,
            entry,
            defines: Vec::new(),
            constants: Vec::new(),
        }
    }

    /// Defines the preprocessor name `name` when `on`.
    pub fn define(mut self, name: &'static str, on: bool) -> Self {
        if on {
            self.defines.push(name.to_string());
            self.defines.sort_unstable();
        }
        self
    }

    /// A preprocessor value (`#const`, `#unroll`).
    pub fn value(mut self, name: &'static str, value: u32) -> Self {
        self.defines.push(format!("{name}={value}"));
        self.defines.sort_unstable();
        self
    }

    /// `NAME=text` for the preprocessor's `#expr NAME` (a custom loss's expression).
    pub fn text(mut self, name: &'static str, text: &str) -> Self {
        self.defines.push(format!("{name}={text}"));
        self.defines.sort_unstable();
        self
    }

    /// Sets the override constant `name` to `value`.
    pub fn constant(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        self.constants.retain(|(n, _)| *n != name);
        self.constants.push((name, value.into().to_bits()));
        self.constants.sort_unstable();
        self
    }
}

/// A compiled pipeline and the layout of its one bind group.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// The layout of its bind group 0.
    pub layout: wgpu::BindGroupLayout,
}

/// How the kernels spread work over invocations. Chosen per adapter by [`Tuning::for_adapter`]
/// from measurements (see docs/tuning.md); a [`ContextOptions`] can override it.
///
/// Every kernel reads its data in runs of `lanes` consecutive vec4s, one per invocation of a
/// lane group, so that each group streams contiguous memory: `lanes` is the subgroup (warp) size
/// on GPUs, and the SIMD width on CPU drivers such as lavapipe, which execute a lane group as one
/// vector instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuning {
    /// Invocations that read consecutive vec4s together (a power of two, at most 256).
    pub lanes: u32,
    /// vec4s each invocation of a streaming kernel (pointwise losses) handles.
    pub stream_vecs: u32,
    /// The most vec4s an invocation holds in registers (cross-entropy rows), at most 32: the
    /// tile of row blocks that one lane group holds this way (`lanes * register_vecs` vec4s
    /// or fewer), and of the chunks and sweeps of longer rows.
    pub register_vecs: u32,
    /// The most vec4s an invocation holds of a row block longer than `lanes * register_vecs`
    /// vec4s that is read once (`register_vecs` to 128): such a block takes the fewest
    /// invocations that hold it in this many each, so that longer rows fit a lane group or a
    /// workgroup (256 times `wide_vecs` vec4s), and a segment's merge has fewer levels. Rows
    /// longer than a workgroup holds are read twice (see `chunk_wide_rows` and
    /// `sweep_long_rows`).
    pub wide_vecs: u32,
    /// Cross-entropy forward + gradient on rows longer than one lane group holds
    /// (`lanes * wide_vecs` vec4s) and no longer than a workgroup holds (256 times
    /// `wide_vecs` vec4s): `true` reads them in lane-group chunks, statistics first, then
    /// the logits again for the gradient (no barrier in any kernel); `false` reads them once,
    /// by segments of several lane groups that merge through workgroup memory. A forward pass
    /// always takes the chunks (its second pass reads only their statistics).
    pub chunk_wide_rows: bool,
    /// Cross-entropy forward + gradient on rows longer than a workgroup holds: `true` sweeps
    /// each block with one workgroup, twice in one dispatch (statistics, then the gradient;
    /// the second read right after the first, from cache where the cache holds the rows in
    /// flight, and barriers in the kernel); `false` reads them in chunks over passes, the
    /// logits twice from memory. Blocks of more than 4,096 chunks are chunked either way.
    pub sweep_long_rows: bool,
}

impl Tuning {
    /// The classes of a cross-entropy row (a multiple of 4) that one lane group holds in
    /// `register_vecs` vec4s an invocation: longer rows take the wide tile (`wide_vecs`).
    pub fn register_tile_classes(self) -> usize {
        (self.lanes * self.register_vecs * 4) as usize
    }

    /// The classes of a cross-entropy row (a multiple of 4) that one lane group holds in
    /// registers: longer rows, with the gradient, take `chunk_wide_rows`' layout.
    pub fn lane_group_classes(self) -> usize {
        (self.lanes * self.wide_vecs * 4) as usize
    }

    /// The classes of a cross-entropy row (a multiple of 4) that one workgroup holds in
    /// registers: longer rows, with the gradient, take `sweep_long_rows`' layout.
    pub fn workgroup_classes(self) -> usize {
        (WG * self.wide_vecs * 4) as usize
    }

    /// The tuning measured best for this kind of adapter. CPU drivers (lavapipe) run a lane
    /// group of their SIMD width (the subgroup size) as one instruction and want long
    /// contiguous runs per invocation; GPUs want warp-wide lane groups and few registers. The
    /// same adapter can want another tuning on another host (on lavapipe, `chunk_wide_rows`
    /// and `sweep_long_rows` depend on the CPU): `wgpu-loss tune` measures the neighbours of
    /// this choice on the machine, for a caller to pin with [`ContextOptions::tuning`]. Nothing
    /// here measures: the layout, and so the bits, of a plan never depend on a timing.
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        let sg = info.subgroup_min_size;
        if info.device_type == wgpu::DeviceType::Cpu {
            Tuning {
                lanes: if (4..=64).contains(&sg) && sg.is_power_of_two() {
                    sg
                } else {
                    8
                },
                stream_vecs: 32,
                register_vecs: 32,
                // The wide tile is off (no larger than the register tile): on the host of
                // "Wide tiles for long rows" (docs/tuning.md) 128 with one read of wide rows
                // took 0.55-0.72 of the time of these choices, but its pipelines take lavapipe
                // far longer to compile, and the other hosts are unmeasured; `tune` measures it.
                wide_vecs: 32,
                // A barrier makes llvmpipe run a whole kernel as coroutines: a second read
                // cost less on the host where this was chosen, and more on another measured
                // since (docs/tuning.md, "Long rows with the gradient" and "A tuning measured
                // on the machine").
                chunk_wide_rows: true,
                // The sweep's barriers too: it lost to the chunks on both hosts measured
                // ("Rows longer than a workgroup, swept once", "Two knobs for long rows").
                sweep_long_rows: false,
            }
        } else {
            Tuning {
                lanes: if (32..=64).contains(&sg) && sg.is_power_of_two() {
                    sg
                } else {
                    32
                },
                stream_vecs: 8,
                register_vecs: 8,
                // Few registers a thread: longer rows are swept.
                wide_vecs: 8,
                // Barriers are cheap on GPUs and memory is what bounds the loss there: read
                // once (not yet measured on a GPU in this project).
                chunk_wide_rows: false,
                sweep_long_rows: true,
            }
        }
    }

    fn check(self) -> Result<Self> {
        let ok = self.lanes.is_power_of_two()
            && self.lanes <= 256
            && (1..=64).contains(&self.stream_vecs)
            && (1..=32).contains(&self.register_vecs)
            && (self.register_vecs..=128).contains(&self.wide_vecs);
        if ok {
            Ok(self)
        } else {
            Err(Error::option(
                "tuning",
                format!(
                    "{self:?}: lanes a power of two <= 256, stream_vecs 1..=64, register_vecs 1..=32, wide_vecs register_vecs..=128"
                ),
            ))
        }
    }
}

/// How to pick and set up the device when wgpu-loss creates its own.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ContextOptions {
    /// Use subgroup operations in reductions when the adapter has `SUBGROUP` (default true).
    /// Turning this off selects the workgroup-memory path, e.g. to test it.
    pub subgroups: bool,
    /// Which adapter `request_adapter` prefers when `WGPU_ADAPTER_NAME` is not set.
    pub power_preference: wgpu::PowerPreference,
    /// Overrides [`Tuning::for_adapter`].
    pub tuning: Option<Tuning>,
    /// Read and write f16 tensors through WGSL's `f16` (`Some(true)`, where the adapter has
    /// `SHADER_F16`) or through packed `u32` pairs (`Some(false)`, as on adapters without it).
    /// The same bits either way. Default (`None`): WGSL's `f16` where the adapter has it and is
    /// not a CPU, whose drivers run the packed path faster (lavapipe: docs/performance.md).
    pub native_f16: Option<bool>,
    /// Binds at most this many bytes of a buffer at once (default: the adapter's
    /// `max_storage_buffer_binding_size`). Inputs larger than one binding are bound a window
    /// at a time with the same results, bit for bit: lowering it shows (cheaply) what larger
    /// inputs do, or what WebGPU's default limit of 128 MiB would. Rounded down to a multiple
    /// of 256 bytes; at least 1 MiB.
    pub max_binding: Option<u64>,
    /// Reads every kernel's WGSL from this directory (a checkout's `shaders/`, with its
    /// `common/`) instead of the copy built into the library: for trying a change to a kernel
    /// without rebuilding (`docs/experiments/`). Default none. The library reads no environment
    /// variable for it; the command line sets it from `WGPU_LOSS_SHADER_DIR` (every command,
    /// `bench` and `tune` included). A file missing from the directory is an error when a plan
    /// first needs its kernel.
    pub shader_dir: Option<std::path::PathBuf>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            subgroups: true,
            power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
            tuning: None,
            native_f16: None,
            max_binding: None,
            shader_dir: None,
        }
    }
}

impl ContextOptions {
    /// Sets whether reductions may use subgroup operations.
    pub fn subgroups(mut self, on: bool) -> Self {
        self.subgroups = on;
        self
    }

    /// Overrides the tuning.
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = Some(tuning);
        self
    }

    /// Sets whether f16 tensors go through WGSL's `f16` (where the adapter has `SHADER_F16`).
    pub fn native_f16(mut self, on: bool) -> Self {
        self.native_f16 = Some(on);
        self
    }

    /// Binds at most `bytes` of a buffer at once (see [`ContextOptions::max_binding`]).
    pub fn max_binding(mut self, bytes: u64) -> Self {
        self.max_binding = Some(bytes);
        self
    }

    /// Reads the kernels' WGSL from `dir` (see [`ContextOptions::shader_dir`]).
    pub fn shader_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.shader_dir = Some(dir.into());
        self
    }
}

/// The limits the kernels need of a device (WebGPU's defaults satisfy them all): the limit's
/// name, how to read it, and the least the kernels need.
type Needed = (&'static str, fn(&wgpu::Limits) -> u32, u32);
const NEEDED_LIMITS: [Needed; 4] = [
    (
        "max_storage_buffers_per_shader_stage",
        |l| l.max_storage_buffers_per_shader_stage,
        7,
    ),
    (
        "max_compute_invocations_per_workgroup",
        |l| l.max_compute_invocations_per_workgroup,
        256,
    ),
    (
        "max_compute_workgroup_size_x",
        |l| l.max_compute_workgroup_size_x,
        256,
    ),
    (
        "max_compute_workgroup_storage_size",
        |l| l.max_compute_workgroup_storage_size,
        8192,
    ),
];

/// A device and queue with the kernels compiled for them: the entry point of the library.
///
/// Cheap to clone (an `Arc`); pipelines are compiled on first use and cached for the life of
/// the context. Either [`Context::new`] creates a device on the default adapter (honouring
/// `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`), or [`Context::from_device`] wraps
/// the device and queue of a renderer or trainer, whose buffers the recording API then takes.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
    /// The plans of the convenience calls, most recently used first (None in the handles that
    /// plans keep: see [`Context::without_cache`]).
    plans: Option<Arc<Mutex<Vec<CachedPlan>>>>,
}

/// A plan of any loss family, as the cache keeps it.
type CachedPlan = Arc<dyn std::any::Any + Send + Sync>;

/// How many plans the convenience calls keep: enough for a training loop's few shapes, few
/// enough that a sweep over shapes does not hoard buffers.
pub(crate) const PLAN_CACHE: usize = 8;

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// The smallest subgroup size, when reductions use subgroup operations.
    subgroup_min: Option<u32>,
    /// f16 tensors go through WGSL's `f16` (the device has `SHADER_F16`).
    native_f16: bool,
    tuning: Tuning,
    modules: Mutex<HashMap<(&'static str, Vec<String>), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Pipeline>>,
    dummy_read: wgpu::Buffer,
    dummy_write: wgpu::Buffer,
    /// Serialises this crate's use of the device where the backend needs it (GL).
    device_lock: Option<DeviceLock>,
    /// Every storage binding is read-write ([`Context::from_pooled_device`]).
    pooled: bool,
    /// Where the kernels' WGSL is read from, if not built in ([`ContextOptions::shader_dir`]).
    shader_dir: Option<std::path::PathBuf>,
    /// The buffers the convenience calls reuse ([`super::host_buffers::HostBuffers`]).
    host: Mutex<super::host_buffers::HostBuffers>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Pipelines and modules are destroyed here, so under the lock like every other use.
        let _guard = self.device_lock.as_ref().map(DeviceLock::acquire);
        std::mem::take(self.modules.get_mut().unwrap_or_else(|e| e.into_inner()));
        std::mem::take(self.pipelines.get_mut().unwrap_or_else(|e| e.into_inner()));
        std::mem::take(self.host.get_mut().unwrap_or_else(|e| e.into_inner()));
    }
}

/// A re-entrant lock: the thread that holds it may take it again (a caller holding
/// [`Context::lock`] may call into the crate, which takes it too).
struct DeviceLock {
    owner: Mutex<(Option<ThreadId>, usize)>,
    released: Condvar,
}

impl DeviceLock {
    fn new() -> Self {
        DeviceLock {
            owner: Mutex::new((None, 0)),
            released: Condvar::new(),
        }
    }

    fn acquire(&self) -> DeviceGuard<'_> {
        let me = std::thread::current().id();
        let mut owner = lock(&self.owner);
        loop {
            match owner.0 {
                None => {
                    *owner = (Some(me), 1);
                    break;
                }
                Some(t) if t == me => {
                    owner.1 += 1;
                    break;
                }
                Some(_) => owner = self.released.wait(owner).unwrap_or_else(|e| e.into_inner()),
            }
        }
        DeviceGuard { lock: Some(self) }
    }
}

/// Holds a [`Context`]'s device lock until dropped (see [`Context::lock`]).
#[must_use = "the lock is released when the guard is dropped"]
pub struct DeviceGuard<'a> {
    lock: Option<&'a DeviceLock>,
}

impl Drop for DeviceGuard<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.lock {
            let mut owner = lock(&l.owner);
            owner.1 -= 1;
            if owner.1 == 0 {
                owner.0 = None;
                l.released.notify_one();
            }
        }
    }
}

impl std::fmt::Debug for DeviceGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceGuard")
            .field("held", &self.lock.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("subgroups", &self.inner.subgroup_min)
            .field("tuning", &self.inner.tuning)
            .finish()
    }
}

impl Context {
    /// Creates a device on the default adapter with [`ContextOptions::default`].
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async(ContextOptions::default()))
    }

    /// Creates a device with the given options (blocking).
    pub fn with_options(options: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// Creates a device on the adapter chosen by `WGPU_ADAPTER_NAME` (a case-insensitive
    /// substring of the adapter's name) among the backends of `WGPU_BACKEND`, or else on the
    /// adapter `request_adapter` picks. Requests the adapter's own limits (not WebGPU's
    /// defaults), and `SUBGROUP` and the timestamp queries where it has them.
    pub async fn new_async(options: ContextOptions) -> Result<Self> {
        let adapter = Self::adapter(&options).await?;
        let mut wanted = wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        if options.native_f16 != Some(false) {
            wanted |= wgpu::Features::SHADER_F16;
        }
        let features = adapter.features() & wanted;
        let mut limits = adapter.limits();
        if let Some(bytes) = options.max_binding {
            const LEAST: u64 = 1 << 20;
            if bytes < LEAST {
                return Err(Error::option(
                    "max_binding",
                    format!("{bytes} bytes is less than the least allowed, {LEAST}"),
                ));
            }
            let bytes = bytes / 256 * 256;
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(bytes);
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-loss"),
                required_features: features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        Self::build(
            device,
            queue,
            options.subgroups,
            options.tuning,
            options.native_f16,
            false,
            options.shader_dir,
        )
    }

    async fn adapter(options: &ContextOptions) -> Result<wgpu::Adapter> {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
            let wanted = name.to_lowercase();
            let adapters = instance.enumerate_adapters(backends).await;
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            return adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
                .ok_or_else(|| {
                    Error::NoAdapter(format!(
                        "WGPU_ADAPTER_NAME={name:?} matches none of {names:?} on backends {backends:?}"
                    ))
                });
        }
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: options.power_preference,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                Error::NoAdapter(format!(
                    "{e} (backends {backends:?}; on a headless Linux machine, install a software \
                     Vulkan driver: apt-get install mesa-vulkan-drivers)"
                ))
            })
    }

    /// Wraps a device and queue the caller already has (a renderer's or a trainer's). Its
    /// buffers can then be given to the recording API directly. Subgroup operations are used
    /// when the device was created with `SUBGROUP`. WebGPU's default limits are enough.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        Self::build(device, queue, true, None, None, false, None)
    }

    /// [`Context::from_device`] for a device whose tensors share buffers: a framework's memory
    /// pool (Burn's, any cubecl runtime's) keeps many tensors at ranges of one buffer, so a
    /// loss's inputs and outputs can be ranges of the same buffer. wgpu tracks usage per
    /// buffer, and refuses one buffer bound both read-only and writable in a dispatch; so here
    /// every storage binding of every kernel is read-write (as cubecl's own kernels are), and
    /// [`Plan::bind`](crate::Plan::bind) lets inputs and outputs share a buffer at ranges that
    /// do not overlap. The same results; kernels may read inputs a little slower on GPUs that
    /// cache read-only storage.
    pub fn from_pooled_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        Self::build(device, queue, true, None, None, true, None)
    }

    /// [`Context::from_device`] with a tuning of the caller's.
    pub fn from_device_tuned(
        device: wgpu::Device,
        queue: wgpu::Queue,
        tuning: Tuning,
    ) -> Result<Self> {
        Self::build(device, queue, true, Some(tuning), None, false, None)
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        subgroups: bool,
        tuning: Option<Tuning>,
        native_f16: Option<bool>,
        pooled: bool,
        shader_dir: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        let limits = device.limits();
        for (limit, get, least) in NEEDED_LIMITS {
            let (actual, least) = (get(&limits) as u64, least as u64);
            if actual < least {
                return Err(Error::DeviceLimit {
                    limit,
                    needed: least,
                    actual,
                });
            }
        }
        let info = device.adapter_info();
        // The kernels' subgroup levels need subgroups of at least 4 invocations (and at most
        // a workgroup); adapters with smaller ones use the workgroup-memory path.
        let subgroup_min = (subgroups
            && device.features().contains(wgpu::Features::SUBGROUP)
            && (4..=256).contains(&info.subgroup_min_size))
        .then_some(info.subgroup_min_size);
        let tuning = tuning
            .unwrap_or_else(|| Tuning::for_adapter(&info))
            .check()?;
        let dummy = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        let dummy_read = dummy("wgpu-loss.dummy_read", wgpu::BufferUsages::STORAGE);
        let dummy_write = dummy("wgpu-loss.dummy_write", wgpu::BufferUsages::STORAGE);
        let device_lock = (info.backend == wgpu::Backend::Gl).then(DeviceLock::new);
        let native_f16 = device.features().contains(wgpu::Features::SHADER_F16)
            && native_f16.unwrap_or(info.device_type != wgpu::DeviceType::Cpu);
        Ok(Context {
            plans: Some(Arc::default()),
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                subgroup_min,
                native_f16,
                tuning,
                modules: Mutex::new(HashMap::new()),
                pipelines: Mutex::new(HashMap::new()),
                dummy_read,
                dummy_write,
                device_lock,
                pooled,
                shader_dir,
                host: Mutex::default(),
            }),
        })
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Takes the context's device lock: held, no other thread uses the device through this
    /// context (or any clone of it) until the guard is dropped. The lock is re-entrant, so the
    /// holder may call the crate, which takes it too.
    ///
    /// Why: wgpu's GL backend drives every device through one GL context, which a thread holds
    /// for the whole of a submission's work on software drivers and while it waits on a fence;
    /// another thread that waits for it too long panics inside wgpu-hal ("Could not lock
    /// adapter context", gfx-rs/wgpu#5299). Every call of this crate that touches the device
    /// (plan creation, recording, runs, readbacks, dropping plans) takes this lock, so this
    /// crate's own calls are safe from any number of threads. A caller who shares the device
    /// between threads and makes wgpu calls of its own (creating buffers, submitting, polling,
    /// mapping) should hold this guard around them too.
    ///
    /// On every other backend wgpu is free-threaded: the lock is not needed, and this returns a
    /// guard that holds nothing.
    pub fn lock(&self) -> DeviceGuard<'_> {
        match &self.inner.device_lock {
            Some(l) => l.acquire(),
            None => DeviceGuard { lock: None },
        }
    }

    /// Whether every storage binding is read-write ([`Context::from_pooled_device`]).
    pub fn is_pooled(&self) -> bool {
        self.inner.pooled
    }

    /// The adapter's name, backend, driver and subgroup sizes.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The device's limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.inner.device.limits()
    }

    /// The device's features.
    pub fn features(&self) -> wgpu::Features {
        self.inner.device.features()
    }

    /// How the kernels spread work over invocations on this device.
    pub fn tuning(&self) -> Tuning {
        self.inner.tuning
    }

    /// Whether f16 tensors go through WGSL's `f16` (else packed `u32` pairs).
    pub fn uses_native_f16(&self) -> bool {
        self.inner.native_f16
    }

    /// Whether reductions use subgroup operations.
    pub fn uses_subgroups(&self) -> bool {
        self.inner.subgroup_min.is_some()
    }

    /// Whether the device can time passes with timestamp queries.
    pub fn has_timestamps(&self) -> bool {
        self.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The largest buffer one binding can take, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits()
            .max_storage_buffer_binding_size
            .min(self.limits().max_buffer_size)
    }

    pub(crate) fn dummy(&self, writable: bool) -> &wgpu::Buffer {
        if writable {
            &self.inner.dummy_write
        } else {
            &self.inner.dummy_read
        }
    }

    /// The pipeline for `key`, compiled on first use. Shader errors (bugs of this crate, or a
    /// driver's) come back as [`Error::Wgpu`] naming the shader. The device lock is held while
    /// the device is used, not while the error scope's result is awaited.
    pub async fn pipeline(&self, key: &PipelineKey) -> Result<Pipeline> {
        let mut defines = key.defines.clone();
        let mut constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|&(n, v)| (n, f64::from_bits(v)))
            .collect();
        match self.inner.subgroup_min {
            Some(min) => {
                defines.push("SUBGROUPS".to_string());
                constants.push(("SG_MIN", min as f64));
            }
            None => constants.push(("SG_MIN", 1.0)),
        }
        if self.inner.native_f16 {
            defines.push("NATIVE_F16".to_string());
        }
        let label = format!("wgpu-loss.{}.{}", key.kernel.file, key.entry);
        let (p, popped) = {
            let _guard = self.lock();
            if let Some(p) = lock(&self.inner.pipelines).get(key) {
                return Ok(p.clone());
            }
            let device = &self.inner.device;
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = {
                let mut modules = lock(&self.inner.modules);
                match modules.get(&(key.kernel.file, defines.clone())) {
                    Some(m) => m.clone(),
                    None => {
                        let names: Vec<&str> = defines.iter().map(String::as_str).collect();
                        let dir = self.inner.shader_dir.as_deref();
                        let mut source = wgsl::preprocess(key.kernel, &names, dir)?;
                        if self.inner.pooled {
                            source =
                                source.replace("var<storage, read>", "var<storage, read_write>");
                        }
                        let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(key.kernel.file),
                            source: wgpu::ShaderSource::Wgsl(source.into()),
                        });
                        modules.insert((key.kernel.file, defines.clone()), m.clone());
                        m
                    }
                }
            };
            let entries: Vec<wgpu::BindGroupLayoutEntry> = (key.kernel.layout)(&key.defines)
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: binding_type(*b, self.inner.pooled),
                    count: None,
                })
                .collect();
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &entries,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    // Every kernel writes workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            (Pipeline { pipeline, layout }, scope.pop())
        };
        if let Some(e) = popped.await {
            lock(&self.inner.modules).remove(&(key.kernel.file, defines));
            return Err(Error::Wgpu(format!(
                "{label} {defines:?} {constants:?}: {e}",
                defines = key.defines
            )));
        }
        lock(&self.inner.pipelines).insert(key.clone(), p.clone());
        Ok(p)
    }

    /// A handle on the same device without the plan cache: what plans keep (a plan in the
    /// cache holding the cache would keep both alive forever).
    pub(crate) fn without_cache(&self) -> Context {
        Context {
            inner: self.inner.clone(),
            plans: None,
        }
    }

    /// How many plans the convenience calls' cache holds (at most 8, the most recently used;
    /// 0 for a context without the cache).
    pub fn cached_plans(&self) -> usize {
        self.plans.as_ref().map_or(0, |c| lock(c).len())
    }

    /// The bytes of the device and staging buffers the convenience calls keep for the next call
    /// ([`Context::loss`] reuses them, growing them when a call needs more).
    pub fn host_buffer_bytes(&self) -> u64 {
        lock(&self.inner.host).bytes()
    }

    /// Frees the buffers the convenience calls keep ([`Context::host_buffer_bytes`]); the next
    /// call makes new ones.
    pub fn release_host_buffers(&self) {
        let _guard = self.lock();
        std::mem::take(&mut *lock(&self.inner.host));
    }

    /// The reused buffers, when no other call holds them.
    pub(crate) fn try_host_buffers(
        &self,
    ) -> Option<std::sync::MutexGuard<'_, super::host_buffers::HostBuffers>> {
        match self.inner.host.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// How many compiled pipelines the context holds (shared by its clones and plans): one for
    /// each kernel variant used so far, kept for the context's life.
    pub fn cached_pipelines(&self) -> usize {
        lock(&self.inner.pipelines).len()
    }

    /// A weak handle on what every clone of this context shares (the device, the pipelines):
    /// dead once the last context and plan are dropped.
    #[cfg(test)]
    pub(crate) fn weak(&self) -> std::sync::Weak<impl Send + Sync + use<>> {
        Arc::downgrade(&self.inner)
    }

    /// The cached plan of any family (`P`) that `hit` accepts, made by `make` on a miss (the
    /// plans of every family share one cache, most recently used first).
    pub(crate) fn cached<P: std::any::Any + Send + Sync>(
        &self,
        hit: impl Fn(&P) -> bool,
        make: impl FnOnce(&Context) -> Result<P>,
    ) -> Result<Arc<P>> {
        let Some(cache) = &self.plans else {
            return make(self).map(Arc::new);
        };
        {
            let mut plans = lock(cache);
            let found = plans
                .iter()
                .position(|p| p.downcast_ref::<P>().is_some_and(&hit));
            if let Some(i) = found {
                let p = plans.remove(i);
                plans.insert(0, p.clone());
                return Ok(p.downcast::<P>().expect("checked above"));
            }
        }
        let plan = Arc::new(make(self)?);
        let mut plans = lock(cache);
        plans.insert(0, plan.clone());
        let keep = plans.len().min(PLAN_CACHE);
        let evicted = plans.split_off(keep);
        // Dropped plans take the device lock: not while holding the cache's.
        drop(plans);
        drop(evicted);
        Ok(plan)
    }
}

/// The bind group layout entry's type of a kernel's binding.
/// The layout entry of a binding; `pooled`: storage is read-write ([`Context::from_pooled_device`]).
fn binding_type(b: Binding, pooled: bool) -> wgpu::BindingType {
    let buffer = |ty| wgpu::BindingType::Buffer {
        ty,
        has_dynamic_offset: false,
        min_binding_size: None,
    };
    match b {
        Binding::Uniform => buffer(wgpu::BufferBindingType::Uniform),
        Binding::Read => buffer(wgpu::BufferBindingType::Storage { read_only: !pooled }),
        Binding::ReadWrite => buffer(wgpu::BufferBindingType::Storage { read_only: false }),
        Binding::Texture => wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: false },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        Binding::StorageTexture(format) => wgpu::BindingType::StorageTexture {
            access: wgpu::StorageTextureAccess::WriteOnly,
            format,
            view_dimension: wgpu::TextureViewDimension::D2,
        },
    }
}

/// GPU resources released under the context's device lock: on GL, freeing GPU memory takes the
/// GL context, which this crate's other uses of the device hold (not `destroy`: a caller may drop
/// a plan before submitting what it recorded; the recorded commands keep the resources alive
/// until then).
pub(crate) struct Locked<T> {
    ctx: Context,
    value: std::mem::ManuallyDrop<T>,
}

impl<T> Locked<T> {
    /// `value`, released under `ctx`'s device lock.
    pub(crate) fn new(ctx: &Context, value: T) -> Self {
        Locked {
            ctx: ctx.without_cache(),
            value: std::mem::ManuallyDrop::new(value),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Locked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (*self.value).fmt(f)
    }
}

impl<T> std::ops::Deref for Locked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Locked<T> {
    fn drop(&mut self) {
        let _guard = self.ctx.lock();
        // SAFETY: dropped once, here, and never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.value) }
    }
}

/// Locks a mutex, recovering the data if a panic elsewhere poisoned it (the caches hold no
/// invariant a panic could break).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
