// The streaming losses: the loss of element i depends on x_i, y_i (and a broadcast weight) alone.
// Per-element loss, loss partials (or per-row sums: ROWS) and the gradient with respect to x, in
// one pass that keeps nothing in registers.
//
// CPU twin: src/cpu/pointwise.rs. Host side: src/families/pointwise.rs.
//
// LOSS (override; the codes are the host's `LossCode`, src/families/pointwise.rs, spliced in as
// the constants LOSS_MSE ... LOSS_CUSTOM), with d = x - y:
//   0 mse           d^2                                         grad 2 d
//   1 l1            |d|                                         grad sign(d) (0 at 0)
//   2 huber         |d| < p0 ? d^2 / 2 : p0 (|d| - p0 / 2)       grad clamp(d, -p0, p0)
//   3 smooth_l1     |d| < p0 ? d^2 / (2 p0) : |d| - p0 / 2       grad clamp(d / p0, -1, 1); p0 = 0 is l1
//   4 bce           -(y max(log x, -100) + (1 - y) max(log(1 - x), -100))
//                   grad (x - y) / max(x (1 - x), 1e-12)
//   5 bce_logits    (1 - y) x + (1 + (pw - 1) y) softplus(-x)    grad (1 + (pw - 1) y) sigmoid(x) - pw y
//   6 kl_div        x log-probabilities; y (LOG_TARGET: log y): y (log y - x), 0 where y = 0
//                   grad -y (LOG_TARGET: -exp(y))
//   7 classic cross-entropy on probabilities x, targets y, p0 = eps:
//                   -y log(x + p0)                              grad -y / (x + p0)
//   8 custom (CUSTOM): the caller's WGSL expressions in x and y, CUSTOM_LOSS and CUSTOM_GRAD
//                   (checked on the host: only x, y, numbers, operators and WGSL's built-in
//                   functions), spliced into custom_loss and custom_grad below
// times the weight w[i % weight_len] (bce, bce_logits), pw = pos_weight[i % pos_weight_len].
// Losses on probabilities (bce, classic) report x outside [0, 1] (or NaN).
//
// Layout (main): workgroup w takes vec4s [w * WG * K, (w + 1) * WG * K) of this dispatch. Its
// invocations form lane groups of LANES; each group streams a contiguous run of LANES * K vec4s,
// LANES consecutive ones at a time (one per invocation). The workgroup writes the partial
// (sum of losses, 0): one per group of PG invocations (see group_sum).
// VEC4 binds x, y, grad and loss as array<vec4<f32>> (the first floor(M / 4) * 4 elements);
// without it they are array<f32> with bounds checks (the last M % 4 elements, or whole problems
// that fit one workgroup, which then also write the reduced value: SINGLE).
// ROWS replaces `main` with `rows` (see there), whose loss binding holds one f32 a row.
// Bindings: 0 params, 1 x, 2 y, 3 weight, 4 pos_weight, 5 grad, 6 loss, 7 scratch.
// Dispatch folded: workgroup w = wid.x + wid.y * params.wg_x.

#import scratch
#import segment
#import math
#import outputs
#import stream

override LOSS: u32 = 0u;
override HAS_WEIGHT: bool = false;
override HAS_POS_WEIGHT: bool = false;
override LOG_TARGET: bool = false;

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

// The prediction x, target y and gradient in their dtypes (common/tensor.wgsl), read and
// written in f32.
#tensor x 1 read
#tensor y 2 read
#tensor grad 5 read_write
// Per-element losses match x's view; per-row losses (ROWS) are scalars.
#ifdef ROWS
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;
#else
#ifdef VEC4
@group(0) @binding(6) var<storage, read_write> loss: array<vec4<f32>>;
#else
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;
#endif
#endif

// The four elements e, e + 1, e + 2, e + 3 of x, y, grad and the element losses. With VEC4, e is
// a multiple of 4 and all four lie below `lim`; without it, those at `lim` or past it read as 0
// and are not written. e counts from the start of the problem; the bindings of x, y, grad and
// the element losses hold a window of it from element params.bind_base on (inputs larger than
// one binding: the host binds a window of whole workgroups' elements a dispatch).
#ifdef VEC4
fn load(of_y: bool, e: u32, lim: u32) -> vec4<f32> {
    let v = (e - params.bind_base) / 4u;
    if (of_y) {
        return y_get4(v);
    }
    return x_get4(v);
}

fn store_grad(e: u32, lim: u32, g: vec4<f32>) {
    grad_set4((e - params.bind_base) / 4u, g);
}
#else
fn load(of_y: bool, e: u32, lim: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (e + i < lim) {
            if (of_y) {
                r[i] = y_get(e + i - params.bind_base);
            } else {
                r[i] = x_get(e + i - params.bind_base);
            }
        }
    }
    return r;
}

