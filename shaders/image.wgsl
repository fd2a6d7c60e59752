// Image losses for renderers: L1, MSE and PSNR over pixels and channels, and SSIM (D-SSIM, and the
// photometric loss (1 - lambda) L1 + lambda (1 - SSIM)) with an 11 x 11 Gaussian window, forward
// and gradient with respect to the prediction x, against the target y.
//
// CPU twin: src/cpu/image.rs. Host side: src/families/image.rs.
//
// Images are [N, H, W, C] buffers (f32, f16 or bf16, channels last, C <= 4; f32 math) or 2-D
// textures (N = 1), read with textureLoad
// (PRED_TEX, TARGET_TEX; an sRGB texture arrives linear, and is encoded back to its
// stored values when params.encode asks). An optional mask m (a [N, H, W] buffer, the red channel
// of a texture with MASK_TEX, or the target's alpha) weights each pixel: reduced losses are
// sum(m v) / (C sum(m)), per-element ones m v, and the gradient is that of the weighted loss.
//
// SSIM at pixel p of channel c, with G the normalised 11 x 11 Gaussian (sigma 1.5) and the image
// zero outside its bounds:
//   mx = G*x, my = G*y, sxx = G*(x x) - mx^2, syy = G*(y y) - my^2, sxy = G*(x y) - mx my
//   S = (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sxx + syy + C2))
// at every pixel (padding "same", the 3DGS reference's convention) or only where the window lies
// inside the image (padding "valid": centres 5 <= py < H - 5, 5 <= px < W - 5).
// Its gradient (the loss L = sum_p k m_p S_p):
//   dL/dx_q = k sum_p G(p - q) (A_p + 2 x_q B_p + y_q C_p)  =  k (G*A + 2 x G*B + y G*C)(q)
//   A = m (dS/dmx - 2 mx dS/dsxx - my dS/dsxy), B = m dS/dsxx, C = m dS/dsxy
// (G symmetric), so the forward pass writes the maps A, B, C (full size, zero where no window
// counts) and the backward pass filters them with the same window: the only full-size
// intermediates, 3 floats a pixel and channel. Recomputing them in the backward pass instead
// would need the statistics of a 21-pixel halo per tile, past WebGPU's 16 KiB of workgroup
// memory.
//
// Passes (entry points), each workgroup one tile of 16 x 16 pixels of one image, all channels:
//   forward   per channel: the tile and its 5-pixel halo of x and y (less a shift, the value of
//             one pixel of the tile: the statistics of flat regions without cancellation) into
//             workgroup memory, the window's horizontal sums of (x, y, x x + y y, x y) for the
//             halo's 26 rows and the tile's 16 columns, then the vertical sums at each pixel.
//             Writes per-element losses (reduction none), the maps (with a gradient), and two
//             (value, weight) partials a lane group: the SSIM sum (m S over the counted
//             windows, m once a pixel) and the pixel term (m |x - y| or m (x - y)^2 over the
//             image).
//   finish    one invocation: the reduced totals (reduce.wgsl, a fixed-order tree) become the
//             loss, and the gradient's two scales k_pix and k_ssim (into scratch).
//   backward  the maps filtered as in forward (3 sums), then each pixel's gradient:
//             k_ssim (G*A + 2 x G*B + y G*C) + k_pix m d(pixel term)/dx.
// No invocation's loops grow with the image: at most 4 channels x (3 loads + 2 horizontal
// entries x 11 taps + 11 taps). Every sum has a fixed order: the same bits on every run.
// Windows: a batch whose buffers exceed one binding is bound a window of whole images at a time
// (the host's Windowing): each pass runs once a window, its images numbered from 0 in the window,
// x, y and the gradient x_off elements past their binding's start, the mask m_off, the
// per-element losses o_off, its partials numbered from tile0 (the same places as in one
// binding: the same bits). The maps then hold one window's images: a pass of forward writes a
// window's maps (partials and losses off) just before that window's backward.
// Bindings: 0 params, 1 x, 2 y, 3 mask, 4 dst (the loss, or the gradient buffer in backward),
// 5 scratch, 6-8 maps A, B, C, 9 the gradient texture (GRAD_TEX).

#import scratch
#import segment

#params

