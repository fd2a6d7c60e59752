// The class weights of the losses over class targets (cross_entropy.wgsl, nll.wgsl,
// linear_cross_entropy.wgsl, class_targets.wgsl): with HAS_WEIGHT (set by the host) the
// includer's binding `w` holds one weight a class, the caller's; without it every class
// weighs 1.

override HAS_WEIGHT: bool = false;

fn class_weight(c: u32) -> f32 {
    if (HAS_WEIGHT) {
        return w[c];
    }
    return 1.0;
}
