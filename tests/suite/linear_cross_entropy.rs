//! Fused linear + cross-entropy against its f64 twin (logits h W^T + b materialised in f64,
//! then the cross-entropy twin, then the chain rule): the loss, the log-sum-exp and the three
//! gradients, with every option, on shapes that are multiples of no tile.

use crate::common::*;
use wgpu_loss::{Inputs, LinearCrossEntropyDesc, Outputs, Reduction, cpu};

/// One problem's host data.
struct Case {
    desc: LinearCrossEntropyDesc,
    hidden: Vec<f32>,
    linear: Vec<f32>,
    bias: Vec<f32>,
    weight: Vec<f32>,
    targets: Vec<i64>,
}

impl Case {
    fn new(seed: u64, n: usize, d: usize, v: usize) -> Self {
        let mut rng = Rng::new(seed);
        // Logits of a few units: h and W of scale 1 / sqrt(D) each way.
        let s = 2.0 / (d as f32).sqrt().max(1.0);
        Case {
            desc: LinearCrossEntropyDesc::new(n, d, v),
            hidden: rng.vec(n * d, -1.5, 1.5),
            linear: rng.vec(v * d, -s, s),
            bias: rng.vec(v, -0.5, 0.5),
            weight: rng.vec(v, 0.5, 2.0),
            targets: rng.classes(n, v),
        }
    }

    fn inputs(&self) -> Inputs<'_> {
        let mut i = Inputs::classes(&self.hidden, &self.targets).linear(&self.linear);
        if self.desc.bias {
            i = i.bias(&self.bias);
        }
        if self.desc.weight.is_some() {
            i = i.weight(&self.weight);
        }
        i
    }

    /// Runs on the GPU and holds every output to the twin.
    #[track_caller]
    fn check(&self, what: &str) {
        let inputs = self.inputs();
        let out = ctx().loss(&self.desc, &inputs).unwrap();
        let r = cpu::reference(&self.desc, &inputs).unwrap();
        // The worst relative errors, for the record (`--nocapture`).
        let worst = |g: &Option<Vec<f32>>, c: &[f64]| g.as_deref().map(|g| worst_relative(g, c));
        eprintln!(
            "{what}: worst relative error: loss {:?}, grad hidden {:?}, grad linear {:?}, grad bias {:?}",
            match (out.value, r.value) {
                (Some(g), Some(c)) => Some(((g as f64 - c) / c).abs()),
                _ => None,
            },
            worst(&out.grad, &r.grad),
            worst(&out.grad_linear, &r.grad_linear),
            worst(&out.grad_bias, &r.grad_bias),
        );
        let tol = Tol::new(2e-4, 2e-6);
        if let Some(value) = r.value.filter(|_| self.desc.outputs.loss) {
            assert_scalar(&format!("{what}: loss"), out.value.unwrap(), value, tol);
        }
        if let Some(per) = r.per_element.as_ref().filter(|_| self.desc.outputs.loss) {
            assert_close(
                &format!("{what}: row losses"),
                &out.per_element.unwrap(),
                per,
                tol,
            );
        }
        if self.desc.lse {
            assert_close(
                &format!("{what}: lse"),
                &out.lse.unwrap(),
                r.lse.as_ref().unwrap(),
                tol,
            );
        }
        if self.desc.outputs.grad {
            let gtol = |g: &[f64]| Tol::new(2e-4, 1e-5 * largest(g));
            assert_close(
                &format!("{what}: grad hidden"),
                &out.grad.unwrap(),
                &r.grad,
                gtol(&r.grad),
            );
            assert_close(
                &format!("{what}: grad linear"),
                &out.grad_linear.unwrap(),
                &r.grad_linear,
                gtol(&r.grad_linear),
            );
            if self.desc.bias {
                assert_close(
                    &format!("{what}: grad bias"),
                    &out.grad_bias.unwrap(),
                    &r.grad_bias,
                    gtol(&r.grad_bias),
                );
            }
        }
    }
}

#[test]
fn small_shapes_against_the_twin() {
    for (n, d, v) in [(1, 1, 1), (3, 5, 7), (33, 17, 65), (70, 40, 130), (5, 3, 1)] {
        let mut case = Case::new(1, n, d, v);
        case.desc = case.desc.bias(true).lse(true);
        case.check(&format!("[{n}, {d}] x [{v}, {d}]"));
    }
}

