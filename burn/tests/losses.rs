//! Every loss of the crate against Burn's own (its `nn::loss` modules, or compositions of Burn
//! tensor operations where Burn has no module), forward and autodiff gradients, on random data
//! of shapes that are not multiples of any tile, on one device of `wgpu_loss_burn::init`.
//!
//! Tolerances: both sides compute in f32 on the same device; Burn takes log_softmax and
//! gathers, wgpu-loss reduces in a fixed-order tree with its own `exp`/`log` order, so values
//! agree to a few f32 ulps of the row's magnitude: 1e-5 relative for losses, 1e-6 absolute for
//! gradient entries (which are at most 1/N in magnitude for a mean).

use std::sync::OnceLock;

use burn::nn::loss::{
    CrossEntropyLossConfig, HuberLossConfig, MseLoss, Reduction as BurnReduction,
};
use burn::tensor::activation::log_softmax;
use burn::tensor::wgpu::WgpuBackend;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use wgpu_loss_burn::pointwise::Pointwise;
use wgpu_loss_burn::{
    CrossEntropy, Error, Reduction, cross_entropy, cross_entropy_with_lse, pointwise,
    pointwise_unreduced,
};

/// One autodiff device for every test (Burn opens a device id once). Burn ignores
/// `WGPU_BACKEND`; the tests honour it (`gl`, `vulkan`), so that CI runs them on each backend.
fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let options = Device::wgpu_options();
            let options = match std::env::var("WGPU_BACKEND").as_deref() {
                Ok("gl") => options.graphics_api(WgpuBackend::Gl),
                Ok("vulkan") => options.graphics_api(WgpuBackend::Vulkan),
                _ => options,
            };
            let device = wgpu_loss_burn::device::init_with(options).expect("a wgpu adapter");
            let ctx = wgpu_loss_burn::context(&device).expect("registered");
            eprintln!("adapter: {:?}", ctx.adapter_info());
            device.autodiff()
        })
        .clone()
}

/// A small deterministic generator (the same data on every run).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn targets(n: usize, c: usize, seed: u64, dev: &Device) -> (Vec<i32>, Tensor<1, Int>) {
    let mut rng = Rng(seed);
    let t: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
    let tensor = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n]), dev);
    (t, tensor)
}

fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        let tol = abs + rel * w.abs();
        assert!(
            d <= tol || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: {g} vs Burn's {w} (|d| = {d:e} > {tol:e})"
        );
        if d > worst.0 {
            worst = (d, i);
        }
    }
    eprintln!("{what}: worst |d| {:e} at {}", worst.0, worst.1);
}

/// Loss and gradient of `f` at `x` (a fresh leaf each call).
fn with_grad<const D: usize>(
    x: &Tensor<D>,
    f: impl FnOnce(Tensor<D>) -> Tensor<1>,
) -> (Vec<f32>, Vec<f32>) {
    let leaf = x.clone().detach().require_grad();
    let loss = f(leaf.clone());
    let grads = loss.backward();
    let g = leaf.grad(&grads).expect("the input takes part in the loss");
    (vec(loss), vec(g))
}

#[test]
fn cross_entropy_matches_burns_module() {
    let dev = device();
    let (n, c) = (37, 1003);
    let x = Tensor::<2>::random([n, c], Distribution::Uniform(-8.0, 8.0), &dev);
    let (_, t) = targets(n, c, 1, &dev);
    let (ours, ours_g) = with_grad(&x, |x| {
        cross_entropy(x, t.clone(), &CrossEntropy::new()).unwrap()
    });
    let burn = CrossEntropyLossConfig::new().init(&dev);
    let (theirs, theirs_g) = with_grad(&x, |x| burn.forward(x, t.clone()));
    close("ce mean", &ours, &theirs, 1e-5, 0.0);
    close("ce mean grad", &ours_g, &theirs_g, 0.0, 1e-6);
}

#[test]
fn class_weights_and_ignored_rows_match_burns_module() {
    let dev = device();
    let (n, c) = (29, 77);
    let x = Tensor::<2>::random([n, c], Distribution::Uniform(-5.0, 5.0), &dev);
    let (mut tv, _) = targets(n, c, 2, &dev);
    // Burn's pad tokens are PyTorch's ignore_index: three rows of class 3.
    for i in [0, 7, 28] {
        tv[i] = 3;
    }
    let t = Tensor::<1, Int>::from_data(TensorData::new(tv, [n]), &dev);
    let mut rng = Rng(3);
    let w: Vec<f32> = (0..c)
        .map(|_| 0.5 + rng.below(1000) as f32 / 1000.0)
        .collect();
    let opts = CrossEntropy::new().weight(w.clone()).ignore_index(3);
    let (ours, ours_g) = with_grad(&x, |x| cross_entropy(x, t.clone(), &opts).unwrap());
    let burn = CrossEntropyLossConfig::new()
        .with_weights(Some(w))
        .with_pad_tokens(Some(vec![3]))
        .init(&dev);
    let (theirs, theirs_g) = with_grad(&x, |x| burn.forward(x, t.clone()));
    close("ce weighted", &ours, &theirs, 1e-5, 0.0);
    close("ce weighted grad", &ours_g, &theirs_g, 0.0, 1e-6);
}

