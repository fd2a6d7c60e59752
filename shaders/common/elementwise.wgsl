// The entry point of the elementwise kernels (mix.wgsl, optim.wgsl): each invocation takes K
// elements of the window bound in the strided order (common/stream.wgsl), each independent of
// every other, and stops at params.len; the includer's `fn element(i: u32)` does element i.
// Dispatch folded: workgroup w = wid.x + wid.y * params.wg_x.

#import segment
#import stream

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    for (var k = 0u; k < K; k++) {
        let i = strided(wg, k, inv.lid);
        if (i >= params.len) {
            return;
        }
        element(i);
    }
}