#[test]
fn every_option_reduction_and_output() {
    let (n, d, v) = (45, 19, 203);
    // (label smoothing, z-loss, softcap, class weight, bias)
    let options = [
        (0.0, 0.0, None, false, false),
        (0.1, 1e-3, Some(15.0), true, true),
        (0.2, 0.0, None, true, false),
        (0.0, 1e-2, Some(5.0), false, true),
    ];
    for (k, &(ls, z, cap, weighted, bias)) in options.iter().enumerate() {
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let mut case = Case::new(10 + k as u64, n, d, v);
            case.targets[0] = -100;
            case.targets[7] = 5;
            let mut desc = case
                .desc
                .clone()
                .label_smoothing(ls)
                .z_loss(z)
                .bias(bias)
                .lse(true)
                .reduction(reduction);
            desc.softcap = cap;
            if weighted {
                desc = desc.weight(v);
            }
            case.desc = desc;
            let what = format!("options {k} {reduction}");
            case.check(&what);
            for outputs in [Outputs::LOSS, Outputs::GRAD] {
                case.desc = case.desc.clone().outputs(outputs);
                case.check(&format!("{what} {outputs:?}"));
            }
        }
    }
}

#[test]
fn hard_cases() {
    // Every row ignored: mean is NaN (0 / 0, as PyTorch), gradients zero.
    let mut case = Case::new(20, 9, 6, 11);
    case.targets.fill(-100);
    case.check("all ignored");
    let out = ctx().loss(&case.desc, &case.inputs()).unwrap();
    assert!(out.value.unwrap().is_nan());
    assert!(out.grad.unwrap().iter().all(|&g| g == 0.0));
    // Logits near ±1e4 (h and W large), one class, one row.
    let mut case = Case::new(21, 7, 5, 9);
    case.hidden.iter_mut().for_each(|x| *x *= 100.0);
    case.linear.iter_mut().for_each(|x| *x *= 100.0);
    case.check("logits of 1e4");
    Case::new(22, 13, 7, 1).check("one class");
    Case::new(23, 1, 300, 70).check("one row");
    // A target outside [0, V) from the recording level is counted on the GPU (the host level
    // rejects it first).
    let mut case = Case::new(24, 4, 3, 5);
    case.targets[2] = 5;
    let err = ctx().loss(&case.desc, &case.inputs()).unwrap_err();
    assert!(
        matches!(err, wgpu_loss::Error::TargetOutOfRange { row: 2, .. }),
        "{err}"
    );
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn many_chunks_and_large_vocabularies() {
    // D = 4097: three class tiles a dispatch, so many chunks and row-tile chunks; odd D.
    Case::new(30, 70, 4097, 300).check("D = 4097");
    // V = 128,000 and 256,001: many class chunks, few rows.
    for v in [128_000, 256_001] {
        let mut case = Case::new(31, 3, 8, v);
        case.desc = case.desc.bias(true).lse(true);
        case.check(&format!("V = {v}"));
    }
}

#[test]
fn the_same_bits_on_every_run() {
    let mut case = Case::new(40, 77, 33, 515);
    case.desc = case.desc.bias(true).label_smoothing(0.1);
    let inputs = case.inputs();
    let a = ctx().loss(&case.desc, &inputs).unwrap();
    let b = ctx().loss(&case.desc, &inputs).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(a.value.unwrap().to_bits(), b.value.unwrap().to_bits());
    assert_eq!(bits(&a.grad.unwrap()), bits(&b.grad.unwrap()));
    assert_eq!(bits(&a.grad_linear.unwrap()), bits(&b.grad_linear.unwrap()));
    assert_eq!(bits(&a.grad_bias.unwrap()), bits(&b.grad_bias.unwrap()));
}

#[test]
fn no_buffer_of_logits() {
    // 8,192 tokens x 128,000 classes: the logits would be 4 GB in f32. The plan allocates its
    // statistics, coefficients and partials, O(N + V), and the caller's buffers are [N, D],
    // [V, D] and [V].
    let (n, d, v) = (8192u64, 1024u64, 128_000u64);
    let desc = LinearCrossEntropyDesc::new(n as usize, d as usize, v as usize).bias(true);
    let plan = wgpu_loss::Plan::new(ctx(), &desc).unwrap();
    let bytes = plan.device_bytes();
    let uniforms = 256 * plan.dispatch_count() as u64 + 4096;
    assert!(
        bytes <= 4 * (12 * n + 2 * v) + 4096 + uniforms,
        "{bytes} bytes"
    );
    assert!(
        bytes * 1000 < 4 * n * v,
        "{bytes} bytes against {} of logits",
        4 * n * v
    );
}

#[test]
fn recorded_into_the_callers_encoder_with_its_buffers() {
    // A trainer's buffers: hidden states, the layer, its bias; poisoned outputs; one plan
    // recorded twice (the second run must overwrite, not add to, the first's gradients).
    let ctx = ctx();
    let mut case = Case::new(50, 37, 21, 150);
    case.desc = case.desc.bias(true).lse(true).reduction(Reduction::Sum);
    let (n, d, v) = (37, 21, 150);
    let targets: Vec<i32> = case.targets.iter().map(|&t| t as i32).collect();
    let hidden = upload(ctx, &case.hidden);
    let linear = upload(ctx, &case.linear);
    let bias = upload(ctx, &case.bias);
    let y = upload(ctx, &targets);
    let (loss, lse) = (poisoned(ctx, 1), poisoned(ctx, n));
    let (gh, gw, gb) = (poisoned(ctx, n * d), poisoned(ctx, v * d), poisoned(ctx, v));
    let plan = wgpu_loss::Plan::new(ctx, &case.desc).unwrap();
    let buffers =
        wgpu_loss::linear_cross_entropy::LinearCrossEntropyBuffers::new(&*hidden, &*linear, &*y)
            .bias(&*bias)
            .loss(&*loss)
            .lse(&*lse)
            .grad_hidden(&*gh)
            .grad_linear(&*gw)
            .grad_bias(&*gb);
    let bindings = plan.bind(&buffers).unwrap();
    let r = cpu::reference(&case.desc, &case.inputs()).unwrap();
    for run in 0..2 {
        submit(ctx, |e| plan.record(e, &bindings).unwrap());
        let what = format!("recorded run {run}");
        let tol = Tol::new(2e-4, 2e-6);
        assert_scalar(&what, read(ctx, &loss, 1)[0], r.value.unwrap(), tol);
        assert_close(&what, &read(ctx, &lse, n), r.lse.as_ref().unwrap(), tol);
        let gtol = |g: &[f64]| Tol::new(2e-4, 1e-5 * largest(g));
        assert_close(&what, &read(ctx, &gh, n * d), &r.grad, gtol(&r.grad));
        assert_close(
            &what,
            &read(ctx, &gw, v * d),
            &r.grad_linear,
            gtol(&r.grad_linear),
        );
        assert_close(&what, &read(ctx, &gb, v), &r.grad_bias, gtol(&r.grad_bias));
    }
    // The inputs are as they were.
    assert_eq!(read(ctx, &hidden, n * d), case.hidden);
    assert_eq!(read(ctx, &linear, v * d), case.linear);
}

#[test]
fn half_precision_hidden_states_and_layer() {
    // f16 and bf16 inputs, f32 products, sums and gradients: against the twin of the upcast
    // inputs, with the tolerance of f32 arithmetic (the inputs are exact in both); and the
    // gradients in the inputs' dtype.
    use wgpu_loss::{DType, bf16, f16};
    let mut case = Case::new(60, 45, 37, 301);
    case.desc = case.desc.bias(true).label_smoothing(0.05).lse(true);
    for dtype in [DType::F16, DType::BF16] {
        let (h16, w16): (Vec<u16>, Vec<u16>) = match dtype {
            DType::F16 => (
                case.hidden
                    .iter()
                    .map(|&x| f16::from_f32(x).to_bits())
                    .collect(),
                case.linear
                    .iter()
                    .map(|&x| f16::from_f32(x).to_bits())
                    .collect(),
            ),
            _ => (
                case.hidden
                    .iter()
                    .map(|&x| bf16::from_f32(x).to_bits())
                    .collect(),
                case.linear
                    .iter()
                    .map(|&x| bf16::from_f32(x).to_bits())
                    .collect(),
            ),
        };
        let desc = case.desc.clone().dtype(dtype);
        let run = |desc: &wgpu_loss::LinearCrossEntropyDesc| match dtype {
            DType::F16 => {
                let h: Vec<f16> = h16.iter().map(|&b| f16::from_bits(b)).collect();
                let w: Vec<f16> = w16.iter().map(|&b| f16::from_bits(b)).collect();
                let i = Inputs::classes(&h, &case.targets)
                    .linear(&w)
                    .bias(&case.bias);
                (
                    ctx().loss(desc, &i).unwrap(),
                    cpu::reference(desc, &i).unwrap(),
                )
            }
            _ => {
                let h: Vec<bf16> = h16.iter().map(|&b| bf16::from_bits(b)).collect();
                let w: Vec<bf16> = w16.iter().map(|&b| bf16::from_bits(b)).collect();
                let i = Inputs::classes(&h, &case.targets)
                    .linear(&w)
                    .bias(&case.bias);
                (
                    ctx().loss(desc, &i).unwrap(),
                    cpu::reference(desc, &i).unwrap(),
                )
            }
        };
        let (out, r) = run(&desc);
        // Gradients in the inputs' dtype: summed in f32 as above, rounded once (to nearest
        // even): the f32 gradients' rounding, bit for bit.
        let (narrow, _) = run(&desc.clone().grad_dtype(dtype));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let rounded = |v: &[f32]| bits(&v.iter().map(|&x| dtype.round(x)).collect::<Vec<_>>());
        assert_eq!(narrow.value.map(f32::to_bits), out.value.map(f32::to_bits));
        let (g, gl) = (
            out.grad.as_ref().unwrap(),
            out.grad_linear.as_ref().unwrap(),
        );
        assert_eq!(
            bits(narrow.grad.as_ref().unwrap()),
            rounded(g),
            "{dtype:?} grad_hidden"
        );
        assert_eq!(
            bits(narrow.grad_linear.as_ref().unwrap()),
            rounded(gl),
            "{dtype:?} grad_linear"
        );
        assert_eq!(
            narrow.grad_bias, out.grad_bias,
            "the bias's gradient stays f32"
        );
        let what = format!("{dtype:?}");
        let tol = Tol::new(2e-4, 2e-6);
        assert_scalar(&what, out.value.unwrap(), r.value.unwrap(), tol);
        assert_close(&what, &out.lse.unwrap(), r.lse.as_ref().unwrap(), tol);
        let gtol = |g: &[f64]| Tol::new(2e-4, 1e-5 * largest(g));
        assert_close(&what, &out.grad.unwrap(), &r.grad, gtol(&r.grad));
        assert_close(
            &what,
            &out.grad_linear.unwrap(),
            &r.grad_linear,
            gtol(&r.grad_linear),
        );
        assert_close(
            &what,
            &out.grad_bias.unwrap(),
            &r.grad_bias,
            gtol(&r.grad_bias),
        );
    }
}

/// The count of rows whose argmax (the first class of the largest logit) is their target,
/// against the argmax of the f64 logits; ignored rows never count; with a zero layer every logit
/// ties and the argmax is class 0, as torch.argmax says.
#[test]
fn correct_counts_rows_whose_argmax_is_the_target() {
    // Several class chunks a row (V past one tile of 64, odd), rows past one tile of 32.
    let (n, d, v) = (45, 19, 203);
    let mut case = Case::new(131, n, d, v);
    case.desc = case.desc.bias(true).correct(true);
    // Half the targets are the row's argmax, so that the count is far from 0 and from N.
    let logits = |c: &Case, r: usize, k: usize| {
        (0..d).fold(c.bias[k] as f64, |a, j| {
            a + c.hidden[r * d + j] as f64 * c.linear[k * d + j] as f64
        })
    };
    let argmax = |c: &Case, r: usize| {
        (0..v).fold(0, |best, k| {
            if logits(c, r, k) > logits(c, r, best) {
                k
            } else {
                best
            }
        })
    };
    for r in (0..n).step_by(2) {
        case.targets[r] = argmax(&case, r) as i64;
    }
    // Ignored rows: one whose target would be its argmax.
    case.targets[1] = -100;
    case.targets[2] = -100;
    let expected = (0..n)
        .filter(|&r| case.targets[r] == argmax(&case, r) as i64)
        .count();
    assert!(expected > n / 3 && expected < n, "{expected}");
    let correct = |c: &Case| ctx().loss(&c.desc, &c.inputs()).unwrap().correct.unwrap();
    assert_eq!(correct(&case) as usize, expected);
    // A zero layer: every logit 0, the argmax class 0.
    case.linear.iter_mut().for_each(|w| *w = 0.0);
    case.bias.iter_mut().for_each(|b| *b = 0.0);
    case.targets[5] = 0;
    let zeros = case.targets.iter().filter(|&&t| t == 0).count();
    assert_eq!(correct(&case) as usize, zeros);
}