// x and y buffers in their dtype (DTYPE_x, DTYPE_y: f32, f16 or bf16; common/tensor.wgsl), read
// in f32.
#ifdef PRED_TEX
@group(0) @binding(1) var x_tex: texture_2d<f32>;
#else
#tensor x 1 read scalar
#endif
#ifdef TARGET_TEX
@group(0) @binding(2) var y_tex: texture_2d<f32>;
#else
#tensor y 2 read scalar
#endif
// dst: f32 (the per-element losses, the reduced loss, an f32 gradient), or, in the backward pass
// of a 16-bit gradient (DTYPE_grad: 1 f16, 2 bf16), words of two 16-bit elements. Neighbouring
// pixels' channels share words (C = 3), and so do neighbouring tiles: each element's half is
// cleared and set with integer atomics on disjoint bits (the same bits in any order; the other
// half, and a pad half past the end, are left as they are).
#ifdef DTYPE_grad
#import half
#const DTYPE_grad
@group(0) @binding(4) var<storage, read_write> dst: array<atomic<u32>>;

fn dst_set(i: u32, v: f32) {
    atomicStore(&dst[i], bitcast<u32>(v));
}

fn grad_set(e: u32, g: f32) {
    let h = select(bf16_bits(g), f16_bits(g), DTYPE_grad == 1u);
    let shift = (e & 1u) * 16u;
    atomicAnd(&dst[e / 2u], ~(0xffffu << shift));
    atomicOr(&dst[e / 2u], h << shift);
}
#else
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

fn dst_set(i: u32, v: f32) {
    dst[i] = v;
}

fn grad_set(e: u32, g: f32) {
    dst[e] = g;
}
#endif
@group(0) @binding(5) var<storage, read_write> scratch: Scratch;
@group(0) @binding(6) var<storage, read_write> map_a: array<f32>;
@group(0) @binding(7) var<storage, read_write> map_b: array<f32>;
@group(0) @binding(8) var<storage, read_write> map_c: array<f32>;
#ifdef GRAD_TEX
@group(0) @binding(9) var grad_tex: texture_storage_2d<
#expr GRAD_FORMAT
, write>;
#endif

// Invocations a partial sum covers (the host's `partial_group`).
override PG: u32 = 128u;

const TX: u32 = 16u;
const TY: u32 = 16u;
const R: u32 = 5u;
const HX: u32 = 26u;
const HY: u32 = 26u;
const HALO: u32 = 676u;
const HROWS: u32 = 416u;
// forward: the halo of (x, y) and the horizontal sums of (x, y, x x + y y, x y): SSIM needs only
// the sum of the variances (5.3 + 6.5 KiB, with the reduction's 4 KiB: 15.8 KiB); backward: the
// halos of A, B and C and their horizontal sums (14.4 KiB). WebGPU's default is 16 KiB.
// Barriers are what a CPU driver pays most for here (lavapipe: half the time): tiles of 16 x 16
// and three a channel (two for the first).
var<workgroup> halo_xy: array<vec2<f32>, HALO>;
var<workgroup> sums4: array<vec4<f32>, HROWS>;
var<workgroup> halo_ab: array<vec2<f32>, HALO>;
var<workgroup> halo_c: array<f32, HALO>;
var<workgroup> sums_abc: array<vec4<f32>, HROWS>;
#const TAPS

// The sRGB transfer function, encoding a linear value back to the 8-bit value it was stored as.
fn srgb_encode(v: f32) -> f32 {
    let e = select(1.055 * pow(max(v, 0.0), 1.0 / 2.4) - 0.055, 12.92 * v, v <= 0.0031308);
    return round(clamp(e, 0.0, 1.0) * 255.0) / 255.0;
}

fn inside(py: i32, px: i32) -> bool {
    return py >= 0 && px >= 0 && py < i32(params.h) && px < i32(params.w);
}

// An element's index in a window's images (n: the image in the window), as the maps hold them.
fn elem(n: u32, py: u32, px: u32, c: u32) -> u32 {
    return ((n * params.h + py) * params.w + px) * params.c + c;
}

// Its index in the bound range of x, y and the gradient: the window's first image is x_off
// elements past the binding's start.
fn xelem(n: u32, py: u32, px: u32, c: u32) -> u32 {
    return params.x_off + elem(n, py, px, c);
}

// x (`of_y` false) or y at a pixel and channel, zero outside the image.
fn load(of_y: bool, n: u32, py: i32, px: i32, c: u32) -> f32 {
    if (!inside(py, px)) {
        return 0.0;
    }
    let e = xelem(n, u32(py), u32(px), c);
    if (of_y) {
#ifdef TARGET_TEX
        return stored(textureLoad(y_tex, vec2<i32>(px, py), 0)[c], 2u);
#else
        return y_get(e);
#endif
    }
#ifdef PRED_TEX
    return stored(textureLoad(x_tex, vec2<i32>(px, py), 0)[c], 1u);
#else
    return x_get(e);
#endif
}

