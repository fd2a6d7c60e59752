//! Every loss against PyTorch's own numbers: tests/fixtures/pytorch.json, generated once by
//! tests/fixtures/pytorch_fixtures.py (PyTorch in float64 on the float32 inputs; the generator's
//! version is in the file). Loss and gradient, every reduction, the options, the hard values.
//!
//! The f64 CPU twins must agree with PyTorch to 1e-9 relative (they compute the same formulas
//! in the same precision); the GPU must agree within the kernels' f32 tolerances: 2e-5 relative,
//! plus 1e-6 of the case's largest magnitude absolute (f32 rounding of terms that cancel).
//! Run with `--nocapture` to see the worst relative error per loss.

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::Value;
use wgpu_loss::{LossOutput, Outputs, Reduction, cpu, pointwise::Pointwise};

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => match s.as_str() {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            other => panic!("bad number {other:?}"),
        },
        other => other.as_f64().unwrap(),
    }
}

fn list(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(num).collect())
        .unwrap_or_default()
}

fn f32s(v: &Value) -> Vec<f32> {
    list(v).into_iter().map(|x| x as f32).collect()
}

struct Fixture {
    name: String,
    loss: String,
    reduction: Reduction,
    shape: Vec<usize>,
    pred: Vec<f32>,
    target: Vec<f32>,
    classes: Option<Vec<i64>>,
    weight: Option<Vec<f32>>,
    pos_weight: Option<Vec<f32>>,
    options: Value,
    value: Vec<f64>,
    grad: Vec<f64>,
}

fn fixtures() -> (String, Vec<Fixture>) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pytorch.json"
    ))
    .unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let is_classes = c["target_kind"] == "classes";
            Fixture {
                name: c["name"].as_str().unwrap().to_string(),
                loss: c["loss"].as_str().unwrap().to_string(),
                reduction: c["reduction"].as_str().unwrap().parse().unwrap(),
                shape: c["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
                pred: f32s(&c["pred"]),
                target: if is_classes {
                    Vec::new()
                } else {
                    f32s(&c["target"])
                },
                classes: is_classes
                    .then(|| list(&c["target"]).into_iter().map(|t| t as i64).collect()),
                weight: c["weight"].is_array().then(|| f32s(&c["weight"])),
                pos_weight: c["pos_weight"].is_array().then(|| f32s(&c["pos_weight"])),
                options: c["options"].clone(),
                value: match &c["loss_value"] {
                    Value::Array(_) => list(&c["loss_value"]),
                    v => vec![num(v)],
                },
                grad: list(&c["grad"]),
            }
        })
        .collect();
    (json["generator"].as_str().unwrap().to_string(), cases)
}

impl Fixture {
    fn opt(&self, name: &str) -> Option<f64> {
        self.options.get(name).map(num)
    }

    fn classes_count(&self) -> usize {
        *self.shape.last().unwrap()
    }

