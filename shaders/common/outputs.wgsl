// What a loss kernel does with its losses after its loops, chosen per dispatch by uniforms (one
// pipeline then serves every reduction and every dispatch of a plan), except ROW_LOSS and
// SINGLE. The host fills them from one place, `After` in src/engine/program.rs; the includer's Params
// has `flags`, `scale_mode`, `final_mode`, `mean_den`, `grad_scale` and `partial_base`.
//   flags bit 0 (PARTIAL): write partial sums to scratch.
//   ROW_LOSS, an override constant (`After::key`): write per-row (per-element) losses. A
//   constant, not a flag: lavapipe runs a store under a uniform condition as a loop over the
//   lanes, paid even where the condition is false (docs/performance.md).
//   SINGLE, an override constant (`After::key` sets it on the pipeline of a plan's one-workgroup
//   dispatch): one workgroup holds the whole problem and writes the reduced value itself. Its
//   workgroup-wide sum and barrier exist only in those pipelines: lavapipe pays for a barrier
//   that is compiled in even where it never runs (12-17% of a forward pass: docs/performance.md).
//   scale_mode (gradient scale): SCALE_HOST params.grad_scale; SCALE_REDUCED 1 / scratch.data[0]
//   (a weighted mean's denominator reduced by an earlier pass); SCALE_OWN (SINGLE) 1 / the
//   weight sum it reduces itself.
//   final_mode (SINGLE): FINAL_SUM sum; FINAL_MEAN sum / params.mean_den; FINAL_WEIGHTED sum /
//   weight sum; FINAL_NONE none.
//   WANT_GRAD, an override constant: write the gradient.
//   PG, an override constant (a plan constant): invocations a partial sum covers, the `group` of
//   group_sum and store_group_partial.
// The codes are constants the host generates from its own (`ScaleMode`, `FinalMode` in
// src/engine/kernel.rs) and splices in with this file.

#import scratch
#import segment

override ROW_LOSS: bool = false;

fn want_row_loss() -> bool {
    return ROW_LOSS;
}

fn want_partial() -> bool {
    return (params.flags & 1u) != 0u;
}

override SINGLE: bool = false;

fn single() -> bool {
    return SINGLE;
}

override WANT_GRAD: bool = false;
override PG: u32 = 256u;

// The gradient's scale, unless the dispatch reduces the weight sum itself (SCALE_OWN).
fn grad_scale() -> f32 {
    if (params.scale_mode == SCALE_REDUCED) {
        return 1.0 / scratch.data[0];
    }
    return params.grad_scale;
}

// The reduced value of a SINGLE dispatch, from the workgroup's (loss, weight) total.
fn final_value(total: vec2<f32>) -> f32 {
    if (params.final_mode == FINAL_MEAN) {
        return total.x / params.mean_den;
    }
    if (params.final_mode == FINAL_WEIGHTED) {
        return total.x / total.y;
    }
    return total.x;
}

// The partial-sum step of a kernel whose whole workgroup is one segment (SEG = WG): with SINGLE,
// returns the workgroup's (loss, weight) total to every invocation; else, with PARTIAL, adds
// this invocation's partial into one partial per group of `group` invocations in scratch (see
// group_sum) and returns it. Call in uniform control flow.
fn emit_partial(part: vec2<f32>, wg: u32, inv: Invocation, group: u32) -> vec2<f32> {
    if (single()) {
        return seg_sum(vec4<f32>(part, 0.0, 0.0), inv.lid, sg_size_of(inv)).xy;
    }
    if (want_partial()) {
        store_group_partial(params.partial_base, wg, inv.lid, group, group_sum(part, 1u, group, inv.lid));
    }
    return part;
}
