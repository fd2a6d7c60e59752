// A tiled matrix product, for `bench` alone: the trivial matmul whose rate is the ceiling of
// fused linear + cross-entropy's arithmetic, and the matmuls of the unfused path it is measured
// against (logits = h W^T, then the gradients dh = dz W and dW = dz^T h).
//   c[m, n] (+)= sum_k a(m, k) b(k, n)
// with a(m, k) = a[m * a_rs + k * a_cs] and b(k, n) = b[k * b_rs + n * b_cs] (the strides give
// the transposes) and c[m * n_ld + n]; the host binds windows of larger tensors so that each
// product's indices start at 0.
// Workgroup (x, y) computes the 64 x 64 tile at rows 64 y, columns 64 x: invocation i its 4 x 4
// at rows 4 (i / 16), columns 4 (i % 16), over k in steps of TK staged in workgroup memory (the
// staging loops unrolled: an invocation loops k / TK times, below lavapipe's loop cap for k up
// to about a million): the tiled product of shaders/common/tile_matmul.wgsl, fused linear +
// cross-entropy's. With ACCUMULATE, c gets c + the product (a product split over k).
//
// CPU twin: none of its own; the unfused path built on it (bench/src/linear.rs) is held to
// src/cpu/linear_cross_entropy.rs by tests/linear_cross_entropy.rs.
// Bindings: 0 params, 1 a, 2 b, 3 c.

#import segment
#import tile_matmul

#const TK

override ACCUMULATE: bool = false;

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// The rows' operand, k-major, 4 rows a vector: sa[k * 16 + m / 4][m % 4] (the columns' is
// tile_b, likewise with n).
var<workgroup> sa: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn main(inv: Invocation) {
    let wid = inv.wid;
    let lid = inv.lid;
    let m0 = wid.y * 64u;
    let n0 = wid.x * 64u;
    let ty = lid / 16u;
    let tx = lid % 16u;
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        // 64 x TK of each operand, 4 values an invocation, consecutive invocations along the
        // operand's contiguous dimension.
#unroll j LOADS
        {
            let idx = lid + 256u * j;
            let pa = tile_place(idx, params.a_cs == 1u);
            var x = 0.0;
            if (m0 + pa.x < params.m && k0 + pa.y < params.k) {
                x = a[(m0 + pa.x) * params.a_rs + (k0 + pa.y) * params.a_cs];
            }
            sa[tile_vec(pa)][pa.x % 4u] = x;
            let pb = tile_place(idx, params.b_rs == 1u);
            var z = 0.0;
            if (n0 + pb.x < params.n && k0 + pb.y < params.k) {
                z = b[(k0 + pb.y) * params.b_rs + (n0 + pb.x) * params.b_cs];
            }
            tile_b_set(pb, z);
        }
#endunroll
        workgroupBarrier();
#unroll kk TK
        tile_step4(&acc, sa[kk * 16u + ty], kk, tx);
#endunroll
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let m = m0 + 4u * ty + j;
        if (m >= params.m) {
            break;
        }
        for (var i = 0u; i < 4u; i++) {
            let n = n0 + 4u * tx + i;
            if (n < params.n) {
                var v = acc[j][i];
                let e = m * params.n_ld + n;
                if (ACCUMULATE) {
                    v += c[e];
                }
                c[e] = v;
            }
        }
    }
}