#[test]
fn label_smoothing_matches_burns_module() {
    let dev = device();
    let (n, c) = (41, 130);
    let x = Tensor::<2>::random([n, c], Distribution::Uniform(-6.0, 6.0), &dev);
    let (_, t) = targets(n, c, 4, &dev);
    let opts = CrossEntropy::new().label_smoothing(0.1);
    let (ours, ours_g) = with_grad(&x, |x| cross_entropy(x, t.clone(), &opts).unwrap());
    let burn = CrossEntropyLossConfig::new()
        .with_smoothing(Some(0.1))
        .init(&dev);
    let (theirs, theirs_g) = with_grad(&x, |x| burn.forward(x, t.clone()));
    close("ce smoothed", &ours, &theirs, 1e-5, 0.0);
    close("ce smoothed grad", &ours_g, &theirs_g, 0.0, 1e-6);
}

/// Burn's composition: softcap, log-softmax, the target's term, the z-loss, reduced.
fn composed(
    x: Tensor<2>,
    t: &Tensor<1, Int>,
    cap: Option<f32>,
    z: f32,
    reduction: Reduction,
) -> Tensor<1> {
    let [n, _] = x.dims();
    let x = match cap {
        Some(cap) => (x / cap).tanh() * cap,
        None => x,
    };
    let lse = x.clone().exp().sum_dim(1).log(); // [n, 1]; the inputs here are within exp's range
    let picked = log_softmax(x, 1).gather(1, t.clone().reshape([n, 1]));
    let rows = (lse.clone().powf_scalar(2.0) * z - picked).reshape([n]);
    match reduction {
        Reduction::Mean => rows.mean(),
        Reduction::Sum => rows.sum(),
        _ => rows,
    }
}

#[test]
fn every_reduction_with_z_loss_and_softcap_matches_a_composition() {
    let dev = device();
    let (n, c) = (23, 301);
    let x = Tensor::<2>::random([n, c], Distribution::Uniform(-10.0, 10.0), &dev);
    let (_, t) = targets(n, c, 5, &dev);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for (cap, z) in [(None, 1e-4), (Some(7.5), 0.0), (Some(30.0), 1e-3)] {
            let mut opts = CrossEntropy::new().reduction(reduction).z_loss(z);
            if let Some(cap) = cap {
                opts = opts.softcap(cap);
            }
            // Unreduced losses go back as a sum with random weights (a non-uniform upstream).
            let up = Tensor::<1>::random([n], Distribution::Uniform(0.5, 1.5), &dev);
            let reduce = |l: Tensor<1>| match reduction {
                Reduction::None => (l * up.clone()).sum(),
                _ => l,
            };
            let what = format!("ce {reduction:?} cap {cap:?} z {z}");
            let (ours, ours_g) =
                with_grad(&x, |x| reduce(cross_entropy(x, t.clone(), &opts).unwrap()));
            let (theirs, theirs_g) = with_grad(&x, |x| reduce(composed(x, &t, cap, z, reduction)));
            close(&what, &ours, &theirs, 1e-5, 0.0);
            close(&format!("{what} grad"), &ours_g, &theirs_g, 1e-5, 1e-6);
        }
    }
}

#[test]
fn the_log_sum_exp_is_the_rows() {
    let dev = device().inner();
    let (n, c) = (19, 1000);
    let x = Tensor::<2>::random([n, c], Distribution::Uniform(-4.0, 4.0), &dev);
    let (_, t) = targets(n, c, 6, &dev);
    let (_, lse) = cross_entropy_with_lse(x.clone(), t, &CrossEntropy::new()).unwrap();
    let want = x.exp().sum_dim(1).log().reshape([n]);
    close("lse", &vec(lse), &vec(want), 1e-6, 0.0);
}

