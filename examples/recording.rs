//! The recording level: your device, your buffers (here ranges of one arena), your command
//! encoder; results stay on the GPU. This is how a wgpu renderer or trainer embeds wgpu-loss.
//!
//! `cargo run --release --example recording`

use std::num::NonZeroU64;

use wgpu::util::DeviceExt;
use wgpu_loss::{Context, CrossEntropyDesc, Plan, cross_entropy::CrossEntropyBuffers};

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

    // A plan per description, made once: pipelines compiled, parameters and scratch allocated.
    let (rows, classes) = (4, 5);
    let plan = Plan::new(&ctx, &CrossEntropyDesc::new(rows, classes))?;

    // The application's memory: one arena holding the logits, the gradient and the loss at
    // offsets the device can bind storage at (STORAGE usage; COPY_SRC only to print the loss).
    let align = device.limits().min_storage_buffer_offset_alignment as u64;
    let bytes = (4 * rows * classes) as u64;
    let (logits_at, grad_at) = (0, bytes.next_multiple_of(align));
    let loss_at = (grad_at + bytes).next_multiple_of(align);
    let mut arena = vec![0u8; (loss_at + 4) as usize];
    let logits: Vec<f32> = (0..rows * classes)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    arena[..bytes as usize].copy_from_slice(bytemuck::cast_slice(&logits));
    let storage = |data: &[u8]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
    };
    let arena = storage(&arena);
    let targets = storage(bytemuck::cast_slice(&[0i32, 4, 2, 1]));
    let range = |offset: u64, size: u64| wgpu::BufferBinding {
        buffer: &arena,
        offset,
        size: NonZeroU64::new(size),
    };

    // Bind once (checked: usage, alignment, sizes, no overlapping outputs); the bindings are
    // the caller's to keep or drop.
    let bindings = plan.bind(
        &CrossEntropyBuffers::new(range(logits_at, bytes), &targets)
            .grad(range(grad_at, bytes))
            .loss(range(loss_at, 4)),
    )?;

    // Record into the application's encoder, next to its own passes; nothing is submitted.
    let mut encoder = device.create_command_encoder(&Default::default());
    plan.record(&mut encoder, &bindings)?;
    // ... the application's optimizer step would read the gradient here, on the GPU ...
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(&arena, loss_at, &staging, 0, 4);
    queue.submit([encoder.finish()]);

    staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let value: f32 = bytemuck::cast_slice(&staging.get_mapped_range(..)?)[0];
    println!("cross-entropy (mean over {rows} rows): {value}");
    Ok(())
}
