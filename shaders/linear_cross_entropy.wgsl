// Fused linear + cross-entropy: the loss of logits z = softcap(h W^T + b) for hidden states
// h [N, D], a layer weight W [V, D] (PyTorch's nn.Linear layout) and bias b [V], with class
// targets y [N], and the gradients with respect to h, W and b, without the [N, V] logits: they
// exist only in tiles of TR rows x TV classes in workgroup memory and registers, recomputed by
// each pass that needs them (as Cut Cross-Entropy does).
//
// CPU twin: src/cpu/linear_cross_entropy.rs. Host side:
// src/families/linear_cross_entropy.rs.
//
// The passes, each a sequence of dispatches in a fixed order (no float atomics: the same bits
// on every run):
//   stats          workgroup = a tile of TR rows; a dispatch takes a chunk of class tiles
//                  [vocab_tile0, vocab_tile_end) and folds them, in class order, into each
//                  row's running statistics in scratch (6 a row at stats_base: the max m, the
//                  sum s of exp(z - m), sum w (m - z) and sum w over the classes seen (label
//                  smoothing), the target's z, and the argmax: the first class of the max, as an f32,
//                  exact below 2^24 classes). Chunks go in order, one dispatch each (per
//                  window of rows), so a row's statistics see the classes in order 0..V.
//   finish         one invocation a row: the loss, the log-sum-exp, the count of rows whose
//                  argmax is their target (status word 3, an integer atomic), and the
//                  coefficients of the logits' gradient (4 a row at coef_base: lse, A, B, E, scaled) so that
//                  dz_v = (A exp(z_v - lse) - B [v = y] - E w_v) times the softcap's slope.
//   grad_hidden    workgroup = a tile of rows; per class tile of the dispatch's chunk: the
//                  tile's dz into workgroup memory, then gh[rows] += dz W[tile], a tiled
//                  product like the logits' (the first chunk writes, later ones add, in class
//                  order).
//   grad_weight    workgroup = a tile of TV classes; per row tile of the dispatch's chunk of
//                  rows [row_tile0, row_tile_end): dz, then gw[classes] += dz^T h[rows] and the
//                  bias's gradient (scratch at gbias_base) += the column sums of dz.
// Every invocation's loops run about (tiles a dispatch) x (D + 128) times (the staging loops of
// the products; their inner loops are unrolled): the host sizes the chunks so that this stays
// below lavapipe's loop cap, whatever N and V.
//
// Layout of a tile: invocation i (of 256) computes rows 2 (i / 16) + {0, 1} and classes
// 4 (i % 16) + {0..3} of it, over D in steps of TK staged in workgroup memory: the tiled product
// of common/tile_matmul.wgsl, which the benchmark's matmul shares.
// h and gh are bound from element params.h_base on, W and gw from params.w_base on (windows of
// tensors larger than one binding). Rows past N and classes past V are computed as zeros and
// never written.
// The bias is read from scratch (params.bias_base: the host copies it there), and the bias's
// gradient written there (params.gbias_base, copied out after the pass): seven storage
// bindings, within WebGPU's default limit of eight a stage.
//   narrow         with a 16-bit gradient: a window of gh or gw summed in f32 (the plan's
//                  accumulator), rounded into the caller's buffer, after the window's last
//                  dispatch of grad_hidden or grad_weight (the host runs them a window at a time).
// Bindings: 0 params, 1 h, 2 W, 3 y, 4 class weight, 5 gh, 6 gw, 7 scratch.
// Dispatch folded: workgroup w = wid.x + wid.y * params.wg_x.

#import scratch
#import segment
#import classes
#import tile_matmul

const TR: u32 = 32u;
const TV: u32 = 64u;
#const TK
const LOWEST: f32 = -3.40282347e38;

override HAS_BIAS: bool = false;
override SOFTCAP: bool = false;
override SMOOTH: bool = false;
override WANT_LSE: bool = false;

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

