// Cross-entropy over rows of C classes: per-row loss, loss partials and the gradient, fused.
//
// CPU twin: src/cpu/cross_entropy.rs. Host side (plans, dispatches): src/cross_entropy.rs.
//
// TARGETS (override) selects the formula:
//   0  logits x [N, C], class indices y [N] (i32), optional class weight w [C], ignore_index,
//      label smoothing ls, z-loss z, softcap. With x' = cap * tanh(x / cap) (or x), lse = logsumexp(x'):
//        loss_n = (1 - ls) w_y (lse - x'_y) + ls / C * sum_c w_c (lse - x'_c) + z w_y lse^2
//        grad   = (1 - ls) w_y (p - onehot_y) + ls / C * (W p - w) + 2 z w_y lse p, p = softmax(x'),
//                 W = sum_c w_c, times dx'/dx = 1 - (x' / cap)^2 under softcap.
//      A row whose target equals ignore_index weighs 0: zero loss, zero gradient.
//   1  logits x [N, C], probability targets t [N, C]; q = (1 - ls) t + ls / C:
//        loss_n = sum_c w_c q_c (lse - x'_c) + z lse^2,  grad = (sum_c w_c q_c + 2 z lse) p - w q
//   2  probabilities x [N, C], soft targets t [N, C] (the classic formula, no softmax):
//        loss_n = -sum_c t_c log(x_c + eps),  grad = -t / (x + eps)
// Each row also yields its weight for the mean's denominator (w_y, 0 when ignored; 1 for 1 and 2).
// Everything is computed relative to the row max m, with lse - x = (m - x) + log(s), never as a
// difference of two large numbers: logits of +-1e4 keep full relative precision.
//
// Layout: a block is ROWS consecutive rows with ROWS * C a multiple of 4, so every block starts on
// a vec4 boundary, is owned by one workgroup, and vec4 stores never race. BV = ROWS * C / 4 vec4s.
//   fused:  SEG invocations per block, K vec4 each (BV <= SEG * K), WG / SEG blocks a workgroup.
//           Reads the inputs once and writes the gradient once.
//   stats:  rows too long for one workgroup: one workgroup per (block, chunk of WG * K vec4s)
//           writes the chunk's per-row statistics (max, sum of exp, a, b, W) to scratch.
//   finish: one workgroup per (block, chunk): merges the block's chunk statistics in chunk order,
//           writes row losses and its partial, and the gradient of its chunk (a second read).
// Dispatches are folded into two dimensions: workgroup w = wid.x + wid.y * params.wg_x.
//
// Preprocessor variants: VEC4 binds x, t and grad as array<vec4<f32>> (full blocks); without it
// they are array<f32> with bounds checks (the last, partial block, and problems that fit one
// workgroup). INPLACE writes the gradient over x. SUBGROUPS selects the segment reductions.
//
// Bindings: 0 params, 1 x, 2 t, 3 y, 4 w, 5 grad, 6 loss (per row; or the reduced value when
// SINGLE), 7 scratch. Every binding is bound (dummies stand in for unused ones).

#import scratch
#import segment

override WG: u32 = 256u;
override SEG: u32 = 256u;
override SG_MIN: u32 = 1u;
// vec4s per invocation; <= KMAX.
override K: u32 = 16u;
override ROWS: u32 = 1u;
override TARGETS: u32 = 0u;
override HAS_WEIGHT: bool = false;
override SMOOTH: bool = false;
override ZLOSS: bool = false;
override SOFTCAP: bool = false;
override WANT_GRAD: bool = false;
override WANT_ROW_LOSS: bool = false;
override WANT_PARTIAL: bool = false;
// One workgroup holds the whole problem: it also reduces and writes the final value to loss[0].
override SINGLE: bool = false;
// Gradient scale: 0 params.grad_scale; 1 1 / scratch.data[0] (a weighted mean's denominator
// reduced by an earlier pass); 2 (SINGLE) 1 / the weight sum this workgroup reduces.
override SCALE_MODE: u32 = 0u;
// SINGLE: 0 loss[0] = sum; 1 sum / params.mean_den; 2 sum / weight sum; 3 no reduced value.
override FINAL_MODE: u32 = 0u;

