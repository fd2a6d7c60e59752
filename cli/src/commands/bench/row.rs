//! One measured case of `wgpu-loss bench`, as the tables and the plot read it.

use wgpu_loss_bench::{Case, Ceilings, EndToEnd, Timing};

/// What a caller waits for on one case (`--end-to-end`).
pub struct Waits {
    pub parts: EndToEnd,
    /// `wgpu-loss eval` on .npy files of the case: a process, from its start to its exit.
    pub eval: Timing,
}

/// One measured case.
pub struct Row {
    pub case: Case,
    pub kernel: Timing,
    pub ceilings: Ceilings,
    pub cpu: Option<f64>,
    pub loss_gpu: f32,
    pub loss_cpu: f64,
    pub waits: Option<Waits>,
}

impl Row {
    pub fn gbps(&self) -> f64 {
        self.kernel.gbps(self.case.bytes())
    }
    pub fn copy_gbps(&self) -> f64 {
        self.ceilings.copy.gbps(self.case.bytes())
    }
    pub fn trivial_gbps(&self) -> f64 {
        self.ceilings.trivial.gbps(self.case.bytes())
    }
    pub fn exp_gbps(&self) -> f64 {
        self.ceilings.with_exp.gbps(self.case.bytes())
    }
}
