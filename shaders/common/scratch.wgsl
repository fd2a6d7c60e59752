// The plan-owned scratch buffer shared by every kernel of a loss.
//
// Layout (32-bit words; keep in sync with src/engine/program.rs `scratch` constants):
//   status[0]  number of invalid inputs seen (class index out of range, probability outside [0, 1])
//   status[1]  0xffffffff - index of the first invalid row or element (0: none); atomicMax keeps the first
//   status[2]  the first invalid value, as bits (written by whoever holds the first index; advisory)
//   status[3]  rows whose argmax is their class target (cross-entropy's `correct`, WANT_ARGMAX; fused
//              linear + cross-entropy's)
//   data[0]    the data-dependent denominator of a weighted mean (written by reduce.wgsl)
//   data[1..]  partial sums (vec2: loss, weight) and per-(row, chunk) statistics, at offsets the
//              host computes for each plan.
// The host clears the status words before every run; integer atomics only, so every float result
// is still produced in a fixed order.
struct Scratch {
    status: array<atomic<u32>, 4>,
    data: array<f32>,
}

fn report_invalid(index: u32) {
    atomicAdd(&scratch.status[0], 1u);
    atomicMax(&scratch.status[1], 0xffffffffu - index);
}

fn store_partial(base: u32, i: u32, v: vec2<f32>) {
    scratch.data[base + 2u * i] = v.x;
    scratch.data[base + 2u * i + 1u] = v.y;
}

// Stores the partial of a group of `group` invocations (see group_sum): workgroup wg writes
// WG / group partials, group i's at index wg * (WG / group) + i. The host counts them the same
// way (`Context::partial_group`). Only the group's first invocation writes.
fn store_group_partial(base: u32, wg: u32, lid: u32, group: u32, v: vec2<f32>) {
    if (lid % group == 0u) {
        store_partial(base, wg * (WG / group) + lid / group, v);
    }
}

fn load_partial(base: u32, i: u32) -> vec2<f32> {
    return vec2<f32>(scratch.data[base + 2u * i], scratch.data[base + 2u * i + 1u]);
}