fn store_grad(e: u32, lim: u32, g: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (e + i < lim) {
            grad_set(e + i - params.bind_base, g[i]);
        }
    }
}
#endif

fn load_x(e: u32, lim: u32) -> vec4<f32> {
    return load(false, e, lim);
}

fn load_y(e: u32, lim: u32) -> vec4<f32> {
    return load(true, e, lim);
}

#ifndef ROWS
#ifdef VEC4
fn store_loss(e: u32, lim: u32, l: vec4<f32>) {
    loss[(e - params.bind_base) / 4u] = l;
}
#else
fn store_loss(e: u32, lim: u32, l: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (e + i < lim) {
            loss[e + i - params.bind_base] = l[i];
        }
    }
}
#endif
#endif

@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(7) var<storage, read_write> scratch: Scratch;

// Broadcast weights of the elements e, ..., e + 3: element i takes w[i % len].
fn broadcast(e: u32, len: u32, is_pos: bool) -> vec4<f32> {
    var r = vec4<f32>(1.0);
    for (var i = 0u; i < 4u; i++) {
        let j = (e + i) % len;
        if (is_pos) {
            r[i] = pos_weight[j];
        } else {
            r[i] = weight[j];
        }
    }
    return r;
}

// log(1 + u) for u >= 0, accurate for small u (WGSL has no log1p).
fn log1p(u: vec4<f32>) -> vec4<f32> {
    let v = 1.0 + u;
    let d = v - 1.0;
    return select(log(v) * (u / d), u, d == vec4<f32>(0.0));
}

fn sigmoid(v: vec4<f32>) -> vec4<f32> {
    let e = exp(-abs(v));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= vec4<f32>(0.0));
}

struct Elem {
    loss: vec4<f32>,
    grad: vec4<f32>,
}

#ifdef CUSTOM
fn custom_loss(x: f32, y: f32) -> f32 {
    return (
#expr CUSTOM_LOSS
    );
}

fn custom_grad(x: f32, y: f32) -> f32 {
    return (
#expr CUSTOM_GRAD
    );
}
#else
fn custom_loss(x: f32, y: f32) -> f32 {
    return 0.0;
}

fn custom_grad(x: f32, y: f32) -> f32 {
    return 0.0;
}
#endif

fn elem(e: u32, xv: vec4<f32>, yv: vec4<f32>) -> Elem {
    var o: Elem;
    let d = xv - yv;
    let p0 = params.p0;
    switch LOSS {
        case LOSS_MSE: {
            o.loss = d * d;
            o.grad = 2.0 * d;
        }
        case LOSS_L1: {
            o.loss = abs(d);
            o.grad = sign(d);
        }
        case LOSS_HUBER: {
            let a = abs(d);
            o.loss = select(p0 * (a - 0.5 * p0), 0.5 * d * d, a < vec4<f32>(p0));
            o.grad = clamp(d, vec4<f32>(-p0), vec4<f32>(p0));
        }
        case LOSS_SMOOTH_L1: {
            let a = abs(d);
            if (p0 == 0.0) {
                o.loss = a;
                o.grad = sign(d);
            } else {
                o.loss = select(a - 0.5 * p0, 0.5 * d * d / p0, a < vec4<f32>(p0));
                o.grad = clamp(d / p0, vec4<f32>(-1.0), vec4<f32>(1.0));
            }
        }
        case LOSS_BCE: {
            let lx = max(log_exact4(xv), vec4<f32>(-100.0));
            let l1x = max(log(1.0 - xv), vec4<f32>(-100.0));
            o.loss = -(yv * lx + (1.0 - yv) * l1x);
            o.grad = d / max(xv * (1.0 - xv), vec4<f32>(1e-12));
        }
        case LOSS_BCE_LOGITS: {
            var lw = vec4<f32>(1.0);
            var pw = vec4<f32>(1.0);
            if (HAS_POS_WEIGHT) {
                pw = broadcast(e, params.pos_weight_len, true);
                lw = 1.0 + (pw - 1.0) * yv;
            }
            // softplus(-x) = max(-x, 0) + log1p(exp(-|x|)): finite for any finite x.
            let sp = max(-xv, vec4<f32>(0.0)) + log1p(exp(-abs(xv)));
            o.loss = (1.0 - yv) * xv + lw * sp;
            o.grad = lw * sigmoid(xv) - pw * yv;
        }
        case LOSS_CLASSIC: {
            // The classic cross-entropy's term; log(x + eps) exact for subnormal sums.
            o.loss = -yv * log_sum_exact4(xv, p0);
            o.grad = -yv / (xv + p0);
        }
        case LOSS_CUSTOM: {
            for (var i = 0u; i < 4u; i++) {
                o.loss[i] = custom_loss(xv[i], yv[i]);
                o.grad[i] = custom_grad(xv[i], yv[i]);
            }
        }
        case LOSS_KL_DIV, default: {
            if (LOG_TARGET) {
                let ey = exp(yv);
                o.loss = ey * (yv - xv);
                o.grad = -ey;
            } else {
                // xlogy(y, y) - y x, with xlogy(0, .) = 0 as in PyTorch.
                let ylogy = select(yv * log_exact4(yv), vec4<f32>(0.0), yv == vec4<f32>(0.0));
                o.loss = ylogy - yv * xv;
                o.grad = -yv;
            }
        }
    }
    if (HAS_WEIGHT) {
        let wv = broadcast(e, params.weight_len, false);
        o.loss = o.loss * wv;
        o.grad = o.grad * wv;
    }
    return o;
}

