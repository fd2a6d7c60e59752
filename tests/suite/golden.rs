//! Fixed inputs give the bits they gave before: one seeded case of every family (pointwise,
//! cross-entropy with options and side outputs, probability targets, f16, NLL, the classic form,
//! fused linear + cross-entropy, custom, a weighted sum, image losses, the update step), each
//! output's f32 bits hashed and held to `tests/fixtures/golden.json`, recorded per adapter.
//!
//! The bits depend on the driver (its `exp` and `log`) and the tuning, so the fixture keys them
//! by backend and adapter name; an adapter with no entry is reported on stderr and only checked
//! for determinism (two runs, the same bits). To record the current bits for this adapter:
//! `WGPU_LOSS_GOLDEN_RECORD=1 cargo test --release --test suite golden::` (the variable is read by this
//! test alone, never by the library).

use std::collections::BTreeMap;

use crate::common::*;
use wgpu_loss::{
    ClassicCrossEntropyDesc, Context, CrossEntropyDesc, CustomLossDesc, DType, ImageDesc, Inputs,
    LinearCrossEntropyDesc, MixDesc, NllDesc, Outputs, PointwiseDesc, Reduction,
    cross_entropy::Targets,
    f16,
    image::ImageLoss,
    optim::{Optim, Optimizer},
    pointwise::Pointwise,
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden.json");

/// FNV-1a over the bits of every value, with each output's length first.
#[derive(Default)]
struct Hash(u64);

impl Hash {
    fn new() -> Self {
        Hash(0xcbf2_9ce4_8422_2325)
    }
    fn word(&mut self, w: u32) {
        for b in w.to_le_bytes() {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn f32s(&mut self, v: Option<&[f32]>) {
        match v {
            None => self.word(u32::MAX),
            Some(v) => {
                self.word(v.len() as u32);
                v.iter().for_each(|x| self.word(x.to_bits()));
            }
        }
    }
    fn value(&mut self, v: Option<f32>) {
        self.f32s(v.as_ref().map(std::slice::from_ref));
    }
}

fn loss_hash(out: &wgpu_loss::LossOutput) -> u64 {
    let mut h = Hash::new();
    h.value(out.value);
    h.f32s(out.per_element.as_deref());
    h.f32s(out.grad.as_deref());
    h.f32s(out.lse.as_deref());
    h.f32s(out.row_losses.as_deref());
    let argmax: Option<Vec<f32>> = out
        .argmax
        .as_ref()
        .map(|a| a.iter().map(|&i| f32::from_bits(i)).collect());
    h.f32s(argmax.as_deref());
    h.value(out.correct.map(f32::from_bits));
    h.f32s(out.shard_stats.as_deref());
    h.f32s(out.grad_linear.as_deref());
    h.f32s(out.grad_bias.as_deref());
    h.0
}

/// Every case's hash on `ctx`, by name.
fn run_all(ctx: &Context) -> BTreeMap<String, String> {
    let mut rng = Rng::new(4242);
    let mut out = BTreeMap::new();
    let mut put = |name: &str, h: u64| {
        out.insert(name.to_string(), format!("{h:016x}"));
    };

    let n = 10_003;
    let (x, y) = (rng.vec(n, -3.0, 3.0), rng.vec(n, -3.0, 3.0));
    let mse = PointwiseDesc::new(Pointwise::Mse, n);
    put(
        "pointwise mse mean",
        loss_hash(&ctx.loss(&mse, &Inputs::new(&x[..], &y[..])).unwrap()),
    );
    let huber = PointwiseDesc::new(Pointwise::Huber { delta: 0.7 }, n).reduction(Reduction::None);
    put(
        "pointwise huber none",
        loss_hash(&ctx.loss(&huber, &Inputs::new(&x[..], &y[..])).unwrap()),
    );
    let probs: Vec<f32> = x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    let labels: Vec<f32> = y.iter().map(|v| (*v > 0.0) as u32 as f32).collect();
    let bce = PointwiseDesc::new(Pointwise::Bce, n).reduction(Reduction::Sum);
    put(
        "pointwise bce sum",
        loss_hash(
            &ctx.loss(&bce, &Inputs::new(&probs[..], &labels[..]))
                .unwrap(),
        ),
    );

    let (rows, classes) = (37, 1003);
    let logits = rng.vec(rows * classes, -8.0, 8.0);
    let targets = rng.classes(rows, classes);
    let ce = CrossEntropyDesc::new(rows, classes)
        .label_smoothing(0.1)
        .z_loss(1e-4)
        .lse(true)
        .row_losses(true)
        .argmax(true);
    put(
        "cross-entropy classes options",
        loss_hash(
            &ctx.loss(&ce, &Inputs::classes(&logits[..], &targets))
                .unwrap(),
        ),
    );
    let (rows, classes) = (19, 77);
    let logits = rng.vec(rows * classes, -5.0, 5.0);
    let dist = rng.distributions(rows, classes);
    let soft = CrossEntropyDesc::new(rows, classes)
        .targets(Targets::Probabilities)
        .reduction(Reduction::None);
    put(
        "cross-entropy probabilities none",
        loss_hash(
            &ctx.loss(&soft, &Inputs::new(&logits[..], &dist[..]))
                .unwrap(),
        ),
    );
    let (rows, classes) = (13, 130);
    let half: Vec<f16> = rng
        .vec(rows * classes, -6.0, 6.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let targets = rng.classes(rows, classes);
    let ce16 = CrossEntropyDesc::new(rows, classes).dtype(DType::F16);
    put(
        "cross-entropy f16",
        loss_hash(
            &ctx.loss(&ce16, &Inputs::classes(&half[..], &targets))
                .unwrap(),
        ),
    );

    let (rows, classes) = (50, 11);
    let logp: Vec<f32> = rng.vec(rows * classes, -6.0, 0.0);
    let targets = rng.classes(rows, classes);
    let weight = rng.vec(classes, 0.2, 2.0);
    let nll = NllDesc::new(rows, classes).weight(classes);
    put(
        "nll weighted",
        loss_hash(
            &ctx.loss(&nll, &Inputs::classes(&logp[..], &targets).weight(&weight))
                .unwrap(),
        ),
    );
    let (rows, classes) = (9, 33);
    let p = rng.distributions(rows, classes);
    let t = rng.distributions(rows, classes);
    let classic = ClassicCrossEntropyDesc::new(rows, classes);
    put(
        "classic cross-entropy",
        loss_hash(&ctx.loss(&classic, &Inputs::new(&p[..], &t[..])).unwrap()),
    );

    let (rows, dim, vocab) = (21, 40, 301);
    let hidden = rng.vec(rows * dim, -1.0, 1.0);
    let linear = rng.vec(vocab * dim, -0.5, 0.5);
    let targets = rng.classes(rows, vocab);
    let lce = LinearCrossEntropyDesc::new(rows, dim, vocab);
    put(
        "linear cross-entropy",
        loss_hash(
            &ctx.loss(
                &lce,
                &Inputs::classes(&hidden[..], &targets).linear(&linear[..]),
            )
            .unwrap(),
        ),
    );

    let m = 5_000;
    let (cx, cy) = (rng.vec(m, -2.0, 2.0), rng.vec(m, -2.0, 2.0));
    let custom = CustomLossDesc::new("log(cosh(x - y))", "tanh(x - y)", m);
    put(
        "custom log-cosh",
        loss_hash(&ctx.loss(&custom, &Inputs::new(&cx[..], &cy[..])).unwrap()),
    );

    let inputs = Inputs::new(&x[..], &y[..]);
    let mix = MixDesc::new()
        .term(0.8, PointwiseDesc::new(Pointwise::L1, n))
        .term(0.2, PointwiseDesc::new(Pointwise::Mse, n));
    let mixed = ctx.mix(&mix, &[inputs, inputs]).unwrap();
    let mut h = Hash::new();
    h.value(mixed.value);
    h.f32s(mixed.per_element.as_deref());
    for g in &mixed.grads {
        h.f32s(g.as_deref());
    }
    put("mix l1 + mse", h.0);

    let (b, hh, w, c) = (2, 37, 41, 3);
    let a = rng.vec(b * hh * w * c, 0.0, 1.0);
    let t: Vec<f32> = a
        .iter()
        .map(|v| (v + rng.uniform(-0.1, 0.1)).clamp(0.0, 1.0))
        .collect();
    for loss in [ImageLoss::Ssim, ImageLoss::Photometric, ImageLoss::Psnr] {
        let desc = ImageDesc::new(loss, hh, w, c).batch(b);
        put(
            &format!("image {}", loss.name()),
            loss_hash(&ctx.image_loss(&desc, &a, &t, None).unwrap()),
        );
    }
    let desc = ImageDesc::new(ImageLoss::L1, hh, w, c)
        .batch(b)
        .reduction(Reduction::None)
        .outputs(Outputs::LOSS);
    put(
        "image l1 none",
        loss_hash(&ctx.image_loss(&desc, &a, &t, None).unwrap()),
    );

    let k = 1_001;
    let mut params = rng.vec(k, -1.0, 1.0);
    let mut optim = Optim::new(ctx, Optimizer::adam(0.05), k).unwrap();
    for _ in 0..3 {
        let grad = rng.vec(k, -1.0, 1.0);
        optim.step(&mut params, &grad).unwrap();
    }
    let mut h = Hash::new();
    h.f32s(Some(&params));
    put("optim adam 3 steps", h.0);
    out
}

#[test]
fn fixed_inputs_give_the_recorded_bits() {
    let ctx = ctx();
    let info = ctx.adapter_info();
    let key = format!("{:?} {}", info.backend, info.name);
    let got = run_all(ctx);
    assert_eq!(got, run_all(ctx), "two runs on {key} differ");
    let text = std::fs::read_to_string(FIXTURE).unwrap_or_else(|_| "{}".into());
    let mut fixture: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&text).expect("golden.json parses");
    if std::env::var_os("WGPU_LOSS_GOLDEN_RECORD").is_some() {
        fixture.insert(key, got);
        let json = serde_json::to_string_pretty(&fixture).unwrap();
        std::fs::write(FIXTURE, json + "\n").unwrap();
        return;
    }
    match fixture.get(&key) {
        Some(expected) => assert_eq!(&got, expected, "bits on {key} changed"),
        None => eprintln!("golden: no bits recorded for {key}; checked for determinism only"),
    }
}