// A texel of x or y: an sRGB texture's arrive linear, and are encoded back to the stored value
// where params.encode's `bit` for the texture (1 x, 2 y) asks.
fn stored(v: f32, bit: u32) -> f32 {
    return select(v, srgb_encode(v), (params.encode & bit) != 0u);
}

fn load_x(n: u32, py: i32, px: i32, c: u32) -> f32 {
    return load(false, n, py, px, c);
}

fn load_y(n: u32, py: i32, px: i32, c: u32) -> f32 {
    return load(true, n, py, px, c);
}

// The mask (binding 3), beside its only reader.
#ifdef MASK_TEX
@group(0) @binding(3) var m_tex: texture_2d<f32>;
#else
@group(0) @binding(3) var<storage, read> m_buf: array<f32>;
#endif

// The pixel's weight (params.mask_mode): none, the mask (buffer or texture), or the target's
// alpha.
fn load_m(n: u32, py: u32, px: u32) -> f32 {
    switch params.mask_mode {
        case MASK_MASK: {
#ifdef MASK_TEX
            return textureLoad(m_tex, vec2<u32>(px, py), 0).r;
#else
            return m_buf[params.m_off + (n * params.h + py) * params.w + px];
#endif
        }
        case MASK_TARGET_ALPHA: {
#ifdef TARGET_TEX
            return textureLoad(y_tex, vec2<u32>(px, py), 0).a;
#else
            return 1.0;
#endif
        }
        default: {
            return 1.0;
        }
    }
}

// The window's 1-D taps (the host's `gaussian_wgsl`: the twin's values in f32).
#expr GAUSS

fn gauss(k: u32) -> f32 {
    var g = G;
    return g[k];
}

// Whether pixel (py, px) is the centre of a window that counts.
fn counted(py: u32, px: u32) -> bool {
    if (params.valid == 0u) {
        return true;
    }
    return py >= R && px >= R && py + R < params.h && px + R < params.w;
}

// This invocation's place in its workgroup's tile: the image n, the tile's corner (y0, x0), the
// invocation's pixel (py, px), whether it lies in the image (`live`), its row and column in the
// tile (ly, lx), and the pixel's weight m (0 outside the image).
struct Tile {
    n: u32,
    y0: u32,
    x0: u32,
    py: u32,
    px: u32,
    live: bool,
    ly: u32,
    lx: u32,
    m: f32,
}

fn tile_of(inv: Invocation) -> Tile {
    let w = wg_index(inv, params.wg_x);
    let per_image = params.tiles_x * params.tiles_y;
    let t = w % per_image;
    var s: Tile;
    s.n = w / per_image;
    s.y0 = (t / params.tiles_x) * TY;
    s.x0 = (t % params.tiles_x) * TX;
    s.py = s.y0 + inv.lid / TX;
    s.px = s.x0 + inv.lid % TX;
    s.live = s.py < params.h && s.px < params.w;
    s.ly = inv.lid / TX;
    s.lx = inv.lid % TX;
    s.m = 0.0;
    if (s.live) {
        s.m = load_m(s.n, s.py, s.px);
    }
    return s;
}

// The pixel term's value and derivative at d = x - y: params.pix PIX_ABS |d|, PIX_SQUARE d^2.
fn pix_value(d: f32) -> f32 {
    return select(d * d, abs(d), params.pix == PIX_ABS);
}

fn pix_grad(d: f32) -> f32 {
    return select(2.0 * d, sign(d), params.pix == PIX_ABS);
}

