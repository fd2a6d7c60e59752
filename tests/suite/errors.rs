//! Every error a caller can cause comes back as its typed variant with a clear message; nothing
//! panics.

use crate::common::*;
use wgpu_loss::{
    Context, CrossEntropyDesc, Error, NllDesc, Outputs, Plan, PointwiseDesc, Reduction,
    pointwise::Pointwise, pointwise::PointwiseBuffers,
};

#[track_caller]
fn message(e: &Error, parts: &[&str]) {
    let text = e.to_string();
    for p in parts {
        assert!(text.contains(p), "{text:?} should mention {p:?}");
    }
}

#[test]
fn length_mismatch() {
    let ctx = ctx();
    let e = mse(ctx, &[1.0, 2.0], &[1.0], Reduction::Mean, Outputs::BOTH).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                expected: 2,
                actual: 1,
                ..
            }
        ),
        "{e:?}"
    );
    message(&e, &["target", "expected 2", "got 1"]);

    let e = ce_classes(
        ctx,
        &[0.0; 5],
        &[0, 1],
        3,
        None,
        &Default::default(),
        Outputs::BOTH,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                expected: 6,
                actual: 5,
                ..
            }
        ),
        "{e:?}"
    );
    message(&e, &["logits"]);

    let e = ce_classes(
        ctx,
        &[0.0; 6],
        &[0, 1],
        3,
        Some(&[1.0; 2]),
        &Default::default(),
        Outputs::BOTH,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                expected: 3,
                actual: 2,
                ..
            }
        ),
        "{e:?}"
    );
    message(&e, &["weight"]);
}

#[test]
fn empty_inputs() {
    let ctx = ctx();
    let e = mse(ctx, &[], &[], Reduction::Mean, Outputs::BOTH).unwrap_err();
    assert!(matches!(e, Error::Empty("pred")), "{e:?}");
    message(&e, &["pred", "empty"]);
    let e = ce_classes(ctx, &[], &[], 3, None, &Default::default(), Outputs::BOTH).unwrap_err();
    assert!(matches!(e, Error::Empty(_)), "{e:?}");
    message(&e, &["rows", "empty"]);
    let e = Plan::new(ctx, &CrossEntropyDesc::new(4, 0)).err().unwrap();
    message(&e, &["classes", "empty"]);
}

#[test]
fn invalid_options() {
    let ctx = ctx();
    let pw = |loss, reduction| {
        Plan::new(ctx, &PointwiseDesc::new(loss, 8).reduction(reduction))
            .err()
            .unwrap()
    };
    let e = pw(Pointwise::Huber { delta: -1.0 }, Reduction::Mean);
    assert!(
        matches!(
            e,
            Error::InvalidOption {
                option: "delta",
                ..
            }
        ),
        "{e:?}"
    );
    message(&e, &["delta", "-1"]);
    let e = pw(Pointwise::SmoothL1 { beta: f32::NAN }, Reduction::Mean);
    message(&e, &["beta"]);
    let e = pw(Pointwise::Mse, Reduction::BatchMean);
    message(&e, &["batchmean", "kl-div"]);
    let e = pw(Pointwise::KlDiv { log_target: false }, Reduction::BatchMean);
    message(&e, &["batch"]);

    let ce = |options: CeOptions| Plan::new(ctx, &(options).desc(4, 3)).err().unwrap();
    let e = ce(CeOptions {
        label_smoothing: 1.5,
        ..Default::default()
    });
    assert!(
        matches!(
            e,
            Error::InvalidOption {
                option: "label_smoothing",
                ..
            }
        ),
        "{e:?}"
    );
    message(&e, &["label_smoothing", "1.5", "[0, 1]"]);
    let e = ce(CeOptions {
        ignore_index: 1 << 40,
        ..Default::default()
    });
    message(&e, &["ignore_index", "i32"]);
    let e = ce(CeOptions {
        softcap: Some(0.0),
        ..Default::default()
    });
    message(&e, &["softcap"]);
    let e = ce(CeOptions {
        z_loss: -1.0,
        ..Default::default()
    });
    message(&e, &["z_loss"]);
    let e = ce(CeOptions::default().reduction(Reduction::BatchMean));
    message(&e, &["batchmean"]);

    let e = Plan::new(
        ctx,
        &CrossEntropyDesc::new(4, 3).outputs(Outputs {
            loss: false,
            grad: false,
        }),
    )
    .err()
    .unwrap();
    message(&e, &["outputs", "neither"]);
    let e = Plan::new(
        ctx,
        &CrossEntropyDesc::new(4, 3)
            .outputs(Outputs::LOSS)
            .in_place(true),
    )
    .err()
    .unwrap();
    message(&e, &["in_place"]);
    let e = pointwise_loss(
        ctx,
        Pointwise::Mse,
        &PwInputs {
            pred: &[1.0; 6],
            target: &[1.0; 6],
            weight: Some(&[1.0; 6]),
            pos_weight: None,
        },
        Reduction::Mean,
        None,
        Outputs::BOTH,
    )
    .unwrap_err();
    message(&e, &["weight", "mse"]);
}

