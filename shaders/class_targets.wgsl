// The denominator of a weighted mean over class targets, when the gradient needs it before the
// loss pass can finish: sum over rows n with y_n != ignore_index and 0 <= y_n < C of w[y_n]
// (1 without class weights). PyTorch's cross_entropy and nll_loss divide their mean by this.
//
// CPU twin: `mean_denominator` in src/cpu/cross_entropy.rs. Used by src/families/cross_entropy.rs
// and src/families/nll.rs before the loss pass; reduce.wgsl then sums the partials into
// scratch.data[0].
//
// Each workgroup sums WG * K rows and writes the partial (0, sum) at params.partial_base + w.
// Out-of-range targets are skipped here; the loss pass reports them.
// Bindings: 0 params, 1 y, 2 w, 3 scratch. Dispatch folded: w = wid.x + wid.y * params.wg_x.

#import scratch
#import segment
#import stream
#import classes

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

@group(0) @binding(1) var<storage, read> y: array<i32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> scratch: Scratch;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    if (wg * WG * K >= params.rows) {
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < K; k++) {
        let n = strided(wg, k, inv.lid);
        if (n < params.rows) {
            let yn = y[n];
            if (yn != params.ignore_index && yn >= 0 && yn < i32(params.classes)) {
                acc += class_weight(u32(yn));
            }
        }
    }
    let total = seg_sum(vec4<f32>(acc, 0.0, 0.0, 0.0), inv.lid, sg_size_of(inv));
    if (inv.lid == 0u) {
        store_partial(params.partial_base, wg, vec2<f32>(0.0, total.x));
    }
}
