//! The recording level: your device, your buffers, your command encoder; results stay on the
//! GPU. This is how a wgpu renderer or trainer embeds wgpu-loss.
//!
//! `cargo run --release --example recording`

use wgpu::util::DeviceExt;
use wgpu_loss::{Context, CrossEntropyBuffers, CrossEntropyDesc, CrossEntropyPlan};

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

    // A plan per shape, made once: pipelines compiled, parameters and scratch allocated.
    let (rows, classes) = (4, 5);
    let plan = CrossEntropyPlan::new(&ctx, &CrossEntropyDesc::new(rows, classes))?;

    // The application's buffers (STORAGE usage; COPY_SRC here only to print the result).
    let storage = |data: &[u8]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
    };
    let logits: Vec<f32> = (0..rows * classes)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let logits = storage(bytemuck::cast_slice(&logits));
    let targets = storage(bytemuck::cast_slice(&[0i32, 4, 2, 1]));
    let loss = storage(&[0; 4]);
    let grad = storage(&vec![0; 4 * rows * classes]);

    // Record into the application's encoder, next to its own passes; nothing is submitted.
    let mut encoder = device.create_command_encoder(&Default::default());
    plan.record(
        &mut encoder,
        &CrossEntropyBuffers {
            logits: &logits,
            targets: &targets,
            weight: None,
            loss: Some(&loss),
            grad: Some(&grad),
        },
    )?;
    // ... the application's optimizer step would read `grad` here, on the GPU ...
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(&loss, 0, &staging, 0, 4);
    queue.submit([encoder.finish()]);

    staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let value: f32 = bytemuck::cast_slice(&staging.get_mapped_range(..)?)[0];
    println!("cross-entropy (mean over {rows} rows): {value}");
    Ok(())
}