#[test]
fn class_target_out_of_range_on_the_host() {
    let ctx = ctx();
    for bad in [3i64, -1, -101] {
        let e = ce_classes(
            ctx,
            &[0.0; 6],
            &[0, bad],
            3,
            None,
            &Default::default(),
            Outputs::BOTH,
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::TargetOutOfRange { row: 1, value, classes: 3 } if value == bad),
            "{e:?}"
        );
        message(&e, &["target", &bad.to_string(), "row 1", "[0, 3)"]);
    }
}

#[test]
fn class_target_out_of_range_on_the_gpu() {
    let ctx = ctx();
    let plan = Plan::new(ctx, &CrossEntropyDesc::new(3, 4)).unwrap();
    let logits = upload(ctx, &[0.5f32; 12]);
    let targets = upload(ctx, &[1i32, 9, 2]);
    let loss = poisoned(ctx, 1);
    let grad = poisoned(ctx, 12);
    let e = plan
        .run_buffers(&buffers(
            &logits,
            &targets,
            None,
            None,
            Some(&loss),
            Some(&grad),
        ))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidOnGpu {
                count: 1,
                first: 1,
                ..
            }
        ),
        "{e:?}"
    );
    message(&e, &["1 invalid", "class targets", "index 1"]);
}

#[test]
fn too_large_for_one_binding() {
    // Inputs go through windows up to max_buffer_size (tests/suite/windows.rs); past it, TooLarge.
    let ctx = ctx();
    let limit = ctx.limits().max_buffer_size;
    let len = limit / 4 + 1;
    if len <= u32::MAX as u64 {
        let e = Plan::new(ctx, &PointwiseDesc::new(Pointwise::Mse, len as usize))
            .err()
            .unwrap();
        assert!(
            matches!(e, Error::TooLarge { limit: l, .. } if l == limit),
            "{e:?}"
        );
        message(&e, &["pred", "buffer size limit"]);
    }
    // Per-row tensors stay bound whole: more class targets than one binding holds.
    let limit = ctx.max_binding_bytes();
    let rows = (limit / 4 + 1) as usize;
    let e = Plan::new(ctx, &NllDesc::new(rows, 1)).err().unwrap();
    assert!(
        matches!(e, Error::TooLarge { limit: l, .. } if l == limit),
        "{e:?}"
    );
    message(&e, &["targets", "storage binding limit"]);
}

fn mse_buffers<'a>(
    pred: &'a wgpu::Buffer,
    target: &'a wgpu::Buffer,
    loss: Option<&'a wgpu::Buffer>,
    grad: Option<&'a wgpu::Buffer>,
) -> PointwiseBuffers<'a> {
    buffers(pred, target, None, None, loss, grad)
}

