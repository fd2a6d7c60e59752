//! The command-line tool end to end: .npy files in, printed loss and written gradient out, and
//! one-line errors with a non-zero exit code.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use npyz::WriterBuilder;
use wgpu_loss::{Reduction, cpu};

const TOL: Tol = Tol::new(2e-5, 1e-6);

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgpu-loss-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let npy =
        npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec().unwrap())
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpu-loss"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout_value(out: &Output) -> f64 {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn mse_prints_the_loss_and_writes_the_gradient() {
    let d = dir("mse");
    let mut rng = Rng::new(1);
    let (pred, target) = (rng.vec(15, -2.0, 2.0), rng.vec(15, -2.0, 2.0));
    write(&d.join("p.npy"), &[3, 5], &pred);
    write(&d.join("t.npy"), &[3, 5], &target);
    let g = d.join("g.npy");
    let out = run(&[
        "eval",
        "mse",
        "--pred",
        s(&d.join("p.npy")),
        "--target",
        s(&d.join("t.npy")),
        "--grad-out",
        s(&g),
    ]);
    let reference = cpu::pointwise::mse(&pred, &target, Reduction::Mean).unwrap();
    assert_scalar(
        "printed mse",
        stdout_value(&out) as f32,
        reference.value.unwrap(),
        TOL,
    );
    let (shape, grad) = read_npy(&g);
    assert_eq!(shape, [3, 5]);
    assert_close("written grad", &grad, &reference.grad, TOL);
}

#[test]
fn cross_entropy_takes_every_integer_dtype() {
    let d = dir("ce");
    let (n, c) = (7, 5);
    let mut rng = Rng::new(2);
    let logits = rng.vec(n * c, -4.0, 4.0);
    let targets = rng.classes(n, c);
    write(&d.join("x.npy"), &[n as u64, c as u64], &logits);
    write(&d.join("y64.npy"), &[n as u64], &targets);
    write(
        &d.join("y32.npy"),
        &[n as u64],
        &targets.iter().map(|&t| t as i32).collect::<Vec<_>>(),
    );
    write(
        &d.join("yu32.npy"),
        &[n as u64],
        &targets.iter().map(|&t| t as u32).collect::<Vec<_>>(),
    );
    let reference = cpu_ce(
        &logits,
        &targets,
        c,
        None,
        &CeOptions::default().reduction(Reduction::Sum),
    )
    .unwrap();
    for y in ["y64.npy", "y32.npy", "yu32.npy"] {
        let g = d.join(format!("g-{y}"));
        let out = run(&[
            "eval",
            "cross-entropy",
            "--logits",
            s(&d.join("x.npy")),
            "--targets",
            s(&d.join(y)),
            "--reduction",
            "sum",
            "--grad-out",
            s(&g),
        ]);
        assert_scalar(y, stdout_value(&out) as f32, reference.value.unwrap(), TOL);
        let (shape, grad) = read_npy(&g);
        assert_eq!(shape, [n as u64, c as u64]);
        assert_close(y, &grad, &reference.grad, TOL);
    }
}

#[test]
fn reduction_none_writes_per_row_losses() {
    let d = dir("none");
    let (n, c) = (6, 3);
    let mut rng = Rng::new(3);
    let logits = rng.vec(n * c, -4.0, 4.0);
    let targets = rng.classes(n, c);
    write(&d.join("x.npy"), &[n as u64, c as u64], &logits);
    write(&d.join("y.npy"), &[n as u64], &targets);
    let l = d.join("l.npy");
    let out = run(&[
        "eval",
        "cross-entropy",
        "--logits",
        s(&d.join("x.npy")),
        "--targets",
        s(&d.join("y.npy")),
        "--reduction",
        "none",
        "--loss-out",
        s(&l),
    ]);
    assert!(out.status.success());
    let reference = cpu_ce(
        &logits,
        &targets,
        c,
        None,
        &CeOptions::default().reduction(Reduction::None),
    )
    .unwrap();
    let (shape, rows) = read_npy(&l);
    assert_eq!(shape, [n as u64]);
    assert_close("rows", &rows, reference.per_element.as_ref().unwrap(), TOL);
}