const KMAX: u32 = 16u;
// Identity of max. Finite, so that rows or chunks whose entries are all -inf give a zero sum of
// exponentials instead of exp(-inf - -inf) = NaN; the row's loss still comes out as PyTorch's.
const LOWEST: f32 = -3.40282347e38;

// Keep in sync with `CeParams` in src/cross_entropy.rs.
struct Params {
    rows: u32,
    classes: u32,
    blocks: u32,
    block_base: u32,
    chunks: u32,
    wg_chunks: u32,
    wg_x: u32,
    partial_base: u32,
    stats_base: u32,
    total: u32,
    ignore_index: i32,
    _pad0: u32,
    label_smoothing: f32,
    z_loss: f32,
    softcap: f32,
    eps: f32,
    grad_scale: f32,
    mean_den: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;

#ifdef VEC4
#ifdef INPLACE
@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> grad: array<vec4<f32>>;
#endif
@group(0) @binding(2) var<storage, read> t: array<vec4<f32>>;

fn load_x(v: u32) -> vec4<f32> {
    return x[v];
}

fn load_t(v: u32) -> vec4<f32> {
    return t[v];
}

fn store_grad(v: u32, g: vec4<f32>) {
#ifdef INPLACE
    x[v] = g;
#else
    grad[v] = g;
#endif
}
#else
#ifdef INPLACE
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
#endif
@group(0) @binding(2) var<storage, read> t: array<f32>;

fn load_x(v: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * v + i < params.total) {
            r[i] = x[4u * v + i];
        }
    }
    return r;
}

fn load_t(v: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * v + i < params.total) {
            r[i] = t[4u * v + i];
        }
    }
    return r;
}

fn store_grad(v: u32, g: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (4u * v + i < params.total) {
#ifdef INPLACE
            x[4u * v + i] = g[i];
#else
            grad[4u * v + i] = g[i];
#endif
        }
    }
}
#endif

@group(0) @binding(3) var<storage, read> y: array<i32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;
@group(0) @binding(7) var<storage, read_write> scratch: Scratch;

var<private> xs: array<vec4<f32>, KMAX>;
var<private> ts: array<vec4<f32>, KMAX>;
var<workgroup> sh_scale: f32;

// The rows of one block; component r of each vector belongs to row r of the block.
struct Block {
    row0: u32,
    // Rows of this block that exist (0 for the padding segments of the last workgroup).
    nrows: u32,
    // Class targets (TARGETS 0).
    y: vec4<i32>,
    // Max of x' (max of the chunk in the stats pass).
    m: vec4<f32>,
    // Sum of exp(x' - m).
    s: vec4<f32>,
    // TARGETS 0: x'_y; 1: sum w q; 2: sum -t log(x + eps).
    a: vec4<f32>,
    // TARGETS 0: sum w (x' - m) (SMOOTH); 1: sum w q (x' - m).
    b: vec4<f32>,
    // TARGETS 0: sum w (SMOOTH; the element count without weights).
    ws: vec4<f32>,
}

fn block_of(index: u32) -> Block {
    var blk: Block;
    blk.row0 = (params.block_base + index) * ROWS;
    blk.nrows = 0u;
    if (index < params.blocks && blk.row0 < params.rows) {
        blk.nrows = min(ROWS, params.rows - blk.row0);
    }
    blk.y = vec4<i32>(0);
    if (TARGETS == 0u) {
        for (var r = 0u; r < ROWS; r++) {
            if (r < blk.nrows) {
                blk.y[r] = y[blk.row0 + r];
            }
        }
    }
    blk.m = vec4<f32>(LOWEST);
    blk.s = vec4<f32>(0.0);
    blk.a = vec4<f32>(0.0);
    blk.b = vec4<f32>(0.0);
    blk.ws = vec4<f32>(0.0);
    return blk;
}

// Row (within the block) of element e of the block.
fn row_of(e: u32) -> u32 {
    if (ROWS == 1u) {
        return 0u;
    }
    let c = params.classes;
    return select(0u, 1u, e >= c) + select(0u, 1u, e >= 2u * c) + select(0u, 1u, e >= 3u * c);
}

