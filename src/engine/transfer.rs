//! Moving host data to the GPU and results back: the machinery under the convenience API.

use wgpu::util::DeviceExt;

use super::program::{Bound, HostData, Program, Slot, Status, UserBindings};
use crate::dtype::DType;
use crate::engine::context::Context;
use crate::error::{Error, Result};
use crate::reduction::{LossOutput, Reduction};

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
    // The outputs to read back: the loss, the gradient (in the input, in place), and the side
    // outputs the program writes.
    let grad_slot = program.grad_slot();
    let reads: Vec<Slot> = [
        Slot::Loss,
        grad_slot,
        Slot::Lse,
        Slot::RowLoss,
        Slot::Argmax,
        Slot::Correct,
        Slot::ShardStats,
        Slot::GradLinear,
        Slot::GradBias,
    ]
    .into_iter()
    .filter(|&s| program.slot_bytes(s) > 0)
    .collect();
    let (out, status) = scoped(ctx, || {
        let buffers: Vec<Option<wgpu::Buffer>> = Slot::ALL
            .iter()
            .map(|&slot| match host_index(slot) {
                Some(i) => host[i].as_ref().map(|data| upload(ctx, slot.label(), data)),
                None => Some(program.slot_bytes(slot))
                    .filter(|&b| b > 0)
                    .map(|bytes| output(ctx, slot.label(), bytes)),
            })
            .collect();
        let mut offsets = Vec::with_capacity(reads.len());
        let mut total = 16u64;
        for &slot in &reads {
            offsets.push(total);
            total += program.slot_bytes(slot).next_multiple_of(4);
        }
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-loss.readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let user: UserBindings<'_> =
            std::array::from_fn(|i| buffers[i].as_ref().map(|b| b.as_entire_buffer_binding()));
        let bound = program.bind(&user)?;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-loss"),
        });
        program.record(&mut encoder, &bound, None);
        encoder.copy_buffer_to_buffer(program.scratch(), 0, &staging, 0, 16);
        for (&slot, &offset) in reads.iter().zip(&offsets) {
            let buffer = buffers[slot as usize].as_ref().expect("created above");
            let bytes = program.slot_bytes(slot).next_multiple_of(4);
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, offset, bytes);
        }
        ctx.queue().submit([encoder.finish()]);
        let data = map_read(ctx, &staging)?;
        let status = Status::from_words(&bytemuck::pod_collect_to_vec(&data[..16]));
        let outs: Vec<(Slot, &[u8])> = reads
            .iter()
            .zip(&offsets)
            .map(|(&slot, &offset)| {
                let end = offset + program.slot_bytes(slot);
                (slot, &data[offset as usize..end as usize])
            })
            .collect();
        let mut out = LossOutput::from_parts(reduction, None, None);
        let f32s = |b: &[u8]| bytemuck::pod_collect_to_vec::<u8, f32>(b);
        for (slot, bytes) in outs {
            match slot {
                Slot::Loss => {
                    out = LossOutput::from_parts(reduction, Some(f32s(bytes)), None);
                }
                Slot::Lse => out.lse = Some(f32s(bytes)),
                Slot::RowLoss => out.row_losses = Some(f32s(bytes)),
                Slot::Argmax => out.argmax = Some(bytemuck::pod_collect_to_vec(bytes)),
                Slot::ShardStats => out.shard_stats = Some(f32s(bytes)),
                Slot::GradLinear => out.grad_linear = Some(f32s(bytes)),
                Slot::GradBias => out.grad_bias = Some(f32s(bytes)),
                Slot::Correct => {
                    out.correct = Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                }
                _ => {
                    out.grad = Some(match program.grad_dtype() {
                        (dtype, elements) if dtype != DType::F32 => {
                            let mut g = dtype.widen(bytes);
                            g.truncate(elements as usize);
                            g
                        }
                        _ => f32s(bytes),
                    })
                }
            }
        }
        Ok((out, status))
    })?;
    status.check(what)?;
    Ok(out)
}

/// The index in [`HostData`] of an input slot; None for the outputs.
pub(crate) fn host_index(slot: Slot) -> Option<usize> {
    match slot {
        Slot::Input => Some(0),
        Slot::Target => Some(1),
        Slot::Weight => Some(2),
        Slot::PosWeight => Some(3),
        Slot::GradOutput => Some(4),
        Slot::ShardScale => Some(5),
        Slot::Linear => Some(6),
        Slot::Bias => Some(7),
        _ => None,
    }
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
