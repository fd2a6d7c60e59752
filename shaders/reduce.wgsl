// Fixed-order sums of the (loss, weight) partials that the loss kernels leave in scratch, one level
// of a tree per dispatch, and the final values of a reduction: of all partials, or of each of
// params.groups consecutive groups (per-row sums of rows cut into chunks).
//
// CPU twin: the f64 sums of src/cpu/*.rs (a sum is a sum; the tree order is what the GPU adds).
// Host side: src/engine/program.rs plans the levels so that no invocation adds more than K partials.
//
// A group is params.count partials, params.group_wgs workgroups; workgroup w takes group
// g = w / group_wgs and sums its partials [j * WG * K, (j + 1) * WG * K), j = w % group_wgs,
// invocation i taking i, i + WG, ... (K of them), then the workgroup in index order. mode (the
// host's `ReduceMode`, src/engine/program.rs, as constants):
//   REDUCE_PARTIAL        write the sum as partial w of the next level, at params.out_base (a
//                         group's stay together)
//   REDUCE_SUM            final: loss[g] = sum of losses
//   REDUCE_MEAN           final: loss[g] = sum of losses / params.mean_den
//   REDUCE_WEIGHTED_MEAN  final: loss[g] = sum of losses / sum of weights (a weighted mean)
//   REDUCE_DENOMINATOR    final: scratch.data[0] = sum of weights (a weighted mean's
//                         denominator, for the gradient)
// Bindings: 0 params, 1 scratch, 2 loss. Dispatch folded: w = wid.x + wid.y * params.wg_x.

#import scratch
#import segment
#import stream

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

@group(0) @binding(1) var<storage, read_write> scratch: Scratch;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    let g = wg / params.group_wgs;
    if (g >= params.groups) {
        return;
    }
    var acc = vec2<f32>(0.0);
    for (var k = 0u; k < K; k++) {
        let i = strided(wg % params.group_wgs, k, inv.lid);
        if (i < params.count) {
            acc += load_partial(params.in_base, g * params.count + i);
        }
    }
    let total = seg_sum(vec4<f32>(acc, 0.0, 0.0), inv.lid, sg_size_of(inv)).xy;
    if (inv.lid != 0u) {
        return;
    }
    switch params.mode {
        case REDUCE_PARTIAL: {
            store_partial(params.out_base, wg, total);
        }
        case REDUCE_SUM: {
            loss[g] = total.x;
        }
        case REDUCE_MEAN: {
            loss[g] = total.x / params.mean_den;
        }
        case REDUCE_WEIGHTED_MEAN: {
            loss[g] = total.x / total.y;
        }
        case REDUCE_DENOMINATOR, default: {
            scratch.data[0] = total.y;
        }
    }
}
