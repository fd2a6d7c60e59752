//! Negative log-likelihood on the GPU against the f64 reference, through the recording API
//! with poisoned outputs: weights, ignore_index, every row ignored, one class, and sizes that
//! take many workgroups, a partial last vec4, and folded dispatches.
//!
//! Tolerances: a row's loss is one f32 product, the gradient one product and one division by
//! the (f32) denominator: 1e-6 relative. Reduced values add non-negative terms in a fixed-order
//! tree: 1e-5 relative.

use crate::common::*;
use wgpu_loss::{Context, NllDesc, Outputs, Plan, Reduction, cpu};

const ROW: Tol = Tol::new(1e-6, 0.0);
const VALUE: Tol = Tol::new(1e-5, 0.0);

struct Case {
    rows: usize,
    classes: usize,
    log_probs: Vec<f32>,
    targets: Vec<i64>,
    weight: Option<Vec<f32>>,
    ignore_index: i64,
}

impl Case {
    fn random(rows: usize, classes: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let log_probs = rng.vec(rows * classes, -9.0, -0.01);
        let mut targets = rng.classes(rows, classes);
        for t in targets.iter_mut().skip(3).step_by(7) {
            *t = -100;
        }
        Case {
            rows,
            classes,
            log_probs,
            targets,
            weight: None,
            ignore_index: -100,
        }
    }

    fn record_on(&self, ctx: &Context, reduction: Reduction) -> (Vec<f32>, Vec<f32>) {
        let mut desc = NllDesc::new(self.rows, self.classes)
            .reduction(reduction)
            .ignore_index(self.ignore_index);
        if self.weight.is_some() {
            desc = desc.weight(self.classes);
        }
        let plan = Plan::new(ctx, &desc).unwrap();
        let x = upload(ctx, &self.log_probs);
        let y = upload(
            ctx,
            &self.targets.iter().map(|&t| t as i32).collect::<Vec<_>>(),
        );
        let w = self.weight.as_ref().map(|w| upload(ctx, w));
        let loss_len = if reduction == Reduction::None {
            self.rows
        } else {
            1
        };
        let loss = poisoned(ctx, loss_len);
        let grad = poisoned(ctx, self.log_probs.len());
        plan.run_buffers(&buffers(
            &x,
            &y,
            w.as_deref(),
            None,
            Some(&loss),
            Some(&grad),
        ))
        .unwrap();
        (
            read(ctx, &loss, loss_len),
            read(ctx, &grad, self.log_probs.len()),
        )
    }

    fn reference(&self, reduction: Reduction) -> cpu::Reference {
        cpu::nll::nll(
            &self.log_probs,
            &self.targets,
            self.classes,
            self.weight.as_deref(),
            self.ignore_index,
            reduction,
        )
        .unwrap()
    }

    fn check_on(&self, ctx: &Context, what: &str) {
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let reference = self.reference(reduction);
            let (loss, grad) = self.record_on(ctx, reduction);
            let what = format!("{what} n={} c={} {reduction}", self.rows, self.classes);
            assert_loss(&what, &loss, &reference, ROW, VALUE);
            assert_close(&format!("{what} grad"), &grad, &reference.grad, ROW);
        }
    }

    fn check(&self, what: &str) {
        self.check_on(ctx(), what);
    }
}

#[test]
fn shapes() {
    for (i, (n, c)) in [
        (1, 1),
        (7, 1),
        (1, 5),
        (37, 10),
        (1000, 3),
        (4099, 7),
        (513, 1000),
        (3, 50_257),
    ]
    .into_iter()
    .enumerate()
    {
        Case::random(n, c, i as u64).check("random");
    }
}

#[test]
fn many_workgroups_and_a_partial_vec4() {
    Case::random(100_003, 7, 20).check("large");
    Case::random(2_000_001, 3, 21).check("millions of rows");
}

#[test]
fn class_weights_and_a_custom_ignore_index() {
    for (i, (n, c)) in [(37, 10), (5000, 13)].into_iter().enumerate() {
        let mut case = Case::random(n, c, 30 + i as u64);
        case.weight = Some(Rng::new(i as u64).vec(c, 0.1, 3.0));
        case.check("weighted");
        // An ignore_index that is a real class.
        case.ignore_index = 2;
        case.targets = Rng::new(7).classes(n, c);
        case.check("ignore a class");
    }
}

#[test]
fn every_row_ignored() {
    for n in [9, 5000] {
        let mut case = Case::random(n, 4, 40);
        case.targets = vec![-100; n];
        let (mean, grad) = case.record_on(ctx(), Reduction::Mean);
        assert!(mean[0].is_nan(), "mean over no rows is NaN, as in PyTorch");
        assert!(grad.iter().all(|&g| g == 0.0));
        let (sum, _) = case.record_on(ctx(), Reduction::Sum);
        assert_eq!(sum[0], 0.0);
    }
}

#[test]
fn folded_dispatches() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits {
            max_compute_workgroups_per_dimension: 7,
            ..adapter.limits()
        },
        required_features: adapter.features() & wgpu::Features::SUBGROUP,
        ..Default::default()
    }))
    .unwrap();
    let ctx = Context::from_device(device, queue).unwrap();
    Case::random(30_001, 37, 50).check_on(&ctx, "folded");
}

#[test]
fn convenience_level() {
    let ctx = ctx();
    let case = Case::random(77, 6, 60);
    let out = nll_classes(
        ctx,
        &case.log_probs,
        &case.targets,
        6,
        None,
        &NllOptions::default(),
        Outputs::BOTH,
    )
    .unwrap();
    let reference = case.reference(Reduction::Mean);
    assert_scalar("value", out.value.unwrap(), reference.value.unwrap(), VALUE);
    assert_close("grad", out.grad.as_ref().unwrap(), &reference.grad, ROW);
}

#[test]
fn small_batches_take_one_dispatch() {
    let plan = Plan::new(ctx(), &NllDesc::new(32, 10)).unwrap();
    assert_eq!(plan.dispatch_count(), 1);
}