#[test]
fn caller_buffers_are_checked() {
    let ctx = ctx();
    let plan = Plan::new(ctx, &PointwiseDesc::new(Pointwise::Mse, 100)).unwrap();
    let good = upload(ctx, &[0.0f32; 100]);
    let small = upload(ctx, &[0.0f32; 99]);
    let loss = poisoned(ctx, 1);
    let grad = poisoned(ctx, 100);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());

    let e = plan
        .record_buffers(
            &mut encoder,
            &mse_buffers(&good, &small, Some(&loss), Some(&grad)),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BufferTooSmall {
                binding: "target",
                needed: 400,
                actual: 396
            }
        ),
        "{e:?}"
    );
    message(&e, &["target", "396", "400"]);

    let not_storage = create(
        ctx,
        &wgpu::BufferDescriptor {
            label: None,
            size: 400,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        },
    );
    let e = plan
        .record_buffers(
            &mut encoder,
            &mse_buffers(&good, &good, Some(&loss), Some(&not_storage)),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::MissingUsage {
                binding: "grad",
                ..
            }
        ),
        "{e:?}"
    );
    message(&e, &["grad", "STORAGE"]);

    let e = plan
        .record_buffers(&mut encoder, &mse_buffers(&good, &good, None, Some(&grad)))
        .unwrap_err();
    assert!(matches!(e, Error::Binding("loss", _)), "{e:?}");
    message(&e, &["loss", "needed"]);

    let loss_only = Plan::new(
        ctx,
        &PointwiseDesc::new(Pointwise::Mse, 100).outputs(Outputs::LOSS),
    )
    .unwrap();
    let e = loss_only
        .record_buffers(
            &mut encoder,
            &mse_buffers(&good, &good, Some(&loss), Some(&grad)),
        )
        .unwrap_err();
    message(&e, &["grad", "not used"]);
    // Nothing was recorded by the failed calls: the encoder still finishes cleanly.
    ctx.queue().submit([encoder.finish()]);
}

#[test]
fn device_below_the_needed_limits() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits {
            max_storage_buffers_per_shader_stage: 4,
            ..wgpu::Limits::downlevel_defaults()
        },
        ..Default::default()
    }))
    .unwrap();
    let e = Context::from_device(device, queue).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DeviceLimit {
                limit: "max_storage_buffers_per_shader_stage",
                needed: 7,
                actual: 4
            }
        ),
        "{e:?}"
    );
    message(&e, &["max_storage_buffers_per_shader_stage", "4", "7"]);
}

/// WebGPU's default limits are enough.
#[test]
fn default_limits_suffice() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let ctx = Context::from_device(device, queue).unwrap();
    let mut rng = Rng::new(1);
    let logits = rng.vec(300 * 1000, -3.0, 3.0);
    let targets = rng.classes(300, 1000);
    let out = ce_classes(
        &ctx,
        &logits,
        &targets,
        1000,
        None,
        &Default::default(),
        Outputs::BOTH,
    )
    .unwrap();
    let reference = cpu_ce(&logits, &targets, 1000, None, &Default::default()).unwrap();
    assert_scalar(
        "default limits",
        out.value.unwrap(),
        reference.value.unwrap(),
        Tol::new(2e-5, 0.0),
    );
}

