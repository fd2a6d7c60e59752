//! The loss families, each in its own file beside its kernel in `shaders/`: its description,
//! its `Params`, mode codes and bindings ([`crate::engine::kernel::Kernel`]), and the planner
//! that lays out its dispatches. They share the engine and `plan`, never each other's
//! internals, except where one family is built on another (custom losses on the pointwise
//! kernel, cross-entropy and NLL on the class targets' checks, mixes on every family).

pub(crate) mod class_targets;
pub(crate) mod cross_entropy;
pub(crate) mod custom;
pub(crate) mod image;
pub(crate) mod linear_cross_entropy;
pub(crate) mod mix;
pub(crate) mod nll;
pub(crate) mod optim;
pub(crate) mod pointwise;
