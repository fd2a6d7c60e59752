//! The binding model: plans bind ranges of the caller's buffers (`wgpu::BufferBinding`: a
//! buffer, an offset, a size), so a trainer can sub-allocate every tensor from one arena;
//! binding is a step the caller holds, checked with typed errors; and bindings serve the plan
//! that made them only.

use std::num::NonZeroU64;

use crate::common::*;
use wgpu_loss::{
    CrossEntropyDesc, Error, Inputs, Plan, PointwiseDesc, Reduction, cpu,
    cross_entropy::CrossEntropyBuffers, pointwise::Pointwise, pointwise::PointwiseBuffers,
};

/// The device's storage offset alignment.
fn alignment() -> u64 {
    ctx().limits().min_storage_buffer_offset_alignment as u64
}

fn range(buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> wgpu::BufferBinding<'_> {
    wgpu::BufferBinding {
        buffer,
        offset,
        size: NonZeroU64::new(bytes),
    }
}

/// An arena of `words` 32-bit words, all poisoned except `parts` (word data at byte offsets).
fn arena(words: usize, parts: &[(u64, &[u32])]) -> Buf {
    let mut host = vec![POISON; words];
    for &(at, data) in parts {
        let at = (at / 4) as usize;
        host[at..at + data.len()].copy_from_slice(data);
    }
    upload(ctx(), &host)
}

/// Cross-entropy with its inputs as ranges of one arena (logits and targets) and its outputs as
/// ranges of another (gradient and loss), at aligned offsets past a poisoned gap, against the
/// reference; the words around the outputs are left as they were.
#[test]
fn ranges_of_two_arenas() {
    let ctx = ctx();
    let a = alignment();
    let (n, c) = (37, 1001);
    let mut rng = Rng::new(3100);
    let logits = rng.vec(n * c, -8.0, 8.0);
    let targets = rng.classes(n, c);
    let bytes = (4 * n * c) as u64;
    // Inputs: the logits after a gap (an offset of 0 would read poison), then the targets.
    let logits_at = a;
    let targets_at = (logits_at + bytes).next_multiple_of(a);
    let y: Vec<u32> = targets.iter().map(|&t| t as i32 as u32).collect();
    let x: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
    let inputs = arena(
        (targets_at / 4) as usize + n,
        &[(logits_at, &x), (targets_at, &y)],
    );
    // Outputs: the gradient after a gap, then the loss, a word of poison after each.
    let grad_at = a;
    let loss_at = (grad_at + bytes + 4).next_multiple_of(a);
    let words = (loss_at / 4 + 2) as usize;
    let outputs = arena(words, &[]);
    let desc = CrossEntropyDesc::new(n, c);
    let plan = Plan::new(ctx, &desc).unwrap();
    let bindings = plan
        .bind(
            &CrossEntropyBuffers::new(
                range(&inputs, logits_at, bytes),
                range(&inputs, targets_at, 4 * n as u64),
            )
            .grad(range(&outputs, grad_at, bytes))
            .loss(range(&outputs, loss_at, 4)),
        )
        .unwrap();
    plan.run(&bindings).unwrap();
    let all = read(ctx, &outputs, words);
    let reference = cpu::reference(&desc, &Inputs::classes(&logits, &targets)).unwrap();
    let word = |at: u64| (at / 4) as usize;
    assert_scalar(
        "loss in the arena",
        all[word(loss_at)],
        reference.value.unwrap(),
        Tol::new(2e-5, 1e-5),
    );
    let grad = &all[word(grad_at)..word(grad_at) + n * c];
    let tol = Tol::new(2e-5, 1e-6 * largest(&reference.grad));
    assert_close("grad in the arena", grad, &reference.grad, tol);
    for at in [0, grad_at + bytes, loss_at + 4] {
        assert_eq!(
            all[word(at)].to_bits(),
            POISON,
            "word at {at}, outside the outputs"
        );
    }
}