/// Shapes whose element count overflows, or passes what the kernels index, are a typed error
/// before anything is allocated (they used to wrap in unchecked products).
#[test]
fn shapes_that_overflow() {
    let ctx = ctx();
    let huge = usize::MAX / 2 + 3;
    for (n, c) in [
        (huge, 4),
        (4, huge),
        (1 << 20, 1 << 20),
        (usize::MAX, usize::MAX),
    ] {
        let e = Plan::new(ctx, &CrossEntropyDesc::new(n, c)).err().unwrap();
        assert!(
            matches!(e, Error::ShapeTooLarge { .. } | Error::InvalidOption { .. }),
            "{n} x {c}: {e:?}"
        );
        let e = wgpu_loss::Plan::new(ctx, &wgpu_loss::NllDesc::new(n, c))
            .err()
            .unwrap();
        assert!(
            matches!(e, Error::ShapeTooLarge { .. } | Error::InvalidOption { .. }),
            "{n} x {c}: {e:?}"
        );
    }
    // C past i32 (class targets are i32 on the GPU).
    let e = Plan::new(ctx, &CrossEntropyDesc::new(1, 1 << 31))
        .err()
        .unwrap();
    message(&e, &["classes", "i32"]);
    let e = Plan::new(ctx, &CrossEntropyDesc::new(1 << 20, 1 << 20))
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::ShapeTooLarge {
                limit: 4294967295,
                ..
            }
        ),
        "{e:?}"
    );
    message(&e, &["[1048576, 1048576]", "4294967295"]);
    // Pointwise lengths past u32 (Metal reports bindings past 4 GiB).
    let e = Plan::new(ctx, &PointwiseDesc::new(Pointwise::Mse, 1 << 32))
        .err()
        .unwrap();
    assert!(matches!(e, Error::ShapeTooLarge { .. }), "{e:?}");
    // The host API: N * C that overflows is a length error, not a wrapped product.
    let e = ce_classes(
        ctx,
        &[0.0; 4],
        &[0; 4],
        huge,
        None,
        &Default::default(),
        Outputs::BOTH,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::ShapeTooLarge { .. } | Error::InvalidOption { .. }),
        "{e:?}"
    );
    // Class targets that do not fit an i32 are out of range, not truncated.
    let e = ce_classes(
        ctx,
        &[0.0; 6],
        &[0, (1i64 << 32) + 1],
        3,
        None,
        &Default::default(),
        Outputs::BOTH,
    )
    .unwrap_err();
    assert!(matches!(e, Error::TargetOutOfRange { row: 1, .. }), "{e:?}");
}

/// Buffers that overlap where one is written are refused before anything is recorded, so no
/// caller input reaches wgpu's default (panicking) error handler at the caller's submit.
#[test]
fn aliased_buffers() {
    let ctx = ctx();
    let (n, c) = (4, 5);
    let logits = upload(ctx, &[0.5f32; 20]);
    let targets = upload(ctx, &[0i32, 1, 2, 3]);
    let out = poisoned(ctx, n * c);
    let plan = Plan::new(ctx, &CrossEntropyDesc::new(n, c)).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let mut attempt = |loss: Option<&wgpu::Buffer>, grad: Option<&wgpu::Buffer>| {
        plan.record_buffers(
            &mut encoder,
            &buffers(&logits, &targets, None, None, loss, grad),
        )
        .unwrap_err()
    };
    // The same buffer as two outputs.
    let e = attempt(Some(&out), Some(&out));
    assert!(
        matches!(
            e,
            Error::Aliased {
                a: "loss",
                b: "grad"
            }
        ),
        "{e:?}"
    );
    message(&e, &["loss", "grad", "overlap"]);
    // The logits again as the gradient, without in_place.
    let e = attempt(Some(&out), Some(&logits));
    assert!(
        matches!(
            e,
            Error::Aliased {
                a: "logits",
                b: "grad"
            }
        ),
        "{e:?}"
    );
    // The targets as the loss.
    let e = attempt(Some(&targets), Some(&out));
    assert!(matches!(e, Error::Aliased { .. }), "{e:?}");
    // In place, the logits may not be the loss either.
    let in_place = Plan::new(ctx, &CrossEntropyDesc::new(n, c).in_place(true)).unwrap();
    let e = in_place
        .record_buffers(
            &mut encoder,
            &buffers(&logits, &targets, None, None, Some(&logits), None),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Aliased { .. }), "{e:?}");
    // Two inputs may share a buffer: MSE of a buffer against itself is 0.
    let mse = Plan::new(ctx, &PointwiseDesc::new(Pointwise::Mse, 20)).unwrap();
    let loss = poisoned(ctx, 1);
    let grad = poisoned(ctx, 20);
    mse.run_buffers(&mse_buffers(&logits, &logits, Some(&loss), Some(&grad)))
        .unwrap();
    assert_eq!(read(ctx, &loss, 1)[0], 0.0);
    // Nothing was recorded by the failed calls: the encoder still finishes cleanly.
    let _guard = ctx.lock();
    ctx.queue().submit([encoder.finish()]);
}

