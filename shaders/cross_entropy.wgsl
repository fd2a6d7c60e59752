// Cross-entropy from logits over rows of C classes: per-row loss, loss partials and the gradient,
// fused. (The classic form on probabilities needs no softmax: pointwise.wgsl's LOSS 7.)
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
// Each row also yields its weight for the mean's denominator (w_y, 0 when ignored; 1 for 1).
// Everything is computed relative to the row max m, with lse - x = (m - x) + log(s), never as a
// difference of two large numbers: logits of +-1e4 keep full relative precision.
//
// Layout: a block is ROWS consecutive rows with ROWS * C a multiple of 4, so every block starts on
// a vec4 boundary, is owned by one workgroup, and vec4 stores never race. BV = ROWS * C / 4 vec4s.
// Invocations read in lane groups: LANES of them take LANES consecutive vec4s at a time, so
// each group streams a contiguous run (see `first_vec`).
//   fused:  SEG invocations per block, K vec4 each (BV <= SEG * K), WG / SEG blocks a workgroup.
//           Reads the inputs once and writes the gradient once.
//   stats:  rows too long for a segment that needs no barrier (forward only), or for one
//           workgroup: one segment per (block, chunk of SEG * K vec4s) writes the chunk's per-row
//           statistics (max, sum of exp, a, b, ws) to scratch.
//   finish: one segment per block: merges the block's chunk statistics in chunk order, writes
//           row losses and its partial; with the gradient, the merged statistics over the
//           block's chunk 0 records.
//   gradient: one segment per (block, chunk): the block's merged statistics, then the chunk
//           read again, and its gradient written. No merging of records per chunk.
// Statistics: every invocation first summarises its own elements (Stats: max, sum of exp
// relative to that max, ...), from registers; a segment then merges the summaries in a fixed
// order (`seg_merge`, one reduction site). Only exp(x' - own max) stays live across it.
// Dispatches are folded into two dimensions: workgroup w = wid.x + wid.y * params.wg_x. A fused
// workgroup writes WG / PG partials (one per group of PG invocations, see group_sum).
//
// Preprocessor variants: VEC4 binds x, t and grad as arrays of vec4s (full blocks); without it
// as arrays of elements with bounds checks (the last, partial block, and problems that fit one
// workgroup). UNALIGNED (scalar bindings, fused only): blocks of one row for C not a multiple of
// 4 whose 2- or 4-row blocks would not fit a workgroup, so that they are still read once; a
// row's vec4s then start at its first element, and the last one is masked. INPLACE writes the
// gradient over x. SUBGROUPS selects the segment reductions. Half-precision tensors never take
// UNALIGNED (its rows share 32-bit words at their ends): their long odd rows are chunked.
//
// Bindings: 0 params, 1 x, 2 t, 3 y, 4 w, 5 grad, 6 loss (per row; or the reduced value when
// SINGLE), 7 scratch. Every binding is bound (dummies stand in for unused ones).

#import scratch
#import segment
#import outputs
#import classes
#import stream

// vec4s per invocation (<= KMAX): a preprocessor value, so that the loops over them unroll
// (common/stream.wgsl's lane groups take it, and declare no override K then).
#const K
override ROWS: u32 = 1u;
// C as a constant of the pipeline, so that the rows and columns of a block's elements fold.
override CLASSES: u32 = 1u;
override TARGETS: u32 = 0u;
override SMOOTH: bool = false;
override ZLOSS: bool = false;
override SOFTCAP: bool = false;
// Track each row's argmax (and count the rows whose argmax is their target).
override WANT_ARGMAX: bool = false;
// A shard of a vocabulary (classes [class_offset, class_offset + CLASSES) of params.vocab): 1
// writes each row's statistics, 2 the gradient from the combined statistics of all shards.
override SHARD: u32 = 0u;
// Side outputs and inputs: bit 0 the log-sum-exp, 1 row losses beside a reduced loss (both into
// scratch), 2 one upstream gradient, 3 one a row (from scratch). A constant of the pipeline,
// like ROW_LOSS (common/outputs.wgsl): lavapipe pays for uniform-conditional stores even where
// they never run.
override SIDE: u32 = 0u;
// What happens after the statistics (row losses, partials, a single workgroup's reduced value,
// the gradient's scale): see common/outputs.wgsl.
const KMAX: u32 = 128u;
// Identity of max. Finite, so that rows or chunks whose entries are all -inf give a zero sum of
// exponentials instead of exp(-inf - -inf) = NaN; the row's loss still comes out as PyTorch's.
const LOWEST: f32 = -3.40282347e38;

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

// Where a block's data starts in the bound window of x, t and grad (which starts at element
// params.bind_base, a multiple of 4; params.total counts the window's elements): a vec4 index
// (blocks start on vec4 boundaries), or with UNALIGNED (one row a block, C not a multiple of 4,
// scalar bindings) an element index. Rows, targets, losses and scratch are indexed by the whole
// problem's rows.
fn block_start(row0: u32) -> u32 {
#ifdef UNALIGNED
    return row0 * CLASSES - params.bind_base;
#else
    return (row0 * CLASSES - params.bind_base) / 4u;
#endif
}

// vec4s a block spans (the last one partial with UNALIGNED).
fn block_vecs() -> u32 {
#ifdef UNALIGNED
    return (CLASSES + 3u) / 4u;
#else
    return ROWS * CLASSES / 4u;
#endif
}

// The element index of component i of vec4 v of the block starting at gv0.
fn element(gv0: u32, v: u32, i: u32) -> u32 {
#ifdef UNALIGNED
    return gv0 + 4u * v + i;
#else
    return 4u * (gv0 + v) + i;
#endif
}

