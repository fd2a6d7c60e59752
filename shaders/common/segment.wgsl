// Reductions across the SEG consecutive invocations of a segment (SEG a power of two dividing WG,
// WG <= 256), and the sum of one value per segment across the workgroup. The includer declares
// the overrides WG, SEG and SG_MIN (the adapter's smallest subgroup size).
//
// Call these in uniform control flow from every invocation of the workgroup. Each returns the
// segment's result to every invocation of the segment. The order of combination depends on the
// invocation indices alone: the same bits on every run.
//
// SUBGROUPS: a butterfly of subgroupShuffleXor inside each subgroup (no barrier); only when a
// segment spans several subgroups, one barrier through workgroup memory. Otherwise a tree in
// workgroup memory, log2(SEG) barriers. Sites share one workgroup array and begin with a barrier
// when they use it.

const SH_SIZE: u32 = 256u;

var<workgroup> seg_sh: array<vec4<f32>, SH_SIZE>;
var<workgroup> seg_part: array<vec2<f32>, SH_SIZE>;

#ifdef SUBGROUPS
fn seg_reduce(v: vec4<f32>, is_max: bool, lid: u32, sg_size: u32) -> vec4<f32> {
    let width = min(SEG, sg_size);
    var r = v;
    for (var off = 1u; off < width; off <<= 1u) {
        let o = subgroupShuffleXor(r, off);
        r = select(r + o, max(r, o), is_max);
    }
    if (SEG > SG_MIN) {
        // The previous site may still be reading seg_sh.
        workgroupBarrier();
        if (lid % width == 0u) {
            seg_sh[lid / width] = r;
        }
        workgroupBarrier();
        let parts = SEG / width;
        let base = (lid / SEG) * parts;
        r = seg_sh[base];
        for (var i = 1u; i < parts; i++) {
            let o = seg_sh[base + i];
            r = select(r + o, max(r, o), is_max);
        }
    }
    return r;
}
#else
fn seg_reduce(v: vec4<f32>, is_max: bool, lid: u32, sg_size: u32) -> vec4<f32> {
    if (SEG == 1u) {
        return v;
    }
    workgroupBarrier();
    seg_sh[lid] = v;
    workgroupBarrier();
    let j = lid % SEG;
    for (var off = SEG / 2u; off > 0u; off >>= 1u) {
        if (j < off) {
            let a = seg_sh[lid];
            let b = seg_sh[lid + off];
            seg_sh[lid] = select(a + b, max(a, b), is_max);
        }
        workgroupBarrier();
    }
    return seg_sh[lid - j];
}
#endif

fn seg_max(v: vec4<f32>, lid: u32, sg_size: u32) -> vec4<f32> {
    return seg_reduce(v, true, lid, sg_size);
}

fn seg_sum(v: vec4<f32>, lid: u32, sg_size: u32) -> vec4<f32> {
    return seg_reduce(v, false, lid, sg_size);
}

// Partial sums without a barrier: with SUBGROUPS, a workgroup writes one partial per group of
// `group` invocations (a power of two of at most SG_MIN, or one segment: a group that never
// spans two subgroups), adding the values held every `first` invocations (each segment's first,
// or every invocation) with a butterfly of subgroupShuffleXor. Returns the group's sum to its
// first invocation.
#ifdef SUBGROUPS
fn group_sum(v: vec2<f32>, first: u32, group: u32) -> vec2<f32> {
    var r = v;
    for (var off = first; off < group; off <<= 1u) {
        r = r + subgroupShuffleXor(r, off);
    }
    return r;
}
#endif

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