    fn pointwise(&self) -> Option<Pointwise> {
        Some(match self.loss.as_str() {
            "mse" => Pointwise::Mse,
            "l1" => Pointwise::L1,
            "huber" => Pointwise::Huber {
                delta: self.opt("delta").unwrap_or(1.0) as f32,
            },
            "smooth_l1" => Pointwise::SmoothL1 {
                beta: self.opt("beta").unwrap_or(1.0) as f32,
            },
            "bce" => Pointwise::Bce,
            "bce_with_logits" => Pointwise::BceWithLogits,
            "kl_div" => Pointwise::KlDiv {
                log_target: self
                    .options
                    .get("log_target")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            _ => return None,
        })
    }

    fn ce_options(&self) -> CeOptions {
        CeOptions {
            reduction: self.reduction,
            ignore_index: self.opt("ignore_index").unwrap_or(-100.0) as i64,
            label_smoothing: self.opt("label_smoothing").unwrap_or(0.0) as f32,
            z_loss: self.opt("z_loss").unwrap_or(0.0) as f32,
            softcap: self.opt("softcap").map(|c| c as f32),
        }
    }

    /// The GPU's result, through the convenience API.
    fn gpu(&self) -> LossOutput {
        let ctx = ctx();
        let c = self.classes_count();
        let run = match (self.pointwise(), self.loss.as_str()) {
            (Some(loss), _) => pointwise_loss(
                ctx,
                loss,
                &PwInputs {
                    pred: &self.pred,
                    target: &self.target,
                    weight: self.weight.as_deref(),
                    pos_weight: self.pos_weight.as_deref(),
                },
                self.reduction,
                Some(self.shape[0]),
                Outputs::BOTH,
            ),
            (None, "nll") => nll_classes(
                ctx,
                &self.pred,
                self.classes.as_ref().unwrap(),
                c,
                self.weight.as_deref(),
                &NllOptions {
                    reduction: self.reduction,
                    ignore_index: self.opt("ignore_index").unwrap_or(-100.0) as i64,
                },
                Outputs::BOTH,
            ),
            (None, "cross_entropy") => match &self.classes {
                Some(t) => ce_classes(
                    ctx,
                    &self.pred,
                    t,
                    c,
                    self.weight.as_deref(),
                    &self.ce_options(),
                    Outputs::BOTH,
                ),
                None => ce_soft(
                    ctx,
                    &self.pred,
                    &self.target,
                    c,
                    self.weight.as_deref(),
                    &self.ce_options(),
                    Outputs::BOTH,
                ),
            },
            (None, "cross_entropy_probs") => ce_probs(
                ctx,
                &self.pred,
                &self.target,
                c,
                self.opt("eps").unwrap_or(1e-7) as f32,
                self.reduction,
                Outputs::BOTH,
            ),
            (None, other) => panic!("{}: unknown loss {other}", self.name),
        };
        run.unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// The f64 CPU twin's result.
    fn cpu(&self) -> cpu::Reference {
        let c = self.classes_count();
        match (self.pointwise(), self.loss.as_str()) {
            (Some(loss), _) => cpu::pointwise::pointwise(
                loss,
                &self.pred,
                &self.target,
                self.weight.as_deref(),
                self.pos_weight.as_deref(),
                self.reduction,
                Some(self.shape[0]),
            )
            .unwrap(),
            (None, "nll") => cpu::nll::nll(
                &self.pred,
                self.classes.as_ref().unwrap(),
                c,
                self.weight.as_deref(),
                self.opt("ignore_index").unwrap_or(-100.0) as i64,
                self.reduction,
            )
            .unwrap(),
            (None, "cross_entropy") => match &self.classes {
                Some(t) => {
                    cpu_ce(&self.pred, t, c, self.weight.as_deref(), &self.ce_options()).unwrap()
                }
                None => cpu_ce_soft(
                    &self.pred,
                    &self.target,
                    c,
                    self.weight.as_deref(),
                    &self.ce_options(),
                )
                .unwrap(),
            },
            _ => cpu_ce_probs(
                &self.pred,
                &self.target,
                c,
                self.opt("eps").unwrap_or(1e-7) as f32,
                self.reduction,
            )
            .unwrap(),
        }
    }
}

/// The worst relative error over finite references (against the larger of the element's and
/// 1e-3 of the largest magnitude), after checking NaN and infinities match exactly.
fn compare(what: &str, got: &[f64], want: &[f64], rel: f64, abs_of_max: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want
        .iter()
        .filter(|w| w.is_finite())
        .fold(0.0f64, |a, w| a.max(w.abs()));
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !w.is_finite() {
            assert!(
                g.is_nan() == w.is_nan() && (w.is_nan() || g == w),
                "{what}[{i}]: got {g}, PyTorch {w}"
            );
            continue;
        }
        let err = (g - w).abs();
        assert!(
            err <= rel * w.abs() + abs_of_max * scale,
            "{what}[{i}]: got {g}, PyTorch {w} (error {err:e})"
        );
        worst = worst.max(err / w.abs().max(scale * 1e-3).max(f64::MIN_POSITIVE));
    }
    worst
}

// The twins on every case in both suites; the GPU on every ninth case in the fast suite (every
// loss appears among them), on the others in the extended suite.
fast_and_extended!(
    every_loss_matches_pytorch,
    every_loss_matches_pytorch_extended,
    |extended| {
        let (generator, cases) = fixtures();
        assert!(cases.len() > 100, "{} cases", cases.len());
        let mut worst: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
        for (i, f) in cases.iter().enumerate() {
            let want_value = &f.value;
            // The CPU twin: the same formulas in f64.
            let reference = f.cpu();
            let cpu_value = match (&reference.value, &reference.per_element) {
                (Some(v), _) => vec![*v],
                (None, Some(p)) => p.clone(),
                _ => panic!("{}: no value", f.name),
            };
            compare(
                &format!("{} cpu loss", f.name),
                &cpu_value,
                want_value,
                1e-9,
                1e-12,
            );
            compare(
                &format!("{} cpu grad", f.name),
                &reference.grad,
                &f.grad,
                1e-9,
                1e-12,
            );

            // The GPU.
            if (i % 9 == 0) == extended {
                continue;
            }
            let out = f.gpu();
            let gpu_value: Vec<f64> = match (out.value, &out.per_element) {
                (Some(v), _) => vec![v as f64],
                (None, Some(p)) => p.iter().map(|&x| x as f64).collect(),
                _ => panic!("{}: no value", f.name),
            };
            let gpu_grad: Vec<f64> = out.grad.unwrap().iter().map(|&x| x as f64).collect();
            let e_loss = compare(
                &format!("{} gpu loss", f.name),
                &gpu_value,
                want_value,
                2e-5,
                1e-6,
            );
            let e_grad = compare(
                &format!("{} gpu grad", f.name),
                &gpu_grad,
                &f.grad,
                2e-5,
                1e-6,
            );
            let entry = worst.entry(f.loss.clone()).or_default();
            entry.0 = entry.0.max(e_loss);
            entry.1 = entry.1.max(e_grad);
            entry.2 += 1;
        }
        println!("against {generator}: worst relative error of the GPU, per loss");
        for (loss, (l, g, n)) in &worst {
            println!("  {loss:<22} {n:>3} cases  loss {l:.2e}  gradient {g:.2e}");
        }
    }
);