// The logits x, probability targets t and gradient in their dtypes (DTYPE_x, DTYPE_t,
// DTYPE_grad; common/tensor.wgsl), read and written in f32.
#ifdef INPLACE
#tensor x 1 read_write
#else
#tensor x 1 read
#tensor grad 5 read_write
#endif
#tensor t 2 read

#ifdef VEC4
fn load_x(gv0: u32, v: u32) -> vec4<f32> {
    return x_get4(gv0 + v);
}

fn load_t(gv0: u32, v: u32) -> vec4<f32> {
    return t_get4(gv0 + v);
}

fn store_grad(gv0: u32, v: u32, g: vec4<f32>) {
#ifdef INPLACE
    x_set4(gv0 + v, g);
#else
    grad_set4(gv0 + v, g);
#endif
}
#else
// Element i of vec4 v of the block at gv0, and whether it exists: the last vec4 of an
// UNALIGNED row is partial (the rest belongs to the next row, another segment's to write).
fn elem_ok(gv0: u32, v: u32, i: u32) -> vec2<u32> {
    let e = element(gv0, v, i);
#ifdef UNALIGNED
    let ok = 4u * v + i < CLASSES && e < params.total;
#else
    let ok = e < params.total;
#endif
    return vec2<u32>(e, u32(ok));
}

// x (or t: `of_t`) at vec4 v of the block at gv0, zero where no element exists.
fn load(of_t: bool, gv0: u32, v: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let e = elem_ok(gv0, v, i);
        if (e.y != 0u) {
            if (of_t) {
                r[i] = t_get(e.x);
            } else {
                r[i] = x_get(e.x);
            }
        }
    }
    return r;
}

fn load_x(gv0: u32, v: u32) -> vec4<f32> {
    return load(false, gv0, v);
}

fn load_t(gv0: u32, v: u32) -> vec4<f32> {
    return load(true, gv0, v);
}

fn store_grad(gv0: u32, v: u32, g: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        let e = elem_ok(gv0, v, i);
        if (e.y != 0u) {
#ifdef INPLACE
            x_set(e.x, g[i]);
#else
            grad_set(e.x, g[i]);
#endif
        }
    }
}
#endif

@group(0) @binding(3) var<storage, read> y: array<i32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;
@group(0) @binding(7) var<storage, read_write> scratch: Scratch;

// This invocation's x' (capped logits), exp(x' - m), and targets (K of each, at most KMAX).
var<private> xs: array<vec4<f32>, K>;
var<private> es: array<vec4<f32>, K>;
var<private> ts: array<vec4<f32>, K>;
var<workgroup> sh_scale: f32;

// The rows of one block.
struct Block {
    row0: u32,
    // Rows of this block that exist (0 for the padding segments of the last workgroup).
    nrows: u32,
    // Class targets (TARGETS 0), component r for row r. With SHARD, the target's column in
    // this shard, or -1 where it lies elsewhere (or the row is ignored or invalid).
    y: vec4<i32>,
    // SHARD: where each row's target is: SHARD_HERE, SHARD_ELSEWHERE, SHARD_IGNORED or
    // SHARD_INVALID (outside the whole vocabulary; counted in the status words).
    at: vec4<u32>,
}

const SHARD_ELSEWHERE: u32 = 0u;
const SHARD_HERE: u32 = 1u;
const SHARD_IGNORED: u32 = 2u;
const SHARD_INVALID: u32 = 3u;

fn block_of(index: u32) -> Block {
    var blk: Block;
    blk.row0 = (params.block_base + index) * ROWS;
    blk.nrows = 0u;
    if (index < params.blocks && blk.row0 < params.rows) {
        blk.nrows = min(ROWS, params.rows - blk.row0);
    }
    blk.y = vec4<i32>(0);
    blk.at = vec4<u32>(SHARD_ELSEWHERE);
    if (TARGETS == 0u) {
        for (var r = 0u; r < ROWS; r++) {
            if (r < blk.nrows) {
                blk.y[r] = y[blk.row0 + r];
                if (SHARD != 0u) {
                    // The shard holds classes [class_offset, class_offset + CLASSES) of
                    // vocab; its kernels see only its own columns.
                    let t = blk.y[r];
                    let local = t - i32(params.class_offset);
                    blk.y[r] = -1;
                    if (t == params.ignore_index) {
                        blk.at[r] = SHARD_IGNORED;
                    } else if (t < 0 || u32(t) >= params.vocab) {
                        blk.at[r] = SHARD_INVALID;
                    } else if (local >= 0 && u32(local) < CLASSES) {
                        blk.at[r] = SHARD_HERE;
                        blk.y[r] = local;
                    }
                }
            }
        }
    }
    return blk;
}

// SHARD 1: a row's statistics over this shard's classes, 8 floats at shard_base + 8 row (copied
// to the caller's `shard_stats` after the pass): max m, log of the sum of exp(x' - m), the
// target's x' (where it is here), where the target is (Block.at, as f32), sum w (x' - m) and
// sum w (label smoothing's parts), the target's class weight (where it is here), 0.
fn emit_shard_stats(blk: Block, st: Stats) {
    for (var r = 0u; r < ROWS; r++) {
        if (r >= blk.nrows) {
            continue;
        }
        let i = params.shard_base + 8u * (blk.row0 + r);
        let here = blk.at[r] == SHARD_HERE;
        scratch.data[i] = st.m[r];
        scratch.data[i + 1u] = log(st.s[r]);
        scratch.data[i + 2u] = select(0.0, st.a[r], here);
        scratch.data[i + 3u] = f32(blk.at[r]);
        scratch.data[i + 4u] = st.b[r];
        scratch.data[i + 5u] = st.ws[r];
        scratch.data[i + 6u] = select(0.0, class_weight(u32(max(blk.y[r], 0))), here);
        scratch.data[i + 7u] = 0.0;
        if (blk.at[r] == SHARD_INVALID) {
            report_invalid(blk.row0 + r);
        }
    }
}

