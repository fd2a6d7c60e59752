//! Moving host data to the GPU and results back: the machinery under the convenience API.

use wgpu::util::DeviceExt;

use super::program::{Bound, Program, Status};
use super::slots::{HostData, Slot, UserBindings};
use crate::dtype::DType;
use crate::engine::context::Context;
use crate::error::{Error, Result};
use crate::reduction::{Field, LossOutput, Reduction};

/// Creates a storage buffer holding `data` (at least 4 bytes, so that it can be bound).
pub fn upload(ctx: &Context, label: &str, data: &[u8]) -> wgpu::Buffer {
    let mut padded;
    let contents = if data.len() < 4 || !data.len().is_multiple_of(4) {
        padded = data.to_vec();
        padded.resize(data.len().next_multiple_of(4).max(4), 0);
        &padded[..]
    } else {
        data
    };
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
}

/// Creates an output buffer of `bytes` (at least 4).
pub(crate) fn output(ctx: &Context, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Runs `f` under the device lock inside error scopes: running out of memory, or a validation
/// error, is the error returned (before `f`'s own), not a panic at a later call.
pub(crate) fn scoped<T>(ctx: &Context, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _guard = ctx.lock();
    let device = ctx.device();
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let result = f();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    match oom.or(validation) {
        Some(e) => Err(Error::from_wgpu(e)),
        None => result,
    }
}

/// Runs `program` once on buffers created from `host` (inside error scopes, so that running out
/// of memory is an error, not a panic): uploads the inputs, creates the outputs the program
/// writes, reads back its loss and gradient (`grad` may land in the input: in place), and turns
/// invalid inputs the kernels counted into [`Error::InvalidOnGpu`] (`what` names them).
pub(crate) fn run_host(
    program: &Program,
    host: &HostData<'_>,
    reduction: Reduction,
    what: &'static str,
) -> Result<LossOutput> {
    let ctx = program.ctx();
    let device = ctx.device();
    if let Some(s) = host.slots().find(|&s| program.slot_bytes(s) == 0) {
        return Err(Error::Binding(s.name(), "not used by this plan"));
    }
    // The outputs to read back: every slot the program writes into a field of the output (the
    // gradient over the input, in place).
    let grad = program.result_slot(Field::Grad);
    let reads: Vec<(Slot, Field)> = program
        .used_slots()
        .filter_map(|(s, _)| match s.field() {
            Some(f) => Some((s, f)),
            None => (Some(s) == grad).then_some((s, Field::Grad)),
        })
        .collect();
    let (out, status) = scoped(ctx, || {
        // The host's bytes uploaded, and a buffer for every output (an input the host lacks is
        // left out: binding names it).
        let buffers: Vec<(Slot, wgpu::Buffer)> = program
            .used_slots()
            .filter_map(|(slot, bytes)| {
                let buffer = match host.get(slot.index()) {
                    Some(data) => upload(ctx, &slot.label(), data),
                    None if program.writes(slot) => output(ctx, &slot.label(), bytes),
                    None => return None,
                };
                Some((slot, buffer))
            })
            .collect();
        let buffer = |slot: Slot| &buffers.iter().find(|b| b.0 == slot).expect("created").1;
        let mut offsets = Vec::with_capacity(reads.len());
        let mut total = 16u64;
        for &(slot, _) in &reads {
            offsets.push(total);
            total += program.slot_bytes(slot).next_multiple_of(4);
        }
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-loss.readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let user = buffers
            .iter()
            .fold(UserBindings::default(), |u, (slot, b)| {
                u.with(*slot, Some(b.as_entire_buffer_binding()))
            });
        let bound = program.bind(&user)?;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-loss"),
        });
        program.record(&mut encoder, &bound, None);
        encoder.copy_buffer_to_buffer(program.scratch(), 0, &staging, 0, 16);
        for (&(slot, _), &offset) in reads.iter().zip(&offsets) {
            let bytes = program.slot_bytes(slot).next_multiple_of(4);
            encoder.copy_buffer_to_buffer(buffer(slot), 0, &staging, offset, bytes);
        }
        ctx.queue().submit([encoder.finish()]);
        let data = map_read(ctx, &staging)?;
        let status = Status::from_words(&bytemuck::pod_collect_to_vec(&data[..16]));
        let mut out = LossOutput::from_parts(reduction, None, None);
        for (&(slot, field), &offset) in reads.iter().zip(&offsets) {
            let bytes = &data[offset as usize..(offset + program.slot_bytes(slot)) as usize];
            // A 16-bit gradient, widened (its slot is padded to whole words).
            let narrow = match field {
                Field::Grad => Some(program.grad_dtype()),
                Field::GradLinear => Some(program.grad_linear_dtype()),
                _ => None,
            };
            match narrow {
                Some((dtype, elements)) if dtype != DType::F32 => {
                    let mut g = dtype.widen(bytes);
                    g.truncate(elements as usize);
                    match field {
                        Field::Grad => out.grad = Some(g),
                        _ => out.grad_linear = Some(g),
                    }
                }
                _ => out.fill(field, reduction, bytes),
            }
        }
        Ok((out, status))
    })?;
    status.check(what)?;
    Ok(out)
}

