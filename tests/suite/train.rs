//! Training end to end against the same gradient descent in f64 (src/cpu/train.rs): full-batch
//! SGD and mini-batches (a shorter last one) with momentum and Adam on generated blobs, the
//! epochs' losses and accuracies and the final parameters; the same bits on every run; labels
//! outside [0, C) refused.

use crate::common::*;
use wgpu_loss::{
    Error, cpu,
    optim::Optimizer,
    train::{SoftmaxRegression, TrainDesc, blobs},
};

#[track_caller]
fn against_the_twin(what: &str, desc: TrainDesc, epochs: usize, seed: u64) {
    let (x, y) = blobs(desc.rows, desc.features, desc.classes, seed);
    let mut model = SoftmaxRegression::new(ctx(), desc, &x, &y).unwrap();
    let stats: Vec<_> = (0..epochs).map(|_| model.epoch().unwrap()).collect();
    let twin = cpu::train::softmax_regression(&desc, &x, &y, epochs).unwrap();
    let first = desc.batches()[0].1 as f64;
    let mut worst = 0.0f64;
    for (s, &(loss, accuracy)) in stats.iter().zip(&twin.epochs) {
        worst = worst.max((s.loss as f64 - loss).abs() / loss);
        assert_scalar(
            &format!("{what}: epoch {} loss", s.epoch),
            s.loss,
            loss,
            Tol::new(1e-4, 1e-6),
        );
        // A row whose two largest logits are within rounding may go either way.
        assert!(
            (s.accuracy - accuracy).abs() <= 1.0 / first + 1e-12,
            "{what}: epoch {} accuracy {} against {accuracy}",
            s.epoch,
            s.accuracy
        );
    }
    let (w, b) = model.read_parameters().unwrap();
    eprintln!(
        "{what}: worst relative error of an epoch's loss {worst:e}, of the weight {:e}, of the bias {:e}; final loss {} accuracy {}",
        worst_relative(&w, &twin.weight),
        worst_relative(&b, &twin.bias),
        stats[epochs - 1].loss,
        stats[epochs - 1].accuracy
    );
    assert_close(
        &format!("{what}: weight"),
        &w,
        &twin.weight,
        Tol::new(1e-4, 1e-5 * largest(&twin.weight)),
    );
    assert_close(
        &format!("{what}: bias"),
        &b,
        &twin.bias,
        Tol::new(1e-4, 1e-5 * largest(&twin.bias)),
    );
    // It learned: the last epoch's loss is well below the first's (log C at zero parameters).
    assert!((stats[0].loss as f64 - (desc.classes as f64).ln()).abs() < 1e-6);
    assert!(
        stats[epochs - 1].loss < 0.5 * stats[0].loss,
        "{what}: {stats:?}"
    );
}

#[test]
fn full_batch_sgd_against_the_twin() {
    against_the_twin("full-batch sgd", TrainDesc::new(301, 5, 4), 40, 1);
}

#[test]
fn mini_batches_with_momentum_and_adam_against_the_twin() {
    // 301 rows in batches of 64: four of 64 and one of 45 (two plans).
    let desc = TrainDesc::new(301, 7, 3).batch_size(64);
    against_the_twin(
        "momentum",
        desc.optimizer(Optimizer::momentum(0.05, 0.9, false)),
        8,
        2,
    );
    against_the_twin("adam", desc.optimizer(Optimizer::adam(0.05)), 8, 3);
}

#[test]
fn the_same_bits_on_every_run() {
    let desc = TrainDesc::new(200, 6, 5).batch_size(70);
    let (x, y) = blobs(desc.rows, desc.features, desc.classes, 4);
    let run = || {
        let mut model = SoftmaxRegression::new(ctx(), desc, &x, &y).unwrap();
        let losses: Vec<u32> = (0..5)
            .map(|_| model.epoch().unwrap().loss.to_bits())
            .collect();
        let (w, b) = model.read_parameters().unwrap();
        (
            losses,
            w.iter().chain(&b).map(|v| v.to_bits()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(), run());
}

#[test]
fn labels_outside_the_classes_are_refused() {
    let desc = TrainDesc::new(4, 2, 3);
    let x = [0.5f32; 8];
    for (bad, row) in [([0, 1, 3, 2], 2), ([0, -1, 1, 2], 1)] {
        let e = SoftmaxRegression::new(ctx(), desc, &x, &bad).unwrap_err();
        assert!(
            matches!(e, Error::TargetOutOfRange { row: r, .. } if r == row),
            "{e:?}"
        );
    }
    let e = SoftmaxRegression::new(ctx(), desc.batch_size(0), &x, &[0, 1, 2, 0]).unwrap_err();
    assert!(matches!(e, Error::Empty(_)), "{e:?}");
    let e = SoftmaxRegression::new(ctx(), desc, &x[..7], &[0, 1, 2, 0]).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e:?}");
}
