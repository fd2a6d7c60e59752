//! Moving host data to the GPU and results back: the machinery under the convenience API.

use wgpu::util::DeviceExt;

use super::host_buffers::HostBuffers;
use super::program::{Bound, Program, Status};
use super::slots::{HostData, MAX_SLOTS, Slot, UserBindings};
use crate::dtype::{DType, ValuesMut};
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

/// `buffer`, or a new one of at least `bytes` when it is smaller (its size rounded up to a
/// 64 KiB multiple, so that calls of nearby sizes share it).
fn grown<'b>(
    ctx: &Context,
    buffer: &'b mut Option<wgpu::Buffer>,
    bytes: u64,
    label: &str,
    usage: wgpu::BufferUsages,
    mapped: bool,
) -> (&'b wgpu::Buffer, bool) {
    let fits = buffer.as_ref().is_some_and(|b| b.size() >= bytes);
    if !fits {
        // Never past the device's largest buffer (`bytes` itself is within it).
        let size = (bytes.max(4).next_multiple_of(1 << 16))
            .min(ctx.limits().max_buffer_size / 4 * 4)
            .max(bytes);
        *buffer = None;
        *buffer = Some(ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: mapped,
        }));
    }
    (buffer.as_ref().expect("made above"), !fits)
}

/// Runs `program` once on `host`'s data (inside error scopes, so that running out of memory is
/// an error, not a panic), in one submission: the inputs copied into the context's reused
/// staging buffer and from there into its reused device buffers, the kernels, and the outputs
/// asked for (the loss, the gradient, which may land in the input: in place, and the side
/// outputs) copied to the reused read-back buffer and read from its mapping. Invalid inputs the
/// kernels counted become [`Error::InvalidOnGpu`] (`what` names them). A call while another
/// holds the reused buffers (another thread's) makes buffers of its own. With `grad`, the
/// gradient is copied from the read-back's mapping into it (checked first: its dtype and
/// length those of the gradient) and the output has none.
pub(crate) fn run_host(
    program: &Program,
    host: &HostData<'_>,
    reduction: Reduction,
    what: &'static str,
    grad_into: Option<&mut ValuesMut<'_>>,
) -> Result<LossOutput> {
    let ctx = program.ctx();
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
    if let Some(into) = grad_into.as_deref() {
        let Some(&(slot, _)) = reads.iter().find(|(_, f)| *f == Field::Grad) else {
            return Err(Error::Binding("grad", "this plan computes no gradient"));
        };
        let (dtype, elements) = gradient_shape(program, slot);
        if into.dtype() != dtype {
            return Err(Error::option(
                "grad",
                format!("a slice of {}, the gradient is {dtype}", into.dtype()),
            ));
        }
        if into.len() as u64 != elements {
            return Err(Error::LengthMismatch {
                what: "grad (the gradient's elements)",
                expected: elements as usize,
                actual: into.len(),
            });
        }
    }
    let (out, status) = with_host_buffers(ctx, |pool| {
        run_pooled(program, host, &reads, reduction, pool, grad_into)
    })?;
    status.check(what)?;
    Ok(out)
}

/// Runs `f` under the device lock inside error scopes ([`scoped`]) with the context's reused
/// buffers, or buffers of its own when another call holds them. After a call the device refused
/// (or that failed before its end) the reused buffers may hold a buffer the device never made
/// (out of memory) or a mapping in any state, so they are forgotten: the next call makes them
/// anew.
fn with_host_buffers<T>(ctx: &Context, f: impl FnOnce(&mut HostBuffers) -> Result<T>) -> Result<T> {
    let result = scoped(ctx, || {
        let mut own = HostBuffers::default();
        let mut shared = ctx.try_host_buffers();
        f(shared.as_deref_mut().unwrap_or(&mut own))
    });
    if result.is_err() {
        let _guard = ctx.lock();
        if let Some(mut pool) = ctx.try_host_buffers() {
            *pool = HostBuffers::default();
        }
    }
    result
}