// SHARD 2: a row's gradient coefficients from the combined statistics of every shard (4 floats
// at shard_base + 4 row, copied in from the caller's `shard_scale`): the row's log-sum-exp over
// the whole vocabulary, then the scaled coefficients of p, of the target's one-hot and of the
// class weight (see RowOut; 0 for ignored rows).
fn shard_rows(blk: Block) -> RowOut {
    var o: RowOut;
    for (var r = 0u; r < ROWS; r++) {
        if (r >= blk.nrows) {
            continue;
        }
        let i = params.shard_base + 4u * (blk.row0 + r);
        o.lse[r] = scratch.data[i];
        o.cp[r] = scratch.data[i + 1u];
        o.ct[r] = scratch.data[i + 2u];
        o.cs[r] = scratch.data[i + 3u];
        o.keep[r] = 1.0;
    }
    return o;
}

// What some elements of a block's rows add up to; component r of each vector for row r.
struct Stats {
    // Max of x'.
    m: vec4<f32>,
    // Sum of exp(x' - m).
    s: vec4<f32>,
    // TARGETS 0: x'_y; 1: sum w q.
    a: vec4<f32>,
    // TARGETS 0 (SMOOTH): sum w (x' - m); 1: sum w q (x' - m).
    b: vec4<f32>,
    // TARGETS 0 (SMOOTH): sum w (the element count without weights).
    ws: vec4<f32>,
    // WANT_ARGMAX: the column of the max, the first where it repeats (NO_INDEX: no element).
    i: vec4<u32>,
}

const NO_INDEX: u32 = 0xffffffffu;

fn no_stats() -> Stats {
    return Stats(vec4<f32>(LOWEST), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0),
        vec4<u32>(NO_INDEX));
}

// The argmax of the union of x's and y's elements: the larger max's column, the smaller column
// when the maxes are equal (the first occurrence, as torch.argmax; a fixed choice whatever the
// merge order).
fn merged_index(x: Stats, y: Stats) -> vec4<u32> {
    if (!WANT_ARGMAX) {
        return x.i;
    }
    let take_y = (y.m > x.m) | ((y.m == x.m) & (y.i < x.i));
    return select(x.i, y.i, take_y);
}

// Takes the elements of xv into st's max (and with WANT_ARGMAX its column).
fn scan_max(st: ptr<function, Stats>, xv: vec4<f32>, cd: Coords) {
    if (WANT_ARGMAX) {
        for (var j = 0u; j < 4u; j++) {
            let r = cd.r[j];
            let m = (*st).m[r];
            if (cd.live[j] && (xv[j] > m || (xv[j] == m && cd.c[j] < (*st).i[r]))) {
                (*st).m[r] = xv[j];
                (*st).i[r] = cd.c[j];
            }
        }
    } else {
        (*st).m = max((*st).m, row_maxes(xv, cd));
    }
}

// The statistics of the union of two sets of elements. Sums relative to a max are rebased to
// the larger max; a side with no elements has m = LOWEST, s = 0 and contributes nothing.
fn merge(x: Stats, y: Stats) -> Stats {
    if (ROWS == 1u) {
        // One row: scalar work only.
        let m = max(x.m.x, y.m.x);
        let dx = x.m.x - m;
        let dy = y.m.x - m;
        var b = 0.0;
        if (TARGETS == 1u) {
            b = (x.b.x + dx * x.a.x) + (y.b.x + dy * y.a.x);
        } else if (SMOOTH) {
            b = (x.b.x + dx * x.ws.x) + (y.b.x + dy * y.ws.x);
        }
        return Stats(vec4<f32>(m), vec4<f32>(x.s.x * exp(dx) + y.s.x * exp(dy)),
            vec4<f32>(x.a.x + y.a.x), vec4<f32>(b), vec4<f32>(x.ws.x + y.ws.x), merged_index(x, y));
    }
    let m = max(x.m, y.m);
    let dx = x.m - m;
    let dy = y.m - m;
    var o = Stats(m, x.s * exp(dx) + y.s * exp(dy), x.a + y.a, vec4<f32>(0.0), x.ws + y.ws,
        merged_index(x, y));
    if (TARGETS == 1u) {
        o.b = (x.b + dx * x.a) + (y.b + dy * y.a);
    } else if (SMOOTH) {
        o.b = (x.b + dx * x.ws) + (y.b + dy * y.ws);
    }
    return o;
}

#ifdef SUBGROUPS
fn shuffle_stats(x: Stats, off: u32) -> Stats {
    if (ROWS == 1u) {
        // One row: the five statistics travel in two vectors.
        let p = subgroupShuffleXor(vec4<f32>(x.m.x, x.s.x, x.a.x, x.b.x), off);
        let ws = subgroupShuffleXor(x.ws.x, off);
        var i = x.i;
        if (WANT_ARGMAX) {
            i = vec4<u32>(subgroupShuffleXor(x.i.x, off));
        }
        return Stats(vec4<f32>(p.x), vec4<f32>(p.y), vec4<f32>(p.z), vec4<f32>(p.w), vec4<f32>(ws), i);
    }
    var i = x.i;
    if (WANT_ARGMAX) {
        i = subgroupShuffleXor(x.i, off);
    }
    return Stats(
        subgroupShuffleXor(x.m, off),
        subgroupShuffleXor(x.s, off),
        subgroupShuffleXor(x.a, off),
        subgroupShuffleXor(x.b, off),
        subgroupShuffleXor(x.ws, off),
        i,
    );
}

