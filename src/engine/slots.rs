//! The caller's buffers as a program sees them: slots that each family declares and names
//! itself ([`Slot`]), the caller's ranges and textures for them ([`UserBindings`],
//! [`UserTextures`]) and the host bytes of a convenience call ([`HostData`]). The engine knows
//! no slot by name: a family's buffers struct maps its fields onto its slots.

use std::borrow::Cow;

use crate::reduction::Field;

/// The most slots one program has.
pub const MAX_SLOTS: usize = 12;

/// One user buffer of a family's programs: its place among the family's slots, its name (its
/// field in the family's buffers struct, for errors and buffer labels) and, for an output, the
/// field of [`crate::LossOutput`] the convenience level reads it into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    index: u8,
    name: &'static str,
    result: Option<Field>,
}

impl Slot {
    /// Slot `index` (below [`MAX_SLOTS`]) named `name`.
    pub const fn new(index: usize, name: &'static str) -> Self {
        assert!(index < MAX_SLOTS, "wgpu-loss: slot index past MAX_SLOTS");
        Slot {
            index: index as u8,
            name,
            result: None,
        }
    }

    /// This slot, read back into `field` by the convenience level when a program writes it.
    pub const fn result(self, field: Field) -> Self {
        Slot {
            result: Some(field),
            ..self
        }
    }

    /// Its place in [`UserBindings`].
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// Its name: the field of the family's buffers struct.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// The output field the convenience level reads it into, if any.
    pub fn field(self) -> Option<Field> {
        self.result
    }

    /// The label of the buffers the convenience calls create for it.
    pub fn label(self) -> String {
        format!("wgpu-loss.{}", self.name)
    }
}

/// The caller's ranges, one optional range a slot.
#[derive(Clone, Debug, Default)]
pub struct UserBindings<'a> {
    ranges: [Option<(Slot, wgpu::BufferBinding<'a>)>; MAX_SLOTS],
}

impl<'a> UserBindings<'a> {
    /// Sets (or clears, with `None`) the range of `slot`.
    pub fn set(&mut self, slot: Slot, range: Option<wgpu::BufferBinding<'a>>) {
        self.ranges[slot.index()] = range.map(|r| (slot, r));
    }

    /// [`UserBindings::set`], by value.
    pub fn with(mut self, slot: Slot, range: Option<wgpu::BufferBinding<'a>>) -> Self {
        self.set(slot, range);
        self
    }

    /// The range at slot index `i` and the slot it was given for.
    pub fn get(&self, i: usize) -> Option<&(Slot, wgpu::BufferBinding<'a>)> {
        self.ranges[i].as_ref()
    }

    /// Every range given, with its slot.
    pub fn iter(&self) -> impl Iterator<Item = &(Slot, wgpu::BufferBinding<'a>)> {
        self.ranges.iter().flatten()
    }
}

/// The caller's textures, one optional view a slot.
pub type UserTextures<'a> = [Option<&'a wgpu::TextureView>; MAX_SLOTS];

/// The host bytes of a convenience call, by slot: what the family uploads.
#[derive(Clone, Debug, Default)]
pub struct HostData<'a> {
    data: Vec<(Slot, Cow<'a, [u8]>)>,
}

impl<'a> HostData<'a> {
    /// Adds the bytes of `slot` (each slot once), when there are any.
    pub fn with(mut self, slot: Slot, bytes: Option<Cow<'a, [u8]>>) -> Self {
        if let Some(b) = bytes {
            self.data.push((slot, b));
        }
        self
    }

    /// The bytes of slot index `i`, if given.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.data
            .iter()
            .find(|(s, _)| s.index() == i)
            .map(|(_, b)| &b[..])
    }

    /// The slots that have bytes.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.data.iter().map(|(s, _)| *s)
    }

    /// Whether a slot named `name` has bytes.
    pub fn has(&self, name: &str) -> bool {
        self.data.iter().any(|(s, _)| s.name == name)
    }
}