#[test]
fn views_of_larger_allocations_are_read_at_their_offset() {
    let dev = device();
    let (n, c) = (50, 257);
    let big = Tensor::<2>::random([n, c + 40], Distribution::Uniform(-3.0, 3.0), &dev);
    // Rows 11..44 of columns 40..: not contiguous, and at an offset once made so.
    let x = big.clone().slice([11..44, 40..c + 40]);
    let (_, t) = targets(33, c, 7, &dev);
    let (ours, ours_g) = with_grad(&x, |x| {
        cross_entropy(x, t.clone(), &CrossEntropy::new()).unwrap()
    });
    let burn = CrossEntropyLossConfig::new().init(&dev);
    let (theirs, theirs_g) = with_grad(&x, |x| burn.forward(x, t.clone()));
    close("ce of a view", &ours, &theirs, 1e-5, 0.0);
    close("ce of a view grad", &ours_g, &theirs_g, 0.0, 1e-6);
    // A row slice keeps its parent's buffer at an offset.
    let rows = big.slice([20..37, 0..c + 40]);
    let (_, t) = targets(17, c + 40, 8, &dev);
    let (ours, _) = with_grad(&rows, |x| {
        cross_entropy(x, t.clone(), &CrossEntropy::new()).unwrap()
    });
    let (theirs, _) = with_grad(&rows, |x| burn.forward(x, t.clone()));
    close("ce of rows at an offset", &ours, &theirs, 1e-5, 0.0);
}

#[test]
fn mse_and_huber_match_burns_modules() {
    let dev = device();
    let dims = [3, 17, 1001];
    let a = Tensor::<3>::random(dims, Distribution::Uniform(-3.0, 3.0), &dev);
    let b = Tensor::<3>::random(dims, Distribution::Uniform(-3.0, 3.0), &dev);
    for (ours_r, burn_r) in [
        (Reduction::Mean, BurnReduction::Mean),
        (Reduction::Sum, BurnReduction::Sum),
    ] {
        let (ours, ours_g) = with_grad(&a, |x| {
            pointwise(Pointwise::Mse, x, b.clone(), ours_r).unwrap()
        });
        let (theirs, theirs_g) =
            with_grad(&a, |x| MseLoss::new().forward(x, b.clone(), burn_r.clone()));
        close(&format!("mse {ours_r:?}"), &ours, &theirs, 1e-5, 0.0);
        close(
            &format!("mse {ours_r:?} grad"),
            &ours_g,
            &theirs_g,
            1e-5,
            1e-7,
        );
        let huber = HuberLossConfig::new(0.7).init();
        let (ours, ours_g) = with_grad(&a, |x| {
            pointwise(Pointwise::Huber { delta: 0.7 }, x, b.clone(), ours_r).unwrap()
        });
        let (theirs, theirs_g) = with_grad(&a, |x| huber.forward(x, b.clone(), burn_r.clone()));
        close(&format!("huber {ours_r:?}"), &ours, &theirs, 1e-5, 0.0);
        close(
            &format!("huber {ours_r:?} grad"),
            &ours_g,
            &theirs_g,
            1e-5,
            1e-7,
        );
    }
    // One loss an element, sent back with a non-uniform upstream gradient.
    let up = Tensor::<3>::random(dims, Distribution::Uniform(0.5, 1.5), &dev);
    let (ours, ours_g) = with_grad(&a, |x| {
        (pointwise_unreduced(Pointwise::Mse, x, b.clone()).unwrap() * up.clone()).sum()
    });
    let (theirs, theirs_g) = with_grad(&a, |x| {
        (MseLoss::new().forward_no_reduction(x, b.clone()) * up.clone()).sum()
    });
    close("mse none", &ours, &theirs, 1e-5, 0.0);
    close("mse none grad", &ours_g, &theirs_g, 1e-5, 1e-6);
    // A weighted sum of losses is Burn arithmetic on them: 0.7 MSE + 0.3 L1.
    let (ours, ours_g) = with_grad(&a, |x| {
        pointwise(Pointwise::Mse, x.clone(), b.clone(), Reduction::Mean).unwrap() * 0.7
            + pointwise(Pointwise::L1, x, b.clone(), Reduction::Mean).unwrap() * 0.3
    });
    let (theirs, theirs_g) = with_grad(&a, |x| {
        let d = x - b.clone();
        d.clone().powf_scalar(2.0).mean() * 0.7 + d.abs().mean() * 0.3
    });
    close("0.7 mse + 0.3 l1", &ours, &theirs, 1e-5, 0.0);
    close("0.7 mse + 0.3 l1 grad", &ours_g, &theirs_g, 1e-5, 1e-8);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = device();
    let x = Tensor::<2>::random([4, 5], Distribution::Default, &dev);
    let (_, t) = targets(3, 5, 9, &dev);
    let e = cross_entropy(x.clone(), t, &CrossEntropy::new()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Shape {
                what: "targets",
                ..
            }
        ),
        "{e}"
    );
    let (_, t) = targets(4, 5, 9, &dev);
    let e = cross_entropy(
        x.clone(),
        t.clone(),
        &CrossEntropy::new().label_smoothing(2.0),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Loss(_)), "{e}");
    let e = cross_entropy(
        x.clone(),
        t.clone(),
        &CrossEntropy::new().weight(vec![1.0; 4]),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Shape { what: "weight", .. }), "{e}");
    let y = Tensor::<2>::random([4, 6], Distribution::Default, &dev);
    let e = pointwise(Pointwise::Mse, x.clone(), y, Reduction::Mean).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "target", .. }), "{e}");
    let e = pointwise(Pointwise::Mse, x.clone(), x, Reduction::None).unwrap_err();
    assert!(matches!(e, Error::Loss(_)), "{e}");
}