#[test]
fn probabilities_with_json() {
    let d = dir("probs");
    let (n, c) = (5, 4);
    let mut rng = Rng::new(4);
    let probs = rng.distributions(n, c);
    let targets = rng.distributions(n, c);
    write(&d.join("p.npy"), &[n as u64, c as u64], &probs);
    write(&d.join("t.npy"), &[n as u64, c as u64], &targets);
    let out = run(&[
        "eval",
        "cross-entropy-probs",
        "--probs",
        s(&d.join("p.npy")),
        "--targets",
        s(&d.join("t.npy")),
        "--eps",
        "1e-6",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reference = cpu_ce_probs(&probs, &targets, c, 1e-6, Reduction::Mean).unwrap();
    assert_scalar(
        "json value",
        v["value"].as_f64().unwrap() as f32,
        reference.value.unwrap(),
        TOL,
    );
    assert_eq!(v["loss"], "cross-entropy-probs");
    assert_eq!(v["reduction"], "mean");
    assert!(v["adapter"]["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
}

/// Every pointwise loss by its CLI name, with its options as flags.
#[test]
fn every_pointwise_loss_by_name() {
    use wgpu_loss::pointwise::Pointwise;
    let d = dir("pointwise");
    let (n, c) = (6, 5);
    let mut rng = Rng::new(10);
    let logits = rng.vec(n * c, -3.0, 3.0);
    let probs = rng.vec(n * c, 0.05, 0.95);
    let soft = rng.vec(n * c, 0.0, 1.0);
    let log_probs: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let weight = rng.vec(c, 0.5, 2.0);
    let pos_weight = rng.vec(c, 0.5, 3.0);
    let shape = [n as u64, c as u64];
    for (name, data) in [
        ("logits", &logits),
        ("probs", &probs),
        ("soft", &soft),
        ("logp", &log_probs),
    ] {
        write(&d.join(format!("{name}.npy")), &shape, data);
    }
    write(&d.join("w.npy"), &[c as u64], &weight);
    write(&d.join("pw.npy"), &[c as u64], &pos_weight);
    let p = |name: &str| d.join(format!("{name}.npy")).to_str().unwrap().to_string();
    struct Run<'a> {
        loss: Pointwise,
        flags: Vec<String>,
        pred: &'a Vec<f32>,
        target: &'a Vec<f32>,
        weight: Option<&'a Vec<f32>>,
        pos_weight: Option<&'a Vec<f32>>,
        reduction: Reduction,
    }
    let run_of = |loss, flags: &[&str], pred, target, reduction| Run {
        loss,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        pred,
        target,
        weight: None,
        pos_weight: None,
        reduction,
    };
    let (w_file, pw_file) = (p("w"), p("pw"));
    let cases = vec![
        run_of(Pointwise::L1, &["l1"], &logits, &soft, Reduction::Mean),
        run_of(
            Pointwise::Huber { delta: 0.5 },
            &["huber", "--delta", "0.5"],
            &logits,
            &soft,
            Reduction::Sum,
        ),
        run_of(
            Pointwise::SmoothL1 { beta: 2.0 },
            &["smooth-l1", "--beta", "2"],
            &logits,
            &soft,
            Reduction::Mean,
        ),
        Run {
            weight: Some(&weight),
            ..run_of(
                Pointwise::Bce,
                &["bce", "--weight", &w_file],
                &probs,
                &soft,
                Reduction::Mean,
            )
        },
        Run {
            pos_weight: Some(&pos_weight),
            ..run_of(
                Pointwise::BceWithLogits,
                &["bce-with-logits", "--pos-weight", &pw_file],
                &logits,
                &soft,
                Reduction::Sum,
            )
        },
        run_of(
            Pointwise::KlDiv { log_target: false },
            &["kl-div", "--reduction", "batchmean"],
            &log_probs,
            &probs,
            Reduction::BatchMean,
        ),
        run_of(
            Pointwise::KlDiv { log_target: true },
            &["kl-div", "--log-target"],
            &log_probs,
            &log_probs,
            Reduction::Mean,
        ),
    ];
    let file_of = |data: &Vec<f32>| {
        [
            ("logits", &logits),
            ("probs", &probs),
            ("soft", &soft),
            ("logp", &log_probs),
        ]
        .into_iter()
        .find(|(_, v)| std::ptr::eq(*v, data))
        .map(|(n, _)| p(n))
        .unwrap()
    };
    for (
        i,
        Run {
            loss,
            flags,
            pred,
            target,
            weight: w,
            pos_weight: pw,
            reduction,
        },
    ) in cases.into_iter().enumerate()
    {
        let g = d.join(format!("g-{i}.npy"));
        let mut args: Vec<String> = vec!["eval".into()];
        args.extend(flags.iter().cloned());
        args.extend([
            "--pred".into(),
            file_of(pred),
            "--target".into(),
            file_of(target),
            "--grad-out".into(),
            g.to_str().unwrap().into(),
        ]);
        if !flags.contains(&"--reduction".to_string()) {
            args.extend(["--reduction".into(), reduction.name().into()]);
        }
        let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let reference = cpu::pointwise::pointwise(
            loss,
            pred,
            target,
            w.map(|v| &v[..]),
            pw.map(|v| &v[..]),
            reduction,
            Some(n),
        )
        .unwrap();
        assert_scalar(
            &flags.join(" "),
            stdout_value(&out) as f32,
            reference.value.unwrap(),
            TOL,
        );
        let (shape, grad) = read_npy(&g);
        assert_eq!(shape, [n as u64, c as u64]);
        assert_close(
            &flags.join(" "),
            &grad,
            &reference.grad,
            Tol::new(2e-5, 1e-6 * 10.0),
        );
    }
}

/// The class losses with their options as flags.
#[test]
fn class_losses_with_options() {
    let d = dir("class");
    let (n, c) = (9, 7);
    let mut rng = Rng::new(11);
    let logits = rng.vec(n * c, -4.0, 4.0);
    let mut targets = rng.classes(n, c);
    targets[3] = -1;
    let weight = rng.vec(c, 0.5, 2.0);
    let probs = rng.distributions(n, c);
    write(&d.join("x.npy"), &[n as u64, c as u64], &logits);
    write(&d.join("y.npy"), &[n as u64], &targets);
    write(&d.join("w.npy"), &[c as u64], &weight);
    write(&d.join("p.npy"), &[n as u64, c as u64], &probs);
    let x = d.join("x.npy");
    let options = CeOptions {
        reduction: Reduction::Mean,
        ignore_index: -1,
        label_smoothing: 0.1,
        z_loss: 0.01,
        softcap: Some(3.0),
    };
    let out = run(&[
        "eval",
        "cross-entropy",
        "--logits",
        s(&x),
        "--targets",
        s(&d.join("y.npy")),
        "--weight",
        s(&d.join("w.npy")),
        "--ignore-index",
        "-1",
        "--label-smoothing",
        "0.1",
        "--z-loss",
        "0.01",
        "--softcap",
        "3",
    ]);
    let reference = cpu_ce(&logits, &targets, c, Some(&weight), &options).unwrap();
    assert_scalar(
        "cross-entropy options",
        stdout_value(&out) as f32,
        reference.value.unwrap(),
        TOL,
    );

    // Float targets of the logits' shape are probabilities.
    let out = run(&[
        "eval",
        "cross-entropy",
        "--logits",
        s(&x),
        "--targets",
        s(&d.join("p.npy")),
        "--label-smoothing",
        "0.2",
    ]);
    let soft = CeOptions {
        label_smoothing: 0.2,
        ..Default::default()
    };
    let reference = cpu_ce_soft(&logits, &probs, c, None, &soft).unwrap();
    assert_scalar(
        "cross-entropy soft",
        stdout_value(&out) as f32,
        reference.value.unwrap(),
        TOL,
    );

    let log_probs: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    write(&d.join("lp.npy"), &[n as u64, c as u64], &log_probs);
    let out = run(&[
        "eval",
        "nll",
        "--log-probs",
        s(&d.join("lp.npy")),
        "--targets",
        s(&d.join("y.npy")),
        "--weight",
        s(&d.join("w.npy")),
        "--ignore-index",
        "-1",
        "--reduction",
        "sum",
    ]);
    let reference =
        cpu::nll::nll(&log_probs, &targets, c, Some(&weight), -1, Reduction::Sum).unwrap();
    assert_scalar(
        "nll",
        stdout_value(&out) as f32,
        reference.value.unwrap(),
        TOL,
    );
}

/// Bad input: one line on stderr, a non-zero exit code.
#[track_caller]
fn fails_with(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    // clap adds a hint line after usage errors; the error itself is one line.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.contains("XDG_RUNTIME_DIR")
                && !l.starts_with("For more information")
        })
        .collect();
    assert_eq!(lines.len(), 1, "one line, got {err:?}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{:?} should mention {needle:?}",
        lines[0]
    );
}

/// A .npy file written by hand: `header_shape` as the header says it, `data` as raw f32 bytes.
fn forged(path: &Path, header_shape: &str, data: &[f32]) {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {header_shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(bytemuck::cast_slice(data));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn npy_shapes_must_match_their_data() {
    let d = dir("forged");
    let t = d.join("t.npy");
    write(&t, &[4], &[0.5f32; 4]);
    let case = |file: &str, shape: &str, data: &[f32], needle: &str| {
        let p = d.join(file);
        forged(&p, shape, data);
        fails_with(&["eval", "mse", "--pred", s(&p), "--target", s(&t)], needle);
        // The message names the file.
        fails_with(&["eval", "mse", "--pred", s(&p), "--target", s(&t)], file);
    };
    // Products that overflow 64 bits and used to read as 4 elements.
    case(
        "wrap1.npy",
        "(4611686018427387905, 4)",
        &[0.5; 4],
        "more elements than can be counted",
    );
    case(
        "wrap2.npy",
        "(2, 9223372036854775810)",
        &[0.5; 4],
        "more elements than can be counted",
    );
    // npyz takes partial products for strides: a zero dimension does not hide an overflow.
    case(
        "wrap3.npy",
        "(0, 4294967296, 4294967296)",
        &[],
        "more elements than can be counted",
    );
    // Too little data, and too much.
    case("short.npy", "(3, 5)", &[0.5; 4], "the file holds 16 bytes");
    case("long.npy", "(2,)", &[0.5; 4], "the file holds 16 bytes");
    // The well-formed file of the same data passes.
    let good = d.join("good.npy");
    forged(&good, "(4,)", &[0.25; 4]);
    let out = run(&["eval", "mse", "--pred", s(&good), "--target", s(&t)]);
    assert!((stdout_value(&out) - 0.0625).abs() < 1e-7);
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let d = dir("bad");
    let x = d.join("x.npy");
    write(&x, &[2, 3], &[0.5f32; 6]);
    let int_logits = d.join("xi.npy");
    write(&int_logits, &[2, 3], &[1i32; 6]);
    let flat = d.join("flat.npy");
    write(&flat, &[6], &[0.5f32; 6]);
    let y = d.join("y.npy");
    write(&y, &[2], &[0i64, 1]);
    let y3 = d.join("y3.npy");
    write(&y3, &[3], &[0i64, 1, 2]);
    let y_bad = d.join("ybad.npy");
    write(&y_bad, &[2], &[0i64, 3]);
    let y_i16 = d.join("yi16.npy");
    write(&y_i16, &[2], &[0i16, 1]);
    let missing = d.join("missing.npy");
    let not_npy = d.join("not.npy");
    std::fs::write(&not_npy, b"hello").unwrap();

    let ce = |l: &Path, t: &Path| {
        vec![
            "eval".to_string(),
            "cross-entropy".into(),
            "--logits".into(),
            s(l).into(),
            "--targets".into(),
            s(t).into(),
        ]
    };
    let call = |v: Vec<String>, needle: &str| {
        fails_with(&v.iter().map(String::as_str).collect::<Vec<_>>(), needle)
    };
    call(ce(&missing, &y), "missing.npy");
    call(ce(&not_npy, &y), "not a .npy file");
    call(ce(&int_logits, &y), "dtype <i4");
    call(ce(&flat, &y), "rank 2");
    call(ce(&x, &y3), "does not match");
    call(ce(&x, &y_bad), "outside [0, 3)");
    call(ce(&x, &y_i16), "dtype <i2");
    fails_with(
        &["eval", "mse", "--pred", s(&x), "--target", s(&flat)],
        "does not match",
    );
    // A negative probability is rejected, as BCE's are (it used to give NaN and exit 0).
    let negative = d.join("neg.npy");
    write(&negative, &[2, 3], &[0.5f32, -0.1, 0.6, 0.2, 0.3, 0.5]);
    fails_with(
        &[
            "eval",
            "cross-entropy-probs",
            "--probs",
            s(&negative),
            "--targets",
            s(&x),
        ],
        "outside [0, 1]",
    );
    fails_with(
        &[
            "eval",
            "mse",
            "--pred",
            s(&x),
            "--target",
            s(&x),
            "--reduction",
            "average",
        ],
        "reduction",
    );
}

#[test]
fn info_names_the_adapter() {
    let out = run(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("adapter") && text.contains("max_storage_buffer_binding_size"),
        "{text}"
    );
}

#[test]
fn no_matching_adapter_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_wgpu-loss"))
        .arg("info")
        .env("WGPU_ADAPTER_NAME", "no such adapter anywhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no GPU adapter found") && err.contains("no such adapter"),
        "{err}"
    );
}

/// The command line opts in to `WGPU_LOSS_SHADER_DIR` (the library reads no environment): its
/// kernels come from that directory, the repository's own `shaders/` giving the same loss and a
/// directory without the kernel an error that names the file.
#[test]
fn the_shader_dir_variable_swaps_the_kernels() {
    let d = dir("shader_dir");
    let mut rng = Rng::new(3);
    let (pred, target) = (rng.vec(21, -2.0, 2.0), rng.vec(21, -2.0, 2.0));
    write(&d.join("p.npy"), &[21], &pred);
    write(&d.join("t.npy"), &[21], &target);
    let eval = |shaders: &Path| {
        Command::new(env!("CARGO_BIN_EXE_wgpu-loss"))
            .args(["eval", "mse", "--pred", s(&d.join("p.npy"))])
            .args(["--target", s(&d.join("t.npy"))])
            .env("WGPU_LOSS_SHADER_DIR", shaders)
            .output()
            .unwrap()
    };
    let own = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shaders"));
    let reference = cpu::pointwise::mse(&pred, &target, Reduction::Mean).unwrap();
    let value = stdout_value(&eval(own)) as f32;
    assert_scalar("mse, own shaders/", value, reference.value.unwrap(), TOL);
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = eval(&empty);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("empty") && err.contains(".wgsl"),
        "{err}"
    );
}

