//! One wgpu device shared by Burn and wgpu-loss, both ways:
//!
//! 1. an application's own wgpu device (a renderer's, say) adopted by Burn
//!    ([`wgpu_loss_burn::adopt`]): Burn tensors on it, their loss and gradient from wgpu-loss,
//!    all on the application's queue;
//! 2. a device Burn makes ([`wgpu_loss_burn::init`]) used through wgpu-loss's own API
//!    ([`wgpu_loss_burn::context`]): here its convenience call on host data; plans recorded
//!    into encoders of Burn's device work the same way.
//!
//! `cargo run --release -p wgpu-loss-burn --example shared_device`

use burn::backend::wgpu::WgpuSetup;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use wgpu_loss::{Inputs, PointwiseDesc, pointwise::Pointwise};
use wgpu_loss_burn::{CrossEntropy, cross_entropy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The application's device, made as the application makes it (with the features and
    // limits Burn expects of a device it adopts), then adopted by Burn.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let descriptor = wgpu_loss_burn::device::device_descriptor(&adapter);
    let (device, queue) = pollster::block_on(adapter.request_device(&descriptor))?;
    let backend = adapter.get_info().backend;
    let setup = WgpuSetup {
        instance,
        adapter,
        device: device.clone(),
        queue: queue.clone(),
        backend,
    };
    let burn_device = wgpu_loss_burn::adopt(setup)?.autodiff();
    let logits = Tensor::<2>::random([6, 10], Distribution::Default, &burn_device).require_grad();
    let targets =
        Tensor::<1, Int>::from_data(TensorData::new(vec![1, 4, 9, 0, 3, 3], [6]), &burn_device);
    let loss = cross_entropy(logits.clone(), targets, &CrossEntropy::new())?;
    let grads = loss.backward();
    let grad = logits
        .grad(&grads)
        .expect("the logits take part in the loss");
    println!(
        "1. adopted device ({backend:?}): cross-entropy {:?}, gradient row 0 {:?}",
        loss.into_data().try_to_vec::<f32>()?,
        &grad.into_data().try_to_vec::<f32>()?[..10]
    );
    // The application goes on using its device and queue as before: Burn's work and ours were
    // submitted on `queue` in order.
    queue.submit([]);

    // 2. Burn makes the device; wgpu-loss's own API records onto it.
    let burn_device = wgpu_loss_burn::init()?;
    let ctx = wgpu_loss_burn::context(&burn_device).expect("made by init");
    let pred: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin()).collect();
    let target: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).cos()).collect();
    let out = ctx.loss(
        &PointwiseDesc::new(Pointwise::Mse, pred.len()),
        &Inputs::new(&pred, &target),
    )?;
    println!(
        "2. Burn's device ({}): MSE {:?} by wgpu-loss's convenience call",
        ctx.adapter_info().name,
        out.value
    );
    Ok(())
}
