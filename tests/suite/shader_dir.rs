//! Kernels read from a directory only when the caller asks (`ContextOptions::shader_dir`): the
//! repository's own `shaders/` gives the built-in kernels' bits; a directory without the
//! kernel's file is an error that names it; and `WGPU_LOSS_SHADER_DIR`, which only the command
//! line and the benchmark harness read, changes nothing the library computes (checked in a
//! child process of this binary, the variable set for it alone).

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use wgpu_loss::{
    Context, Error, Inputs, LossOutput, PointwiseDesc, Reduction, context::ContextOptions,
    pointwise::Pointwise,
};

/// MSE, mean, loss and gradient, of 1003 random pairs on `ctx`.
fn mse_on(ctx: &Context) -> wgpu_loss::Result<LossOutput> {
    let mut rng = Rng::new(71);
    let (x, y) = (rng.vec(1003, -3.0, 3.0), rng.vec(1003, -3.0, 3.0));
    let desc = PointwiseDesc::new(Pointwise::Mse, x.len()).reduction(Reduction::Mean);
    ctx.loss(&desc, &Inputs::new(&x, &y))
}

/// An empty directory of this process's own.
fn empty_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-loss-no-shaders-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_shader_dir_is_read_when_given() {
    let built_in = mse_on(ctx()).unwrap();
    let own = ContextOptions::default().shader_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"));
    let from_dir = mse_on(&Context::with_options(own).unwrap()).unwrap();
    assert_eq!(
        (
            built_in.value.map(f32::to_bits),
            bits(built_in.grad.as_deref().unwrap())
        ),
        (
            from_dir.value.map(f32::to_bits),
            bits(from_dir.grad.as_deref().unwrap())
        ),
        "the repository's shaders/ are the built-in kernels"
    );
    let empty = empty_dir();
    let ctx = Context::with_options(ContextOptions::default().shader_dir(&empty)).unwrap();
    match mse_on(&ctx) {
        Err(Error::Wgpu(message)) => assert!(
            message.contains(&*empty.to_string_lossy()) && message.contains(".wgsl"),
            "{message}"
        ),
        other => panic!("a directory without the kernel: {other:?}"),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn the_environment_swaps_no_kernel() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "shader_dir::with_the_variable_set",
            "--exact",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env("WGPU_LOSS_SHADER_DIR", empty_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child process: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run by [`the_environment_swaps_no_kernel`] with `WGPU_LOSS_SHADER_DIR` at an empty
/// directory: a default context computes with its built-in kernels (it would fail to find
/// the kernel's file there, were the variable read). Run alone it checks the same loss.
#[test]
#[ignore = "run by the_environment_swaps_no_kernel in a process of its own"]
fn with_the_variable_set() {
    let ctx = Context::with_options(ContextOptions::default()).unwrap();
    let out = mse_on(&ctx).unwrap();
    let mut rng = Rng::new(71);
    let (x, y) = (rng.vec(1003, -3.0, 3.0), rng.vec(1003, -3.0, 3.0));
    let want = x
        .iter()
        .zip(&y)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        / x.len() as f64;
    assert_scalar("mse", out.value.unwrap(), want, Tol::new(1e-5, 0.0));
}
