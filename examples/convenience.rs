//! The convenience level: host slices in, loss and gradient out.
//!
//! `cargo run --release --example convenience`

use wgpu_loss::{Context, CrossEntropyOptions, Outputs, Reduction};

fn main() -> wgpu_loss::Result<()> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter_info().name);

    // Cross-entropy over 2 rows of 3 classes, mean over rows.
    let logits = [2.0, -1.0, 0.5, 0.1, 0.2, 3.0];
    let targets = [0, 2];
    let out = ctx.cross_entropy(
        &logits,
        &targets,
        3,
        None,
        &CrossEntropyOptions::default(),
        Outputs::BOTH,
    )?;
    println!("cross-entropy {:?}", out.value);
    println!("  gradient {:?}", out.grad);

    // MSE, one loss per element.
    let out = ctx.mse(
        &[1.0, 2.0, 3.0],
        &[1.5, 2.0, 2.0],
        Reduction::None,
        Outputs::LOSS,
    )?;
    println!("mse per element {:?}", out.per_element);
    Ok(())
}