mod training {
    use super::*;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::activation::relu;

    #[derive(Module, Debug)]
    struct Mlp {
        a: Linear,
        b: Linear,
    }

    impl Mlp {
        fn forward(&self, x: Tensor<2>) -> Tensor<2> {
            self.b.forward(relu(self.a.forward(x)))
        }
    }

    /// Five SGD steps of the same small MLP on the same batch, once with Burn's cross-entropy
    /// and once with ours: the same losses at every step, within what f32 gradients that agree
    /// to 1e-6 let the weights drift apart by in five steps.
    #[test]
    fn a_few_training_steps_give_burns_losses() {
        let dev = device();
        let (n, d, h, c) = (61, 20, 33, 10);
        let x = Tensor::<2>::random([n, d], Distribution::Uniform(-1.0, 1.0), &dev);
        let (_, t) = targets(n, c, 10, &dev);
        let init = Mlp {
            a: LinearConfig::new(d, h).init(&dev),
            b: LinearConfig::new(h, c).init(&dev),
        };
        let burn_loss = CrossEntropyLossConfig::new().init(&dev);
        let mut runs = Vec::new();
        for ours in [false, true] {
            let mut model = init.clone();
            let mut optim = SgdConfig::new().init();
            let mut losses = Vec::new();
            for _ in 0..5 {
                let logits = model.forward(x.clone());
                let loss = if ours {
                    cross_entropy(logits, t.clone(), &CrossEntropy::new()).unwrap()
                } else {
                    burn_loss.forward(logits, t.clone())
                };
                losses.push(vec(loss.clone())[0]);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(0.5, model, grads);
            }
            runs.push(losses);
        }
        eprintln!("Burn's losses {:?}\nours          {:?}", runs[0], runs[1]);
        assert!(runs[0][4] < runs[0][0], "the model learns");
        close("training losses", &runs[1], &runs[0], 1e-4, 0.0);
    }
}

mod fused_linear {
    use super::*;
    use wgpu_loss_burn::{LinearCrossEntropy, linear_cross_entropy};

    /// Gradients of the hidden states, the weight and the bias of `f`.
    fn three_grads(
        h: &Tensor<2>,
        w: &Tensor<2>,
        b: &Tensor<1>,
        f: impl FnOnce(Tensor<2>, Tensor<2>, Tensor<1>) -> Tensor<1>,
    ) -> [Vec<f32>; 4] {
        let (h, w, b) = (
            h.clone().detach().require_grad(),
            w.clone().detach().require_grad(),
            b.clone().detach().require_grad(),
        );
        let loss = f(h.clone(), w.clone(), b.clone());
        let grads = loss.backward();
        [
            vec(loss),
            vec(h.grad(&grads).unwrap()),
            vec(w.grad(&grads).unwrap()),
            vec(b.grad(&grads).unwrap()),
        ]
    }

    /// Against Burn's `matmul` + bias + `CrossEntropyLoss` (with smoothing, and summed with a
    /// z-loss and softcap against a composition), the three gradients included.
    #[test]
    fn the_fused_loss_matches_burns_matmul_and_cross_entropy() {
        let dev = device();
        let (n, d, v) = (45, 67, 1003);
        let h = Tensor::<2>::random([n, d], Distribution::Uniform(-1.0, 1.0), &dev);
        let w = Tensor::<2>::random([v, d], Distribution::Uniform(-0.3, 0.3), &dev);
        let b = Tensor::<1>::random([v], Distribution::Uniform(-0.5, 0.5), &dev);
        let (_, t) = targets(n, v, 11, &dev);
        let logits =
            |h: Tensor<2>, w: Tensor<2>, b: Tensor<1>| h.matmul(w.transpose()) + b.reshape([1, v]);
        let opts = LinearCrossEntropy::new().label_smoothing(0.1);
        let ours = three_grads(&h, &w, &b, |h, w, b| {
            linear_cross_entropy(h, w, Some(b), t.clone(), &opts).unwrap()
        });
        let burn = CrossEntropyLossConfig::new()
            .with_smoothing(Some(0.1))
            .init(&dev);
        let theirs = three_grads(&h, &w, &b, |h, w, b| {
            burn.forward(logits(h, w, b), t.clone())
        });
        for (i, what) in ["loss", "grad hidden", "grad weight", "grad bias"]
            .iter()
            .enumerate()
        {
            close(&format!("fused {what}"), &ours[i], &theirs[i], 1e-4, 1e-6);
        }
        let opts = LinearCrossEntropy::new()
            .reduction(Reduction::Sum)
            .z_loss(1e-3)
            .softcap(5.0);
        let ours = three_grads(&h, &w, &b, |h, w, b| {
            linear_cross_entropy(h, w, Some(b), t.clone(), &opts).unwrap()
        });
        let theirs = three_grads(&h, &w, &b, |h, w, b| {
            composed(logits(h, w, b), &t, Some(5.0), 1e-3, Reduction::Sum)
        });
        for (i, what) in ["loss", "grad hidden", "grad weight", "grad bias"]
            .iter()
            .enumerate()
        {
            close(
                &format!("fused sum {what}"),
                &ours[i],
                &theirs[i],
                1e-4,
                1e-5,
            );
        }
    }