// Losses on probabilities (bce, the classic cross-entropy) count inputs outside [0, 1], NaN
// included, from e on (those below lim).
fn check_probabilities(e: u32, lim: u32, xv: vec4<f32>) {
    if (LOSS == LOSS_BCE || LOSS == LOSS_CLASSIC) {
        for (var i = 0u; i < 4u; i++) {
            if (e + i < lim && !(xv[i] >= 0.0 && xv[i] <= 1.0)) {
                report_invalid(e + i);
            }
        }
    }
}

// The losses of the elements below lim from e on (those past it add nothing).
fn live(e: u32, lim: u32, l: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), l, vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(lim));
}

#ifndef ROWS
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    if (wg * WG * K >= params.vecs) {
        return;
    }
    var acc = vec4<f32>(0.0);
    let first = wg * WG * K + lane_first(inv.lid);
    for (var k = 0u; k < K; k++) {
        let local = first + k * LANES;
        if (local >= params.vecs) {
            continue;
        }
        let e = 4u * (params.vec_base + local);
        let xv = load_x(e, params.len);
        let yv = load_y(e, params.len);
        check_probabilities(e, params.len, xv);
        let o = elem(e, xv, yv);
        acc += live(e, params.len, o.loss);
        if (want_row_loss()) {
            store_loss(e, params.len, o.loss);
        }
        if (WANT_GRAD) {
            store_grad(e, params.len, o.grad * params.grad_scale);
        }
    }
    let total = emit_partial(vec2<f32>(dot(acc, vec4<f32>(1.0)), 0.0), wg, inv, PG);
    if (single() && inv.lid == 0u) {
#ifndef VEC4
        loss[0] = final_value(total);
#endif
    }
}
#else
// ROWS: the loss of each row of params.row_len elements, the sum of its elements' losses (the
// classic cross-entropy with reduction none). The problem is cut into row chunks of up to
// SEG * K * 4 elements, params.chunks a row, taken in (row, chunk) order by segments of SEG
// invocations; invocation l of a segment takes the elements 4 (l + k SEG) ... of its chunk. A
// row in one chunk gets its loss from its segment; a longer row leaves one partial a chunk
// for the host's per-row reduction. With VEC4, row_len is a multiple of 4. A dispatch takes the
// chunks [params.chunk_base, params.row_chunks) (whole rows: a window of them, see load_x).
@compute @workgroup_size(WG)
fn rows(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    let per_wg = WG / SEG;
    if (params.chunk_base + wg * per_wg >= params.row_chunks) {
        return;
    }
    let chunk = params.chunk_base + wg * per_wg + inv.lid / SEG;
    let live_chunk = chunk < params.row_chunks;
    let row = chunk / params.chunks;
    let start = row * params.row_len + (chunk % params.chunks) * SEG * K * 4u;
    let end = min(start + SEG * K * 4u, (row + 1u) * params.row_len);
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < K; k++) {
        let e = start + 4u * (inv.lid % SEG + k * SEG);
        if (!live_chunk || e >= end) {
            continue;
        }
        let xv = load_x(e, end);
        let yv = load_y(e, end);
        check_probabilities(e, end, xv);
        let o = elem(e, xv, yv);
        acc += live(e, end, o.loss);
        if (WANT_GRAD) {
            store_grad(e, end, o.grad * params.grad_scale);
        }
    }
    let total = seg_sum(vec4<f32>(dot(acc, vec4<f32>(1.0)), 0.0, 0.0, 0.0), inv.lid, sg_size_of(inv)).x;
    if (live_chunk && inv.lid % SEG == 0u) {
        if (params.chunks == 1u) {
            loss[row] = total;
        } else {
            store_partial(params.partial_base, chunk, vec2<f32>(total, 0.0));
        }
    }
}
#endif