/// `bench --end-to-end` times the convenience call, its parts, `eval` (this binary, on .npy
/// files of the case) and a memcpy, checks each case's loss against the reference, and writes
/// its summary into the README block.
#[test]
fn bench_end_to_end() {
    let d = dir("bench");
    let (json, readme) = (d.join("bench.json"), d.join("README.md"));
    std::fs::write(
        &readme,
        "a `<!-- end-to-end:start -->` quoted\n<!-- bench:start -->\n<!-- bench:end -->\nb\n<!-- end-to-end:start -->\nold\n<!-- end-to-end:end -->\nc\n",
    )
    .unwrap();
    let out = run(&[
        "bench",
        "--loss",
        "mse,cross-entropy",
        "--classes",
        "10",
        "--sizes",
        "4099",
        "--pass",
        "grad",
        "--reps",
        "10",
        "--warmup",
        "0",
        "--end-to-end",
        "--eval-reps",
        "1",
        "--json",
        s(&json),
        "--readme",
        s(&readme),
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let (gpu, cpu) = (
            c["loss_gpu"].as_f64().unwrap(),
            c["loss_cpu"].as_f64().unwrap(),
        );
        assert!((gpu - cpu).abs() <= 1e-5 * (1.0 + cpu.abs()), "{c}");
        for part in ["call", "upload", "read_back", "eval", "memcpy"] {
            let t = &c["end_to_end"][part];
            assert!(t["median_s"].as_f64().unwrap() > 0.0, "{part}: {c}");
            assert_eq!(t["method"], "wall clock");
        }
        // Both cases have a gradient: the call into a kept slice is timed too.
        let into = &c["end_to_end"]["call_into"];
        assert!(into["median_s"].as_f64().unwrap() > 0.0, "call_into: {c}");
        // The call includes its upload and its read-back.
        let e = &c["end_to_end"];
        assert!(
            e["call"]["min_s"].as_f64() > e["read_back"]["min_s"].as_f64(),
            "{c}"
        );
    }
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(text.contains("| mse fwd+grad | [4099] |"), "{text}");
    assert!(
        text.contains("| cross-entropy C=10 fwd+grad | [409, 10] |"),
        "{text}"
    );
    assert!(
        text.contains("call pays from") && !text.contains("old"),
        "{text}"
    );
}

/// `tune` measures each parameter's candidates and prints a tuning to pin; `eval` takes it, and
/// its loss and gradient under that tuning (and under another layout of the same rows) match
/// the reference. What wins is the machine's to say: only the shape of the answer is checked.
#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn tune_prints_a_tuning_that_eval_takes() {
    let out = run(&[
        "tune",
        "--size",
        "2^16",
        "--classes",
        "10,2000,20000",
        "--rounds",
        "1",
        "--warmup",
        "0",
        // A workgroup holds 4,096 to 8,192 classes whatever register_vecs and wide_vecs win (4
        // or a neighbour, wide_vecs 4 or 8), so that 2,000 is a wide row and 20,000 a long one.
        "--tuning",
        "8,32,4,1,0,4",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in [
        "register_vecs",
        "wide_vecs",
        "chunk_wide_rows",
        "sweep_long_rows",
        "stream_vecs",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{table} = "))),
            "{table}: {text}"
        );
    }
    assert!(text.contains("cross-entropy C=2000 fwd+grad"), "{text}");
    assert!(text.contains("cross-entropy C=20000 fwd+grad"), "{text}");
    assert!(text.contains("mse fwd+grad"), "{text}");
    let pinned = text
        .lines()
        .find_map(|l| l.strip_prefix("pin it: `--tuning "))
        .and_then(|l| l.split('`').next())
        .unwrap_or_else(|| panic!("no tuning to pin: {text}"));
    let numbers: Vec<u32> = pinned.split(',').map(|n| n.parse().unwrap()).collect();
    assert_eq!(numbers.len(), 6, "{pinned}");
    assert!(numbers[5] >= numbers[2], "{pinned}");
    assert!(numbers[3] <= 1 && numbers[4] <= 1, "{pinned}");

    // Rows of 2000 classes (500 vec4s) in every layout: with wide_vecs as small as
    // register_vecs, chunk_wide_rows 1 reads them in lane-group chunks where there are
    // subgroups and 0 once, by segments merging through workgroup memory; a register tile of
    // one vec4 makes them longer than a workgroup holds: swept with sweep_long_rows 1, chunked
    // with 0; a wide tile of 64 vec4s reads them once in one lane group, of 16 in four. Left
    // out, the two flags are the adapter's own, and wide_vecs the adapter's own or
    // register_vecs if larger.
    let d = dir("tune");
    let mut rng = Rng::new(7);
    let (n, c) = (5, 2000);
    let logits = rng.vec(n * c, -4.0, 4.0);
    let targets = rng.classes(n, c);
    write(&d.join("x.npy"), &[n as u64, c as u64], &logits);
    write(&d.join("y.npy"), &[n as u64], &targets);
    let reference = cpu_ce(&logits, &targets, c, None, &CeOptions::default()).unwrap();
    let own = run(&["info", "--json"]);
    let own: serde_json::Value = serde_json::from_slice(&own.stdout).unwrap();
    let own_wide = own["tuning"]["wide_vecs"].as_u64().unwrap() as u32;
    let own =
        ["chunk_wide_rows", "sweep_long_rows"].map(|k| own["tuning"][k].as_bool().unwrap() as u32);
    for tuning in [
        pinned,
        "8,32,32,1",
        "8,32,32,1,0,32",
        "8,32,16,0,1,16",
        "8,32,1,1,1,1",
        "8,32,1,0,0,1",
        "8,32,16",
        "8,32,16,0,0,64",
        "8,32,4,1,0,16",
        "8,32,4,0,1,16",
    ] {
        let g = d.join("g.npy");
        let out = run(&[
            "eval",
            "cross-entropy",
            "--logits",
            s(&d.join("x.npy")),
            "--targets",
            s(&d.join("y.npy")),
            "--grad-out",
            s(&g),
            "--tuning",
            tuning,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = &v["adapter"]["tuning"];
        let used: Vec<u32> = ["lanes", "stream_vecs", "register_vecs"]
            .iter()
            .map(|k| t[k].as_u64().unwrap() as u32)
            .chain(["chunk_wide_rows", "sweep_long_rows"].map(|k| t[k].as_bool().unwrap() as u32))
            .chain([t["wide_vecs"].as_u64().unwrap() as u32])
            .collect();
        let mut asked: Vec<u32> = tuning.split(',').map(|n| n.parse().unwrap()).collect();
        if asked.len() < 5 {
            asked.extend_from_slice(&own[asked.len() - 3..]);
        }
        if asked.len() < 6 {
            asked.push(own_wide.max(asked[2]));
        }
        assert_eq!(used, asked, "the tuning eval planned with");
        assert_scalar(
            &format!("loss under --tuning {tuning}"),
            v["value"].as_f64().unwrap() as f32,
            reference.value.unwrap(),
            TOL,
        );
        let (_, grad) = read_npy(&g);
        assert_close(
            &format!("grad under --tuning {tuning}"),
            &grad,
            &reference.grad,
            TOL,
        );
    }
    fails_with(&["tune", "--rounds", "0"], "--rounds");
    fails_with(&["tune", "--classes", "0"], "--classes");
    fails_with(&["tune", "--tuning", "8,32"], "--tuning");
    fails_with(
        &[
            "eval",
            "cross-entropy",
            "--logits",
            s(&d.join("x.npy")),
            "--targets",
            s(&d.join("y.npy")),
            "--tuning",
            "8,32,32,2",
        ],
        "--tuning",
    );
    fails_with(&["tune", "--tuning", "8,32,32,1,2"], "--tuning");
    fails_with(&["tune", "--tuning", "8,32,32,1,1,32,1"], "--tuning");
    // wide_vecs below register_vecs: the library's error.
    fails_with(&["tune", "--tuning", "8,32,32,1,1,16"], "wide_vecs");
}

#[test]
fn half_precision_files() {
    use wgpu_loss::{CrossEntropyDesc, DType, Inputs, bf16, f16};
    let d = dir("half");
    let (n, c) = (5, 13);
    let mut rng = Rng::new(12);
    let logits = rng.vec(n * c, -6.0, 6.0);
    let targets = rng.classes(n, c);
    write(&d.join("y.npy"), &[n as u64], &targets);
    let shape = [n as u64, c as u64];
    let h: Vec<f16> = logits.iter().map(|&x| f16::from_f32(x)).collect();
    let b: Vec<bf16> = logits.iter().map(|&x| bf16::from_f32(x)).collect();
    write(&d.join("x16.npy"), &shape, &h);
    let bits: Vec<u16> = b.iter().map(|v| v.to_bits()).collect();
    write(&d.join("xbf.npy"), &shape, &bits);
    let eval = |x: &str, extra: &[&str], g: &Path| {
        let (x, y) = (d.join(x), d.join("y.npy"));
        let mut args = vec![
            "eval",
            "cross-entropy",
            "--logits",
            s(&x),
            "--targets",
            s(&y),
            "--grad-out",
            s(g),
            "--json",
        ];
        args.extend(extra);
        run(&args)
    };
    for (x, dtype, flags) in [
        ("x16.npy", DType::F16, &[][..]),
        ("xbf.npy", DType::BF16, &["--bf16"][..]),
    ] {
        let desc = CrossEntropyDesc::new(n, c).dtype(dtype);
        let inputs = match dtype {
            DType::F16 => Inputs::classes(&h, &targets),
            _ => Inputs::classes(&b, &targets),
        };
        let reference = cpu::reference(&desc, &inputs).unwrap();
        let grad_tol = Tol::new(2e-5 + dtype.epsilon() / 2.0, 1e-6);
        // The gradient in the input's dtype by default, f32 on request.
        for grad_dtype in [dtype, DType::F32] {
            let g = d.join(format!("g-{x}-{grad_dtype}"));
            let mut args = flags.to_vec();
            args.extend(["--grad-dtype", grad_dtype.name()]);
            let out = eval(x, &args, &g);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_scalar(
                x,
                json["value"].as_f64().unwrap() as f32,
                reference.value.unwrap(),
                TOL,
            );
            assert_eq!(json["grad_dtype"], grad_dtype.name());
            let npy = npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(&g).unwrap()))
                .unwrap();
            assert_eq!(npy.shape(), shape);
            let grad: Vec<f32> = match grad_dtype {
                DType::F16 => npy
                    .into_vec::<f16>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_f32())
                    .collect(),
                DType::BF16 => npy
                    .into_vec::<u16>()
                    .unwrap()
                    .iter()
                    .map(|&v| bf16::from_bits(v).to_f32())
                    .collect(),
                DType::F32 => npy.into_vec::<f32>().unwrap(),
            };
            assert_close(x, &grad, &reference.grad, grad_tol);
        }
    }
    // uint16 without --bf16, and float16 with it, are one-line errors.
    let g = d.join("g-err.npy");
    let out = eval("xbf.npy", &[], &g);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bf16"));
    let out = eval("x16.npy", &["--bf16"], &g);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("float16"));
    // A pointwise loss on f16 files: pred and target in one dtype.
    let (p, t) = (rng.vec(21, -2.0, 2.0), rng.vec(21, -2.0, 2.0));
    let to16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
    write(&d.join("p16.npy"), &[21], &to16(&p));
    write(&d.join("t16.npy"), &[21], &to16(&t));
    write(&d.join("t32.npy"), &[21], &t);
    let out = run(&[
        "eval",
        "mse",
        "--pred",
        s(&d.join("p16.npy")),
        "--target",
        s(&d.join("t16.npy")),
    ]);
    let reference = cpu::reference(
        &wgpu_loss::PointwiseDesc::new(wgpu_loss::pointwise::Pointwise::Mse, 21).dtype(DType::F16),
        &Inputs::new(&to16(&p), &to16(&t)),
    )
    .unwrap();
    assert_scalar(
        "mse f16",
        stdout_value(&out) as f32,
        reference.value.unwrap(),
        TOL,
    );
    fails_with(
        &[
            "eval",
            "mse",
            "--pred",
            s(&d.join("p16.npy")),
            "--target",
            s(&d.join("t32.npy")),
        ],
        "dtype",
    );
}