    /// 16-bit hidden states, weight and bias (f16 and bf16, where the device stores them): the
    /// f32 loss of their values, read as they are (no f32 copy), and their gradients in their
    /// dtype, within a rounding to it (2^-11 relative for f16, 2^-8 for bf16) of the f32 loss's
    /// gradients of the same values.
    #[test]
    fn half_hidden_states_and_weight_give_the_f32_loss_of_their_values() {
        use burn::tensor::{DType, FloatDType};
        let dev = device();
        for (dtype, fdtype, half) in [
            (DType::F16, FloatDType::F16, 1.0 / 2048.0),
            (DType::BF16, FloatDType::BF16, 1.0 / 256.0),
        ] {
            if !dev.supports_dtype(dtype) {
                eprintln!("{dtype:?}: the device stores no such tensors; nothing to check");
                continue;
            }
            let (n, d, v) = (45, 67, 1003);
            let rounded = |t: Tensor<2>| t.cast(fdtype).cast(FloatDType::F32);
            let h = rounded(Tensor::random(
                [n, d],
                Distribution::Uniform(-1.0, 1.0),
                &dev,
            ));
            let w = rounded(Tensor::random(
                [v, d],
                Distribution::Uniform(-0.3, 0.3),
                &dev,
            ));
            let b = rounded(Tensor::random(
                [1, v],
                Distribution::Uniform(-0.5, 0.5),
                &dev,
            ))
            .reshape([v]);
            let (_, t) = targets(n, v, 12, &dev);
            let opts = LinearCrossEntropy::new().label_smoothing(0.1).z_loss(1e-3);
            let f = |h, w, b| linear_cross_entropy(h, w, Some(b), t.clone(), &opts).unwrap();
            let want = three_grads(&h, &w, &b, f);
            let (h16, w16, b16) = (
                h.cast(fdtype).require_grad(),
                w.cast(fdtype).require_grad(),
                b.cast(fdtype).require_grad(),
            );
            let loss = f(h16.clone(), w16.clone(), b16.clone());
            let grads = loss.backward();
            let (gh, gw) = (h16.grad(&grads).unwrap(), w16.grad(&grads).unwrap());
            let gb = b16.grad(&grads).unwrap();
            assert_eq!(
                [gh.dtype(), gw.dtype(), gb.dtype()],
                [dtype; 3],
                "the gradients in their tensors' dtype"
            );
            close(
                &format!("fused {dtype:?} loss"),
                &vec(loss),
                &want[0],
                1e-5,
                0.0,
            );
            for (what, got, want) in [("hidden", gh, &want[1]), ("weight", gw, &want[2])] {
                close(
                    &format!("fused {dtype:?} grad {what}"),
                    &vec(got),
                    want,
                    half,
                    1e-6,
                );
            }
            close(
                &format!("fused {dtype:?} grad bias"),
                &vec(gb),
                &want[3],
                half,
                1e-6,
            );
        }
    }

    /// The fused loss and its gradients allocate nothing of the logits' size: Burn's pools
    /// grow by less than half the `[N, V]` logits would take.
    #[test]
    fn no_logits_are_allocated() {
        let dev = device();
        let (n, d, v) = (512, 64, 32000);
        let h = Tensor::<2>::random([n, d], Distribution::Uniform(-1.0, 1.0), &dev).require_grad();
        let w = Tensor::<2>::random([v, d], Distribution::Uniform(-0.1, 0.1), &dev).require_grad();
        let (_, t) = targets(n, v, 12, &dev);
        dev.sync().unwrap();
        let before = dev.memory_pool_usage().unwrap().bytes_in_use;
        let loss = linear_cross_entropy(h.clone(), w.clone(), None, t, &LinearCrossEntropy::new())
            .unwrap();
        let grads = loss.backward();
        let (gh, gw) = (h.grad(&grads).unwrap(), w.grad(&grads).unwrap());
        dev.sync().unwrap();
        let after = dev.memory_pool_usage().unwrap().bytes_in_use;
        let logits = (4 * n * v) as u64;
        let grown = after.saturating_sub(before);
        eprintln!("pools grew by {grown} bytes; the logits would take {logits}");
        assert!(grown < logits / 2, "grew by {grown} bytes, logits {logits}");
        assert!(vec(gh).iter().chain(&vec(gw)).all(|g| g.is_finite()));
    }
}