// The hidden states (x) and the layer's weight (lw) in their dtype (common/tensor.wgsl: f32,
// f16 or bf16), read in f32; every product and sum in f32.
#tensor x 1 read scalar
#tensor lw 2 read scalar
@group(0) @binding(3) var<storage, read> y: array<i32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
// The gradients gh and gw (f32: the caller's, or with a 16-bit gradient the plan's accumulators;
// in the `narrow` pass gh is an accumulator and gw the caller's window in DTYPE_gw).
#tensor gh 5 read_write scalar
#tensor gw 6 read_write scalar
@group(0) @binding(7) var<storage, read_write> scratch: Scratch;

// The logits' h operand, k-major, rows in pairs: hs[k * TR / 2 + r / 2][r % 2]. (The other
// operand of every product, W or h, is staged in tile_b.)
var<workgroup> hs: array<vec2<f32>, 256>;
// A tile of logits or of their gradient, row-major, classes in fours: zt[r * TV / 4 + c / 4][c % 4].
var<workgroup> zt: array<vec4<f32>, 512>;

// Stages 64 x TK values of W (`of_w`) or h, [rows, D] matrices, from row row0 and column col0
// on (rows from `rows` on and columns from D on read as zeros), into tile_b. Its 64 are rows
// of the matrix and k its columns (`rows_n`: the logits' W, consecutive invocations along k,
// contiguous in memory), or the other way round (TK rows and 64 columns of D: consecutive
// invocations along a row).
fn stage_b(lid: u32, of_w: bool, rows_n: bool, row0: u32, rows: u32, col0: u32) {
    let d = params.dim;
    for (var i = lid; i < TK * 64u; i += 256u) {
        let p = tile_place(i, rows_n);
        let r = row0 + select(p.y, p.x, rows_n);
        let e = col0 + select(p.x, p.y, rows_n);
        var val = 0.0;
        if (r < rows && e < d) {
            if (of_w) {
                val = lw_get(r * d + e - params.w_base);
            } else {
                val = x_get(r * d + e - params.h_base);
            }
        }
        tile_b_set(p, val);
    }
}

// The logits of the tile at rows r0.., classes v0..: this invocation's 2 x 4 of them (see the
// layout above), with the bias added and softcapped.
fn logits_tile(lid: u32, r0: u32, v0: u32) -> array<vec4<f32>, 2> {
    let d = params.dim;
    let ty = lid / 16u;
    let tx = lid % 16u;
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < d; k0 += TK) {
        // TR * TK values of h and TV * TK of W, consecutive invocations along k (contiguous
        // in memory); zeros past the edges.
        for (var i = lid; i < TR * TK; i += 256u) {
            let r = r0 + i / TK;
            let k = k0 + i % TK;
            var val = 0.0;
            if (r < params.rows && k < d) {
                val = x_get(r * d + k - params.h_base);
            }
            hs[(i % TK) * (TR / 2u) + i / TK / 2u][(i / TK) % 2u] = val;
        }
        stage_b(lid, true, true, v0, params.vocab, k0);
        workgroupBarrier();
#unroll kk TK
        tile_step2(&acc, hs[kk * (TR / 2u) + ty], kk, tx);
#endunroll
        workgroupBarrier();
    }
    if (HAS_BIAS) {
        var b = vec4<f32>(0.0);
        for (var i = 0u; i < 4u; i++) {
            let v = v0 + 4u * tx + i;
            if (v < params.vocab) {
                b[i] = scratch.data[params.bias_base + v];
            }
        }
        acc[0] += b;
        acc[1] += b;
    }
    if (SOFTCAP) {
        acc[0] = params.softcap * tanh(acc[0] / params.softcap);
        acc[1] = params.softcap * tanh(acc[1] / params.softcap);
    }
    return array<vec4<f32>, 2>(acc[0], acc[1]);
}

// Writes this invocation's 2 x 4 values of a tile to zt.
fn store_tile(lid: u32, z: array<vec4<f32>, 2>) {
    let ty = lid / 16u;
    let tx = lid % 16u;
    zt[2u * ty * (TV / 4u) + tx] = z[0];
    zt[(2u * ty + 1u) * (TV / 4u) + tx] = z[1];
}

