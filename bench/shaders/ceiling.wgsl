// The trivial kernels `bench` measures as the compute path's ceiling: the same access pattern as
// a loss, and nothing else.
//   sum:  reads a (and b, when TWO) once and writes one partial sum per workgroup, the pattern
//         of a forward pass;
//   copy: reads a (and b) once and writes c = a (+ b) once, the pattern of forward + gradient.
// With EXP, each element of a also goes through one exp: not a ceiling but the least arithmetic a
// softmax (or a log) needs, which bounds the loss kernels where arithmetic, not memory, limits
// them (CPU drivers such as lavapipe).
// Written like the loss kernels (vec4 loads, lane groups streaming contiguous runs of K vec4s
// per invocation, subgroup reductions where there are subgroups), and bench/src/lib.rs keeps the
// fastest of several K, so that the ceiling is a good kernel, not a straw man.
//
// CPU twin: none (it computes nothing a loss needs); bench/src/lib.rs only times it.
// Bindings: 0 params, 1 a, 2 b, 3 c (copy output, or partials for sum).
// Dispatch folded: workgroup w = wid.x + wid.y * params.wg_x.

#import segment
#import stream
// Invocations per partial sum, as the loss kernels (see group_sum).
override PG: u32 = 256u;
override TWO: bool = false;
override EXP: bool = false;

fn value(v: vec4<f32>) -> vec4<f32> {
    if (EXP) {
        return exp(v);
    }
    return v;
}

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn sum(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    if (wg * WG * K >= params.vecs) {
        return;
    }
    var acc = vec4<f32>(0.0);
    let first = wg * WG * K + lane_first(inv.lid);
    for (var k = 0u; k < K; k++) {
        let v = first + k * LANES;
        if (v < params.vecs) {
            acc += value(a[v]);
            if (TWO) {
                acc += b[v];
            }
        }
    }
    let mine = dot(acc, vec4<f32>(1.0));
    // One partial per group of PG invocations, as the loss kernels write theirs.
    let total = group_sum(vec2<f32>(mine, 0.0), 1u, PG, inv.lid);
    if (inv.lid % PG == 0u) {
        c[wg * (WG / PG) + inv.lid / PG] = vec4<f32>(total, 0.0, 0.0);
    }
}

@compute @workgroup_size(WG)
fn copy(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    let first = wg * WG * K + lane_first(inv.lid);
    for (var k = 0u; k < K; k++) {
        let v = first + k * LANES;
        if (v < params.vecs) {
            if (TWO) {
                c[v] = value(a[v]) + b[v];
            } else {
                c[v] = value(a[v]);
            }
        }
    }
}
