// 16-bit floats as bits, converted exactly (widening) and rounded to nearest even (narrowing) by
// integer arithmetic, so that every adapter writes the same bits: WGSL leaves the rounding
// direction of f32 -> f16 conversions (and pack2x16float's result for values beyond f16's range)
// to the implementation, and drivers may flush subnormals in float conversions.
// A 16-bit value lives in the low half of a u32; two of them pack into one u32, the element
// with the lower index in the low half (the memory order of little-endian storage).

// The f32 of IEEE binary16 bits h.
fn f16_widen(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // Zero or subnormal: m * 2^-24, exact (and normal) in f32.
        return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// The binary16 bits nearest v (ties to even); beyond 65520 in magnitude, infinity; NaN stays NaN.
// Branchless: each case computed, then selected.
fn f16_bits(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    // Normal: round at bit 13 (ties to even), then rebias the exponent (127 - 15 = 112):
    // a + 0xfff + odd - (112 << 23), as one constant modulo 2^32.
    let normal = (a + 0xc8000fffu + ((a >> 13u) & 1u)) >> 13u;
    // Subnormal (below 2^-14): adding 0.5, whose ulp is 2^-24 (f16's subnormal step), rounds
    // to nearest even in the adder; the bits past 0.5's are the f16 significand.
    let sub = bitcast<u32>(bitcast<f32>(a) + 0.5) - 0x3f000000u;
    var h = select(normal, sub, a < 0x38800000u);
    h = select(h, 0x7c00u, a >= 0x477ff000u);
    h = select(h, 0x7e00u, a > 0x7f800000u);
    return sign | h;
}

// The f32 of bfloat16 bits h (exact: bfloat16 is f32's upper half).
fn bf16_widen(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

// The bfloat16 bits nearest v (ties to even; overflow rounds to infinity); NaN stays NaN.
fn bf16_bits(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16u) | 0x40u;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

fn f16x2_widen(w: u32) -> vec2<f32> {
    return vec2<f32>(f16_widen(w & 0xffffu), f16_widen(w >> 16u));
}

fn f16x2_bits(v: vec2<f32>) -> u32 {
    return f16_bits(v.x) | (f16_bits(v.y) << 16u);
}

fn bf16x2_widen(w: u32) -> vec2<f32> {
    return vec2<f32>(bf16_widen(w & 0xffffu), bf16_widen(w >> 16u));
}

fn bf16x2_bits(v: vec2<f32>) -> u32 {
    return bf16_bits(v.x) | (bf16_bits(v.y) << 16u);
}