mod soft_and_half {
    use super::*;
    use burn::tensor::{DType, FloatDType};
    use wgpu_loss_burn::cross_entropy_probs;

    /// Probability targets against `-sum(p * log_softmax(x))`, mean and per row, with the
    /// logits' gradient.
    #[test]
    fn probability_targets_match_a_composition() {
        let dev = device();
        let (n, c) = (31, 211);
        let x = Tensor::<2>::random([n, c], Distribution::Uniform(-6.0, 6.0), &dev);
        let raw = Tensor::<2>::random([n, c], Distribution::Uniform(0.0, 1.0), &dev);
        let p = raw.clone() / raw.sum_dim(1);
        let up = Tensor::<1>::random([n], Distribution::Uniform(0.5, 1.5), &dev);
        for reduction in [Reduction::Mean, Reduction::None] {
            let reduce = |rows: Tensor<1>| match reduction {
                Reduction::None => (rows * up.clone()).sum(),
                _ => rows.mean(),
            };
            let opts = CrossEntropy::new().reduction(reduction);
            let (ours, ours_g) = with_grad(&x, |x| {
                let (loss, _) = cross_entropy_probs(x, p.clone(), &opts).unwrap();
                match reduction {
                    Reduction::None => (loss * up.clone()).sum(),
                    _ => loss,
                }
            });
            let (theirs, theirs_g) = with_grad(&x, |x| {
                reduce(
                    (log_softmax(x, 1) * p.clone())
                        .sum_dim(1)
                        .reshape([n])
                        .neg(),
                )
            });
            close(&format!("soft {reduction:?}"), &ours, &theirs, 1e-5, 0.0);
            close(
                &format!("soft {reduction:?} grad"),
                &ours_g,
                &theirs_g,
                1e-5,
                1e-6,
            );
        }
    }

    /// f16 logits (where the device stores f16): the loss of the f16 values computed in f32,
    /// as Burn's f32 loss of the same values; the gradient in f16, within half an f16 ulp of
    /// Burn's f32 gradient (2^-11 relative) beyond f16's subnormals.
    #[test]
    fn f16_logits_give_the_f32_loss_of_their_values() {
        let dev = device();
        if !dev.supports_dtype(DType::F16) {
            eprintln!("f16: the device stores no f16 tensors; nothing to check here");
            return;
        }
        let (n, c) = (37, 1003);
        let x32 = Tensor::<2>::random([n, c], Distribution::Uniform(-8.0, 8.0), &dev)
            .cast(FloatDType::F16)
            .cast(FloatDType::F32);
        let x16 = x32.clone().cast(FloatDType::F16);
        let (_, t) = targets(n, c, 13, &dev);
        let (ours, ours_g) = with_grad(&x16, |x| {
            cross_entropy(x, t.clone(), &CrossEntropy::new()).unwrap()
        });
        let burn = CrossEntropyLossConfig::new().init(&dev);
        let (theirs, theirs_g) = with_grad(&x32, |x| burn.forward(x, t.clone()));
        close("ce f16", &ours, &theirs, 1e-5, 0.0);
        close("ce f16 grad", &ours_g, &theirs_g, 1.0 / 2048.0, 6e-8);
    }
}

mod images {
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use wgpu_loss_burn::Image;
    use wgpu_loss_burn::image::{ImageLoss, image_loss};

    /// SSIM's map written with Burn's `conv2d` (11 x 11 Gaussian, sigma 1.5, zero padding 5,
    /// one group a channel) on `[N, H, W, C]` images, as `[N, C, H, W]`.
    fn ssim_map(x: Tensor<4>, y: Tensor<4>) -> Tensor<4> {
        let [_, _, _, c] = x.dims();
        let dev = x.device();
        let g: Vec<f32> = (0..11)
            .map(|i| (-((i as f32 - 5.0).powi(2)) / 4.5).exp())
            .collect();
        let sum: f32 = g.iter().sum();
        let mut k = Vec::with_capacity(121 * c);
        for _ in 0..c {
            for a in &g {
                for b in &g {
                    k.push(a * b / (sum * sum));
                }
            }
        }
        let weight = Tensor::<4>::from_data(TensorData::new(k, [c, 1, 11, 11]), &dev);
        let opts = ConvOptions {
            stride: [1, 1],
            padding: [(5, 5), (5, 5)],
            dilation: [1, 1],
            groups: c,
        };
        let blur = |t: Tensor<4>| conv2d(t, weight.clone(), None, opts.clone());
        let (x, y) = (x.permute([0, 3, 1, 2]), y.permute([0, 3, 1, 2]));
        let (mx, my) = (blur(x.clone()), blur(y.clone()));
        let sxx = blur(x.clone() * x.clone()) - mx.clone() * mx.clone();
        let syy = blur(y.clone() * y.clone()) - my.clone() * my.clone();
        let sxy = blur(x * y) - mx.clone() * my.clone();
        let (c1, c2) = (1e-4, 9e-4);
        let num = (mx.clone() * my.clone() * 2.0 + c1) * (sxy * 2.0 + c2);
        let den = (mx.clone() * mx + my.clone() * my + c1) * (sxx + syy + c2);
        num / den
    }

