//! One `Context` shared by many threads, each with several plans of every family (cross-entropy,
//! NLL, pointwise, custom, mix, fused linear + cross-entropy, image losses, the optimizer and
//! training) and different shapes:
//! no panic on any backend (on GL every thread's wgpu work goes through one GL context, which
//! wgpu-hal gives up waiting for after a few seconds: the context's device lock serialises it),
//! and results bitwise equal to a serial run.

use std::sync::Arc;

use crate::common::*;
use wgpu_loss::{
    Context, CrossEntropyDesc, CustomLossDesc, Inputs, LinearCrossEntropyDesc, MixDesc, Outputs,
    Plan, PointwiseDesc, Reduction,
    optim::{Optim, Optimizer},
    pointwise::Pointwise,
    train::{SoftmaxRegression, TrainDesc, blobs},
};

/// One job: a loss on fixed inputs, returning the bits of everything it computed.
type Job = Arc<dyn Fn(&Context) -> Vec<u32> + Send + Sync>;

/// One thread's results: (job, bits) in the order it ran them.
type Runs = Vec<(usize, Vec<u32>)>;

fn bits(out: wgpu_loss::LossOutput) -> Vec<u32> {
    let mut v: Vec<u32> = out.value.into_iter().map(f32::to_bits).collect();
    v.extend(
        out.per_element
            .unwrap_or_default()
            .iter()
            .map(|x| x.to_bits()),
    );
    v.extend(out.grad.unwrap_or_default().iter().map(|x| x.to_bits()));
    v
}