fn cap(v: vec4<f32>) -> vec4<f32> {
    // tanh saturates in f32 long before 20; the clamp keeps drivers that build tanh from exp
    // away from inf / inf.
    let c = params.softcap;
    return c * tanh(clamp(v / c, vec4<f32>(-20.0), vec4<f32>(20.0)));
}

fn class_weight(c: u32) -> f32 {
    if (HAS_WEIGHT) {
        return w[c];
    }
    return 1.0;
}

// The smoothed target probability of TARGETS 1.
fn smoothed(tv: f32) -> f32 {
    let ls = params.label_smoothing;
    return (1.0 - ls) * tv + ls / f32(params.classes);
}

// Loads this invocation's vec4s (v0 + k * stride, k < K, below vlim) of the block starting at
// vec4 gv0, and accumulates everything that does not need the row max: m, a, ws.
fn load_and_scan(blk: ptr<function, Block>, gv0: u32, v0: u32, stride: u32, vlim: u32) {
    for (var k = 0u; k < K; k++) {
        let v = v0 + k * stride;
        if ((*blk).nrows == 0u || v >= vlim) {
            continue;
        }
        var xv = load_x(gv0 + v);
        if (SOFTCAP) {
            xv = cap(xv);
        }
        xs[k] = xv;
        var tv = vec4<f32>(0.0);
        if (TARGETS != 0u) {
            tv = load_t(gv0 + v);
            ts[k] = tv;
        }
        for (var i = 0u; i < 4u; i++) {
            let e = 4u * v + i;
            let r = row_of(e);
            if (r >= (*blk).nrows) {
                continue;
            }
            let xe = xv[i];
            let c = e - r * params.classes;
            if (TARGETS == 0u) {
                (*blk).m[r] = max((*blk).m[r], xe);
                if (i32(c) == (*blk).y[r]) {
                    (*blk).a[r] = xe;
                }
                if (SMOOTH) {
                    (*blk).ws[r] += class_weight(c);
                }
            } else if (TARGETS == 1u) {
                (*blk).m[r] = max((*blk).m[r], xe);
                (*blk).a[r] += class_weight(c) * smoothed(tv[i]);
            } else {
                (*blk).a[r] -= tv[i] * log(xe + params.eps);
            }
        }
    }
}

// Sum of exp(x' - m) over this invocation's elements, m the (segment-wide) row max, and the
// sums relative to m: b.
fn sum_exp(blk: ptr<function, Block>, v0: u32, stride: u32, vlim: u32) {
    for (var k = 0u; k < K; k++) {
        let v = v0 + k * stride;
        if ((*blk).nrows == 0u || v >= vlim) {
            continue;
        }
        let xv = xs[k];
        if (ROWS == 1u && TARGETS == 0u && !SMOOTH) {
            // One row per block: every element below vlim is in it.
            (*blk).s.x += dot(exp(xv - (*blk).m.x), vec4<f32>(1.0));
        } else {
            let tv = ts[k];
            for (var i = 0u; i < 4u; i++) {
                let e = 4u * v + i;
                let r = row_of(e);
                if (r < (*blk).nrows) {
                    let d = xv[i] - (*blk).m[r];
                    (*blk).s[r] += exp(d);
                    let c = e - r * params.classes;
                    if (TARGETS == 1u) {
                        (*blk).b[r] += class_weight(c) * smoothed(tv[i]) * d;
                    } else if (SMOOTH) {
                        (*blk).b[r] += class_weight(c) * d;
                    }
                }
            }
        }
    }
}

// Everything a row needs after its statistics are complete.
struct RowOut {
    // Per-row loss and mean weight.
    loss: vec4<f32>,
    weight: vec4<f32>,
    // The row max and log of the sum of exponentials: lse = m + logs, p = exp((x' - m) - logs).
    m: vec4<f32>,
    logs: vec4<f32>,
    // Gradient coefficients before the scale: grad = cp * p - ct * onehot_y - cs * w_c (TARGETS 0),
    // grad = cp * p - w q (TARGETS 1).
    cp: vec4<f32>,
    ct: vec4<f32>,
    cs: vec4<f32>,
    // 1 for rows that take part, 0 for ignored rows.
    keep: vec4<f32>,
}