/// [`run_host`] with `pool`'s buffers (under the device lock).
fn run_pooled(
    program: &Program,
    host: &HostData<'_>,
    reads: &[(Slot, Field)],
    reduction: Reduction,
    pool: &mut HostBuffers,
    mut grad_into: Option<&mut ValuesMut<'_>>,
) -> Result<(LossOutput, Status)> {
    let ctx = program.ctx();
    let device = ctx.device();
    let mut inputs: Vec<(usize, &[u8])> = Vec::new();
    for (slot, bytes) in program.used_slots() {
        if let Some(data) = host.get(slot.index()) {
            inputs.push((slot.index(), data));
        } else if !program.writes(slot) {
            // An input the host lacks is left out: binding names it.
            continue;
        }
        let bytes = bytes.max(4).next_multiple_of(4);
        let label = slot.label();
        grown(
            ctx,
            &mut pool.slots[slot.index()],
            bytes,
            &label,
            storage(),
            false,
        );
    }
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("wgpu-loss"),
    });
    stage(ctx, pool, &inputs, &mut encoder)?;
    // The program bound to the slots' buffers (the inputs given and the outputs), each its
    // slot's bytes.
    let user = program
        .used_slots()
        .filter(|&(slot, _)| program.writes(slot) || host.get(slot.index()).is_some())
        .fold(UserBindings::default(), |u, (slot, bytes)| {
            let buffer = pool.slots[slot.index()].as_ref().expect("grown above");
            let size = std::num::NonZeroU64::new(bytes.max(4).next_multiple_of(4));
            u.with(
                slot,
                Some(wgpu::BufferBinding {
                    buffer,
                    offset: 0,
                    size,
                }),
            )
        });
    let bound = program.bind(&user)?;
    program.record(&mut encoder, &bound, None);
    // The status words, then each output read.
    let mut offsets = Vec::with_capacity(reads.len());
    let mut total = 16u64;
    for &(slot, _) in reads {
        offsets.push(total);
        total += program.slot_bytes(slot).next_multiple_of(4);
    }
    let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
    let (readback, _) = grown(
        ctx,
        &mut pool.readback,
        total,
        "wgpu-loss.readback",
        usage,
        false,
    );
    encoder.copy_buffer_to_buffer(program.scratch(), 0, readback, 0, 16);
    for (&(slot, _), &offset) in reads.iter().zip(&offsets) {
        let from = pool.slots[slot.index()].as_ref().expect("grown above");
        let bytes = program.slot_bytes(slot).next_multiple_of(4);
        encoder.copy_buffer_to_buffer(from, 0, readback, offset, bytes);
    }
    ctx.queue().submit([encoder.finish()]);
    // Both mappings resolve in one wait: the read-back's, and the upload staging buffer's for
    // the next call.
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    readback.map_async(wgpu::MapMode::Read, ..total, move |r| {
        let _ = tx.send(r);
    });
    let remap = pool
        .upload
        .as_ref()
        .filter(|_| !pool.mapped)
        .map(|staging| {
            let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
            staging.map_async(wgpu::MapMode::Write, .., move |r| {
                let _ = tx.send(r);
            });
            rx
        });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Readback(e.to_string()))?;
    received(pollster::block_on(rx.receive()))?;
    if let Some(rx) = remap {
        received(pollster::block_on(rx.receive()))?;
        pool.mapped = true;
    }
    let result = {
        let data = readback
            .get_mapped_range(..total)
            .map_err(|e| Error::Readback(e.to_string()))?;
        let status = Status::from_words(&bytemuck::pod_collect_to_vec(&data[..16]));
        let mut out = LossOutput::from_parts(reduction, None, None);
        for (&(slot, field), &offset) in reads.iter().zip(&offsets) {
            let bytes = &data[offset as usize..(offset + program.slot_bytes(slot)) as usize];
            if field == Field::Grad
                && let Some(into) = grad_into.as_deref_mut()
            {
                // Straight into the caller's slice (its length checked by run_host).
                let into = into.bytes_mut();
                into.copy_from_slice(&bytes[..into.len()]);
                continue;
            }
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
        (out, status)
    };
    readback.unmap();
    Ok(result)
}

/// The usage of the reused device buffers.
fn storage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

