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
