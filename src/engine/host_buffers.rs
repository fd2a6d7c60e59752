//! The buffers the convenience calls reuse (kept by the context, filled and read by
//! `transfer`).

use super::slots::MAX_SLOTS;

/// The buffers the convenience calls reuse, kept by the context: a device buffer a slot, a
/// staging buffer for uploads (kept mapped between calls) and one for read-backs, each grown to
/// the largest call so far, never made anew for a call that fits. Uploading through a staging
/// buffer that stays mapped costs a `memcpy` into it and a copy on the device; a buffer made for
/// each call (`create_buffer_init`) or `Queue::write_buffer` each allocate and fill staging
/// memory of their own every time, and a new output buffer is zero-filled before the kernel
/// overwrites it (docs/performance.md has the figures).
#[derive(Default)]
pub(crate) struct HostBuffers {
    /// A device buffer a slot (`STORAGE`, `COPY_SRC`, `COPY_DST`).
    pub slots: [Option<wgpu::Buffer>; MAX_SLOTS],
    /// The upload staging buffer (`MAP_WRITE`, `COPY_SRC`).
    pub upload: Option<wgpu::Buffer>,
    /// Whether `upload` is mapped (it is between calls, once a call has finished).
    pub mapped: bool,
    /// The read-back staging buffer (`MAP_READ`, `COPY_DST`).
    pub readback: Option<wgpu::Buffer>,
}

impl HostBuffers {
    /// The bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        (self.slots.iter().chain([&self.upload, &self.readback]))
            .flatten()
            .map(wgpu::Buffer::size)
            .sum()
    }
}