/// Writes `inputs` (slot index, bytes) into `pool`'s upload staging buffer (grown if needed,
/// mapped since the last call) at 4-byte aligned offsets, and records their copies into the
/// slots' device buffers (grown already) into `encoder`; the caller submits, then remaps the
/// staging buffer. Inputs that together exceed the device's largest buffer go in groups that
/// fit it, each group but the last copied by a submission of its own.
fn stage(
    ctx: &Context,
    pool: &mut HostBuffers,
    inputs: &[(usize, &[u8])],
    encoder: &mut wgpu::CommandEncoder,
) -> Result<()> {
    let padded = |data: &[u8]| (data.len() as u64).max(4).next_multiple_of(4);
    let limit = ctx.limits().max_buffer_size / 4 * 4;
    let mut groups: Vec<&[(usize, &[u8])]> = Vec::new();
    let (mut first, mut bytes) = (0, 0);
    for (k, &(_, data)) in inputs.iter().enumerate() {
        if k > first && bytes + padded(data) > limit {
            groups.push(&inputs[first..k]);
            (first, bytes) = (k, 0);
        }
        bytes += padded(data);
    }
    if first < inputs.len() {
        groups.push(&inputs[first..]);
    }
    for (k, group) in groups.iter().enumerate() {
        let total: u64 = group.iter().map(|(_, d)| padded(d)).sum();
        let usage = wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC;
        let label = "wgpu-loss.upload";
        let (staging, new) = grown(ctx, &mut pool.upload, total, label, usage, true);
        if !new && !pool.mapped {
            map(ctx, staging, wgpu::MapMode::Write)?;
        }
        pool.mapped = false;
        {
            let mut view = staging
                .get_mapped_range_mut(..total)
                .map_err(|e| Error::Wgpu(e.to_string()))?;
            let mut at = 0;
            for &(_, data) in group.iter() {
                view.slice(at..at + data.len()).copy_from_slice(data);
                let end = at + padded(data) as usize;
                view.slice(at + data.len()..end).fill(0);
                at = end;
            }
        }
        staging.unmap();
        let last = k + 1 == groups.len();
        let mut own = (!last).then(|| ctx.device().create_command_encoder(&Default::default()));
        let record = own.as_mut().unwrap_or(&mut *encoder);
        let mut at = 0;
        for &(slot, data) in group.iter() {
            let to = pool.slots[slot].as_ref().expect("grown by the caller");
            record.copy_buffer_to_buffer(staging, at, to, 0, padded(data));
            at += padded(data);
        }
        if let Some(e) = own {
            ctx.queue().submit([e.finish()]);
            remap(ctx, pool)?;
        }
    }
    Ok(())
}

/// Maps `pool`'s upload staging buffer for the next call and waits (after a submission); a
/// mapped one (a call that uploaded nothing) stays as it is.
fn remap(ctx: &Context, pool: &mut HostBuffers) -> Result<()> {
    if pool.mapped {
        return Ok(());
    }
    if let Some(staging) = &pool.upload {
        map(ctx, staging, wgpu::MapMode::Write)?;
        pool.mapped = true;
    }
    Ok(())
}

/// Uploads `inputs` the way [`crate::Context::loss`] does, into the context's reused buffers
/// (the first `inputs.len()` of them; inputs larger than they are grow them), and waits: what a
/// convenience call's upload costs, for benchmarks. Nothing else uses these buffers meanwhile
/// (the call holds them); an error of the device is returned.
pub fn upload_reused(ctx: &Context, inputs: &[&[u8]]) -> Result<()> {
    if inputs.len() > MAX_SLOTS {
        return Err(Error::Binding("inputs", "more than a plan's slots"));
    }
    with_host_buffers(ctx, |pool| {
        let inputs: Vec<(usize, &[u8])> = inputs.iter().copied().enumerate().collect();
        for &(i, data) in &inputs {
            let bytes = (data.len() as u64).max(4).next_multiple_of(4);
            grown(
                ctx,
                &mut pool.slots[i],
                bytes,
                "wgpu-loss.input",
                storage(),
                false,
            );
        }
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        stage(ctx, pool, &inputs, &mut encoder)?;
        ctx.queue().submit([encoder.finish()]);
        remap(ctx, pool)
    })
}

/// The gradient's dtype and element count, its slot being `slot`.
fn gradient_shape(program: &Program, slot: Slot) -> (DType, u64) {
    match program.grad_dtype() {
        (DType::F32, _) => (DType::F32, program.slot_bytes(slot) / 4),
        other => other,
    }
}

/// What a map callback sent: its error as [`Error::Readback`].
fn received(r: Option<std::result::Result<(), wgpu::BufferAsyncError>>) -> Result<()> {
    match r {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(Error::Readback(e.to_string())),
        None => Err(Error::Readback("the map callback never ran".into())),
    }
}

/// Maps `buffer` for `mode` and waits for it (under the device lock).
fn map(ctx: &Context, buffer: &wgpu::Buffer, mode: wgpu::MapMode) -> Result<()> {
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    buffer.map_async(mode, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Readback(e.to_string()))?;
    received(pollster::block_on(rx.receive()))
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
