//! Loss functions (Optax's `optax.losses`).
//!
//! Per-example losses keep the batch dims (reduce them with `.mean()`); `mse` and `mae`
//! return the mean over every element. Class scores are on the last axis.
//!
//! ```
//! use kiln::Array;
//! use kiln_nn::loss::softmax_cross_entropy_with_integer_labels;
//! let logits = Array::from_vec(vec![0.0f32, 0.0, 10.0, 0.0], [2, 2]);
//! let labels = Array::from_vec(vec![0i32, 0], [2]);
//! let l = softmax_cross_entropy_with_integer_labels(&logits, &labels);
//! assert_eq!(l.shape(), &[2]);
//! assert!((l.to_vec::<f32>()[0] - std::f32::consts::LN_2).abs() < 1e-6);
//! ```

use crate::activation::log_sigmoid;
use kiln::{Array, one_hot, where_};

/// Cross-entropy of `logits [.., C]` against class indices `labels [..]` (any integer
/// dtype): `-log_softmax(logits)[label]`, shape `[..]`.
#[track_caller]
pub fn softmax_cross_entropy_with_integer_labels(logits: &Array, labels: &Array) -> Array {
    let c = *logits.shape().last().expect("logits must have a class axis");
    assert_eq!(
        &logits.shape()[..logits.ndim() - 1],
        labels.shape(),
        "softmax_cross_entropy_with_integer_labels: logits {:?} and labels {:?} do not match",
        logits.shape(),
        labels.shape()
    );
    let onehot = one_hot(labels, c, logits.dtype());
    softmax_cross_entropy(logits, &onehot)
}

/// Cross-entropy of `logits [.., C]` against a distribution `labels [.., C]` (one-hot or
/// soft): `-sum(labels * log_softmax(logits), -1)`, shape `[..]`.
pub fn softmax_cross_entropy(logits: &Array, labels: &Array) -> Array {
    -(labels * logits.log_softmax(-1)).sum_axes([-1], false)
}

/// Label smoothing (`optax.smooth_labels`): `(1 - alpha) * labels + alpha / C` for one-hot
/// `labels [.., C]`.
pub fn smooth_labels(labels: &Array, alpha: f64) -> Array {
    let c = *labels.shape().last().expect("labels must have a class axis") as f64;
    labels * (1.0 - alpha) + alpha / c
}

/// [`softmax_cross_entropy`] against the integer `labels` smoothed with `alpha`.
pub fn softmax_cross_entropy_with_label_smoothing(
    logits: &Array,
    labels: &Array,
    alpha: f64,
) -> Array {
    let c = *logits.shape().last().expect("logits must have a class axis");
    let target = smooth_labels(&one_hot(labels, c, logits.dtype()), alpha);
    softmax_cross_entropy(logits, &target)
}

/// Elementwise `(predictions - targets)^2` (`optax.squared_error`).
pub fn squared_error(predictions: &Array, targets: &Array) -> Array {
    (predictions - targets).square()
}

/// Mean squared error over every element (a scalar).
pub fn mse(predictions: &Array, targets: &Array) -> Array {
    squared_error(predictions, targets).mean()
}

/// Elementwise `|predictions - targets|`.
pub fn absolute_error(predictions: &Array, targets: &Array) -> Array {
    (predictions - targets).abs()
}

/// Mean absolute (L1) error over every element (a scalar).
pub fn mae(predictions: &Array, targets: &Array) -> Array {
    absolute_error(predictions, targets).mean()
}

/// Elementwise Huber loss (`optax.huber_loss`): `e^2/2` for `|e| <= delta`, else
/// `delta * (|e| - delta/2)`.
pub fn huber_loss(predictions: &Array, targets: &Array, delta: f64) -> Array {
    let abs = (predictions - targets).abs();
    let quadratic = abs.minimum(delta);
    let linear = &abs - &quadratic;
    quadratic.square() * 0.5 + linear * delta
}

/// Elementwise binary cross-entropy of `logits` against probabilities `labels`
/// (`optax.sigmoid_binary_cross_entropy`), computed stably from the logits.
pub fn sigmoid_binary_cross_entropy(logits: &Array, labels: &Array) -> Array {
    let log_p = log_sigmoid(logits);
    let log_not_p = log_sigmoid(&-logits);
    -(labels * log_p) - (1.0 - labels) * log_not_p
}

/// KL divergence `sum(targets * (log targets - log_predictions), -1)`
/// (`optax.kl_divergence`): `log_predictions [.., C]` are log-probabilities, `targets
/// [.., C]` probabilities; terms with `targets == 0` are 0. Shape `[..]`.
pub fn kl_divergence(log_predictions: &Array, targets: &Array) -> Array {
    let positive = targets.gt(0.0);
    let safe = where_(&positive, targets, 1.0);
    let terms = where_(&positive, targets * (safe.log() - log_predictions), 0.0);
    terms.sum_axes([-1], false)
}