#[test]
fn cross_entropy_side_outputs() {
    let d = dir("side");
    let (n, c) = (9, 17);
    let mut rng = Rng::new(13);
    let logits = rng.vec(n * c, -4.0, 4.0);
    let mut targets = rng.classes(n, c);
    // Two rows that are right, one ignored.
    for r in 0..2 {
        let best = (0..c)
            .max_by(|&i, &j| logits[r * c + i].total_cmp(&logits[r * c + j]))
            .unwrap();
        targets[r] = best as i64;
    }
    targets[2] = -100;
    write(&d.join("x.npy"), &[n as u64, c as u64], &logits);
    write(&d.join("y.npy"), &[n as u64], &targets);
    let (lse_path, argmax_path) = (d.join("lse.npy"), d.join("argmax.npy"));
    let out = run(&[
        "eval",
        "cross-entropy",
        "--logits",
        s(&d.join("x.npy")),
        "--targets",
        s(&d.join("y.npy")),
        "--lse-out",
        s(&lse_path),
        "--argmax-out",
        s(&argmax_path),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (shape, lse) = read_npy(&lse_path);
    assert_eq!(shape, [n as u64]);
    let desc = wgpu_loss::CrossEntropyDesc::new(n, c);
    let inputs = wgpu_loss::Inputs::classes(&logits, &targets);
    let reference = cpu::cross_entropy::row_lse(&desc, &inputs).unwrap();
    assert_close("lse", &lse, &reference, TOL);
    let npy = npyz::NpyFile::new(std::io::BufReader::new(
        std::fs::File::open(&argmax_path).unwrap(),
    ))
    .unwrap();
    let argmax: Vec<i64> = npy.into_vec().unwrap();
    let want: Vec<i64> = logits
        .chunks(c)
        .map(|row| (0..c).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as i64)
        .collect();
    assert_eq!(argmax, want);
    let correct = (0..n)
        .filter(|&r| targets[r] != -100 && targets[r] == want[r])
        .count();
    assert!(correct >= 2);
    assert_eq!(json["correct"], correct);
    let accuracy = json["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - correct as f64 / (n - 1) as f64).abs() < 1e-12,
        "{accuracy}"
    );
}

#[test]
#[ignore = "extended suite: cargo test --release -- --include-ignored"]
fn eval_beyond_one_binding() {
    // With --max-binding 1048576 (1 MiB) every input below spans several bindings: the printed loss and the
    // written files are those of a run that binds each input whole, byte for byte.
    let d = dir("windows");
    let mut rng = Rng::new(9);
    let (n, c) = (701, 1001);
    let x = rng.vec(n * c, -6.0, 0.0);
    let targets = rng.classes(n, c);
    let probs = rng.distributions(n, c);
    let shape = [n as u64, c as u64];
    write(&d.join("x.npy"), &shape, &x);
    write(&d.join("y.npy"), &[n as u64], &targets);
    write(&d.join("p.npy"), &shape, &probs);
    let file = |name: &str| d.join(name).to_str().unwrap().to_string();
    let cases: [Vec<String>; 4] = [
        ["mse", "--pred", &file("x.npy"), "--target", &file("p.npy")]
            .map(String::from)
            .to_vec(),
        [
            "cross-entropy",
            "--logits",
            &file("x.npy"),
            "--targets",
            &file("y.npy"),
        ]
        .map(String::from)
        .to_vec(),
        [
            "nll",
            "--log-probs",
            &file("x.npy"),
            "--targets",
            &file("y.npy"),
        ]
        .map(String::from)
        .to_vec(),
        [
            "cross-entropy-probs",
            "--probs",
            &file("p.npy"),
            "--targets",
            &file("p.npy"),
        ]
        .map(String::from)
        .to_vec(),
    ];
    for case in &cases {
        for reduction in ["mean", "none"] {
            let outputs = |tag: &str| {
                let (g, l) = (file(&format!("g-{tag}.npy")), file(&format!("l-{tag}.npy")));
                let mut args: Vec<&str> = vec!["eval"];
                args.extend(case.iter().map(String::as_str));
                args.extend(["--reduction", reduction, "--grad-out", &g, "--loss-out", &l]);
                if tag == "windowed" {
                    args.extend(["--max-binding", "1048576"]);
                }
                let out = run(&args);
                assert!(
                    out.status.success(),
                    "{args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                (
                    out.stdout,
                    std::fs::read(&g).unwrap(),
                    std::fs::read(&l).unwrap(),
                )
            };
            let whole = outputs("whole");
            let windowed = outputs("windowed");
            let what = format!("{} --reduction {reduction}", case[0]);
            assert_eq!(whole.0, windowed.0, "{what}: printed loss");
            assert!(whole.1 == windowed.1, "{what}: gradient file");
            assert!(whole.2 == windowed.2, "{what}: loss file");
        }
    }
    // The printed cross-entropy against the twin, and a limit below the least allowed.
    let reference = cpu_ce(&x, &targets, c, None, &CeOptions::default()).unwrap();
    let out = run(&[
        "eval",
        "cross-entropy",
        "--logits",
        &file("x.npy"),
        "--targets",
        &file("y.npy"),
        "--max-binding",
        "1048576",
    ]);
    assert_scalar(
        "windowed cross-entropy",
        stdout_value(&out) as f32,
        reference.value.unwrap(),
        TOL,
    );
    fails_with(
        &[
            "eval",
            "mse",
            "--pred",
            &file("x.npy"),
            "--target",
            &file("p.npy"),
            "--max-binding",
            "1000",
        ],
        "max_binding",
    );
}

#[test]
fn linear_cross_entropy_files() {
    let d = dir("linear");
    let (n, k, v) = (23, 9, 41);
    let mut rng = Rng::new(11);
    let hidden = rng.vec(n * k, -1.0, 1.0);
    let weight = rng.vec(v * k, -0.5, 0.5);
    let bias = rng.vec(v, -0.5, 0.5);
    let targets = rng.classes(n, v);
    write(&d.join("h.npy"), &[n as u64, k as u64], &hidden);
    write(&d.join("w.npy"), &[v as u64, k as u64], &weight);
    write(&d.join("b.npy"), &[v as u64], &bias);
    write(&d.join("y.npy"), &[n as u64], &targets);
    let file = |name: &str| d.join(name).to_str().unwrap().to_string();
    let out = run(&[
        "eval",
        "linear-cross-entropy",
        "--hidden",
        &file("h.npy"),
        "--weight",
        &file("w.npy"),
        "--bias",
        &file("b.npy"),
        "--targets",
        &file("y.npy"),
        "--label-smoothing",
        "0.1",
        "--lse-out",
        &file("lse.npy"),
        "--grad-hidden-out",
        &file("gh.npy"),
        "--grad-weight-out",
        &file("gw.npy"),
        "--grad-bias-out",
        &file("gb.npy"),
    ]);
    let desc = wgpu_loss::LinearCrossEntropyDesc::new(n, k, v)
        .bias(true)
        .label_smoothing(0.1)
        .lse(true);
    let inputs = wgpu_loss::Inputs::classes(&hidden, &targets)
        .linear(&weight)
        .bias(&bias);
    let r = cpu::reference(&desc, &inputs).unwrap();
    let tol = Tol::new(2e-4, 2e-6);
    assert_scalar(
        "printed loss",
        stdout_value(&out) as f32,
        r.value.unwrap(),
        tol,
    );
    for (name, shape, want) in [
        ("lse.npy", vec![n as u64], r.lse.clone().unwrap()),
        ("gh.npy", vec![n as u64, k as u64], r.grad.clone()),
        ("gw.npy", vec![v as u64, k as u64], r.grad_linear.clone()),
        ("gb.npy", vec![v as u64], r.grad_bias.clone()),
    ] {
        let (got_shape, got) = read_npy(&d.join(name));
        assert_eq!(got_shape, shape, "{name}");
        assert_close(name, &got, &want, Tol::new(2e-4, 1e-5 * largest(&want)));
    }
    // Shapes that do not agree: one line each.
    write(&d.join("w8.npy"), &[v as u64, 8], &weight[..v * 8]);
    write(&d.join("y5.npy"), &[5], &targets[..5]);
    write(&d.join("b5.npy"), &[5], &bias[..5]);
    let base = |w: &str, y: &str| {
        vec![
            "eval".to_string(),
            "linear-cross-entropy".into(),
            "--hidden".into(),
            file("h.npy"),
            "--weight".into(),
            file(w),
            "--targets".into(),
            file(y),
        ]
    };
    let args = base("w8.npy", "y.npy");
    fails_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "[V, 9]",
    );
    let args = base("w.npy", "y5.npy");
    fails_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "y5.npy",
    );
    let mut args = base("w.npy", "y.npy");
    args.extend(["--bias".into(), file("b5.npy")]);
    fails_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "b5.npy",
    );
}

