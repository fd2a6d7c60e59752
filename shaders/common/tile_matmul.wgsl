// The tiled matrix product of fused linear + cross-entropy (linear_cross_entropy.wgsl: its
// logits h W^T and its gradients dz W and dz^T h), shared with the benchmark's matmul
// (bench/shaders/matmul.wgsl), so that the ceiling `bench` holds the fused kernel to, and the
// unfused path it is measured against, run the same inner loop.
//
// CPU twin: none of its own; what its includers compute is src/cpu/linear_cross_entropy.rs's.
//
// A workgroup of 256 invocations computes a tile of 64 columns: invocation i the columns
// 4 tx + {0..3}, tx = i % 16, of the rows its ty = i / 16 picks (4 ty + {0..3} of 64 rows, 2 ty +
// {0, 1} of 32), over k in steps of TK (the includer's `#const TK`, at most 16) staged in
// workgroup memory. The columns' operand is staged in tile_b, k-major, 4 columns a vector:
// tile_b[k * 16 + n / 4][n % 4]; the rows' operand is the includer's, 4 rows a vector in the same
// layout (2 rows a vec2 for 32 rows). An invocation adds the steps in k order: every sum has a
// fixed order, the same bits on every run.

var<workgroup> tile_b: array<vec4<f32>, 256>;

// Where staging value `idx` of an operand lands in its tile: (row or column, k), consecutive
// values along k where the operand is contiguous in k (`k_fast`), else along the other.
fn tile_place(idx: u32, k_fast: bool) -> vec2<u32> {
    if (k_fast) {
        return vec2<u32>(idx / TK, idx % TK);
    }
    return vec2<u32>(idx % 64u, idx / 64u);
}

// The vector of a staged operand of 64 rows or columns that holds place p (in its lane p.x % 4).
fn tile_vec(p: vec2<u32>) -> u32 {
    return p.y * 16u + p.x / 4u;
}

// Stages value v of the columns' operand at place p.
fn tile_b_set(p: vec2<u32>, v: f32) {
    tile_b[tile_vec(p)][p.x % 4u] = v;
}

// Step kk of an invocation's 4 x 4 block: acc[j] += a[j] * (its 4 columns of tile_b at kk), a
// holding its 4 rows' values at kk.
fn tile_step4(acc: ptr<function, array<vec4<f32>, 4>>, a: vec4<f32>, kk: u32, tx: u32) {
    let b = tile_b[kk * 16u + tx];
    (*acc)[0] += a.x * b;
    (*acc)[1] += a.y * b;
    (*acc)[2] += a.z * b;
    (*acc)[3] += a.w * b;
}

// The same for a 2 x 4 block (2 rows, in acc[0] and acc[1]).
fn tile_step2(acc: ptr<function, array<vec4<f32>, 4>>, a: vec2<f32>, kk: u32, tx: u32) {
    let b = tile_b[kk * 16u + tx];
    (*acc)[0] += a.x * b;
    (*acc)[1] += a.y * b;
}