    /// SSIM, the photometric loss with a mask, and MSE of a batch against Burn compositions
    /// (SSIM with Burn's `conv2d`), with the prediction's gradient.
    #[test]
    fn image_losses_match_compositions_of_burn_ops() {
        let dev = device();
        let dims = [2, 23, 37, 3];
        let x = Tensor::<4>::random(dims, Distribution::Uniform(0.0, 1.0), &dev);
        let noise = Tensor::<4>::random(dims, Distribution::Uniform(-0.1, 0.1), &dev);
        let y = (x.clone() + noise).clamp(0.0, 1.0);
        let (ours, ours_g) = with_grad(&x, |x| {
            image_loss(x, y.clone(), None, &Image::new(ImageLoss::Ssim)).unwrap()
        });
        let (theirs, theirs_g) = with_grad(&x, |x| ssim_map(x, y.clone()).mean());
        close("ssim", &ours, &theirs, 1e-5, 0.0);
        close("ssim grad", &ours_g, &theirs_g, 1e-4, 1e-8);
        // The photometric loss with a mask: (1 - l) L1 + l (1 - SSIM), each a weighted mean.
        let m = Tensor::<4>::random([2, 23, 37, 1], Distribution::Uniform(0.0, 1.0), &dev);
        let opts = Image::new(ImageLoss::Photometric).lambda(0.2);
        let (ours, ours_g) = with_grad(&x, |x| {
            image_loss(x, y.clone(), Some(m.clone()), &opts).unwrap()
        });
        let (theirs, theirs_g) = with_grad(&x, |x| {
            let total = m.clone().sum() * 3.0;
            let l1 = ((x.clone() - y.clone()).abs() * m.clone()).sum() / total.clone();
            let ssim = (ssim_map(x, y.clone()).permute([0, 2, 3, 1]) * m.clone()).sum() / total;
            l1 * 0.8 + (ssim.neg() + 1.0) * 0.2
        });
        close("photometric masked", &ours, &theirs, 1e-5, 0.0);
        close("photometric masked grad", &ours_g, &theirs_g, 1e-4, 1e-8);
        // [H, W, C] images, MSE summed.
        let first = [0..1, 0..23, 0..37, 0..3];
        let x3 = x.clone().slice(first.clone()).reshape([23, 37, 3]);
        let y3 = y.clone().slice(first).reshape([23, 37, 3]);
        let opts = Image::new(ImageLoss::Mse).reduction(Reduction::Sum);
        let (ours, ours_g) = with_grad(&x3, |x| image_loss(x, y3.clone(), None, &opts).unwrap());
        let (theirs, theirs_g) = with_grad(&x3, |x| (x - y3.clone()).powf_scalar(2.0).sum());
        close("image mse sum", &ours, &theirs, 1e-5, 0.0);
        close("image mse sum grad", &ours_g, &theirs_g, 1e-5, 1e-7);
    }
}

/// A vocabulary split over two Burn devices, each adopted from a wgpu device of its own on one
/// adapter, against the whole vocabulary on one device.
mod shards {
    use super::*;
    use burn::backend::wgpu::WgpuSetup;
    use wgpu_loss_burn::cross_entropy_sharded;

    /// Two Burn devices of one adapter (the backend `WGPU_BACKEND` names), each made of a wgpu
    /// device of the test's own: the adopting side of the device sharing.
    fn two_devices() -> [Device; 2] {
        static DEVICES: OnceLock<[Device; 2]> = OnceLock::new();
        DEVICES
            .get_or_init(|| {
                let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
                let instance = wgpu::Instance::new(desc);
                let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
                    .expect("a wgpu adapter");
                let make = || {
                    let desc = wgpu_loss_burn::device::device_descriptor(&adapter);
                    let (device, queue) =
                        pollster::block_on(adapter.request_device(&desc)).expect("a wgpu device");
                    let setup = WgpuSetup {
                        instance: instance.clone(),
                        adapter: adapter.clone(),
                        device,
                        queue,
                        backend: adapter.get_info().backend,
                    };
                    wgpu_loss_burn::adopt(setup)
                        .expect("Burn adopts the device")
                        .autodiff()
                };
                [make(), make()]
            })
            .clone()
    }