// zt at row r, class c.
fn zt_at(r: u32, c: u32) -> f32 {
    return zt[r * (TV / 4u) + c / 4u][c % 4u];
}

// The logits' gradient at this invocation's 2 x 4 places of the tile at (r0, v0), from the
// coefficients `finish` left (zero past the edges and in ignored rows).
fn grad_tile(lid: u32, r0: u32, v0: u32, z: array<vec4<f32>, 2>) -> array<vec4<f32>, 2> {
    let ty = lid / 16u;
    let tx = lid % 16u;
    var g = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
    for (var j = 0u; j < 2u; j++) {
        let r = r0 + 2u * ty + j;
        if (r >= params.rows) {
            continue;
        }
        let at = params.coef_base + 4u * r;
        let lse = scratch.data[at];
        let a = scratch.data[at + 1u];
        let b = scratch.data[at + 2u];
        let e = scratch.data[at + 3u];
        let t = y[r];
        for (var i = 0u; i < 4u; i++) {
            let v = v0 + 4u * tx + i;
            if (v >= params.vocab) {
                continue;
            }
            let zv = z[j][i];
            var gv = a * exp(zv - lse) - e * class_weight(v);
            if (i32(v) == t) {
                gv -= b;
            }
            if (SOFTCAP) {
                let u = zv / params.softcap;
                gv *= 1.0 - u * u;
            }
            g[j][i] = gv;
        }
    }
    return g;
}

@compute @workgroup_size(256)
fn stats(inv: Invocation) {
    let lid = inv.lid;
    let rt = params.row_tile0 + wg_index(inv, params.wg_x);
    if (rt >= params.row_tile_end) {
        return;
    }
    let r0 = rt * TR;
    // Invocation r < TR keeps row r0 + r's statistics.
    let row = r0 + lid;
    let owner = lid < TR && row < params.rows;
    var m = LOWEST;
    var s = 0.0;
    var u = 0.0;
    var wsum = 0.0;
    var zy = 0.0;
    var am = 0u;
    var tgt = -1;
    let at = params.stats_base + 6u * row;
    if (owner) {
        tgt = y[row];
        if (params.first == 0u) {
            m = scratch.data[at];
            s = scratch.data[at + 1u];
            u = scratch.data[at + 2u];
            wsum = scratch.data[at + 3u];
            zy = scratch.data[at + 4u];
            am = u32(scratch.data[at + 5u]);
        }
    }
    for (var t = params.vocab_tile0; t < params.vocab_tile_end; t++) {
        let v0 = t * TV;
        store_tile(lid, logits_tile(lid, r0, v0));
        workgroupBarrier();
        if (owner) {
            for (var c = 0u; c < TV; c++) {
                let v = v0 + c;
                if (v >= params.vocab) {
                    break;
                }
                let z = zt_at(lid, c);
                let w = class_weight(v);
                if (z > m) {
                    s = s * exp(m - z) + 1.0;
                    if (SMOOTH && wsum > 0.0) {
                        u += wsum * (z - m);
                    }
                    m = z;
                    am = v;
                } else {
                    s += exp(z - m);
                    if (SMOOTH) {
                        u += w * (m - z);
                    }
                }
                if (SMOOTH) {
                    wsum += w;
                }
                if (i32(v) == tgt) {
                    zy = z;
                }
            }
        }
        workgroupBarrier();
    }
    if (owner) {
        scratch.data[at] = m;
        scratch.data[at + 1u] = s;
        scratch.data[at + 2u] = u;
        scratch.data[at + 3u] = wsum;
        scratch.data[at + 4u] = zy;
        scratch.data[at + 5u] = f32(am);
    }
}