fn jobs() -> Vec<Job> {
    let mut rng = Rng::new(77);
    let mut jobs: Vec<Job> = Vec::new();

    // A long one: on GL a whole submission runs inside the GL context, so the other threads
    // wait for it.
    let (n, c) = (2049, 4001);
    let logits = rng.vec(n * c, -6.0, 6.0);
    let targets = rng.classes(n, c);
    jobs.push(Arc::new(move |ctx: &Context| {
        bits(
            ce_classes(
                ctx,
                &logits,
                &targets,
                c,
                None,
                &Default::default(),
                Outputs::BOTH,
            )
            .unwrap(),
        )
    }));

    // Chunked rows (read twice), with options.
    let (n, c) = (7, 50_003);
    let logits = rng.vec(n * c, -4.0, 4.0);
    let targets = rng.classes(n, c);
    let options = CeOptions {
        label_smoothing: 0.1,
        reduction: Reduction::Sum,
        ..Default::default()
    };
    jobs.push(Arc::new(move |ctx: &Context| {
        bits(ce_classes(ctx, &logits, &targets, c, None, &options, Outputs::BOTH).unwrap())
    }));

    let m = 3_000_017;
    let (pred, target) = (rng.vec(m, -3.0, 3.0), rng.vec(m, -3.0, 3.0));
    jobs.push(Arc::new(move |ctx: &Context| {
        bits(mse(ctx, &pred, &target, Reduction::Mean, Outputs::BOTH).unwrap())
    }));

    let m = 100_003;
    let (pred, target) = (rng.vec(m, 0.01, 0.99), rng.vec(m, 0.0, 1.0));
    jobs.push(Arc::new(move |ctx: &Context| {
        let inputs = PwInputs {
            pred: &pred,
            target: &target,
            ..Default::default()
        };
        bits(
            pointwise_loss(
                ctx,
                Pointwise::Bce,
                &inputs,
                Reduction::None,
                None,
                Outputs::BOTH,
            )
            .unwrap(),
        )
    }));

    let (n, c) = (20_011, 37);
    let log_probs = rng.vec(n * c, -9.0, 0.0);
    let targets = rng.classes(n, c);
    let weight = rng.vec(c, 0.5, 2.0);
    jobs.push(Arc::new(move |ctx: &Context| {
        bits(
            nll_classes(
                ctx,
                &log_probs,
                &targets,
                c,
                Some(&weight),
                &NllOptions::default(),
                Outputs::BOTH,
            )
            .unwrap(),
        )
    }));

    let (n, c) = (301, 1001);
    let probs = rng.distributions(n, c);
    let targets = rng.distributions(n, c);
    jobs.push(Arc::new(move |ctx: &Context| {
        bits(
            ce_probs(
                ctx,
                &probs,
                &targets,
                c,
                1e-7,
                Reduction::Mean,
                Outputs::BOTH,
            )
            .unwrap(),
        )
    }));

    // The recording API with a plan reused across runs and the caller's own buffers, created,
    // read and freed under the device lock (see crate::common::Buf).
    let (n, c) = (513, 999);
    let logits = rng.vec(n * c, -5.0, 5.0);
    let targets: Vec<i32> = rng.classes(n, c).iter().map(|&t| t as i32).collect();
    jobs.push(Arc::new(move |ctx: &Context| {
        let plan = Plan::new(ctx, &CrossEntropyDesc::new(n, c)).unwrap();
        let x = upload(ctx, &logits);
        let y = upload(ctx, &targets);
        let mut out = Vec::new();
        for _ in 0..3 {
            let loss = poisoned(ctx, 1);
            let grad = poisoned(ctx, n * c);
            plan.run_buffers(&buffers(&x, &y, None, None, Some(&loss), Some(&grad)))
                .unwrap();
            out.extend(read(ctx, &loss, 1).iter().map(|v| v.to_bits()));
            out.extend(read(ctx, &grad, n * c).iter().map(|v| v.to_bits()));
        }
        out
    }));

    // The photometric loss and its gradient (SSIM's tiles, the plan's own maps, the finish
    // pass).
    let (h, w, c) = (70, 90, 3);
    let x = rng.vec(h * w * c, 0.0, 1.0);
    let y = rng.vec(h * w * c, 0.0, 1.0);
    jobs.push(Arc::new(move |ctx: &Context| {
        let desc = wgpu_loss::ImageDesc::new(wgpu_loss::image::ImageLoss::Photometric, h, w, c);
        bits(ctx.image_loss(&desc, &x, &y, None).unwrap())
    }));

    // The fused linear + cross-entropy, with a bias: the loss and the three gradients.
    let (n, d, v) = (67, 45, 1003);
    let hidden = rng.vec(n * d, -1.0, 1.0);
    let weight = rng.vec(v * d, -0.5, 0.5);
    let bias = rng.vec(v, -0.5, 0.5);
    let targets = rng.classes(n, v);
    jobs.push(Arc::new(move |ctx: &Context| {
        let desc = LinearCrossEntropyDesc::new(n, d, v).bias(true);
        let inputs = Inputs::classes(&hidden[..], &targets)
            .linear(&weight[..])
            .bias(&bias[..]);
        let out = ctx.loss(&desc, &inputs).unwrap();
        let mut b = bits(out.clone());
        for g in [out.grad_linear, out.grad_bias].into_iter().flatten() {
            b.extend(g.iter().map(|x| x.to_bits()));
        }
        b
    }));

    // A weighted sum of two families over one prediction, and a custom loss.
    let m = 30_011;
    let (pred, target) = (rng.vec(m, -3.0, 3.0), rng.vec(m, -3.0, 3.0));
    jobs.push(Arc::new(move |ctx: &Context| {
        let inputs = Inputs::new(&pred[..], &target[..]);
        let mix = MixDesc::new()
            .term(0.7, PointwiseDesc::new(Pointwise::L1, m))
            .term(
                0.3,
                CustomLossDesc::new("log(cosh(x - y))", "tanh(x - y)", m),
            );
        let out = ctx.mix(&mix, &[inputs, inputs]).unwrap();
        let mut b: Vec<u32> = out.value.into_iter().map(f32::to_bits).collect();
        for g in out.grads.into_iter().flatten() {
            b.extend(g.iter().map(|x| x.to_bits()));
        }
        let custom = CustomLossDesc::new(
            "max(0.9 * (y - x), -0.1 * (y - x))",
            "select(0.1, -0.9, y > x)",
            m,
        )
        .reduction(Reduction::Sum);
        b.extend(bits(ctx.loss(&custom, &inputs).unwrap()));
        b
    }));

    // The optimizer: host steps (Adam), then steps recorded on the caller's buffers (SGD with
    // momentum), its bindings dropped before the buffers they hold.
    let len = 5_003;
    let params = rng.vec(len, -2.0, 2.0);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(len, -1.0, 1.0)).collect();
    jobs.push(Arc::new(move |ctx: &Context| {
        let mut p = params.clone();
        let mut adam = Optim::new(ctx, Optimizer::adam(0.01), len).unwrap();
        for g in &grads {
            adam.step(&mut p, g).unwrap();
        }
        let mut out: Vec<u32> = p.iter().map(|x| x.to_bits()).collect();
        let mut sgd = Optim::new(
            ctx,
            Optimizer::Sgd {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.0,
                nesterov: true,
                weight_decay: 0.01,
            },
            len,
        )
        .unwrap();
        let on_gpu = upload(ctx, &params);
        for g in &grads {
            let grad = upload(ctx, g);
            let bindings = sgd.bind(&*on_gpu, &*grad).unwrap();
            submit(ctx, |encoder| sgd.record(encoder, &bindings).unwrap());
            drop(grad);
            drop(bindings);
        }
        out.extend(read(ctx, &on_gpu, len).iter().map(|x| x.to_bits()));
        out
    }));

    // Training: a few epochs of mini-batches, the epochs' losses and the parameters.
    jobs.push(Arc::new(move |ctx: &Context| {
        let desc = TrainDesc::new(300, 7, 5)
            .batch_size(64)
            .optimizer(Optimizer::adam(0.05));
        let (x, y) = blobs(desc.rows, desc.features, desc.classes, 9);
        let mut model = SoftmaxRegression::new(ctx, desc, &x, &y).unwrap();
        let mut out: Vec<u32> = (0..3)
            .map(|_| model.epoch().unwrap().loss.to_bits())
            .collect();
        let (w, b) = model.read_parameters().unwrap();
        out.extend(w.iter().chain(&b).map(|x| x.to_bits()));
        out
    }));
    jobs
}

