// A weighted sum of losses, one term at a time: each term's plan writes its loss and gradient
// into the mix's scratch, then this kernel adds them, scaled by the term's weight, into the
// mix's outputs: dst = w src for the first term of an output (FIRST), dst = dst + w src for the
// next ones, in the terms' order. One element an invocation at a time, each element
// independent: the same bits on every run.
//
// CPU twin: src/cpu/mix.rs. Host side: src/families/mix.rs.
// Layout: workgroup w takes elements [w * WG * K, (w + 1) * WG * K) of the window bound (WG =
// 256), invocation i elements i, i + WG, ... (K of them: common/stream.wgsl's strided order).
// Bindings: 0 params, 1 dst, 2 src.
// Dispatch folded: workgroup w = wid.x + wid.y * params.wg_x.

#import elementwise

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;

// Element i (the entry point, `main`, is common/elementwise.wgsl's).
fn element(i: u32) {
    let v = params.weight * src[i];
    if (params.first != 0u) {
        dst[i] = v;
    } else {
        dst[i] = dst[i] + v;
    }
}