// x, or y when `take_y` (WGSL's select does not take structures).
fn pick(x: Stats, y: Stats, take_y: bool) -> Stats {
    return Stats(select(x.m, y.m, take_y), select(x.s, y.s, take_y), select(x.a, y.a, take_y),
        select(x.b, y.b, take_y), select(x.ws, y.ws, take_y), select(x.i, y.i, take_y));
}

// One summary per block of SG_MIN invocations (SG_MIN >= 4: the host uses subgroups only then).
var<workgroup> sh_stats: array<Stats, 64>;

// Merges the statistics of the SEG invocations of each segment in the fixed tree order of
// segment.wgsl (each aligned block of `off` invocations merged with the one beside it, left
// operand first), whatever the subgroup size: a butterfly of shuffles for the levels below
// SG_MIN, then the blocks' summaries through workgroup memory. Every invocation of a segment
// gets the root's bits.
fn seg_merge(st: Stats, lid: u32, sg_size: u32) -> Stats {
    let width = min(SEG, SG_MIN);
    var r = st;
    for (var off = 1u; off < width; off <<= 1u) {
        // merge(left, right) in every invocation: merge rounds differently with its operands
        // swapped (fused multiply-adds), so the pair's left block always goes first.
        let o = shuffle_stats(r, off);
        let right = (lid & off) != 0u;
        r = merge(pick(r, o, right), pick(o, r, right));
    }
    if (SEG > width) {
        let parts = SEG / width;
        let slot = lid / width;
        workgroupBarrier();
        if (lid % width == 0u) {
            sh_stats[slot] = r;
        }
        for (var off = 1u; off < parts; off <<= 1u) {
            workgroupBarrier();
            if (lid % width == 0u && slot % (2u * off) == 0u) {
                sh_stats[slot] = merge(sh_stats[slot], sh_stats[slot + off]);
            }
        }
        workgroupBarrier();
        r = sh_stats[(lid / SEG) * parts];
    }
    return r;
}
#else
// Without subgroups: the segment max first (a tree), then each invocation rebases its sums to
// it, then their sums (trees).
fn seg_merge(st: Stats, lid: u32, sg_size: u32) -> Stats {
    let m = seg_max(st.m, lid, sg_size);
    let d = st.m - m;
    var b = st.b;
    if (TARGETS == 1u) {
        b += d * st.a;
    } else if (SMOOTH) {
        b += d * st.ws;
    }
    let s = st.s * exp(d);
    if (ROWS == 1u) {
        let p = seg_sum(vec4<f32>(s.x, st.a.x, b.x, st.ws.x), lid, sg_size);
        return Stats(m, vec4<f32>(p.x), vec4<f32>(p.y), vec4<f32>(p.z), vec4<f32>(p.w),
            seg_min_index(st, m, lid));
    }
    return Stats(m, seg_sum(s, lid, sg_size), seg_sum(st.a, lid, sg_size), seg_sum(b, lid, sg_size),
        seg_sum(st.ws, lid, sg_size), seg_min_index(st, m, lid));
}

var<workgroup> sh_index: array<vec4<u32>, WG>;

// WANT_ARGMAX: the smallest column among the segment's invocations whose max is the segment's
// (a tree in workgroup memory; call in uniform control flow).
fn seg_min_index(st: Stats, m: vec4<f32>, lid: u32) -> vec4<u32> {
    if (!WANT_ARGMAX) {
        return st.i;
    }
    let first = (lid / SEG) * SEG;
    workgroupBarrier();
    sh_index[lid] = select(vec4<u32>(NO_INDEX), st.i, st.m == m);
    for (var off = SEG / 2u; off > 0u; off >>= 1u) {
        workgroupBarrier();
        if (lid - first < off) {
            sh_index[lid] = min(sh_index[lid], sh_index[lid + off]);
        }
    }
    workgroupBarrier();
    return sh_index[first];
}
#endif

// Where the four elements of vec4 v of a block belong: row within the block, column, and
// whether the row exists (the last block may be partial).
struct Coords {
    r: vec4<u32>,
    c: vec4<u32>,
    live: vec4<bool>,
}

fn coords(v: u32, nrows: u32) -> Coords {
    let e = vec4<u32>(4u * v) + vec4<u32>(0u, 1u, 2u, 3u);
    var r = vec4<u32>(0u);
    if (ROWS > 1u) {
        let c = CLASSES;
        let one = vec4<u32>(1u);
        let zero = vec4<u32>(0u);
        r = select(zero, one, e >= vec4<u32>(c)) + select(zero, one, e >= vec4<u32>(2u * c))
            + select(zero, one, e >= vec4<u32>(3u * c));
    }
#ifdef UNALIGNED
    // One row, whose last vec4 may run into the next row.
    return Coords(r, e, r < vec4<u32>(nrows) & e < vec4<u32>(CLASSES));
#else
    return Coords(r, e - r * CLASSES, r < vec4<u32>(nrows));
#endif
}

// Per-row values (component r for row r) spread over a vec4's elements by their rows: as bits,
// so that one function serves every type (WGSL has no generics), and bits are all it moves.
fn spread_bits(v: vec4<u32>, r: vec4<u32>) -> vec4<u32> {
    if (ROWS == 1u) {
        return vec4<u32>(v.x);
    }
    var o = select(vec4<u32>(v.x), vec4<u32>(v.y), r == vec4<u32>(1u));
    if (ROWS == 4u) {
        o = select(o, vec4<u32>(v.z), r == vec4<u32>(2u));
        o = select(o, vec4<u32>(v.w), r == vec4<u32>(3u));
    }
    return o;
}

fn spread(v: vec4<f32>, r: vec4<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(spread_bits(bitcast<vec4<u32>>(v), r));
}

