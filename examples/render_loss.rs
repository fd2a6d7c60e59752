//! A renderer that learns: a real wgpu render pass draws a scene (a coloured square on a dark
//! background) into a texture, wgpu-loss computes the photometric loss `0.8 L1 + 0.2 (1 - SSIM)`
//! and its gradient against a target texture straight from the textures, and the renderer's own
//! backward pass (a compute shader of this example) turns the image gradient into the gradient
//! of the square's colour and takes a step of gradient descent. Every step (render, loss,
//! backward, update) is recorded into one command encoder and submitted once; nothing is read
//! back until the losses are printed at the end.
//!
//! `cargo run --release --example render_loss`

use wgpu::util::DeviceExt;
use wgpu_loss::{
    Context, ImageDesc, Plan,
    image::{GradTarget, ImageBuffers, ImageLoss, ImageSource},
};

/// The image's side, in pixels.
pub const SIDE: u32 = 64;
/// The colour the target image's square has, and the one the learnt square starts from.
pub const TARGET: [f32; 4] = [0.9, 0.45, 0.2, 1.0];
pub const START: [f32; 4] = [0.2, 0.6, 0.7, 0.0];
const FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba16Float;

const SCENE: &str = r#"
@group(0) @binding(0) var<uniform> colour: vec4<f32>;

@vertex
fn vs(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    // Two triangles: the square [-0.5, 0.5]^2 in clip space.
    var corners = array<vec2<f32>, 6>(vec2(-0.5, -0.5), vec2(0.5, -0.5), vec2(0.5, 0.5),
        vec2(-0.5, -0.5), vec2(0.5, 0.5), vec2(-0.5, 0.5));
    return vec4<f32>(corners[i], 0.0, 1.0);
}

@fragment
fn fs() -> @location(0) vec4<f32> {
    // Alpha 1 where the square covers the pixel: the backward pass's coverage.
    return vec4<f32>(colour.rgb, 1.0);
}
"#;

/// The renderer's backward pass: d loss / d colour_c is the sum of the image gradient over the
/// pixels the square covers (alpha 1), in a fixed order (one workgroup, a tree over its
/// invocations); then one step of gradient descent on the colour, its step size decaying.
const BACKWARD: &str = r#"
@group(0) @binding(0) var image: texture_2d<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> colour: vec4<f32>;

// The step size, decaying by a tenth a step (L1's gradient keeps its size near the minimum).
const LR: f32 = 2.0;
var<workgroup> partial: array<vec3<f32>, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    let size = textureDimensions(image);
    var g = vec3<f32>(0.0);
    for (var p = lid; p < size.x * size.y; p += 256u) {
        let xy = vec2<u32>(p % size.x, p / size.x);
        if (textureLoad(image, xy, 0).a > 0.5) {
            g += vec3<f32>(grad[3u * p], grad[3u * p + 1u], grad[3u * p + 2u]);
        }
    }
    partial[lid] = g;
    for (var off = 128u; off > 0u; off >>= 1u) {
        workgroupBarrier();
        if (lid < off) {
            partial[lid] += partial[lid + off];
        }
    }
    if (lid == 0u) {
        // colour.w counts the steps (the scene uses rgb).
        let lr = LR * pow(0.9, colour.w);
        colour = vec4<f32>(clamp(colour.rgb - lr * partial[0], vec3(0.0), vec3(1.0)), colour.w + 1.0);
    }
}
"#;

/// The application's device and queue (what a renderer already has).
pub fn device() -> Result<(wgpu::Device, wgpu::Queue), Box<dyn std::error::Error>> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    Ok(pollster::block_on(adapter.request_device(
        &wgpu::DeviceDescriptor {
            required_features: adapter.features() & wgpu::Features::SUBGROUP,
            required_limits: adapter.limits(),
            ..Default::default()
        },
    ))?)
}

/// What a run returns: the loss before each step, and the colour learnt.
pub struct Run {
    pub losses: Vec<f32>,
    pub colour: [f32; 4],
}

