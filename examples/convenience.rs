//! The convenience level: a description, host slices in, loss and gradient out.
//!
//! `cargo run --release --example convenience`

use wgpu_loss::{
    Context, CrossEntropyDesc, Inputs, Outputs, PointwiseDesc, Reduction, pointwise::Pointwise,
};

fn main() -> wgpu_loss::Result<()> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter_info().name);

    // Cross-entropy over 2 rows of 3 classes with class-index targets, mean over rows.
    let logits = [2.0, -1.0, 0.5, 0.1, 0.2, 3.0];
    let desc = CrossEntropyDesc::new(2, 3).label_smoothing(0.1);
    let out = ctx.loss(&desc, &Inputs::classes(&logits, &[0, 2]))?;
    println!("cross-entropy {:?}", out.value);
    println!("  gradient {:?}", out.grad);

    // MSE, one loss per element, no gradient.
    let desc = PointwiseDesc::new(Pointwise::Mse, 3)
        .reduction(Reduction::None)
        .outputs(Outputs::LOSS);
    let out = ctx.loss(&desc, &Inputs::new(&[1.0, 2.0, 3.0], &[1.5, 2.0, 2.0]))?;
    println!("mse per element {:?}", out.per_element);
    Ok(())
}
