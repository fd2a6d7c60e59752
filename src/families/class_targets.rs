//! Class-index targets, shared by the losses that take them (cross-entropy from logits,
//! negative log-likelihood): the shape and option checks, the host-side check of the indices,
//! and the passes that find a weighted mean's denominator on the GPU.
//!
//! Kernel: `shaders/class_targets.wgsl`. CPU twin: [`crate::cpu::cross_entropy::mean_denominator`].

use std::borrow::Cow;

use crate::engine::context::PipelineKey;
use crate::engine::kernel::{Kernel, fixed_layout, params};
use crate::engine::program::{Builder, Finish, Res, View, WG, elements};
use crate::error::{Error, Result};
use crate::plan::Inputs;
use crate::plan::roles::{TARGET, WEIGHT};

/// Rows one invocation of class_targets.wgsl adds (its `K`).
const TARGETS_K: u32 = 16;

/// What the kernels count as invalid class targets, in [`Error::InvalidOnGpu`].
pub(crate) const CLASS_INVALID: &str = "class targets (outside [0, C))";

/// `shaders/class_targets.wgsl`: checks class targets and sums a weighted mean's denominator.
/// Bindings: targets, class weight, scratch.
pub(crate) static CLASS_TARGETS: Kernel = Kernel::new(
    "class_targets.wgsl",
    include_str!("../../shaders/class_targets.wgsl"),
)
.params(TargetParams::INFO)
.layout(fixed_layout!(U, R, R, W));

params! {
    /// The parameters of class_targets.wgsl.
    TargetParams {
        rows: u32,
        classes: u32,
        ignore_index: i32,
        wg_x: u32,
        partial_base: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Checks a `[rows, classes]` shape: no empty dimension, an element count the kernels index,
/// and classes that class targets (i32 on the GPU) can name. Returns the element count.
pub(crate) fn check_shape(rows: usize, classes: usize) -> Result<u64> {
    if rows == 0 {
        return Err(Error::Empty("rows (N)"));
    }
    if classes == 0 {
        return Err(Error::Empty("classes (C)"));
    }
    if i32::try_from(classes).is_err() {
        return Err(Error::option(
            "classes",
            format!("{classes} is more than class targets (i32) can name"),
        ));
    }
    elements("rows x classes", &[rows, classes])
}

/// A checked plan over class targets: its shape, ignored index and weight.
pub(crate) struct ClassTargets {
    pub rows: usize,
    pub classes: usize,
    /// N * C.
    pub total: u64,
    pub ignore_index: i32,
    pub weighted: bool,
}

impl ClassTargets {
    /// Checks the shape, the weight's declared length (C) and the ignored index (an i32).
    pub fn check(
        rows: usize,
        classes: usize,
        weight: Option<usize>,
        ignore_index: i64,
    ) -> Result<Self> {
        let total = check_shape(rows, classes)?;
        if let Some(len) = weight
            && len != classes
        {
            return Err(Error::LengthMismatch {
                what: "weight (C)",
                expected: classes,
                actual: len,
            });
        }
        let ignore_index = i32::try_from(ignore_index).map_err(|_| {
            Error::option(
                "ignore_index",
                format!("{ignore_index} does not fit in an i32"),
            )
        })?;
        Ok(ClassTargets {
            rows,
            classes,
            total,
            ignore_index,
            weighted: weight.is_some(),
        })
    }

    /// Appends the passes that leave the weighted mean's denominator (the sum of `w[y_n]` over
    /// rows that are neither ignored nor out of range) in scratch.data[0], reading the
    /// `Target` and `Weight` slots.
    pub fn denominator(&self, b: &mut Builder<'_>) -> Result<()> {
        let wgs = (self.rows as u64).div_ceil((WG * TARGETS_K) as u64);
        let (wg_x, wg_y) = b.fold(wgs)?;
        let partial_base = b.scratch(2 * wgs)?;
        let key = PipelineKey::new(&CLASS_TARGETS, "main")
            .constant("WG", WG)
            .constant("SEG", WG)
            .constant("K", TARGETS_K)
            .constant("HAS_WEIGHT", self.weighted as u32);
        let params = TargetParams {
            rows: self.rows as u32,
            classes: self.classes as u32,
            ignore_index: self.ignore_index,
            wg_x,
            partial_base,
            ..Default::default()
        };
        let weight = View::Scalar(4 * self.classes as u64);
        let entries = vec![
            Res::User(TARGET, View::Scalar(4 * self.rows as u64)),
            Res::user_if(self.weighted, WEIGHT, weight, false),
            Res::Scratch,
        ];
        b.dispatch(&key, &params, entries, (wg_x, wg_y));
        b.reduce(wgs, partial_base, Finish::Denominator, None)
    }
}

/// Checks host class targets: `rows` of them, each in [0, C) or equal to `ignore_index`;
/// returns them as the i32 bytes the kernels read.
pub(crate) fn class_targets_i32<'a>(
    inputs: &Inputs<'a>,
    rows: usize,
    classes: usize,
    ignore_index: i64,
) -> Result<Option<Cow<'a, [u8]>>> {
    let targets = inputs.class_indices()?;
    if targets.len() != rows {
        return Err(Error::LengthMismatch {
            what: "targets (N)",
            expected: rows,
            actual: targets.len(),
        });
    }
    let y = targets
        .iter()
        .enumerate()
        .map(|(row, &t)| {
            let in_range = i64::try_from(classes).is_ok_and(|c| (0..c).contains(&t));
            match i32::try_from(t) {
                Ok(t32) if t == ignore_index || in_range => Ok(t32),
                _ => Err(Error::TargetOutOfRange {
                    row,
                    value: t,
                    classes,
                }),
            }
        })
        .collect::<Result<Vec<i32>>>()?;
    Ok(Some(Cow::Owned(bytemuck::cast_slice(&y).to_vec())))
}