/// Two reads of overlapping ranges are fine (pred and target from the same memory); a written
/// range overlapping another, or an output in a buffer that holds an input, is refused.
#[test]
fn shared_buffers() {
    let ctx = ctx();
    let a = alignment();
    let len = 100usize;
    let bytes = 4 * len as u64;
    let x: Vec<u32> = (0..len).map(|i| (i as f32 * 0.25).to_bits()).collect();
    let grad_at = bytes.next_multiple_of(a);
    let inputs = arena((grad_at / 4) as usize + len, &[(0, &x)]);
    let outputs = poisoned(ctx, (grad_at / 4) as usize + len);
    let desc = PointwiseDesc::new(Pointwise::Mse, len).reduction(Reduction::Sum);
    let plan = Plan::new(ctx, &desc).unwrap();
    // pred and target the same range: MSE of x with itself, 0 with a zero gradient.
    let same = PointwiseBuffers::new(range(&inputs, 0, bytes), range(&inputs, 0, bytes));
    let ok = same
        .clone()
        .loss(range(&outputs, 0, 4))
        .grad(range(&outputs, grad_at, bytes));
    plan.run(&plan.bind(&ok).unwrap()).unwrap();
    let out = read(ctx, &outputs, (grad_at / 4) as usize + len);
    assert_eq!(out[0], 0.0);
    assert!(out[(grad_at / 4) as usize..].iter().all(|&v| v == 0.0));
    // The gradient overlapping the loss: refused, naming both.
    let over = same
        .clone()
        .loss(range(&outputs, grad_at, 4))
        .grad(range(&outputs, grad_at, bytes));
    let e = plan.bind(&over).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Aliased {
                a: "loss",
                b: "grad"
            }
        ),
        "{e:?}"
    );
    // The gradient in the inputs' buffer, disjoint from them: refused too (wgpu would reject
    // the buffer bound read-only and writable in one dispatch at the caller's submit).
    let beside = same
        .clone()
        .loss(range(&outputs, 0, 4))
        .grad(range(&inputs, grad_at, bytes));
    let e = plan.bind(&beside).unwrap_err();
    assert!(matches!(e, Error::Aliased { b: "grad", .. }), "{e:?}");
    assert!(e.to_string().contains("an input beside an output"), "{e}");
}

/// A pooled context (every storage binding read-write, for a framework's memory pool) takes a
/// loss's inputs and outputs as disjoint ranges of one buffer, which a plain context refuses,
/// and gives the plain context's bits; overlapping outputs stay refused.
#[test]
fn pooled_contexts_take_inputs_and_outputs_in_one_buffer() {
    let ctx = ctx();
    let pooled =
        wgpu_loss::Context::from_pooled_device(ctx.device().clone(), ctx.queue().clone()).unwrap();
    assert!(pooled.is_pooled() && !ctx.is_pooled());
    let a = alignment();
    let (n, c) = (29, 301);
    let mut rng = Rng::new(3101);
    let logits = rng.vec(n * c, -8.0, 8.0);
    let targets = rng.classes(n, c);
    let bytes = (4 * n * c) as u64;
    let (logits_at, targets_at) = (a, (a + bytes).next_multiple_of(a));
    let grad_at = (targets_at + 4 * n as u64).next_multiple_of(a);
    let loss_at = (grad_at + bytes).next_multiple_of(a);
    let words = (loss_at / 4 + 2) as usize;
    let y: Vec<u32> = targets.iter().map(|&t| t as i32 as u32).collect();
    let x: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
    let pool = arena(words, &[(logits_at, &x), (targets_at, &y)]);
    let buffers = CrossEntropyBuffers::new(
        range(&pool, logits_at, bytes),
        range(&pool, targets_at, 4 * n as u64),
    )
    .grad(range(&pool, grad_at, bytes))
    .loss(range(&pool, loss_at, 4));
    let desc = CrossEntropyDesc::new(n, c);
    let e = Plan::new(ctx, &desc).unwrap().bind(&buffers).unwrap_err();
    assert!(matches!(e, Error::Aliased { .. }), "{e:?}");
    let plan = Plan::new(&pooled, &desc).unwrap();
    plan.run(&plan.bind(&buffers).unwrap()).unwrap();
    let all = read(ctx, &pool, words);
    let word = |at: u64| (at / 4) as usize;
    let plain = ctx
        .loss(&desc, &Inputs::classes(&logits, &targets))
        .unwrap();
    assert_eq!(
        all[word(loss_at)].to_bits(),
        plain.value.unwrap().to_bits(),
        "loss"
    );
    let grad = &all[word(grad_at)..word(grad_at) + n * c];
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(grad), bits(plain.grad.as_deref().unwrap()), "gradient");
    let over = buffers.clone().loss(range(&pool, grad_at, 4));
    let e = plan.bind(&over).unwrap_err();
    assert!(matches!(e, Error::Aliased { .. }), "{e:?}");
}