fn spread_i(v: vec4<i32>, r: vec4<u32>) -> vec4<i32> {
    return bitcast<vec4<i32>>(spread_bits(bitcast<vec4<u32>>(v), r));
}

// The sum of a vec4's live elements per row (component r for row r).
fn row_sums(x: vec4<f32>, cd: Coords) -> vec4<f32> {
    let z = select(vec4<f32>(0.0), x, cd.live);
    if (ROWS == 1u) {
        return vec4<f32>(dot(z, vec4<f32>(1.0)), 0.0, 0.0, 0.0);
    }
    var o = vec4<f32>(0.0);
    for (var i = 0u; i < ROWS; i++) {
        o[i] = dot(select(vec4<f32>(0.0), z, cd.r == vec4<u32>(i)), vec4<f32>(1.0));
    }
    return o;
}

// The max of a vec4's live elements per row.
fn row_maxes(x: vec4<f32>, cd: Coords) -> vec4<f32> {
    let z = select(vec4<f32>(LOWEST), x, cd.live);
    if (ROWS == 1u) {
        return vec4<f32>(max(max(z.x, z.y), max(z.z, z.w)), LOWEST, LOWEST, LOWEST);
    }
    var o = vec4<f32>(LOWEST);
    for (var i = 0u; i < ROWS; i++) {
        let m = select(vec4<f32>(LOWEST), z, cd.r == vec4<u32>(i));
        o[i] = max(max(m.x, m.y), max(m.z, m.w));
    }
    return o;
}

fn cap(v: vec4<f32>) -> vec4<f32> {
    // tanh saturates in f32 long before 20; the clamp keeps drivers that build tanh from exp
    // away from inf / inf.
    let c = params.softcap;
    return c * tanh(clamp(v / c, vec4<f32>(-20.0), vec4<f32>(20.0)));
}

fn class_weights(c: vec4<u32>) -> vec4<f32> {
    if (HAS_WEIGHT) {
        let last = CLASSES - 1u;
        let i = min(c, vec4<u32>(last));
        return vec4<f32>(w[i.x], w[i.y], w[i.z], w[i.w]);
    }
    return vec4<f32>(1.0);
}

// The smoothed target probabilities of TARGETS 1.
fn smoothed(tv: vec4<f32>) -> vec4<f32> {
    let ls = params.label_smoothing;
    return (1.0 - ls) * tv + ls / f32(CLASSES);
}

// Loads this invocation's vec4s (v0 + k * stride, k < K, below vlim) of the block starting at
// vec4 gv0 into xs / ts, and accumulates into `st` what does not need a max: m, a, ws.
fn load_and_scan(blk: Block, st: ptr<function, Stats>, gv0: u32, v0: u32, stride: u32, vlim: u32) {
#unroll k K
    if (blk.nrows != 0u && v0 + k * stride < vlim) {
        let v = v0 + k * stride;
        var xv = load_x(gv0, v);
        if (SOFTCAP) {
            xv = cap(xv);
        }
        xs[k] = xv;
        if (TARGETS != 0u) {
            ts[k] = load_t(gv0, v);
        }
        let cd = coords(v, blk.nrows);
        if (TARGETS == 0u) {
            scan_max(st, xv, cd);
            if (ROWS == 1u) {
                // One row: only the vec4 holding the target adds its component.
                if (v == u32(blk.y.x) / 4u && blk.y.x >= 0) {
                    (*st).a.x += xv[u32(blk.y.x) % 4u];
                }
            } else {
                let hit = vec4<i32>(cd.c) == spread_i(blk.y, cd.r);
                (*st).a += row_sums(select(vec4<f32>(0.0), xv, hit), cd);
            }
            if (SMOOTH) {
                (*st).ws += row_sums(class_weights(cd.c), cd);
            }
        } else {
            scan_max(st, xv, cd);
            (*st).a += row_sums(class_weights(cd.c) * smoothed(ts[k]), cd);
        }
    }
#endunroll
}

// es = exp(x' - m) for this invocation's elements, m given per row; with `sums`, adds them to
// `st` (s) with the sums relative to m (b).
fn exps(blk: Block, st: ptr<function, Stats>, m: vec4<f32>, v0: u32, stride: u32, vlim: u32, sums: bool) {
#unroll k K
    if (blk.nrows != 0u && v0 + k * stride < vlim) {
        let cd = coords(v0 + k * stride, blk.nrows);
        let d = xs[k] - spread(m, cd.r);
        let e = exp(d);
        es[k] = e;
        if (sums) {
            (*st).s += row_sums(e, cd);
            if (TARGETS == 1u) {
                (*st).b += row_sums(class_weights(cd.c) * smoothed(ts[k]) * d, cd);
            } else if (SMOOTH) {
                (*st).b += row_sums(class_weights(cd.c) * d, cd);
            }
        }
    }
#endunroll
}

// This invocation's statistics of its elements (after load_and_scan): its own max, then the
// sums relative to it.
fn own_stats(blk: Block, st: ptr<function, Stats>, v0: u32, stride: u32, vlim: u32) {
    exps(blk, st, (*st).m, v0, stride, vlim, true);
}

// Everything a row needs after its statistics are complete.
struct RowOut {
    // Per-row loss and mean weight.
    loss: vec4<f32>,
    weight: vec4<f32>,
    // The log of the row's sum of exponentials (lse = m + logs) and its reciprocal.
    logs: vec4<f32>,
    lse: vec4<f32>,
    inv_s: vec4<f32>,
    // Gradient coefficients before the scale: grad = cp * p - ct * onehot_y - cs * w_c (TARGETS 0),
    // grad = cp * p - w q (TARGETS 1).
    cp: vec4<f32>,
    ct: vec4<f32>,
    cs: vec4<f32>,
    // 1 for rows that take part, 0 for ignored rows.
    keep: vec4<f32>,
    // WANT_ARGMAX: the column of the row's max (0 for a row with no element above LOWEST).
    argmax: vec4<u32>,
}

