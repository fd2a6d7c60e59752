//! Moving host data to the GPU and results back: the machinery under the convenience API.

use wgpu::util::DeviceExt;

use crate::dtype::DType;
use crate::plan::HostData;
use crate::program::{Program, Slot, Status, UserBindings};
use crate::reduction::{LossOutput, Reduction};
use crate::{Context, Error, Result};

/// Creates a storage buffer holding `data` (at least 4 bytes, so that it can be bound).
pub(crate) fn upload(ctx: &Context, label: &str, data: &[u8]) -> wgpu::Buffer {
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
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
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
    let loss = (program.slot_bytes(Slot::Loss) > 0).then_some(Slot::Loss);
    let grad = Some(program.grad_slot()).filter(|&s| program.slot_bytes(s) > 0);
    let reads: Vec<Slot> = loss.into_iter().chain(grad).collect();
    let _guard = ctx.lock();
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let result = (|| {
        let buffers: Vec<Option<wgpu::Buffer>> = Slot::ALL
            .iter()
            .map(|&slot| match slot {
                Slot::Loss | Slot::Grad => Some(program.slot_bytes(slot))
                    .filter(|&b| b > 0)
                    .map(|bytes| output(ctx, slot.label(), bytes)),
                _ => host[slot as usize]
                    .as_ref()
                    .map(|data| upload(ctx, slot.label(), data)),
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
        let groups = program.bind(&user)?;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-loss"),
        });
        program.record(&mut encoder, &groups, None);
        encoder.copy_buffer_to_buffer(program.scratch(), 0, &staging, 0, 16);
        for (&slot, &offset) in reads.iter().zip(&offsets) {
            let buffer = buffers[slot as usize].as_ref().expect("created above");
            let bytes = program.slot_bytes(slot).next_multiple_of(4);
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, offset, bytes);
        }
        ctx.queue().submit([encoder.finish()]);
        let data = map_read(ctx, &staging)?;
        let status = Status::from_words(&bytemuck::pod_collect_to_vec(&data[..16]));
        let outs: Vec<Vec<f32>> = reads
            .iter()
            .zip(&offsets)
            .map(|(&slot, &offset)| {
                let end = offset + program.slot_bytes(slot);
                match program.grad_dtype() {
                    (dtype, elements) if slot != Slot::Loss && dtype != DType::F32 => {
                        let mut g = dtype.widen(&data[offset as usize..end as usize]);
                        g.truncate(elements as usize);
                        g
                    }
                    _ => bytemuck::pod_collect_to_vec(&data[offset as usize..end as usize]),
                }
            })
            .collect();
        Ok((outs, status))
    })();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    if let Some(e) = oom.or(validation) {
        return Err(Error::from_wgpu(e));
    }
    let (outs, status) = result?;
    status.check(what)?;
    let mut outs = outs.into_iter();
    let loss = loss.map(|_| outs.next().unwrap_or_default());
    let grad = grad.map(|_| outs.next().unwrap_or_default());
    Ok(LossOutput::from_parts(reduction, loss, grad))
}

/// Maps a `MAP_READ` buffer, waits for it, and copies its contents out.
pub(crate) fn map_read(ctx: &Context, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
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
pub(crate) fn run_resident(program: &Program, groups: &[wgpu::BindGroup]) -> Result<Status> {
    let ctx = program.ctx();
    let device = ctx.device();
    let _guard = ctx.lock();
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let result = (|| {
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
    })();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    if let Some(e) = oom.or(validation) {
        return Err(Error::from_wgpu(e));
    }
    result
}

/// Reads the status words of the program's last run (blocking).
pub(crate) fn read_status(program: &Program) -> Result<Status> {
    let data = read_back(program.ctx(), program.scratch(), 16)?;
    Ok(Status::from_words(&bytemuck::pod_collect_to_vec(&data)))
}

/// Copies the first `bytes` of `buffer` (a multiple of 4) to a staging buffer, submits, and
/// reads them back (blocking).
pub(crate) fn read_back(ctx: &Context, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
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