/// Maps a `MAP_READ` buffer, waits for it, and copies its contents out (blocking). A buffer
/// without `MAP_READ` usage is [`Error::Binding`].
pub fn map_read(ctx: &Context, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
    if !staging.usage().contains(wgpu::BufferUsages::MAP_READ) {
        return Err(Error::Binding("staging", "lacks MAP_READ usage"));
    }
    let _guard = ctx.lock();
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Readback(e.to_string()))?;
    match pollster::block_on(rx.receive()) {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(Error::Readback(e.to_string())),
        None => return Err(Error::Readback("the map callback never ran".into())),
    }
    let data = staging
        .get_mapped_range(..)
        .map_err(|e| Error::Readback(e.to_string()))?
        .to_vec();
    staging.unmap();
    Ok(data)
}

/// Runs `program` on GPU-resident buffers: records, submits, waits, and returns the status
/// words (in one submission, within error scopes).
pub(crate) fn run_resident(program: &Program, groups: &Bound) -> Result<Status> {
    let ctx = program.ctx();
    let device = ctx.device();
    scoped(ctx, || {
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-loss.status"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-loss"),
        });
        program.record(&mut encoder, groups, None);
        encoder.copy_buffer_to_buffer(program.scratch(), 0, &staging, 0, 16);
        ctx.queue().submit([encoder.finish()]);
        let data = map_read(ctx, &staging)?;
        Ok(Status::from_words(&bytemuck::pod_collect_to_vec(&data)))
    })
}

/// Reads the status words of the program's last run (blocking).
pub(crate) fn read_status(program: &Program) -> Result<Status> {
    let data = read_back(program.ctx(), program.scratch(), 16)?;
    Ok(Status::from_words(&bytemuck::pod_collect_to_vec(&data)))
}

/// Copies the first `bytes` of `buffer` (a multiple of 4) to a staging buffer, submits, and
/// reads them back (blocking). `bytes` not a multiple of 4 or past the buffer's end, or a
/// buffer without `COPY_SRC` usage, is [`Error::Binding`].
pub fn read_back(ctx: &Context, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    if !bytes.is_multiple_of(4) || bytes > buffer.size() {
        return Err(Error::Binding(
            "read_back",
            "bytes must be a multiple of 4 within the buffer",
        ));
    }
    if !buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
        return Err(Error::Binding(
            "read_back",
            "the buffer lacks COPY_SRC usage",
        ));
    }
    let _guard = ctx.lock();
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu-loss.readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    ctx.queue().submit([encoder.finish()]);
    map_read(ctx, &staging)
}