#[test]
fn custom_loss_from_expressions() {
    let d = dir("custom");
    let mut rng = Rng::new(12);
    let (pred, target) = (rng.vec(301, -2.0, 2.0), rng.vec(301, -2.0, 2.0));
    write(&d.join("p.npy"), &[7, 43], &pred);
    write(&d.join("t.npy"), &[7, 43], &target);
    let file = |name: &str| d.join(name).to_str().unwrap().to_string();
    let out = run(&[
        "eval",
        "custom",
        "--loss",
        "log(cosh(x - y))",
        "--grad",
        "tanh(x - y)",
        "--pred",
        &file("p.npy"),
        "--target",
        &file("t.npy"),
        "--check-grad",
        "--json",
        "--grad-out",
        &file("g.npy"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = cpu::pointwise::custom(
        &pred,
        &target,
        None,
        Reduction::Mean,
        |x, y| (x - y).cosh().ln(),
        |x, y| (x - y).tanh(),
    )
    .unwrap();
    assert_scalar(
        "custom loss",
        v["value"].as_f64().unwrap() as f32,
        r.value.unwrap(),
        TOL,
    );
    let worst = v["gradient_check_worst_relative_error"].as_f64().unwrap();
    assert!(worst < 1e-2, "gradient check {worst}");
    let (shape, grad) = read_npy(&d.join("g.npy"));
    assert_eq!(shape, [7, 43]);
    assert_close("custom grad", &grad, &r.grad, TOL);
    // Refused expressions: one line each, quoting the expression.
    for (loss, needle) in [("x; y", "';'"), ("x +", "expected expression")] {
        fails_with(
            &[
                "eval",
                "custom",
                "--loss",
                loss,
                "--grad",
                "1.0",
                "--pred",
                &file("p.npy"),
                "--target",
                &file("t.npy"),
            ],
            needle,
        );
    }
}

#[test]
fn mix_of_weighted_terms() {
    let d = dir("mix");
    let mut rng = Rng::new(13);
    let (pred, target) = (rng.vec(303, -3.0, 3.0), rng.vec(303, -3.0, 3.0));
    write(&d.join("p.npy"), &[3, 101], &pred);
    write(&d.join("t.npy"), &[3, 101], &target);
    let file = |name: &str| d.join(name).to_str().unwrap().to_string();
    let out = run(&[
        "eval",
        "mix",
        "--pred",
        &file("p.npy"),
        "--target",
        &file("t.npy"),
        "--term",
        "0.8:l1",
        "--term",
        "0.2:huber",
        "--delta",
        "0.5",
        "--reduction",
        "sum",
        "--json",
        "--grad-out",
        &file("g.npy"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["loss"], "mix");
    assert_eq!(v["terms"][1]["loss"], "huber");
    let inputs = wgpu_loss::Inputs::new(&pred[..], &target[..]);
    let term = |loss| wgpu_loss::PointwiseDesc::new(loss, 303).reduction(Reduction::Sum);
    let mix = wgpu_loss::MixDesc::new()
        .term(0.8, term(wgpu_loss::pointwise::Pointwise::L1))
        .term(
            0.2,
            term(wgpu_loss::pointwise::Pointwise::Huber { delta: 0.5 }),
        );
    let r = cpu::mix::reference(&mix, &[inputs, inputs]).unwrap();
    assert_scalar(
        "mix loss",
        v["value"].as_f64().unwrap() as f32,
        r.value.unwrap(),
        TOL,
    );
    let (shape, grad) = read_npy(&d.join("g.npy"));
    assert_eq!(shape, [3, 101]);
    assert_close("mix grad", &grad, &r.grads[0], TOL);
    let args = |term: &'static str| {
        [
            "eval", "mix", "--pred", "p.npy", "--target", "t.npy", "--term", term,
        ]
    };
    fails_with(&args("0.8"), "WEIGHT:LOSS");
    fails_with(&args("x:l1"), "not a number");
    let mut unknown = args("1:nope").map(String::from).to_vec();
    unknown[3] = file("p.npy");
    unknown[5] = file("t.npy");
    let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
    fails_with(&unknown, "unknown loss");
}

#[test]
fn train_softmax_regression() {
    let d = dir("train");
    let file = |name: &str| d.join(name).to_str().unwrap().to_string();
    // Generated blobs, against the f64 twin of the same gradient descent.
    let out = run(&[
        "train",
        "--synthetic",
        "blobs",
        "--samples",
        "250",
        "--dims",
        "3",
        "--classes",
        "4",
        "--seed",
        "9",
        "--epochs",
        "12",
        "--json",
        "--weights-out",
        &file("w.npy"),
        "--bias-out",
        &file("b.npy"),
        "--plot",
        &file("loss.svg"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (x, y) = wgpu_loss::train::blobs(250, 3, 4, 9);
    let desc = wgpu_loss::train::TrainDesc::new(250, 3, 4);
    let twin = cpu::train::softmax_regression(&desc, &x, &y, 12).unwrap();
    let epochs = v["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 12);
    for (e, &(loss, _)) in epochs.iter().zip(&twin.epochs) {
        assert_scalar(
            "train loss",
            e["loss"].as_f64().unwrap() as f32,
            loss,
            Tol::new(1e-4, 1e-6),
        );
    }
    let (shape, w) = read_npy(&d.join("w.npy"));
    assert_eq!(shape, [4, 3]);
    assert_close("trained weight", &w, &twin.weight, Tol::new(1e-4, 1e-6));
    let (shape, b) = read_npy(&d.join("b.npy"));
    assert_eq!(shape, [4]);
    assert_close("trained bias", &b, &twin.bias, Tol::new(1e-4, 1e-6));
    let svg = std::fs::read_to_string(d.join("loss.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("accuracy"));
    // Files, in mini-batches with momentum; the same epochs printed twice.
    write(&d.join("x.npy"), &[250, 3], &x);
    write(&d.join("y.npy"), &[250], &y);
    let args = [
        "train",
        "--features",
        &file("x.npy"),
        "--labels",
        &file("y.npy"),
        "--batch-size",
        "64",
        "--optimizer",
        "momentum",
        "--lr",
        "0.05",
        "--epochs",
        "5",
        "--json",
    ];
    let (a, b) = (run(&args), run(&args));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let epochs = |o: &Output| {
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["epochs"].clone()
    };
    assert_eq!(epochs(&a), epochs(&b));
    let twin = cpu::train::softmax_regression(
        &desc
            .batch_size(64)
            .optimizer(wgpu_loss::optim::Optimizer::momentum(0.05, 0.9, false)),
        &x,
        &y,
        5,
    )
    .unwrap();
    for (e, &(loss, _)) in epochs(&a).as_array().unwrap().iter().zip(&twin.epochs) {
        assert_scalar(
            "mini-batch loss",
            e["loss"].as_f64().unwrap() as f32,
            loss,
            Tol::new(1e-4, 1e-6),
        );
    }
    // Labels outside [0, C): one line.
    fails_with(
        &[
            "train",
            "--features",
            &file("x.npy"),
            "--labels",
            &file("y.npy"),
            "--classes",
            "3",
        ],
        "outside [0, 3)",
    );
}

/// `eval ssim|dssim|psnr|photometric` on .npy images and PNG files: the values, the gradient
/// and the SSIM map against the f64 twin; a mask; one-line errors.
#[test]
fn image_losses() {
    use wgpu_loss::{
        ImageDesc,
        image::{ImageLoss, ImageMask, Padding},
    };
    let d = dir("image");
    let mut rng = Rng::new(31);
    let (h, w, c) = (23, 30, 3);
    let pred = rng.vec(h * w * c, 0.0, 1.0);
    let target: Vec<f32> = pred
        .iter()
        .map(|v| (v + rng.uniform(-0.2, 0.2)).clamp(0.0, 1.0))
        .collect();
    write(&d.join("p.npy"), &[h as u64, w as u64, c as u64], &pred);
    write(&d.join("t.npy"), &[h as u64, w as u64, c as u64], &target);
    let mask: Vec<f32> = (0..h * w).map(|i| [1.0, 0.0, 0.5][i % 3]).collect();
    write(&d.join("m.npy"), &[h as u64, w as u64], &mask);
    let file = |name: &str| d.join(name).to_str().unwrap().to_string();
    let eval = |loss: &str, extra: &[&str]| {
        let mut args = vec!["eval", loss, "--json"];
        let (p, t) = (file("p.npy"), file("t.npy"));
        args.extend(["--pred", &p, "--target", &t]);
        args.extend(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let twin = |desc: ImageDesc, m: Option<&[f32]>| {
        cpu::image::image_loss(&desc, &pred, &target, m).unwrap()
    };
    for (name, loss) in [
        ("ssim", ImageLoss::Ssim),
        ("dssim", ImageLoss::Dssim),
        ("psnr", ImageLoss::Psnr),
        ("photometric", ImageLoss::Photometric),
    ] {
        let g = file(&format!("{name}-g.npy"));
        let v = eval(
            name,
            &["--padding", "valid", "--lambda", "0.3", "--grad-out", &g],
        );
        assert_eq!(v["loss"], name);
        let desc = ImageDesc::new(loss, h, w, c)
            .padding(Padding::Valid)
            .lambda(0.3);
        let r = twin(desc, None);
        assert_scalar(
            name,
            v["value"].as_f64().unwrap() as f32,
            r.value.unwrap(),
            TOL,
        );
        let (shape, grad) = read_npy(Path::new(&g));
        assert_eq!(shape, [h as u64, w as u64, c as u64]);
        assert_close(
            name,
            &grad,
            &r.grad,
            Tol::new(2e-3, 2e-4 * largest(&r.grad)),
        );
    }
    // The SSIM map, with valid padding: [H - 10, W - 10, C].
    let map = file("map.npy");
    eval(
        "ssim",
        &[
            "--padding",
            "valid",
            "--reduction",
            "none",
            "--loss-out",
            &map,
        ],
    );
    let (shape, values) = read_npy(Path::new(&map));
    assert_eq!(shape, [h as u64 - 10, w as u64 - 10, c as u64]);
    let desc = ImageDesc::new(ImageLoss::Ssim, h, w, c)
        .padding(Padding::Valid)
        .reduction(Reduction::None);
    assert_close(
        "ssim map",
        &values,
        &twin(desc, None).per_element.unwrap(),
        Tol::new(1e-4, 1e-5),
    );
    // A mask.
    let m = file("m.npy");
    let v = eval("photometric", &["--mask", &m]);
    let desc = ImageDesc::new(ImageLoss::Photometric, h, w, c).mask(ImageMask::Buffer);
    assert_scalar(
        "masked",
        v["value"].as_f64().unwrap() as f32,
        twin(desc, Some(&mask)).value.unwrap(),
        TOL,
    );
    // PNG files (8-bit RGB, scaled to [0, 1]) give the twin's value on the quantised images.
    let q = |v: &[f32]| -> Vec<u8> { v.iter().map(|x| (x * 255.0).round() as u8).collect() };
    let (pq, tq) = (q(&pred), q(&target));
    for (name, bytes) in [("p.png", &pq), ("t.png", &tq)] {
        let file = std::fs::File::create(d.join(name)).unwrap();
        let mut png = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
        png.set_color(png::ColorType::Rgb);
        png.set_depth(png::BitDepth::Eight);
        let mut writer = png.write_header().unwrap();
        writer.write_image_data(bytes).unwrap();
        writer.finish().unwrap();
    }
    let out = run(&[
        "eval",
        "ssim",
        "--pred",
        &file("p.png"),
        "--target",
        &file("t.png"),
    ]);
    let f = |v: &[u8]| -> Vec<f32> { v.iter().map(|&b| b as f32 / 255.0).collect() };
    let desc = ImageDesc::new(ImageLoss::Ssim, h, w, c);
    let r = cpu::image::image_loss(&desc, &f(&pq), &f(&tq), None).unwrap();
    assert_scalar("png", stdout_value(&out) as f32, r.value.unwrap(), TOL);
    // One-line errors.
    write(&d.join("small.npy"), &[5, 5], &[0.5f32; 25]);
    fails_with(
        &[
            "eval",
            "ssim",
            "--pred",
            &file("p.npy"),
            "--target",
            &file("small.npy"),
        ],
        "does not match",
    );
    fails_with(
        &[
            "eval",
            "ssim",
            "--pred",
            &file("small.npy"),
            "--target",
            &file("small.npy"),
            "--padding",
            "valid",
        ],
        "at least 11 x 11",
    );
    fails_with(
        &[
            "eval",
            "ssim",
            "--pred",
            &file("p.npy"),
            "--target",
            &file("t.npy"),
            "--mask",
            &file("small.npy"),
        ],
        "the mask must be",
    );
    fails_with(
        &[
            "eval",
            "psnr",
            "--pred",
            &file("p.npy"),
            "--target",
            &file("t.npy"),
            "--reduction",
            "sum",
        ],
        "PSNR",
    );
}

/// `bench --loss image`: the fused kernels, the five-convolution form and the ceilings on a
/// small image; both paths give the same mean SSIM and gradient.
#[test]
fn bench_image() {
    let d = dir("bench-image");
    let json = d.join("bench.json");
    let out = run(&[
        "bench",
        "--loss",
        "image",
        "--image-sizes",
        "45x37",
        "--image-reps",
        "2",
        "--warmup",
        "0",
        "--json",
        s(&json),
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("bench.image.json")).unwrap())
            .unwrap();
    let rows = v["image"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let (fused, unfused) = (
            r["ssim_fused"].as_f64().unwrap(),
            r["ssim_five_convolutions"].as_f64().unwrap(),
        );
        assert!((fused - unfused).abs() <= 1e-5, "{r}");
        for path in [
            "ssim",
            "photometric",
            "five_convolutions",
            "trivial",
            "copy_buffer",
        ] {
            assert!(r[path]["median_s"].as_f64().unwrap() > 0.0, "{path}: {r}");
        }
    }
    assert!(rows[0]["grad_difference"].is_null());
    let diff = rows[1]["grad_difference"].as_f64().unwrap();
    assert!(diff <= 1e-4, "gradients differ by {diff} of the largest");
    // An image past one binding is a one-line error before anything is allocated.
    fails_with(
        &["bench", "--loss", "image", "--image-sizes", "30000x30000"],
        "bench image",
    );
    fails_with(
        &["bench", "--loss", "image", "--image-sizes", "100000x100000"],
        "more than 4294967295 elements",
    );
    fails_with(
        &["bench", "--loss", "image", "--image-sizes", "64xx"],
        "--image-sizes",
    );
}

/// A .npy file of `dtype` values (bfloat16 as uint16 bits), widened.
fn read_in(path: &Path, dtype: wgpu_loss::DType) -> (Vec<u64>, Vec<f32>) {
    use wgpu_loss::{DType, bf16, f16};
    let npy =
        npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    let shape = npy.shape().to_vec();
    let values = match dtype {
        DType::F16 => (npy.into_vec::<f16>().unwrap().iter())
            .map(|v| v.to_f32())
            .collect(),
        DType::BF16 => (npy.into_vec::<u16>().unwrap().iter())
            .map(|&v| bf16::from_bits(v).to_f32())
            .collect(),
        DType::F32 => npy.into_vec::<f32>().unwrap(),
    };
    (shape, values)
}

/// `eval photometric` and `eval linear-cross-entropy` on float16 files and (with --bf16)
/// bfloat16 ones: the loss, and the gradients in the inputs' dtype or in --grad-dtype, against
/// the twin of the files' values; inputs of two dtypes are a one-line error.
#[test]
fn half_precision_images_and_linear_files() {
    use wgpu_loss::{
        DType, ImageDesc, Inputs, LinearCrossEntropyDesc, bf16, f16, image::ImageLoss,
    };
    let d = dir("half-image-linear");
    let mut rng = Rng::new(32);
    let file = |name: &str| d.join(name).to_str().unwrap().to_string();
    // Writes `v` in `dtype` as `name` and returns the values it holds.
    let save = |name: &str, shape: &[u64], v: &[f32], dtype: DType| -> Vec<f32> {
        match dtype {
            DType::F16 => write(
                &d.join(name),
                shape,
                &v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(),
            ),
            DType::BF16 => write(
                &d.join(name),
                shape,
                &v.iter()
                    .map(|&x| bf16::from_f32(x).to_bits())
                    .collect::<Vec<_>>(),
            ),
            DType::F32 => write(&d.join(name), shape, v),
        }
        v.iter().map(|&x| dtype.round(x)).collect()
    };
    let (h, w, c) = (21, 26, 3);
    let img = [h as u64, w as u64, c as u64];
    let (p, t) = (rng.vec(h * w * c, 0.0, 1.0), rng.vec(h * w * c, 0.0, 1.0));
    let (n, k, v) = (19, 7, 33);
    let (hidden, weight) = (rng.vec(n * k, -1.0, 1.0), rng.vec(v * k, -0.5, 0.5));
    let targets = rng.classes(n, v);
    write(&d.join("y.npy"), &[n as u64], &targets);
    for (dtype, flag) in [(DType::F16, None), (DType::BF16, Some("--bf16"))] {
        for grad_dtype in [dtype, DType::F32] {
            let tag = format!("{dtype}-{grad_dtype}");
            // The photometric loss.
            let (pv, tv) = (
                save(&format!("p-{tag}.npy"), &img, &p, dtype),
                save(&format!("t-{tag}.npy"), &img, &t, dtype),
            );
            let g = file(&format!("g-{tag}.npy"));
            let (pf, tf) = (file(&format!("p-{tag}.npy")), file(&format!("t-{tag}.npy")));
            let mut args = vec![
                "eval",
                "photometric",
                "--json",
                "--pred",
                &pf,
                "--target",
                &tf,
                "--grad-out",
                &g,
                "--grad-dtype",
                grad_dtype.name(),
            ];
            args.extend(flag);
            let out = run(&args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let r = cpu::image::image_loss(
                &ImageDesc::new(ImageLoss::Photometric, h, w, c),
                &pv,
                &tv,
                None,
            )
            .unwrap();
            assert_scalar(
                &tag,
                json["value"].as_f64().unwrap() as f32,
                r.value.unwrap(),
                Tol::new(1e-4, 1e-6),
            );
            let (shape, grad) = read_in(Path::new(&g), grad_dtype);
            assert_eq!(shape, img);
            let half_ulp = if grad_dtype == DType::F32 {
                0.0
            } else {
                grad_dtype.epsilon() / 2.0
            };
            assert_close(
                &format!("photometric {tag} grad"),
                &grad,
                &r.grad,
                Tol::new(2e-3 + half_ulp, 2e-4 * largest(&r.grad)),
            );
            // The fused linear + cross-entropy.
            let hv = save(
                &format!("h-{tag}.npy"),
                &[n as u64, k as u64],
                &hidden,
                dtype,
            );
            let wv = save(
                &format!("w-{tag}.npy"),
                &[v as u64, k as u64],
                &weight,
                dtype,
            );
            let (hf, wf, yf) = (
                file(&format!("h-{tag}.npy")),
                file(&format!("w-{tag}.npy")),
                file("y.npy"),
            );
            let (gh, gw) = (
                file(&format!("gh-{tag}.npy")),
                file(&format!("gw-{tag}.npy")),
            );
            let mut args = vec![
                "eval",
                "linear-cross-entropy",
                "--hidden",
                &hf,
                "--weight",
                &wf,
                "--targets",
                &yf,
                "--grad-hidden-out",
                &gh,
                "--grad-weight-out",
                &gw,
                "--grad-dtype",
                grad_dtype.name(),
            ];
            args.extend(flag);
            let out = run(&args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let desc = LinearCrossEntropyDesc::new(n, k, v);
            let r = cpu::reference(&desc, &Inputs::classes(&hv, &targets).linear(&wv)).unwrap();
            assert_scalar(
                &format!("linear {tag}"),
                stdout_value(&out) as f32,
                r.value.unwrap(),
                Tol::new(2e-4, 2e-6),
            );
            for (path, want, shape) in [
                (&gh, &r.grad, [n as u64, k as u64]),
                (&gw, &r.grad_linear, [v as u64, k as u64]),
            ] {
                let (got_shape, got) = read_in(Path::new(path), grad_dtype);
                assert_eq!(got_shape, shape);
                let tol = Tol::new(2e-4 + half_ulp, 1e-5 * largest(want));
                assert_close(&format!("linear {tag} {path}"), &got, want, tol);
            }
        }
    }
    // Inputs of two dtypes.
    save("t32.npy", &img, &t, DType::F32);
    fails_with(
        &[
            "eval",
            "photometric",
            "--pred",
            &file("p-f16-f16.npy"),
            "--target",
            &file("t32.npy"),
        ],
        "f32",
    );
    save("w32.npy", &[v as u64, k as u64], &weight, DType::F32);
    fails_with(
        &[
            "eval",
            "linear-cross-entropy",
            "--hidden",
            &file("h-f16-f16.npy"),
            "--weight",
            &file("w32.npy"),
            "--targets",
            &file("y.npy"),
        ],
        "f32",
    );
}