fn finish_rows(blk: Block, st: Stats) -> RowOut {
    var o: RowOut;
    let nan = bitcast<f32>(0x7fc00000u);
    let ls = params.label_smoothing;
    let cf = f32(params.classes);
    o.argmax = select(st.i, vec4<u32>(0u), st.i == vec4<u32>(NO_INDEX));
    for (var r = 0u; r < ROWS; r++) {
        o.keep[r] = 1.0;
        let logs = log(st.s[r]);
        let lse = st.m[r] + logs;
        o.logs[r] = logs;
        o.lse[r] = lse;
        o.inv_s[r] = 1.0 / st.s[r];
        if (TARGETS == 1u) {
            // sum w q (lse - x') = sum w q (m - x') + logs sum w q
            o.loss[r] = logs * st.a[r] - st.b[r];
            o.cp[r] = st.a[r];
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
        o.loss[r] = (1.0 - ls) * wy * ((st.m[r] - st.a[r]) + logs);
        o.cp[r] = (1.0 - ls) * wy;
        o.ct[r] = (1.0 - ls) * wy;
        if (SMOOTH) {
            let wsum = st.ws[r];
            o.loss[r] += ls / cf * (wsum * logs - st.b[r]);
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

// Writes this invocation's softmax gradient vec4s from xs / es / ts; p = es * pf (pf per row). The
// per-row coefficients are scaled once here, so that each element costs a few operations; the
// rows of ignored targets get zero coefficients (so a zero gradient, NaN for NaN logits as in
// PyTorch).
fn write_grad(blk: Block, o: RowOut, pf: vec4<f32>, scale: f32, gv0: u32, v0: u32, stride: u32, vlim: u32) {
    let on = o.keep != vec4<f32>(0.0);
    let up = upstream(blk);
    let gp = select(vec4<f32>(0.0), pf * o.cp * scale * up, on);
    let gt = select(vec4<f32>(0.0), o.ct * scale * up, on);
    let gs = select(vec4<f32>(0.0), o.cs * scale * up, on);
    // One row per block: the target's vec4 and its one-hot term, found once.
    let yv = select(0xffffffffu, u32(blk.y.x) / 4u, blk.y.x >= 0);
    let onehot = select(vec4<f32>(0.0), vec4<f32>(gt.x), vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(u32(blk.y.x) % 4u));
#unroll k K
    if (blk.nrows != 0u && v0 + k * stride < vlim) {
        let v = v0 + k * stride;
        let cd = coords(v, blk.nrows);
        var g = es[k] * spread(gp, cd.r);
        if (TARGETS == 0u) {
            if (ROWS == 1u) {
                g -= select(vec4<f32>(0.0), onehot, v == yv);
            } else {
                let hit = vec4<i32>(cd.c) == spread_i(blk.y, cd.r);
                g -= select(vec4<f32>(0.0), spread(gt, cd.r), hit);
            }
            if (SMOOTH) {
                g -= spread(gs, cd.r) * class_weights(cd.c);
            }
        } else {
            g -= scale * spread(up, cd.r) * class_weights(cd.c) * smoothed(ts[k]);
        }
        if (SOFTCAP) {
            let u = xs[k] / params.softcap;
            g = g * (1.0 - u * u);
        }
        store_grad(gv0, v, g);
    }
#endunroll
}

// The upstream gradient of each row of a block (SIDE bit 2: one value for all, in
// scratch at go_base; bit 3: one a row), 1 without one.
fn upstream(blk: Block) -> vec4<f32> {
    if ((SIDE & 4u) != 0u) {
        return vec4<f32>(scratch.data[params.go_base]);
    }
    var up = vec4<f32>(1.0);
    if ((SIDE & 8u) != 0u) {
        for (var r = 0u; r < ROWS; r++) {
            if (r < blk.nrows) {
                up[r] = scratch.data[params.go_base + blk.row0 + r];
            }
        }
    }
    return up;
}

// Per-row outputs of a finished block: row losses, the side outputs (SIDE bit 0: the
// log-sum-exp, bit 1: row losses beside a reduced loss, into scratch, copied out after the
// pass), invalid targets, and the block's partial.
fn emit_rows(blk: Block, o: RowOut) -> vec2<f32> {
    var part = vec2<f32>(0.0);
    for (var r = 0u; r < ROWS; r++) {
        if (r >= blk.nrows) {
            continue;
        }
        if (want_row_loss()) {
            loss[blk.row0 + r] = o.loss[r];
        }
        if ((SIDE & 1u) != 0u) {
            scratch.data[params.lse_base + blk.row0 + r] = o.lse[r];
        }
        if ((SIDE & 2u) != 0u) {
            scratch.data[params.rows_base + blk.row0 + r] = o.loss[r];
        }
        if (WANT_ARGMAX) {
            // The column's bits, copied out as a u32; rows whose argmax is their class target
            // counted with an integer atomic (status[3]).
            scratch.data[params.argmax_base + blk.row0 + r] = bitcast<f32>(o.argmax[r]);
            if (TARGETS == 0u && o.keep[r] != 0.0 && blk.y[r] == i32(o.argmax[r])) {
                atomicAdd(&scratch.status[3], 1u);
            }
        }
        if (TARGETS == 0u && o.keep[r] != 0.0 && (blk.y[r] < 0 || blk.y[r] >= i32(params.classes))) {
            report_invalid(blk.row0 + r);
        }
        part += vec2<f32>(o.loss[r], o.weight[r]) * o.keep[r];
    }
    return part;
}

// The first of invocation j's K vec4s within a run of SPAN invocations, and the stride to its
// next: lane groups of LANES stream LANES * K consecutive vec4s each; a span narrower than a
// lane group interleaves its invocations.
fn first_vec(j: u32, span: u32) -> vec2<u32> {
    if (span >= LANES) {
        return vec2<u32>(lane_first(j), LANES);
    }
    return vec2<u32>(j, span);
}

@compute @workgroup_size(WG)
fn fused(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    if (wg * (WG / SEG) >= params.blocks) {
        return;
    }
    let j = inv.lid % SEG;
    let blk = block_of(wg * (WG / SEG) + inv.lid / SEG);
    let bv = block_vecs();
    let gv0 = block_start(blk.row0);
    let at = first_vec(j, SEG);

    var own = no_stats();
    load_and_scan(blk, &own, gv0, at.x, at.y, bv);
    own_stats(blk, &own, at.x, at.y, bv);
    let st = seg_merge(own, inv.lid, sg_size_of(inv));
    var o = finish_rows(blk, st);
    // p = exp(x' - own max) * exp(own max - row max) / s.
    var pf = exp(own.m - st.m) * o.inv_s;
    if (SHARD == 2u) {
        // p over the whole vocabulary: exp(x' - own max) * exp(own max - its log-sum-exp).
        o = shard_rows(blk);
        pf = exp(own.m - o.lse);
    }

    var part = vec2<f32>(0.0);
    if (j == 0u) {
        if (SHARD == 1u) {
            emit_shard_stats(blk, st);
        } else if (SHARD == 0u) {
            part = emit_rows(blk, o);
        }
    }
    // The gradient goes out before the workgroup's barrier when its scale is known, so that
    // nothing but the partial is live across it.
    if (WANT_GRAD && params.scale_mode != SCALE_OWN) {
        write_grad(blk, o, pf, grad_scale(), gv0, at.x, at.y, bv);
    }
    if (want_partial() && !single()) {
        // One partial per group of PG invocations.
        store_group_partial(params.partial_base, wg, inv.lid, PG, group_sum(part, SEG, PG, inv.lid));
    }
    if (single()) {
        let total = wg_sum_segments(part, inv.lid);
        if (inv.lid == 0u) {
            if (params.final_mode != FINAL_NONE) {
                loss[0] = final_value(total);
            }
            sh_scale = 1.0 / total.y;
        }
    }
    if (WANT_GRAD && single() && params.scale_mode == SCALE_OWN) {
        // A weighted mean's denominator is this workgroup's whole weight sum.
        workgroupBarrier();
        write_grad(blk, o, pf, sh_scale, gv0, at.x, at.y, bv);
    }
}

// Statistics of one chunk: index of its (row, chunk) record in scratch, 8 floats each.
// `index` is the block's index within this dispatch.
fn stats_index(index: u32, chunk: u32, r: u32) -> u32 {
    let block = params.block_base + index;
    return params.stats_base + ((block * params.chunks + chunk) * ROWS + r) * 8u;
}

// The (block, chunk) record of this invocation's segment in a chunked dispatch of `per_block`
// chunks a block, with SEG * K vec4s a chunk: block, chunk, and the first vec4 and stride.
struct Chunk {
    b_index: u32,
    chunk: u32,
    v0: u32,
    stride: u32,
}

fn chunk_of(wg: u32, lid: u32, per_block: u32) -> Chunk {
    let rec = wg * (WG / SEG) + lid / SEG;
    let at = first_vec(lid % SEG, SEG);
    let chunk = rec % per_block;
    return Chunk(rec / per_block, chunk, chunk * SEG * K + at.x, at.y);
}

// A chunk's statistics record of row r of the block (`index` within the dispatch), 8 floats.
fn read_record(index: u32, chunk: u32, rec: ptr<function, Stats>, r: u32) {
    let i = stats_index(index, chunk, r);
    (*rec).m[r] = scratch.data[i];
    (*rec).s[r] = scratch.data[i + 1u];
    (*rec).a[r] = scratch.data[i + 2u];
    (*rec).b[r] = scratch.data[i + 3u];
    (*rec).ws[r] = scratch.data[i + 4u];
    (*rec).i[r] = bitcast<u32>(scratch.data[i + 5u]);
}

fn write_record(index: u32, chunk: u32, st: Stats, r: u32) {
    let i = stats_index(index, chunk, r);
    scratch.data[i] = st.m[r];
    scratch.data[i + 1u] = st.s[r];
    scratch.data[i + 2u] = st.a[r];
    scratch.data[i + 3u] = st.b[r];
    scratch.data[i + 4u] = st.ws[r];
    scratch.data[i + 5u] = bitcast<f32>(st.i[r]);
}

// Rows too long for one segment: each segment (SEG invocations; the host picks SEG no wider than
// a subgroup where there are subgroups, so that no barrier is compiled in) summarises one chunk
// of SEG * K vec4s of a block, and its first invocation writes the record.
@compute @workgroup_size(WG)
fn stats(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    if (wg * (WG / SEG) >= params.blocks * params.chunks) {
        return;
    }
    let ch = chunk_of(wg, inv.lid, params.chunks);
    // Segments past the last record have no rows (nrows 0) and take part in the merge only.
    let blk = block_of(ch.b_index);
    let bv = block_vecs();
    let gv0 = block_start(blk.row0);

    var own = no_stats();
    load_and_scan(blk, &own, gv0, ch.v0, ch.stride, bv);
    own_stats(blk, &own, ch.v0, ch.stride, bv);
    let st = seg_merge(own, inv.lid, sg_size_of(inv));
    if (inv.lid % SEG == 0u && blk.nrows != 0u) {
        for (var r = 0u; r < ROWS; r++) {
            write_record(ch.b_index, ch.chunk, st, r);
        }
    }
}

// One segment per block: merges the block's chunk records in chunk order, writes the row losses
// and its partial; with WANT_GRAD its first invocation then writes the merged statistics over
// chunk 0's records (which only it reads) for the gradient pass.
@compute @workgroup_size(WG)
fn finish(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    if (wg * (WG / SEG) >= params.blocks) {
        return;
    }
    let index = wg * (WG / SEG) + inv.lid / SEG;
    let blk = block_of(index);

    // Invocation j of the segment takes records j, j + SEG, ... in order, then the segment merges
    // its invocations in index order.
    var own = no_stats();
    if (blk.nrows != 0u) {
        for (var c = inv.lid % SEG; c < params.chunks; c += SEG) {
            var rec = no_stats();
            for (var r = 0u; r < ROWS; r++) {
                read_record(index, c, &rec, r);
            }
            own = merge(own, rec);
        }
    }
    let st = seg_merge(own, inv.lid, sg_size_of(inv));
    let o = finish_rows(blk, st);

    var part = vec2<f32>(0.0);
    if (inv.lid % SEG == 0u) {
        if (SHARD == 1u) {
            emit_shard_stats(blk, st);
        } else if (SHARD == 0u) {
            part = emit_rows(blk, o);
        }
        if (WANT_GRAD && blk.nrows != 0u) {
            for (var r = 0u; r < ROWS; r++) {
                write_record(index, 0u, st, r);
            }
        }
    }
    if (want_partial()) {
        store_group_partial(params.partial_base, wg, inv.lid, PG, group_sum(part, SEG, PG, inv.lid));
    }
}

// The gradient of rows read in chunks: one segment per (block, chunk) takes the block's merged
// statistics (chunk 0's records after `finish`), reads its chunk again and writes its gradient.
// No barrier and no partials: segments of rows that do not exist leave at once.
@compute @workgroup_size(WG)
fn gradient(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    if (wg * (WG / SEG) >= params.blocks * params.chunks) {
        return;
    }
    let ch = chunk_of(wg, inv.lid, params.chunks);
    let blk = block_of(ch.b_index);
    if (blk.nrows == 0u) {
        return;
    }
    var st = no_stats();
    for (var r = 0u; r < ROWS; r++) {
        read_record(ch.b_index, 0u, &st, r);
    }
    var o = finish_rows(blk, st);
    // p = exp(x' - row max) / s, or over the whole vocabulary with SHARD 2.
    var pf = o.inv_s;
    if (SHARD == 2u) {
        o = shard_rows(blk);
        pf = exp(st.m - o.lse);
    }
    let bv = block_vecs();
    let gv0 = block_start(blk.row0);
    var unused = no_stats();
    load_and_scan(blk, &unused, gv0, ch.v0, ch.stride, bv);
    exps(blk, &unused, st.m, ch.v0, ch.stride, bv, false);
    write_grad(blk, o, pf, grad_scale(), gv0, ch.v0, ch.stride, bv);
}

// Rows longer than a workgroup holds, with the gradient, read from memory once where a cache
// holds a row (Tuning::chunk_wide_rows false: GPUs): one workgroup a block (SEG = WG), sweeping
// it twice in params.chunks chunks of WG * K vec4s, each invocation holding K vec4s of a chunk
// at a time. The first sweep folds each chunk's statistics into the invocation's own, in chunk
// order; the segment merges them; the second sweep reads each chunk again and writes its
// gradient, while the first sweep's reads of the row are recent. Loops run params.chunks times,
// a bound set by the row's length, never by the number of rows.
@compute @workgroup_size(WG)
fn sweep(inv: Invocation) {
    let wg = wg_index(inv, params.wg_x);
    if (wg >= params.blocks) {
        return;
    }
    let blk = block_of(wg);
    let bv = block_vecs();
    let gv0 = block_start(blk.row0);
    let at = first_vec(inv.lid, SEG);

    var own = no_stats();
    for (var c = 0u; c < params.chunks; c++) {
        let v0 = c * SEG * K + at.x;
        var part = no_stats();
        load_and_scan(blk, &part, gv0, v0, at.y, bv);
        own_stats(blk, &part, v0, at.y, bv);
        own = merge(own, part);
    }
    let st = seg_merge(own, inv.lid, sg_size_of(inv));
    var o = finish_rows(blk, st);
    // p = exp(x' - row max) / s, or over the whole vocabulary with SHARD 2.
    var pf = o.inv_s;
    if (SHARD == 2u) {
        o = shard_rows(blk);
        pf = exp(st.m - o.lse);
    }

    var out = vec2<f32>(0.0);
    if (inv.lid == 0u) {
        if (SHARD == 1u) {
            emit_shard_stats(blk, st);
        } else if (SHARD == 0u) {
            out = emit_rows(blk, o);
        }
    }
    // (A weighted mean's denominator comes from its own pass: this path is never SINGLE.)
    if (WANT_GRAD) {
        let scale = grad_scale();
        for (var c = 0u; c < params.chunks; c++) {
            let v0 = c * SEG * K + at.x;
            var unused = no_stats();
            load_and_scan(blk, &unused, gv0, v0, at.y, bv);
            exps(blk, &unused, st.m, v0, at.y, bv, false);
            write_grad(blk, o, pf, scale, gv0, v0, at.y, bv);
        }
    }
    if (want_partial()) {
        store_group_partial(params.partial_base, wg, inv.lid, PG, group_sum(out, SEG, PG, inv.lid));
    }
}