/// A caller's long submission: `reps` runs of a cross-entropy plan in one encoder, submitted and
/// waited for under the device lock (on GL this holds the GL context for the whole time).
/// Returns the bits of the loss.
fn long_submission(
    ctx: &Context,
    plan: &Plan<CrossEntropyDesc>,
    x: &Buf,
    y: &Buf,
    reps: usize,
) -> u32 {
    let loss = poisoned(ctx, 1);
    let bindings = plan
        .bind(&buffers(x, y, None, None, Some(&loss), None))
        .unwrap();
    submit(ctx, |encoder| {
        for _ in 0..reps {
            plan.record(encoder, &bindings).unwrap();
        }
    });
    read(ctx, &loss, 1)[0].to_bits()
}

#[test]
fn many_threads_one_context_same_bits_as_serial() {
    let ctx = ctx();
    let jobs = jobs();
    let serial: Vec<Vec<u32>> = jobs.iter().map(|j| j(ctx)).collect();

    // A submission long enough (over 7 s) that, without the device lock, a thread waiting for
    // the GL context would give up (wgpu-hal waits 6 s) and panic.
    let (n, c) = (2048, 4096);
    let mut rng = Rng::new(5);
    let plan = Plan::new(ctx, &CrossEntropyDesc::new(n, c).outputs(Outputs::LOSS)).unwrap();
    let x = upload(ctx, &rng.vec(n * c, -5.0, 5.0));
    let targets: Vec<i32> = rng.classes(n, c).iter().map(|&t| t as i32).collect();
    let y = upload(ctx, &targets);
    let long_serial = long_submission(ctx, &plan, &x, &y, 1);
    let once = (0..2)
        .map(|_| {
            let start = std::time::Instant::now();
            long_submission(ctx, &plan, &x, &y, 1);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    // (Only GL has the hazard; elsewhere a second of overlap is enough.)
    let seconds = if ctx.adapter_info().backend == wgpu::Backend::Gl {
        7.0
    } else {
        1.0
    };
    let reps = (seconds / once).ceil().clamp(1.0, 2000.0) as usize;

    let threads = 8;
    let (results, long): (Vec<Runs>, u32) = std::thread::scope(|s| {
        let long = s.spawn(|| long_submission(ctx, &plan, &x, &y, reps));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let jobs = &jobs;
                s.spawn(move || {
                    // Each thread starts at another job, so that different losses overlap.
                    let runs: Runs = (0..jobs.len())
                        .map(|i| {
                            let k = (t + i) % jobs.len();
                            (k, jobs[k](ctx))
                        })
                        .collect();
                    // And compiles pipelines (C is a pipeline constant) while the long
                    // submission runs: two new class counts, each asked for by four threads
                    // at once, so that the plan cache also meets concurrent misses.
                    let c = 1000 + t % 2;
                    let logits = Rng::new(t as u64).vec(3 * c, -1.0, 1.0);
                    let options = Default::default();
                    let out =
                        ce_classes(ctx, &logits, &[0, 1, 2], c, None, &options, Outputs::LOSS)
                            .unwrap();
                    assert!(out.value.unwrap().is_finite());
                    runs
                })
            })
            .collect();
        let results = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (results, long.join().unwrap())
    });
    assert_eq!(long, long_serial, "the long submission's loss differs");
    for (t, runs) in results.iter().enumerate() {
        assert_eq!(runs.len(), jobs.len());
        for (k, got) in runs {
            assert!(
                *got == serial[*k],
                "thread {t}, job {k}: bits differ from the serial run"
            );
        }
    }
}
