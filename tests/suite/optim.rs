//! The update step: SGD (momentum, Nesterov, weight decay) and Adam / AdamW against their f64
//! twin (src/cpu/optim.rs) over several steps, against torch.optim's own numbers
//! (tests/fixtures/optim.json, made once by tests/fixtures/optim_fixtures.py), through the
//! recording API with several steps in one encoder, and bad hyperparameters.

use crate::common::*;
use wgpu_loss::{
    cpu,
    optim::{Optim, Optimizer},
};

fn optimizers() -> Vec<(&'static str, Optimizer)> {
    vec![
        ("sgd", Optimizer::sgd(0.1)),
        ("momentum", Optimizer::momentum(0.05, 0.9, false)),
        ("nesterov", Optimizer::momentum(0.05, 0.9, true)),
        (
            "sgd with dampening and weight decay",
            Optimizer::Sgd {
                lr: 0.05,
                momentum: 0.9,
                dampening: 0.1,
                nesterov: false,
                weight_decay: 0.01,
            },
        ),
        ("adam", Optimizer::adam(1e-2)),
        ("adamw", Optimizer::adamw(1e-2)),
        (
            "adam with weight decay",
            Optimizer::Adam {
                lr: 0.01,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.1,
                decoupled: false,
            },
        ),
    ]
}

#[test]
fn against_the_twin_over_several_steps() {
    let ctx = ctx();
    let mut rng = Rng::new(80);
    // Not a multiple of a workgroup's 1024 elements.
    let n = 2_051;
    for (name, optimizer) in optimizers() {
        let mut params = rng.vec(n, -2.0, 2.0);
        let mut twin: Vec<f64> = params.iter().map(|&x| x as f64).collect();
        let mut state = cpu::optim::State::default();
        let mut optim = Optim::new(ctx, optimizer, n).unwrap();
        for step in 1..=5 {
            let grad = rng.vec(n, -1.0, 1.0);
            optim.step(&mut params, &grad).unwrap();
            let grad64: Vec<f64> = grad.iter().map(|&g| g as f64).collect();
            cpu::optim::step(optimizer, &mut twin, &grad64, &mut state).unwrap();
            assert_close(
                &format!("{name} step {step}"),
                &params,
                &twin,
                Tol::new(1e-5, 1e-6),
            );
        }
        assert_eq!(optim.steps(), 5);
    }
}

#[test]
fn against_torch_optim() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/optim.json"
    ))
    .unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f = |c: &serde_json::Value, k: &str| c[k].as_f64().unwrap() as f32;
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for c in cases {
        let optimizer = match c["optimizer"].as_str().unwrap() {
            "sgd" => Optimizer::Sgd {
                lr: f(c, "lr"),
                momentum: f(c, "momentum"),
                dampening: f(c, "dampening"),
                nesterov: c["nesterov"].as_bool().unwrap(),
                weight_decay: f(c, "weight_decay"),
            },
            kind => Optimizer::Adam {
                lr: f(c, "lr"),
                beta1: f(c, "beta1"),
                beta2: f(c, "beta2"),
                eps: f(c, "eps"),
                weight_decay: f(c, "weight_decay"),
                decoupled: kind == "adamw",
            },
        };
        let mut params = floats(&c["params"]);
        let mut optim = Optim::new(ctx(), optimizer, params.len()).unwrap();
        let name = c["name"].as_str().unwrap();
        for (step, (grad, after)) in c["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(c["after"].as_array().unwrap())
            .enumerate()
        {
            optim.step(&mut params, &floats(grad)).unwrap();
            let torch: Vec<f64> = floats(after).iter().map(|&x| x as f64).collect();
            // Both in f32 with the same formulas in the same order: a few ulps at most.
            assert_close(
                &format!("{name} step {}", step + 1),
                &params,
                &torch,
                Tol::new(2e-6, 1e-7),
            );
        }
    }
}

#[test]
fn steps_recorded_into_one_encoder() {
    // Three steps in one encoder each get their own step's scalars (Adam's bias correction),
    // the same as three separate submissions.
    let ctx = ctx();
    let mut rng = Rng::new(81);
    let n = 777;
    let p0 = rng.vec(n, -1.0, 1.0);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, -1.0, 1.0)).collect();
    let mut separate = p0.clone();
    let mut a = Optim::new(ctx, Optimizer::adam(0.05), n).unwrap();
    for g in &grads {
        a.step(&mut separate, g).unwrap();
    }
    let params = upload(ctx, &p0);
    let gbufs: Vec<Buf> = grads.iter().map(|g| upload(ctx, g)).collect();
    let mut b = Optim::new(ctx, Optimizer::adam(0.05), n).unwrap();
    let bound: Vec<_> = gbufs
        .iter()
        .map(|g| b.bind(&*params, &**g).unwrap())
        .collect();
    submit(ctx, |e| {
        for g in &bound {
            b.record(e, g).unwrap();
        }
    });
    let together = read(ctx, &params, n);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&together), bits(&separate));
}

#[test]
fn bad_hyperparameters_and_buffers() {
    let ctx = ctx();
    for bad in [
        Optimizer::sgd(-1.0),
        Optimizer::sgd(f32::NAN),
        Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0,
        },
        Optimizer::Adam {
            lr: 0.1,
            beta1: 1.0,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        },
    ] {
        let err = Optim::new(ctx, bad, 10).unwrap_err();
        assert!(
            matches!(err, wgpu_loss::Error::InvalidOption { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(matches!(
        Optim::new(ctx, Optimizer::sgd(0.1), 0).unwrap_err(),
        wgpu_loss::Error::Empty(_)
    ));
    let mut o = Optim::new(ctx, Optimizer::sgd(0.1), 10).unwrap();
    let mut p = vec![0.0f32; 10];
    assert!(o.step(&mut p, &[0.0; 9]).is_err());
    let small = upload(ctx, &[0.0f32; 9]);
    let good = upload(ctx, &[0.0f32; 10]);
    let err = o.bind(&*small, &*good).unwrap_err();
    assert!(
        matches!(err, wgpu_loss::Error::BufferTooSmall { .. }),
        "{err}"
    );
    let err = o.bind(&*good, &*good).unwrap_err();
    assert!(matches!(err, wgpu_loss::Error::Binding("grad", _)), "{err}");
    // Bindings of another optimizer are refused.
    let other = Optim::new(ctx, Optimizer::sgd(0.1), 10).unwrap();
    let theirs = other.bind(&*good, &*upload(ctx, &[0.0f32; 10])).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let err = o.record(&mut encoder, &theirs).unwrap_err();
    assert!(
        matches!(err, wgpu_loss::Error::Binding("bindings", _)),
        "{err}"
    );
    assert_eq!(o.steps(), 0);
}
