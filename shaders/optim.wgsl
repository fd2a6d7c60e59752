// The update step: parameters p updated in place from their gradient g, with the optimizer's
// state (SGD's momentum buffer m; Adam's first and second moments m and v) in buffers the
// optimizer owns. One element an invocation at a time, each element independent: the same
// bits on every run. The step's scalars (1 - beta1, Adam's step size and bias correction, ...,
// computed in f64 on the host as PyTorch does in Python floats, then rounded to f32) come in the
// uniforms of each recorded step, and the expressions are PyTorch's, in its order.
//
//   sgd   g' = g + weight_decay p
//         with momentum: m = g' at the first step, else momentum m + (1 - dampening) g';
//                        g' = g' + momentum m (Nesterov) or m
//         p = p - lr g'
//   adam  g' = g + weight_decay p (Adam) or p = p (1 - lr weight_decay) (AdamW, DECOUPLED)
//         m = m + (1 - beta1) (g' - m)          (PyTorch's lerp)
//         v = beta2 v + (1 - beta2) g'^2
//         p = p - step_size (m / (sqrt(v) / bc2_sqrt + eps)),
//         step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t) at step t
//
// CPU twin: src/cpu/optim.rs. Host side: src/families/optim.rs.
// Layout: workgroup w takes elements [w * WG * K, (w + 1) * WG * K) (WG = 256), invocation i
// elements i, i + WG, ... (K of them: common/stream.wgsl's strided order). Bindings: 0 params,
// 1 p, 2 g, 3 m, 4 v.
// Dispatch folded: workgroup w = wid.x + wid.y * params.wg_x.

#import elementwise

override ADAM: bool = false;
override DECOUPLED: bool = false;
override MOMENTUM: bool = false;
override NESTEROV: bool = false;

// The uniform parameters at binding 0, declared once on the host (`params!` in Rust).
#params

@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

// Element i (the entry point, `main`, is common/elementwise.wgsl's).
fn element(i: u32) {
    var x = p[i];
    var d = g[i];
    if (ADAM) {
        if (DECOUPLED) {
            x = x * params.decay;
        } else {
            d = d + params.weight_decay * x;
        }
        let a = m[i] + params.one_minus_beta1 * (d - m[i]);
        let b = params.beta2 * v[i] + params.one_minus_beta2 * (d * d);
        m[i] = a;
        v[i] = b;
        x = x - params.step_size * (a / (sqrt(b) / params.bc2_sqrt + params.eps));
    } else {
        d = d + params.weight_decay * x;
        if (MOMENTUM) {
            var buf = d;
            if (params.first == 0u) {
                buf = params.momentum * m[i] + params.one_minus_dampening * d;
            }
            m[i] = buf;
            if (NESTEROV) {
                d = d + params.momentum * buf;
            } else {
                d = buf;
            }
        }
        x = x - params.lr * d;
    }
    p[i] = x;
}