@compute @workgroup_size(WG)
fn forward(inv: Invocation) {
    if (wg_index(inv, params.wg_x) >= params.tiles) {
        return;
    }
    let s = tile_of(inv);
    let lid = inv.lid;
    let m = s.m;
    let is_counted = s.live && counted(s.py, s.px);
    var ssim_acc = 0.0;
    var pix_acc = 0.0;
    for (var c = 0u; c < params.c; c++) {
        var value = 0.0;
        var d = 0.0;
        if (s.live) {
            d = load_x(s.n, i32(s.py), i32(s.px), c) - load_y(s.n, i32(s.py), i32(s.px), c);
            if (params.pix != 0u) {
                pix_acc += m * pix_value(d);
            }
        }
        if (params.ssim != 0u) {
            // The tile and its halo, zero outside the image, less a shift per tile (a pixel
            // of it): variances are shift-invariant, and E[(x - s)^2] - (G*(x - s))^2 loses far
            // less to cancellation in flat regions than E[x^2] - mx^2. The window's taps sum to
            // 1 with the zero border shifted too, so the means are G*(x - s) + s exactly.
            let cy = i32(min(s.y0 + TY / 2u, params.h - 1u));
            let cx = i32(min(s.x0 + TX / 2u, params.w - 1u));
            let shift_x = load_x(s.n, cy, cx, c);
            let shift_y = load_y(s.n, cy, cx, c);
            // The previous channel's horizontal sums have read the halo.
            if (c > 0u) {
                workgroupBarrier();
            }
            for (var i = lid; i < HALO; i += WG) {
                let hy = i32(s.y0) - i32(R) + i32(i / HX);
                let hx = i32(s.x0) - i32(R) + i32(i % HX);
                halo_xy[i] = vec2<f32>(load_x(s.n, hy, hx, c) - shift_x,
                    load_y(s.n, hy, hx, c) - shift_y);
            }
            // Also: channel c - 1's vertical sums have read sums4.
            workgroupBarrier();
            // The window's horizontal sums for each halo row and tile column (taps unrolled:
            // constant indices keep everything in registers).
            for (var i = lid; i < HROWS; i += WG) {
                let base = (i / TX) * HX + i % TX;
                var h4 = vec4<f32>(0.0);
#unroll k TAPS
                let p = halo_xy[base + k];
                h4 += gauss(k) * vec4<f32>(p.x, p.y, p.x * p.x + p.y * p.y, p.x * p.y);
#endunroll
                sums4[i] = h4;
            }
            workgroupBarrier();
            if (is_counted) {
                var v4 = vec4<f32>(0.0);
#unroll k TAPS
                v4 += gauss(k) * sums4[(s.ly + k) * TX + s.lx];
#endunroll
                let mx = v4.x + shift_x;
                let my = v4.y + shift_y;
                // sxx + syy and sxy, from the shifted values.
                let sxx_syy = v4.z - v4.x * v4.x - v4.y * v4.y;
                let sxy = v4.w - v4.x * v4.y;
                let n1 = 2.0 * mx * my + params.c1;
                let n2 = 2.0 * sxy + params.c2;
                let d1 = mx * mx + my * my + params.c1;
                let d2 = sxx_syy + params.c2;
                let ssim = (n1 * n2) / (d1 * d2);
                ssim_acc += m * ssim;
                value = ssim;
                if (params.grad != 0u) {
                    let ds_dmx = 2.0 * my * n2 / (d1 * d2) - 2.0 * mx * ssim / d1;
                    let ds_dsxx = -ssim / d2;
                    let ds_dsxy = 2.0 * n1 / (d1 * d2);
                    let e = elem(s.n, s.py, s.px, c);
                    map_a[e] = m * (ds_dmx - 2.0 * mx * ds_dsxx - my * ds_dsxy);
                    map_b[e] = m * ds_dsxx;
                    map_c[e] = m * ds_dsxy;
                }
            } else if (s.live && params.grad != 0u) {
                let e = elem(s.n, s.py, s.px, c);
                map_a[e] = 0.0;
                map_b[e] = 0.0;
                map_c[e] = 0.0;
            }
        }
        // Per-element losses (reduction none): params.out_kind S, 1 - S, the pixel term, or the
        // photometric element; over the counted windows' centres.
        if (params.out_kind != ELEMENT_NONE && is_counted) {
            var e = 0.0;
            switch params.out_kind {
                case ELEMENT_SSIM: { e = value; }
                case ELEMENT_DSSIM: { e = 1.0 - value; }
                case ELEMENT_PIXEL: { e = pix_value(d); }
                case ELEMENT_PHOTOMETRIC, default: { e = (1.0 - params.lambda) * abs(d) + params.lambda * (1.0 - value); }
            }
            let oy = s.py - params.valid * R;
            let ox = s.px - params.valid * R;
            dst_set(params.o_off + ((s.n * params.out_h + oy) * params.out_w + ox) * params.c + c, m * e);
        }
    }
    if (params.partials != 0u) {
        // One partial of each sum a group of PG invocations (a lane group: no barrier where
        // subgroups span it), both sums in one tree.
        let counted_m = select(0.0, m, is_counted);
        let t = tree_reduce(vec4<f32>(ssim_acc, counted_m, pix_acc, m), false, lid, 1u, PG);
        // Numbered over the whole batch: the window's first tile is tile0.
        let w = params.tile0 + wg_index(inv, params.wg_x);
        store_group_partial(params.ssim_base, w, lid, PG, t.xy);
        store_group_partial(params.pix_base, w, lid, PG, t.zw);
    }
}

