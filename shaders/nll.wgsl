// Negative log-likelihood over log-probabilities x [N, C] with class targets y [N] (i32):
//   loss_n = -w_{y_n} x[n, y_n], 0 for rows whose target is ignore_index;
//   grad[n, c] = -w_{y_n} [c == y_n] (times the reduction's scale), 0 in ignored rows.
// Each row also yields its weight w_{y_n} (0 when ignored) for a weighted mean's denominator.
//
// CPU twin: src/cpu/nll.rs. Host side: src/families/nll.rs.
//
// Layout: workgroup w computes the loss of rows params.row_base + [w * WG * KR, (w + 1) * WG * KR)
// (one row per invocation at a time: the loss reads one logit per row) and writes the
// gradient's vec4s params.vec_base + [w * WG * K, (w + 1) * WG * K), read from nothing but the
// targets: each element's row is e / C. The gradient needs no read of x at all.
// VEC4 binds the gradient as array<vec4<f32>> (the first floor(N C / 4) vec4s); without it as
// array<f32> (the last partial vec4, and problems that fit one workgroup: SINGLE, which also
// finds a weighted mean's denominator and writes the reduced value).
// x and the gradient are bound from element params.bind_base on: a window of whole rows (x) or
// whole workgroups' vec4s (the gradient), when they are larger than one binding. The host then
// computes the loss and the gradient in dispatches of their own.
// PARTIAL: each row's (loss, weight) goes to scratch at partial_base + 2 n, for the host's
// reduction over rows (the same bits however the rows are windowed). Dispatch folded:
// workgroup w = wid.x + wid.y * params.wg_x.
// Bindings: 0 params, 1 x, 2 y, 3 w, 4 grad, 5 loss, 6 scratch.

#import scratch
#import segment
#import outputs
#import stream
#import classes

// Rows per invocation for the loss (K, from common/stream.wgsl: gradient vec4s per invocation).
override KR: u32 = 4u;
override CLASSES: u32 = 1u;
override WANT_LOSS: bool = false;

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

// The log-probabilities x and the gradient in their dtypes (common/tensor.wgsl), read and
// written in f32.
#tensor x 1 read scalar
#tensor grad 4 read_write
@group(0) @binding(2) var<storage, read> y: array<i32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
// The gradient's vec4 v (counted from the start of the problem).
#ifdef VEC4
fn store_grad(v: u32, g: vec4<f32>) {
    grad_set4(v - params.bind_base / 4u, g);
}
#else
fn store_grad(v: u32, g: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (4u * v + i < params.total) {
            grad_set(4u * v + i - params.bind_base, g[i]);
        }
    }
}
#endif
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> scratch: Scratch;

var<workgroup> sh_scale: f32;

// The gradient of vec4 v: -scale w_y at each element that is its row's target.
fn grad_vec4(v: u32, scale: f32) -> vec4<f32> {
    let e = vec4<u32>(4u * v) + vec4<u32>(0u, 1u, 2u, 3u);
    let r = e / CLASSES;
    let c = e - r * CLASSES;
    var g = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (e[i] < params.total) {
            let t = y[r[i]];
            if (i32(c[i]) == t && t != params.ignore_index) {
                g[i] = -scale * class_weight(c[i]);
            }
        }
    }
    return g;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    let first_row = params.row_base + wg * WG * KR;
    let first_vec = wg * WG * K;
    if (first_row >= params.loss_rows && first_vec >= params.vecs) {
        return;
    }
    // Loss: one logit per row.
    var part = vec2<f32>(0.0);
    if (WANT_LOSS || params.scale_mode == SCALE_OWN) {
        for (var k = 0u; k < KR; k++) {
            let n = first_row + k * WG + inv.lid;
            if (n < params.loss_rows) {
                let t = y[n];
                var l = 0.0;
                var wt = 0.0;
                if (t != params.ignore_index) {
                    if (t < 0 || t >= i32(CLASSES)) {
                        report_invalid(n);
                        l = bitcast<f32>(0x7fc00000u);
                        wt = l;
                    } else {
                        wt = class_weight(u32(t));
                        l = -wt * x_get(n * CLASSES + u32(t) - params.bind_base);
                    }
                }
                if (want_row_loss()) {
                    loss[n] = l;
                }
                if (want_partial()) {
                    store_partial(params.partial_base, n, vec2<f32>(l, wt));
                }
                part += vec2<f32>(l, wt);
            }
        }
    }
    var scale = grad_scale();
    if (single()) {
        let total = seg_sum(vec4<f32>(part, 0.0, 0.0), inv.lid, sg_size_of(inv)).xy;
        if (inv.lid == 0u) {
            if (params.final_mode != FINAL_NONE) {
                loss[0] = final_value(total);
            }
            sh_scale = 1.0 / total.y;
        }
    }
    if (!WANT_GRAD) {
        return;
    }
    if (single() && params.scale_mode == SCALE_OWN) {
        workgroupBarrier();
        scale = sh_scale;
    }
    // Gradient: lane groups stream runs of LANES * K vec4s.
    let at = first_vec + lane_first(inv.lid);
    for (var k = 0u; k < K; k++) {
        let local = at + k * LANES;
        if (local < params.vecs) {
            let v = params.vec_base + local;
            store_grad(v, grad_vec4(v, scale));
        }
    }
}