    /// The loss, log-sum-exp and gradients of `[n, v]` logits cut at `cuts` over the devices
    /// `on` (a shard each), against the unsharded loss on the first device. A per-row loss is
    /// weighted by a random upstream gradient.
    fn check(what: &str, cuts: &[usize], on: &[&Device], options: &CrossEntropy) {
        let (n, v) = (37, 1001);
        let dev = on[0];
        let x = Tensor::<2>::random([n, v], Distribution::Uniform(-8.0, 8.0), dev);
        let (mut tv, _) = targets(n, v, 21, dev);
        tv[5] = 3; // an ignored row where the options ignore class 3
        tv[6] = 999; // a target in the last shard
        let t = Tensor::<1, Int>::from_data(TensorData::new(tv, [n]), dev);
        let up = Tensor::<1>::random([n], Distribution::Uniform(0.5, 1.5), dev);
        let weigh = |loss: Tensor<1>| match loss.dims() {
            [1] => loss,
            _ => {
                let up = up.clone().to_device(&loss.device());
                (loss * up).sum()
            }
        };

        let leaf = x.clone().detach().require_grad();
        let (loss, lse) = cross_entropy_with_lse(leaf.clone(), t.clone(), options).unwrap();
        let want = vec(loss.clone());
        let want_g = vec(leaf.grad(&weigh(loss).backward()).unwrap());

        let bounds: Vec<(usize, usize)> = std::iter::once(0)
            .chain(cuts.iter().copied())
            .zip(cuts.iter().copied().chain(std::iter::once(v)))
            .collect();
        let leaves: Vec<Tensor<2>> = bounds
            .iter()
            .zip(on.iter().cycle())
            .map(|(&(a, b), d)| x.clone().slice([0..n, a..b]).to_device(d).require_grad())
            .collect();
        let (sloss, slse) = cross_entropy_sharded(leaves.clone(), t.clone(), options).unwrap();
        close(
            &format!("{what}: loss"),
            &vec(sloss.clone()),
            &want,
            1e-5,
            1e-6,
        );
        close(&format!("{what}: lse"), &vec(slse), &vec(lse), 1e-6, 1e-5);
        let grads = weigh(sloss).backward();
        let mut got_g = vec![0.0f32; n * v];
        for (leaf, &(a, b)) in leaves.iter().zip(&bounds) {
            let g = vec(leaf
                .grad(&grads)
                .expect("every shard takes part in the loss"));
            for (row, part) in g.chunks(b - a).enumerate() {
                got_g[row * v + a..row * v + b].copy_from_slice(part);
            }
        }
        close(&format!("{what}: grad"), &got_g, &want_g, 0.0, 1e-6);
    }

    #[test]
    fn a_vocabulary_over_two_devices_gives_one_devices_loss() {
        let [a, b] = two_devices();
        let mut rng = Rng(22);
        let w: Vec<f32> = (0..1001)
            .map(|_| 0.5 + rng.below(1000) as f32 / 1000.0)
            .collect();
        let every = CrossEntropy::new()
            .weight(w)
            .ignore_index(3)
            .label_smoothing(0.1)
            .z_loss(1e-3)
            .softcap(20.0);
        // The crate's own suite checks every option and reduction of the shards' kernels;
        // here, what Burn adds: two devices, autodiff across them, views, per-row upstreams.
        check("every option, 2 shards", &[420], &[&a, &b], &every);
        let per_row = every.clone().reduction(Reduction::None);
        check("per row, 3 uneven shards", &[1, 990], &[&b, &a], &per_row);
    }

    #[test]
    fn bad_shards_are_typed_errors() {
        let [a, b] = two_devices();
        let (_, t) = targets(4, 10, 23, &a);
        let e = cross_entropy_sharded(vec![], t.clone(), &CrossEntropy::new()).unwrap_err();
        assert!(matches!(e, Error::Shape { what: "shards", .. }), "{e}");
        let xa = Tensor::<2>::random([4, 6], Distribution::Default, &a);
        let xb = Tensor::<2>::random([5, 4], Distribution::Default, &b);
        let e = cross_entropy_sharded(vec![xa.clone(), xb], t.clone(), &CrossEntropy::new())
            .unwrap_err();
        assert!(matches!(e, Error::Shape { what: "shards", .. }), "{e}");
        let xb = Tensor::<2>::random([4, 4], Distribution::Default, &b);
        let opts = CrossEntropy::new().weight(vec![1.0; 6]);
        let e = cross_entropy_sharded(vec![xa, xb], t, &opts).unwrap_err();
        assert!(matches!(e, Error::Shape { what: "weight", .. }), "{e}");
    }
}
