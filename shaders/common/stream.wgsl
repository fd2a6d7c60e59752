// How the streaming kernels spread a workgroup's run of elements (or vec4s) over its
// invocations, K an invocation, in one of two orders:
//   strided      invocation i takes i, i + WG, i + 2 WG, ... of the workgroup's WG * K
//                (`strided`): each step of the loop reads WG consecutive values.
//   lane groups  LANES invocations take LANES consecutive values at a time, so that each group
//                streams a contiguous run of LANES * K (`lane_first`, then every LANES).
// K and LANES are plan constants the host sets (K on every pipeline of an includer, LANES on
// those that stream in lane groups); K is a preprocessor value instead where the includer
// declares it so (`#const K`: cross-entropy, whose loops over it unroll).

#import segment

#ifndef K
override K: u32 = 16u;
#endif
override LANES: u32 = 8u;

// Value k (k < K) of invocation `lid` of workgroup `wg`, in the strided order.
fn strided(wg: u32, k: u32, lid: u32) -> u32 {
    return wg * WG * K + k * WG + lid;
}

// Invocation j's first value in the lane groups' order, counted from the start of the run that
// invocations 0, 1, ... share (a workgroup's, or cross-entropy's segment's); its next ones
// follow every LANES.
fn lane_first(j: u32) -> u32 {
    return (j / LANES) * LANES * K + j % LANES;
}
