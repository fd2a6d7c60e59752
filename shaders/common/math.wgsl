// Math helpers that do not trust the driver with subnormal inputs.
//
// Vulkan and GL let drivers flush subnormals or evaluate log() inaccurately for them (llvmpipe's
// log of 1e-40 is neither log(1e-40) nor -inf). Probabilities below the smallest normal f32
// (1.18e-38) are legitimate inputs, so their logs are computed from the bits: a subnormal is
// m * 2^-149 with m its 23-bit mantissa, and m converts to f32 exactly.
//
// CPU twin: f64::ln in src/cpu/pointwise.rs and src/cpu/cross_entropy.rs, which has no such issue.

const LN2: f32 = 0.693147180559945309;

// log(x) for any x; exact in the sense of log(f32(m)) - 149 ln 2 for positive subnormals.
fn log_exact(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    if (bits != 0u && bits < 0x00800000u) {
        return log(f32(bits)) - 149.0 * LN2;
    }
    return log(x);
}

fn log_exact4(x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(log_exact(x.x), log_exact(x.y), log_exact(x.z), log_exact(x.w));
}

// log(x + e) for x, e >= 0 as IEEE arithmetic without flushing gives it: when the sum is below
// 2^-124 both addends are multiples of 2^-149 below 2^24 of them, and so is their sum, exactly:
// the bits add. (A subnormal added to a larger normal e changes the sum by less than x / e.)
fn log_sum_exact(x: f32, e: f32) -> f32 {
    let bx = bitcast<u32>(x);
    let be = bitcast<u32>(e);
    // Both non-negative and below 2^-124 (sign bit clear, exponent field at most 1).
    if (max(bx, be) < 0x01000000u && bx + be < 0x01000000u) {
        return log_exact(bitcast<f32>(bx + be));
    }
    return log_exact(x + e);
}

fn log_sum_exact4(x: vec4<f32>, e: f32) -> vec4<f32> {
    return vec4<f32>(log_sum_exact(x.x, e), log_sum_exact(x.y, e), log_sum_exact(x.z, e),
        log_sum_exact(x.w, e));
}