fn finish_rows(blk: Block) -> RowOut {
    var o: RowOut;
    let nan = bitcast<f32>(0x7fc00000u);
    let ls = params.label_smoothing;
    let cf = f32(params.classes);
    for (var r = 0u; r < ROWS; r++) {
        o.keep[r] = 1.0;
        if (TARGETS == 2u) {
            o.loss[r] = blk.a[r];
            o.weight[r] = 1.0;
            continue;
        }
        let logs = log(blk.s[r]);
        let lse = blk.m[r] + logs;
        o.m[r] = blk.m[r];
        o.logs[r] = logs;
        if (TARGETS == 1u) {
            // sum w q (lse - x') = sum w q (m - x') + logs sum w q
            o.loss[r] = logs * blk.a[r] - blk.b[r];
            o.cp[r] = blk.a[r];
            if (ZLOSS) {
                o.loss[r] += params.z_loss * lse * lse;
                o.cp[r] += 2.0 * params.z_loss * lse;
            }
            o.weight[r] = 1.0;
            continue;
        }
        let yr = blk.y[r];
        if (yr == params.ignore_index) {
            o.keep[r] = 0.0;
            continue;
        }
        if (yr < 0 || yr >= i32(params.classes)) {
            o.loss[r] = nan;
            o.weight[r] = nan;
            o.cp[r] = nan;
            continue;
        }
        let wy = class_weight(u32(yr));
        o.weight[r] = wy;
        o.loss[r] = (1.0 - ls) * wy * ((blk.m[r] - blk.a[r]) + logs);
        o.cp[r] = (1.0 - ls) * wy;
        o.ct[r] = (1.0 - ls) * wy;
        if (SMOOTH) {
            let wsum = blk.ws[r];
            o.loss[r] += ls / cf * (wsum * logs - blk.b[r]);
            o.cp[r] += ls / cf * wsum;
            o.cs[r] = ls / cf;
        }
        if (ZLOSS) {
            o.loss[r] += params.z_loss * wy * lse * lse;
            o.cp[r] += 2.0 * params.z_loss * wy * lse;
        }
    }
    return o;
}

// Writes this invocation's gradient vec4s from xs / ts.
fn write_grad(blk: Block, o: RowOut, scale: f32, gv0: u32, v0: u32, stride: u32, vlim: u32) {
    for (var k = 0u; k < K; k++) {
        let v = v0 + k * stride;
        if (blk.nrows == 0u || v >= vlim) {
            continue;
        }
        let xv = xs[k];
        let tv = ts[k];
        var g = vec4<f32>(0.0);
        if (TARGETS == 2u) {
            g = -tv / (xv + params.eps);
        } else if (ROWS == 1u && TARGETS == 0u && !SMOOTH) {
            let p = exp((xv - o.m.x) - o.logs.x);
            let cols = vec4<i32>(vec4<u32>(4u * v) + vec4<u32>(0u, 1u, 2u, 3u));
            g = o.cp.x * p - select(vec4<f32>(0.0), vec4<f32>(o.ct.x), cols == vec4<i32>(blk.y.x));
        } else {
            for (var i = 0u; i < 4u; i++) {
                let e = 4u * v + i;
                let r = row_of(e);
                let c = e - r * params.classes;
                let p = exp((xv[i] - o.m[r]) - o.logs[r]);
                if (TARGETS == 0u) {
                    var gi = o.cp[r] * p;
                    if (i32(c) == blk.y[r]) {
                        gi -= o.ct[r];
                    }
                    if (SMOOTH) {
                        gi -= o.cs[r] * class_weight(c);
                    }
                    g[i] = gi;
                } else {
                    g[i] = o.cp[r] * p - class_weight(c) * smoothed(tv[i]);
                }
            }
        }
        if (SOFTCAP) {
            let u = xv / params.softcap;
            g = g * (1.0 - u * u);
        }
        g = g * scale;
        if (TARGETS == 0u) {
            // Ignored rows get exactly zero, whatever their logits hold.
            for (var i = 0u; i < 4u; i++) {
                if (o.keep[row_of(4u * v + i)] == 0.0) {
                    g[i] = 0.0;
                }
            }
        }
        store_grad(gv0 + v, g);
    }
}

fn grad_scale() -> f32 {
    if (SCALE_MODE == 1u) {
        return 1.0 / scratch.data[0];
    }
    return params.grad_scale;
}