// The loss of a row: (1 - ls) w_y (lse - z_y) + ls / V sum_v w_v (lse - z_v) + z_loss w_y lse^2,
// with lse - z_y = (m - z_y) + log s and sum_v w_v (lse - z_v) = u + wsum log s. Ignored rows
// weigh 0; a target outside [0, V) is reported and gives NaN.
@compute @workgroup_size(256)
fn finish(inv: Invocation) {
    let row = wg_index(inv, params.wg_x) * 256u + inv.lid;
    if (row >= params.rows) {
        return;
    }
    let at = params.stats_base + 6u * row;
    let m = scratch.data[at];
    let log_s = log(scratch.data[at + 1u]);
    let u = scratch.data[at + 2u];
    let wsum = scratch.data[at + 3u];
    let zy = scratch.data[at + 4u];
    let lse = m + log_s;
    let t = y[row];
    let ls = params.label_smoothing;
    var loss = 0.0;
    var wy = 0.0;
    var coef = vec3<f32>(0.0);
    if (t != params.ignore_index) {
        if (t < 0 || t >= i32(params.vocab)) {
            report_invalid(row);
            loss = bitcast<f32>(0x7fc00000u);
            wy = loss;
            coef = vec3<f32>(loss);
        } else {
            wy = class_weight(u32(t));
            if (u32(scratch.data[at + 5u]) == u32(t)) {
                atomicAdd(&scratch.status[3], 1u);
            }
            loss = (1.0 - ls) * wy * ((m - zy) + log_s) + params.z_loss * wy * lse * lse;
            coef = vec3<f32>((1.0 - ls) * wy + 2.0 * params.z_loss * wy * lse, (1.0 - ls) * wy, 0.0);
            if (SMOOTH) {
                let e = ls / f32(params.vocab);
                loss += e * (u + wsum * log_s);
                coef += vec3<f32>(e * wsum, 0.0, e);
            }
        }
    }
    if (WANT_LSE) {
        scratch.data[params.lse_base + row] = lse;
    }
    if (params.want_loss == 1u) {
        scratch.data[params.out_base + row] = loss;
    }
    if (params.want_loss == 2u) {
        store_partial(params.out_base, row, vec2<f32>(loss, wy));
    }
    if (params.want_grad != 0u) {
        // Ignored rows keep zero coefficients even when every row is ignored (1 / 0).
        var scale = 1.0;
        if (params.want_grad == 2u && t != params.ignore_index) {
            scale = 1.0 / scratch.data[0];
        }
        let c = params.coef_base + 4u * row;
        scratch.data[c] = lse;
        scratch.data[c + 1u] = scale * coef.x;
        scratch.data[c + 2u] = scale * coef.y;
        scratch.data[c + 3u] = scale * coef.z;
    }
}

// Adds `val` to row `row` of gw (`of_w`) or of gh, columns e0 .. e0 + 3 (those below D): the
// first dispatch of a pass writes instead (`fresh`).
fn add4(of_w: bool, row: u32, e0: u32, val: vec4<f32>, fresh: bool) {
    let d = params.dim;
    for (var i = 0u; i < 4u; i++) {
        let e = e0 + i;
        if (e >= d) {
            break;
        }
        var old = 0.0;
        if (of_w) {
            let at = row * d + e - params.w_base;
            if (!fresh) {
                old = gw_get(at);
            }
            gw_set(at, old + val[i]);
        } else {
            let at = row * d + e - params.h_base;
            if (!fresh) {
                old = gh_get(at);
            }
            gh_set(at, old + val[i]);
        }
    }
}

// This invocation's part of the product at columns d0 .. d0 + 63 of D, added to its rows of gw
// (`of_w`: dz^T h[rows], k over the tile's rows, their rows of h staged TK at a time; classes
// 4 ty + {0..3}) or of gh (dz W[classes], k over the tile's classes, their rows of W staged;
// rows 2 ty + {0, 1}); columns 4 tx + {0..3}.
fn grad_columns(lid: u32, of_w: bool, r0: u32, v0: u32, d0: u32, fresh: bool) {
    let ty = lid / 16u;
    let tx = lid % 16u;
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < select(TV, TR, of_w); k0 += TK) {
        stage_b(lid, !of_w, false, select(v0, r0, of_w) + k0, select(params.vocab, params.rows, of_w), d0);
        workgroupBarrier();
        if (of_w) {
#unroll kk TK
            tile_step4(&acc, zt[(k0 + kk) * (TV / 4u) + ty], kk, tx);
#endunroll
        } else {
#unroll kk TK
            tile_step2(&acc, vec2<f32>(zt_at(2u * ty, k0 + kk), zt_at(2u * ty + 1u, k0 + kk)), kk, tx);
#endunroll
        }
        workgroupBarrier();
    }
    let first = select(r0 + 2u * ty, v0 + 4u * ty, of_w);
    let end = select(params.rows, params.vocab, of_w);
    for (var j = 0u; j < select(2u, 4u, of_w); j++) {
        if (first + j >= end) {
            break;
        }
        add4(of_w, first + j, d0 + 4u * tx, acc[j], fresh);
    }
}