// The loss from the reduced totals, and the gradient's scales. params.loss: IMAGE_L1 ...
// IMAGE_PHOTOMETRIC (the host's `ImageCode`); params.mean 1 for the mean, 0 for the sum (and for none, whose
// totals are not reduced: its gradient is the sum's).
@compute @workgroup_size(WG)
fn finish(inv: Invocation) {
    if (inv.lid != 0u || wg_index(inv, params.wg_x) != 0u) {
        return;
    }
    let c = f32(params.c);
    var ts = vec2<f32>(0.0);
    var tp = vec2<f32>(0.0);
    if (params.partials != 0u) {
        ts = load_partial(params.ssim_total, 0u);
        tp = load_partial(params.pix_total, 0u);
    }
    let lam = params.lambda;
    var pix_mean = tp.x / (c * tp.y);
    var ssim_mean = ts.x / (c * ts.y);
    var k_pix = 1.0 / (c * tp.y);
    var k_ssim = 1.0 / (c * ts.y);
    if (params.mean == 0u) {
        pix_mean = tp.x;
        // sum over the counted elements of m (1 - S) = C sum(m) - sum(m S)
        ssim_mean = ts.x;
        k_pix = 1.0;
        k_ssim = 1.0;
    }
    let one = select(c * ts.y, 1.0, params.mean != 0u);
    var loss = 0.0;
    switch params.loss {
        case IMAGE_L1, IMAGE_MSE: {
            loss = pix_mean;
        }
        case IMAGE_PSNR: {
            loss = 10.0 * log2(params.range2 / pix_mean) * 0.30102999566398120;
            // d/dx 10 log10(L^2 / mse) = -10 / (ln 10 mse) dmse/dx
            k_pix = -4.3429448190325183 / pix_mean * k_pix;
        }
        case IMAGE_SSIM: {
            loss = ssim_mean;
        }
        case IMAGE_DSSIM: {
            loss = one - ssim_mean;
            k_ssim = -k_ssim;
        }
        case IMAGE_PHOTOMETRIC, default: {
            loss = (1.0 - lam) * pix_mean + lam * (one - ssim_mean);
            k_pix = (1.0 - lam) * k_pix;
            k_ssim = -lam * k_ssim;
        }
    }
    if (params.write_loss != 0u) {
        dst_set(0u, loss);
    }
    scratch.data[params.k_base] = k_pix;
    scratch.data[params.k_base + 1u] = k_ssim;
}

@compute @workgroup_size(WG)
fn backward(inv: Invocation) {
    if (wg_index(inv, params.wg_x) >= params.tiles) {
        return;
    }
    let s = tile_of(inv);
    let k_pix = scratch.data[params.k_base];
    let k_ssim = scratch.data[params.k_base + 1u];
    var g = vec4<f32>(0.0);
    for (var c = 0u; c < params.c; c++) {
        var x = 0.0;
        var y = 0.0;
        if (s.live) {
            x = load_x(s.n, i32(s.py), i32(s.px), c);
            y = load_y(s.n, i32(s.py), i32(s.px), c);
        }
        var gc = 0.0;
        if (params.pix != 0u) {
            gc = k_pix * s.m * pix_grad(x - y);
        }
        if (params.ssim != 0u) {
            // The previous channel's horizontal sums have read the halos.
            if (c > 0u) {
                workgroupBarrier();
            }
            for (var i = inv.lid; i < HALO; i += WG) {
                let hy = i32(s.y0) - i32(R) + i32(i / HX);
                let hx = i32(s.x0) - i32(R) + i32(i % HX);
                var abc = vec3<f32>(0.0);
                if (inside(hy, hx)) {
                    let e = elem(s.n, u32(hy), u32(hx), c);
                    abc = vec3<f32>(map_a[e], map_b[e], map_c[e]);
                }
                halo_ab[i] = abc.xy;
                halo_c[i] = abc.z;
            }
            workgroupBarrier();
            for (var i = inv.lid; i < HROWS; i += WG) {
                let base = (i / TX) * HX + i % TX;
                var h = vec4<f32>(0.0);
#unroll k TAPS
                let at = base + k;
                h += gauss(k) * vec4<f32>(halo_ab[at], halo_c[at], 0.0);
#endunroll
                sums_abc[i] = h;
            }
            workgroupBarrier();
            var v = vec4<f32>(0.0);
#unroll k TAPS
            v += gauss(k) * sums_abc[(s.ly + k) * TX + s.lx];
#endunroll
            gc += k_ssim * (v.x + 2.0 * x * v.y + y * v.z);
        }
        g[c] = gc;
#ifndef GRAD_TEX
        if (s.live) {
            grad_set(xelem(s.n, s.py, s.px, c), gc);
        }
#endif
    }
#ifdef GRAD_TEX
    if (s.live) {
        textureStore(grad_tex, vec2<u32>(s.px, s.py), g);
    }
#endif
}