// Per-row outputs of a finished block: row losses, invalid targets, and the block's partial.
fn emit_rows(blk: Block, o: RowOut) -> vec2<f32> {
    var part = vec2<f32>(0.0);
    for (var r = 0u; r < ROWS; r++) {
        if (r >= blk.nrows) {
            continue;
        }
        if (WANT_ROW_LOSS) {
            loss[blk.row0 + r] = o.loss[r];
        }
        if (TARGETS == 0u && o.keep[r] != 0.0 && (blk.y[r] < 0 || blk.y[r] >= i32(params.classes))) {
            report_invalid(blk.row0 + r);
        }
        part += vec2<f32>(o.loss[r], o.weight[r]) * o.keep[r];
    }
    return part;
}

fn final_value(total: vec2<f32>) -> f32 {
    if (FINAL_MODE == 1u) {
        return total.x / params.mean_den;
    }
    if (FINAL_MODE == 2u) {
        return total.x / total.y;
    }
    return total.x;
}

@compute @workgroup_size(WG)
fn fused(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_size) sg_size: u32,
#endif
) {
#ifndef SUBGROUPS
    let sg_size = 1u;
#endif
    let wg = wid.x + wid.y * params.wg_x;
    if (wg * (WG / SEG) >= params.blocks) {
        return;
    }
    let j = lid % SEG;
    var blk = block_of(wg * (WG / SEG) + lid / SEG);
    let bv = ROWS * params.classes / 4u;
    let gv0 = (blk.row0 * params.classes) / 4u;

    load_and_scan(&blk, gv0, j, SEG, bv);
    if (TARGETS != 2u) {
        blk.m = seg_max(blk.m, lid, sg_size);
        sum_exp(&blk, j, SEG, bv);
    }
    if (ROWS == 1u) {
        let packed = seg_sum(vec4<f32>(blk.s.x, blk.a.x, blk.b.x, blk.ws.x), lid, sg_size);
        blk.s.x = packed.x;
        blk.a.x = packed.y;
        blk.b.x = packed.z;
        blk.ws.x = packed.w;
    } else {
        if (TARGETS != 2u) {
            blk.s = seg_sum(blk.s, lid, sg_size);
        }
        blk.a = seg_sum(blk.a, lid, sg_size);
        if (TARGETS == 1u || SMOOTH) {
            blk.b = seg_sum(blk.b, lid, sg_size);
        }
        if (TARGETS == 0u && SMOOTH) {
            blk.ws = seg_sum(blk.ws, lid, sg_size);
        }
    }
    let o = finish_rows(blk);

    var part = vec2<f32>(0.0);
    if (j == 0u) {
        part = emit_rows(blk, o);
    }
    var scale = grad_scale();
    if (WANT_PARTIAL || SINGLE) {
        let total = wg_sum_segments(part, lid);
        if (lid == 0u) {
            if (SINGLE) {
                if (FINAL_MODE != 3u) {
                    loss[0] = final_value(total);
                }
                sh_scale = select(params.grad_scale, 1.0 / total.y, SCALE_MODE == 2u);
            } else {
                store_partial(params.partial_base, wg, total);
            }
        }
        if (SINGLE && WANT_GRAD) {
            workgroupBarrier();
            scale = sh_scale;
        }
    }
    if (WANT_GRAD) {
        write_grad(blk, o, scale, gv0, j, SEG, bv);
    }
}

// Statistics of one chunk: index of its (row, chunk) record in scratch, 8 floats each.
// `index` is the block's index within this dispatch.
fn stats_index(index: u32, chunk: u32, r: u32) -> u32 {
    let block = params.block_base + index;
    return params.stats_base + ((block * params.chunks + chunk) * ROWS + r) * 8u;
}

