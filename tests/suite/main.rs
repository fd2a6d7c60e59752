//! The test suite in one binary, a module a topic: one build and one link, and one process
//! whose device (`common::ctx`), pipelines and plan cache every test shares, so that a pipeline
//! variant that two files use is compiled once. `cargo test --release` runs the fast suite;
//! `cargo test --release -- --include-ignored` adds the extended one (the matrices:
//! every shape, tuning, tile size and dtype × option product, the largest sizes), which CI runs
//! on both backends. One module: `cargo test --release --test suite cross_entropy::`.

#[path = "../common/mod.rs"]
mod common;

mod accuracy;
mod bindings;
mod cross_entropy;
mod cross_entropy_options;
mod custom;
mod determinism;
mod errors;
mod golden;
mod half;
mod host_buffers;
mod image;
mod linear_cross_entropy;
mod mix;
mod mse;
mod nll;
mod optim;
mod pointwise;
mod properties;
mod properties_families;
mod pytorch;
mod shader_dir;
mod shards;
mod side_outputs;
mod soak;
mod subnormals;
mod threads;
mod train;
mod windows;
