// Reductions across the SEG consecutive invocations of a segment (SEG a power of two dividing WG,
// WG <= 256), and the sum of one value per segment across the workgroup; and what every entry
// point takes (`Invocation`). The host sets the overrides WG, SEG and SG_MIN (the adapter's
// smallest subgroup size; 1 without SUBGROUPS) of every kernel.
//
// The order of every sum is a fixed tree over invocation indices, the same with and without
// subgroups and whatever size the driver gives a subgroup at run time: level `off` (1, 2, 4, ...)
// combines each aligned block of `off` invocations with the block beside it (index xor off), so
// a group's result is ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)) ... Adding and taking
// the max are commutative in IEEE arithmetic, so every invocation of a group gets the same bits.
// Levels below SG_MIN (which every subgroup spans, aligned) use subgroupShuffleXor, with no
// barrier; the levels above it go through workgroup memory, two barriers a level. Only the
// speed depends on the subgroup size, never the bits.
//
// Call these in uniform control flow from every invocation of the workgroup when a level may
// go through workgroup memory (always without SUBGROUPS).

override WG: u32 = 256u;
override SEG: u32 = 256u;
override SG_MIN: u32 = 1u;

// What every entry point takes: its workgroup, its index in it, and the subgroup size.
struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_size) sg: u32,
#endif
}

// The subgroup size the driver runs this invocation with (1 without subgroup operations).
fn sg_size_of(inv: Invocation) -> u32 {
#ifdef SUBGROUPS
    return inv.sg;
#else
    return 1u;
#endif
}

// The workgroup's number in a dispatch folded into rows of `wg_x` workgroups (the host's
// `Builder::fold`); kernels return when it is past their work.
fn wg_index(inv: Invocation, wg_x: u32) -> u32 {
    return inv.wid.x + inv.wid.y * wg_x;
}

const SH_SIZE: u32 = 256u;

var<workgroup> seg_sh: array<vec4<f32>, SH_SIZE>;
var<workgroup> seg_part: array<vec2<f32>, SH_SIZE>;

// The levels `first`, 2 first, ... below `width` of the tree (width a power of two, at most WG):
// each invocation ends with the sum (or max) over its aligned group of `width` invocations of
// the values held every `first` invocations.
fn tree_reduce(v: vec4<f32>, is_max: bool, lid: u32, first: u32, width: u32) -> vec4<f32> {
    var r = v;
    var off = first;
#ifdef SUBGROUPS
    for (; off < min(width, SG_MIN); off <<= 1u) {
        let o = subgroupShuffleXor(r, off);
        r = select(r + o, max(r, o), is_max);
    }
#endif
#ifdef SUBGROUPS
    // Known when the pipeline is made: lavapipe pays for a barrier that is compiled in, even
    // where it never runs.
    if (width <= SG_MIN) {
        return r;
    }
#endif
    for (; off < width; off <<= 1u) {
        // The previous level, or the previous site, may still be reading seg_sh.
        workgroupBarrier();
        seg_sh[lid] = r;
        workgroupBarrier();
        let o = seg_sh[lid ^ off];
        r = select(r + o, max(r, o), is_max);
    }
    return r;
}

fn seg_max(v: vec4<f32>, lid: u32, sg_size: u32) -> vec4<f32> {
    return tree_reduce(v, true, lid, 1u, SEG);
}

fn seg_sum(v: vec4<f32>, lid: u32, sg_size: u32) -> vec4<f32> {
    return tree_reduce(v, false, lid, 1u, SEG);
}

// The partial sum of a group of `group` invocations (a plan constant, never the subgroup size)
// of the values held every `first` invocations (each segment's first, or every invocation).
// Returns the group's sum to all its invocations; store_group_partial writes it.
fn group_sum(v: vec2<f32>, first: u32, group: u32, lid: u32) -> vec2<f32> {
    return tree_reduce(vec4<f32>(v, 0.0, 0.0), false, lid, first, group).xy;
}

// Sum over the workgroup of one vec2 per segment (the value of the segment's first invocation;
// the others are ignored). Invocation 0 gets the total, in index order; the others get zero.
// One barrier. seg_part is used by this site alone.
fn wg_sum_segments(v: vec2<f32>, lid: u32) -> vec2<f32> {
    if (lid % SEG == 0u) {
        seg_part[lid / SEG] = v;
    }
    workgroupBarrier();
    var total = vec2<f32>(0.0);
    if (lid == 0u) {
        for (var i = 0u; i < WG / SEG; i++) {
            total = total + seg_part[i];
        }
    }
    return total;
}
