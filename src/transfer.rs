//! Moving host data to the GPU and results back: the machinery under the convenience API.

use wgpu::util::DeviceExt;

use crate::program::{Program, Status};
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

/// Runs `program` once on `user` buffers (created by `make_buffers` inside error scopes, so that
/// running out of memory is an error, not a panic) and reads back the first `bytes` of each
/// buffer in `reads`, plus the program's status words.
pub(crate) fn run<B>(
    program: &Program,
    make_buffers: impl FnOnce() -> B,
    user: impl Fn(&B) -> Vec<Option<&wgpu::Buffer>>,
    reads: impl Fn(&B) -> Vec<(&wgpu::Buffer, u64)>,
) -> Result<(Vec<Vec<u8>>, Status)> {
    let ctx = program.ctx();
    let device = ctx.device();
    let _guard = ctx.lock();
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let result = (|| {
        let buffers = make_buffers();
        let reads = reads(&buffers);
        let mut offsets = Vec::with_capacity(reads.len());
        let mut total = 16u64;
        for &(_, bytes) in &reads {
            offsets.push(total);
            total += bytes.next_multiple_of(4);
        }
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-loss.readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-loss"),
        });
        program.record(&mut encoder, &user(&buffers), None)?;
        encoder.copy_buffer_to_buffer(program.scratch(), 0, &staging, 0, 16);
        for (&(buffer, bytes), &offset) in reads.iter().zip(&offsets) {
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, offset, bytes.next_multiple_of(4));
        }
        ctx.queue().submit([encoder.finish()]);
        let data = map_read(ctx, &staging)?;
        let status = Status::from_words(&bytemuck::pod_collect_to_vec(&data[..16]));
        let outs = reads
            .iter()
            .zip(&offsets)
            .map(|(&(_, bytes), &offset)| data[offset as usize..(offset + bytes) as usize].to_vec())
            .collect();
        Ok((outs, status))
    })();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    if let Some(e) = oom.or(validation) {
        return Err(Error::from_wgpu(e));
    }
    result
}

/// One user slot of a run on host data.
pub(crate) enum HostSlot<'a> {
    /// Host data to upload.
    Input(&'static str, &'a [u8]),
    /// An output buffer of this many bytes.
    Output(&'static str, u64),
    /// Not used by the program.
    Unused,
}

impl<'a> HostSlot<'a> {
    /// An input from an optional slice.
    pub fn input<T: bytemuck::Pod>(name: &'static str, data: Option<&'a [T]>) -> Self {
        match data {
            Some(d) => HostSlot::Input(name, bytemuck::cast_slice(d)),
            None => HostSlot::Unused,
        }
    }

    /// An output when `wanted`.
    pub fn output(name: &'static str, wanted: bool, bytes: u64) -> Self {
        if wanted {
            HostSlot::Output(name, bytes)
        } else {
            HostSlot::Unused
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            HostSlot::Input(_, d) => d.len() as u64,
            HostSlot::Output(_, b) => *b,
            HostSlot::Unused => 0,
        }
    }
}

/// The convenience level: uploads the slots' inputs and creates their outputs (inside error
/// scopes), runs `program` once, reads back the `loss` and `grad` slots (`grad` may name an
/// input slot: a gradient written in place), and turns invalid inputs the kernels counted into
/// [`Error::InvalidOnGpu`] (`what` names them).
pub(crate) fn run_host(
    program: &Program,
    slots: &[HostSlot<'_>],
    loss: Option<usize>,
    grad: Option<usize>,
    reduction: Reduction,
    what: &'static str,
) -> Result<LossOutput> {
    let ctx = program.ctx();
    let make = || {
        slots
            .iter()
            .map(|s| match s {
                HostSlot::Input(name, data) => Some(upload(ctx, name, data)),
                HostSlot::Output(name, bytes) => Some(output(ctx, name, *bytes)),
                HostSlot::Unused => None,
            })
            .collect::<Vec<_>>()
    };
    let read: Vec<usize> = loss.into_iter().chain(grad).collect();
    let (outs, status) = run(
        program,
        make,
        |buffers| buffers.iter().map(Option::as_ref).collect(),
        |buffers| {
            read.iter()
                .filter_map(|&i| buffers[i].as_ref().map(|b| (b, slots[i].bytes())))
                .collect()
        },
    )?;
    status.check(what)?;
    let mut outs = outs
        .into_iter()
        .map(|v| bytemuck::pod_collect_to_vec::<u8, f32>(&v));
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
pub(crate) fn run_resident(program: &Program, user: &[Option<&wgpu::Buffer>]) -> Result<Status> {
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
        program.record(&mut encoder, user, None)?;
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
    let ctx = program.ctx();
    let _guard = ctx.lock();
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu-loss.status"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-loss.status"),
        });
    encoder.copy_buffer_to_buffer(program.scratch(), 0, &staging, 0, 16);
    ctx.queue().submit([encoder.finish()]);
    let data = map_read(ctx, &staging)?;
    Ok(Status::from_words(&bytemuck::pod_collect_to_vec(&data)))
}