/// Renders the target once, then `steps` steps of render, loss, backward and update, in one
/// submission; reads back the losses and the colour at the end.
pub fn run(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    steps: usize,
) -> Result<Run, Box<dyn std::error::Error>> {
    let ctx = Context::from_device(device.clone(), queue.clone())?;
    let texture = |label| {
        device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width: SIDE,
                height: SIDE,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: FORMAT,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        })
    };
    let (rendered, target) = (texture("rendered"), texture("target"));
    let colour_buffer = |label, c: [f32; 4]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&c),
            usage: wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC,
        })
    };
    let (colour, target_colour) = (
        colour_buffer("colour", START),
        colour_buffer("target colour", TARGET),
    );

    // The scene's pipeline.
    let scene = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("scene"),
        source: wgpu::ShaderSource::Wgsl(SCENE.into()),
    });
    let draw = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("scene"),
        layout: None,
        vertex: wgpu::VertexState {
            module: &scene,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        fragment: Some(wgpu::FragmentState {
            module: &scene,
            entry_point: Some("fs"),
            compilation_options: Default::default(),
            targets: &[Some(FORMAT.into())],
        }),
        primitive: Default::default(),
        depth_stencil: None,
        multisample: Default::default(),
        multiview_mask: None,
        cache: None,
    });
    let scene_group = |c: &wgpu::Buffer| {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &draw.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: c.as_entire_binding(),
            }],
        })
    };
    let (scene_colour, scene_target) = (scene_group(&colour), scene_group(&target_colour));
    let render = |encoder: &mut wgpu::CommandEncoder, into: &wgpu::Texture, group| {
        let view = into.create_view(&Default::default());
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("scene"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color {
                        r: 0.05,
                        g: 0.05,
                        b: 0.1,
                        a: 0.0,
                    }),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(&draw);
        pass.set_bind_group(0, group, &[]);
        pass.draw(0..6, 0..1);
    };

    // The loss, planned once, on the two textures: RGB, the gradient into a [H, W, 3] buffer.
    let desc = ImageDesc::new(ImageLoss::Photometric, SIDE as usize, SIDE as usize, 3)
        .pred(ImageSource::Texture(FORMAT))
        .target(ImageSource::Texture(FORMAT))
        .grad_to(GradTarget::Buffer);
    let plan = Plan::new(&ctx, &desc)?;
    let storage = |label, bytes: u64| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    };
    let grad = storage("image gradient", 4 * 3 * (SIDE * SIDE) as u64);
    let loss = storage("loss", 4);
    let bindings = plan.bind(
        &ImageBuffers::new(&rendered, &target)
            .loss(&loss)
            .grad(&grad),
    )?;

    // The backward pass and update.
    let backward = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("backward"),
        layout: None,
        module: &device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("backward"),
            source: wgpu::ShaderSource::Wgsl(BACKWARD.into()),
        }),
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let rendered_view = rendered.create_view(&Default::default());
    let backward_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &backward.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(&rendered_view),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: grad.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: colour.as_entire_binding(),
            },
        ],
    });

    // Every step into one encoder: render, loss and gradient, backward and update, and the
    // step's loss into a history buffer.
    let history = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("losses"),
        size: 4 * steps.max(1) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    render(&mut encoder, &target, &scene_target);
    for step in 0..steps {
        render(&mut encoder, &rendered, &scene_colour);
        plan.record(&mut encoder, &bindings)?;
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&backward);
        pass.set_bind_group(0, &backward_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
        drop(pass);
        encoder.copy_buffer_to_buffer(&loss, 0, &history, 4 * step as u64, 4);
    }
    queue.submit([encoder.finish()]);

    let losses: Vec<f32> = read(device, queue, &history)?;
    let colour: Vec<f32> = read(device, queue, &colour)?;
    Ok(Run {
        losses: losses[..steps].to_vec(),
        colour: [colour[0], colour[1], colour[2], colour[3]],
    })
}

/// Reads a buffer back (only to print the results at the end).
fn read(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    queue.submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |_| {});
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let data = bytemuck::pod_collect_to_vec(&staging.get_mapped_range(..)?);
    staging.unmap();
    Ok(data)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (device, queue) = device()?;
    let steps = 40;
    let run = run(&device, &queue, steps)?;
    println!("photometric loss 0.8 L1 + 0.2 (1 - SSIM) of a {SIDE} x {SIDE} render:");
    for (step, l) in run.losses.iter().enumerate() {
        if step % 5 == 0 || step + 1 == steps {
            println!("  step {step:>2}: loss {l:.6}");
        }
    }
    println!(
        "square's colour: started {:?}, learnt [{:.3}, {:.3}, {:.3}], target {:?}",
        &START[..3],
        run.colour[0],
        run.colour[1],
        run.colour[2],
        &TARGET[..3]
    );
    Ok(())
}