@compute @workgroup_size(WG)
fn stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_size) sg_size: u32,
#endif
) {
#ifndef SUBGROUPS
    let sg_size = 1u;
#endif
    let wg = wid.x + wid.y * params.wg_x;
    let b_index = wg / params.chunks;
    let chunk = wg % params.chunks;
    if (b_index >= params.blocks) {
        return;
    }
    var blk = block_of(b_index);
    let bv = ROWS * params.classes / 4u;
    let gv0 = (blk.row0 * params.classes) / 4u;
    let v0 = chunk * WG * K + lid;

    load_and_scan(&blk, gv0, v0, WG, bv);
    if (TARGETS != 2u) {
        blk.m = seg_max(blk.m, lid, sg_size);
        sum_exp(&blk, v0, WG, bv);
        blk.s = seg_sum(blk.s, lid, sg_size);
    }
    blk.a = seg_sum(blk.a, lid, sg_size);
    if (TARGETS == 1u || SMOOTH) {
        blk.b = seg_sum(blk.b, lid, sg_size);
    }
    if (TARGETS == 0u && SMOOTH) {
        blk.ws = seg_sum(blk.ws, lid, sg_size);
    }
    if (TARGETS == 2u && WANT_GRAD) {
        // The classic form's gradient needs no row statistics: write it on this first read.
        write_grad(blk, RowOut(), grad_scale(), gv0, v0, WG, bv);
    }
    if (lid == 0u) {
        for (var r = 0u; r < ROWS; r++) {
            let i = stats_index(b_index, chunk, r);
            scratch.data[i] = blk.m[r];
            scratch.data[i + 1u] = blk.s[r];
            scratch.data[i + 2u] = blk.a[r];
            scratch.data[i + 3u] = blk.b[r];
            scratch.data[i + 4u] = blk.ws[r];
        }
    }
}

@compute @workgroup_size(WG)
fn finish(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SUBGROUPS
    @builtin(subgroup_size) sg_size: u32,
#endif
) {
#ifndef SUBGROUPS
    let sg_size = 1u;
#endif
    let wg = wid.x + wid.y * params.wg_x;
    let b_index = wg / params.wg_chunks;
    let chunk = wg % params.wg_chunks;
    if (b_index >= params.blocks) {
        return;
    }
    var blk = block_of(b_index);

    // Merge the chunk statistics: invocation lid takes chunks lid, lid + WG, ... in order,
    // then the workgroup combines the invocations in index order.
    var m = vec4<f32>(LOWEST);
    for (var c = lid; c < params.chunks; c += WG) {
        for (var r = 0u; r < ROWS; r++) {
            m[r] = max(m[r], scratch.data[stats_index(b_index, c, r)]);
        }
    }
    if (TARGETS != 2u) {
        blk.m = seg_max(m, lid, sg_size);
    }
    for (var c = lid; c < params.chunks; c += WG) {
        for (var r = 0u; r < ROWS; r++) {
            let i = stats_index(b_index, c, r);
            let a = scratch.data[i + 2u];
            let ws = scratch.data[i + 4u];
            if (TARGETS != 2u) {
                // Rebase the chunk's sums from its max to the row's.
                let shift = scratch.data[i] - blk.m[r];
                blk.s[r] += scratch.data[i + 1u] * exp(shift);
                let count = select(ws, a, TARGETS == 1u);
                if (count != 0.0) {
                    blk.b[r] += scratch.data[i + 3u] + shift * count;
                }
            }
            blk.a[r] += a;
            blk.ws[r] += ws;
        }
    }
    if (TARGETS != 2u) {
        blk.s = seg_sum(blk.s, lid, sg_size);
    }
    blk.a = seg_sum(blk.a, lid, sg_size);
    if (TARGETS == 1u || SMOOTH) {
        blk.b = seg_sum(blk.b, lid, sg_size);
    }
    if (TARGETS == 0u && SMOOTH) {
        blk.ws = seg_sum(blk.ws, lid, sg_size);
    }
    let o = finish_rows(blk);

    if (lid == 0u && WANT_PARTIAL) {
        var part = vec2<f32>(0.0);
        if (chunk == 0u) {
            part = emit_rows(blk, o);
        }
        store_partial(params.partial_base, wg, part);
    } else if (lid == 0u && chunk == 0u) {
        _ = emit_rows(blk, o);
    }
    if (WANT_GRAD && TARGETS != 2u) {
        let bv = ROWS * params.classes / 4u;
        let gv0 = (blk.row0 * params.classes) / 4u;
        let v0 = chunk * WG * K + lid;
        load_and_scan(&blk, gv0, v0, WG, bv);
        write_grad(blk, o, grad_scale(), gv0, v0, WG, bv);
    }
}
