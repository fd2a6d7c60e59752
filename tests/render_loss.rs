//! `examples/render_loss.rs` runs headless on this machine's adapter (lavapipe or llvmpipe in
//! CI): a render pass, the photometric loss from its textures, the renderer's backward pass and
//! the update, 40 steps in one submission. The loss must fall by three orders of magnitude and
//! the square's colour reach the target's within 0.01 (8-bit-free: rgba16float textures).

#[path = "../examples/render_loss.rs"]
mod render_loss;

#[test]
fn the_render_example_learns_the_target_colour() {
    let (device, queue) = render_loss::device().expect("an adapter (CI installs lavapipe)");
    let run = render_loss::run(&device, &queue, 40).unwrap();
    let (first, last) = (run.losses[0], *run.losses.last().unwrap());
    assert!(first > 0.1, "the first render's loss {first}");
    assert!(last < first * 1e-3, "losses {:?}", run.losses);
    for c in 0..3 {
        assert!(
            (run.colour[c] - render_loss::TARGET[c]).abs() < 0.01,
            "learnt {:?}, target {:?}",
            run.colour,
            render_loss::TARGET
        );
    }
}
