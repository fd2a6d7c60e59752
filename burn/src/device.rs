//! Burn wgpu devices that wgpu-loss shares, both ways: [`init`] lets Burn make the device and
//! hands its wgpu device and queue to a wgpu-loss [`Context`]; [`adopt`] makes a Burn device of
//! an application's own wgpu device. Either registers the pair, so that the losses find the
//! context of the device their tensors live on ([`context`]).
//!
//! Burn keeps no way to reach the wgpu device of a Burn device it made on its own (by a tensor
//! operation on `Device::default()`), so the losses work on devices made here only.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use burn::backend::DispatchDevice;
use burn::backend::wgpu::{WgpuDevice, WgpuSetup};
use burn::tensor::Device;
use burn_cubecl::CubeDevice;
use wgpu_loss::{Context, Plan, plan::LossDesc};

use crate::{Error, Result};

/// How many plans a device keeps (distinct shapes and options), the oldest dropped first.
const PLANS: usize = 64;

/// A device's wgpu-loss context and its plans, by description.
pub(crate) struct Shared {
    pub(crate) ctx: Context,
    plans: Mutex<Vec<Box<dyn Any + Send + Sync>>>,
}

/// One cached plan and the description it was made for.
struct Cached<D: LossDesc> {
    desc: D,
    plan: Arc<Plan<D>>,
}

impl Shared {
    /// The plan of `desc`, made once (its pipelines compiled, its scratch allocated).
    pub(crate) fn plan<D>(&self, desc: &D) -> wgpu_loss::Result<Arc<Plan<D>>>
    where
        D: LossDesc + PartialEq + Send + Sync + 'static,
        Plan<D>: Send + Sync,
    {
        let mut plans = lock(&self.plans);
        let found = plans
            .iter()
            .filter_map(|p| p.downcast_ref::<Cached<D>>())
            .find(|c| c.desc == *desc);
        if let Some(c) = found {
            return Ok(c.plan.clone());
        }
        let plan = Arc::new(Plan::new(&self.ctx, desc)?);
        if plans.len() == PLANS {
            plans.remove(0);
        }
        plans.push(Box::new(Cached {
            desc: desc.clone(),
            plan: plan.clone(),
        }));
        Ok(plan)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn registry() -> MutexGuard<'static, HashMap<WgpuDevice, Arc<Shared>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<WgpuDevice, Arc<Shared>>>> = OnceLock::new();
    lock(REGISTRY.get_or_init(Default::default))
}

fn register(device: &Device, setup: &WgpuSetup) -> Result<()> {
    let key = wgpu_device(device).ok_or(Error::Device("the device Burn made"))?;
    let ctx = Context::from_pooled_device(setup.device.clone(), setup.queue.clone())?;
    let shared = Arc::new(Shared {
        ctx,
        plans: Mutex::new(Vec::new()),
    });
    registry().insert(key, shared);
    Ok(())
}

/// The wgpu device of a Burn device (with or without autodiff), if it is one.
pub(crate) fn wgpu_device(device: &Device) -> Option<WgpuDevice> {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(CubeDevice::Wgpu(d)) => Some(d.clone()),
        _ => None,
    }
}

/// What the losses share with the cubecl device `device`, if it was made here.
pub(crate) fn shared(device: &CubeDevice) -> Option<Arc<Shared>> {
    match device {
        CubeDevice::Wgpu(d) => registry().get(d).cloned(),
        _ => None,
    }
}

/// What the losses share with the Burn device `device`, if it was made here.
pub(crate) fn shared_of(device: &Device) -> Option<Arc<Shared>> {
    wgpu_device(device).and_then(|d| registry().get(&d).cloned())
}

/// A new Burn wgpu device (on the adapter Burn's defaults choose: Vulkan, DX12 or GL in that
/// order on Linux and Windows, Metal on macOS) whose wgpu device and queue a wgpu-loss
/// [`Context`] shares. Call `.autodiff()` on it to train.
///
/// # Errors
/// [`Error::Burn`] when Burn finds no adapter or cannot make the device; [`Error::Loss`] when
/// wgpu-loss cannot use it.
pub fn init() -> Result<Device> {
    init_with(Device::wgpu_options())
}

/// [`init`] with Burn's options: the device kind, the graphics API
/// (`burn::tensor::wgpu::WgpuBackend::Gl` for GL), the memory configuration.
///
/// # Errors
/// As [`init`]; Burn also refuses a device id it already opened.
pub fn init_with(options: burn::tensor::wgpu::WgpuOptions) -> Result<Device> {
    let (device, setup) = options
        .init_with_setup()
        .map_err(|e| Error::Burn(e.to_string()))?;
    register(&device, &setup)?;
    Ok(device)
}

/// A Burn device of the application's own wgpu device (`setup`: its instance, adapter, device,
/// queue and backend), registered with a wgpu-loss [`Context`] of the same device. Burn reads
/// the adapter's features and limits, not the device's: make the device with
/// [`device_descriptor`] so that the two agree.
///
/// # Errors
/// [`Error::Burn`] when Burn refuses the setup (a backend that is not the adapter's, a device
/// without compute); [`Error::Loss`] when wgpu-loss cannot use it.
pub fn adopt(setup: WgpuSetup) -> Result<Device> {
    let device = Device::wgpu_options()
        .setup(setup.clone())
        .init()
        .map_err(|e| Error::Burn(e.to_string()))?;
    register(&device, &setup)?;
    Ok(device)
}

/// The device descriptor Burn expects of a device it adopts: every feature of `adapter` but
/// `MAPPABLE_PRIMARY_BUFFERS`, and the adapter's limits.
pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
    wgpu::DeviceDescriptor {
        label: Some("wgpu-loss-burn"),
        required_features: adapter.features() - wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
        required_limits: adapter.limits(),
        ..Default::default()
    }
}

/// The wgpu-loss context sharing `device`'s wgpu device and queue (for the library's own API
/// on Burn's device: plans recorded into encoders, the convenience calls), if [`init`] or
/// [`adopt`] made it.
pub fn context(device: &Device) -> Option<Context> {
    shared_of(device).map(|s| s.ctx.clone())
}
