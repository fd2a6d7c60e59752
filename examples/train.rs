//! Training end to end on your device: softmax regression (a linear layer with bias, then
//! cross-entropy) through the fused linear + cross-entropy kernel and the update step, the
//! parameters on the GPU throughout. Nine epochs at a time go into one command encoder of the
//! application's and one submission; every tenth reads its loss and accuracy back.
//!
//! `cargo run --release --example train`

use wgpu_loss::{
    Context,
    optim::Optimizer,
    train::{SoftmaxRegression, TrainDesc, blobs},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The application's own device and queue.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: adapter.features() & wgpu::Features::SUBGROUP,
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    let ctx = Context::from_device(device.clone(), queue.clone())?;

    // 1,000 points of 2 features around 3 centres; full-batch gradient descent at lr 0.1.
    let (rows, features, classes) = (1000, 2, 3);
    let (x, y) = blobs(rows, features, classes, 0);
    let desc = TrainDesc::new(rows, features, classes).optimizer(Optimizer::sgd(0.1));
    let mut model = SoftmaxRegression::new(&ctx, desc, &x, &y)?;

    for _ in 0..10 {
        // Nine epochs recorded into the application's encoder: one submission, no readback.
        let mut encoder = {
            let _guard = ctx.lock();
            device.create_command_encoder(&Default::default())
        };
        for _ in 0..9 {
            model.record_epoch(&mut encoder)?;
        }
        {
            let _guard = ctx.lock();
            queue.submit([encoder.finish()]);
        }
        // The tenth, with its figures (those of the parameters it started from).
        let e = model.epoch()?;
        println!(
            "epoch {:>3}: loss {:.6} accuracy {:.3}",
            e.epoch, e.loss, e.accuracy
        );
    }
    // The parameters stay on the GPU (`model.parameters()`: buffers to bind elsewhere); read
    // them back to print them.
    let (w, b) = model.read_parameters()?;
    println!("weight {w:?}\nbias {b:?}");
    Ok(())
}