/// The public CPU references refuse bad input instead of panicking.
#[test]
fn cpu_references_validate() {
    use wgpu_loss::cpu;
    let o = CeOptions::default();
    let x = [0.5f32; 6];
    assert!(matches!(
        cpu_ce(&x, &[0, 1], 0, None, &o),
        Err(Error::Empty(_))
    ));
    assert!(matches!(
        cpu_ce(&x, &[0, 1, 2], 3, None, &o),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        cpu_ce(&x, &[0, 1], 3, Some(&[]), &o),
        Err(Error::LengthMismatch { .. })
    ));
    // Out-of-range targets: `cpu::reference` refuses them as `Context::loss` does; the twin's
    // own function gives NaN rows, as the GPU does with them in the caller's buffers, not an
    // index panic.
    assert!(matches!(
        cpu_ce(&x, &[7, i64::MIN], 3, Some(&[1.0; 3]), &o),
        Err(Error::TargetOutOfRange {
            row: 0,
            value: 7,
            classes: 3
        })
    ));
    let (desc, inputs) = ce_case(&x, &[7, i64::MIN], 3, Some(&[1.0; 3]), &o, Outputs::BOTH);
    let r = cpu::cross_entropy::cross_entropy(&desc, &inputs).unwrap();
    assert!(r.value.unwrap().is_nan());
    assert!(matches!(
        cpu_ce_soft(&x, &x[..5], 3, None, &o),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        cpu_ce_probs(&x, &x, 0, 1e-7, Reduction::Mean),
        Err(Error::Empty(_))
    ));
    assert!(matches!(
        cpu_ce_probs(&x, &x, 4, 1e-7, Reduction::Mean),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        cpu::cross_entropy::mean_denominator(&[0, 1], 3, Some(&[1.0]), -100),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        cpu::nll::nll(&x, &[0, 1], 3, Some(&[1.0; 2]), -100, Reduction::Mean),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(
        cpu::nll::nll(&x, &[9, -5], 3, None, -100, Reduction::None)
            .unwrap()
            .per_element
            .unwrap()
            .iter()
            .all(|v| v.is_nan())
    );
    assert!(matches!(
        cpu::pointwise::pointwise(
            Pointwise::Bce,
            &x,
            &x,
            Some(&[]),
            None,
            Reduction::Mean,
            None
        ),
        Err(Error::Empty("weight"))
    ));
    assert!(matches!(
        cpu::pointwise::pointwise(
            Pointwise::Mse,
            &x,
            &x[..2],
            None,
            None,
            Reduction::Mean,
            None
        ),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        cpu::pointwise::pointwise(
            Pointwise::KlDiv { log_target: false },
            &x,
            &x,
            None,
            None,
            Reduction::BatchMean,
            Some(0)
        ),
        Err(Error::InvalidOption { .. })
    ));
}

/// The twins that take loose slices (an optimizer's step, the upstream gradient's scaling, the
/// rows' log-sum-exp) refuse what does not fit, and change nothing when they do.
#[test]
fn cpu_twins_refuse_short_slices() {
    use wgpu_loss::cpu::{Reference, cross_entropy, optim};
    use wgpu_loss::optim::Optimizer;
    let mut params = vec![0.5f64; 4];
    let mut state = optim::State::default();
    let sgd = Optimizer::sgd(0.1);
    assert!(matches!(
        optim::step(sgd, &mut params, &[1.0; 3], &mut state),
        Err(Error::LengthMismatch {
            expected: 4,
            actual: 3,
            ..
        })
    ));
    assert_eq!((params.as_slice(), state.steps), (&[0.5; 4][..], 0));
    optim::step(Optimizer::adam(0.1), &mut params, &[1.0; 4], &mut state).unwrap();
    let after_one = (params.clone(), state.clone());
    // A state of other parameters.
    assert!(matches!(
        optim::step(
            Optimizer::adam(0.1),
            &mut params[..2],
            &[1.0; 2],
            &mut state
        ),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        optim::step(
            Optimizer::adam(f32::NAN),
            &mut params,
            &[1.0; 4],
            &mut state
        ),
        Err(Error::InvalidOption { .. })
    ));
    assert_eq!((params, state), after_one);

    let mut r = Reference {
        grad: vec![1.0; 6],
        ..Reference::default()
    };
    for (go, classes) in [
        (&[][..], 3),
        (&[1.0; 3][..], 3),
        (&[1.0; 2][..], 4),
        (&[1.0][..], 0),
    ] {
        assert!(
            cross_entropy::scale_by_upstream(&mut r, go, classes).is_err(),
            "{go:?} {classes}"
        );
    }
    assert_eq!(r.grad, vec![1.0; 6]);
    cross_entropy::scale_by_upstream(&mut r, &[2.0, 3.0], 3).unwrap();
    assert_eq!(r.grad, vec![2.0, 2.0, 2.0, 3.0, 3.0, 3.0]);

    let x = [0.0f32; 5];
    let inputs = wgpu_loss::Inputs::classes(&x[..], &[]);
    assert!(matches!(
        cross_entropy::row_lse(&CrossEntropyDesc::new(1, 3), &inputs),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        cross_entropy::row_lse(&CrossEntropyDesc::new(1, 0), &inputs),
        Err(Error::Empty(_))
    ));
}

/// Probabilities outside [0, 1] for the classic cross-entropy: refused on the host, counted on
/// the GPU (they used to give NaN silently).
#[test]
fn negative_probabilities() {
    use wgpu_loss::ClassicCrossEntropyDesc;
    let ctx = ctx();
    let (n, c) = (3, 4);
    let mut probs = vec![0.25f32; n * c];
    probs[5] = -0.5;
    probs[9] = 1.5;
    let targets = vec![0.25f32; n * c];
    let e = ce_probs(
        ctx,
        &probs,
        &targets,
        c,
        1e-7,
        Reduction::Mean,
        Outputs::BOTH,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::ValueOutOfRange { index: 5, .. }),
        "{e:?}"
    );
    message(&e, &["probs", "-0.5", "[0, 1]"]);
    // On the GPU, both a one-workgroup problem and a split one.
    for (n, c, bad) in [(3, 4, vec![5, 9]), (2, 70_001, vec![17, 70_001 + 3])] {
        let mut probs = vec![0.5f32 / c as f32; n * c];
        for &i in &bad {
            probs[i] = -1e-3;
        }
        let plan = Plan::new(
            ctx,
            &ClassicCrossEntropyDesc::new(n, c).reduction(Reduction::Sum),
        )
        .unwrap();
        let x = upload(ctx, &probs);
        let t = upload(ctx, &vec![1.0f32 / c as f32; n * c]);
        let loss = poisoned(ctx, 1);
        let grad = poisoned(ctx, n * c);
        let e = plan
            .run_buffers(&buffers(&x, &t, None, None, Some(&loss), Some(&grad)))
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidOnGpu { count: 2, first, .. } if first as usize == bad[0]),
            "{e:?}"
        );
        assert_eq!(plan.read_status().unwrap().invalid, 2);
    }
}