// The bias's gradient (scratch at gbias_base) += the column sums of the tile's dz (in zt).
fn grad_bias(lid: u32, r0: u32, v0: u32, fresh: bool) {
    if (HAS_BIAS && lid < TV && v0 + lid < params.vocab) {
        var b = 0.0;
        for (var r = 0u; r < TR; r++) {
            if (r0 + r >= params.rows) {
                break;
            }
            b += zt_at(r, lid);
        }
        let e = params.gbias_base + v0 + lid;
        var old = 0.0;
        if (!fresh) {
            old = scratch.data[e];
        }
        scratch.data[e] = old + b;
    }
}

// The gradients' passes: grad_weight (`of_w`) and grad_hidden. The workgroup has a tile of its
// own, of classes (grad_weight) or of rows (grad_hidden), and takes the dispatch's chunk of tiles
// of the other in order: for each, the tile's dz into zt, then the product 64 columns of D at a
// time (the chunk's first tile in a pass's first dispatch writes, later ones add), and with
// grad_weight the bias's gradient.
fn grad_pass(inv: Invocation, of_w: bool) {
    let lid = inv.lid;
    let rows = vec2<u32>(params.row_tile0, params.row_tile_end);
    let classes = vec2<u32>(params.vocab_tile0, params.vocab_tile_end);
    let own = select(rows, classes, of_w);
    let chunk = select(classes, rows, of_w);
    let tile = own.x + wg_index(inv, params.wg_x);
    if (tile >= own.y) {
        return;
    }
    for (var t = chunk.x; t < chunk.y; t++) {
        let r0 = select(tile, t, of_w) * TR;
        let v0 = select(t, tile, of_w) * TV;
        store_tile(lid, grad_tile(lid, r0, v0, logits_tile(lid, r0, v0)));
        workgroupBarrier();
        let fresh = params.first == 1u && t == chunk.x;
        for (var d0 = 0u; d0 < params.dim; d0 += 64u) {
            grad_columns(lid, of_w, r0, v0, d0, fresh);
        }
        if (of_w) {
            grad_bias(lid, r0, v0, fresh);
        }
        workgroupBarrier();
    }
}

// gh[rows] += dz W[tile] for the workgroup's tile of rows, per class tile of the dispatch's chunk.
@compute @workgroup_size(256)
fn grad_hidden(inv: Invocation) {
    grad_pass(inv, false);
}

// gw[classes] += dz^T h[rows] (and the bias's gradient += dz's column sums) for the workgroup's
// tile of classes, per row tile of the dispatch's chunk.
@compute @workgroup_size(256)
fn grad_weight(inv: Invocation) {
    grad_pass(inv, true);
}

// A 16-bit gradient (the host's grad_dtype): the passes above sum a window of it in f32 in the
// plan's accumulator (gh here), then this pass writes its elements [narrow_from, narrow_to) to
// the caller's window (gw, in DTYPE_gw), rounded to nearest even: an invocation a 32-bit word,
// both its halves, so that no two invocations write one word.
@compute @workgroup_size(256)
fn narrow(inv: Invocation) {
    let word = params.narrow_from / 2u + wg_index(inv, params.wg_x) * 256u + inv.lid;
    for (var e = 2u * word; e < 2u * word + 2u; e++) {
        if (e >= params.narrow_from && e < params.narrow_to) {
            gw_set(e, gh_get(e));
        }
    }
}
