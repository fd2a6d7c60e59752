// The five-convolution form of SSIM that `bench` measures the fused kernel (image.wgsl) against:
// what a framework without a fused kernel runs (the 3DGS reference's conv2d calls, brush's
// separable convolutions): every statistic its own pair of 1-D Gaussian passes through memory,
// then elementwise passes. One element ([N, H, W, C], channels last) an invocation.
//
//   forward   blur_h (mode 0..4: x, y, x x, y y, x y) then blur_v, for each of the five
//             statistics (10 dispatches); ssim_map: S from the five maps, one partial sum a
//             workgroup (the mean's first level, kept in the same dispatch: kind to the
//             baseline)
//   backward  ssim_grad (mode 0..2: the maps A, B, C of image.wgsl's header), each filtered by
//             blur_h + blur_v (mode 5: the map itself), then combine: A' + 2 x B' + y C'
//             (4 + 6 dispatches)
//
// CPU twin: none of its own (it computes what src/cpu/image.rs does; bench checks its value
// against the fused kernel's). Host side: bench/src/image.rs.
// Bindings: 0 params, 1-5 inputs m0..m4, 6 out, 7 partials.
// Dispatch folded: workgroup w = wid.x + wid.y * params.wg_x.

#import segment

#params

@group(0) @binding(1) var<storage, read> m0: array<f32>;
@group(0) @binding(2) var<storage, read> m1: array<f32>;
@group(0) @binding(3) var<storage, read> m2: array<f32>;
@group(0) @binding(4) var<storage, read> m3: array<f32>;
@group(0) @binding(5) var<storage, read> m4: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

// The window's 1-D taps (the host's `gaussian_wgsl`: the twin's values in f32).
#expr GAUSS

fn gauss(k: u32) -> f32 {
    var g = G;
    return g[k];
}

// The element, and its pixel (py, px), or false past the end.
struct At {
    e: u32,
    py: i32,
    px: i32,
}

fn at(inv: Invocation) -> At {
    var a: At;
    a.e = wg_index(inv, params.wg_x) * WG + inv.lid;
    let p = a.e / params.c;
    a.px = i32(p % params.w);
    a.py = i32((p / params.w) % params.h);
    return a;
}

// The statistic `mode` of the inputs at element e: x, y, x x, y y, x y, or the map itself.
fn stat(e: u32) -> f32 {
    switch params.mode {
        case 0u, 5u: { return m0[e]; }
        case 1u: { return m1[e]; }
        case 2u: { return m0[e] * m0[e]; }
        case 3u: { return m1[e] * m1[e]; }
        default: { return m0[e] * m1[e]; }
    }
}

@compute @workgroup_size(WG)
fn blur_h(inv: Invocation) {
    let a = at(inv);
    if (a.e >= params.len) {
        return;
    }
    var v = 0.0;
    for (var k = 0u; k < 11u; k++) {
        let x = a.px + i32(k) - 5;
        if (x >= 0 && x < i32(params.w)) {
            v += gauss(k) * stat(u32(i32(a.e) + (x - a.px) * i32(params.c)));
        }
    }
    dst[a.e] = v;
}

@compute @workgroup_size(WG)
fn blur_v(inv: Invocation) {
    let a = at(inv);
    if (a.e >= params.len) {
        return;
    }
    var v = 0.0;
    let row = i32(params.w * params.c);
    for (var k = 0u; k < 11u; k++) {
        let y = a.py + i32(k) - 5;
        if (y >= 0 && y < i32(params.h)) {
            v += gauss(k) * m0[u32(i32(a.e) + (y - a.py) * row)];
        }
    }
    dst[a.e] = v;
}

struct Stats {
    s: f32,
    a: f32,
    b: f32,
    c: f32,
}

fn ssim_at(e: u32) -> Stats {
    let mx = m0[e];
    let my = m1[e];
    let sxx = m2[e] - mx * mx;
    let syy = m3[e] - my * my;
    let sxy = m4[e] - mx * my;
    let n1 = 2.0 * mx * my + params.c1;
    let n2 = 2.0 * sxy + params.c2;
    let d1 = mx * mx + my * my + params.c1;
    let d2 = sxx + syy + params.c2;
    var r: Stats;
    r.s = n1 * n2 / (d1 * d2);
    let ds_dmx = 2.0 * my * n2 / (d1 * d2) - 2.0 * mx * r.s / d1;
    r.b = -r.s / d2;
    r.c = 2.0 * n1 / (d1 * d2);
    r.a = ds_dmx - 2.0 * mx * r.b - my * r.c;
    return r;
}

@compute @workgroup_size(WG)
fn ssim_map(inv: Invocation) {
    let a = at(inv);
    var s = 0.0;
    if (a.e < params.len) {
        s = ssim_at(a.e).s;
    }
    let total = group_sum(vec2<f32>(s, 0.0), 1u, WG, inv.lid);
    if (inv.lid == 0u) {
        partials[wg_index(inv, params.wg_x)] = total.x;
    }
}

@compute @workgroup_size(WG)
fn ssim_grad(inv: Invocation) {
    let a = at(inv);
    if (a.e >= params.len) {
        return;
    }
    let r = ssim_at(a.e);
    let k = 1.0 / f32(params.len);
    switch params.mode {
        case 0u: { dst[a.e] = k * r.a; }
        case 1u: { dst[a.e] = k * r.b; }
        default: { dst[a.e] = k * r.c; }
    }
}

// The gradient from the filtered maps: m0, m1 = x, y; m2, m3, m4 = G*A, G*B, G*C.
@compute @workgroup_size(WG)
fn combine(inv: Invocation) {
    let a = at(inv);
    if (a.e >= params.len) {
        return;
    }
    dst[a.e] = m2[a.e] + 2.0 * m0[a.e] * m3[a.e] + m1[a.e] * m4[a.e];
}
