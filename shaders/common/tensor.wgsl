// One tensor of the caller's, in its dtype, with accessors that work in f32: spliced in by
// `#tensor NAME BINDING ACCESS [scalar]` once per tensor, `$name` replaced by NAME (see
// src/engine/wgsl.rs). The dtype comes from the host (`DTYPE_NAME`: 0 f32, 1 f16, 2 bf16):
//   DT_F32   array<f32> / array<vec4<f32>>
//   DT_F16N  f16 through WGSL's f16 (NATIVE_F16: the device has SHADER_F16)
//   DT_HALF  f16 or bf16 ($h) as packed u32 pairs
// Vector form (TV4: the kernel's VEC4 variant, unless the tensor is declared `scalar`):
// `$name_get4(v)` and `$name_set4(v, val)` read and write elements 4v .. 4v + 3. Scalar form:
// `$name_get(e)` and `$name_set(e, val)` element e. Setters exist only for read_write tensors
// (TW). Writes round to nearest even in the dtype: packed, by half.wgsl's integer arithmetic;
// through WGSL's f16, by the adapter's conversion (IEEE round to nearest even on the adapters
// tested, where the tests hold both paths to the same bits; WGSL itself leaves the direction,
// and values beyond f16's range, to the implementation). A packed scalar write rewrites
// its half of a shared u32: two invocations never write the two halves of one word (the
// kernels give each invocation whole aligned groups of 4 elements in half precision).
#ifdef DT_F32
#ifdef TV4
@group(0) @binding($binding) var<storage, $access> $name: array<vec4<f32>>;

fn $name_get4(v: u32) -> vec4<f32> {
    return $name[v];
}
#ifdef TW

fn $name_set4(v: u32, val: vec4<f32>) {
    $name[v] = val;
}
#endif
#else
@group(0) @binding($binding) var<storage, $access> $name: array<f32>;

fn $name_get(e: u32) -> f32 {
    return $name[e];
}
#ifdef TW

fn $name_set(e: u32, val: f32) {
    $name[e] = val;
}
#endif
#endif
#endif
#ifdef DT_F16N
#enable f16
#ifdef TV4
@group(0) @binding($binding) var<storage, $access> $name: array<vec4<f16>>;

fn $name_get4(v: u32) -> vec4<f32> {
    return vec4<f32>($name[v]);
}
#ifdef TW

fn $name_set4(v: u32, val: vec4<f32>) {
    $name[v] = vec4<f16>(val);
}
#endif
#else
@group(0) @binding($binding) var<storage, $access> $name: array<f16>;

fn $name_get(e: u32) -> f32 {
    return f32($name[e]);
}
#ifdef TW

fn $name_set(e: u32, val: f32) {
    $name[e] = f16(val);
}
#endif
#endif
#endif
#ifdef DT_HALF
#import half
#ifdef TV4
@group(0) @binding($binding) var<storage, $access> $name: array<vec2<u32>>;

fn $name_get4(v: u32) -> vec4<f32> {
    let w = $name[v];
    return vec4<f32>($hx2_widen(w.x), $hx2_widen(w.y));
}
#ifdef TW

fn $name_set4(v: u32, val: vec4<f32>) {
    $name[v] = vec2<u32>($hx2_bits(val.xy), $hx2_bits(val.zw));
}
#endif
#else
@group(0) @binding($binding) var<storage, $access> $name: array<u32>;

fn $name_get(e: u32) -> f32 {
    return $h_widen(($name[e / 2u] >> (16u * (e & 1u))) & 0xffffu);
}
#ifdef TW

fn $name_set(e: u32, val: f32) {
    let i = e / 2u;
    let s = 16u * (e & 1u);
    $name[i] = ($name[i] & ~(0xffffu << s)) | ($h_bits(val) << s);
}
#endif
#endif
#endif
