//! Every kernel of the library held to its contracts with the host
//! ([`crate::engine::contracts::check`]): [`KERNELS`] is the one list that names them all.

use crate::engine::contracts::check;
use crate::engine::kernel::Kernel;
use crate::engine::program::REDUCE;
use crate::families::{
    class_targets, cross_entropy, image, linear_cross_entropy, mix, nll, optim, pointwise,
};

/// Every kernel of the library.
const KERNELS: [&Kernel; 9] = [
    &pointwise::POINTWISE,
    &cross_entropy::CROSS_ENTROPY,
    &class_targets::CLASS_TARGETS,
    &nll::NLL,
    &REDUCE,
    &linear_cross_entropy::LINEAR_CROSS_ENTROPY,
    &optim::OPTIM,
    &mix::MIX,
    &image::IMAGE,
];

#[test]
fn every_kernel_keeps_its_contracts() {
    for kernel in KERNELS {
        let variants = check(kernel).unwrap_or_else(|e| panic!("{e}"));
        assert!(variants >= 2, "{kernel:?}: {variants} variants");
    }
}