/// Every way a range can be wrong is a typed error at `bind`, before anything is recorded.
#[test]
fn bad_ranges_are_typed_errors() {
    let ctx = ctx();
    let a = alignment();
    let len = 64usize;
    let bytes = 4 * len as u64;
    let big = poisoned(ctx, (4 * a as usize + 2 * len) / 4 + 2 * len);
    let t = poisoned(ctx, len);
    let (loss, grad) = (poisoned(ctx, 1), poisoned(ctx, len));
    let plan = Plan::new(ctx, &PointwiseDesc::new(Pointwise::L1, len)).unwrap();
    let with_input = |input: wgpu::BufferBinding<'_>| {
        plan.bind(&PointwiseBuffers::new(input, &*t).loss(&*loss).grad(&*grad))
    };
    // Misaligned (when the device needs any alignment at all).
    if a > 4 {
        let e = with_input(range(&big, 4, bytes)).unwrap_err();
        assert!(
            matches!(e, Error::Misaligned { binding: "pred", offset: 4, alignment } if alignment == a),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("min_storage_buffer_offset_alignment")
        );
    }
    // Past the end of its buffer.
    let e = with_input(range(&big, 0, big.size() + 4)).unwrap_err();
    assert!(
        matches!(e, Error::Binding("pred", m) if m.contains("past the end")),
        "{e:?}"
    );
    // A range smaller than the shape (the rest of the buffer is not counted).
    let e = with_input(range(&big, 0, bytes - 4)).unwrap_err();
    assert!(
        matches!(e, Error::BufferTooSmall { binding: "pred", needed, actual } if needed == bytes && actual == bytes - 4),
        "{e:?}"
    );
    // Without a size, a range runs to the end of its buffer: from an offset near the end it is
    // too small.
    let tail = wgpu::BufferBinding {
        buffer: &big,
        offset: (big.size() - bytes / 2) / a * a,
        size: None,
    };
    assert!(matches!(
        with_input(tail),
        Err(Error::BufferTooSmall { .. })
    ));
    // The aligned, in-bounds range works.
    with_input(range(&big, a, bytes)).unwrap();
}

/// Bindings belong to the plan that made them: another plan, even of the same description,
/// refuses them.
#[test]
fn bindings_serve_their_plan_only() {
    let ctx = ctx();
    let desc = PointwiseDesc::new(Pointwise::Mse, 10);
    let (p1, p2) = (
        Plan::new(ctx, &desc).unwrap(),
        Plan::new(ctx, &desc).unwrap(),
    );
    let x = poisoned(ctx, 10);
    let out = poisoned(ctx, 1);
    let grad = poisoned(ctx, 10);
    let bindings = p1
        .bind(&PointwiseBuffers::new(&*x, &*x).loss(&*out).grad(&*grad))
        .unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let e = p2.record(&mut encoder, &bindings).unwrap_err();
    assert!(
        matches!(e, Error::Binding("bindings", m) if m.contains("another plan")),
        "{e:?}"
    );
    assert!(matches!(p2.run(&bindings), Err(Error::Binding(..))));
    p1.record(&mut encoder, &bindings).unwrap();
}

/// The async plan creation gives the same plan as the blocking one (which is built on it).
#[test]
fn async_creation_matches_blocking() {
    let ctx = ctx();
    let (n, c) = (300, 2_001);
    let desc = CrossEntropyDesc::new(n, c).label_smoothing(0.1);
    let blocking = Plan::new(ctx, &desc).unwrap();
    let awaited = pollster::block_on(Plan::new_async(ctx, &desc)).unwrap();
    assert_eq!(awaited.desc(), blocking.desc());
    assert_eq!(awaited.dispatch_count(), blocking.dispatch_count());
    let mut rng = Rng::new(3200);
    let logits = rng.vec(n * c, -4.0, 4.0);
    let y: Vec<i32> = rng.classes(n, c).iter().map(|&t| t as i32).collect();
    let (x, y) = (upload(ctx, &logits), upload(ctx, &y));
    let run = |plan: &Plan<CrossEntropyDesc>| {
        let (loss, grad) = (poisoned(ctx, 1), poisoned(ctx, n * c));
        plan.run(
            &plan
                .bind(&CrossEntropyBuffers::new(&*x, &*y).loss(&*loss).grad(&*grad))
                .unwrap(),
        )
        .unwrap();
        (read(ctx, &loss, 1), read(ctx, &grad, n * c))
    };
    let (a, b) = (run(&blocking), run(&awaited));
    assert_eq!(a.0[0].to_bits(), b.0[0].to_bits());
    assert!(
        a.1.iter()
            .zip(&b.1)
            .all(|(p, q)| p.to_bits() == q.to_bits())
    );
    // A bad description fails the same way.
    let bad = CrossEntropyDesc::new(0, 3);
    assert!(matches!(
        pollster::block_on(Plan::new_async(ctx, &bad)),
        Err(Error::Empty(_))
    ));
}
